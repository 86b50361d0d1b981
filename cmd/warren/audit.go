package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/warren-dev/warren/audit"
)

const auditUsage = `usage:
  warren audit verify FILE
      checks the hash chain of an audit log (--audit-log of the gateway or connector): every record carries the
      previous record's SHA-256 and the next seq. Prints "FILE: N records, chain intact", or fails naming the first
      broken link: an edited line is reported at the line after it, a deleted or reordered line where seq jumps.
`

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

func runAuditVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("warren audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), auditUsage) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := applyEnv(fs, envPrefix); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("audit verify: want exactly one FILE, e.g. warren audit verify /var/log/warren/audit.log")
	}
	file := fs.Arg(0)
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	defer f.Close()
	n, err := audit.Verify(f)
	var broken *audit.BrokenLinkError
	switch {
	case errors.As(err, &broken):
		return fmt.Errorf("%s: chain broken at line %d (seq %d): %s", file, broken.Line, broken.Seq, broken.Reason)
	case err != nil:
		return fmt.Errorf("%s: %w", file, err)
	}
	fmt.Fprintf(stdout, "%s: %d records, chain intact\n", file, n)
	return nil
}
