package audit

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warren-dev/warren/auth"
)

// TestVerifyFile: the answers `warren audit verify` prints or exits with, by kind: a summary, a broken link named,
// an *IncompleteError, os.Open's *fs.PathError, a --key that does not load.
func TestVerifyFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := auth.GenerateKeyPair(dir); err != nil {
		t.Fatal(err)
	}
	signed, plain := filepath.Join(dir, "signed.log"), filepath.Join(dir, "plain.log")
	l, err := OpenLog(signed, filepath.Join(dir, auth.SigningKeyFile), ComponentGateway)
	if err != nil {
		t.Fatal(err)
	}
	l.Write(Record{RequestID: "r1", Decision: DecisionAllow, Status: 200})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	p, _ := Open(plain)
	p.Write(Record{RequestID: "r1"})
	p.Write(Record{RequestID: "r2"})
	p.Close()
	data, _ := os.ReadFile(plain)
	edited := filepath.Join(dir, "edited.log")
	os.WriteFile(edited, []byte(strings.Replace(string(data), `"r1"`, `"r0"`, 1)), 0o600)
	pub := []string{filepath.Join(dir, auth.PublicKeyFile)}

	if s, err := VerifyFile(plain, nil); err != nil || s != plain+": 2 records, chain intact" {
		t.Errorf("chain only: %q %v", s, err)
	}
	if s, err := VerifyFile(signed, pub); err != nil || !strings.HasPrefix(s, signed+": 1 records, 2 checkpoints, chain intact and attested to a clean shutdown (line 3, ") {
		t.Errorf("attested: %q %v", s, err)
	}
	if _, err := VerifyFile(edited, nil); err == nil || !strings.HasPrefix(err.Error(), edited+": chain broken at line 2 (seq 2): prevHash does not match the SHA-256 of line 1: ") {
		t.Errorf("edited: %v", err)
	}
	var incomplete *IncompleteError
	if _, err := VerifyFile(plain, pub); !errors.As(err, &incomplete) || err.Error() != plain+": 2 records, 0 checkpoints, chain intact, but not proven complete: "+
		"no checkpoint: nothing is attested (was the log written without --audit-signing-key?)" {
		t.Errorf("without checkpoints: %v", err)
	}
	var open *fs.PathError
	if _, err := VerifyFile(filepath.Join(dir, "none"), nil); !errors.As(err, &open) || open.Op != "open" || open.Path != filepath.Join(dir, "none") {
		t.Errorf("missing file: %v", err)
	}
	if _, err := VerifyFile(plain, []string{}); err == nil || err.Error() != "--key: no public key files given" {
		t.Errorf("a --key naming no file: %v", err)
	}
}
