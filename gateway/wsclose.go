package gateway

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/http"
	"sync"
	"time"
)

// WebSocket close codes the gateway sends when it ends a session itself (RFC 6455 7.4.1).
const (
	closePolicyViolation = 1008 // the maximum stream length
	closeInternalError   = 1011 // the cluster's side went away without closing
)

// wsReasonWriter lets the gateway tell a WebSocket client (exec, attach, port-forward) why it ended a session: a
// closing frame with the reason, so that kubectl prints it instead of "abnormal closure". reason returns the code
// and text, or 0 when the gateway has nothing to say (the caller left).
type wsReasonWriter struct {
	http.ResponseWriter
	reason func() (code int, text string)
}

func (w *wsReasonWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *wsReasonWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return &wsReasonConn{Conn: conn, reason: w.reason}, brw, nil
}

// wsReasonConn follows the frames the server sends to the client, so that a closing frame is only ever added at a
// frame boundary, and never after the server closed the session itself.
type wsReasonConn struct {
	net.Conn
	reason func() (int, string)

	mu        sync.Mutex
	hdr       [14]byte
	hdrLen    int    // bytes of the current frame header seen so far
	remaining uint64 // payload bytes of the current frame still to come
	sawClose  bool   // the server sent a closing frame
	closeOnce sync.Once
}

func (c *wsReasonConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.follow(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// follow advances the frame state over p.
func (c *wsReasonConn) follow(p []byte) {
	for len(p) > 0 {
		if c.remaining > 0 {
			n := uint64(len(p))
			if n > c.remaining {
				n = c.remaining
			}
			c.remaining -= n
			p = p[n:]
			continue
		}
		c.hdr[c.hdrLen] = p[0]
		c.hdrLen++
		p = p[1:]
		if c.hdrLen < 2 {
			continue
		}
		need := 2
		switch c.hdr[1] & 0x7f {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if c.hdr[1]&0x80 != 0 {
			need += 4
		}
		if c.hdrLen < need {
			continue
		}
		switch n := c.hdr[1] & 0x7f; n {
		case 126:
			c.remaining = uint64(binary.BigEndian.Uint16(c.hdr[2:4]))
		case 127:
			c.remaining = binary.BigEndian.Uint64(c.hdr[2:10])
		default:
			c.remaining = uint64(n)
		}
		if c.hdr[0]&0x0f == 0x8 {
			c.sawClose = true
		}
		c.hdrLen = 0
	}
}

func (c *wsReasonConn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		atBoundary := c.remaining == 0 && c.hdrLen == 0 && !c.sawClose
		c.mu.Unlock()
		if !atBoundary {
			return
		}
		code, text := c.reason()
		if code == 0 {
			return
		}
		if len(text) > 123 {
			text = text[:123]
		}
		frame := make([]byte, 0, 4+len(text))
		frame = append(frame, 0x88, byte(2+len(text)), byte(code>>8), byte(code))
		frame = append(frame, text...)
		c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		c.Conn.Write(frame)
	})
	return c.Conn.Close()
}
