// Package sessionend tells the client of an upgraded session (exec, attach, port-forward over WebSocket or SPDY/3.1)
// why the gateway ended it, so that kubectl prints the reason instead of "abnormal closure" or, over SPDY, exits 0 in
// silence. It follows the server's frames (package streamframe) to add one last frame of its own at a frame
// boundary, and stays silent when it must: mid-frame, after the server's own closing, when the client left first or
// the framing was lost.
package sessionend

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/warren-dev/warren/internal/wire"
)

// End is why the gateway itself ended an upgraded session (exec, attach, port-forward), in the terms of
// each protocol: a WebSocket close code, or a Kubernetes Status for SPDY's error stream.
type End struct {
	WSCode  int    // RFC 6455 close code
	Code    int    // HTTP status of the Status
	Reason  string // metav1.StatusReason of the Status
	Message string
}

// WebSocket close codes the gateway sends when it ends a session itself (RFC 6455 7.4.1).
const (
	ClosePolicyViolation = 1008 // the maximum stream length
	CloseInternalError   = 1011 // the cluster's side went away without closing
)

// framing follows one upgraded protocol's frames through a session, so that the gateway can add a last frame of its
// own at a frame boundary, and knows when it must not (the server already said its last word).
type framing interface {
	// fromServer and fromClient see every byte of each direction, in order.
	fromServer(p []byte)
	fromClient(p []byte)
	// farewell returns the frames that tell the client why the session ends, or nil when nothing may or need be
	// said: mid-frame, after the server's own closing, or when the framing was lost.
	farewell(end *End) []byte
}

// Wrap returns w such that, when the session r upgrades to ends, the client is told end()'s reason (nil: nothing to
// say). portForward tells SPDY's port-forward (text on its error streams) from exec and attach (a Status). A
// request that upgrades to neither WebSocket nor SPDY gets w back unchanged.
func Wrap(w http.ResponseWriter, r *http.Request, portForward bool, end func() *End) http.ResponseWriter {
	var fr func(http.ResponseWriter) framing
	switch {
	case wire.IsWebSocket(r.Header):
		fr = func(http.ResponseWriter) framing { return newWSFraming() }
	case wire.IsSPDY(r.Header):
		fr = func(w http.ResponseWriter) framing {
			return newSPDYFraming(portForward, func() string { return w.Header().Get("X-Stream-Protocol-Version") })
		}
	default:
		return w
	}
	return &reasonWriter{ResponseWriter: w, framing: fr, end: end}
}

// reasonWriter hands the ReverseProxy a hijacked connection that tells the client why the gateway ended the
// session, so that kubectl prints the reason instead of "abnormal closure" or, over SPDY, a silent exit 0. end
// returns nil when there is nobody to tell or nothing to say.
type reasonWriter struct {
	http.ResponseWriter
	framing func(w http.ResponseWriter) framing
	end     func() *End
}

func (w *reasonWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *reasonWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// The 101 response goes out through brw, straight to the connection, so reasonConn sees only the session.
	return &reasonConn{Conn: conn, framing: w.framing(w.ResponseWriter), end: w.end}, brw, nil
}

// reasonConn is the caller's side of a hijacked session.
type reasonConn struct {
	net.Conn
	framing framing
	end     func() *End

	writeMu sync.Mutex // held across a whole Write, so the farewell never lands inside one
	mu      sync.Mutex // guards framing, lost and clientGone
	lost    bool       // a write went out partly: the frame boundaries are unknown
	// clientGone: the client's side ended first. Nobody is left to tell, and the farewell could only go unread.
	clientGone bool
	closeOnce  sync.Once
}

func (c *reasonConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	if n > 0 {
		c.framing.fromClient(p[:n])
	}
	if err != nil {
		c.clientGone = true
	}
	c.mu.Unlock()
	return n, err
}

func (c *reasonConn) Write(p []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	c.framing.fromServer(p)
	c.mu.Unlock()
	n, err := c.Conn.Write(p)
	if n < len(p) {
		c.mu.Lock()
		c.lost = true
		c.mu.Unlock()
	}
	return n, err
}

// farewellTimeout bounds the last write: a client that stopped reading gets no reason rather than a stuck close.
const farewellTimeout = time.Second

func (c *reasonConn) Close() error {
	c.closeOnce.Do(func() {
		// The deadline also ends a Write blocked on a client that stopped reading, so writeMu comes free.
		c.Conn.SetWriteDeadline(time.Now().Add(farewellTimeout))
		c.writeMu.Lock()
		defer c.writeMu.Unlock()
		c.mu.Lock()
		var last []byte
		if !c.lost && !c.clientGone {
			if end := c.end(); end != nil {
				last = c.framing.farewell(end)
			}
		}
		c.mu.Unlock()
		if len(last) > 0 {
			c.Conn.Write(last)
		}
	})
	return c.Conn.Close()
}
