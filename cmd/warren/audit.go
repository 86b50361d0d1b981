package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
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

func runAuditVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("warren audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFiles := fs.String("key", "", "public key(s) of the log's --audit-signing-key (signing.pub), comma-separated: check its signed checkpoints")
	fs.Usage = func() { fmt.Fprint(fs.Output(), auditUsage) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	var file string
	if fs.NArg() > 0 { // flags may also follow FILE
		file = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return err
		}
	}
	if err := applyEnv(fs, envPrefix); err != nil {
		return err
	}
	if file == "" || fs.NArg() != 0 {
		return errors.New("audit verify: want exactly one FILE, e.g. warren audit verify /var/log/warren/audit.log")
	}
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	defer f.Close()
	if *keyFiles == "" {
		n, err := audit.Verify(f)
		if err := brokenChain(file, err); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %d records, chain intact\n", file, n)
		return nil
	}
	keys, err := auth.LoadPublicKeys(splitList(*keyFiles)...)
	if err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	a, err := audit.VerifyAttested(f, keys)
	if err := brokenChain(file, err); err != nil {
		return err
	}
	var ce *audit.CheckpointError
	if errors.As(err, &ce) {
		return fmt.Errorf("%s: checkpoint fails at line %d (seq %d): %s", file, ce.Line, ce.Seq, ce.Reason)
	}
	summary := fmt.Sprintf("%s: %d records, %d checkpoints, chain intact", file, a.Records, a.Checkpoints)
	if a.Complete() {
		fmt.Fprintf(stdout, "%s and attested to a clean shutdown (line %d, %s, key %s)\n", summary, a.LastLine, a.Last.Time.Format("2006-01-02T15:04:05Z"), a.Last.KeyID)
		return nil
	}
	var why []string
	switch {
	case a.Checkpoints == 0:
		why = append(why, "no checkpoint: nothing is attested (was the log written without --audit-signing-key?)")
	case a.Unattested > 0:
		why = append(why, fmt.Sprintf("the %d line(s) after the last checkpoint (line %d) are unattested", a.Unattested, a.LastLine))
	}
	if !a.CleanEnd && a.Checkpoints > 0 {
		why = append(why, "the file does not end with a clean-shutdown checkpoint: its writer is still running or crashed, or lines were cut from its end")
	}
	for _, l := range a.UncleanEnds {
		why = append(why, fmt.Sprintf("the run ending at line %d stopped without a clean-shutdown checkpoint (a crash, or lines cut before the restart)", l))
	}
	if a.Lost > 0 {
		why = append(why, fmt.Sprintf("its writers reported %d record(s) lost (see the \"lost\" lines)", a.Lost))
	}
	return &exitCodeError{code: exitIncomplete, err: fmt.Errorf("%s, but not proven complete: %s", summary, strings.Join(why, "; "))}
}

// brokenChain turns Verify's error into the command's, or nil when the chain holds.
func brokenChain(file string, err error) error {
	var broken *audit.BrokenLinkError
	var ce *audit.CheckpointError
	switch {
	case err == nil, errors.As(err, &ce):
		return nil
	case errors.As(err, &broken):
		return fmt.Errorf("%s: chain broken at line %d (seq %d): %s", file, broken.Line, broken.Seq, broken.Reason)
	}
	return fmt.Errorf("%s: %w", file, err)
}
