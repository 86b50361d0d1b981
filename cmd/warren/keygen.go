package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/warren-dev/warren/auth"
)

const keygenUsage = "usage: warren keygen --out DIR\n\n" +
	"Writes DIR/signing.key (Ed25519, PKCS#8 PEM) and DIR/signing.pub (PKIX PEM) and prints the key id (kid).\n" +
	"An issuer's key signs tokens: give its signing.pub to the gateway (--issuer-keys, --connector-keys).\n" +
	"The gateway's own key is another pair: its signing.key is the gateway's --gateway-key, its signing.pub\n" +
	"the connectors' --gateway-keys.\n\n"

// KeygenOptions are the flags of `warren keygen`; Validate returns the directory auth.GenerateKeyPair writes to.
type KeygenOptions struct{ out string }

// AddFlags binds the options to fs.
func (o *KeygenOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.out, "out", "", "directory for signing.key (private, mode 0600) and signing.pub (public); created if missing")
}

// Validate checks that a directory is given.
func (o *KeygenOptions) Validate() (string, error) {
	if o.out == "" {
		return "", errors.New("keygen: missing --out: the directory for the key pair, e.g. warren keygen --out ./keys")
	}
	return o.out, nil
}

// runKeygen implements `warren keygen --out DIR`: it writes an Ed25519 signing key pair and prints its key id.
func runKeygen(args []string, stdout, stderr io.Writer) error {
	return runOptions(cli{name: "warren keygen", usage: keygenUsage}, &KeygenOptions{}, args, stderr, func(_ context.Context, dir string) error {
		kid, err := auth.GenerateKeyPair(dir)
		if err != nil {
			return fmt.Errorf("keygen: %w", err)
		}
		fmt.Fprintf(stderr, "wrote %s and %s\n", filepath.Join(dir, auth.SigningKeyFile), filepath.Join(dir, auth.PublicKeyFile))
		fmt.Fprintln(stdout, kid)
		return nil
	})
}
