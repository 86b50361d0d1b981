package yamux

// Tests of warren's changes: receive window autotuning and the session's window budget.

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// tcpSessions returns a client and a server session over loopback TCP.
func tcpSessions(t *testing.T, conf func() *Config) (client, server *Session) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	cc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc := <-accepted
	if sc == nil {
		t.Fatal("accept failed")
	}
	if client, err = Client(cc, conf()); err != nil {
		t.Fatal(err)
	}
	if server, err = Server(sc, conf()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

// tuned is a session Config with autotuning up to maxWindow, no keepalive, and b as the budget.
func tuned(maxWindow uint32, tune bool, b Budget) func() *Config {
	return func() *Config {
		c := DefaultConfig()
		c.EnableKeepAlive = false
		c.LogOutput = io.Discard
		c.MaxStreamWindowSize = maxWindow
		c.AutoTuneWindow = tune
		c.WindowBudget = b
		return c
	}
}

// budget is a WindowBudget that records what it holds.
type budget struct {
	mu        sync.Mutex
	max, used uint32
	peak      uint32
}

func (b *budget) Reserve(n uint32) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return false
	}
	b.used += n
	b.peak = max(b.peak, b.used)
	return true
}

func (b *budget) Release(n uint32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
}

func (b *budget) load() (used, peak uint32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.peak
}

func autotuneSessions(t *testing.T, bgt Budget) (client, server *Session) {
	t.Helper()
	client, server = tcpSessions(t, tuned(16<<20, true, bgt))
	for _, sess := range []*Session{client, server} {
		if _, err := sess.Ping(); err != nil { // the round trip autotuning needs
			t.Fatal(err)
		}
	}
	return client, server
}

func (s *Stream) window() uint32 {
	s.controlHdrLock.Lock()
	defer s.controlHdrLock.Unlock()
	return s.maxWindow
}

// TestWindowGrowsForAReaderThatKeepsUp: a reader that drains its stream as fast as the data comes gets a larger
// window, up to the maximum.
func TestWindowGrowsForAReaderThatKeepsUp(t *testing.T) {
	client, server := autotuneSessions(t, nil)
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Write([]byte("x")); err != nil { // the server learns of the stream
		t.Fatal(err)
	}
	peer, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 64<<10)
		for range 2048 { // 128 MiB
			if _, err := peer.Write(buf); err != nil {
				return
			}
		}
		peer.Close()
	}()
	if _, err := io.Copy(io.Discard, st); err != nil {
		t.Fatal(err)
	}
	if w := st.window(); w <= initialStreamWindow {
		t.Fatalf("window %d after 128 MiB read as fast as it came, want grown beyond %d", w, initialStreamWindow)
	}
	t.Logf("window after 128 MiB: %d KiB (RTT %v)", st.window()>>10, client.RTT())
}

// TestStalledReaderHoldsTheInitialWindow: the peer of a stream nobody reads can send no more than the initial
// 256 KiB, however large MaxStreamWindowSize is; without autotuning it sent the whole maximum.
func TestStalledReaderHoldsTheInitialWindow(t *testing.T) {
	for _, tune := range []bool{true, false} {
		client, server := tcpSessions(t, tuned(4<<20, tune, nil))
		client.Ping()
		server.Ping()
		st, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		st.Write([]byte("x"))
		peer, err := server.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		// The writer stops at the window: its write times out, and what it sent is all the window allowed.
		var sent int64
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 16<<10)
			for {
				peer.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
				n, err := peer.Write(buf)
				sent += int64(n)
				if err != nil {
					return
				}
			}
		}()
		<-done
		got := sent
		want := int64(initialStreamWindow)
		if !tune {
			want = 4 << 20
		}
		if got != want {
			t.Fatalf("autotune %v: the peer sent %d bytes to a stream nobody reads, want %d (its window)", tune, got, want)
		}
		st.Close()
	}
}

// TestWindowBudgetBoundsTheSession: streams grow only as far as the session's budget allows, and give it back when
// they close.
func TestWindowBudgetBoundsTheSession(t *testing.T) {
	b := &budget{max: 2 << 20}
	client, server := autotuneSessions(t, b)
	const n = 4
	var wg sync.WaitGroup
	streams := make([]*Stream, n)
	for i := range n {
		st, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		streams[i] = st
		st.Write([]byte("x"))
		peer, err := server.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			for range 512 { // 32 MiB each
				if _, err := peer.Write(buf); err != nil {
					return
				}
			}
			peer.Close()
		})
	}
	for _, st := range streams {
		wg.Go(func() { io.Copy(io.Discard, st) })
	}
	wg.Wait()
	used, peak := b.load()
	var grown uint32
	for _, st := range streams {
		grown += st.window() - initialStreamWindow
	}
	if peak == 0 || peak > b.max || grown > b.max {
		t.Fatalf("budget %d: peak %d, the streams grew by %d", b.max, peak, grown)
	}
	for _, st := range streams {
		st.Close()
	}
	eventually := time.Now().Add(5 * time.Second)
	for used != 0 && time.Now().Before(eventually) {
		time.Sleep(10 * time.Millisecond)
		used, _ = b.load()
	}
	if used != 0 {
		t.Fatalf("%d bytes of budget still held after every stream closed", used)
	}
	t.Logf("budget %d KiB: peak %d KiB used", b.max>>10, peak>>10)
}

// TestNoGrowthForASlowReader: a reader that drains its stream slower than half a window per minTuneEpoch (here
// 32 KiB every 50 ms: 128 KiB take 200 ms) keeps the initial window, even before any round trip was measured.
func TestNoGrowthForASlowReader(t *testing.T) {
	client, server := tcpSessions(t, tuned(16<<20, true, nil))
	st, _ := client.OpenStream()
	st.Write([]byte("x"))
	peer, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 64<<10)
		for range 16 { // 1 MiB
			peer.Write(buf)
		}
		peer.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		if _, err := io.ReadFull(st, buf); err != nil {
			break
		}
		time.Sleep(50 * time.Millisecond) // the slow reader's pace: this is what is tested, not a wait
	}
	if w := st.window(); w != initialStreamWindow {
		t.Fatalf("window %d for a reader of 640 KB/s, want %d", w, initialStreamWindow)
	}
}
