package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/warren-dev/warren/client"
)

const kubeconfigUsage = `usage: warren kubeconfig --gateway https://HOST:PORT --cluster C [--ca-file F] (--token T | --token-file F | --token-command CMD) [--out F]

Prints (or writes to --out) a kubeconfig for kubectl and client-go that reaches cluster C through the gateway.
With --token-command, kubectl runs "warren credential --token-command CMD" as an exec credential plugin whenever it
needs a token: CMD prints a caller JWT, and kubectl asks again when that token expires.

`

func runKubeconfig(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("warren kubeconfig", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c client.Config
	addClientFlags(fs, &c)
	out := fs.String("out", "", "write the kubeconfig to this file (mode 0600) instead of standard output")
	fs.Usage = func() { fmt.Fprint(fs.Output(), kubeconfigUsage); fs.PrintDefaults() }
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	self := ""
	if c.TokenCommand != "" {
		var err error
		if self, err = os.Executable(); err != nil {
			return fmt.Errorf("cannot find the warren binary for the credential plugin: %v", err)
		}
		self, _ = filepath.Abs(self)
	}
	cfg, err := c.KubeconfigFor(self)
	if err != nil {
		return err
	}
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = stdout.Write(data)
		return err
	}
	if err := os.WriteFile(*out, data, 0o600); err != nil {
		return fmt.Errorf("cannot write --out: %v", err)
	}
	return nil
}

// addClientFlags adds the flags that say how to reach a cluster through the gateway (warren kubeconfig, warren
// acquire) to fs, into c.
func addClientFlags(fs *flag.FlagSet, c *client.Config) {
	fs.StringVar(&c.Gateway, "gateway", "", "the gateway's URL, https://HOST:PORT")
	fs.StringVar(&c.Cluster, "cluster", "", "the cluster behind the gateway")
	fs.StringVar(&c.CAFile, "ca-file", "", "CA certificate (PEM) of the gateway; default: system roots")
	fs.StringVar(&c.Token, "token", "", "a caller token (static: requests fail once it expires)")
	fs.StringVar(&c.TokenFile, "token-file", "", "a file holding a caller token, re-read for every request")
	fs.StringVar(&c.TokenCommand, "token-command", "", "a shell command printing a caller token, run again when it is about to expire")
}

// runCredential is the exec credential plugin behind `warren kubeconfig --token-command`: it runs the command,
// and hands kubectl the token with its expiry, so that kubectl asks again only when the token has expired.
func runCredential(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("warren credential", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tokenCommand := fs.String("token-command", "", "a shell command that prints a caller token")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *tokenCommand == "" {
		return errors.New("missing --token-command")
	}
	ctx, cancel := context.WithTimeout(context.Background(), client.TokenCommandTimeout)
	defer cancel()
	token, err := client.RunTokenCommand(ctx, *tokenCommand)
	if err != nil {
		return err
	}
	status := map[string]any{"token": token}
	// The expiry is read, not verified: the gateway verifies; kubectl only needs to know when to ask again.
	if info, err := client.ParseToken(token); err == nil && !info.Expiry.IsZero() {
		status["expirationTimestamp"] = info.Expiry.UTC().Format(time.RFC3339)
	}
	return json.NewEncoder(stdout).Encode(map[string]any{
		"apiVersion": "client.authentication.k8s.io/v1",
		"kind":       "ExecCredential",
		"spec":       map[string]any{"interactive": false},
		"status":     status,
	})
}
