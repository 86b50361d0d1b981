package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warren-dev/warren/internal/testenv/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tunnelHandler is the gateway's side in these tests: it refuses a request without the connector's token (401 with
// a reason and Retry-After, as the gateway does), upgrades the others and hands the session over.
func tunnelHandler(cfg Config, got chan<- *Session) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer good" {
			w.Header().Set("Retry-After", "7")
			http.Error(w, `{"kind":"Status","message":"connector token expired"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Warren-Tunnel-Id", "t-1")
		w.Header().Set("Bad\r\nHeader", "x")          // an invalid name is not sent
		w.Header().Set("X-Split", "a\r\nInjected: 1") // nor a value that would split the answer
		s, err := Upgrade(w, r, cfg)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- s
	})
}

// pairOver starts a gateway end on tr, dials it, and returns both ends. The gateway end opens streams, the
// connector end accepts them.
func pairOver(t testing.TB, tr transport, cfg Config) (gatewaySide, connectorSide *Session) {
	t.Helper()
	got := make(chan *Session, 1)
	base, client := tr.serve(t, tunnelHandler(cfg, got))
	return dialPair(t, base, client, cfg, got)
}

func dialPair(t testing.TB, base string, client *http.Client, cfg Config, got <-chan *Session) (gatewaySide, connectorSide *Session) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, base+"/connect", DialOptions{
		Header:     http.Header{"Authorization": {"Bearer good"}},
		HTTPClient: client,
		Config:     cfg,
	})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	g := <-got
	t.Cleanup(func() { g.Close(); c.Close() })
	if h := c.Header(); h.Get("Warren-Tunnel-Id") != "t-1" || h.Get("Injected") != "" || h.Get("X-Split") != "" || g.Header() != nil {
		t.Fatalf("the connector's view of the 101 answer's header: %v (gateway side %v)", h, g.Header())
	}
	return g, c
}

// pair is pairOver TLS, through via when given (a proxy in the path: it gets the server's address and returns its
// own).
func pair(t testing.TB, cfg Config, via func(addr string) string) (gatewaySide, connectorSide *Session) {
	t.Helper()
	if via == nil {
		return pairOver(t, transport{"tls", serveTLS}, cfg)
	}
	got := make(chan *Session, 1)
	base, client := serveTLS(t, tunnelHandler(cfg, got))
	return dialPair(t, "wss://"+via(base[len("wss://"):]), client, cfg, got)
}

// echo serves every accepted stream by copying it back, until the session ends.
func echo(t *testing.T, s *Session) {
	var wg sync.WaitGroup
	t.Cleanup(func() { s.Close(); wg.Wait() }) // runs before pair's cleanup: end the accept loop first
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := s.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

// openStream opens a stream from the gateway side g, accepts it on the connector side c, and returns both ends;
// the stream is established (a first write went through).
func openStream(t *testing.T, g, c *Session) (gatewayEnd, connectorEnd net.Conn) {
	t.Helper()
	accepted := make(chan net.Conn, 1)
	go func() {
		s, err := c.Accept()
		if err == nil {
			accepted <- s
		}
	}()
	st, err := g.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("hello"))
	return st, <-accepted
}

func TestStreamsCarryBytesBothWays(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		// The echo must be read back within CloseTimeout of CloseWrite (see stream.CloseWrite): more than the default
		// 5 s on a loaded machine under -race.
		g, c := pairOver(t, tr, Config{CloseTimeout: time.Minute})
		echo(t, c)

		payload := make([]byte, 8<<20)
		rand.Read(payload)
		want := sha256.Sum256(payload)

		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := g.Open(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				wrote := make(chan struct{})
				defer func() {
					st.Close() // fails the writer's Write if the reader stopped early
					<-wrote
				}()
				go func() {
					defer close(wrote)
					// In pieces of 1 MiB, large frames still: a single write of it all would be one yamux frame of up
					// to the window, which must go out within WriteTimeout behind the other streams' (yamux's
					// ConnectionWriteTimeout), too short under -race on a loaded machine.
					for rest := payload; len(rest) > 0; rest = rest[min(len(rest), 1<<20):] {
						if _, err := st.Write(rest[:min(len(rest), 1<<20)]); err != nil {
							t.Error(err)
							break
						}
					}
					st.(interface{ CloseWrite() error }).CloseWrite()
				}()
				h := sha256.New()
				if _, err := io.Copy(h, st); err != nil {
					t.Error(err)
				}
				if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
					t.Errorf("echoed bytes differ: sha256 %x, want %x", got, want)
				}
			}()
		}
		wg.Wait()
	})
}

func TestOpenWaitsForAFreeSlot(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		g, c := pairOver(t, tr, Config{MaxStreams: 2})
		echo(t, c)
		ctx := context.Background()
		a, err := g.Open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b, err := g.Open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if _, err := g.Open(short); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("third Open with 2 slots = %v, want DeadlineExceeded", err)
		}
		a.Close()
		third, err := g.Open(ctx)
		if err != nil {
			t.Fatalf("Open after a Close: %v", err)
		}
		third.Close()
		b.Close()
	})
}

func TestClosedSessionRefusesOpen(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		g, c := pairOver(t, tr, Config{})
		c.Close()
		select {
		case <-g.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("gateway side did not notice the connector closing")
		}
		if _, err := g.Open(context.Background()); !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Open on ended session = %v, want ErrClosed", err)
		}
		if err := g.Close(); err != nil {
			t.Fatalf("Close after the peer left = %v", err)
		}
	})
}

// TestStalledPeerIsNoticed black-holes the TCP path (no FIN, no RST) and checks that
// the keepalives end both sessions.
func TestStalledPeerIsNoticed(t *testing.T) {
	freezer := &freezingProxy{}
	cfg := Config{PingInterval: 100 * time.Millisecond, PingTimeout: 200 * time.Millisecond,
		KeepAliveInterval: 100 * time.Millisecond, WriteTimeout: 200 * time.Millisecond}
	g, c := pair(t, cfg, func(addr string) string { return freezer.start(t, addr) })
	freezer.freeze()
	for name, s := range map[string]*Session{"gateway": g, "connector": c} {
		select {
		case <-s.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("%s side did not notice the stalled peer", name)
		}
	}
}

// freezingProxy forwards TCP until freeze is called; then it swallows every byte, like a peer that vanished
// behind a NAT that still answers.
type freezingProxy struct {
	mu     sync.Mutex
	frozen chan struct{}
}

func (p *freezingProxy) freeze() { close(p.frozen) }

func (p *freezingProxy) start(t testing.TB, target string) string {
	p.frozen = make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		in, err := ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", target)
		if err != nil {
			in.Close()
			return
		}
		p.mu.Lock()
		conns = append(conns, in, out)
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			defer wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				if err != nil {
					return
				}
				select {
				case <-p.frozen:
					continue // swallowed: the peer never sees it
				default:
				}
				if _, err := dst.Write(buf[:n]); err != nil {
					return
				}
			}
		}
		wg.Add(2)
		go pipe(out, in)
		go pipe(in, out)
	}()
	return ln.Addr().String()
}

// TestCloseIsAFullClose: closing a stream fails a Read blocked on it at once, and a peer that keeps writing into it
// (nobody reads any more) is stopped by a reset within CloseTimeout instead of blocking on the spent window.
func TestCloseIsAFullClose(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		const window = 256 << 10
		g, c := pairOver(t, tr, Config{CloseTimeout: 200 * time.Millisecond, StreamWindow: window})
		st, peer := openStream(t, g, c)
		defer peer.Close()

		// The reader reads a little, then stalls (a caller that stopped reading), then goes on after Close.
		stall := make(chan struct{})
		readErr := make(chan error, 1)
		go func() {
			buf := make([]byte, 16)
			st.Read(buf)
			<-stall
			for {
				if _, err := st.Read(buf); err != nil {
					readErr <- err
					return
				}
			}
		}()
		peer.Write([]byte("x")) // the first Read returns this
		var written atomic.Int64
		writeErr := make(chan error, 1)
		go func() {
			// Far more than the window: blocks once the window is spent, since the gateway side stops reading.
			chunk := make([]byte, 16<<10)
			for range (8 << 20) / len(chunk) {
				if _, err := peer.Write(chunk); err != nil {
					writeErr <- err
					return
				}
				written.Add(int64(len(chunk)))
			}
			writeErr <- nil
		}()
		wait.Until(t, 5*time.Second, "the writer to spend most of the window", func() bool { return written.Load() >= window*3/4 })
		st.Close()
		close(stall)
		select {
		case err := <-readErr:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Read after Close: %v, want net.ErrClosed", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("a Read blocked on the stream was not woken by Close")
		}
		select {
		case err := <-writeErr:
			if err == nil {
				t.Fatal("the peer's write into a closed stream succeeded")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the peer is still blocked writing into a stream closed 5 s ago")
		}
	})
}
