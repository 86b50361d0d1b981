package gateway

import (
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/warren-dev/warren/auth"
)

// testKeys signs caller and connector tokens that its verifiers accept; gateway is the gateway's own key.
type testKeys struct {
	sk                 *auth.SigningKey
	gateway            *auth.SigningKey
	callers, connector *auth.Verifier
}

func newTestKeys(t testing.TB) testKeys {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := auth.NewSigningKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := auth.NewStaticKeys(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	_, gwPriv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := auth.NewSigningKey(gwPriv)
	if err != nil {
		t.Fatal(err)
	}
	k := testKeys{sk: sk, gateway: gw}
	if k.callers, err = auth.NewVerifier(auth.VerifierConfig{Keys: ks, Audience: auth.AudienceCaller}); err != nil {
		t.Fatal(err)
	}
	if k.connector, err = auth.NewVerifier(auth.VerifierConfig{Keys: ks, Audience: auth.AudienceConnector}); err != nil {
		t.Fatal(err)
	}
	return k
}

func (k testKeys) callerToken(t testing.TB, subject, cluster string, rules ...string) string {
	t.Helper()
	var rs []auth.Rule
	for _, r := range rules {
		rule, err := auth.ParseRule(r)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, rule)
	}
	tok, err := k.sk.IssueCaller(auth.IssueOptions{Subject: subject, Clusters: []string{cluster}, Rules: rs, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (k testKeys) connectorToken(t testing.TB, cluster string) string {
	t.Helper()
	tok, err := k.sk.IssueConnector(cluster, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// newTestGateway returns a Gateway for cluster "prod" (known, no connector), with cfg's fields set by edit.
func newTestGateway(t testing.TB, k testKeys, edit func(*Config)) *Gateway {
	t.Helper()
	cfg := Config{CallerVerifier: k.callers, ConnectorVerifier: k.connector, SigningKey: k.gateway, Clusters: []string{"prod"}}
	if edit != nil {
		edit(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// call serves one request in process and returns the status, the Status message (or the body) and the headers.
func call(g http.Handler, method, target, token string, edit ...func(*http.Request)) (int, string, http.Header) {
	r := httptest.NewRequest(method, target, nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	for _, e := range edit {
		e(r)
	}
	rec := httptest.NewRecorder()
	g.ServeHTTP(rec, r)
	body, _ := io.ReadAll(rec.Body)
	var st struct {
		Kind, Message string
	}
	if json.Unmarshal(body, &st) == nil && st.Kind == "Status" {
		return rec.Code, st.Message, rec.Header()
	}
	return rec.Code, string(body), rec.Header()
}
