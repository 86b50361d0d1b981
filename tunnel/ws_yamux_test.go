package tunnel

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/warren-dev/warren/tunnel/internal/yamux"
)

// heldConn is the connection under a yamux session in these tests: it records each Write call, and its Read blocks
// until Close (the peer says nothing).
type heldConn struct {
	recorder
	closed chan struct{}
	once   sync.Once
}

func newHeldConn() *heldConn { return &heldConn{closed: make(chan struct{})} }

func (c *heldConn) Read(p []byte) (int, error) {
	<-c.closed
	return 0, net.ErrClosed
}

func (c *heldConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *heldConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.writes)
}

// yamuxSendsData runs a yamux client over conn, writes body on a stream, and returns once conn saw n writes.
func yamuxSendsData(t *testing.T, conn io.ReadWriteCloser, body []byte, writes func() int, n int) {
	t.Helper()
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = false
	cfg.LogOutput = io.Discard
	s, err := yamux.Client(conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(body); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for writes() < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

// TestYamuxWritesAHeaderAndItsBodyInTwoWrites pins the assumption of wsConn.Write: yamux's send loop writes a data
// frame's 12-byte header, then its body, as two Write calls, and Write sends the two as one WebSocket frame
// (DESIGN.md "Performance notes"; without it every data frame costs two WebSocket frames, and on the connector two
// TLS records and two system calls).
func TestYamuxWritesAHeaderAndItsBodyInTwoWrites(t *testing.T) {
	conn := newHeldConn()
	body := bytes.Repeat([]byte("b"), 1000)
	yamuxSendsData(t, conn, body, conn.count, 3) // the stream's SYN (a window update), the header, the body
	conn.mu.Lock()
	defer conn.mu.Unlock()
	for i, w := range conn.writes {
		if len(w) == yamuxHeaderSize && w[0] == 0 && w[1] == yamuxTypeData && binary.BigEndian.Uint32(w[8:]) == uint32(len(body)) &&
			i+1 < len(conn.writes) && bytes.Equal(conn.writes[i+1], body) {
			return
		}
	}
	var sizes []int
	for _, w := range conn.writes {
		sizes = append(sizes, len(w))
	}
	t.Fatalf(`yamux no longer writes a data frame as two Write calls, its 12-byte header then its body (write sizes: %v).
wsConn.Write (tunnel/ws.go) holds such a header back and sends it with the next Write as one WebSocket frame. If yamux
now writes header and body in one call, each Write is one frame already: delete the pending header from wsConn.Write
and this test. If it writes them some other way, teach wsConn.Write that way. Either way, compare
BenchmarkThroughputConnectorToGateway before and after.`, sizes)
}

// TestYamuxDataFramesCrossAsOneWebSocketFrame: with the real yamux on top, a data frame's header and body reach the
// wire in one WebSocket frame, from either end.
func TestYamuxDataFramesCrossAsOneWebSocketFrame(t *testing.T) {
	for _, client := range []bool{true, false} {
		wire := newHeldConn()
		c := newWSConn(wire, nil, client, nil, nil, time.Second)
		body := bytes.Repeat([]byte("d"), 100<<10)
		yamuxSendsData(t, c, body, func() int {
			_, payloads := readFrames(t, wire.all(), client)
			return len(payloads)
		}, 2)
		_, payloads := readFrames(t, wire.all(), client)
		found := false
		for _, p := range payloads {
			if len(p) == yamuxHeaderSize+len(body) && p[1] == yamuxTypeData && bytes.Equal(p[yamuxHeaderSize:], body) {
				found = true
			}
		}
		if !found {
			var sizes []int
			for _, p := range payloads {
				sizes = append(sizes, len(p))
			}
			t.Fatalf("client=%v: WebSocket frames of %v bytes, want one of %d (yamux's header and body together)", client, sizes, yamuxHeaderSize+len(body))
		}
	}
}
