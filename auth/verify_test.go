package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var t0 = time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)

type testIssuer struct {
	key  *SigningKey
	pub  ed25519.PublicKey
	keys *StaticKeys
	dir  string
}

// newIssuer generates a real key pair on disk and loads it back, as the binaries do.
func newIssuer(t testing.TB) *testIssuer {
	t.Helper()
	dir := t.TempDir()
	if _, err := GenerateKeyPair(dir); err != nil {
		t.Fatal(err)
	}
	key, err := LoadSigningKey(filepath.Join(dir, SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := LoadPublicKeys(filepath.Join(dir, PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return &testIssuer{key: key, pub: key.Key.Public().(ed25519.PublicKey), keys: keys, dir: dir}
}

func (is *testIssuer) caller(t testing.TB, mod func(*IssueOptions)) string {
	t.Helper()
	o := IssueOptions{
		Subject:  "alice",
		Clusters: []string{"prod"},
		Rules:    []Rule{{Verbs: []string{"get"}, Resources: []string{"pods"}}},
		TTL:      15 * time.Minute,
		Now:      func() time.Time { return t0 },
	}
	if mod != nil {
		mod(&o)
	}
	tok, err := is.key.IssueCaller(o)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func verifierAt(t testing.TB, keys KeySet, aud string, now time.Time, mod func(*VerifierConfig)) *Verifier {
	t.Helper()
	c := VerifierConfig{Keys: keys, Audience: aud, Now: func() time.Time { return now }}
	if mod != nil {
		mod(&c)
	}
	v, err := NewVerifier(c)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// signRaw signs arbitrary claims and headers with key and method.
func signRaw(t testing.TB, m jwt.SigningMethod, key any, claims jwt.Claims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	for k, v := range header {
		if v == nil {
			delete(tok.Header, k)
		} else {
			tok.Header[k] = v
		}
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func baseClaims(aud ...string) *Claims {
	return &Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: DefaultIssuer, Subject: "alice", Audience: aud, ID: "0123456789abcdef0123456789abcdef",
			IssuedAt: jwt.NewNumericDate(t0), NotBefore: jwt.NewNumericDate(t0), ExpiresAt: jwt.NewNumericDate(t0.Add(time.Hour)),
		},
		Warren: Scope{Clusters: []string{"prod"}, Rules: []Rule{{Verbs: []string{"get"}, Resources: []string{"pods"}}}},
	}
}

// tamper replaces the payload of a signed token, keeping header and signature.
func tamper(t testing.TB, tok string, mod func(map[string]any)) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	mod(m)
	raw, _ = json.Marshal(m)
	parts[1] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

func TestVerify(t *testing.T) {
	is := newIssuer(t)
	other := newIssuer(t)
	pubPEM, err := os.ReadFile(filepath.Join(is.dir, PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecKID, _ := KeyID(&ecKey.PublicKey)
	ecKeys, _ := NewStaticKeys(is.pub, &ecKey.PublicKey)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaKID, _ := KeyID(&rsaKey.PublicKey)
	weakRSA, _ := rsa.GenerateKey(rand.Reader, 1024)
	weakKID, _ := KeyID(&weakRSA.PublicKey)
	rsaKeys, _ := NewStaticKeys(&rsaKey.PublicKey, &weakRSA.PublicKey)
	kid := is.key.KeyID
	connTok, err := is.key.IssueConnector("prod", 24*time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		token   string
		aud     string
		at      time.Time
		cfg     func(*VerifierConfig)
		keys    KeySet
		wantErr string // substring of the error; "" means the token verifies
		cause   error  // if set, errors.Is(err, cause) must hold too
	}{
		{name: "round trip", token: is.caller(t, nil), at: t0.Add(time.Minute)},
		{name: "at issue time", token: is.caller(t, nil), at: t0},
		{name: "expired", token: is.caller(t, nil), at: t0.Add(16 * time.Minute),
			wantErr: "token expired at 2026-11-25T09:15:00Z", cause: jwt.ErrTokenExpired},
		{name: "expired within leeway", token: is.caller(t, nil), at: t0.Add(15*time.Minute + 29*time.Second)},
		{name: "expired just past leeway", token: is.caller(t, nil), at: t0.Add(15*time.Minute + 30*time.Second),
			wantErr: "token expired at"},
		{name: "custom leeway", token: is.caller(t, nil), at: t0.Add(15*time.Minute + 2*time.Minute),
			cfg: func(c *VerifierConfig) { c.Leeway = 5 * time.Minute }},
		{name: "negative leeway is none", token: is.caller(t, nil), at: t0.Add(15*time.Minute + time.Second),
			cfg: func(c *VerifierConfig) { c.Leeway = -1 }, wantErr: "token expired"},
		{name: "not yet valid", token: signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, func() *Claims {
			c := baseClaims(AudienceCaller)
			c.NotBefore = jwt.NewNumericDate(t0.Add(10 * time.Minute))
			return c
		}(), map[string]any{"kid": kid}), at: t0, wantErr: "token not valid before 2026-11-25T09:10:00Z", cause: jwt.ErrTokenNotValidYet},
		{name: "not yet valid within leeway", token: is.caller(t, nil), at: t0.Add(-20 * time.Second)},
		{name: "issued in the future", token: is.caller(t, nil), at: t0.Add(-time.Minute), wantErr: "not valid before"},
		{name: "no exp", token: signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, func() *Claims {
			c := baseClaims(AudienceCaller)
			c.ExpiresAt = nil
			return c
		}(), map[string]any{"kid": kid}), at: t0, wantErr: "token has no expiry"},
		{name: "wrong audience", token: signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, baseClaims("kubernetes"), map[string]any{"kid": kid}),
			at: t0, wantErr: `token audience [kubernetes] does not include "warren"`, cause: jwt.ErrTokenInvalidAudience},
		{name: "missing audience", token: signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, baseClaims(), map[string]any{"kid": kid}),
			at: t0, wantErr: `token has no audience; it must include "warren"`},
		{name: "mixed audiences", token: signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, baseClaims(AudienceCaller, AudienceConnector), map[string]any{"kid": kid}),
			at: t0, wantErr: "mixes"},
		{name: "connector token used as caller", token: connTok, at: t0,
			wantErr: `token audience [warren-connector] does not include "warren"`},
		{name: "caller token used as connector", token: is.caller(t, nil), aud: AudienceConnector, at: t0,
			wantErr: `token audience [warren] does not include "warren-connector"`},
		{name: "connector token as connector", token: connTok, aud: AudienceConnector, at: t0.Add(23 * time.Hour)},
		{name: "connector token with two clusters", aud: AudienceConnector, at: t0, token: signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, func() *Claims {
			c := baseClaims(AudienceConnector)
			c.Warren = Scope{Clusters: []string{"a", "b"}}
			return c
		}(), map[string]any{"kid": kid}), wantErr: "exactly one cluster"},
		{name: "connector token with no cluster", aud: AudienceConnector, at: t0, token: signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, func() *Claims {
			c := baseClaims(AudienceConnector)
			c.Warren = Scope{}
			return c
		}(), map[string]any{"kid": kid}), wantErr: "grants no clusters"},
		{name: "alg none", at: t0, token: signRaw(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, baseClaims(AudienceCaller),
			map[string]any{"kid": kid}), wantErr: `token algorithm "none" is not allowed`},
		{name: "alg none without signature part", at: t0, token: func() string {
			h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"` + kid + `"}`))
			p, _ := json.Marshal(baseClaims(AudienceCaller))
			return h + "." + base64.RawURLEncoding.EncodeToString(p) + "."
		}(), wantErr: `token algorithm "none" is not allowed`},
		{name: "HS256 signed with the public key PEM", at: t0, token: signRaw(t, jwt.SigningMethodHS256, pubPEM, baseClaims(AudienceCaller),
			map[string]any{"kid": kid}), wantErr: `token algorithm "HS256" is not allowed`},
		{name: "HS256 signed with the raw public key", at: t0, token: signRaw(t, jwt.SigningMethodHS256, []byte(is.pub), baseClaims(AudienceCaller),
			map[string]any{"kid": kid}), wantErr: `token algorithm "HS256" is not allowed`},
		{name: "unknown alg", at: t0, token: func() string {
			h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"XS999","kid":"` + kid + `"}`))
			return h + ".e30.AAAA"
		}(), wantErr: `token algorithm "XS999" is not allowed`},
		{name: "ES256 not allowed by default", at: t0, keys: ecKeys, token: signRaw(t, jwt.SigningMethodES256, ecKey, baseClaims(AudienceCaller),
			map[string]any{"kid": ecKID}), wantErr: `token algorithm "ES256" is not allowed`},
		{name: "ES256 when allowed", at: t0, keys: ecKeys, cfg: func(c *VerifierConfig) { c.Algorithms = []string{AlgEdDSA, AlgES256} },
			token: signRaw(t, jwt.SigningMethodES256, ecKey, baseClaims(AudienceCaller), map[string]any{"kid": ecKID})},
		{name: "EdDSA header naming an EC key", at: t0, keys: ecKeys, cfg: func(c *VerifierConfig) { c.Algorithms = []string{AlgEdDSA, AlgES256} },
			token:   signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, baseClaims(AudienceCaller), map[string]any{"kid": ecKID}),
			wantErr: "does not match key"},
		{name: "RS256 not allowed by default", at: t0, keys: rsaKeys, token: signRaw(t, jwt.SigningMethodRS256, rsaKey, baseClaims(AudienceCaller),
			map[string]any{"kid": rsaKID}), wantErr: `token algorithm "RS256" is not allowed`},
		{name: "RS256 when allowed", at: t0, keys: rsaKeys, cfg: func(c *VerifierConfig) { c.Algorithms = []string{AlgRS256} },
			token: signRaw(t, jwt.SigningMethodRS256, rsaKey, baseClaims(AudienceCaller), map[string]any{"kid": rsaKID})},
		{name: "RS256 with a 1024-bit key", at: t0, keys: rsaKeys, cfg: func(c *VerifierConfig) { c.Algorithms = []string{AlgRS256} },
			token:   signRaw(t, jwt.SigningMethodRS256, weakRSA, baseClaims(AudienceCaller), map[string]any{"kid": weakKID}),
			wantErr: "does not match key"},
		{name: "PS256 never", at: t0, keys: rsaKeys, cfg: func(c *VerifierConfig) { c.Algorithms = []string{AlgRS256} },
			token:   signRaw(t, jwt.SigningMethodPS256, rsaKey, baseClaims(AudienceCaller), map[string]any{"kid": rsaKID}),
			wantErr: `token algorithm "PS256" is not allowed`},
		{name: "tampered payload", at: t0, token: tamper(t, is.caller(t, nil), func(m map[string]any) {
			m["warren"].(map[string]any)["clusters"] = []string{"prod", "other"}
		}), wantErr: "token signature is invalid", cause: jwt.ErrTokenSignatureInvalid},
		{name: "tampered expiry", at: t0.Add(time.Hour), token: tamper(t, is.caller(t, nil), func(m map[string]any) {
			m["exp"] = t0.Add(48 * time.Hour).Unix()
		}), wantErr: "token signature is invalid"},
		{name: "truncated signature", at: t0, token: is.caller(t, nil)[:len(is.caller(t, nil))-4], wantErr: "token signature is invalid"},
		{name: "no kid", at: t0, token: signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, baseClaims(AudienceCaller), nil),
			wantErr: "token has no key id"},
		{name: "numeric kid", at: t0, token: signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, baseClaims(AudienceCaller), map[string]any{"kid": 7}),
			wantErr: "must be a non-empty string"},
		{name: "unknown kid", at: t0, token: signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, baseClaims(AudienceCaller), map[string]any{"kid": "abc"}),
			wantErr: `token is signed by unknown key id "abc"`},
		{name: "kid path injection", at: t0, token: signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, baseClaims(AudienceCaller),
			map[string]any{"kid": "../../" + PublicKeyFile}), wantErr: `unknown key id "../../signing.pub"`},
		{name: "kid very long", at: t0, token: signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, baseClaims(AudienceCaller),
			map[string]any{"kid": strings.Repeat("k", 10000)}), wantErr: `unknown key id "kkkkkkkk`},
		{name: "kid with control characters", at: t0, token: signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, baseClaims(AudienceCaller),
			map[string]any{"kid": kid + "\n"}), wantErr: "unknown key id"},
		{name: "unknown key with a known kid", at: t0, token: signRaw(t, jwt.SigningMethodEdDSA, other.key.Key, baseClaims(AudienceCaller),
			map[string]any{"kid": kid}), wantErr: "token signature is invalid"},
		{name: "other issuer's key", at: t0, token: other.caller(t, nil), wantErr: "unknown key id"},
		{name: "crit header", at: t0, token: signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, baseClaims(AudienceCaller),
			map[string]any{"kid": kid, "crit": []string{"exp"}}), wantErr: `"crit"`},
		{name: "lifetime over maximum", at: t0, cfg: func(c *VerifierConfig) { c.MaxLifetime = 24 * time.Hour },
			token: is.caller(t, func(o *IssueOptions) { o.TTL = 48 * time.Hour }), wantErr: "token lifetime 48h0m0s exceeds the maximum 24h0m0s"},
		{name: "lifetime at maximum", at: t0, cfg: func(c *VerifierConfig) { c.MaxLifetime = 24 * time.Hour },
			token: is.caller(t, func(o *IssueOptions) { o.TTL = 24 * time.Hour })},
		{name: "issuer mismatch", at: t0, cfg: func(c *VerifierConfig) { c.Issuer = "corp" }, token: is.caller(t, nil),
			wantErr: `token issuer "warren" is not trusted (want "corp")`},
		{name: "issuer match", at: t0, cfg: func(c *VerifierConfig) { c.Issuer = "corp" },
			token: is.caller(t, func(o *IssueOptions) { o.Issuer = "corp" })},
		{name: "revoked", at: t0, cfg: func(c *VerifierConfig) { c.Revoked = func(string) bool { return true } },
			token: is.caller(t, nil), wantErr: "has been revoked"},
		{name: "invalid rule in token", at: t0, token: signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, func() *Claims {
			c := baseClaims(AudienceCaller)
			c.Warren.Rules = []Rule{{Verbs: []string{"get"}}}
			return c
		}(), map[string]any{"kid": kid}), wantErr: "warren.rules[0]: no resources"},
		{name: "invalid cluster in token", at: t0, token: signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, func() *Claims {
			c := baseClaims(AudienceCaller)
			c.Warren.Clusters = []string{"../x"}
			return c
		}(), map[string]any{"kid": kid}), wantErr: "invalid cluster name"},
		{name: "empty", at: t0, token: "", wantErr: "token is empty"},
		{name: "one part", at: t0, token: "abc", wantErr: "malformed token"},
		{name: "four parts", at: t0, token: "a.b.c.d", wantErr: "malformed token"},
		{name: "bad base64 header", at: t0, token: "!!!.e30.AAAA", wantErr: "malformed token"},
		{name: "header not JSON", at: t0, token: base64.RawURLEncoding.EncodeToString([]byte("nope")) + ".e30.AAAA", wantErr: "malformed token"},
		{name: "exp of the wrong type", at: t0, token: func() string {
			h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"EdDSA","kid":"` + kid + `"}`))
			return h + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":"soon","aud":"warren"}`)) + ".AAAA"
		}(), wantErr: "malformed token"},
		{name: "too long", at: t0, token: strings.Repeat("a", MaxTokenBytes+1), wantErr: "malformed token: longer than"},
		{name: "bearer prefix left in", at: t0, token: "Bearer " + is.caller(t, nil), wantErr: "malformed token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			aud := tc.aud
			if aud == "" {
				aud = AudienceCaller
			}
			keys := tc.keys
			if keys == nil {
				keys = is.keys
			}
			v := verifierAt(t, keys, aud, tc.at, tc.cfg)
			c, err := v.Verify(tc.token)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if !c.HasCluster(c.Warren.Clusters[0]) || c.Subject == "" || len(c.Audience) != 1 || c.Audience[0] != aud {
					t.Fatalf("unexpected claims %+v", c)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify succeeded, want error containing %q", tc.wantErr)
			}
			if c != nil {
				t.Errorf("claims returned with an error")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q, want it to contain %q", err, tc.wantErr)
			}
			if !errors.Is(err, ErrInvalidToken) {
				t.Errorf("errors.Is(%q, ErrInvalidToken) = false", err)
			}
			if tc.cause != nil && !errors.Is(err, tc.cause) {
				t.Errorf("errors.Is(%q, %v) = false", err, tc.cause)
			}
			if len(err.Error()) > 300 || strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not a short sentence: %q", err)
			}
		})
	}
}

func TestIssueCallerClaims(t *testing.T) {
	is := newIssuer(t)
	rules := []Rule{
		{Verbs: []string{"get", "list"}, APIGroups: []string{""}, Resources: []string{"pods"}, Namespaces: []string{"*"}},
		{Verbs: []string{"create"}, APIGroups: []string{""}, Resources: []string{"pods/exec"}, Namespaces: []string{"payments"}, Names: []string{"api-7f9c"}},
	}
	tok := is.caller(t, func(o *IssueOptions) {
		o.Clusters = []string{"prod-eks", "stage"}
		o.MultiCluster = true
		o.Rules = rules
	})
	c, err := verifierAt(t, is.keys, AudienceCaller, t0, func(c *VerifierConfig) { c.AllowMultiCluster = true }).Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Issuer != DefaultIssuer || c.Subject != "alice" || !c.IssuedAt.Equal(t0) || !c.NotBefore.Equal(t0) ||
		!c.ExpiresAt.Equal(t0.Add(15*time.Minute)) || len(c.ID) != 32 {
		t.Errorf("registered claims: %+v", c.RegisteredClaims)
	}
	if !c.HasCluster("prod-eks") || !c.HasCluster("stage") || c.HasCluster("prod") || c.HasCluster("") {
		t.Errorf("clusters: %v", c.Warren.Clusters)
	}
	got, _ := json.Marshal(c.Warren.Rules)
	want, _ := json.Marshal(rules)
	if string(got) != string(want) {
		t.Errorf("rules %s, want %s", got, want)
	}
	// Header: EdDSA and the kid.
	h, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	var hdr map[string]any
	json.Unmarshal(h, &hdr)
	if hdr["alg"] != "EdDSA" || hdr["kid"] != is.key.KeyID {
		t.Errorf("header %v", hdr)
	}
	// Token ids are random.
	if tok2 := is.caller(t, nil); tok2 == tok {
		t.Error("two tokens are identical")
	}
	var nilClaims *Claims
	if nilClaims.HasCluster("prod") {
		t.Error("nil claims have a cluster")
	}
}

func TestIssueErrors(t *testing.T) {
	is := newIssuer(t)
	good := func() IssueOptions {
		return IssueOptions{Subject: "s", Clusters: []string{"c"}, Rules: []Rule{{Verbs: []string{"get"}, Resources: []string{"pods"}}}, TTL: time.Minute}
	}
	tests := []struct {
		name string
		mod  func(*IssueOptions)
		want string
	}{
		{"no subject", func(o *IssueOptions) { o.Subject = "" }, "subject"},
		{"no cluster", func(o *IssueOptions) { o.Clusters = nil }, "at least one cluster"},
		{"bad cluster", func(o *IssueOptions) { o.Clusters = []string{"a/b"} }, "invalid cluster name"},
		{"no rules", func(o *IssueOptions) { o.Rules = nil }, "at least one rule"},
		{"bad rule", func(o *IssueOptions) { o.Rules = []Rule{{Verbs: []string{"fly"}, Resources: []string{"pods"}}} }, `unknown verb "fly"`},
		{"zero ttl", func(o *IssueOptions) { o.TTL = 0 }, "lifetime must be positive"},
		{"two clusters without asking", func(o *IssueOptions) { o.Clusters = []string{"a", "b"} },
			"a token for 2 clusters works at each of them, so one leak reaches them all: issue one token per cluster, or ask for several explicitly (MultiCluster, --multi-cluster)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := good()
			tc.mod(&o)
			_, err := is.key.IssueCaller(o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := is.key.IssueConnector("", time.Hour, t0); err == nil {
		t.Error("connector token without a cluster")
	}
	if _, err := is.key.IssueConnector("c", 0, t0); err == nil {
		t.Error("connector token without a lifetime")
	}
}

// TestMultiClusterTokens: a caller token for several clusters is refused unless the verifier accepts them; signed
// by hand (as another issuer would), so that only the verifier's rule is tested.
func TestMultiClusterTokens(t *testing.T) {
	is := newIssuer(t)
	c := baseClaims(AudienceCaller)
	c.Warren.Clusters = []string{"prod", "staging"}
	multi := signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, c, map[string]any{"kid": is.key.KeyID})
	_, err := verifierAt(t, is.keys, AudienceCaller, t0, nil).Verify(multi)
	const want = `token names 2 clusters [prod staging]; this gateway accepts caller tokens for one cluster only: issue one token per cluster, or start the gateway with --allow-multi-cluster-tokens`
	if err == nil || err.Error() != want || !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("multi-cluster token: %v\nwant %s", err, want)
	}
	got, err := verifierAt(t, is.keys, AudienceCaller, t0, func(c *VerifierConfig) { c.AllowMultiCluster = true }).Verify(multi)
	if err != nil || !got.HasCluster("staging") {
		t.Fatalf("with AllowMultiCluster: %+v, %v", got, err)
	}
	// One cluster is what every token is by default.
	if _, err := verifierAt(t, is.keys, AudienceCaller, t0, nil).Verify(is.caller(t, nil)); err != nil {
		t.Fatal(err)
	}
}

func TestConnectorClaims(t *testing.T) {
	is := newIssuer(t)
	tok, err := is.key.IssueConnector("prod-eks", 8760*time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := verifierAt(t, is.keys, AudienceConnector, t0.Add(time.Hour), nil).Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "connector:prod-eks" || len(c.Warren.Clusters) != 1 || !c.HasCluster("prod-eks") || len(c.Warren.Rules) != 0 {
		t.Errorf("claims %+v", c)
	}
}

func TestNewVerifierErrors(t *testing.T) {
	is := newIssuer(t)
	for _, c := range []VerifierConfig{
		{Audience: AudienceCaller},
		{Keys: is.keys},
		{Keys: is.keys, Audience: AudienceCaller, Algorithms: []string{"none"}},
		{Keys: is.keys, Audience: AudienceCaller, Algorithms: []string{"HS256"}},
	} {
		if _, err := NewVerifier(c); err == nil {
			t.Errorf("NewVerifier(%+v) succeeded", c)
		}
	}
}

func TestKeys(t *testing.T) {
	dir := t.TempDir()
	kid, err := GenerateKeyPair(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{SigningKeyFile: 0o600, PublicKeyFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	if _, err := GenerateKeyPair(dir); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("second keygen: %v", err)
	}
	// A leftover public key alone also blocks keygen, and nothing is written.
	dir2 := t.TempDir()
	os.WriteFile(filepath.Join(dir2, PublicKeyFile), []byte("x"), 0o644)
	if _, err := GenerateKeyPair(dir2); err == nil {
		t.Error("keygen over an existing public key")
	}
	if _, err := os.Stat(filepath.Join(dir2, SigningKeyFile)); err == nil {
		t.Error("private key written although keygen failed")
	}
	// Keygen creates a missing directory.
	if _, err := GenerateKeyPair(filepath.Join(dir2, "sub", "dir")); err != nil {
		t.Error(err)
	}

	sk, err := LoadSigningKey(filepath.Join(dir, SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if sk.KeyID != kid {
		t.Errorf("loaded kid %s, keygen printed %s", sk.KeyID, kid)
	}
	ks, err := LoadPublicKeys(filepath.Join(dir, PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ks.Key(kid); !ok || len(ks.KeyIDs()) != 1 {
		t.Errorf("public key set %v lacks %s", ks.KeyIDs(), kid)
	}

	_, err = LoadPublicKeys(filepath.Join(dir, "missing.pub"))
	if err == nil || !strings.Contains(err.Error(), "missing.pub") || !strings.Contains(err.Error(), "warren keygen") {
		t.Errorf("missing public key file: %v", err)
	}
	_, err = LoadSigningKey(filepath.Join(dir, "missing.key"))
	if err == nil || !strings.Contains(err.Error(), "missing.key") || !strings.Contains(err.Error(), "warren keygen") {
		t.Errorf("missing signing key file: %v", err)
	}
	if _, err := LoadSigningKey(filepath.Join(dir, PublicKeyFile)); err == nil {
		t.Error("loaded a public key as signing key")
	}
	if _, err := LoadPublicKeys(filepath.Join(dir, SigningKeyFile)); err == nil {
		t.Error("loaded a private key as public key")
	}
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("hello"), 0o600)
	if _, err := LoadPublicKeys(garbage); err == nil {
		t.Error("loaded garbage as public key")
	}
	// An EC signing key is refused (warren signs with Ed25519).
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecPath := filepath.Join(dir, "ec.key")
	os.WriteFile(ecPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	if _, err := LoadSigningKey(ecPath); err == nil || !strings.Contains(err.Error(), "Ed25519") {
		t.Errorf("EC signing key: %v", err)
	}
	// Several keys in one file, each under its own id.
	pubDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	both := append(mustRead(t, filepath.Join(dir, PublicKeyFile)), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})...)
	bothPath := filepath.Join(dir, "both.pub")
	os.WriteFile(bothPath, both, 0o644)
	ks, err = LoadPublicKeys(bothPath)
	if err != nil || len(ks.KeyIDs()) != 2 {
		t.Errorf("two keys: %v %v", err, ks)
	}
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKeyIDRFC7638 checks the thumbprint against the RFC 7638 example (RSA) and RFC 8037 appendix A.3 (Ed25519).
func TestKeyIDRFC7638(t *testing.T) {
	x, _ := base64.RawURLEncoding.DecodeString("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
	got, err := KeyID(ed25519.PublicKey(x))
	if err != nil || got != "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k" {
		t.Errorf("Ed25519 thumbprint %q %v", got, err)
	}
	n, _ := base64.RawURLEncoding.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	pub := &rsaPub{n: n, e: 65537}
	got, err = KeyID(pub.key())
	if err != nil || got != "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs" {
		t.Errorf("RSA thumbprint %q %v", got, err)
	}
	if _, err := KeyID("not a key"); err == nil {
		t.Error("thumbprint of a string")
	}
}
