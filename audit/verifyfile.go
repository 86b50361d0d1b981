package audit

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/warren-dev/warren/auth"
)

// IncompleteError is VerifyFile's answer for a log whose chain (and every checkpoint) holds but that is not proven
// complete: lines after its last checkpoint, no clean shutdown at its end or before a restart, records its writers
// reported lost, or no checkpoint at all. Its message says which, after the summary.
type IncompleteError struct{ msg string }

func (e *IncompleteError) Error() string { return e.msg }

// VerifyFile checks the audit log at path as `warren audit verify` reports it. With keyFiles nil it checks the hash
// chain (Verify); otherwise (the signing.pub of the log's --audit-signing-key) every signed checkpoint too
// (VerifyAttested). It returns the summary line of a log that holds (with keyFiles: attested to a clean shutdown);
// an error naming the file and the first broken link or failing checkpoint; an *IncompleteError for a log that
// holds but is not proven complete; or, when path cannot be opened, the *fs.PathError of os.Open.
func VerifyFile(path string, keyFiles []string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if keyFiles == nil {
		n, err := Verify(f)
		if err := brokenChain(path, err); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s: %d records, chain intact", path, n), nil
	}
	keys, err := auth.LoadPublicKeys(keyFiles...)
	if err != nil {
		return "", fmt.Errorf("--key: %w", err)
	}
	a, err := VerifyAttested(f, keys)
	if err := brokenChain(path, err); err != nil {
		return "", err
	}
	var ce *CheckpointError
	if errors.As(err, &ce) {
		return "", fmt.Errorf("%s: checkpoint fails at line %d (seq %d): %s", path, ce.Line, ce.Seq, ce.Reason)
	}
	summary := fmt.Sprintf("%s: %d records, %d checkpoints, chain intact", path, a.Records, a.Checkpoints)
	if a.Complete() {
		return fmt.Sprintf("%s and attested to a clean shutdown (line %d, %s, key %s)", summary, a.LastLine, a.Last.Time.Format("2006-01-02T15:04:05Z"), a.Last.KeyID), nil
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
	return "", &IncompleteError{fmt.Sprintf("%s, but not proven complete: %s", summary, strings.Join(why, "; "))}
}

// brokenChain turns Verify's error into VerifyFile's, or nil when the chain holds.
func brokenChain(file string, err error) error {
	var broken *BrokenLinkError
	var ce *CheckpointError
	switch {
	case err == nil, errors.As(err, &ce):
		return nil
	case errors.As(err, &broken):
		return fmt.Errorf("%s: chain broken at line %d (seq %d): %s", file, broken.Line, broken.Seq, broken.Reason)
	}
	return fmt.Errorf("%s: %w", file, err)
}
