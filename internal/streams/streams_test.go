package streams

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// revocations is a Check that fails the tokens it was told about.
type revocations struct {
	mu      sync.Mutex
	revoked map[string]bool
	checks  int
}

func (v *revocations) revoke(id string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.revoked[id] = true
}

func (v *revocations) check(t Token) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.checks++
	if v.revoked[t.ID] {
		return errors.New(`the token "` + t.ID + `" was revoked`)
	}
	return nil
}

// TestRevokedTokenEndsItsStreamsWithinAnInterval: a revoked token's streams all end at the next round, with the
// reason as their context's cause; another token's streams go on.
func TestRevokedTokenEndsItsStreamsWithinAnInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := &revocations{revoked: map[string]bool{}}
		var refreshed atomic.Int32
		r := New(Config{Check: v.check, Refresh: func() error { refreshed.Add(1); return nil }, Interval: 5 * time.Second})
		defer r.Close()
		a1, untrackA1 := r.Track(context.Background(), Token{Key: "a", ID: "a"})
		a2, untrackA2 := r.Track(context.Background(), Token{Key: "a", ID: "a"})
		b, untrackB := r.Track(context.Background(), Token{Key: "b", ID: "b"})
		defer untrackA1()
		defer untrackA2()
		defer untrackB()

		time.Sleep(7 * time.Second) // one round has run: nothing revoked
		if a1.Err() != nil || b.Err() != nil || refreshed.Load() != 1 {
			t.Fatalf("before revocation: a %v b %v, refreshed %d", a1.Err(), b.Err(), refreshed.Load())
		}
		v.revoke("a")
		revokedAt := time.Now()
		<-a1.Done()
		<-a2.Done()
		if took := time.Since(revokedAt); took > 5*time.Second {
			t.Fatalf("streams ended %v after the revocation, want within the 5s interval", took)
		}
		e := EndedBy(a1)
		if e == nil || e.Reason != `the token "a" was revoked` || EndedBy(a2) == nil {
			t.Fatalf("cause %v, want the revocation", context.Cause(a1))
		}
		if b.Err() != nil {
			t.Fatalf("another token's stream ended: %v", context.Cause(b))
		}
		if r.Len() != 3 {
			t.Fatalf("ended streams are untracked by their requests, not by the Registry: Len %d", r.Len())
		}
	})
}

// TestIdleRegistryHoldsNothing: no timer runs while no stream is open, and one starts with the next stream.
func TestIdleRegistryHoldsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := &revocations{revoked: map[string]bool{}}
		r := New(Config{Check: v.check})
		defer r.Close()
		_, untrack := r.Track(context.Background(), Token{Key: "a", ID: "a"})
		time.Sleep(12 * time.Second) // two rounds at the default 5s
		untrack()
		untrack() // idempotent
		time.Sleep(time.Minute)
		v.mu.Lock()
		checks := v.checks
		v.mu.Unlock()
		if checks != 2 {
			t.Fatalf("%d checks, want 2 rounds while the stream was open and none after", checks)
		}
		if r.Len() != 0 || len(r.tokens) != 0 {
			t.Fatalf("Len %d, %d tokens after the last untrack", r.Len(), len(r.tokens))
		}
		ctx, untrack := r.Track(context.Background(), Token{Key: "a", ID: "a"})
		defer untrack()
		v.revoke("a")
		time.Sleep(6 * time.Second)
		if EndedBy(ctx) == nil {
			t.Fatal("the timer did not start again with the next stream")
		}
	})
}

// TestCheckNowAndClose: CheckNow ends at once; after Close nothing is checked and Track still works.
func TestCheckNowAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := &revocations{revoked: map[string]bool{"a": true}}
		r := New(Config{Check: v.check, Interval: time.Hour})
		ctx, untrack := r.Track(context.Background(), Token{Key: "a", ID: "a"})
		defer untrack()
		r.CheckNow()
		if EndedBy(ctx) == nil {
			t.Fatal("CheckNow did not end the revoked token's stream")
		}
		r.Close()
		ctx2, untrack2 := r.Track(context.Background(), Token{Key: "a", ID: "a"})
		defer untrack2()
		r.CheckNow()
		time.Sleep(2 * time.Hour)
		if ctx2.Err() != nil {
			t.Fatal("a closed Registry still ends streams")
		}
		// A request that ends untracks and cancels its context, with no Ended cause.
		r3 := New(Config{Check: v.check})
		defer r3.Close()
		ctx3, untrack3 := r3.Track(context.Background(), Token{Key: "c"})
		untrack3()
		if ctx3.Err() == nil || EndedBy(ctx3) != nil {
			t.Fatalf("untracked stream: %v %v", ctx3.Err(), context.Cause(ctx3))
		}
	})
}

// failingBody is a response body whose read fails the way the transport's does when its request is cancelled.
type failingBody struct {
	data []byte
	ctx  context.Context
}

func (b *failingBody) Read(p []byte) (int, error) {
	if len(b.data) > 0 {
		n := copy(p, b.data)
		b.data = b.data[n:]
		return n, nil
	}
	<-b.ctx.Done()
	return 0, context.Cause(b.ctx)
}

func (b *failingBody) Close() error { return nil }

// TestCleanEnd: a marked response ends with EOF on a clean cause, and fails as before on any other; unmarked and
// upgraded responses are left alone.
func TestCleanEnd(t *testing.T) {
	isEnded := func(err error) bool { var e *Ended; return errors.As(err, &e) }
	run := func(mark bool, status int, cause error) ([]byte, error) {
		ctx, cancel := context.WithCancelCause(context.Background())
		if mark {
			ctx = WithCleanEnd(ctx, isEnded)
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://x/api/v1/pods?watch=1", nil)
		resp := &http.Response{StatusCode: status, Request: req, Body: &failingBody{data: []byte("event\n"), ctx: ctx}}
		if err := ModifyResponse(resp); err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(10*time.Millisecond, func() { cancel(cause) })
		var out bytes.Buffer
		_, err := io.Copy(&out, resp.Body)
		return out.Bytes(), err
	}
	revoked := &Ended{Reason: "revoked"}
	if out, err := run(true, 200, revoked); err != nil || string(out) != "event\n" {
		t.Fatalf("marked, ended: %q %v; want the data and a clean end", out, err)
	}
	if _, err := run(true, 200, errors.New("connector lost")); err == nil {
		t.Fatal("marked, other cause: a clean end hides a cut")
	}
	if _, err := run(false, 200, revoked); err == nil {
		t.Fatal("unmarked response ended cleanly")
	}
	ctx := WithCleanEnd(context.Background(), isEnded)
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://x/exec", nil)
	body := &failingBody{ctx: ctx}
	resp := &http.Response{StatusCode: http.StatusSwitchingProtocols, Request: req, Body: body}
	ModifyResponse(resp)
	if resp.Body != io.ReadCloser(body) {
		t.Fatal("an upgrade's body (the connection) was wrapped")
	}
}
