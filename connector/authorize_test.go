package connector

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/testenv/testlog"
	"github.com/warren-dev/warren/internal/wire"
	"github.com/warren-dev/warren/tunnel"
)

// These tests put the connector between a stand-in gateway (the test holds the tunnel's gateway end and signs
// assertions with the gateway's key, or forges them) and a stand-in API server that records what reaches it. They
// are what an attacker who holds an assertion, or a tunnel, can try.

var t0 = time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)

// apiServer records the requests that reach it.
type apiServer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []*http.Request
}

func newAPIServer(t *testing.T) *apiServer { return newAPIServerWith(t, nil) }

// newAPIServerWith is newAPIServer answering with handler (default: an empty PodList).
func newAPIServerWith(t *testing.T, handler http.HandlerFunc) *apiServer {
	a := &apiServer{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.seen = append(a.seen, r.Clone(context.Background()))
		a.mu.Unlock()
		if handler != nil {
			handler(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"kind":"PodList","apiVersion":"v1","items":[]}`)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *apiServer) requests() []*http.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*http.Request(nil), a.seen...)
}

// memorySink keeps the connector's audit records.
type memorySink struct {
	mu   sync.Mutex
	recs []audit.Record
}

func (m *memorySink) Write(r audit.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, r)
	return nil
}

// find returns the record of requestID. The connector writes it once the handler returned, which can be after the
// client read the answer: find waits for it, up to a deadline.
func (m *memorySink) find(requestID string) (audit.Record, bool) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		for _, r := range m.recs {
			if r.RequestID == requestID {
				m.mu.Unlock()
				return r, true
			}
		}
		m.mu.Unlock()
		if time.Now().After(deadline) {
			return audit.Record{}, false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gatewayKey is a gateway's signing key written as `warren keygen` writes it.
type gatewayKey struct {
	key *auth.SigningKey
	pub []byte // PEM
}

func newGatewayKey(t *testing.T) gatewayKey {
	dir := t.TempDir()
	if _, err := auth.GenerateKeyPair(dir); err != nil {
		t.Fatal(err)
	}
	k, err := auth.LoadSigningKey(filepath.Join(dir, auth.SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(filepath.Join(dir, auth.PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return gatewayKey{key: k, pub: pub}
}

// connectorKey is a connector's key and its identity.
func connectorKey(t *testing.T) (ed25519.PrivateKey, string) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := auth.KeyID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return key, id
}

// standInGateway admits a connector of identity to cluster prod (its join answered with a credential it never
// checks) and holds the gateway's end of each tunnel it opens, naming the session sessionID ("" names none, as an
// old gateway).
func standInGateway(t *testing.T, sessionID, identity string) (string, chan *tunnel.Session) {
	sessions := make(chan *tunnel.Session, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == wire.PathJoin {
			w.Header().Set("Date", time.Now().UTC().Format(http.TimeFormat))
			json.NewEncoder(w).Encode(wire.JoinResponse{Credential: "stand-in", CredentialID: "c1", Identity: identity, Cluster: "prod",
				ExpiresIn: 3600, RenewIn: 2400, NewIdentity: true})
			return
		}
		if sessionID != "" {
			w.Header().Set(wire.HeaderTunnelID, sessionID)
		}
		s, err := tunnel.Upgrade(w, r, tunnel.Config{})
		if err != nil {
			t.Errorf("tunnel upgrade: %v", err)
			return
		}
		sessions <- s
	}))
	t.Cleanup(func() {
		srv.Close()
		for len(sessions) > 0 {
			(<-sessions).Close()
		}
	})
	return srv.URL, sessions
}

// bench is one connector of cluster "prod" with its stand-in gateway and API server.
type bench struct {
	t        *testing.T
	api      *apiServer
	gw       gatewayKey
	keysFile string // the connector's --gateway-keys file
	keys     *auth.KeyFiles
	audit    *memorySink
	conn     *Connector

	mu  sync.Mutex
	now time.Time

	tunnelID string
	client   *http.Client
}

type benchOpts struct {
	ceiling     *auth.Policy
	impersonate bool
	revoked     map[string]bool
	cacheSize   int
	api         http.HandlerFunc // the stand-in API server's answers (default: an empty PodList)
}

func newBench(t *testing.T, o benchOpts) *bench {
	b := &bench{t: t, api: newAPIServerWith(t, o.api), gw: newGatewayKey(t), audit: &memorySink{}, now: t0}
	b.keysFile = filepath.Join(t.TempDir(), "gateway-keys.pem")
	if err := os.WriteFile(b.keysFile, b.gw.pub, 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	if b.keys, err = auth.NewKeyFiles(time.Hour, b.keysFile); err != nil {
		t.Fatal(err)
	}

	b.tunnelID = "5e55105e55105e55105e55105e55105e"
	key, identity := connectorKey(t)
	gwURL, sessions := standInGateway(t, b.tunnelID, identity)
	var revoked func(string) bool
	if o.revoked != nil {
		revoked = func(jti string) bool { return o.revoked[jti] }
	}
	b.conn, err = New(Config{
		GatewayURL:      gwURL,
		Key:             key,
		Token:           func() (string, error) { return "connector-token", nil },
		Kube:            &rest.Config{Host: b.api.srv.URL},
		Cluster:         "prod",
		GatewayKeys:     b.keys,
		Ceiling:         o.ceiling,
		Impersonate:     o.impersonate,
		Revoked:         revoked,
		ReplayCacheSize: o.cacheSize,
		Audit:           b.audit,
		Now:             b.clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.conn.Run(ctx)
	}()
	var s *tunnel.Session
	select {
	case s = <-sessions:
	case <-time.After(10 * time.Second):
		t.Fatal("the connector did not dial the stand-in gateway")
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return s.Open(ctx) }}
	b.client = &http.Client{Transport: tr}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		s.Close()
		cancel()
		<-done
		b.conn.CloseIdleConnections()
	})
	return b
}

func (b *bench) clock() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.now
}

func (b *bench) advance(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.now = b.now.Add(d)
}

// caller is a verified caller token's claims, as the gateway holds them.
func caller(rules ...string) *auth.Claims {
	c := &auth.Claims{
		RegisteredClaims: jwt.RegisteredClaims{Issuer: "warren", Subject: "alice", ID: "4be1c0ffee4be1c0ffee4be1c0ffee00",
			ExpiresAt: jwt.NewNumericDate(t0.Add(time.Hour))},
		Warren: auth.Scope{Clusters: []string{"prod"}, Groups: []string{"ir-team"}},
	}
	for _, r := range rules {
		pr, err := auth.ParseRule(r)
		if err != nil {
			panic(err)
		}
		c.Warren.Rules = append(c.Warren.Rules, pr)
	}
	return c
}

// request is what the stand-in gateway sends.
type request struct {
	method, target string
	header         http.Header
	body           string
}

func (r request) build(t *testing.T, id string) *http.Request {
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req, err := http.NewRequest(r.method, "http://prod"+r.target, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	req.Header.Set(wire.HeaderRequestID, id)
	return req
}

// assert signs what the gateway would for r sent over this bench's tunnel, then lets mod change it.
func (b *bench) assert(r request, claims *auth.Claims, mod func(*auth.AssertionOptions)) (string, string) {
	id := fmt.Sprintf("req-%d", time.Now().UnixNano())
	o := auth.AssertionOptions{Caller: claims, Cluster: "prod", Session: b.tunnelID, Request: auth.RequestBinding(r.build(b.t, id), id), Now: b.clock()}
	if mod != nil {
		mod(&o)
	}
	tok, err := b.gw.key.SignAssertion(o)
	if err != nil {
		b.t.Fatal(err)
	}
	return tok, id
}

type answer struct {
	code       int
	message    string
	retryAfter string
}

// send sends r over the tunnel with request id id and the assertion.
func (b *bench) send(r request, id, assertion string) answer {
	req := r.build(b.t, id)
	if assertion != "" {
		req.Header.Set(wire.HeaderAssertion, assertion)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", r.method, r.target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var st metav1.Status
	json.Unmarshal(body, &st)
	return answer{resp.StatusCode, st.Message, resp.Header.Get("Retry-After")}
}

var listPods = request{method: "GET", target: "/api/v1/namespaces/payments/pods?limit=500"}

func TestAssertionGoodForOneRequest(t *testing.T) {
	b := newBench(t, benchOpts{})
	tok, id := b.assert(listPods, caller("get,list:pods:payments"), nil)
	if got := b.send(listPods, id, tok); got.code != 200 {
		t.Fatalf("the genuine assertion: %+v", got)
	}
	seen := b.api.requests()
	if len(seen) != 1 || seen[0].URL.RequestURI() != "/api/v1/namespaces/payments/pods?limit=500" {
		t.Fatalf("the API server saw %v", seen)
	}
	for k := range seen[0].Header {
		if strings.HasPrefix(k, wire.HeaderPrefix) {
			t.Errorf("the API server got header %s", k)
		}
	}
	rec, ok := b.audit.find(id)
	a, _, _ := jwt.NewParser().ParseUnverified(tok, &auth.Assertion{})
	if !ok || rec.Decision != "allow" || rec.Subject != "alice" || rec.TokenID != caller().ID || rec.AssertionID != a.Claims.(*auth.Assertion).ID ||
		rec.Verb != "list" || rec.Namespace != "payments" {
		t.Fatalf("audit record %+v", rec)
	}

	// The same assertion again, on the same tunnel, for the same request: refused, and audited.
	got := b.send(listPods, id, tok)
	want := fmt.Sprintf(`connector refused the gateway's assertion: assertion %q was used before: each is good for one request`, rec.AssertionID)
	if got.code != 401 || got.message != want {
		t.Fatalf("replayed: %+v\nwant 401 %s", got, want)
	}
	if n := len(b.api.requests()); n != 1 {
		t.Fatalf("the API server saw %d requests, want 1", n)
	}
}

// TestAssertionMustMatchTheRequest: an assertion taken from one request and put on another, changed in any part
// that it binds, is refused; so is one for another cluster or tunnel, expired, forged or absent.
func TestAssertionMustMatchTheRequest(t *testing.T) {
	b := newBench(t, benchOpts{})
	other := newGatewayKey(t)
	rules := caller("get,list:pods:payments", "*:*:*")
	const refused = "connector refused the gateway's assertion: "
	tests := []struct {
		name     string
		asserted request // what the gateway signed for
		sent     request // what arrives
		mod      func(*auth.AssertionOptions)
		sign     *gatewayKey // default: the pinned key
		none     bool
		message  string
	}{
		{name: "no assertion", asserted: listPods, sent: listPods, none: true,
			message: refused + "the request carries none (Warren-Assertion header): every request must come with the gateway's signed assertion of it"},
		{name: "another method", asserted: listPods, sent: request{method: "DELETE", target: listPods.target},
			message: refused + "the request is a DELETE, the assertion is for a GET"},
		{name: "another path", asserted: listPods, sent: request{method: "GET", target: "/api/v1/namespaces/payments/secrets?limit=500"},
			message: refused + `the request path is "/api/v1/namespaces/payments/secrets", the assertion is for "/api/v1/namespaces/payments/pods"`},
		{name: "the path escaped otherwise", asserted: listPods, sent: request{method: "GET", target: "/api/v1/namespaces/payments/p%6Fds?limit=500"},
			message: refused + `the request path is "/api/v1/namespaces/payments/p%6Fds", the assertion is for "/api/v1/namespaces/payments/pods"`},
		{name: "another query", asserted: listPods, sent: request{method: "GET", target: "/api/v1/namespaces/payments/pods?limit=500&watch=true"},
			message: refused + `the request query is "limit=500&watch=true", the assertion is for "limit=500"`},
		{name: "an upgrade added", asserted: listPods, sent: request{method: "GET", target: listPods.target,
			header: http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}},
			message: refused + `the request upgrades to "websocket", the assertion is for ""`},
		{name: "impersonation added", asserted: listPods, sent: request{method: "GET", target: listPods.target,
			header: http.Header{"Impersonate-User": {"system:admin"}}},
			message: refused + "the request's Impersonate-* headers are not those the assertion is for"},
		{name: "impersonation changed", asserted: request{method: "GET", target: listPods.target, header: http.Header{"Impersonate-Group": {"viewers"}}},
			sent:    request{method: "GET", target: listPods.target, header: http.Header{"Impersonate-Group": {"system:masters"}}},
			message: refused + "the request's Impersonate-* headers are not those the assertion is for"},
		{name: "another request id", asserted: listPods, sent: listPods, mod: func(o *auth.AssertionOptions) { o.Request.ID = "someone-else" },
			message: refused + `the request id is "`},
		{name: "for another cluster", asserted: listPods, sent: listPods, mod: func(o *auth.AssertionOptions) { o.Cluster = "staging" },
			message: refused + `assertion is for cluster "staging", this connector serves "prod"`},
		{name: "for another tunnel of the cluster", asserted: listPods, sent: listPods,
			mod:     func(o *auth.AssertionOptions) { o.Session = "ffffffffffffffffffffffffffffffff" },
			message: refused + `assertion is for tunnel session "ffffffffffffffffffffffffffffffff", not this connector's: it was sent to another connector`},
		{name: "signed by a key not pinned", asserted: listPods, sent: listPods, sign: &other,
			message: refused + fmt.Sprintf("assertion is signed by unknown key id %q", other.key.KeyID)},
		{name: "expired", asserted: listPods, sent: listPods, mod: func(o *auth.AssertionOptions) { o.Now = t0.Add(-auth.AssertionLifetime - auth.DefaultLeeway) },
			message: refused + "assertion expired at 2026-11-25T08:59:30Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, id := b.assert(tc.asserted, rules, tc.mod)
			if tc.sign != nil {
				saved := b.gw
				b.gw = *tc.sign
				tok, id = b.assert(tc.asserted, rules, tc.mod)
				b.gw = saved
			}
			if tc.none {
				tok = ""
			}
			got := b.send(tc.sent, id, tok)
			if got.code != 401 || !strings.HasPrefix(got.message, tc.message) {
				t.Fatalf("got %d %q\nwant 401 %q", got.code, got.message, tc.message)
			}
			rec, ok := b.audit.find(id)
			if !ok || rec.Decision != "deny" || rec.Status != 401 || "connector "+rec.Reason != got.message {
				t.Fatalf("audit record %+v (found %v)", rec, ok)
			}
		})
	}
	if n := len(b.api.requests()); n != 0 {
		t.Fatalf("the API server saw %d requests", n)
	}

	// Expiry on the connector's clock: a genuine assertion held back past its lifetime and the leeway.
	tok, id := b.assert(listPods, rules, nil)
	b.advance(auth.AssertionLifetime + auth.DefaultLeeway)
	if got := b.send(listPods, id, tok); got.code != 401 || got.message != refused+"assertion expired at 2026-11-25T09:01:00Z" {
		t.Fatalf("held back: %+v", got)
	}
}

// TestConnectorRechecksTheRules: "a gateway that checks less cannot widen access": the connector applies the
// rules the assertion carries and the customer's ceiling itself, and the caller's revocation and expiry.
func TestConnectorRechecksTheRules(t *testing.T) {
	ceiling, err := auth.ParsePolicy([]byte("rules:\n- verbs: [get, list]\n  resources: [pods]\n  namespaces: [payments]\n"))
	if err != nil {
		t.Fatal(err)
	}
	revokedID := "0ddba11c0ffee0ddba11c0ffee000000"
	b := newBench(t, benchOpts{ceiling: ceiling, revoked: map[string]bool{revokedID: true}})
	secrets := request{method: "GET", target: "/api/v1/namespaces/payments/secrets"}
	otherNS := request{method: "GET", target: "/api/v1/namespaces/billing/pods"}
	expired := caller("*:*:*")
	expired.ExpiresAt = jwt.NewNumericDate(t0.Add(-time.Hour))
	revoked := caller("*:*:*")
	revoked.ID = revokedID
	tests := []struct {
		name    string
		req     request
		claims  *auth.Claims
		code    int
		message string
	}{
		{"outside the token's rules", secrets, caller("get,list:pods:payments"), 403,
			`connector: token of "alice" cannot list resource "secrets" in API group "" in the namespace "payments" (it needs --rule list:secrets:payments)`},
		{"impersonation the rules do not grant", request{method: "GET", target: listPods.target, header: http.Header{"Impersonate-User": {"system:admin"}}},
			caller("get,list:pods:payments"), 403, `connector: token of "alice" cannot impersonate: cannot impersonate resource "users" in API group "" at the cluster scope`},
		{"a broad token under the ceiling", secrets, caller("*:*:*"), 403,
			`connector: the cluster's policy does not allow it: cannot list resource "secrets" in API group "" in the namespace "payments"`},
		{"another namespace under the ceiling", otherNS, caller("*:*:*"), 403,
			`connector: the cluster's policy does not allow it: cannot list resource "pods" in API group "" in the namespace "billing"`},
		{"a revoked caller token", listPods, revoked, 401, `connector: the caller's token "` + revokedID + `" has been revoked`},
		{"an expired caller token", listPods, expired, 401, "connector: the caller's token expired at 2026-11-25T08:00:00Z"},
		{"within both", listPods, caller("*:*:*"), 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, id := b.assert(tc.req, tc.claims, nil)
			got := b.send(tc.req, id, tok)
			if got.code != tc.code || got.message != tc.message {
				t.Fatalf("got %d %q\nwant %d %q", got.code, got.message, tc.code, tc.message)
			}
		})
	}
	if n := len(b.api.requests()); n != 1 {
		t.Fatalf("the API server saw %d requests, want the one allowed", n)
	}
}

// TestReplayCacheFullRefuses: when every place is taken by an id that has not expired, requests are refused with
// 429 and Retry-After, and served again once ids expire.
func TestReplayCacheFullRefuses(t *testing.T) {
	b := newBench(t, benchOpts{cacheSize: 2})
	for range 2 {
		tok, id := b.assert(listPods, caller("*:*:*"), nil)
		if got := b.send(listPods, id, tok); got.code != 200 {
			t.Fatalf("%+v", got)
		}
	}
	b.advance(10 * time.Second)
	tok, id := b.assert(listPods, caller("*:*:*"), nil)
	got := b.send(listPods, id, tok)
	const want = "connector: too many requests: the replay cache holds 2 assertion ids, as many as it may, until the oldest expires in 1m20s; retry in 80s"
	if got.code != 429 || got.message != want || got.retryAfter != "80" {
		t.Fatalf("full: %+v\nwant 429 %s", got, want)
	}
	b.advance(80 * time.Second)
	tok, id = b.assert(listPods, caller("*:*:*"), nil)
	if got := b.send(listPods, id, tok); got.code != 200 {
		t.Fatalf("after the ids expired: %+v", got)
	}
}

// TestGatewayKeyRotation: with two keys pinned, assertions of either pass; once the old key leaves the file, its
// assertions are refused.
func TestGatewayKeyRotation(t *testing.T) {
	b := newBench(t, benchOpts{})
	old, next := b.gw, newGatewayKey(t)
	send := func(k gatewayKey) answer {
		b.gw = k
		tok, id := b.assert(listPods, caller("*:*:*"), nil)
		return b.send(listPods, id, tok)
	}
	if got := send(next); got.code != 401 || got.message != fmt.Sprintf("connector refused the gateway's assertion: assertion is signed by unknown key id %q", next.key.KeyID) {
		t.Fatalf("the next key before it is pinned: %+v", got)
	}
	// Step 1: pin both (the file is re-read on change, or on SIGHUP: Reload).
	if err := os.WriteFile(b.keysFile, append(append([]byte{}, old.pub...), next.pub...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.keys.Reload(); err != nil {
		t.Fatal(err)
	}
	for name, k := range map[string]gatewayKey{"old": old, "next": next} {
		if got := send(k); got.code != 200 {
			t.Fatalf("%s key with both pinned: %+v", name, got)
		}
	}
	// Step 2: the gateway has switched; unpin the old key.
	if err := os.WriteFile(b.keysFile, next.pub, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.keys.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := send(old); got.code != 401 || !strings.Contains(got.message, "unknown key id") {
		t.Fatalf("old key after rotation: %+v", got)
	}
	if got := send(next); got.code != 200 {
		t.Fatalf("next key after rotation: %+v", got)
	}
}

// TestImpersonationFromTheAssertion: the identity sent to the API server is the one the gateway asserted.
func TestImpersonationFromTheAssertion(t *testing.T) {
	b := newBench(t, benchOpts{impersonate: true})
	tok, id := b.assert(listPods, caller("*:*:*"), nil)
	if got := b.send(listPods, id, tok); got.code != 200 {
		t.Fatalf("%+v", got)
	}
	seen := b.api.requests()
	if len(seen) != 1 {
		t.Fatalf("the API server saw %d requests", len(seen))
	}
	h := seen[0].Header
	if h.Get("Impersonate-User") != "warren:alice" || strings.Join(h.Values("Impersonate-Group"), ",") != "ir-team" ||
		h.Get("Impersonate-Extra-Warren-Token-Id") != caller().ID {
		t.Fatalf("impersonation headers %v", h)
	}
	// A caller's own Impersonate-* headers, even asserted and allowed by its rules, are refused in this mode.
	imp := request{method: "GET", target: listPods.target, header: http.Header{"Impersonate-User": {"bob"}}}
	tok, id = b.assert(imp, caller("*:*:*"), nil)
	if got := b.send(imp, id, tok); got.code != 403 || got.message != "connector: this connector impersonates the caller itself; Impersonate-* headers are refused" {
		t.Fatalf("caller impersonation: %+v", got)
	}
}

func TestNewNeedsGatewayKeys(t *testing.T) {
	_, err := New(Config{GatewayURL: "https://gw", Token: func() (string, error) { return "x", nil }, Kube: &rest.Config{Host: "https://k"}, Cluster: "prod"})
	if err == nil || err.Error() != "GatewayKeys is required: the gateway's public key(s) that sign the assertion each request carries" {
		t.Fatalf("New without GatewayKeys: %v", err)
	}
}

// TestOldGatewayIsRefused: a gateway that names no tunnel session signs no assertions; the connector says so and
// serves nothing over its tunnel.
func TestOldGatewayIsRefused(t *testing.T) {
	key, identity := connectorKey(t)
	gwURL, _ := standInGateway(t, "", identity)
	logs := &testlog.Buffer{}
	c, err := New(Config{GatewayURL: gwURL, Token: func() (string, error) { return "t", nil }, Kube: &rest.Config{Host: "http://127.0.0.1:1"},
		Key: key, Cluster: "prod", GatewayKeys: newBenchKeys(t), Backoff: Backoff{Initial: time.Hour, Max: time.Hour},
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	const want = `msg="gateway too old for this connector: upgrade the gateway (it must sign assertions with --gateway-key)"`
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the connector did not say the gateway is too old:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c.Connected() {
		t.Fatal("connected to a gateway that signs no assertions")
	}
}

func newBenchKeys(t *testing.T) auth.KeySet {
	k := newGatewayKey(t)
	ks, err := auth.NewStaticKeys(k.key.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return ks
}
