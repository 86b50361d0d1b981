package gateway_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/warren-dev/warren/internal/testenv/memnet"
)

// testNet is where a harness's servers (the gateway, the API server stand-ins) listen and where its callers and
// connectors dial: loopback TCP, or an in-memory network for the tests that run in a synctest bubble, whose clock
// moves only when every goroutine waits on something of the bubble's (a socket is not).
type testNet struct {
	mem    *memnet.Network // nil: loopback
	client *http.Client    // sends each request on a connection of its own, so that a held stream queues nothing
}

// client is loopback's.
var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

var loopback = &testNet{client: client}

// memoryNet is an in-memory network; it must be made in the bubble that uses it.
func memoryNet(t testing.TB) *testNet {
	n := &testNet{mem: memnet.New()}
	tr := &http.Transport{DisableKeepAlives: true, DialContext: n.mem.DialContext}
	n.client = &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	return n
}

// server serves h at addr (host:port; loopback picks its own).
func (n *testNet) server(t testing.TB, addr string, h http.Handler) *httptest.Server {
	t.Helper()
	if n.mem == nil {
		return httptest.NewServer(h)
	}
	l, err := n.mem.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &httptest.Server{Listener: l, Config: &http.Server{Handler: h}}
	s.Start()
	return s
}

// dialer is the dial function of a peer tagged tag (nil on loopback: the default dialer); cut(tag) drops its
// connections.
func (n *testNet) dialer(tag string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if n.mem == nil {
		return nil
	}
	return n.mem.Dialer(tag)
}

// dial opens a raw connection to addr.
func (n *testNet) dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	var err error
	if n.mem == nil {
		c, err = net.Dial("tcp", addr)
	} else {
		c, err = n.mem.DialContext(context.Background(), "tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// cut drops every connection the peer tagged tag has open, with no goodbye on either side.
func (n *testNet) cut(tag string) { n.mem.Cut(tag) }
