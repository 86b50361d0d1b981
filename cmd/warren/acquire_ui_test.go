package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

// TestConfirm: the terminal question before a mode leaves its trace takes y or yes (any case) for yes, anything
// else, the end of the input or the end of the run for no, and says what is at stake.
func TestConfirm(t *testing.T) {
	for _, c := range []struct {
		in   string
		want bool
	}{
		{"y\n", true}, {"YES\n", true}, {" yes \n", true}, {"\n", false}, {"n\n", false}, {"yy\n", false}, {"", false},
	} {
		var errOut bytes.Buffer
		u := newAcquireUI(io.Discard, &errOut, strings.NewReader(c.in), false)
		got := u.Confirm(context.Background(), "ephemeral", "an ephemeral container cannot be removed")
		u.close()
		if got != c.want {
			t.Errorf("%q: %v, want %v", c.in, got, c.want)
		}
		if q := errOut.String(); !strings.Contains(q, "the next mode is ephemeral: an ephemeral container cannot be removed.") ||
			!strings.Contains(q, "Use the ephemeral mode in this run? [y/N] ") {
			t.Errorf("question: %q", q)
		}
	}
	// The run ends while the question waits: no.
	pr, pw := io.Pipe()
	defer pw.Close()
	u := newAcquireUI(io.Discard, io.Discard, pr, false)
	defer u.close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if u.Confirm(ctx, "node", "a pod") {
		t.Fatal("yes without an answer")
	}
}
