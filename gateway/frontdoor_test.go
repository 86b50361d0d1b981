package gateway

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/testenv/wait"
	"github.com/warren-dev/warren/internal/wire"
	"github.com/warren-dev/warren/tunnel"
)

// doorServer serves g behind its front door (Listener, Server) on a loopback port, over TLS or plain HTTP.
func doorServer(t *testing.T, g *Gateway, useTLS bool) (*httptest.Server, *doorListener) {
	t.Helper()
	s := httptest.NewUnstartedServer(nil)
	s.Config = g.Server(nil)
	dl := g.Listener(s.Listener)
	s.Listener = dl
	if useTLS {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(func() {
		g.Close() // the tunnels first: the test server does not close hijacked connections
		s.Close()
	})
	for l := dl; ; {
		if d, ok := l.(*doorListener); ok {
			return s, d
		}
		l = l.(*proxyproto.Listener).Listener
	}
}

func (l *doorListener) counts() (unauth int, perSource map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unauth.Len(), maps.Clone(l.perSource)
}

// dialFrom opens a TCP connection to addr from the loopback address src (127.0.0.0/8 is all loopback on Linux).
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin reports whether the server closes c (EOF or reset) within d, having sent nothing more.
func closedWithin(c net.Conn, d time.Duration) (bool, string) {
	c.SetReadDeadline(time.Now().Add(d))
	b := make([]byte, 1024)
	n, err := c.Read(b)
	if n > 0 {
		return false, fmt.Sprintf("read %q", b[:n])
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false, "still open"
	}
	return true, fmt.Sprint(err)
}

// TestRefusalClosesASlowBody: a request that declares a body and sends none (a slowloris without a token) gets its
// refusal and loses its connection within RefusalTimeout; before, net/http waited for the body, with no deadline,
// before even answering.
func TestRefusalClosesASlowBody(t *testing.T) {
	k := newTestKeys(t)
	g := newTestGateway(t, k, func(c *Config) {
		c.FrontDoor = FrontDoorConfig{RefusalTimeout: 300 * time.Millisecond, UnauthenticatedReadTimeout: 600 * time.Millisecond}
	})
	s, _ := doorServer(t, g, false)
	reader := k.callerToken(t, "alice", "prod", "get:pods")
	for _, c := range []struct {
		name, request string
		code          int
		message       string
		within        time.Duration
	}{
		{"no token", "POST /clusters/prod/api/v1/namespaces/x/configmaps HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\n",
			401, `missing bearer token: send the caller token as "Authorization: Bearer <token>"`, 300 * time.Millisecond},
		{"outside the token's scope", "POST /clusters/prod/api/v1/namespaces/x/configmaps HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + reader + "\r\nContent-Length: 100\r\n\r\n",
			403, `token of "alice" cannot create resource "configmaps" in API group "" in the namespace "x" (it needs --rule create:configmaps:x)`, 300 * time.Millisecond},
		{"chunked, no token", "POST /clusters/prod/api/v1/namespaces/x/configmaps HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n",
			401, `missing bearer token: send the caller token as "Authorization: Bearer <token>"`, 300 * time.Millisecond},
		{"a probe with a body that never comes", "GET /healthz HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\n", 200, "ok\n", 600 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := dialFrom(t, "127.0.0.1", s.Listener.Addr().String())
			io.WriteString(conn, c.request)
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			msg := string(body)
			var st struct{ Message string }
			if json.Unmarshal(body, &st) == nil && st.Message != "" {
				msg = st.Message
			}
			if resp.StatusCode != c.code || !resp.Close || msg != c.message {
				t.Fatalf("%d close=%v %s\nwant %d, Connection: close, %q", resp.StatusCode, resp.Close, body, c.code, c.message)
			}
			start := time.Now()
			if _, err := br.ReadByte(); err == nil {
				t.Fatal("the connection carried more after the answer")
			}
			if d := time.Since(start); d > c.within+2*time.Second {
				t.Errorf("the connection closed %v after the answer, want within %v", d, c.within)
			}
		})
	}
}

// TestUnauthenticatedCaps: slow unauthenticated connections from one address are capped, and those over the cap
// closed at once; probes and callers from elsewhere still get in; a full listener closes its oldest unauthenticated
// connection to make room.
func TestUnauthenticatedCaps(t *testing.T) {
	k := newTestKeys(t)
	g := newTestGateway(t, k, func(c *Config) {
		c.FrontDoor = FrontDoorConfig{MaxUnauthenticated: 10, MaxUnauthenticatedPerSource: 4, HeaderTimeout: 30 * time.Second}
	})
	s, dl := doorServer(t, g, false)
	addr := s.Listener.Addr().String()
	var slow []net.Conn
	for range 4 {
		c := dialFrom(t, "127.0.0.1", addr)
		io.WriteString(c, "GET /clusters/prod/api HTTP/1.1\r\n") // and never the end of the headers
		slow = append(slow, c)
	}
	wait.Until(t, 10*time.Second, "4 connections counted for 127.0.0.1", func() bool { _, ps := dl.counts(); return ps["127.0.0.1"] == 4 })
	over := dialFrom(t, "127.0.0.1", addr)
	io.WriteString(over, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
	if closed, what := closedWithin(over, 5*time.Second); !closed {
		t.Errorf("a fifth slow connection from 127.0.0.1: %s, want it closed at once", what)
	}
	for i, c := range slow {
		if closed, what := closedWithin(c, 100*time.Millisecond); closed {
			t.Errorf("slow connection %d: %s, want it still held (HeaderTimeout is 30 s)", i, what)
		}
	}
	// From elsewhere: a probe, and a caller with a token.
	client := func(src string) *http.Client {
		return &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}}
	}
	cl := client("127.0.0.2")
	defer cl.CloseIdleConnections()
	if resp, err := cl.Get(s.URL + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/healthz from 127.0.0.2: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	req, _ := http.NewRequest("GET", s.URL+"/clusters/prod/api/v1/namespaces/payments/pods", nil)
	req.Header.Set("Authorization", "Bearer "+k.callerToken(t, "alice", "prod", "list:pods"))
	if resp, err := cl.Do(req); err != nil || resp.StatusCode != http.StatusServiceUnavailable { // no connector: 503
		t.Fatalf("a caller from 127.0.0.2: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// Fill the listener from more addresses: 4 + 4 + 2 = 10.
	for i := range 6 {
		c := dialFrom(t, fmt.Sprintf("127.0.0.%d", 3+i/4), addr)
		io.WriteString(c, "GET /")
	}
	wait.Until(t, 10*time.Second, "10 unauthenticated connections", func() bool { n, _ := dl.counts(); return n == 10 })
	// The listener is full: a new connection makes the oldest (127.0.0.1's first) go, and is served.
	if resp, err := client("127.0.0.9").Get(s.URL + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/healthz to a full listener: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if closed, what := closedWithin(slow[0], 5*time.Second); !closed {
		t.Errorf("the oldest slow connection: %s, want it closed to make room", what)
	}
	if closed, what := closedWithin(slow[1], 100*time.Millisecond); closed {
		t.Errorf("the second oldest: %s, want it still held", what)
	}
	for _, c := range slow {
		c.Close()
	}
	wait.Until(t, 10*time.Second, "the closed connections to be forgotten", func() bool { n, ps := dl.counts(); return n == 6 && ps["127.0.0.1"] == 0 })
}

// TestSlowConnectionsTimeOut: a connection that never completes its headers (or its TLS handshake) is closed
// after HeaderTimeout, and its slot comes free.
func TestSlowConnectionsTimeOut(t *testing.T) {
	k := newTestKeys(t)
	g := newTestGateway(t, k, func(c *Config) { c.FrontDoor = FrontDoorConfig{HeaderTimeout: 500 * time.Millisecond} })
	for _, useTLS := range []bool{false, true} {
		s, dl := doorServer(t, g, useTLS)
		c := dialFrom(t, "127.0.0.1", s.Listener.Addr().String())
		if useTLS {
			io.WriteString(c, "\x16") // the first byte of a TLS handshake
		} else {
			io.WriteString(c, "GET /clusters/prod/api HTTP/1.1\r\n") // and never the end of the headers
		}
		start := time.Now()
		if closed, what := closedWithin(c, 5*time.Second); !closed {
			t.Errorf("TLS %v: %s, want the slow connection closed", useTLS, what)
		} else if d := time.Since(start); d > 3*time.Second {
			t.Errorf("TLS %v: closed after %v, want about 500ms", useTLS, d)
		}
		wait.Until(t, 10*time.Second, "the slot to come free", func() bool { n, _ := dl.counts(); return n == 0 })
	}
}

// joinAndDial joins as a new connector identity for cluster (a join token and a proof of possession) and opens one
// tunnel with the credential, through hc.
func joinAndDial(hc *http.Client, base string, k testKeys, t *testing.T, cluster string) (*tunnel.Session, error) {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	join := k.connectorToken(t, cluster)
	proof, err := auth.NewProof(key, "POST", base+wire.PathJoin, join, time.Now())
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequest("POST", base+wire.PathJoin, nil)
	req.Header.Set("Authorization", "Bearer "+join)
	req.Header.Set(wire.HeaderProof, proof)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var jr wire.JoinResponse
	if err := json.NewDecoder(resp.Body).Decode(&jr); err != nil || resp.StatusCode != 200 {
		return nil, fmt.Errorf("join: %d %v", resp.StatusCode, err)
	}
	if proof, err = auth.NewProof(key, "GET", base+wire.PathConnect, jr.Credential, time.Now()); err != nil {
		return nil, err
	}
	return tunnel.Dial(context.Background(), "wss"+strings.TrimPrefix(base, "https")+wire.PathConnect, tunnel.DialOptions{HTTPClient: hc,
		Header: http.Header{"Authorization": {"DPoP " + jr.Credential}, wire.HeaderProof: {proof}, wire.HeaderConnectorName: {"c"}}})
}

// TestTunnelsAreNotCapped: connector tunnels, once authenticated, do not count against the caps on unauthenticated
// connections: many from one address (a NAT) connect, and that address still has all its unauthenticated slots.
func TestTunnelsAreNotCapped(t *testing.T) {
	k := newTestKeys(t)
	g := newTestGateway(t, k, func(c *Config) {
		c.FrontDoor = FrontDoorConfig{MaxUnauthenticated: 8, MaxUnauthenticatedPerSource: 4, HeaderTimeout: 30 * time.Second}
		c.Connectors = ConnectorConfig{MaxIdentities: 64, MaxTunnelsPerIdentity: 1}
	})
	s, dl := doorServer(t, g, true)
	tr := s.Client().Transport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}).DialContext
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	hc := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	const tunnels = 40
	var sessions []*tunnel.Session
	for batch := 0; batch < tunnels; batch += 2 { // storms of 2 at once: each joins, then dials; no more in flight than the cap
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				ts, err := joinAndDial(hc, s.URL, k, t, "prod")
				if err != nil {
					t.Errorf("tunnel: %v", err)
					return
				}
				mu.Lock()
				sessions = append(sessions, ts)
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	defer func() {
		for _, ts := range sessions {
			ts.Close()
		}
	}()
	wait.Until(t, 10*time.Second, "40 connectors", func() bool { return g.Connectors("prod") == tunnels })
	tr.CloseIdleConnections() // the joins' keep-alive connections (authenticated, so not counted either)
	if n, ps := dl.counts(); n != 0 || len(ps) != 0 {
		t.Fatalf("with %d tunnels up: %d unauthenticated connections counted (%v), want none", tunnels, n, ps)
	}
	for i := range 4 { // 127.0.0.1 still has all its slots
		c := dialFrom(t, "127.0.0.1", s.Listener.Addr().String())
		io.WriteString(c, "\x16")
		wait.Until(t, 10*time.Second, fmt.Sprint(i+1, " slow connections"), func() bool { _, ps := dl.counts(); return ps["127.0.0.1"] == i+1 })
	}
}

// TestTrustedProxies: X-Forwarded-For names the client only on connections from a trusted proxy; the client's
// address is what the audit log records and what its unauthenticated requests are counted against.
func TestTrustedProxies(t *testing.T) {
	k := newTestKeys(t)
	d := &disk{}
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	g := newTestGateway(t, k, func(c *Config) {
		c.Audit = audit.New(d)
		c.FrontDoor = FrontDoorConfig{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, MaxUnauthenticatedPerSource: 2}
		c.Downloads = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { // a slow unauthenticated request
			entered <- struct{}{}
			<-release
			io.WriteString(w, "binary")
		})
	})
	s, _ := doorServer(t, g, false)
	client := func(src string) *http.Client {
		return &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}}
	}
	get := func(src, path string, xff ...string) (int, string) {
		req, _ := http.NewRequest("GET", s.URL+path, nil)
		for _, x := range xff {
			req.Header.Add("X-Forwarded-For", x)
		}
		resp, err := client(src).Do(req)
		if err != nil {
			t.Fatalf("GET %s from %s: %v", path, src, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, c := range []struct {
		from string
		xff  []string
		want string
	}{
		{"127.0.0.1", []string{"198.51.100.7"}, "198.51.100.7"},
		{"127.0.0.2", []string{"198.51.100.8"}, "127.0.0.2"}, // forged: not a trusted proxy
		{"127.0.0.1", []string{"203.0.113.1, 127.0.0.1"}, "203.0.113.1"},
		{"127.0.0.1", []string{"198.51.100.9, nonsense"}, "127.0.0.1"},
		{"127.0.0.1", []string{"203.0.113.5", "198.51.100.10:5000"}, "198.51.100.10"},
		{"127.0.0.1", []string{"[2001:db8::7]:443"}, "2001:db8::7"},
		{"127.0.0.1", nil, "127.0.0.1"},
	} {
		before := len(d.records(t))
		get(c.from, "/clusters/prod/api", c.xff...)
		recs := d.records(t)
		if len(recs) != before+1 || recs[before]["sourceIP"] != c.want {
			t.Errorf("from %s with X-Forwarded-For %q: recorded %v, want sourceIP %s", c.from, c.xff, recs[before:], c.want)
		}
	}
	// Two slow unauthenticated requests from one client behind the proxy take its slots.
	results := make(chan int, 4)
	for range 2 {
		go func() { code, _ := get("127.0.0.1", "/download/warren", "198.51.100.20"); results <- code }()
		<-entered
	}
	if code, msg := get("127.0.0.1", "/download/warren", "198.51.100.20"); code != 429 || !strings.Contains(msg, "too many unauthenticated requests from 198.51.100.20 at once (2); retry later") {
		t.Errorf("a third from the same client: %d %s", code, msg)
	}
	go func() { code, _ := get("127.0.0.1", "/download/warren", "198.51.100.21"); results <- code }() // another client
	<-entered
	go func() { code, _ := get("127.0.0.2", "/download/warren", "198.51.100.20"); results <- code }() // forged: counted as 127.0.0.2
	<-entered
	close(release)
	for range 4 {
		if code := <-results; code != 200 {
			t.Errorf("a download: %d", code)
		}
	}
}

// TestProxyProtocol: with ProxyProtocol, a trusted proxy's PROXY header (v1 or v2) names the client, whose
// connections are then capped as its own; a trusted proxy's connection without one is refused, and a header from
// anyone else is not honoured.
func TestProxyProtocol(t *testing.T) {
	k := newTestKeys(t)
	d := &disk{}
	g := newTestGateway(t, k, func(c *Config) {
		c.Audit = audit.New(d)
		c.FrontDoor = FrontDoorConfig{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, ProxyProtocol: true,
			MaxUnauthenticatedPerSource: 2, HeaderTimeout: 30 * time.Second}
	})
	s, dl := doorServer(t, g, false)
	addr := s.Listener.Addr().String()
	header := func(v byte, src string) []byte {
		h := proxyproto.HeaderProxyFromAddrs(v, &net.TCPAddr{IP: net.ParseIP(src), Port: 40000}, &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 443})
		b, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	request := func(src string, prefix []byte) (*http.Response, error) {
		c := dialFrom(t, src, addr)
		c.Write(append(prefix, "GET /clusters/prod/api HTTP/1.1\r\nHost: gw\r\n\r\n"...))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		return http.ReadResponse(bufio.NewReader(c), nil)
	}
	for _, v := range []byte{1, 2} {
		src := fmt.Sprintf("198.51.100.%d", v)
		before := len(d.records(t))
		resp, err := request("127.0.0.1", header(v, src))
		if err != nil || resp.StatusCode != 401 {
			t.Fatalf("v%d: %v %v", v, resp, err)
		}
		if recs := d.records(t); len(recs) != before+1 || recs[before]["sourceIP"] != src {
			t.Errorf("v%d: recorded %v, want sourceIP %s", v, recs[before:], src)
		}
	}
	if resp, err := request("127.0.0.1", nil); err == nil {
		t.Errorf("a trusted proxy's connection without a PROXY header was served: %d", resp.StatusCode)
	}
	before := len(d.records(t))
	if resp, err := request("127.0.0.2", header(1, "198.51.100.66")); err != nil || resp.StatusCode != 400 {
		t.Errorf("a PROXY header from an untrusted peer: %v %v, want 400 (not a request)", resp, err)
	}
	if recs := d.records(t); len(recs) != before {
		t.Errorf("a PROXY header from an untrusted peer was recorded: %v", recs[before:])
	}
	// The client named by the header is capped as its own.
	for range 2 {
		c := dialFrom(t, "127.0.0.1", addr)
		c.Write(append(header(1, "198.51.100.30"), "GET /"...))
	}
	wait.Until(t, 10*time.Second, "2 connections counted for 198.51.100.30", func() bool { _, ps := dl.counts(); return ps["198.51.100.30"] == 2 })
	over := dialFrom(t, "127.0.0.1", addr)
	over.Write(append(header(1, "198.51.100.30"), "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"...))
	if closed, what := closedWithin(over, 5*time.Second); !closed {
		t.Errorf("a third connection of 198.51.100.30: %s, want it closed", what)
	}
	if resp, err := request("127.0.0.1", header(1, "198.51.100.31")); err != nil || resp.StatusCode != 401 {
		t.Errorf("another client through the same proxy: %v %v", resp, err)
	}
}

func TestClientAddr(t *testing.T) {
	d := newFrontDoor(FrontDoorConfig{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}}, nil, nil)
	for _, c := range []struct {
		peer string
		xff  []string
		want string
	}{
		{"203.0.113.1", []string{"198.51.100.1"}, "203.0.113.1"},                  // an untrusted peer's word is not taken
		{"10.0.0.1", []string{"198.51.100.1"}, "198.51.100.1"},                    //
		{"10.0.0.1", []string{"198.51.100.1, 10.0.0.2"}, "198.51.100.1"},          // through two proxies
		{"10.0.0.1", []string{"192.0.2.66, 198.51.100.1"}, "198.51.100.1"},        // what the client itself sent is left of it
		{"10.0.0.1", []string{"198.51.100.1", "10.0.0.3"}, "198.51.100.1"},        // several header lines
		{"10.0.0.1", []string{"10.0.0.2, 10.0.0.3"}, "10.0.0.2"},                  // proxies all the way
		{"10.0.0.1", []string{"198.51.100.1,  garbage"}, "10.0.0.1"},              // garbage: the proxy is the client
		{"10.0.0.1", []string{""}, "10.0.0.1"},                                    //
		{"10.0.0.1", []string{"[2001:db8::1]:443"}, "2001:db8::1"},                //
		{"fd00::1", []string{"::ffff:198.51.100.1"}, "198.51.100.1"},              // IPv4-mapped IPv6
		{"10.0.0.1", []string{"unknown, 198.51.100.1, 10.0.0.9"}, "198.51.100.1"}, //
	} {
		if got := d.clientAddr(netip.MustParseAddr(c.peer), c.xff); got.String() != c.want {
			t.Errorf("peer %s, X-Forwarded-For %q: %s, want %s", c.peer, c.xff, got, c.want)
		}
	}
}

// FuzzClientAddr: the client is the peer or an address the peer's trusted chain named, never anything else.
func FuzzClientAddr(f *testing.F) {
	f.Add("10.0.0.1", "198.51.100.1, 10.0.0.2")
	f.Add("203.0.113.9", "10.0.0.1")
	f.Add("10.0.0.1", "[::1]:80,,, ::ffff:10.1.1.1")
	d := newFrontDoor(FrontDoorConfig{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, nil, nil)
	f.Fuzz(func(t *testing.T, peer, xff string) {
		p, err := netip.ParseAddr(peer)
		if err != nil {
			return
		}
		p = p.Unmap()
		got := d.clientAddr(p, []string{xff})
		if !d.trusted(p) && got != p {
			t.Fatalf("an untrusted peer %s became %s", p, got)
		}
		if got == p {
			return
		}
		for _, e := range strings.Split(xff, ",") {
			if a, ok := parseForwarded(strings.TrimSpace(e)); ok && a == got {
				return
			}
		}
		t.Fatalf("client %s is neither the peer %s nor in %q", got, p, xff)
	})
}
