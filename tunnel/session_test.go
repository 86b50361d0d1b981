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
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair starts a real TLS server whose handler upgrades to a tunnel, dials it, and returns both ends.
// The gateway end opens streams, the connector end accepts them.
func pair(t testing.TB, cfg Config, via func(addr string) string) (gatewaySide, connectorSide *Session) {
	t.Helper()
	got := make(chan *Session, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	if via != nil {
		addr = via(addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, "wss://"+addr+"/connect", DialOptions{
		Header:     http.Header{"Authorization": {"Bearer good"}},
		HTTPClient: srv.Client(),
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

func TestStreamsCarryBytesBothWays(t *testing.T) {
	g, c := pair(t, Config{}, nil)
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
			defer st.Close()
			go func() {
				st.Write(payload)
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
}

func TestRefusedHandshakeCarriesReason(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"connector token expired at 2026-01-01T00:00:00Z","code":401}`)
	}))
	defer srv.Close()
	_, err := Dial(context.Background(), strings.Replace(srv.URL, "https", "wss", 1)+"/connect", DialOptions{HTTPClient: srv.Client()})
	var he *HandshakeError
	if !errors.As(err, &he) {
		t.Fatalf("Dial error = %v, want a *HandshakeError", err)
	}
	if he.StatusCode != 401 || he.Message != "connector token expired at 2026-01-01T00:00:00Z" || he.RetryAfter != 7*time.Second {
		t.Fatalf("HandshakeError = %+v", he)
	}
}

func TestUpgradeRefusesPlainRequests(t *testing.T) {
	r := httptest.NewRequest("GET", "/connect", nil)
	w := httptest.NewRecorder()
	if _, err := Upgrade(w, r, Config{}); !errors.Is(err, ErrNotTunnel) {
		t.Fatalf("Upgrade error = %v, want ErrNotTunnel", err)
	}
	if w.Body.Len() != 0 || w.Code != 200 {
		t.Fatalf("Upgrade wrote %d %q; it must leave the answer to the caller", w.Code, w.Body.String())
	}
}

func TestOpenWaitsForAFreeSlot(t *testing.T) {
	g, c := pair(t, Config{MaxStreams: 2}, nil)
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
}

func TestClosedSessionRefusesOpen(t *testing.T) {
	g, c := pair(t, Config{}, nil)
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

func (p *freezingProxy) start(t *testing.T, target string) string {
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
	g, c := pair(t, Config{CloseTimeout: 200 * time.Millisecond, StreamWindow: 256 << 10}, nil)
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
	peer := <-accepted
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
	writeErr := make(chan error, 1)
	go func() {
		// Far more than the window: blocks once the window is spent, since the gateway side stops reading.
		_, err := peer.Write(make([]byte, 8<<20))
		writeErr <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the writer fill the window
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
}
