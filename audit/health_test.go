package audit

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// stuckWriter stands for standard output piped to a process that stopped reading: Write blocks until unblock.
type stuckWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	stuck   chan struct{} // closed by unblock
	blocked bool
}

func newStuckWriter() *stuckWriter { return &stuckWriter{stuck: make(chan struct{}), blocked: true} }

func (w *stuckWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	blocked := w.blocked
	w.mu.Unlock()
	if blocked {
		<-w.stuck
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *stuckWriter) unblock() {
	w.mu.Lock()
	w.blocked = false
	w.mu.Unlock()
	close(w.stuck)
}

// TestStalledWriter: a writer that stops taking bytes holds at most MaxWaiting Writes, each at most WriteTimeout;
// then the log reports itself stalled and refuses records at once, and once the writer moves again it records what
// it lost and goes on.
func TestStalledWriter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newStuckWriter()
		l, err := NewWithConfig(w, Config{WriteTimeout: 5 * time.Second, MaxWaiting: 2})
		if err != nil {
			t.Fatal(err)
		}
		results := make(chan error, 3)
		for i := range 3 { // the first one is stuck in the writer, the two others wait for it
			go func() { results <- l.Write(testRecord(i)) }()
			synctest.Wait()
		}
		if err := l.Err(); err != nil {
			t.Errorf("Err while a write is young = %v", err)
		}
		start := time.Now()
		if err := l.Write(testRecord(3)); !errors.Is(err, ErrStalled) || err.Error() != "audit log stalled: 2 writes are already waiting" {
			t.Errorf("Write past MaxWaiting = %v, want at once ErrStalled", err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("Write past MaxWaiting waited %v", d)
		}
		time.Sleep(6 * time.Second)
		for range 2 {
			if err := <-results; !errors.Is(err, ErrStalled) || err.Error() != "audit log stalled: no write completed within 5s" {
				t.Errorf("a waiting Write = %v, want ErrStalled after WriteTimeout", err)
			}
		}
		if err := l.Err(); !errors.Is(err, ErrStalled) || err.Error() != "audit log stalled: a write has not completed for 6s (0 records waiting, 3 dropped)" {
			t.Errorf("Err = %v, want the log stalled", err)
		}
		start = time.Now()
		if err := l.Write(testRecord(4)); !errors.Is(err, ErrStalled) || time.Since(start) != 0 {
			t.Errorf("Write while stalled = %v after %v, want ErrStalled at once", err, time.Since(start))
		}
		w.unblock()
		if err := <-results; err != nil {
			t.Errorf("the stuck Write = %v once the writer moved", err)
		}
		if err := l.Err(); err != nil {
			t.Errorf("Err once the writer moved = %v", err)
		}
		if err := l.Write(testRecord(5)); err != nil {
			t.Fatal(err)
		}
		data := w.buf.Bytes()
		if n, err := Verify(bytes.NewReader(data)); n != 3 || err != nil {
			t.Fatalf("Verify = %d, %v; want 3 lines", n, err)
		}
		ls := lines(data)
		for i, want := range []string{`"requestID":"req-0"`, `"lost":{"records":4,"reason":"audit log stalled: a write has not completed for over 5s"}`, `"requestID":"req-5"`} {
			if !strings.Contains(string(ls[i]), want) {
				t.Errorf("line %d: %s\nwant %s", i+1, ls[i], want)
			}
		}
	})
}

// TestCloseWithAStalledWriter: Close gives up after WriteTimeout rather than hang.
func TestCloseWithAStalledWriter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newStuckWriter()
		l := New(w)
		done := make(chan error)
		go func() { done <- l.Write(testRecord(0)) }()
		synctest.Wait()
		if err := l.Close(); !errors.Is(err, ErrStalled) {
			t.Errorf("Close = %v, want ErrStalled", err)
		}
		w.unblock()
		<-done
		if err := l.Close(); err != nil {
			t.Errorf("Close once the writer moved = %v", err)
		}
	})
}

// TestFullDisk: a writer failing every write (ENOSPC) makes Err report it and every record is counted lost, so
// that a caller failing closed refuses requests; when space comes back, the loss is recorded and the chain goes on.
func TestFullDisk(t *testing.T) {
	w := &failWriter{}
	l := New(w)
	for i := range 3 {
		if err := l.Write(testRecord(i)); err == nil {
			t.Fatalf("Write %d succeeded on a full disk", i)
		}
	}
	if err := l.Err(); !errors.Is(err, ErrWriteFailed) || err.Error() != "audit log write failed: disk full (3 records lost since)" {
		t.Errorf("Err = %v", err)
	}
	w.n = 1 << 20
	if err := l.Write(testRecord(3)); err != nil {
		t.Fatal(err)
	}
	if err := l.Err(); err != nil {
		t.Errorf("Err after space came back = %v", err)
	}
	ls := lines(w.buf.Bytes())
	if len(ls) != 2 || !strings.Contains(string(ls[0]), `"lost":{"records":3,"reason":"failed to write audit record: disk full"}`) {
		t.Errorf("log:\n%s", w.buf.Bytes())
	}
}
