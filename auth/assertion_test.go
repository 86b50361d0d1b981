package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testGateway is a gateway's signing key and a connector's verifier pinning it.
type testGateway struct {
	key  *SigningKey
	keys *StaticKeys
}

func newTestGateway(t testing.TB) *testGateway {
	t.Helper()
	is := newIssuer(t)
	return &testGateway{key: is.key, keys: is.keys}
}

func (g *testGateway) verifier(t testing.TB, now time.Time) *AssertionVerifier {
	t.Helper()
	v, err := NewAssertionVerifier(AssertionVerifierConfig{Keys: g.keys, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var testBinding = AssertedRequest{ID: "9f2c0a1b", Method: "GET", Path: "/api/v1/namespaces/payments/pods", Query: "limit=500"}

func testCaller() *Claims {
	c := baseClaims(AudienceCaller)
	c.Warren.Groups = []string{"ir-team"}
	return c
}

func (g *testGateway) sign(t testing.TB, mod func(*AssertionOptions)) string {
	t.Helper()
	o := AssertionOptions{Caller: testCaller(), Cluster: "prod", Session: "0123456789abcdef0123456789abcdef", Request: testBinding, Now: t0}
	if mod != nil {
		mod(&o)
	}
	tok, err := g.key.SignAssertion(o)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// assertionClaims is what SignAssertion would sign, for tests that sign modified ones by hand.
func assertionClaims() *Assertion {
	c := testCaller()
	return &Assertion{
		RegisteredClaims: jwt.RegisteredClaims{Issuer: AssertionIssuer, Audience: jwt.ClaimStrings{AudienceAssertion},
			IssuedAt: jwt.NewNumericDate(t0), NotBefore: jwt.NewNumericDate(t0), ExpiresAt: jwt.NewNumericDate(t0.Add(AssertionLifetime)),
			ID: "00112233445566778899aabbccddeeff"},
		Cluster: "prod", Session: "0123456789abcdef0123456789abcdef", Request: testBinding,
		Caller: AssertedCaller{Issuer: c.Issuer, Subject: c.Subject, TokenID: c.ID, Groups: c.Warren.Groups, Expiry: c.ExpiresAt, Rules: c.Warren.Rules},
	}
}

func TestAssertionSignAndVerify(t *testing.T) {
	g := newTestGateway(t)
	tok := g.sign(t, nil)
	a, err := g.verifier(t, t0.Add(time.Second)).Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if a.Issuer != AssertionIssuer || len(a.Audience) != 1 || a.Audience[0] != AudienceAssertion || !a.IssuedAt.Equal(t0) ||
		!a.ExpiresAt.Equal(t0.Add(time.Minute)) || len(a.ID) != 32 || a.Subject != "" {
		t.Errorf("registered claims %+v", a.RegisteredClaims)
	}
	if a.Cluster != "prod" || a.Session != "0123456789abcdef0123456789abcdef" || a.Request != testBinding {
		t.Errorf("binding %+v", a)
	}
	caller := a.CallerClaims()
	want := testCaller()
	if caller.Subject != "alice" || caller.Issuer != DefaultIssuer || caller.ID != want.ID || !caller.ExpiresAt.Equal(want.ExpiresAt.Time) ||
		len(caller.Warren.Clusters) != 1 || caller.Warren.Clusters[0] != "prod" || len(caller.Warren.Groups) != 1 || caller.Warren.Groups[0] != "ir-team" {
		t.Errorf("caller %+v", caller)
	}
	gotRules, _ := json.Marshal(caller.Warren.Rules)
	wantRules, _ := json.Marshal(want.Warren.Rules)
	if string(gotRules) != string(wantRules) {
		t.Errorf("rules %s, want %s", gotRules, wantRules)
	}
	if err := a.Check("prod", "0123456789abcdef0123456789abcdef", testBinding); err != nil {
		t.Errorf("Check of the very request: %v", err)
	}
	// The header is typed, names the key, and the payload names no "warren" scope: nothing can take it for a token.
	parts := strings.Split(tok, ".")
	h, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var hdr map[string]any
	json.Unmarshal(h, &hdr)
	if hdr["alg"] != "EdDSA" || hdr["kid"] != g.key.KeyID || hdr["typ"] != AssertionType {
		t.Errorf("header %v", hdr)
	}
	p, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var payload map[string]any
	json.Unmarshal(p, &payload)
	if _, ok := payload["warren"]; ok {
		t.Errorf("payload has a warren claim: %s", p)
	}
	if g.sign(t, nil) == tok {
		t.Error("two assertions are identical")
	}
}

func TestAssertionRefused(t *testing.T) {
	g := newTestGateway(t)
	other := newTestGateway(t)
	kid := g.key.KeyID
	hdr := map[string]any{"kid": kid, "typ": AssertionType}
	signed := func(mod func(*Assertion), header map[string]any) string {
		a := assertionClaims()
		if mod != nil {
			mod(a)
		}
		if header == nil {
			header = hdr
		}
		return signRaw(t, jwt.SigningMethodEdDSA, g.key.Key, a, header)
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	good := g.sign(t, nil)
	parts := strings.Split(good, ".")
	tampered := func() string {
		a := assertionClaims()
		a.Request.Method = "DELETE"
		p, _ := json.Marshal(a)
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(p) + "." + parts[2]
	}()
	noneHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"` + kid + `","typ":"` + AssertionType + `"}`))
	payload, _ := json.Marshal(assertionClaims())
	is := newIssuer(t)
	callerTok := is.caller(t, nil)

	tests := []struct {
		name  string
		token string
		at    time.Time
		want  string
	}{
		{"empty", "", t0, "assertion is empty"},
		{"garbage", "not-a-jwt", t0, "malformed assertion: want three base64url parts separated by dots"},
		{"oversized", strings.Repeat("a", MaxAssertionBytes+1), t0, "malformed assertion: longer than 524288 bytes"},
		{"a caller token", callerTok, t0, `not a gateway assertion: its typ header is "JWT", want "warren-assertion+jwt"`},
		{"no typ", signed(nil, map[string]any{"kid": kid, "typ": nil}), t0, `not a gateway assertion: its typ header is "", want "warren-assertion+jwt"`},
		{"typ JWT", signed(nil, map[string]any{"kid": kid, "typ": "JWT"}), t0, `not a gateway assertion: its typ header is "JWT", want "warren-assertion+jwt"`},
		{"alg none", noneHeader + "." + base64.RawURLEncoding.EncodeToString(payload) + ".", t0, `assertion algorithm "none" is not allowed`},
		{"HS256 keyed with the public key", signRaw(t, jwt.SigningMethodHS256, []byte(g.key.Key.Public().(ed25519.PublicKey)), assertionClaims(), hdr), t0,
			`assertion algorithm "HS256" is not allowed`},
		{"unknown key", other.sign(t, nil), t0, `assertion is signed by unknown key id "` + other.key.KeyID + `"`},
		{"a stranger's key under a pinned kid", signRaw(t, jwt.SigningMethodEdDSA, stranger, assertionClaims(), hdr), t0, "assertion signature is invalid"},
		{"tampered payload", tampered, t0, "assertion signature is invalid"},
		{"no kid", signed(nil, map[string]any{"typ": AssertionType}), t0, "assertion has no key id (kid header)"},
		{"crit header", signed(nil, map[string]any{"kid": kid, "typ": AssertionType, "crit": []string{"x"}}), t0, `malformed assertion: header parameter "crit" is not supported`},
		{"expired", good, t0.Add(AssertionLifetime + DefaultLeeway + time.Second), "assertion expired at 2026-11-25T09:01:00Z"},
		{"not yet valid", good, t0.Add(-DefaultLeeway - time.Second), "assertion not valid before 2026-11-25T09:00:00Z"},
		{"issued in the future", signed(func(a *Assertion) { a.NotBefore = nil }, nil), t0.Add(-DefaultLeeway - time.Second), "assertion issued in the future, at 2026-11-25T09:00:00Z"},
		{"longer than a minute", signed(func(a *Assertion) { a.ExpiresAt = jwt.NewNumericDate(t0.Add(2 * time.Minute)) }, nil), t0,
			"assertion lifetime 2m0s exceeds the maximum 1m0s"},
		{"no expiry", signed(func(a *Assertion) { a.ExpiresAt = nil }, nil), t0, "assertion has no expiry (exp claim)"},
		{"no issue time", signed(func(a *Assertion) { a.IssuedAt = nil }, nil), t0, "malformed assertion: no issue time (iat claim)"},
		{"caller audience", signed(func(a *Assertion) { a.Audience = jwt.ClaimStrings{AudienceCaller} }, nil), t0,
			`assertion audience [warren] does not include "warren-assertion"`},
		{"two audiences", signed(func(a *Assertion) { a.Audience = jwt.ClaimStrings{AudienceAssertion, AudienceCaller} }, nil), t0,
			`malformed assertion: audience [warren-assertion warren] must be exactly [warren-assertion]`},
		{"another issuer", signed(func(a *Assertion) { a.Issuer = DefaultIssuer }, nil), t0, `assertion issuer "warren" is not trusted (want "warren-gateway")`},
		{"id not hex", signed(func(a *Assertion) { a.ID = "forged-1" }, nil), t0, `malformed assertion: id (jti) "forged-1" must be 32 lowercase hex digits`},
		{"id in upper case", signed(func(a *Assertion) { a.ID = "00112233445566778899AABBCCDDEEFF" }, nil), t0,
			`malformed assertion: id (jti) "00112233445566778899AABBCCDDEEFF" must be 32 lowercase hex digits`},
		{"no cluster", signed(func(a *Assertion) { a.Cluster = "" }, nil), t0, "malformed assertion: cluster: empty cluster name"},
		{"no session", signed(func(a *Assertion) { a.Session = "" }, nil), t0, `malformed assertion: session "" must be a tunnel id`},
		{"no request id", signed(func(a *Assertion) { a.Request.ID = "" }, nil), t0, `malformed assertion: request id ""`},
		{"relative path", signed(func(a *Assertion) { a.Request.Path = "api/v1" }, nil), t0, `malformed assertion: request "GET" "api/v1"`},
		{"no caller", signed(func(a *Assertion) { a.Caller.Subject = "" }, nil), t0, "malformed assertion: the caller has no subject"},
		{"no caller expiry", signed(func(a *Assertion) { a.Caller.Expiry = nil }, nil), t0, "malformed assertion: the caller token's expiry is missing"},
		{"bad rule", signed(func(a *Assertion) { a.Caller.Rules = []Rule{{Verbs: []string{"fly"}, Resources: []string{"pods"}}} }, nil), t0,
			`malformed assertion: caller.rules[0]: unknown verb "fly"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := g.verifier(t, tc.at).Verify(tc.token)
			if err == nil {
				t.Fatalf("verified: %+v", a)
			}
			if !strings.HasPrefix(err.Error(), tc.want) || !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("error %q\nwant  %q...", err, tc.want)
			}
		})
	}
	// At the edges of its lifetime, with the leeway, the genuine one passes.
	for _, at := range []time.Time{t0.Add(-DefaultLeeway), t0.Add(AssertionLifetime + DefaultLeeway - time.Nanosecond)} {
		if _, err := g.verifier(t, at).Verify(good); err != nil {
			t.Errorf("at %v: %v", at, err)
		}
	}
}

func TestAssertionCheckEveryBinding(t *testing.T) {
	g := newTestGateway(t)
	a, err := g.verifier(t, t0).Verify(g.sign(t, func(o *AssertionOptions) {
		o.Request.Upgrade = "websocket"
		o.Request.Impersonation = ImpersonationDigest(http.Header{"Impersonate-User": {"bob"}})
	}))
	if err != nil {
		t.Fatal(err)
	}
	const session = "0123456789abcdef0123456789abcdef"
	base := a.Request
	tests := []struct {
		name             string
		cluster, session string
		mod              func(*AssertedRequest)
		want             string
	}{
		{"another cluster", "staging", session, nil, `assertion is for cluster "prod", this connector serves "staging"`},
		{"another tunnel", "prod", "ffffffffffffffffffffffffffffffff", nil,
			`assertion is for tunnel session "0123456789abcdef0123456789abcdef", not this connector's: it was sent to another connector`},
		{"another request id", "prod", session, func(r *AssertedRequest) { r.ID = "77d0" }, `the request id is "77d0", the assertion is for "9f2c0a1b"`},
		{"another method", "prod", session, func(r *AssertedRequest) { r.Method = "DELETE" }, "the request is a DELETE, the assertion is for a GET"},
		{"another path", "prod", session, func(r *AssertedRequest) { r.Path = "/api/v1/namespaces/payments/secrets" },
			`the request path is "/api/v1/namespaces/payments/secrets", the assertion is for "/api/v1/namespaces/payments/pods"`},
		{"an escaped path", "prod", session, func(r *AssertedRequest) { r.Path = "/api/v1/namespaces/payments/p%6Fds" },
			`the request path is "/api/v1/namespaces/payments/p%6Fds", the assertion is for "/api/v1/namespaces/payments/pods"`},
		{"another query", "prod", session, func(r *AssertedRequest) { r.Query = "limit=500&watch=1" }, `the request query is "limit=500&watch=1", the assertion is for "limit=500"`},
		{"no query", "prod", session, func(r *AssertedRequest) { r.Query = "" }, `the request query is "", the assertion is for "limit=500"`},
		{"another upgrade", "prod", session, func(r *AssertedRequest) { r.Upgrade = "SPDY/3.1" }, `the request upgrades to "SPDY/3.1", the assertion is for "websocket"`},
		{"no upgrade", "prod", session, func(r *AssertedRequest) { r.Upgrade = "" }, `the request upgrades to "", the assertion is for "websocket"`},
		{"other impersonation", "prod", session, func(r *AssertedRequest) {
			r.Impersonation = ImpersonationDigest(http.Header{"Impersonate-User": {"system:admin"}})
		}, "the request's Impersonate-* headers are not those the assertion is for"},
		{"no impersonation", "prod", session, func(r *AssertedRequest) { r.Impersonation = "" }, "the request's Impersonate-* headers are not those the assertion is for"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := base
			if tc.mod != nil {
				tc.mod(&got)
			}
			err := a.Check(tc.cluster, tc.session, got)
			if err == nil || err.Error() != tc.want || !errors.Is(err, ErrAssertionMismatch) || !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("error %v\nwant  %s", err, tc.want)
			}
		})
	}
	if err := a.Check("prod", session, base); err != nil {
		t.Fatal(err)
	}
}

// TestAssertionIsNoToken: even where the gateway's key is trusted for caller or connector tokens (it must not be;
// gateway.New refuses it for callers), an assertion is never taken for one.
func TestAssertionIsNoToken(t *testing.T) {
	g := newTestGateway(t)
	tok := g.sign(t, nil)
	for _, aud := range []string{AudienceCaller, AudienceConnector} {
		_, err := verifierAt(t, g.keys, aud, t0, nil).Verify(tok)
		const want = "this is a gateway's assertion, not a token: assertions are good only between a gateway and a connector, for one request"
		if err == nil || err.Error() != want {
			t.Errorf("%s verifier: %v, want %s", aud, err, want)
		}
	}
	// A forger cannot dodge the check by the typ header's case.
	a := assertionClaims()
	lower := signRaw(t, jwt.SigningMethodEdDSA, g.key.Key, a, map[string]any{"kid": g.key.KeyID, "typ": "Warren-Assertion+JWT"})
	if _, err := verifierAt(t, g.keys, AudienceCaller, t0, nil).Verify(lower); err == nil || !strings.HasPrefix(err.Error(), "this is a gateway's assertion") {
		t.Errorf("typ in another case: %v", err)
	}
	v := verifierAt(t, g.keys, AudienceCaller, t0, nil)
	if !v.TrustsKey(g.key.Key.Public()) {
		t.Error("TrustsKey does not see the verifier's own key")
	}
	if newTestGateway(t).verifier(t, t0) == nil || verifierAt(t, newIssuer(t).keys, AudienceCaller, t0, nil).TrustsKey(g.key.Key.Public()) {
		t.Error("TrustsKey sees a key the verifier does not have")
	}
}

func TestRequestBinding(t *testing.T) {
	req := func(method, target string, h http.Header) *http.Request {
		r, err := http.NewRequest(method, "http://prod"+target, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range h {
			r.Header[k] = v
		}
		return r
	}
	r := req("GET", "/api/v1/namespaces/a%20b/pods?watch=1&labelSelector=x%3Dy", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}})
	b := RequestBinding(r, "id-1")
	if b != (AssertedRequest{ID: "id-1", Method: "GET", Path: "/api/v1/namespaces/a%20b/pods", Query: "watch=1&labelSelector=x%3Dy", Upgrade: "websocket"}) {
		t.Errorf("binding %+v", b)
	}
	// An Upgrade header without Connection: Upgrade is no upgrade: neither proxy forwards it as one.
	if b := RequestBinding(req("GET", "/x", http.Header{"Upgrade": {"websocket"}}), "i"); b.Upgrade != "" {
		t.Errorf("upgrade without Connection: %+v", b)
	}
	digest := func(h http.Header) string { return ImpersonationDigest(h) }
	if digest(http.Header{"Accept": {"x"}}) != "" {
		t.Error("digest of no Impersonate-* headers")
	}
	one := digest(http.Header{"Impersonate-User": {"bob"}, "Impersonate-Group": {"a", "b"}})
	for name, h := range map[string]http.Header{
		"another user":        {"Impersonate-User": {"alice"}, "Impersonate-Group": {"a", "b"}},
		"groups reordered":    {"Impersonate-User": {"bob"}, "Impersonate-Group": {"b", "a"}},
		"one group of two":    {"Impersonate-User": {"bob"}, "Impersonate-Group": {"a,b"}},
		"a group more":        {"Impersonate-User": {"bob"}, "Impersonate-Group": {"a", "b", "c"}},
		"an extra more":       {"Impersonate-User": {"bob"}, "Impersonate-Group": {"a", "b"}, "Impersonate-Extra-Scopes": {"x"}},
		"value moved to user": {"Impersonate-User": {"bob", "a"}, "Impersonate-Group": {"b"}},
	} {
		if d := digest(h); d == one || d == "" {
			t.Errorf("%s: same digest", name)
		}
	}
	// The header keys' case does not matter (net/http canonicalizes them on the way).
	if digest(http.Header{"impersonate-user": {"bob"}, "IMPERSONATE-GROUP": {"a", "b"}}) != one {
		t.Error("digest depends on the keys' case")
	}
	if digest(http.Header{"Impersonate-User": {"bob"}, "Impersonate-Group": {"a"}, "impersonate-group": {"b"}}) != one {
		t.Error("values of one header under two spellings are not merged in wire order")
	}
}

func TestReplayCache(t *testing.T) {
	c := NewReplayCache(2)
	id := func(b byte) [16]byte { return [16]byte{b} }
	if err := c.Add(id(1), t0.Add(90*time.Second), t0); err != nil {
		t.Fatal(err)
	}
	if err := c.Add(id(1), t0.Add(90*time.Second), t0.Add(time.Second)); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay: %v", err)
	}
	if err := c.Add(id(2), t0.Add(100*time.Second), t0); err != nil {
		t.Fatal(err)
	}
	// Full: refused rather than forgotten, with the time until the oldest id expires.
	err := c.Add(id(3), t0.Add(100*time.Second), t0.Add(30*time.Second))
	var full *ReplayCacheFullError
	if !errors.As(err, &full) || full.Size != 2 || full.RetryAfter != 60*time.Second ||
		err.Error() != "the replay cache holds 2 assertion ids, as many as it may, until the oldest expires in 1m0s" {
		t.Fatalf("full: %v", err)
	}
	if err := c.Add(id(1), t0.Add(90*time.Second), t0.Add(30*time.Second)); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay while full: %v", err)
	}
	// Up to its expiry an id is held; at it, it goes and makes room.
	if err := c.Add(id(3), t0.Add(100*time.Second), t0.Add(90*time.Second)); err != nil {
		t.Fatalf("after the oldest expired: %v", err)
	}
	if c.Len() != 2 {
		t.Fatalf("len %d", c.Len())
	}
	if err := c.Add(id(1), t0.Add(200*time.Second), t0.Add(90*time.Second)); !errors.As(err, &full) {
		t.Fatalf("an expired id comes back while full: %v", err)
	}
	if NewReplayCache(0).Size() != DefaultReplayCacheSize {
		t.Error("default size")
	}
}

// TestReplayCacheRemembersUntilTheVerifierWouldRefuse: an id is held until exp plus the leeway, the last moment
// the verifier accepts the assertion.
func TestReplayCacheRemembersUntilTheVerifierWouldRefuse(t *testing.T) {
	g := newTestGateway(t)
	tok := g.sign(t, nil)
	now := t0
	v, err := NewAssertionVerifier(AssertionVerifierConfig{Keys: g.keys, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	c := NewReplayCache(1)
	use := func() error {
		a, err := v.Verify(tok)
		if err != nil {
			return err
		}
		return c.Remember(v, a)
	}
	if err := use(); err != nil {
		t.Fatal(err)
	}
	for _, at := range []time.Duration{time.Second, AssertionLifetime, AssertionLifetime + DefaultLeeway - time.Nanosecond} {
		now = t0.Add(at)
		if err := use(); !errors.Is(err, ErrReplayed) {
			t.Fatalf("at +%v: %v, want a replay", at, err)
		}
	}
	now = t0.Add(AssertionLifetime + DefaultLeeway)
	if err := use(); err == nil || !strings.HasPrefix(err.Error(), "assertion expired at") {
		t.Fatalf("after expiry: %v", err)
	}
}

func BenchmarkSignAssertion(b *testing.B) {
	g := newTestGateway(b)
	o := AssertionOptions{Caller: testCaller(), Cluster: "prod", Session: "0123456789abcdef0123456789abcdef", Request: testBinding}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := g.key.SignAssertion(o); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyAssertion(b *testing.B) {
	g := newTestGateway(b)
	tok := g.sign(b, func(o *AssertionOptions) { o.Now = time.Now() })
	v, err := NewAssertionVerifier(AssertionVerifierConfig{Keys: g.keys})
	if err != nil {
		b.Fatal(err)
	}
	c := NewReplayCache(0)
	b.ReportAllocs()
	for b.Loop() {
		a, err := v.Verify(tok)
		if err != nil {
			b.Fatal(err)
		}
		if err := a.Check("prod", a.Session, testBinding); err != nil {
			b.Fatal(err)
		}
		c.Add([16]byte{}, time.Now(), time.Now()) // the cache's cost, kept at one entry
	}
	b.ReportMetric(float64(len(tok)), "assertion-bytes")
}

// TestAssertionsAndCredentialsDoNotMix: the gateway's key signs connector credentials too; a connector holds its
// own, and neither kind passes for the other.
func TestAssertionsAndCredentialsDoNotMix(t *testing.T) {
	g := newTestGateway(t)
	join := baseClaims(AudienceConnector)
	cred, _, err := g.key.IssueConnectorCredential(CredentialOptions{Identity: "key-thumbprint", Join: join, TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.verifier(t, t0).Verify(cred); err == nil || err.Error() != `not a gateway assertion: its typ header is "warren-connector-credential+jwt", want "warren-assertion+jwt"` {
		t.Errorf("a connector credential as an assertion: %v", err)
	}
	if _, err := g.key.VerifyConnectorCredential(g.sign(t, nil), t0); err == nil || err.Error() != `token of type "warren-assertion+jwt" is not a connector credential` {
		t.Errorf("an assertion as a connector credential: %v", err)
	}
}
