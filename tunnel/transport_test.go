package tunnel

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
)

// transport is one way for the connector to reach the gateway. The tunnel's cases run over each, as yamux's run
// over pipes, TCP and TLS (testConnTypes).
type transport struct {
	name string
	// serve serves h and returns the gateway's base URL (ws:// or wss://) and the client that reaches it.
	serve func(t testing.TB, h http.Handler) (base string, client *http.Client)
}

var transports = []transport{
	{"pipe", servePipe},
	{"tcp", serveTCP},
	{"tls", serveTLS},
	{"tls through a CONNECT proxy", serveThroughProxy},
}

// forEachTransport runs f over each transport.
func forEachTransport(t *testing.T, f func(t *testing.T, tr transport)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { f(t, tr) })
	}
}

func serveTCP(t testing.TB, h http.Handler) (string, *http.Client) {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return "ws://" + srv.Listener.Addr().String(), srv.Client()
}

func serveTLS(t testing.TB, h http.Handler) (string, *http.Client) {
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	return "wss://" + srv.Listener.Addr().String(), srv.Client()
}

// servePipe serves h in memory: each connection the client dials is a net.Pipe.
func servePipe(t testing.TB, h http.Handler) (string, *http.Client) {
	l := &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
	srv := &http.Server{Handler: h}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	return "ws://pipe", &http.Client{Transport: &http.Transport{DialContext: l.dial}}
}

// pipeListener hands the server ends of in-memory connections to an http.Server.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return tunnelAddr("pipe") }

// serveThroughProxy serves h over TLS behind an HTTP proxy that only tunnels (CONNECT), as a corporate proxy in
// front of a connector does (HTTPS_PROXY); the client goes through it, and the test fails if it did not.
func serveThroughProxy(t testing.TB, h http.Handler) (string, *http.Client) {
	base, client := serveTLS(t, h)
	proxy, connects := startConnectProxy(t)
	tr := client.Transport.(*http.Transport).Clone()
	tr.Proxy = http.ProxyURL(proxy)
	t.Cleanup(func() {
		if connects.Load() == 0 {
			t.Error("the client did not go through the proxy")
		}
	})
	return base, &http.Client{Transport: tr}
}

// startConnectProxy starts an HTTP proxy that answers CONNECT by relaying bytes to the target. It returns its URL
// and the count of CONNECTs it served.
func startConnectProxy(t testing.TB) (*url.URL, *atomic.Int64) {
	var (
		connects atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		conns    []net.Conn
	)
	track := func(c ...net.Conn) {
		mu.Lock()
		conns = append(conns, c...)
		mu.Unlock()
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Counted from the start: srv.Close waits for handlers until they hijack, so the relays' Add comes before
		// the cleanup's Wait.
		wg.Add(1)
		defer wg.Done()
		if r.Method != http.MethodConnect {
			http.Error(w, "this proxy only tunnels (CONNECT)", http.StatusMethodNotAllowed)
			return
		}
		up, err := net.Dial("tcp", r.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		down, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			up.Close()
			return
		}
		connects.Add(1)
		track(up, down)
		if _, err := io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
			up.Close()
			down.Close()
			return
		}
		relay := func(dst net.Conn, src io.Reader) {
			defer wg.Done()
			io.Copy(dst, src)
			up.Close()
			down.Close()
		}
		wg.Add(2)
		go relay(up, brw) // brw holds what the client sent past the CONNECT
		go relay(down, up)
	}))
	t.Cleanup(func() {
		srv.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	u, _ := url.Parse(srv.URL)
	return u, &connects
}
