package audit

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/warren-dev/warren/internal/testenv/testlog"
)

// keyring is a Keys for tests.
type keyring map[string]ed25519.PublicKey

func (k keyring) Key(kid string) (crypto.PublicKey, bool) {
	p, ok := k[kid]
	return p, ok
}

// testKey returns a signing Config (checkpoints every 3 lines) and the keyring that verifies it.
func testKey(t *testing.T, kid string) (Config, keyring) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return Config{SigningKey: priv, KeyID: kid, CheckpointEvery: 3, CheckpointInterval: time.Hour, Component: ComponentGateway,
		Now: func() time.Time { clock = clock.Add(time.Millisecond); return clock }}, keyring{kid: pub}
}

// signedLog writes n records through Open/Close (one run) at path and returns the file.
func signedLog(t *testing.T, path string, cfg Config, from, n int) []byte {
	t.Helper()
	l, err := OpenWithConfig(path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := l.Write(testRecord(from + i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

var linkRE = regexp.MustCompile(`"seq":\d+,"prevHash":"[0-9a-f]{64}"}$`)

// rechain recomputes every line's seq and prevHash, as someone rewriting the file without the key would.
func rechain(ls [][]byte) []byte {
	var out []byte
	prev := zeroHash
	for i, ln := range ls {
		ln = bytes.TrimSuffix(ln, []byte("\n"))
		ln = linkRE.ReplaceAll(ln, fmt.Appendf(nil, `"seq":%d,"prevHash":"%s"}`, i+1, prev))
		prev = hashLine(ln)
		out = append(append(out, ln...), '\n')
	}
	return out
}

func isCheckpoint(ln []byte) bool { return bytes.Contains(ln, []byte(`"checkpoint":{`)) }

func TestCheckpointsAttestACleanLog(t *testing.T) {
	cfg, keys := testKey(t, "k1")
	data := signedLog(t, filepath.Join(t.TempDir(), "audit.log"), cfg, 0, 7)
	// start, 3 records, periodic, 3 records, periodic, 1 record, shutdown
	var kinds []string
	for _, ln := range lines(data) {
		kind := "record"
		for _, r := range []string{CheckpointStart, CheckpointPeriodic, CheckpointShutdown} {
			if bytes.Contains(ln, []byte(`"checkpoint":{"reason":"`+r+`"`)) {
				kind = r
			}
		}
		kinds = append(kinds, kind)
	}
	want := []string{"start", "record", "record", "record", "periodic", "record", "record", "record", "periodic", "record", "shutdown"}
	if !slices.Equal(kinds, want) {
		t.Fatalf("lines %v, want %v", kinds, want)
	}
	a, err := VerifyAttested(bytes.NewReader(data), keys)
	if err != nil || !a.Complete() || a.Records != 7 || a.Checkpoints != 4 || a.Lines != 11 || a.LastLine != 11 {
		t.Fatalf("VerifyAttested = %+v, %v", a, err)
	}
	if n, err := Verify(bytes.NewReader(data)); n != 11 || err != nil {
		t.Errorf("Verify (no key) = %d, %v; want 11 lines intact", n, err)
	}
}

// TestCheckpointsDetectTampering: what someone without the key can do to the file, each with the line named.
func TestCheckpointsDetectTampering(t *testing.T) {
	cfg, keys := testKey(t, "k1")
	data := signedLog(t, filepath.Join(t.TempDir(), "audit.log"), cfg, 0, 7)
	for _, c := range []struct {
		name   string
		edit   func(ls [][]byte) [][]byte
		line   int
		reason string
	}{
		{"a record deleted and the chain recomputed", func(ls [][]byte) [][]byte { return slices.Delete(ls, 5, 6) }, 8,
			"signed at seq 9 but stands at seq 8: 1 line(s) after line 5 (the last checkpoint that holds) were deleted and the chain recomputed"},
		{"a record altered and the chain recomputed", func(ls [][]byte) [][]byte {
			ls[6] = bytes.Replace(ls[6], []byte(`"decision":"allow"`), []byte(`"decision":"deny"`), 1)
			return ls
		}, 9, "a line between line 5 (the last checkpoint that holds) and this one was altered, deleted or inserted and the chain recomputed"},
		{"a record inserted and the chain recomputed", func(ls [][]byte) [][]byte { return slices.Insert(ls, 2, ls[1]) }, 6,
			"signed at seq 5 but stands at seq 6: 1 line(s) after line 1 (the last checkpoint that holds) were inserted"},
		{"checkpoints removed and the chain recomputed", func(ls [][]byte) [][]byte {
			return slices.DeleteFunc(ls, func(ln []byte) bool { return bytes.Contains(ln, []byte(`"reason":"periodic"`)) })
		}, 9, "signed at seq 11 but stands at seq 9: 2 line(s) after line 1 (the last checkpoint that holds) were deleted"},
		{"the tail and its checkpoints removed, the chain recomputed", func(ls [][]byte) [][]byte {
			ls = slices.DeleteFunc(ls, isCheckpoint)
			return append([][]byte{lines(data)[0]}, ls...)
		}, 8, "7 lines after the last checkpoint (line 1), which promised one at least every 3: a checkpoint after it was removed"},
		{"a checkpoint's reason edited", func(ls [][]byte) [][]byte {
			ls[4] = bytes.Replace(ls[4], []byte(`"reason":"periodic"`), []byte(`"reason":"shutdown"`), 1)
			return ls
		}, 5, "the signature does not verify: the checkpoint was altered or forged"},
		{"a checkpoint forged with another key", func(ls [][]byte) [][]byte {
			ls[10] = bytes.Replace(ls[10], []byte(`"keyID":"k1"`), []byte(`"keyID":"k2"`), 1)
			return ls
		}, 11, `signed by key "k2", which is not among the keys given`},
	} {
		t.Run(c.name, func(t *testing.T) {
			ls := c.edit(slices.Clone(lines(bytes.Clone(data))))
			forged := rechain(ls)
			if n, err := Verify(bytes.NewReader(forged)); err != nil || n != len(ls) {
				t.Fatalf("the forgery does not even hold as a chain: %v", err)
			}
			_, err := VerifyAttested(bytes.NewReader(forged), keys)
			var ce *CheckpointError
			if !errors.As(err, &ce) || ce.Line != c.line || !strings.Contains(ce.Reason, c.reason) {
				t.Fatalf("VerifyAttested = %v\nwant line %d: %s", err, c.line, c.reason)
			}
		})
	}
}

func TestCheckpointsWrongKey(t *testing.T) {
	cfg, _ := testKey(t, "k1")
	_, other := testKey(t, "k1") // the same key id, another key
	data := signedLog(t, filepath.Join(t.TempDir(), "audit.log"), cfg, 0, 2)
	_, err := VerifyAttested(bytes.NewReader(data), other)
	var ce *CheckpointError
	if !errors.As(err, &ce) || ce.Line != 1 || ce.Reason != "the signature does not verify: the checkpoint was altered or forged" {
		t.Errorf("another key: %v", err)
	}
	_, err = VerifyAttested(bytes.NewReader(data), keyring{})
	if !errors.As(err, &ce) || ce.Line != 1 || !strings.Contains(ce.Reason, `signed by key "k1", which is not among the keys given: the wrong --key`) {
		t.Errorf("no such key: %v", err)
	}
}

// TestCheckpointsCutTail: lines cut from the end leave a valid shorter chain, but not a clean end.
func TestCheckpointsCutTail(t *testing.T) {
	cfg, keys := testKey(t, "k1")
	data := signedLog(t, filepath.Join(t.TempDir(), "audit.log"), cfg, 0, 7)
	ls := lines(data)
	for _, c := range []struct {
		name       string
		keep       int
		unattested int
		lastLine   int
	}{
		{"the shutdown checkpoint", 10, 1, 9},
		{"after a periodic checkpoint", 9, 0, 9},
		{"mid-run", 7, 2, 5},
	} {
		a, err := VerifyAttested(bytes.NewReader(bytes.Join(ls[:c.keep], nil)), keys)
		if err != nil || a.Complete() || a.CleanEnd || a.Unattested != c.unattested || a.LastLine != c.lastLine {
			t.Errorf("%s: %+v, %v; want %d unattested after line %d, no clean end", c.name, a, err, c.unattested, c.lastLine)
		}
	}
}

// TestCheckpointsRestartAndCrash: a restart continues the file's chain with a start checkpoint; a run that ended
// without a shutdown checkpoint (a crash) is reported, its tail attested by the next start.
func TestCheckpointsRestartAndCrash(t *testing.T) {
	cfg, keys := testKey(t, "k1")
	path := filepath.Join(t.TempDir(), "audit.log")
	signedLog(t, path, cfg, 0, 2)
	data := signedLog(t, path, cfg, 10, 2)
	a, err := VerifyAttested(bytes.NewReader(data), keys)
	if err != nil || !a.Complete() || a.Records != 4 || a.Checkpoints != 4 {
		t.Fatalf("two clean runs: %+v, %v", a, err)
	}
	// A crash: records written, the process gone without Close.
	l, err := OpenWithConfig(path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	l.Write(testRecord(20))
	l.Write(testRecord(21))
	crashed := crash(l)
	d, _ := os.ReadFile(path)
	a, err = VerifyAttested(bytes.NewReader(d), keys)
	if err != nil || a.Complete() || a.Unattested != 2 || a.CleanEnd {
		t.Fatalf("after a crash: %+v, %v", a, err)
	}
	data = signedLog(t, path, cfg, 30, 1)
	a, err = VerifyAttested(bytes.NewReader(data), keys)
	if err != nil || a.Complete() || !slices.Equal(a.UncleanEnds, []int{crashed}) || !a.CleanEnd || a.Unattested != 0 || a.Records != 7 {
		t.Fatalf("after a crash and a restart: %+v, %v; want an unclean end at line %d", a, err, crashed)
	}
	if n, err := Verify(bytes.NewReader(data)); err != nil || n != a.Lines {
		t.Errorf("Verify = %d, %v", n, err)
	}
}

// crash abandons l as a killed process would: no shutdown checkpoint. It returns the number of lines in the file.
func crash(l *Log) int {
	l.acquire()
	if l.timer != nil {
		l.timer.Stop()
	}
	l.closed = true
	l.closer.Close()
	return int(l.seq)
}

// TestCheckpointInterval: records left without a checkpoint get one CheckpointInterval later, with no write needed.
func TestCheckpointInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg, keys := testKey(t, "k1")
		cfg.CheckpointInterval = 10 * time.Second
		var buf testlog.Buffer
		l, err := NewWithConfig(&buf, cfg)
		if err != nil {
			t.Fatal(err)
		}
		l.Write(testRecord(1))
		time.Sleep(9 * time.Second)
		if a, err := VerifyAttested(bytes.NewReader(buf.Bytes()), keys); err != nil || a.Unattested != 1 {
			t.Fatalf("before the interval: %+v, %v", a, err)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		a, err := VerifyAttested(bytes.NewReader(buf.Bytes()), keys)
		if err != nil || a.Unattested != 0 || a.Checkpoints != 2 || a.Last.Reason != CheckpointPeriodic {
			t.Fatalf("after the interval: %+v, %v", a, err)
		}
		time.Sleep(time.Minute) // idle: no checkpoint without records
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		a, err = VerifyAttested(bytes.NewReader(buf.Bytes()), keys)
		if err != nil || !a.Complete() || a.Checkpoints != 3 {
			t.Fatalf("after Close: %+v, %v", a, err)
		}
	})
}

func TestSigningKeyNeedsKeyID(t *testing.T) {
	cfg, _ := testKey(t, "")
	if _, err := NewWithConfig(&bytes.Buffer{}, cfg); err == nil {
		t.Error("a signing key without its key id was accepted")
	}
}

// FuzzVerifyAttested: whatever the file, VerifyAttested agrees with Verify on the chain, never panics, and calls a
// log complete only if it ends with a shutdown checkpoint that verifies with the key.
func FuzzVerifyAttested(f *testing.F) {
	seedKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	keys := keyring{"k": seedKey.Public().(ed25519.PublicKey)}
	cfg := Config{SigningKey: seedKey, KeyID: "k", CheckpointEvery: 2, CheckpointInterval: time.Hour,
		Now: func() time.Time { return time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC) }}
	var buf bytes.Buffer
	l, _ := NewWithConfig(&buf, cfg)
	for i := range 3 {
		l.Write(testRecord(i))
	}
	l.Close()
	valid := buf.Bytes()
	ls := lines(valid)
	f.Add(valid)
	f.Add(bytes.Join(ls[:len(ls)-1], nil))
	f.Add(rechain(append(slices.Clone(ls[:2]), ls[3:]...)))
	f.Add(rechain(slices.DeleteFunc(slices.Clone(ls), isCheckpoint)))
	f.Add(bytes.Replace(valid, []byte(`"reason":"periodic"`), []byte(`"reason":"shutdown"`), 1))
	f.Add([]byte(`{"checkpoint":{"keyID":"k","every":-1},"seq":1,"prevHash":"` + zeroHash + `"}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, verr := Verify(bytes.NewReader(data))
		a, err := VerifyAttested(bytes.NewReader(data), keys)
		// The chain is checked first, line by line: the same break, or a checkpoint failing before any break.
		var be, vbe *BrokenLinkError
		var ce *CheckpointError
		switch {
		case errors.As(err, &be):
			if verr == nil || verr.Error() != err.Error() {
				t.Fatalf("VerifyAttested: %v; Verify: %v", err, verr)
			}
		case errors.As(err, &ce):
			if errors.As(verr, &vbe) && vbe.Line <= ce.Line {
				t.Fatalf("a checkpoint failure at line %d after a broken link at line %d", ce.Line, vbe.Line)
			}
		case err == nil && verr != nil:
			t.Fatalf("VerifyAttested found nothing; Verify: %v", verr)
		case err != nil:
			t.Fatalf("VerifyAttested: %v", err)
		}
		if err == nil {
			if a.Lines != n {
				t.Fatalf("%d lines, Verify counted %d", a.Lines, n)
			}
			if a.Complete() && (a.Last == nil || a.Last.Reason != CheckpointShutdown || a.LastLine != n) {
				t.Fatalf("complete without a final shutdown checkpoint: %+v", a)
			}
		}
	})
}
