package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/warren-dev/warren/client"
)

const kubeconfigUsage = `usage: warren kubeconfig --gateway https://HOST:PORT --cluster C [--ca-file F] (--token T | --token-file F | --token-command CMD) [--out F]

Prints (or writes to --out) a kubeconfig for kubectl and client-go that reaches cluster C through the gateway.
With --token-command, kubectl runs "warren credential --token-command CMD" as an exec credential plugin whenever it
needs a token: CMD prints a caller JWT, and kubectl asks again when that token expires.

`

// KubeconfigOptions are the flags of `warren kubeconfig`; Validate returns the client.Config to write a kubeconfig
// of, and where.
type KubeconfigOptions struct {
	client client.Config
	out    string
}

// kubeconfigRun is a `warren kubeconfig`: the kubeconfig of client, with warren the path of this binary for the
// credential plugin (--token-command), written to out ("" for standard output).
type kubeconfigRun struct {
	client      client.Config
	warren, out string
}

// AddFlags binds the options to fs.
func (o *KubeconfigOptions) AddFlags(fs *flag.FlagSet) {
	addClientFlags(fs, &o.client)
	fs.StringVar(&o.out, "out", "", "write the kubeconfig to this file (mode 0600) instead of standard output")
}

// Validate checks that the flags name one cluster through the gateway and one token source. It reads no file.
func (o *KubeconfigOptions) Validate() (kubeconfigRun, error) {
	r := kubeconfigRun{client: o.client, out: o.out}
	if r.client.TokenCommand != "" {
		self, err := os.Executable()
		if err != nil {
			return r, fmt.Errorf("cannot find the warren binary for the credential plugin: %v", err)
		}
		r.warren, _ = filepath.Abs(self)
	}
	return r, r.client.Validate()
}

// runKubeconfig implements `warren kubeconfig`: client.KubeconfigYAML, to standard output or --out.
func runKubeconfig(args []string, stdout, stderr io.Writer) error {
	return runOptions(cli{name: "warren kubeconfig", usage: kubeconfigUsage}, &KubeconfigOptions{}, args, stderr, func(_ context.Context, r kubeconfigRun) error {
		data, err := r.client.KubeconfigYAML(r.warren)
		if err != nil {
			return err
		}
		if r.out == "" {
			_, err = stdout.Write(data)
			return err
		}
		if err := os.WriteFile(r.out, data, 0o600); err != nil {
			return fmt.Errorf("cannot write --out: %v", err)
		}
		return nil
	})
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
