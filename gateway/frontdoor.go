package gateway

import (
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/warren-dev/warren/internal/wire"
)

// FrontDoorConfig is how the gateway takes connections and requests before it knows who sent them: what it trusts
// about the client's address, and what an unauthenticated caller may hold and for how long. A connection is
// unauthenticated until a request on it brings a valid caller or connector token; only then is it kept alive and
// counted apart, so that thousands of connector tunnels from one address (a NAT) are never refused by the caps on
// unauthenticated connections. Zero fields take DefaultConfig's values.
type FrontDoorConfig struct {
	// TrustedProxies are the proxies in front of the gateway (an Ingress, a load balancer). Only their word on
	// the client's address is taken: the X-Forwarded-For entries they append (read from the right, each entry
	// from a trusted proxy leading to the next) and, with ProxyProtocol, their PROXY protocol header. Everyone
	// else's address is the connection's. Without it, X-Forwarded-For is ignored.
	TrustedProxies []netip.Prefix
	// ProxyProtocol makes connections from TrustedProxies start with a PROXY protocol header (v1 or v2), and
	// refuses those that do not. Connections from other addresses (a kubelet's probe) are served as they come; a
	// PROXY header from them is not honoured.
	ProxyProtocol bool
	// MaxUnauthenticated bounds the unauthenticated connections of one listener. Past it, the oldest of them is
	// closed to make room for the new one. Default 4096 (about 60 KiB each: 240 MiB).
	MaxUnauthenticated int
	// MaxUnauthenticatedPerSource bounds the unauthenticated connections of one client address (an IPv6 /64:
	// connections through a trusted proxy without ProxyProtocol are counted per client instead), and the
	// unauthenticated requests one client has in flight at once; past it, 429. Default 256: a reconnect storm of
	// connectors behind one NAT handshakes for milliseconds each. Past it, a new connection from that address is
	// closed at once: the address only competes with itself.
	MaxUnauthenticatedPerSource int
	// HeaderTimeout bounds the TLS handshake, a PROXY header and the request headers (http.Server's
	// ReadHeaderTimeout). Default 10 s.
	HeaderTimeout time.Duration
	// UnauthenticatedReadTimeout bounds reading a request's body until the request has authenticated. Default 10 s.
	UnauthenticatedReadTimeout time.Duration
	// RefusalTimeout bounds what follows a refusal: the gateway answers, reads at most this long what is left of
	// the body, and closes the connection. Default 2 s.
	RefusalTimeout time.Duration
	// IdleTimeout closes an authenticated keep-alive connection idle for this long; upgraded connections (tunnels,
	// exec) are not affected. Default 5 min.
	IdleTimeout time.Duration
}

func (c FrontDoorConfig) withDefaults() FrontDoorConfig {
	d := DefaultConfig().FrontDoor
	if c.MaxUnauthenticated <= 0 {
		c.MaxUnauthenticated = d.MaxUnauthenticated
	}
	if c.MaxUnauthenticatedPerSource <= 0 {
		c.MaxUnauthenticatedPerSource = d.MaxUnauthenticatedPerSource
	}
	if c.HeaderTimeout <= 0 {
		c.HeaderTimeout = d.HeaderTimeout
	}
	if c.UnauthenticatedReadTimeout <= 0 {
		c.UnauthenticatedReadTimeout = d.UnauthenticatedReadTimeout
	}
	if c.RefusalTimeout <= 0 {
		c.RefusalTimeout = d.RefusalTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	return c
}

// ParseCIDRs parses a comma-separated list of addresses and CIDR prefixes (an address alone is a /32 or /128), as
// --trusted-proxies takes them.
func ParseCIDRs(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR prefix (e.g. 10.0.0.0/8)", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// frontDoor applies a FrontDoorConfig to requests (in ServeHTTP) and to connections (Listener).
type frontDoor struct {
	cfg FrontDoorConfig
	log *slog.Logger
	m   *metrics

	mu        sync.Mutex
	perClient map[string]int // unauthenticated requests in flight, by client (sourcePrefix); only non-zero counts
}

func newFrontDoor(cfg FrontDoorConfig, log *slog.Logger, m *metrics) *frontDoor {
	return &frontDoor{cfg: cfg.withDefaults(), log: log, m: m, perClient: map[string]int{}}
}

func (d *frontDoor) trusted(a netip.Addr) bool {
	for _, p := range d.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr is the real client of a request whose nearest address (the connection's, after a PROXY header) is
// peer: while the address in hand is a trusted proxy, the next X-Forwarded-For entry from the right is its word on
// who came before it. It stops at the first untrusted address, and at an entry that is not an address (the proxy
// that appended the garbage is then the client, as far as anyone trustworthy said).
func (d *frontDoor) clientAddr(peer netip.Addr, xff []string) netip.Addr {
	addr := peer
	if !d.trusted(addr) || len(xff) == 0 {
		return addr
	}
	entries := strings.Split(strings.Join(xff, ","), ",")
	for i := len(entries) - 1; i >= 0; i-- {
		next, ok := parseForwarded(strings.TrimSpace(entries[i]))
		if !ok {
			return addr
		}
		addr = next
		if !d.trusted(addr) {
			return addr
		}
	}
	return addr
}

// parseForwarded reads one X-Forwarded-For entry: an address, possibly with a port ("[2001:db8::1]:443").
func parseForwarded(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// addrOf is the address of host:port (or of a bare address, as ServeHTTP may have set RemoteAddr to).
func addrOf(remote string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap(), true
	}
	a, err := netip.ParseAddr(remote)
	return a.Unmap(), err == nil
}

// door is what the front door knows of one request: it lives from ServeHTTP's entry to its return.
type door struct {
	d       *frontDoor
	w       http.ResponseWriter
	conn    *doorConn // nil when the gateway is served without its Listener
	client  string    // sourcePrefix of the client, while it holds an unauthenticated request slot
	authned bool
}

type doorKey struct{}

// enter starts a request at the door: its RemoteAddr becomes the real client's, its body gets a read deadline, and
// it takes one of its client's unauthenticated request slots. It returns nil, having answered, when the client
// holds all of them.
func (d *frontDoor) enter(w http.ResponseWriter, r *http.Request) (*http.Request, *door) {
	dr := &door{d: d, w: w, conn: connOf(r.Context())}
	if peer, ok := addrOf(r.RemoteAddr); ok {
		if client := d.clientAddr(peer, r.Header.Values("X-Forwarded-For")); client != peer {
			r2 := *r
			r2.RemoteAddr = client.String() // the client's port is not known
			r = &r2
		}
	}
	// Until it authenticates, a request is answered with Connection: close (removed once it does), and its body
	// is read against a deadline: net/http reads what is left of a body after the handler, with none of its own.
	w.Header().Set("Connection", "close")
	if r.ContentLength != 0 {
		http.NewResponseController(w).SetReadDeadline(time.Now().Add(d.cfg.UnauthenticatedReadTimeout))
	}
	client, _ := addrOf(r.RemoteAddr)
	key := sourcePrefix(client.String())
	d.mu.Lock()
	if d.perClient[key] >= d.cfg.MaxUnauthenticatedPerSource {
		d.mu.Unlock()
		d.m.doorRefusals.WithLabelValues("client-requests").Inc()
		d.log.Debug("request refused: its client has too many unauthenticated requests in flight", "remote", r.RemoteAddr)
		dr.refuse(http.StatusTooManyRequests, fmt.Sprintf("too many unauthenticated requests from %s at once (%d); retry later", key, d.cfg.MaxUnauthenticatedPerSource), 1)
		return nil, nil
	}
	d.perClient[key]++
	d.mu.Unlock()
	dr.client = key
	return r.WithContext(context.WithValue(r.Context(), doorKey{}, dr)), dr
}

// leave ends the request at the door.
func (dr *door) leave() { dr.releaseClient() }

func (dr *door) releaseClient() {
	if dr.client == "" {
		return
	}
	d := dr.d
	d.mu.Lock()
	if d.perClient[dr.client]--; d.perClient[dr.client] <= 0 {
		delete(d.perClient, dr.client)
	}
	d.mu.Unlock()
	dr.client = ""
}

// refuse answers a refusal and makes it cheap: the connection closes after it, and what is left of the body is
// read (and the answer written) within RefusalTimeout.
func (dr *door) refuse(code int, message string, retryAfter int) {
	closeAfterRefusal(dr.w, dr.d.cfg.RefusalTimeout)
	wire.WriteStatus(dr.w, code, message, retryAfter)
}

func closeAfterRefusal(w http.ResponseWriter, timeout time.Duration) {
	w.Header().Set("Connection", "close")
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(timeout))
	rc.SetWriteDeadline(time.Now().Add(timeout))
}

// doorOf returns the door of a request that went through ServeHTTP, or nil.
func doorOf(r *http.Request) *door {
	dr, _ := r.Context().Value(doorKey{}).(*door)
	return dr
}

// authenticated is called once a request has brought a valid token: its body may be read without a deadline, its
// connection kept alive and counted with the authenticated ones, and its client's slot is free.
func (dr *door) authenticated() {
	if dr == nil || dr.authned {
		return
	}
	dr.authned = true
	dr.w.Header().Del("Connection")
	http.NewResponseController(dr.w).SetReadDeadline(time.Time{})
	dr.releaseClient()
	if dr.conn != nil {
		dr.conn.authenticated()
	}
}

// Listener wraps ln with the gateway's front door: PROXY protocol headers from FrontDoor.TrustedProxies (with
// ProxyProtocol), and the caps on unauthenticated connections. Serve it with the http.Server of Server.
func (g *Gateway) Listener(ln net.Listener) net.Listener {
	d := g.door
	if d.cfg.ProxyProtocol {
		ln = &proxyproto.Listener{
			Listener:          ln,
			ReadHeaderTimeout: d.cfg.HeaderTimeout,
			ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
				if a, ok := addrOf(o.Upstream.String()); ok && d.trusted(a) {
					return proxyproto.REQUIRE, nil
				}
				return proxyproto.SKIP, nil // a direct client: its own address, its bytes as they come
			},
		}
	}
	return &doorListener{Listener: ln, d: d, perSource: map[string]int{}}
}

// Server returns the http.Server to serve Listener's connections with (ServeTLS, with tlsConfig): the front
// door's timeouts, the header bound, and the connection accounting.
func (g *Gateway) Server(tlsConfig *tls.Config) *http.Server {
	return &http.Server{
		Handler:           g,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: g.door.cfg.HeaderTimeout,
		IdleTimeout:       g.door.cfg.IdleTimeout,       // idle keep-alive connections only: upgraded streams are not affected
		MaxHeaderBytes:    g.cfg.MaxHeaderBytes + 4<<10, // the gateway answers 431 itself, as a Kubernetes Status
		ConnContext:       connContext,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
}

type doorConnKey struct{}

func connContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if dc, ok := c.(*doorConn); ok {
		return context.WithValue(ctx, doorConnKey{}, dc)
	}
	return ctx
}

func connOf(ctx context.Context) *doorConn {
	dc, _ := ctx.Value(doorConnKey{}).(*doorConn)
	return dc
}

// doorListener counts the unauthenticated connections it accepted, in all and per source.
type doorListener struct {
	net.Listener
	d *frontDoor

	mu        sync.Mutex
	unauth    list.List      // of *doorConn, oldest first: connections not authenticated, not closed
	perSource map[string]int // of those, per source (sourcePrefix); only non-zero counts
}

var errTooManyFromSource = errors.New("too many unauthenticated connections from this address")

// Accept takes the next connection. When the listener holds MaxUnauthenticated unauthenticated connections, it
// closes the oldest of them to make room, rather than refuse the new one: slow connections are the old ones, and a
// probe or a caller needs its connection for milliseconds, so that an attacker from many addresses must open
// MaxUnauthenticated connections within that time to keep anyone out.
func (l *doorListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	dc := &doorConn{Conn: c, l: l}
	l.mu.Lock()
	var oldest *doorConn
	if l.unauth.Len() >= l.d.cfg.MaxUnauthenticated {
		oldest = l.unauth.Front().Value.(*doorConn)
	}
	dc.elem = l.unauth.PushBack(dc)
	l.mu.Unlock()
	l.d.m.conns.WithLabelValues("unauthenticated").Inc()
	if oldest != nil {
		l.d.m.doorRefusals.WithLabelValues("listener").Inc()
		l.d.log.Debug("connection closed: the listener had its maximum of unauthenticated connections, this was the oldest", "remote", oldest.RemoteAddr().String(), "max", l.d.cfg.MaxUnauthenticated)
		oldest.Close()
	}
	return dc, nil
}

// doorConn is one accepted connection. Its source is known at its first read: with PROXY protocol, reading the
// header is what tells it, and that must not block Accept.
type doorConn struct {
	net.Conn
	l *doorListener

	admit    sync.Once
	admitErr error

	mu       sync.Mutex    // guards the rest, with l.mu taken after it
	elem     *list.Element // in l.unauth, while released is false; guarded by l.mu
	source   string        // sourcePrefix, once counted in l.perSource; "" otherwise
	authned  bool
	released bool // Close ran, or the connection authenticated: it no longer counts as unauthenticated
	closed   bool
}

func (c *doorConn) Read(p []byte) (int, error) {
	c.admit.Do(c.admitSource)
	if c.admitErr != nil {
		return 0, c.admitErr
	}
	return c.Conn.Read(p)
}

// admitSource counts the connection against its source's cap, or refuses it.
func (c *doorConn) admitSource() {
	d := c.l.d
	a, ok := addrOf(c.Conn.RemoteAddr().String()) // with PROXY protocol, reads the header (within HeaderTimeout)
	if !ok || d.trusted(a) {
		return // a proxy's connections carry many clients: ServeHTTP counts their requests per client instead
	}
	key := sourcePrefix(a.String())
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.released {
		return
	}
	c.l.mu.Lock()
	over := c.l.perSource[key] >= d.cfg.MaxUnauthenticatedPerSource
	if !over {
		c.l.perSource[key]++
		c.source = key
	}
	c.l.mu.Unlock()
	if over {
		d.m.doorRefusals.WithLabelValues("source").Inc()
		d.log.Debug("connection refused: its address has its maximum of unauthenticated connections", "remote", a.String(), "max", d.cfg.MaxUnauthenticatedPerSource)
		c.admitErr = errTooManyFromSource
		c.Conn.Close()
	}
}

// authenticated moves the connection from the unauthenticated ones to the authenticated ones.
func (c *doorConn) authenticated() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.authned || c.closed {
		return
	}
	c.authned = true
	c.releaseLocked()
	c.l.d.m.conns.WithLabelValues("authenticated").Inc()
}

// releaseLocked takes the connection out of the unauthenticated counts. Called with c.mu held.
func (c *doorConn) releaseLocked() {
	if c.released {
		return
	}
	c.released = true
	c.l.mu.Lock()
	c.l.unauth.Remove(c.elem)
	if c.source != "" {
		if c.l.perSource[c.source]--; c.l.perSource[c.source] <= 0 {
			delete(c.l.perSource, c.source)
		}
	}
	c.l.mu.Unlock()
	c.l.d.m.conns.WithLabelValues("unauthenticated").Dec()
}

func (c *doorConn) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		if c.authned {
			c.l.d.m.conns.WithLabelValues("authenticated").Dec()
		}
		c.releaseLocked()
	}
	c.mu.Unlock()
	return c.Conn.Close()
}
