package gateway

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// idleWriteChunk is the most written to the caller under one deadline. The deadline is an idle bound, not a total
// one: each chunk gets IdleWriteTimeout afresh, so a caller that reads at least this much per timeout keeps its
// request, whatever its length. (A TLS write that timed out cannot be resumed, so a write cannot simply be retried
// after partial progress: the chunk is the unit of progress.)
const idleWriteChunk = 32 << 10

// idleDeadline is the write deadline of the next chunk towards a caller: now plus the idle timeout, unless a
// deadline set from above (a refusal's, sessionend's farewell) comes first.
type idleDeadline struct {
	timeout time.Duration
	mu      sync.Mutex // held while a deadline is set, so that one set from above is never overwritten by a chunk's
	capped  time.Time  // the deadline set from above; zero: none
	// timedOut is set when a write failed at its idle deadline: the caller stopped reading.
	timedOut atomic.Bool
}

// arm sets the next chunk's deadline with set and returns it, and whether it is the idle one.
func (d *idleDeadline) arm(set func(time.Time) error) (deadline time.Time, idle bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	deadline, idle = time.Now().Add(d.timeout), true
	if !d.capped.IsZero() && d.capped.Before(deadline) {
		deadline, idle = d.capped, false
	}
	set(deadline) // an error means no deadline is possible here (a test recorder): write anyway
	return deadline, idle
}

// capAt records a deadline set from above, and sets it with set.
func (d *idleDeadline) capAt(t time.Time, set func(time.Time) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.capped = t
	return set(t)
}

// noteTimeout records a write that failed at its idle deadline.
func (d *idleDeadline) noteTimeout(err error, deadline time.Time, idle bool) {
	if err != nil && idle && !time.Now().Before(deadline) {
		d.timedOut.Store(true)
	}
}

// chunked writes p in chunks, each under a deadline of its own.
func (d *idleDeadline) chunked(p []byte, set func(time.Time) error, write func([]byte) (int, error)) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), idleWriteChunk)]
		deadline, idle := d.arm(set)
		n, err := write(chunk)
		written += n
		p = p[n:]
		if err != nil {
			d.noteTimeout(err, deadline, idle)
			return written, err
		}
	}
	return written, nil
}

// idleWriter ends the request of a caller that stops reading: every write towards the caller (the response, its
// flushes, and the connection once hijacked for an upgrade) must make progress within the idle timeout. Without
// it, a caller holds its request, and the data the tunnel buffered for it, for as long as it likes.
type idleWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
	idleDeadline
}

func newIdleWriter(w http.ResponseWriter, timeout time.Duration) *idleWriter {
	iw := &idleWriter{ResponseWriter: w, rc: http.NewResponseController(w), idleDeadline: idleDeadline{timeout: timeout}}
	// Also covers what net/http writes before the first Write (100 Continue) and, on a connection kept alive, a
	// deadline left by the previous request.
	iw.arm(iw.rc.SetWriteDeadline)
	return iw
}

func (w *idleWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *idleWriter) Write(p []byte) (int, error) {
	return w.chunked(p, w.rc.SetWriteDeadline, w.ResponseWriter.Write)
}

// FlushError is what http.ResponseController calls, and the ReverseProxy flushes after every write of a stream.
func (w *idleWriter) FlushError() error {
	deadline, idle := w.arm(w.rc.SetWriteDeadline)
	err := w.rc.Flush()
	w.noteTimeout(err, deadline, idle)
	return err
}

// SetWriteDeadline is what http.ResponseController calls: a deadline set from above (a refusal's) caps the idle
// one.
func (w *idleWriter) SetWriteDeadline(t time.Time) error { return w.capAt(t, w.rc.SetWriteDeadline) }

// finish leaves a deadline for what net/http still writes once the handler has returned (the last buffered bytes
// and the end of a chunked body): without one, a caller that stopped reading would hold the connection forever.
func (w *idleWriter) finish() { w.arm(w.rc.SetWriteDeadline) }

func (w *idleWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := w.rc.Hijack()
	if err != nil {
		return nil, nil, err
	}
	// The 101 goes out through brw, straight to conn, under this deadline; the session's writes under their own.
	ic := &idleConn{Conn: conn, d: &w.idleDeadline}
	w.arm(conn.SetWriteDeadline)
	return ic, brw, nil
}

// idleConn is a hijacked caller connection whose writes each get the idle deadline. A deadline set on it from above
// (sessionend's farewell) caps the idle one.
type idleConn struct {
	net.Conn
	d *idleDeadline
}

func (c *idleConn) Write(p []byte) (int, error) {
	return c.d.chunked(p, c.Conn.SetWriteDeadline, c.Conn.Write)
}

func (c *idleConn) SetWriteDeadline(t time.Time) error { return c.d.capAt(t, c.Conn.SetWriteDeadline) }

func (c *idleConn) SetDeadline(t time.Time) error {
	c.Conn.SetReadDeadline(t)
	return c.d.capAt(t, c.Conn.SetWriteDeadline)
}
