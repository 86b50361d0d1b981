package testproc

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTailWriter(t *testing.T) {
	var sink strings.Builder
	w := &tailWriter{prefix: "p: ", log: NewLog(&sink)}
	for i := range tailLines + 5 {
		_, _ = w.Write([]byte("line " + string(rune('a'+i%26)) + "\n"))
	}
	_, _ = w.Write([]byte("part"))
	_, _ = w.Write([]byte(strings.Repeat("x", 2*tailLineBytes)))
	lines := strings.Split(w.tail(), "\n")
	if len(lines) != tailLines+1 {
		t.Fatalf("tail has %d lines, want %d", len(lines), tailLines+1)
	}
	if got := lines[len(lines)-1]; len(got) != len("    p: ")+tailLineBytes || !strings.HasPrefix(got, "    p: part") {
		t.Errorf("partial line not bounded: %d bytes, %.20q", len(got), got)
	}
	if n := strings.Count(sink.String(), "\n"); n != tailLines+5 {
		t.Errorf("logger got %d lines, want %d", n, tailLines+5)
	}
	w.flush()
	if !strings.HasSuffix(sink.String(), "x\n") {
		t.Error("flush did not forward the partial line")
	}
}

// A child that exits before it is ready ends the wait at once, with its exit status and last lines; Stop then
// reports the early exit too.
func TestWaitReadyStopsWhenTheChildExits(t *testing.T) {
	script := filepath.Join(t.TempDir(), "fail")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'bind: address already in use' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	p, err := Start("fail", script, nil, t.TempDir(), NewLog(&out))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = WaitReady(t.Context(), p, "fail", time.Minute, 10*time.Millisecond, func(context.Context) error { return os.ErrNotExist })
	if err == nil || !strings.Contains(err.Error(), "fail exited unexpectedly (exit status 3)") || !strings.Contains(err.Error(), "fail: bind: address already in use") {
		t.Fatalf("WaitReady: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("WaitReady took %s after the child exited", d)
	}
	if !p.PortTaken() {
		t.Error("PortTaken is false for a child that said its address was in use")
	}
	if err := p.Stop(); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("Stop after an early exit: %v", err)
	}
	if !strings.Contains(out.String(), "fail: bind: address already in use\n") {
		t.Errorf("log: %q", out.String())
	}
}

func TestFreePortsDiffer(t *testing.T) {
	ports, err := FreePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] || p <= 0 {
			t.Fatalf("ports %v", ports)
		}
		seen[p] = true
	}
}
