package main

import (
	"context"
	"flag"
	"io"

	"github.com/warren-dev/warren/acquire"
)

// AcquireVerifyOptions are the flags and DIR of `warren acquire verify`; Validate turns them into
// acquire.VerifyConfig.
type AcquireVerifyOptions struct {
	verify acquire.VerifyConfig
	keys   string // comma-separated
	dirs   []string
}

// AddFlags binds the options to fs.
func (o *AcquireVerifyOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.keys, "key", "", "public key(s) of the examiner (signing.pub from warren keygen), comma-separated")
	addOutputFlags(fs, &o.verify.Output, false)
}

// ParseArgs parses flags and DIR in any order.
func (o *AcquireVerifyOptions) ParseArgs(fs *flag.FlagSet, args []string) (err error) {
	o.dirs, err = parseInterleaved(fs, args)
	return err
}

// Validate checks that one DIR and a key are given. It reads neither.
func (o *AcquireVerifyOptions) Validate() (acquire.VerifyConfig, error) {
	v := o.verify
	switch {
	case len(o.dirs) != 1:
		return v, usageErr("give one DIR (or s3://BUCKET/PREFIX) to verify, e.g. warren acquire verify ./case-42 --key keys/signing.pub")
	case o.keys == "":
		return v, usageErr("missing --key: the examiner's public key (signing.pub from warren keygen)")
	}
	v.Output.Dest, v.KeyFiles = o.dirs[0], splitList(o.keys)
	return v, nil
}

const acquireVerifyUsage = "usage: warren acquire verify DIR|s3://BUCKET/PREFIX --key PUB [--s3-endpoint URL] [--s3-path-style] [--s3-region R]\n\n" +
	"Re-hashes every archive and every file inside it against its statement, checks every statement's\n" +
	"signature, and lists every failure (file and reason). Exit 0 when everything verifies, 1 otherwise.\n\n"

// runAcquireVerify implements `warren acquire verify DIR --key PUB`: acquire.Verify.
func runAcquireVerify(args []string, stdout, stderr io.Writer) error {
	c := cli{name: "warren acquire verify", usage: acquireVerifyUsage, signals: true}
	return runOptions(c, &AcquireVerifyOptions{}, args, stderr, func(ctx context.Context, v acquire.VerifyConfig) error {
		return acquireErr(acquire.Verify(ctx, v, stdout))
	})
}
