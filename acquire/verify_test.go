package acquire

import (
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warren-dev/warren/auth"
)

// TestVerify: acquire.Verify lists each failure and counts them in its error; a key that does not load stops it first.
func TestVerify(t *testing.T) {
	keys := t.TempDir()
	if _, err := auth.GenerateKeyPair(keys); err != nil {
		t.Fatal(err)
	}
	pub := []string{filepath.Join(keys, auth.PublicKeyFile)}
	empty := t.TempDir()
	var out strings.Builder
	err := Verify(t.Context(), VerifyConfig{Output: Output{Dest: empty}, KeyFiles: pub}, &out)
	if want := "FAIL  " + empty + ": no statement.dsse.json found: nothing to verify\n"; out.String() != want || err == nil ||
		err.Error() != "1 failure(s); 0 of 0 target(s) verify" {
		t.Fatalf("empty output: %q %v\nwant %q", out.String(), err, want)
	}
	err = Verify(t.Context(), VerifyConfig{Output: Output{Dest: empty, S3Region: "eu-west-1"}, KeyFiles: pub}, io.Discard)
	if !errors.Is(err, ErrUsage) {
		t.Fatalf("--s3-region with a directory: %v, want ErrUsage", err)
	}
	if err := Verify(t.Context(), VerifyConfig{Output: Output{Dest: empty}, KeyFiles: []string{filepath.Join(keys, "none.pub")}}, io.Discard); err == nil || errors.Is(err, ErrUsage) {
		t.Fatalf("missing key: %v", err)
	}
}
