package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/connector"
	"github.com/warren-dev/warren/internal/testenv/kubetest"
	"github.com/warren-dev/warren/internal/wire"
	"github.com/warren-dev/warren/tunnel"
)

// rogueConnector is what a thief of a customer's connector token runs: a tunnel to the gateway with the genuine
// token, serving whatever requests come with a forged answer, and keeping every byte it is sent.
type rogueConnector struct {
	session *tunnel.Session
	srv     *http.Server
	served  chan struct{}

	mu   sync.Mutex
	raw  bytes.Buffer    // every byte read from every stream: request lines, headers, bodies
	reqs []*http.Request // the requests, as parsed
}

func startRogue(t *testing.T, gs *gatewayServer, cluster string) *rogueConnector {
	t.Helper()
	pemBytes, err := os.ReadFile(gs.caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	// It joins as any holder of the join token can, with a key of its own, and opens its tunnel with the credential.
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	token := connectorToken(t, cluster)
	proof, err := auth.NewProof(key, http.MethodPost, gs.url()+wire.PathJoin, token, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, gs.url()+wire.PathJoin, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set(wire.HeaderProof, proof)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var jr wire.JoinResponse
	err = json.NewDecoder(resp.Body).Decode(&jr)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("the rogue's join: %d %v", resp.StatusCode, err)
	}
	if proof, err = auth.NewProof(key, http.MethodGet, gs.url()+wire.PathConnect, jr.Credential, time.Now()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := tunnel.Dial(ctx, "wss://"+gs.addr+wire.PathConnect, tunnel.DialOptions{
		Header:     http.Header{"Authorization": {"DPoP " + jr.Credential}, wire.HeaderProof: {proof}, wire.HeaderConnectorName: {"rogue"}},
		HTTPClient: &http.Client{Transport: tr}, // no Timeout: it would keep the upgraded connection from being handed over
	})
	if err != nil {
		t.Fatalf("the rogue's tunnel: %v", err)
	}
	r := &rogueConnector{session: s, served: make(chan struct{})}
	r.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.Copy(io.Discard, req.Body)
		r.mu.Lock()
		r.reqs = append(r.reqs, req.Clone(context.Background()))
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[{"metadata":{"name":"forged"}}]}`)
	})}
	go func() {
		defer close(r.served)
		r.srv.Serve(&recordingListener{Listener: s.DrainListener(), r: r})
	}()
	t.Cleanup(func() {
		s.Close()
		r.srv.Close()
		<-r.served
	})
	return r
}

func (r *rogueConnector) received() (raw []byte, reqs []*http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.raw.Bytes()...), append([]*http.Request(nil), r.reqs...)
}

type recordingListener struct {
	net.Listener
	r *rogueConnector
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordingConn{Conn: c, r: l.r}, nil
}

type recordingConn struct {
	net.Conn
	r *rogueConnector
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.r.mu.Lock()
	c.r.raw.Write(p[:n])
	c.r.mu.Unlock()
	return n, err
}

// standIn holds the gateway's end of a tunnel that a real connector dialled: it can send the connector any
// request, as only a gateway could. It names the session sessionID.
type standIn struct {
	srv      *httptest.Server
	session  chan *tunnel.Session
	key      ed25519.PrivateKey // the honest connector's
	identity string
}

func startStandIn(t *testing.T, sessionID string) *standIn {
	si := &standIn{session: make(chan *tunnel.Session, 1)}
	var err error
	if _, si.key, err = ed25519.GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	if si.identity, err = auth.KeyID(si.key.Public()); err != nil {
		t.Fatal(err)
	}
	si.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == wire.PathJoin { // admitted without a look: the stand-in checks nothing
			json.NewEncoder(w).Encode(wire.JoinResponse{Credential: "stand-in", CredentialID: "c1", Identity: si.identity,
				Cluster: "prod", ExpiresIn: 3600, RenewIn: 2400})
			return
		}
		w.Header().Set(wire.HeaderTunnelID, sessionID)
		s, err := tunnel.Upgrade(w, r, tunnel.Config{})
		if err != nil {
			return
		}
		si.session <- s
	}))
	t.Cleanup(si.srv.Close)
	return si
}

// connect starts an honest connector of cluster, pinning the gateway's key, against the stand-in, and returns a
// client that sends requests over its tunnel.
func (si *standIn) connect(t *testing.T, cluster string) *http.Client {
	c, err := connector.New(connector.Config{
		GatewayURL:  si.srv.URL,
		Token:       func() (string, error) { return connectorToken(t, cluster), nil },
		TLSConfig:   &tls.Config{RootCAs: si.roots()},
		Kube:        kube.RestConfig(kubetest.UserConnector),
		Cluster:     cluster,
		Key:         si.key,
		GatewayKeys: mustKeys(t, gatewayPubFile()),
		Name:        "honest",
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
	var s *tunnel.Session
	select {
	case s = <-si.session:
	case <-time.After(10 * time.Second):
		t.Fatal("the honest connector did not dial the stand-in")
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return s.Open(ctx) }}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		s.Close()
		cancel()
		<-done
		c.CloseIdleConnections()
	})
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func (si *standIn) roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(si.srv.Certificate())
	return p
}

func mustKeys(t *testing.T, files ...string) *auth.StaticKeys {
	t.Helper()
	ks, err := auth.LoadPublicKeys(files...)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// TestRogueConnectorLearnsNothingReusable is the harvest of issue 10 (point 3) replayed: a connector token of
// cluster prod in the wrong hands opens a tunnel and is sent requests of prod's callers. It must get nothing it
// can use anywhere else: no caller token in any byte it receives, and an assertion that the gateway refuses as a
// bearer token for any cluster and that an honest connector of prod refuses.
func TestRogueConnectorLearnsNothingReusable(t *testing.T) {
	gs := startGateway(t, "127.0.0.1:0")
	startConnector(t, gs, "staging", connectorOpts{name: "b"})
	gs.waitConnectors("staging", 1, 10*time.Second)
	// The rogue is prod's only tunnel here, so that it serves every request: how requests spread over a cluster's
	// tunnels is not what this test is about.
	rogue := startRogue(t, gs, "prod")
	gs.waitConnectors("prod", 1, 10*time.Second)
	c := rawClient(t, gs)

	// The caller: a platform with a token for prod, reading and writing.
	token := callerToken(t, []string{"prod"}, "*:*:*")
	for range 2 {
		if got := send(t, c, gs, "GET", "/clusters/prod/api/v1/namespaces/default/pods", token, nil); got.code != 200 {
			t.Fatalf("through the rogue: %+v", got)
		}
		req, _ := http.NewRequest("POST", gs.url()+"/clusters/prod/api/v1/namespaces/default/configmaps",
			strings.NewReader(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"rogue-"}}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		if resp, err := c.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	raw, reqs := rogue.received()
	if len(reqs) != 4 {
		t.Fatalf("the rogue connector was sent %d requests, want 4", len(reqs))
	}

	// Not one byte of the caller's token reached the rogue: neither the token nor its signature, in any header or
	// body of any request.
	signature := token[strings.LastIndex(token, ".")+1:]
	if bytes.Contains(raw, []byte(token)) || bytes.Contains(raw, []byte(signature)) {
		t.Fatalf("the rogue connector received the caller's token (%d bytes received)", len(raw))
	}
	// ... nor the token of any other caller, nor the header that carried it before.
	if bytes.Contains(bytes.ToLower(raw), []byte("authorization:")) || bytes.Contains(bytes.ToLower(raw), []byte("warren-caller-token")) {
		t.Fatalf("the rogue connector received a credential header:\n%s", raw)
	}

	// What it did get is an assertion of one request. The gateway refuses it as a bearer token, for the other
	// customer's cluster and for its own.
	captured := reqs[0]
	assertion := captured.Header.Get(wire.HeaderAssertion)
	if assertion == "" {
		t.Fatalf("the rogue connector got no assertion: %v", captured.Header)
	}
	const asBearer = "invalid caller token: this is a gateway's assertion, not a token: assertions are good only between a gateway and a connector, for one request"
	for _, path := range []string{"/clusters/staging/api/v1/namespaces/default/pods", "/clusters/prod/api/v1/namespaces/default/pods"} {
		if got := send(t, c, gs, "GET", path, assertion, nil); got.code != 401 || got.message != asBearer {
			t.Errorf("the assertion as a bearer token at %s: %d %q\nwant 401 %q", path, got.code, got.message, asBearer)
		}
	}
	// Nor does it join as a connector, or open a tunnel as a credential.
	req, _ := http.NewRequest("POST", gs.url()+wire.PathJoin, nil)
	req.Header.Set("Authorization", "Bearer "+assertion)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || statusMessage(body) != "invalid connector token: this is a gateway's assertion, not a token: assertions are good only between a gateway and a connector, for one request" {
		t.Errorf("the assertion as a join token: %d %s", resp.StatusCode, body)
	}
	req, _ = http.NewRequest("GET", gs.url()+wire.PathConnect, nil)
	req.Header.Set("Authorization", "DPoP "+assertion)
	if resp, err = c.Do(req); err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || statusMessage(body) != `invalid connector credential: token of type "warren-assertion+jwt" is not a connector credential` {
		t.Errorf("the assertion as a connector credential: %d %s", resp.StatusCode, body)
	}

	// An honest connector of prod, on a tunnel of its own (the stand-in holds its gateway end, as a thief who
	// reached it would), refuses the captured request as it was sent, and changed.
	si := startStandIn(t, "0123456789abcdef0123456789abcdef")
	honest := si.connect(t, "prod")
	replay := func(method, target string, header http.Header) answer {
		req, err := http.NewRequest(method, "http://prod"+target, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = captured.Header.Clone()
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := honest.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return answer{resp.StatusCode, statusMessage(b)}
	}
	session := assertedSession(t, assertion)
	wantSession := fmt.Sprintf("connector refused the gateway's assertion: assertion is for tunnel session %q, not this connector's: it was sent to another connector", session)
	for name, tc := range map[string]struct {
		method, target string
		header         http.Header
	}{
		"as captured":          {captured.Method, captured.URL.RequestURI(), nil},
		"as a DELETE":          {"DELETE", captured.URL.RequestURI(), nil},
		"on secrets":           {captured.Method, "/api/v1/namespaces/default/secrets", nil},
		"with another query":   {captured.Method, captured.URL.Path + "?watch=true", nil},
		"as an upgrade":        {captured.Method, captured.URL.RequestURI(), http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}},
		"impersonating admins": {captured.Method, captured.URL.RequestURI(), http.Header{"Impersonate-Group": {"system:masters"}}},
	} {
		if got := replay(tc.method, tc.target, tc.header); got.code != 401 || got.message != wantSession {
			t.Errorf("replayed %s at an honest connector: %d %q\nwant 401 %q", name, got.code, got.message, wantSession)
		}
	}
}

// assertedSession reads the session an assertion names (unverified: the test only needs the value).
func assertedSession(t *testing.T, assertion string) string {
	t.Helper()
	ks := mustKeys(t, gatewayPubFile())
	v, err := auth.NewAssertionVerifier(auth.AssertionVerifierConfig{Keys: ks})
	if err != nil {
		t.Fatal(err)
	}
	a, err := v.Verify(assertion)
	if err != nil {
		t.Fatalf("the captured assertion: %v", err)
	}
	return a.Session
}

func statusMessage(body []byte) string {
	var st struct {
		Message string `json:"message"`
	}
	json.Unmarshal(body, &st)
	return st.Message
}

// TestGatewayKeyRotationEndToEnd: connectors pin the old and the next gateway key; the gateway restarts with the
// next key and requests keep working; a connector that pins only the old key refuses the new gateway's requests.
func TestGatewayKeyRotationEndToEnd(t *testing.T) {
	next, nextPub := newSigningKey(t)
	both := mustKeys(t, gatewayPubFile(), nextPub)
	gs := startGateway(t, "127.0.0.1:0")
	startConnector(t, gs, "prod", connectorOpts{name: "both", gatewayKeys: both})
	gs.waitConnectors("prod", 1, 10*time.Second)
	token := callerToken(t, []string{"prod"}, allRules...)
	if code, st := status(t, gs, "/clusters/prod/api/v1/namespaces/default", token); code != 200 {
		t.Fatalf("old key: %d %q", code, st.Message)
	}
	// The gateway switches to the next key: same address, a restart.
	addr := gs.addr
	gs.stop()
	gs.opts.signingKey = next
	gs.start(addr)
	gs.waitConnectors("prod", 1, 20*time.Second)
	if code, st := status(t, gs, "/clusters/prod/api/v1/namespaces/default", token); code != 200 {
		t.Fatalf("next key, pinned beside the old: %d %q", code, st.Message)
	}
	// A connector that was not told about the next key refuses.
	other := startGatewayWith(t, "127.0.0.1:0", gatewayOpts{signingKey: next})
	startConnector(t, other, "prod", connectorOpts{name: "old-only"})
	other.waitConnectors("prod", 1, 10*time.Second)
	code, st := status(t, other, "/clusters/prod/api/v1/namespaces/default", token)
	if want := fmt.Sprintf("connector refused the gateway's assertion: assertion is signed by unknown key id %q", next.KeyID); code != 401 || st.Message != want {
		t.Fatalf("next key, not pinned: %d %q\nwant 401 %q", code, st.Message, want)
	}
}
