package sessionend

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// recordingConn keeps what is written to it.
type recordingConn struct {
	net.Conn
	buf    bytes.Buffer
	closed bool
}

func (c *recordingConn) Write(p []byte) (int, error)      { return c.buf.Write(p) }
func (c *recordingConn) Close() error                     { c.closed = true; return nil }
func (c *recordingConn) SetWriteDeadline(time.Time) error { return nil }

func frame(op byte, payload int) []byte {
	h := []byte{0x80 | op}
	switch {
	case payload < 126:
		h = append(h, byte(payload))
	case payload < 1<<16:
		h = append(h, 126, byte(payload>>8), byte(payload))
	default:
		h = append(h, 127, 0, 0, 0, 0, byte(payload>>24), byte(payload>>16), byte(payload>>8), byte(payload))
	}
	return append(h, make([]byte, payload)...)
}

// TestReasonOnlyAtAFrameBoundary: the closing frame with the reason goes out only between frames, and never after
// the server's own closing frame.
func TestReasonOnlyAtAFrameBoundary(t *testing.T) {
	stream := append(append(frame(2, 10), frame(2, 300)...), frame(2, 70000)...)
	cases := []struct {
		name   string
		writes [][]byte
		told   bool
	}{
		{"after whole frames", [][]byte{stream}, true},
		{"frames split across writes", [][]byte{stream[:1], stream[1:5], stream[5:400], stream[400:]}, true},
		{"mid-frame", [][]byte{stream[:len(stream)-1]}, false},
		{"mid-header", [][]byte{append(append([]byte{}, stream...), 0x82)}, false},
		{"after the server closed", [][]byte{stream, {0x88, 0x02, 0x03, 0xe8}}, false},
	}
	for _, c := range cases {
		rec := &recordingConn{}
		conn := &reasonConn{Conn: rec, framing: newWSFraming(), end: func() *End { return &End{WSCode: ClosePolicyViolation, Message: "max"} }}
		for _, w := range c.writes {
			conn.Write(w)
		}
		written := rec.buf.Len()
		conn.Close()
		extra := rec.buf.Bytes()[written:]
		want := []byte{0x88, 5, 0x03, 0xf0, 'm', 'a', 'x'}
		if told := bytes.Equal(extra, want); told != c.told || (!c.told && len(extra) != 0) || !rec.closed {
			t.Errorf("%s: after Close wrote %x (closed %v), want told=%v", c.name, extra, rec.closed, c.told)
		}
	}
}
