package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
)

// signedAuditLog writes runs of records (one Open/Close each) to a new log signed with a new `warren keygen`
// key, and returns the log's path and the key's signing.pub.
func signedAuditLog(t *testing.T, runs ...int) (logPath, pub string) {
	t.Helper()
	dir := t.TempDir()
	if _, err := auth.GenerateKeyPair(dir); err != nil {
		t.Fatal(err)
	}
	logPath, signingKey := filepath.Join(dir, "audit.log"), filepath.Join(dir, auth.SigningKeyFile)
	for i, n := range runs {
		l, err := audit.OpenLog(logPath, signingKey, audit.ComponentGateway)
		if err != nil {
			t.Fatal(err)
		}
		for j := range n {
			l.Write(audit.Record{RequestID: fmt.Sprintf("r%d-%d", i, j), Decision: audit.DecisionAllow, Status: 200})
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return logPath, filepath.Join(dir, auth.PublicKeyFile)
}

func editLines(t *testing.T, path string, edit func(ls []string) []string) string {
	t.Helper()
	data, _ := os.ReadFile(path)
	ls := edit(strings.Split(strings.TrimSuffix(string(data), "\n"), "\n"))
	out := filepath.Join(t.TempDir(), "edited.log")
	os.WriteFile(out, []byte(strings.Join(ls, "\n")+"\n"), 0o600)
	return out
}

var linkRE = regexp.MustCompile(`"seq":\d+,"prevHash":"[0-9a-f]{64}"}$`)

// rechain recomputes every line's seq and prevHash, as someone rewriting the file without the key would.
func rechain(ls []string) []string {
	prev := strings.Repeat("0", 64)
	for i, ln := range ls {
		ls[i] = linkRE.ReplaceAllString(ln, fmt.Sprintf(`"seq":%d,"prevHash":"%s"}`, i+1, prev))
		prev = sha256Hex(ls[i])
	}
	return ls
}

// TestAuditVerifyKey: `warren audit verify FILE --key PUB` and its exit statuses (0 attested, 1 tampered, 3 not
// proven complete), and without --key as before.
func TestAuditVerifyKey(t *testing.T) {
	log, pub := signedAuditLog(t, 4, 2) // two runs: start, 4 records, shutdown; start, 2 records, shutdown
	_, otherPub := signedAuditLog(t, 0)
	crashed := editLines(t, log, func(ls []string) []string { return ls[:len(ls)-1] }) // the last shutdown missing
	tail := editLines(t, log, func(ls []string) []string { return ls[:len(ls)-2] })    // cut after a record
	restarted := editLines(t, log, func(ls []string) []string { return ls[:len(ls)-1] })
	{ // the crashed log continued by a restart with the same key
		l, err := audit.OpenLog(restarted, strings.TrimSuffix(pub, auth.PublicKeyFile)+auth.SigningKeyFile, audit.ComponentGateway)
		if err != nil {
			t.Fatal(err)
		}
		l.Write(audit.Record{RequestID: "after"})
		l.Close()
	}
	unsigned := filepath.Join(t.TempDir(), "plain.log")
	l, _ := audit.Open(unsigned)
	l.Write(audit.Record{RequestID: "x"})
	l.Close()
	for _, c := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"without --key", []string{log}, 0, log + ": 10 records, chain intact\n", ""},
		{"attested", []string{log, "--key", pub}, 0, log + ": 6 records, 4 checkpoints, chain intact and attested to a clean shutdown (line 10, ", ""},
		{"--key before FILE", []string{"--key", pub, log}, 0, log + ": 6 records, 4 checkpoints, chain intact and attested", ""},
		{"the wrong key", []string{log, "--key", otherPub}, 1, "", "warren audit: " + log + ": checkpoint fails at line 1 (seq 1): signed by key "},
		{"a record deleted and the chain recomputed", []string{editLines(t, log, func(ls []string) []string {
			return rechain(append(ls[:2], ls[3:]...))
		}), "--key", pub}, 1, "", "checkpoint fails at line 5 (seq 5): signed at seq 6 but stands at seq 5: 1 line(s) after line 1 (the last checkpoint that holds) were deleted and the chain recomputed\n"},
		{"an edited record, not re-chained", []string{editLines(t, log, func(ls []string) []string {
			ls[2] = strings.Replace(ls[2], `"status":200`, `"status":201`, 1)
			return ls
		}), "--key", pub}, 1, "", "chain broken at line 4 (seq 4): prevHash does not match the SHA-256 of line 3"},
		{"a crash", []string{crashed, "--key", pub}, 3, "", "warren audit: " + crashed + ": 6 records, 3 checkpoints, chain intact, but not proven complete: the 2 line(s) after the last checkpoint (line 7) are unattested; the file does not end with a clean-shutdown checkpoint: its writer is still running or crashed, or lines were cut from its end\n"},
		{"a crash, then a restart", []string{restarted, "--key", pub}, 3, "", ": 7 records, 5 checkpoints, chain intact, but not proven complete: the run ending at line 9 stopped without a clean-shutdown checkpoint (a crash, or lines cut before the restart)\n"},
		{"a cut tail", []string{tail, "--key", pub}, 3, "", "chain intact, but not proven complete: the 1 line(s) after the last checkpoint (line 7) are unattested; the file does not end with a clean-shutdown checkpoint"},
		{"a log without checkpoints", []string{unsigned, "--key", pub}, 3, "", "1 records, 0 checkpoints, chain intact, but not proven complete: no checkpoint: nothing is attested (was the log written without --audit-signing-key?)\n"},
		{"no FILE", []string{"--key", pub}, 1, "", "warren audit: audit verify: want exactly one FILE"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, append([]string{"audit", "verify"}, c.args...)...)
			if code != c.code || !strings.HasPrefix(stdout, c.stdout) || (c.stderr == "") != (stderr == "") || !strings.Contains(stderr, c.stderr) {
				t.Errorf("exit %d\nstdout %q\nstderr %q\nwant exit %d, stdout %q, stderr with %q", code, stdout, stderr, c.code, c.stdout, c.stderr)
			}
		})
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
