package memnet

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"testing/synctest"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDialAcceptCut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New()
		if _, err := n.DialContext(context.Background(), "tcp", "nobody.test:80"); err == nil ||
			err.Error() != "dial tcp: connection refused (no memnet listener at nobody.test:80)" {
			t.Fatalf("dial with no listener: %v", err)
		}
		l, err := n.Listen("server.test:80")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.Listen("server.test:80"); err == nil {
			t.Fatal("a second listener at the same address")
		}
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				t.Error(err)
			}
			accepted <- c
		}()
		c, err := n.Dialer("peer")(context.Background(), "tcp", "server.test:80")
		if err != nil {
			t.Fatal(err)
		}
		s := <-accepted
		if s.LocalAddr().String() != "server.test:80" || c.RemoteAddr().String() != "server.test:80" ||
			s.RemoteAddr().String() != c.LocalAddr().String() {
			t.Fatalf("addresses: server %v ← %v, client %v → %v", s.LocalAddr(), s.RemoteAddr(), c.LocalAddr(), c.RemoteAddr())
		}
		go c.Write([]byte("hi"))
		b := make([]byte, 2)
		if _, err := io.ReadFull(s, b); err != nil || string(b) != "hi" {
			t.Fatalf("read %q %v", b, err)
		}
		if n.Open("peer") != 1 {
			t.Fatalf("open connections of peer: %d, want 1", n.Open("peer"))
		}
		n.Cut("peer")
		if _, err := s.Read(b); err != io.ErrClosedPipe {
			t.Fatalf("server read after the cut: %v, want %v", err, io.ErrClosedPipe)
		}
		if _, err := c.Write(b); err != io.ErrClosedPipe {
			t.Fatalf("client write after the cut: %v, want %v", err, io.ErrClosedPipe)
		}
		if n.Open("peer") != 0 {
			t.Fatalf("open connections of peer after the cut: %d", n.Open("peer"))
		}
		l.Close()
		if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("accept after close: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := n.DialContext(ctx, "tcp", "server.test:80"); err == nil {
			t.Fatal("dial after the listener closed")
		}
	})
}
