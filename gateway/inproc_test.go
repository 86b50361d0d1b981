package gateway_test

// An in-process warren: a gateway and a connector over a real tunnel (WebSocket + yamux, on loopback or, in a
// synctest bubble, on an in-memory network), an API server stand-in behind the connector, and raw callers. The tests
// of streams that outlive their token, of the limits per token and tunnel, and of callers that stop reading run on it.

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/connector"
	"github.com/warren-dev/warren/gateway"
	"github.com/warren-dev/warren/gateway/limit"
	"github.com/warren-dev/warren/internal/testenv/testlog"
	"github.com/warren-dev/warren/internal/testenv/wait"
	"github.com/warren-dev/warren/tunnel"
)

// (The package's TestMain, in main_test.go, checks that no goroutine outlives the tests.)

const cluster = "prod"

// callerRules are what the in-process callers may do: watch config maps, read pods and their logs, exec.
var callerRules = []string{"get,list,watch:configmaps,pods", "get:pods/log", "create:pods/exec"}

// waitRecord returns the first record of m that matches, waiting for it: a stream's record is written when it
// has ended. (memAudit is harness_test.go's.)
func waitRecord(t *testing.T, m *memAudit, what string, match func(audit.Record) bool) audit.Record {
	t.Helper()
	var rec audit.Record
	wait.Until(t, 15*time.Second, "audit record of "+what, func() bool {
		for _, r := range m.records() {
			if match(r) {
				rec = r
				return true
			}
		}
		return false
	})
	return rec
}

// fakeAPI stands in for the API server: watches and logs that hold until the caller leaves, an exec upgrade
// that holds, a big /openapi/v2 that counts what it managed to write, and lists that wait for a release.
type fakeAPI struct {
	srv *httptest.Server

	openAPIBytes int64        // size of /openapi/v2
	openAPISent  atomic.Int64 // bytes of /openapi/v2 written so far, all requests together
	execFlood    bool         // the exec session writes data frames as fast as it can
	execSent     atomic.Int64

	holdLists chan struct{} // lists wait until it is closed, when set
	listsHeld atomic.Int64  // lists waiting now
	streams   atomic.Int64  // watches, logs and exec sessions open now
	requests  atomic.Int64  // requests seen, all kinds
}

func newFakeAPI(t testing.TB) *fakeAPI { return newFakeAPIOn(t, loopback) }

func newFakeAPIOn(t testing.TB, n *testNet) *fakeAPI {
	f := &fakeAPI{openAPIBytes: 64 << 20}
	f.srv = n.server(t, "api.test:80", http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	q := r.URL.Query()
	switch {
	case r.URL.Path == "/openapi/v2":
		w.Header().Set("Content-Type", "application/json")
		chunk := make([]byte, 64<<10)
		for sent := int64(0); sent < f.openAPIBytes; sent += int64(len(chunk)) {
			n, err := w.Write(chunk)
			f.openAPISent.Add(int64(n))
			if err != nil {
				return
			}
		}
	case strings.HasSuffix(r.URL.Path, "/exec"):
		f.exec(w, r)
	case strings.HasSuffix(r.URL.Path, "/log"):
		f.hold(w, r, "text/plain", "line 1\n")
	case q.Has("watch") || strings.Contains(r.URL.Path, "/watch/"):
		f.hold(w, r, "application/json", `{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"a"}}}`+"\n")
	default:
		if f.holdLists != nil {
			f.listsHeld.Add(1)
			defer f.listsHeld.Add(-1)
			select {
			case <-f.holdLists:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"kind":"List","apiVersion":"v1","items":[]}`)
	}
}

// hold writes first and then holds the response open until the caller (the connector) goes away.
func (f *fakeAPI) hold(w http.ResponseWriter, r *http.Request, contentType, first string) {
	f.streams.Add(1)
	defer f.streams.Add(-1)
	w.Header().Set("Content-Type", contentType)
	io.WriteString(w, first)
	http.NewResponseController(w).Flush()
	<-r.Context().Done()
}

// exec answers a WebSocket upgrade and holds the session until the other side closes it; with execFlood it writes
// binary frames meanwhile.
func (f *fakeAPI) exec(w http.ResponseWriter, r *http.Request) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	f.streams.Add(1)
	defer f.streams.Add(-1)
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n")
	brw.Write([]byte{0x82, 6, 1, 'r', 'e', 'a', 'd', 'y'}) // stdout channel: "ready"
	brw.Flush()
	if f.execFlood {
		go io.Copy(io.Discard, conn) // notice the other side leaving
		frame := append([]byte{0x82, 126, 0xff, 0xff, 1}, make([]byte, 0xffff-1)...)
		for {
			n, err := conn.Write(frame)
			f.execSent.Add(int64(n))
			if err != nil {
				return
			}
		}
	}
	io.Copy(io.Discard, conn)
}

// proxyEnv is a gateway and a connector for cluster "prod" over a real tunnel, and the stand-in behind them.
type proxyEnv struct {
	t   testing.TB
	key *auth.SigningKey
	api *fakeAPI

	keysPath        string // caller keys, PEM; both sides read it
	gwRevoked       string // the gateway's --revoked-tokens
	connRevoked     string // the connector's (the same file unless opts.separateRevocations)
	gw              *gateway.Gateway
	gwSrv           *httptest.Server
	net             *testNet // where gwSrv and api listen
	gwAudit         *memAudit
	connAudit       *memAudit
	gwLog, connLogs *testlog.Buffer
	stopConnector   func()
	// refreshConnRevoked makes the connector look at its revocation list now (it reloads every hour otherwise).
	refreshConnRevoked func() error
}

type proxyEnvOpts struct {
	gwInterval, connInterval time.Duration // stream re-check intervals; default 100 ms
	disconnectExpired        bool
	leeway                   time.Duration // of both verifiers; default none (-1) at the gateway, 1 s at the connector
	limits                   *limit.Limiter
	tunnel                   tunnel.Config
	idleWrite                time.Duration
	separateRevocations      bool          // the connector has a revocation list of its own
	api                      *fakeAPI      // made on net
	net                      *testNet      // default loopback
	maxStreamDuration        time.Duration // the gateway's; 0: its default
	maxHeaderBytes           int           // the gateway's; 0: its default
	clusters                 []string      // known to the gateway from the start, besides prod's connector
	ceiling                  *auth.Policy  // the connector's
	connAuditSink            audit.Sink    // the connector's audit instead of connAudit
}

func newProxyEnv(t testing.TB, o proxyEnvOpts) *proxyEnv {
	t.Helper()
	dir := t.TempDir()
	if _, err := auth.GenerateKeyPair(dir); err != nil {
		t.Fatal(err)
	}
	key, err := auth.LoadSigningKey(filepath.Join(dir, auth.SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	e := &proxyEnv{t: t, key: key, keysPath: filepath.Join(dir, "callers.pub"), gwRevoked: filepath.Join(dir, "revoked"),
		gwAudit: &memAudit{}, connAudit: &memAudit{}}
	e.connRevoked = e.gwRevoked
	if o.separateRevocations {
		e.connRevoked = filepath.Join(dir, "connector-revoked")
	}
	for _, p := range []string{e.gwRevoked, e.connRevoked} {
		writeFile(t, p, nil) // a revocation list must exist (empty: nothing revoked)
	}
	copyFileBumped(t, filepath.Join(dir, auth.PublicKeyFile), e.keysPath)
	if o.gwInterval == 0 {
		o.gwInterval = 100 * time.Millisecond
	}
	if o.connInterval == 0 {
		o.connInterval = 100 * time.Millisecond
	}
	if o.leeway == 0 {
		o.leeway = -1
	}
	// The connector judges assertions by its estimate of the gateway's clock, taken from a Date header (a second's
	// resolution): without a leeway of that error a fresh assertion may look "not valid before" to it.
	connLeeway := o.leeway
	if connLeeway < 0 {
		connLeeway = time.Second
	}
	if o.net == nil {
		o.net = loopback
	}
	e.net = o.net
	e.api = o.api
	if e.api == nil {
		e.api = newFakeAPIOn(t, o.net)
	}

	connectorKeys, err := auth.LoadPublicKeys(filepath.Join(dir, auth.PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	connVerifier, err := auth.NewVerifier(auth.VerifierConfig{Keys: connectorKeys, Audience: auth.AudienceConnector})
	if err != nil {
		t.Fatal(err)
	}
	// The gateway's own key, which signs its assertions of each request; the connector pins it.
	gwDir := filepath.Join(dir, "gateway-key")
	if _, err := auth.GenerateKeyPair(gwDir); err != nil {
		t.Fatal(err)
	}
	gwKey, err := auth.LoadSigningKey(filepath.Join(gwDir, auth.SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	gwPub, err := auth.LoadPublicKeys(filepath.Join(gwDir, auth.PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	gwLog, lb := testlog.New(t, "gateway")
	e.gwLog = lb
	e.gw, err = gateway.New(gateway.Config{
		CallerVerifier:          callerVerifier(t, e.keysPath, e.gwRevoked, o.leeway),
		ConnectorVerifier:       connVerifier,
		SigningKey:              gwKey,
		Audit:                   e.gwAudit,
		Limits:                  o.limits,
		Tunnel:                  o.tunnel,
		DisconnectExpiredTokens: o.disconnectExpired,
		StreamCheckInterval:     o.gwInterval,
		IdleWriteTimeout:        o.idleWrite,
		MaxStreamDuration:       o.maxStreamDuration,
		MaxHeaderBytes:          o.maxHeaderBytes,
		Clusters:                o.clusters,
		Logger:                  gwLog,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.gwSrv = o.net.server(t, "gateway.test:80", e.gw)

	connToken, err := key.IssueConnector(cluster, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	connLog, clb := testlog.New(t, "connector")
	e.connLogs = clb
	// The connector's own revocation list: it re-checks open streams on the caller's token id and expiry as the
	// gateway's assertion gave them.
	connList, err := auth.NewRevocationList(e.connRevoked, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.refreshConnRevoked = connList.Refresh
	var connSink audit.Sink = e.connAudit
	if o.connAuditSink != nil {
		connSink = o.connAuditSink
	}
	c, err := connector.New(connector.Config{
		GatewayURL:              e.gwSrv.URL,
		DialContext:             o.net.dialer("connector"),
		Token:                   func() (string, error) { return connToken, nil },
		Kube:                    &rest.Config{Host: e.api.srv.URL, Dial: o.net.dialer("connector-kube")},
		GatewayKeys:             gwPub,
		Revoked:                 connList.Revoked,
		RefreshRevoked:          connList.Refresh,
		Leeway:                  connLeeway,
		Audit:                   connSink,
		Ceiling:                 o.ceiling,
		DisconnectExpiredTokens: o.disconnectExpired,
		StreamCheckInterval:     o.connInterval,
		Tunnel:                  o.tunnel,
		Name:                    "c1",
		Logger:                  connLog,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	var once sync.Once
	e.stopConnector = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(func() {
		e.stopConnector()
		e.gwSrv.CloseClientConnections()
		e.gwSrv.Close()
		e.gw.Close()
	})
	wait.Until(t, 10*time.Second, "the connector's tunnel", func() bool { return e.gw.Connectors(cluster) == 1 })
	return e
}

// callerVerifier verifies caller tokens with the key file and revocation list, both reloading, as the binary does.
func callerVerifier(t testing.TB, keysPath, revokedPath string, leeway time.Duration) *auth.Verifier {
	t.Helper()
	kf, err := auth.NewKeyFiles(time.Hour, keysPath) // only Refresh (the stream checks) and new requests look
	if err != nil {
		t.Fatal(err)
	}
	rl, err := auth.NewRevocationList(revokedPath, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.VerifierConfig{Keys: kf, Audience: auth.AudienceCaller, Revoked: rl.Revoked,
		Sources: []auth.Refresher{kf, rl}, Leeway: leeway, MaxLifetime: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// copyFileBumped copies a file as writeFile writes one.
func copyFileBumped(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, b)
}

// writeFile replaces a file and moves its modification time on, so that a reload notices even within the
// filesystem's time granularity.
func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	fi, _ := os.Stat(path)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if fi != nil {
		mt := fi.ModTime().Add(time.Second)
		os.Chtimes(path, mt, mt)
	}
}

// token issues a caller token for cluster prod with callerRules, valid for ttl, and returns it with its id.
func (e *proxyEnv) token(ttl time.Duration) (token, id string) {
	e.t.Helper()
	var rules []auth.Rule
	for _, s := range callerRules {
		r, err := auth.ParseRule(s)
		if err != nil {
			e.t.Fatal(err)
		}
		rules = append(rules, r)
	}
	tok, err := e.key.IssueCaller(auth.IssueOptions{Subject: "alice", Clusters: []string{cluster}, Rules: rules, TTL: ttl})
	if err != nil {
		e.t.Fatal(err)
	}
	none := filepath.Join(e.t.TempDir(), "none")
	writeFile(e.t, none, nil)
	c, err := callerVerifier(e.t, e.keysPath, none, -1).Verify(tok)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok, c.ID
}

// revoke adds token ids to a revocation list file.
func (e *proxyEnv) revoke(path string, ids ...string) time.Time {
	e.t.Helper()
	old, _ := os.ReadFile(path)
	writeFile(e.t, path, append(old, []byte(strings.Join(ids, "\n")+"\n")...))
	return time.Now()
}

// get sends a GET through the gateway.
func (e *proxyEnv) get(token, path string) (*http.Response, error) {
	return e.net.client.Do(e.request(token, path))
}

// request is a GET of path on the cluster through the gateway, with token.
func (e *proxyEnv) request(token, path string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, e.gwSrv.URL+"/clusters/"+cluster+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return req
}

// openStream starts a long request and reads its first line.
func (e *proxyEnv) openStream(token, path string) (*http.Response, *bufio.Reader) {
	e.t.Helper()
	resp, err := e.get(token, path)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		e.t.Fatalf("GET %s: first line: %v", path, err)
	}
	return resp, br
}

// wsSession is a raw WebSocket exec session through the gateway.
type wsSession struct {
	conn net.Conn
	br   *bufio.Reader
	// giveUp bounds closing's wait on loopback; in a bubble there is none: a session that never closes is a
	// deadlock, which the bubble reports, and a deadline would fire on its clock.
	giveUp time.Duration
}

func (e *proxyEnv) openExec(token string) *wsSession {
	e.t.Helper()
	conn := e.net.dial(e.t, e.gwSrv.Listener.Addr().String())
	e.t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET /clusters/%s/api/v1/namespaces/ns/pods/p/exec?command=sh&stdout=true HTTP/1.1\r\nHost: gw\r\n"+
		"Authorization: Bearer %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n", cluster, token)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("exec: %d %s", resp.StatusCode, b)
	}
	s := &wsSession{conn: conn, br: br}
	if e.net.mem == nil {
		s.giveUp = 20 * time.Second
	}
	if op, payload, err := s.frame(); err != nil || op != 2 || string(payload) != "\x01ready" {
		e.t.Fatalf("exec: first frame %d %q %v", op, payload, err)
	}
	return s
}

// frame reads one frame from the server (unmasked, as servers send).
func (s *wsSession) frame() (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(s.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(s.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(s.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(s.br, payload)
	return h[0] & 0x0f, payload, err
}

// closing reads frames until the server's closing frame and returns its code and reason; on loopback it gives up
// after 20 s.
func (s *wsSession) closing() (code int, reason string, err error) {
	if s.giveUp > 0 {
		s.conn.SetReadDeadline(time.Now().Add(s.giveUp))
	}
	for {
		op, payload, err := s.frame()
		if err != nil {
			return 0, "", err
		}
		if op == 8 && len(payload) >= 2 {
			return int(binary.BigEndian.Uint16(payload)), string(payload[2:]), nil
		}
	}
}
