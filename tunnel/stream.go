package tunnel

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-dev/warren/tunnel/internal/yamux"
)

// stream is one yamux stream holding a slot of its session until closed.
type stream struct {
	*yamux.Stream
	slots     chan struct{}
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// Read fails once the stream is closed, as net.Conn promises: yamux's Close is only a half-close, after which
// data the peer still sends would be read (a proxy ending a session on purpose would pass the peer's orderly
// goodbye on, and the caller would take a cut session for a finished one).
func (st *stream) Read(p []byte) (int, error) {
	if st.closed.Load() {
		return 0, net.ErrClosed
	}
	n, err := st.Stream.Read(p)
	if st.closed.Load() {
		return 0, net.ErrClosed
	}
	return n, err
}

// Close ends the stream both ways: reads fail at once (a blocked Read is woken), the peer gets a FIN, and yamux
// resets the stream if the peer has not closed its side within Config.CloseTimeout.
func (st *stream) Close() error {
	st.closeOnce.Do(func() {
		st.closed.Store(true)
		st.Stream.SetReadDeadline(time.Now())
		st.closeErr = st.Stream.Close()
		<-st.slots
	})
	return st.closeErr
}

// CloseWrite half-closes the stream: the peer reads EOF, and can still write. httputil.ReverseProxy uses it when
// one side of an upgraded connection finishes. The read side lasts Config.CloseTimeout at most: yamux's close
// timeout applies to a half-closed stream too, after which it resets the stream, and Read returns what was
// buffered, then io.EOF.
func (st *stream) CloseWrite() error { return st.Stream.Close() }
