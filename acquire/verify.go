package acquire

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/internal/bytesize"
)

// VerifyConfig is a check of an acquisition's output (`warren acquire verify`).
type VerifyConfig struct {
	// Output is the output to check: Dest (DIR or s3://BUCKET/PREFIX) and its object-storage settings; it is opened
	// read only (OpenForVerify).
	Output Output
	// KeyFiles are the examiner's public keys (signing.pub of warren keygen). Required.
	KeyFiles []string
}

// Verify re-hashes every archive and every file inside it against its statement and checks every statement's
// signature (evidence.Verify). It writes a line to w for each target that verifies ("OK    DIR  N files, SIZE, sha256
// HEX") and for each failure ("FAIL  PATH: REASON"), and then the count of targets that verify and with which keys;
// with any failure it returns an error counting them instead. Settings that cannot go together match ErrUsage.
func Verify(ctx context.Context, cfg VerifyConfig, w io.Writer) error {
	keys, err := evidence.LoadKeys(cfg.KeyFiles...)
	if err != nil {
		return err
	}
	store, err := cfg.Output.OpenForVerify(ctx)
	if err != nil {
		return err
	}
	rep, err := evidence.Verify(ctx, store, keys)
	if err != nil {
		return err
	}
	ok := 0
	for _, t := range rep.Targets {
		if t.OK() {
			ok++
			a := t.Statement.Predicate.Archive
			fmt.Fprintf(w, "OK    %s  %d files, %s, sha256 %s\n", t.Dir, a.Files, bytesize.Format(a.Size), a.SHA256)
		}
	}
	for _, f := range rep.Failures {
		fmt.Fprintf(w, "FAIL  %s\n", f)
	}
	if len(rep.Failures) > 0 {
		return fmt.Errorf("%d failure(s); %d of %d target(s) verify", len(rep.Failures), ok, len(rep.Targets))
	}
	fmt.Fprintf(w, "%d target(s) verify with key %s\n", ok, strings.Join(keys.IDs(), ", "))
	return nil
}
