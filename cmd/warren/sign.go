package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/download"
)

const signUsage = `usage: warren sign --key RELEASE.key FILE [FILE...]

Signs release files, such as the connector binaries a gateway serves from --download-dir (warren-linux-amd64,
warren-linux-arm64), with an Ed25519 key from warren keygen: each FILE gets FILE.sig, the raw Ed25519 signature
of the whole file. Put the .sig files next to the binaries; warren bootstrap ssm --release-key RELEASE.pub then has
every instance check the signature (openssl pkeyutl -verify -rawin, OpenSSL 1.1.1 or later) before installing.
Keep the release key off the gateway: a gateway holding it could sign what it serves.

`

// SignOptions are the flags and files of `warren sign`; Validate returns what to sign with which key.
type SignOptions struct{ sign signRun }

// signRun is a `warren sign`: the release key's file and the files to sign with it.
type signRun struct {
	keyFile string
	files   []string
}

// AddFlags binds the options to fs.
func (o *SignOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.sign.keyFile, "key", "", "the release signing key (signing.key of warren keygen --out DIR)")
}

// ParseArgs parses the flags, then takes every argument after them as a file (so not parseFlags, which refuses
// arguments): a file named like a flag after the first file is a file.
func (o *SignOptions) ParseArgs(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := applyEnv(fs, envPrefix); err != nil {
		return err
	}
	o.sign.files = fs.Args()
	return nil
}

// Validate checks that a key and files are given.
func (o *SignOptions) Validate() (signRun, error) {
	switch {
	case o.sign.keyFile == "":
		return o.sign, errors.New("missing --key: the release signing key (warren keygen --out DIR writes DIR/signing.key)")
	case len(o.sign.files) == 0:
		return o.sign, errors.New("nothing to sign: give the files, e.g. warren sign --key release/signing.key dist/warren-linux-amd64")
	}
	return o.sign, nil
}

// runSign implements `warren sign --key KEY FILE...`: download.SignFiles, and a line per signature written.
func runSign(args []string, stdout, stderr io.Writer) error {
	return runOptions(cli{name: "warren sign", usage: signUsage}, &SignOptions{}, args, stderr, func(_ context.Context, r signRun) error {
		key, err := auth.LoadSigningKey(r.keyFile)
		if err != nil {
			return err
		}
		sigs, err := download.SignFiles(key.Key, r.files)
		for _, sig := range sigs {
			fmt.Fprintf(stdout, "%s (key %s)\n", sig, key.KeyID)
		}
		return err
	})
}
