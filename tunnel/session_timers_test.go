package tunnel

// The session's timer logic (keepalives, pong timeout, write timeout, stream close timeout) under testing/synctest:
// its clock is fake, so the tests check the documented times exactly and take no real time. synctest drives timers,
// not real networks: the two ends meet over an in-memory pipe, without the HTTP handshake.

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// memConn is one end of the in-memory pipe, which can stop being a good peer: frozen, it swallows what it is given
// to write (a peer gone behind a NAT that still answers); stalled, it stops reading (a peer whose buffers are full).
type memConn struct {
	net.Conn
	frozen  *atomic.Bool
	stalled chan struct{} // closed by stall
	stall   func()
	closed  chan struct{}
	once    sync.Once
	writes  atomic.Int64
}

func (c *memConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	if c.frozen.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *memConn) Read(p []byte) (int, error) {
	select {
	case <-c.stalled:
		<-c.closed
		return 0, net.ErrClosed
	default:
	}
	return c.Conn.Read(p)
}

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// memPair joins a gateway end and a connector end over an in-memory pipe; it must run in the test's bubble. freeze
// makes both directions swallow everything from then on.
func memPair(t *testing.T, cfg Config) (gatewaySide, connectorSide *Session, gw, conn *memConn, freeze func()) {
	t.Helper()
	cfg = cfg.withDefaults()
	a, b := net.Pipe()
	frozen := new(atomic.Bool)
	end := func(nc net.Conn) *memConn {
		stalled := make(chan struct{})
		var once sync.Once
		return &memConn{Conn: nc, frozen: frozen, stalled: stalled, stall: func() { once.Do(func() { close(stalled) }) }, closed: make(chan struct{})}
	}
	gw, conn = end(a), end(b)
	g, err := newSession(newWSConn(gw, nil, false, nil, nil, cfg.WriteTimeout), true, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := newSession(newWSConn(conn, nil, true, nil, nil, cfg.WriteTimeout), false, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close(); c.Close() })
	return g, c, gw, conn, func() { frozen.Store(true) }
}

func ended(s *Session) bool {
	select {
	case <-s.Done():
		return true
	default:
		return false
	}
}

// endsAt checks that both sessions are up just before at (from the bubble's start) and have ended at it.
func endsAt(t *testing.T, start time.Time, at time.Duration, sessions map[string]*Session) {
	t.Helper()
	time.Sleep(time.Until(start.Add(at - time.Millisecond)))
	synctest.Wait()
	for name, s := range sessions {
		if ended(s) {
			t.Errorf("the %s side ended before %v", name, at)
		}
	}
	time.Sleep(time.Millisecond)
	synctest.Wait()
	for name, s := range sessions {
		if !ended(s) {
			t.Errorf("the %s side is still up at %v", name, at)
		}
	}
}

// TestDeadPeerIsNoticedInTime: a peer that vanished (every byte swallowed, no FIN, no RST) is noticed when the
// yamux keepalive fails (KeepAliveInterval + WriteTimeout) or the WebSocket pong is late (PingInterval +
// PingTimeout), whichever comes first: 20 s with the defaults, within the 25 s Config documents.
func TestDeadPeerIsNoticedInTime(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		at   time.Duration
	}{
		{"defaults", Config{}, 20 * time.Second},
		{"WebSocket ping alone", Config{KeepAliveInterval: time.Hour}, 25 * time.Second},
		{"yamux keepalive alone", Config{PingInterval: time.Hour}, 20 * time.Second},
		{"short timings", Config{PingInterval: 100 * time.Millisecond, PingTimeout: 200 * time.Millisecond,
			KeepAliveInterval: 100 * time.Millisecond, WriteTimeout: 200 * time.Millisecond}, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				g, c, _, _, freeze := memPair(t, tc.cfg)
				synctest.Wait() // the first keepalive, sent at once for its round trip, is answered
				freeze()
				endsAt(t, start, tc.at, map[string]*Session{"gateway": g, "connector": c})
			})
		})
	}
}

// TestPeerThatStopsReadingIsDropped: a peer that stops reading (its buffers full) is dropped when a write to it
// has waited WriteTimeout: the first write after the stall is the keepalive, at KeepAliveInterval. The peer, whose
// keepalive goes unanswered, ends at the same time.
func TestPeerThatStopsReadingIsDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		g, c, _, conn, _ := memPair(t, Config{})
		synctest.Wait() // the first keepalive, sent at once for its round trip, is answered
		conn.stall()
		endsAt(t, start, 20*time.Second, map[string]*Session{"gateway": g, "connector": c})
	})
}

// TestHealthyIdleSessionStaysUp: an hour of idleness costs a healthy session nothing but its keepalives, which go
// out as often as configured, and the session still carries a stream at the end.
func TestHealthyIdleSessionStaysUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, c, gw, conn, _ := memPair(t, Config{})
		echo(t, c)
		time.Sleep(time.Hour)
		synctest.Wait()
		if ended(g) || ended(c) {
			t.Fatal("an idle healthy session ended")
		}
		// Each end pings every 15 s and runs a yamux keepalive every 10 s.
		for name, end := range map[string]*memConn{"gateway": gw, "connector": conn} {
			if n := end.writes.Load(); n < 3600/15+3600/10 {
				t.Errorf("the %s end wrote %d times in an hour, want at least %d (its pings and keepalives)", name, n, 3600/15+3600/10)
			}
		}
		st, err := g.Open(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.Write([]byte("still there?"))
		buf := make([]byte, len("still there?"))
		if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "still there?" {
			t.Fatalf("echo after an idle hour: %q, %v", buf, err)
		}
	})
}

// TestCloseTimeoutResetsAPeerStillWriting: a stream closed while the peer still writes into it (nobody reads) is
// reset exactly CloseTimeout later, which fails the peer's blocked write.
func TestCloseTimeoutResetsAPeerStillWriting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, c, _, _, _ := memPair(t, Config{StreamWindow: 256 << 10})
		st, peer := openStream(t, g, c)
		defer peer.Close()
		writeErr := make(chan error, 1)
		go func() {
			_, err := peer.Write(make([]byte, 8<<20)) // far more than the window, which the gateway side never reads
			writeErr <- err
		}()
		synctest.Wait() // the writer is blocked on the spent window
		closed := time.Now()
		st.Close()
		err := <-writeErr
		if err == nil {
			t.Fatal("the peer's write into a closed stream succeeded")
		}
		if d := time.Since(closed); d != 5*time.Second {
			t.Fatalf("the peer's write failed %v after Close, want CloseTimeout (5s)", d)
		}
	})
}
