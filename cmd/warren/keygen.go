package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/warren-dev/warren/auth"
)

// runKeygen implements `warren keygen --out DIR`: it writes an Ed25519 signing key pair and prints its key id.
func runKeygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("warren keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "directory for signing.key (private, mode 0600) and signing.pub (public); created if missing")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: warren keygen --out DIR\n\n"+
			"Writes DIR/signing.key (Ed25519, PKCS#8 PEM) and DIR/signing.pub (PKIX PEM) and prints the key id (kid).\n"+
			"An issuer's key signs tokens: give its signing.pub to the gateway (--issuer-keys, --connector-keys).\n"+
			"The gateway's own key is another pair: its signing.key is the gateway's --gateway-key, its signing.pub\n"+
			"the connectors' --gateway-keys.\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("keygen: missing --out: the directory for the key pair, e.g. warren keygen --out ./keys")
	}
	kid, err := auth.GenerateKeyPair(*out)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	fmt.Fprintf(stderr, "wrote %s and %s\n", filepath.Join(*out, auth.SigningKeyFile), filepath.Join(*out, auth.PublicKeyFile))
	fmt.Fprintln(stdout, kid)
	return nil
}
