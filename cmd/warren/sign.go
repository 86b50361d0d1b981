package main

import (
	"crypto/ed25519"
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

func runSign(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("warren sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key", "", "the release signing key (signing.key of warren keygen --out DIR)")
	fs.Usage = func() { fmt.Fprint(fs.Output(), signUsage); fs.PrintDefaults() }
	// Files follow the flags, so not parseFlags, which refuses arguments.
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := applyEnv(fs, envPrefix); err != nil {
		return err
	}
	if *keyFile == "" {
		return errors.New("missing --key: the release signing key (warren keygen --out DIR writes DIR/signing.key)")
	}
	if fs.NArg() == 0 {
		return errors.New("nothing to sign: give the files, e.g. warren sign --key release/signing.key dist/warren-linux-amd64")
	}
	key, err := auth.LoadSigningKey(*keyFile)
	if err != nil {
		return err
	}
	for _, f := range fs.Args() {
		sig, err := download.SignFile(key.Key, f)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if err := download.VerifyFile(key.Key.Public().(ed25519.PublicKey), f, sig); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		fmt.Fprintf(stdout, "%s (key %s)\n", sig, key.KeyID)
	}
	return nil
}
