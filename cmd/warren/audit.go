package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"

	"github.com/warren-dev/warren/audit"
)

const auditUsage = `usage:
  warren audit verify FILE [--key PUB[,PUB]]
      checks the hash chain of an audit log (--audit-log of the gateway or connector): every line carries the
      previous line's SHA-256 and the next seq. Prints "FILE: N records, chain intact", or fails naming the first
      broken link: an edited line is reported at the line after it, a deleted or reordered line where seq jumps.

      With --key (the signing.pub of the --audit-signing-key the log was written with), it also checks every signed
      checkpoint: a line deleted, altered or inserted and the chain recomputed, a checkpoint removed or forged, or a
      checkpoint of another key, fails naming the line. The lines after the last checkpoint are unattested, and a
      file that does not end with a clean-shutdown checkpoint, or in which a run ended without one (a crash), is not
      proven complete: its tail may have been cut.

      Exit status: 0 the chain is intact (with --key: and attested to a clean shutdown, nothing missing);
      1 the chain is broken or a checkpoint does not hold; 2 usage; 3 (with --key) the chain and every checkpoint
      hold, but the log is not proven complete (unattested lines, no clean shutdown at its end or before a restart,
      records the writer reported lost, or no checkpoint at all).
`

// exitIncomplete is audit verify's exit status for a log that holds but is not proven complete.
const exitIncomplete = 3

// runAudit implements `warren audit verify FILE`.
func runAudit(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("audit: missing subcommand: verify, e.g. warren audit verify /var/log/warren/audit.log")
	}
	switch args[0] {
	case "verify":
		return runAuditVerify(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stderr, auditUsage)
		return flag.ErrHelp
	}
	return fmt.Errorf("audit: unknown subcommand %q: want verify", args[0])
}

// AuditVerifyOptions are the flags and FILE of `warren audit verify`; Validate returns the log to check, and with
// which keys (audit.VerifyFile).
type AuditVerifyOptions struct {
	keyFiles string // comma-separated
	files    []string
}

// auditVerify is a `warren audit verify`: the log file, and the public keys of its checkpoints (nil: the chain
// only).
type auditVerify struct {
	file     string
	keyFiles []string
}

// AddFlags binds the options to fs.
func (o *AuditVerifyOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.keyFiles, "key", "", "public key(s) of the log's --audit-signing-key (signing.pub), comma-separated: check its signed checkpoints")
}

// ParseArgs takes FILE between flags: flags may come before it and after it.
func (o *AuditVerifyOptions) ParseArgs(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		o.files = []string{fs.Arg(0)}
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return err
		}
		o.files = append(o.files, fs.Args()...)
	}
	return applyEnv(fs, envPrefix)
}

// Validate checks that one FILE is given.
func (o *AuditVerifyOptions) Validate() (auditVerify, error) {
	if len(o.files) != 1 || o.files[0] == "" {
		return auditVerify{}, errors.New("audit verify: want exactly one FILE, e.g. warren audit verify /var/log/warren/audit.log")
	}
	r := auditVerify{file: o.files[0]}
	if o.keyFiles != "" { // --key "," names no file: LoadPublicKeys says so
		r.keyFiles = append([]string{}, splitList(o.keyFiles)...)
	}
	return r, nil
}

// runAuditVerify implements `warren audit verify FILE`: audit.VerifyFile, exit 3 for a log not proven complete.
func runAuditVerify(args []string, stdout, stderr io.Writer) error {
	c := cli{name: "warren audit verify", usage: auditUsage, usageOnly: true}
	return runOptions(c, &AuditVerifyOptions{}, args, stderr, func(_ context.Context, r auditVerify) error {
		summary, err := audit.VerifyFile(r.file, r.keyFiles)
		var open *fs.PathError
		var incomplete *audit.IncompleteError
		switch {
		case errors.As(err, &open) && open.Op == "open" && open.Path == r.file:
			return fmt.Errorf("audit verify: %w", err)
		case errors.As(err, &incomplete):
			return &exitCodeError{code: exitIncomplete, err: err}
		case err != nil:
			return err
		}
		fmt.Fprintln(stdout, summary)
		return nil
	})
}
