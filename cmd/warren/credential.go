package main

import (
	"context"
	"errors"
	"flag"
	"io"

	"github.com/warren-dev/warren/client"
)

// CredentialOptions are the flags of `warren credential`, the exec credential plugin behind `warren kubeconfig
// --token-command`; Validate returns the token command to run.
type CredentialOptions struct{ tokenCommand string }

// AddFlags binds the options to fs.
func (o *CredentialOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.tokenCommand, "token-command", "", "a shell command that prints a caller token")
}

// Validate checks that a command is given.
func (o *CredentialOptions) Validate() (string, error) {
	if o.tokenCommand == "" {
		return "", errors.New("missing --token-command")
	}
	return o.tokenCommand, nil
}

// runCredential runs the token command and hands kubectl the token with its expiry (client.ExecCredential), so that
// kubectl asks again only when the token has expired.
func runCredential(args []string, stdout, stderr io.Writer) error {
	return runOptions(cli{name: "warren credential"}, &CredentialOptions{}, args, stderr, func(ctx context.Context, command string) error {
		cred, err := client.ExecCredential(ctx, command)
		if err != nil {
			return err
		}
		_, err = stdout.Write(cred)
		return err
	})
}
