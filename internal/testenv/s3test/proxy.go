package s3test

import (
	"net"
	"sync"
	"testing"
)

// CutProxy forwards TCP connections to a server (the store) and can stop doing so: after limit bytes sent towards it
// (an upload cut mid-way), or at once (Cut). It stands for a store that goes away, without stopping the real one.
type CutProxy struct {
	ln      net.Listener
	target  string
	limit   int64
	mu      sync.Mutex
	sent    int64
	cut     bool
	conns   []net.Conn
	wg      sync.WaitGroup
	closeLn sync.Once
}

// StartCutProxy starts a proxy to target (HOST:PORT) that cuts after limit bytes (0: only when Cut is called); the
// test's cleanup closes it.
func StartCutProxy(t testing.TB, target string, limit int64) *CutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &CutProxy{ln: ln, target: target, limit: limit}
	p.wg.Go(p.accept)
	t.Cleanup(p.Close)
	return p
}

// URL is the proxy's http:// address.
func (p *CutProxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *CutProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		p.mu.Lock()
		if err != nil || p.cut {
			p.mu.Unlock()
			c.Close()
			if up != nil {
				up.Close()
			}
			continue
		}
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(up, c, true) })
		p.wg.Go(func() { p.pipe(c, up, false) })
	}
}

// pipe copies src to dst; towards the store it counts, and cuts every connection once the limit is passed.
func (p *CutProxy) pipe(dst, src net.Conn, counted bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && counted {
			p.mu.Lock()
			p.sent += int64(n)
			over := p.limit > 0 && p.sent > p.limit
			p.mu.Unlock()
			if over {
				p.Cut()
				return
			}
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
}

// Cut closes every connection and refuses new ones (the listener stays, so the port is not reused).
func (p *CutProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for _, c := range p.conns {
		c.Close()
	}
}

// Close stops the proxy and waits for its goroutines.
func (p *CutProxy) Close() {
	p.closeLn.Do(func() { p.ln.Close() })
	p.Cut()
	p.wg.Wait()
}
