package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// testRecord returns a plausible record; i makes each one different.
func testRecord(i int) Record {
	return Record{
		Time:       time.Date(2026, 3, 1, 12, 0, 0, i*1000, time.FixedZone("CET", 3600)),
		Component:  ComponentGateway,
		RequestID:  fmt.Sprintf("req-%d", i),
		Cluster:    "prod-eks",
		Subject:    "alice",
		TokenID:    "jti-1",
		Issuer:     "warren",
		Method:     "GET",
		Path:       fmt.Sprintf("/api/v1/namespaces/payments/pods?limit=%d&labelSelector=a%%3Db", i),
		Verb:       "list",
		Resource:   "pods",
		Namespace:  "payments",
		Decision:   DecisionAllow,
		Status:     200,
		BytesIn:    0,
		BytesOut:   int64(100 + i),
		DurationMS: 1.25,
		SourceIP:   "10.0.0.1",
		UserAgent:  "kubectl/v1.32.0 <test> & co",
		Seq:        999,          // overwritten by Write
		PrevHash:   "ignored-me", // overwritten by Write
	}
}

// chain writes n records with New and returns the log's bytes.
func chain(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	l := New(&buf)
	for i := range n {
		if err := l.Write(testRecord(i)); err != nil {
			t.Fatalf("Write %d: %v", i, err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func lines(b []byte) [][]byte {
	return bytes.SplitAfter(b, []byte("\n"))[:bytes.Count(b, []byte("\n"))]
}

func TestRoundTrip(t *testing.T) {
	const n = 5
	data := chain(t, n)
	got, err := Verify(bytes.NewReader(data))
	if err != nil || got != n {
		t.Fatalf("Verify = %d, %v; want %d, nil", got, err, n)
	}
	prev := zeroHash
	for i, ln := range lines(data) {
		var r Record
		if err := json.Unmarshal(ln, &r); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		want := testRecord(i)
		want.Time = want.Time.UTC()
		want.Seq = uint64(i + 1)
		want.PrevHash = prev
		if !reflect.DeepEqual(r, want) {
			t.Errorf("line %d:\n got %+v\nwant %+v", i+1, r, want)
		}
		prev = hashLine(bytes.TrimSuffix(ln, []byte("\n")))
	}
	first := string(lines(data)[0])
	for _, s := range []string{`"time":"2026-03-01T11:00:00Z"`, `"userAgent":"kubectl/v1.32.0 <test> & co"`, `"seq":1,"prevHash":"` + zeroHash + `"}`} {
		if !strings.Contains(first, s) {
			t.Errorf("first line lacks %s: %s", s, first)
		}
	}
}

func TestOmitEmpty(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	if err := l.Write(Record{Component: ComponentConnector, Cluster: "c", Decision: DecisionDeny}); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"time", "component", "requestID", "cluster", "method", "path", "verb", "decision", "status", "bytesIn", "bytesOut", "durationMs", "seq", "prevHash"} {
		if _, ok := m[k]; !ok {
			t.Errorf("required field %q missing: %s", k, buf.Bytes())
		}
	}
	for _, k := range []string{"subject", "tokenID", "issuer", "apiGroup", "resource", "subresource", "namespace", "name", "reason", "command", "container", "sourceIP", "userAgent"} {
		if _, ok := m[k]; ok {
			t.Errorf("empty optional field %q present: %s", k, buf.Bytes())
		}
	}
	if ts, _ := m["time"].(string); ts == "" || !strings.HasSuffix(ts, "Z") {
		t.Errorf("zero Time should become now in UTC, got %q", ts)
	}
}

func TestOpenContinuesChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	for round := range 3 {
		l, err := Open(path)
		if err != nil {
			t.Fatalf("round %d: Open: %v", round, err)
		}
		for i := range 3 {
			if err := l.Write(testRecord(round*10 + i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("mode %v, want 0600", m)
	}
	data, _ := os.ReadFile(path)
	if n, err := Verify(bytes.NewReader(data)); n != 9 || err != nil {
		t.Fatalf("Verify = %d, %v; want 9, nil", n, err)
	}
	if !bytes.Contains(data, []byte(`"seq":9,`)) {
		t.Errorf("no seq 9 in\n%s", data)
	}
}

func TestOpenLongLastLine(t *testing.T) {
	// A last line longer than Open's read chunk, after shorter ones.
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	r := testRecord(1)
	for _, p := range []string{"/short", "/" + strings.Repeat("x", 200<<10)} {
		r.Path = p
		if err := l.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	if l, err = Open(path); err != nil {
		t.Fatal(err)
	}
	if err := l.Write(testRecord(2)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	f, _ := os.Open(path)
	defer f.Close()
	if n, err := Verify(f); n != 3 || err != nil {
		t.Fatalf("Verify = %d, %v; want 3, nil", n, err)
	}
}

func TestOpenRefusesDamagedEnd(t *testing.T) {
	good := chain(t, 3)
	for name, content := range map[string][]byte{
		"no final newline": good[:len(good)-1],
		"cut mid line":     good[:len(good)-20],
		"empty last line":  append(bytes.Clone(good), '\n'),
		"not a record":     append(bytes.Clone(good), "hello\n"...),
		"no seq":           append(bytes.Clone(good), `{"prevHash":"x"}`+"\n"...),
		"only a newline":   []byte("\n"),
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.log")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			l, err := Open(path)
			if err == nil {
				l.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, ErrTornLog) || !strings.Contains(err.Error(), "warren audit verify "+path) {
				t.Errorf("error %q: want ErrTornLog naming `warren audit verify %s`", err, path)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, content) {
				t.Error("Open changed the file")
			}
		})
	}
}

func TestOpenError(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "missing-dir", "audit.log")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open in a missing directory: %v", err)
	}
}

func TestConcurrentWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := l.Write(testRecord(w*each + i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if n, err := Verify(bytes.NewReader(data)); n != writers*each || err != nil {
		t.Fatalf("Verify = %d, %v; want %d, nil", n, err, writers*each)
	}
	seen := map[string]bool{}
	for i, ln := range lines(data) {
		var r Record
		if err := json.Unmarshal(ln, &r); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		if seen[r.RequestID] {
			t.Fatalf("line %d: request %s written twice", i+1, r.RequestID)
		}
		seen[r.RequestID] = true
	}
}

func TestWriteAfterClose(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := l.Write(testRecord(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
	if buf.Len() != 0 {
		t.Errorf("wrote %q after Close", buf.Bytes())
	}
}

// failWriter writes at most n bytes, then fails.
type failWriter struct {
	buf bytes.Buffer
	n   int
}

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) <= w.n {
		w.n -= len(p)
		return w.buf.Write(p)
	}
	k := w.n
	w.n = 0
	w.buf.Write(p[:k])
	return k, errors.New("disk full")
}

func TestWriteErrors(t *testing.T) {
	t.Run("nothing written: the chain goes on, the loss recorded", func(t *testing.T) {
		w := &failWriter{}
		l := New(w)
		if err := l.Write(testRecord(0)); err == nil || err.Error() != "failed to write audit record: disk full" {
			t.Fatalf("Write = %v, want the write error", err)
		}
		if err := l.Err(); !errors.Is(err, ErrWriteFailed) || err.Error() != "audit log write failed: disk full (1 records lost since)" {
			t.Errorf("Err = %v, want the write failure", err)
		}
		w.n = 1 << 20
		if err := l.Write(testRecord(1)); err != nil {
			t.Fatal(err)
		}
		if err := l.Err(); err != nil {
			t.Errorf("Err after a write succeeded = %v", err)
		}
		data := w.buf.Bytes()
		if n, err := Verify(bytes.NewReader(data)); n != 2 || err != nil {
			t.Fatalf("Verify = %d, %v; want 2, nil", n, err)
		}
		if first := string(lines(data)[0]); !strings.Contains(first, `"lost":{"records":1,"reason":"failed to write audit record: disk full"},"seq":1,`) {
			t.Errorf("first line %s: want the loss of one record", first)
		}
		if second := string(lines(data)[1]); !strings.Contains(second, `"requestID":"req-1"`) {
			t.Errorf("second line %s: want the record written after the failure", second)
		}
	})
	t.Run("partial line: the log stops", func(t *testing.T) {
		w := &failWriter{n: 10}
		l := New(w)
		if err := l.Write(testRecord(0)); err == nil {
			t.Fatal("Write succeeded")
		}
		w.n = 1 << 20
		if err := l.Write(testRecord(1)); err == nil || !strings.Contains(err.Error(), "unusable") {
			t.Fatalf("Write after a partial write = %v, want the log unusable", err)
		}
		if w.buf.Len() != 10 {
			t.Errorf("wrote %d bytes, want only the first 10", w.buf.Len())
		}
		if err := l.Err(); err == nil || !strings.Contains(err.Error(), "unusable") {
			t.Errorf("Err = %v, want the log unusable", err)
		}
	})
}

func TestExecDetails(t *testing.T) {
	for _, tc := range []struct {
		query     string
		command   []string
		container string
	}{
		{"command=sh&command=-c&command=echo+a%26b&container=app&stdin=true&tty=true", []string{"sh", "-c", "echo a&b"}, "app"},
		{"container=app&command=ls&stdout=true&command=%2F", []string{"ls", "/"}, "app"},
		{"stdout=true", nil, ""},
	} {
		q, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		cmd, ctr := ExecDetails(q)
		if !reflect.DeepEqual(cmd, tc.command) || ctr != tc.container {
			t.Errorf("ExecDetails(%s) = %q, %q; want %q, %q", tc.query, cmd, ctr, tc.command, tc.container)
		}
		if len(cmd) > 0 {
			cmd[0] = "changed"
			if q["command"][0] == "changed" {
				t.Error("ExecDetails returned the query's own slice")
			}
		}
	}
}

var _ io.Writer = (*failWriter)(nil)
