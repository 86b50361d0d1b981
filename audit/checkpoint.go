package audit

import (
	"crypto"
	"crypto/ed25519"
	"fmt"
	"io"
	"time"
)

// Reasons of a Checkpoint.
const (
	CheckpointStart    = "start"    // a Log began (or continued) the file
	CheckpointPeriodic = "periodic" // CheckpointEvery lines or CheckpointInterval passed
	CheckpointShutdown = "shutdown" // Close: nothing follows from this run
)

// Checkpoint is a signed statement that the chain stood at Seq with Head when it was written: the checkpoint line
// has that Seq and PrevHash, so every line before it is attested. Without the key nobody can write one, so lines
// deleted or altered and the chain recomputed no longer match the checkpoints after them, and checkpoints removed
// leave more than Every lines between two. See VerifyAttested.
type Checkpoint struct {
	Reason    string    `json:"reason"` // CheckpointStart, CheckpointPeriodic or CheckpointShutdown
	Component string    `json:"component,omitempty"`
	Seq       uint64    `json:"seq"`   // the checkpoint line's own seq
	Head      string    `json:"head"`  // the checkpoint line's prevHash: the SHA-256 of the line before it
	Time      time.Time `json:"time"`  // when it was written, UTC
	Every     int       `json:"every"` // the writer checkpoints at least every this many lines until its shutdown
	KeyID     string    `json:"keyID"` // RFC 7638 thumbprint of the signing key, as `warren keygen` prints it
	Signature []byte    `json:"signature"`
}

// signedBytes is what the Signature covers (Ed25519, the message itself): one "name value" line per field after a
// version line, in this order.
func (c *Checkpoint) signedBytes() []byte {
	return fmt.Appendf(nil, "warren audit checkpoint v1\nreason %s\ncomponent %s\nseq %d\nhead %s\ntime %s\nevery %d\nkeyID %s\n",
		c.Reason, c.Component, c.Seq, c.Head, c.Time.UTC().Format(time.RFC3339Nano), c.Every, c.KeyID)
}

// checkpointLine is how a Checkpoint is written: a line of the chain of its own, not a request record.
type checkpointLine struct {
	Time       time.Time   `json:"time"`
	Component  string      `json:"component,omitempty"`
	Checkpoint *Checkpoint `json:"checkpoint"`
	Seq        uint64      `json:"seq"`
	PrevHash   string      `json:"prevHash"`
}

// Loss is written (as a line of its own, "lost") before the next line a Log can write after records it could not:
// refused while the writer was stalled, or whose write failed.
type Loss struct {
	Records uint64 `json:"records"`
	Reason  string `json:"reason"` // the last error
}

type lossLine struct {
	Time      time.Time `json:"time"`
	Component string    `json:"component,omitempty"`
	Lost      *Loss     `json:"lost"`
	Seq       uint64    `json:"seq"`
	PrevHash  string    `json:"prevHash"`
}

// Keys looks checkpoint keys up by key id; auth.StaticKeys (auth.LoadPublicKeys) is one.
type Keys interface {
	Key(kid string) (crypto.PublicKey, bool)
}

// CheckpointError names the first checkpoint that does not hold, or where one is missing.
type CheckpointError struct {
	Line   int    // 1-based line number
	Seq    uint64 // that line's seq
	Reason string // what is wrong, and what probably happened
}

func (e *CheckpointError) Error() string {
	return fmt.Sprintf("audit checkpoint fails at line %d (seq %d): %s", e.Line, e.Seq, e.Reason)
}

// Attestation is what VerifyAttested found in a log whose chain and checkpoints all hold.
type Attestation struct {
	Lines       int         // every line: records, checkpoints and loss lines
	Records     int         // request records
	Checkpoints int         // checkpoints, all verified
	Last        *Checkpoint // the last checkpoint; nil without one
	LastLine    int         // its line
	Unattested  int         // lines after the last checkpoint (all of them without one)
	CleanEnd    bool        // the file ends with a shutdown checkpoint
	UncleanEnds []int       // lines after which a run ended without a shutdown checkpoint, then another began
	Lost        uint64      // records the writers reported lost (loss lines)
}

// Complete reports whether the log is attested to its end with nothing known missing: every line is covered by a
// checkpoint, the file ends with a clean shutdown, every earlier run ended cleanly, and no writer reported a loss.
// (Whole runs cut after a clean shutdown leave a complete log: compare the last checkpoint with one kept elsewhere.)
func (a *Attestation) Complete() bool {
	return a.Checkpoints > 0 && a.Unattested == 0 && a.CleanEnd && len(a.UncleanEnds) == 0 && a.Lost == 0
}

// VerifyAttested verifies the chain as Verify does, and every checkpoint with keys: its signature, that it stands
// where it was signed (seq and head), and that no more lines than it promised (Every) come before the next
// checkpoint of the same run. A broken chain is a *BrokenLinkError; a checkpoint that does not hold, one signed by a
// key keys does not have, or a missing one, a *CheckpointError. Otherwise it returns what it found: lines after
// the last checkpoint are unattested, and a log whose Attestation is not Complete may have lost its tail.
func VerifyAttested(r io.Reader, keys Keys) (*Attestation, error) {
	a := &Attestation{}
	var last *Checkpoint // the last checkpoint that held
	since := 0           // lines since it
	afterShutdown := false
	n, err := walk(r, func(line int, k parsedLink) error {
		fail := func(format string, args ...any) error {
			return &CheckpointError{Line: line, Seq: k.seq, Reason: fmt.Sprintf(format, args...)}
		}
		c := k.checkpoint
		if c == nil {
			since++
			afterShutdown = false
			if k.lost != nil {
				a.Lost += k.lost.Records
			} else {
				a.Records++
			}
			return nil
		}
		pub, ok := keys.Key(c.KeyID)
		ed, isEd := pub.(ed25519.PublicKey)
		switch {
		case !ok:
			return fail("signed by key %q, which is not among the keys given: the wrong --key, or a checkpoint forged with another key", c.KeyID)
		case !isEd:
			return fail("key %q is a %T; checkpoints are signed with Ed25519 keys", c.KeyID, pub)
		case !ed25519.Verify(ed, c.signedBytes(), c.Signature):
			return fail("the signature does not verify: the checkpoint was altered or forged")
		case c.Seq > k.seq:
			return fail("signed at seq %d but stands at seq %d: %d line(s) after line %d (the last checkpoint that holds) were deleted and the chain recomputed",
				c.Seq, k.seq, c.Seq-k.seq, a.LastLine)
		case c.Seq < k.seq:
			return fail("signed at seq %d but stands at seq %d: %d line(s) after line %d (the last checkpoint that holds) were inserted and the chain recomputed",
				c.Seq, k.seq, k.seq-c.Seq, a.LastLine)
		case c.Head != k.prev:
			return fail("signed after a line with SHA-256 %.16s… but follows one with %.16s…: a line between line %d (the last checkpoint that holds) and this one was altered, deleted or inserted and the chain recomputed",
				c.Head, k.prev, a.LastLine)
		case last != nil && last.Reason != CheckpointShutdown && since > last.Every:
			return fail("%d lines since the checkpoint at line %d, which promised one at least every %d: checkpoints between them were removed", since, a.LastLine, last.Every)
		}
		if c.Reason == CheckpointStart && line > 1 && !afterShutdown {
			a.UncleanEnds = append(a.UncleanEnds, line-1)
		}
		a.Checkpoints++
		last, a.Last, a.LastLine = c, c, line
		since = 0
		afterShutdown = c.Reason == CheckpointShutdown
		return nil
	})
	a.Lines = n
	if err != nil {
		return a, err
	}
	if last != nil && last.Reason != CheckpointShutdown && since > last.Every {
		return a, &CheckpointError{Line: n, Seq: uint64(n), Reason: fmt.Sprintf("%d lines after the last checkpoint (line %d), which promised one at least every %d: a checkpoint after it was removed",
			since, a.LastLine, last.Every)}
	}
	a.Unattested = since
	a.CleanEnd = afterShutdown
	return a, nil
}
