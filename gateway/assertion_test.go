package gateway

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/wire"
	"github.com/warren-dev/warren/tunnel"
)

// fakeConnector records the requests that reach it; dies makes it drop each connection after reading a request,
// as a connector that dies with the request in flight.
type fakeConnector struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []http.Header
}

func newFakeConnector(t *testing.T, dies bool) *fakeConnector {
	f := &fakeConnector{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.seen = append(f.seen, r.Header.Clone())
		f.mu.Unlock()
		if dies {
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeConnector) session(id string) *connectorSession {
	cs := newConnectorSession(&tunnel.Session{}, TransportConfig{MaxIdleStreams: 1, IdleStreamTimeout: time.Second})
	cs.id, cs.cluster, cs.log = id, "prod", slog.New(slog.DiscardHandler)
	addr := f.srv.Listener.Addr().String()
	cs.transport.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	return cs
}

func (f *fakeConnector) headers() []http.Header {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]http.Header(nil), f.seen...)
}

// TestEachAttemptCarriesItsOwnAssertion: a read sent again to the cluster's next connector, after the first died
// with it in flight, goes with an assertion of its own, bound to that connector's tunnel; no connector receives
// the caller's token.
func TestEachAttemptCarriesItsOwnAssertion(t *testing.T) {
	dir := t.TempDir()
	if _, err := auth.GenerateKeyPair(dir); err != nil {
		t.Fatal(err)
	}
	key, err := auth.LoadSigningKey(filepath.Join(dir, auth.SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := auth.LoadPublicKeys(filepath.Join(dir, auth.PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := auth.NewAssertionVerifier(auth.AssertionVerifierConfig{Keys: pinned})
	if err != nil {
		t.Fatal(err)
	}
	dying, healthy := newFakeConnector(t, true), newFakeConnector(t, false)
	const dyingID, healthyID = "dddddddddddddddddddddddddddddddd", "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh"
	now := time.Now()
	reg := newRegistry(nil)
	add := func(f *fakeConnector, id string) *connectorSession {
		cred := &auth.CredentialClaims{Cluster: "prod"}
		cred.ID, cred.ExpiresAt = "cred-"+id, jwt.NewNumericDate(now.Add(time.Hour))
		cred.Confirmation.KeyThumbprint = "key-" + id
		cred.Join = auth.JoinRef{ID: "join", ExpiresAt: cred.ExpiresAt}
		_, _, res, err := reg.reserve(cred, now, limits{maxIdentities: 2, maxTunnels: 1, linger: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		cs := f.session(id)
		cs.ident = res.ident
		if !res.commit(cs) {
			t.Fatal("commit refused")
		}
		return cs
	}
	a, b := add(dying, dyingID), add(healthy, healthyID)
	t.Cleanup(func() { a.transport.CloseIdleConnections(); b.transport.CloseIdleConnections() })
	tr := clusterTransport{key: key}
	claims := &auth.Claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: "warren", Subject: "alice", ID: "4be1", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))},
		Warren: auth.Scope{Clusters: []string{"prod"}, Rules: []auth.Rule{{Verbs: []string{"get"}, Resources: []string{"pods"}}}}}

	// Requests spread over the two connectors: within two, one starts at the dying connector.
	for i := range 2 {
		backends, err := reg.backends("prod")
		if err != nil {
			t.Fatal(err)
		}
		rt := &route{cluster: "prod", requestID: "req-" + string(rune('a'+i)), claims: claims, backends: backends}
		req, _ := http.NewRequestWithContext(context.WithValue(context.Background(), routeKey{}, rt), "GET", "http://prod/api/v1/namespaces/x/pods?limit=5", nil)
		req.Header.Set(wire.HeaderRequestID, rt.requestID)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp.Body.Close()
		if req.Header.Get(wire.HeaderAssertion) != "" {
			t.Fatal("RoundTrip changed the caller's request")
		}
	}
	if len(dying.headers()) != 1 || len(healthy.headers()) != 2 {
		t.Fatalf("the dying connector saw %d requests, the healthy one %d; want 1 and 2", len(dying.headers()), len(healthy.headers()))
	}
	ids := map[string]bool{}
	for _, c := range []struct {
		f       *fakeConnector
		session string
	}{{dying, dyingID}, {healthy, healthyID}} {
		for _, h := range c.f.headers() {
			a, err := verifier.Verify(h.Get(wire.HeaderAssertion))
			if err != nil {
				t.Fatal(err)
			}
			if a.Session != c.session || a.Request.Path != "/api/v1/namespaces/x/pods" || a.Request.Query != "limit=5" || a.Request.ID != h.Get(wire.HeaderRequestID) {
				t.Errorf("an assertion sent to session %s is for %+v, session %s", c.session, a.Request, a.Session)
			}
			if ids[a.ID] {
				t.Errorf("assertion %s sent twice", a.ID)
			}
			ids[a.ID] = true
		}
	}
}

func TestNewNeedsAKeyOfItsOwn(t *testing.T) {
	dir := t.TempDir()
	if _, err := auth.GenerateKeyPair(dir); err != nil {
		t.Fatal(err)
	}
	issuer, _ := auth.LoadSigningKey(filepath.Join(dir, auth.SigningKeyFile))
	keys, _ := auth.LoadPublicKeys(filepath.Join(dir, auth.PublicKeyFile))
	callers, _ := auth.NewVerifier(auth.VerifierConfig{Keys: keys, Audience: auth.AudienceCaller})
	connectors, _ := auth.NewVerifier(auth.VerifierConfig{Keys: keys, Audience: auth.AudienceConnector})
	for _, tc := range []struct {
		key  *auth.SigningKey
		want string
	}{
		{nil, "SigningKey is required: it signs the assertion every request carries to its connector"},
		{issuer, "the signing key is also a trusted issuer of caller tokens: a stolen gateway key would then mint caller tokens; give the gateway a key of its own (warren keygen)"},
	} {
		if _, err := New(Config{CallerVerifier: callers, ConnectorVerifier: connectors, SigningKey: tc.key}); err == nil || err.Error() != tc.want {
			t.Errorf("New: %v\nwant %s", err, tc.want)
		}
	}
}

// testSigningKey is a gateway key of the test's own.
func testSigningKey(t *testing.T) *auth.SigningKey {
	t.Helper()
	dir := t.TempDir()
	if _, err := auth.GenerateKeyPair(dir); err != nil {
		t.Fatal(err)
	}
	k, err := auth.LoadSigningKey(filepath.Join(dir, auth.SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return k
}
