package tunnel

import (
	"context"
	"net"
	"net/http"
	"sync"
)

// corkConn sits under the connector's TLS connection. While corked it gathers what TLS writes (one record per 16 KiB
// of payload, each otherwise its own write syscall) and sends it in one write when uncorked, at the end of a
// WebSocket frame. Uncorked it passes writes through, so the HTTP handshake (and a proxy's CONNECT) is unchanged.
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    *[]byte // from chunkPool while corked
	n      int
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	buf := *c.buf
	if c.n+len(p) > len(buf) {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > len(buf) {
			return c.Conn.Write(p)
		}
	}
	c.n += copy(buf[c.n:], p)
	return len(p), nil
}

func (c *corkConn) flushLocked() error {
	if c.n == 0 {
		return nil
	}
	_, err := c.Conn.Write((*c.buf)[:c.n])
	c.n = 0
	return err
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.buf = chunkPool.Get().(*[]byte)
	c.mu.Unlock()
}

func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.flushLocked()
	c.corked = false
	chunkPool.Put(c.buf)
	c.buf = nil
	return err
}

// corkingClient returns a copy of client whose connections are corkConns, and a function that returns the
// connection the upgrade went over. When the client's transport is not an *http.Transport it is returned as is,
// and the tunnel writes uncorked.
func corkingClient(client *http.Client) (*http.Client, func() *corkConn, func()) {
	none := func() *corkConn { return nil }
	rt := client.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	t, ok := rt.(*http.Transport)
	if !ok || t.DialTLSContext != nil || t.DialTLS != nil {
		return client, none, func() {}
	}
	t = t.Clone()
	dial := t.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	var (
		mu   sync.Mutex
		last *corkConn
	)
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cc := &corkConn{Conn: nc}
		mu.Lock()
		last = cc
		mu.Unlock()
		return cc, nil
	}
	t.MaxIdleConnsPerHost = 1
	c := *client
	c.Transport = t
	return &c, func() *corkConn {
		mu.Lock()
		defer mu.Unlock()
		return last
	}, t.CloseIdleConnections
}
