package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func newConnectorKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestProof(t *testing.T) {
	key := newConnectorKey(t)
	other := newConnectorKey(t)
	const tok = "the.credential.token"
	want := ProofRequest{Method: "GET", Host: "gw.example.com", Path: "/connect", Token: tok, Now: t0, Window: time.Minute}
	mk := func(t *testing.T, k ed25519.PrivateKey, method, url, token string, at time.Time) string {
		t.Helper()
		p, err := NewProof(k, method, url, token, at)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	jwk := func(k ed25519.PrivateKey) map[string]any {
		return map[string]any{"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(k.Public().(ed25519.PublicKey))}
	}
	claims := func() *ProofClaims {
		return &ProofClaims{ID: "p1", Method: "GET", URL: "https://gw.example.com/connect", IssuedAt: jwt.NewNumericDate(t0), TokenHash: TokenHash(tok)}
	}
	good := mk(t, key, "GET", "https://gw.example.com/connect?x=1#f", tok, t0)
	p, err := VerifyProof(good, want)
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := KeyID(key.Public())
	if p.KeyID != kid || p.ID == "" || !p.IssuedAt.Equal(t0) {
		t.Fatalf("proof %+v, want key %s", p, kid)
	}
	// Behind a proxy that strips a path prefix, and on the explicit default port.
	if _, err := VerifyProof(mk(t, key, "GET", "https://GW.example.com:443/warren/connect", tok, t0), want); err != nil {
		t.Fatalf("prefixed path, default port: %v", err)
	}

	// The signature is the key in its own header: swapping in another key's jwk breaks it.
	swapped := signRaw(t, jwt.SigningMethodEdDSA, other, claims(), map[string]any{"typ": ProofType, "jwk": jwk(key)})
	withPrivate := jwk(key)
	withPrivate["d"] = base64.RawURLEncoding.EncodeToString(key.Seed())
	cases := []struct {
		name, proof string
		want        ProofRequest
		err         string
	}{
		{"empty", "", want, "no proof of possession (DPoP header)"},
		{"garbage", "a.b.c", want, "malformed proof of possession: want a dpop+jwt JWT signed with the connector's key"},
		{"huge", strings.Repeat("a", MaxProofBytes+1), want, "malformed proof of possession: longer than 4096 bytes"},
		{"other method", mk(t, key, "POST", "https://gw.example.com/connect", tok, t0), want, `proof of possession is for method "POST", the request is GET`},
		{"other host", mk(t, key, "GET", "https://evil.example.com/connect", tok, t0), want,
			`proof of possession is for https://evil.example.com/connect, not for this request (host "gw.example.com", path "/connect")`},
		{"other path", mk(t, key, "GET", "https://gw.example.com/connect/join", tok, t0), want,
			`proof of possession is for https://gw.example.com/connect/join, not for this request (host "gw.example.com", path "/connect")`},
		{"suffix is not a segment", mk(t, key, "GET", "https://gw.example.com/xconnect", tok, t0), want,
			`proof of possession is for https://gw.example.com/xconnect, not for this request (host "gw.example.com", path "/connect")`},
		{"other token", mk(t, key, "GET", "https://gw.example.com/connect", "another.token.x", t0), want,
			"proof of possession is for another token (ath does not match the token sent with it)"},
		{"too old", mk(t, key, "GET", "https://gw.example.com/connect", tok, t0.Add(-61*time.Second)), want,
			"proof of possession was issued at 2026-11-25T08:58:59Z, more than 1m0s from the gateway's time 2026-11-25T09:00:00Z: check the connector's clock"},
		{"from the future", mk(t, key, "GET", "https://gw.example.com/connect", tok, t0.Add(2*time.Minute)), want,
			"proof of possession was issued at 2026-11-25T09:02:00Z, more than 1m0s from the gateway's time 2026-11-25T09:00:00Z: check the connector's clock"},
		{"signed by another key", swapped, want, "proof of possession signature is invalid"},
		{"private key sent", signRaw(t, jwt.SigningMethodEdDSA, key, claims(), map[string]any{"typ": ProofType, "jwk": withPrivate}), want,
			"proof of possession jwk header holds a private key: never send it"},
		{"no jwk", signRaw(t, jwt.SigningMethodEdDSA, key, claims(), map[string]any{"typ": ProofType}), want,
			"proof of possession has no public key (jwk header)"},
		{"wrong type", signRaw(t, jwt.SigningMethodEdDSA, key, claims(), map[string]any{"typ": "JWT", "jwk": jwk(key)}), want,
			`proof of possession has type "JWT", want "dpop+jwt"`},
		{"hmac", signRaw(t, jwt.SigningMethodHS256, []byte("k"), claims(), map[string]any{"typ": ProofType, "jwk": jwk(key)}), want,
			`proof of possession algorithm "HS256" is not allowed: sign it with EdDSA (Ed25519)`},
		{"none", func() string {
			tk := jwt.NewWithClaims(jwt.SigningMethodNone, claims())
			tk.Header["typ"], tk.Header["jwk"] = ProofType, jwk(key)
			s, _ := tk.SignedString(jwt.UnsafeAllowNoneSignatureType)
			return s
		}(), want, `proof of possession algorithm "none" is not allowed: sign it with EdDSA (Ed25519)`},
		{"rsa key type", signRaw(t, jwt.SigningMethodEdDSA, key, claims(), map[string]any{"typ": ProofType, "jwk": map[string]any{"kty": "RSA", "n": "x", "e": "AQAB"}}), want,
			`proof of possession key is "RSA"/"", want an Ed25519 key (OKP/Ed25519)`},
		{"short key", signRaw(t, jwt.SigningMethodEdDSA, key, claims(), map[string]any{"typ": ProofType, "jwk": map[string]any{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}}), want,
			"proof of possession key: x is not a base64url Ed25519 public key"},
		{"crit", signRaw(t, jwt.SigningMethodEdDSA, key, claims(), map[string]any{"typ": ProofType, "jwk": jwk(key), "crit": []string{"x"}}), want,
			`malformed proof of possession: header parameter "crit" is not supported`},
		{"no jti", signRaw(t, jwt.SigningMethodEdDSA, key, func() *ProofClaims { c := claims(); c.ID = ""; return c }(), map[string]any{"typ": ProofType, "jwk": jwk(key)}), want,
			"proof of possession needs an id (jti) of at most 128 bytes"},
		{"no iat", signRaw(t, jwt.SigningMethodEdDSA, key, func() *ProofClaims { c := claims(); c.IssuedAt = nil; return c }(), map[string]any{"typ": ProofType, "jwk": jwk(key)}), want,
			"proof of possession has no issue time (iat)"},
		{"query in htu", signRaw(t, jwt.SigningMethodEdDSA, key, func() *ProofClaims { c := claims(); c.URL += "?a=b"; return c }(), map[string]any{"typ": ProofType, "jwk": jwk(key)}), want,
			`proof of possession URL (htu) "https://gw.example.com/connect?a=b" is not an https URL without query`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := VerifyProof(c.proof, c.want)
			if err == nil {
				t.Fatalf("accepted: %+v", p)
			}
			if !errors.Is(err, ErrInvalidToken) || err.Error() != c.err {
				t.Fatalf("error %q, want %q", err, c.err)
			}
		})
	}
}

func TestConnectorCredential(t *testing.T) {
	gw := newIssuer(t) // the gateway's own key
	is := newIssuer(t) // the operator's, which signs join tokens
	joinTok, err := is.key.IssueConnector("prod", 24*time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	join, err := verifierAt(t, is.keys, AudienceConnector, t0, nil).Verify(joinTok)
	if err != nil {
		t.Fatal(err)
	}
	if join.KeyID != is.key.KeyID {
		t.Fatalf("Verify set KeyID %q, want %q", join.KeyID, is.key.KeyID)
	}
	tok, c, err := gw.key.IssueConnectorCredential(CredentialOptions{Identity: "thumb", Join: join, TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	got, err := gw.key.VerifyConnectorCredential(tok, t0.Add(59*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != c.ID || got.Cluster != "prod" || got.Confirmation.KeyThumbprint != "thumb" || got.Join.ID != join.ID ||
		got.Join.KeyID != is.key.KeyID || !got.ExpiresAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("credential claims %+v", got)
	}
	// Never past the join token.
	_, short, err := gw.key.IssueConnectorCredential(CredentialOptions{Identity: "thumb", Join: join, TTL: 48 * time.Hour, Now: t0})
	if err != nil || !short.ExpiresAt.Equal(t0.Add(24*time.Hour)) {
		t.Fatalf("credential past the join token: %v %v", short.ExpiresAt, err)
	}

	// A token the gateway signed for another purpose is no credential, nor is one from another key.
	otherPurpose := signRaw(t, jwt.SigningMethodEdDSA, gw.key.Key, &c.RegisteredClaims, map[string]any{"kid": gw.key.KeyID})
	foreign, _, _ := is.key.IssueConnectorCredential(CredentialOptions{Identity: "thumb", Join: join, TTL: time.Hour, Now: t0})
	cases := []struct {
		name, tok string
		at        time.Time
		err       string
	}{
		{"expired", tok, t0.Add(time.Hour + time.Second), "connector credential expired at 2026-11-25T10:00:00Z"},
		{"join token as credential", joinTok, t0, `token of type "JWT" is not a connector credential`},
		{"other purpose", otherPurpose, t0, `token of type "JWT" is not a connector credential`},
		{"another gateway's key", foreign, t0, `connector credential is signed by key "` + is.key.KeyID + `", not by this gateway's key "` + gw.key.KeyID + `" (the gateway restarted with another key?)`},
		{"tampered", tamper(t, tok, func(m map[string]any) { m["cluster"] = "other" }), t0, "connector credential signature is invalid"},
		{"empty", "", t0, "no connector credential"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := gw.key.VerifyConnectorCredential(c.tok, c.at); err == nil || !errors.Is(err, ErrInvalidToken) || err.Error() != c.err {
				t.Fatalf("error %v, want %q", err, c.err)
			}
		})
	}
}

func TestRecheck(t *testing.T) {
	is := newIssuer(t)
	tok, err := is.key.IssueConnector("prod", time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	revoked := map[string]bool{}
	now := t0
	v := verifierAt(t, is.keys, AudienceConnector, t0, func(c *VerifierConfig) {
		c.Now = func() time.Time { return now }
		c.Revoked = func(id string) bool { return revoked[id] }
	})
	c, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Recheck(c); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	revoked[c.ID] = true
	if err := v.Recheck(c); err == nil || err.Error() != `token "`+c.ID+`" has been revoked` {
		t.Fatalf("revoked: %v", err)
	}
	if !v.Revoked(c.ID) || v.Revoked("other") {
		t.Fatal("Revoked does not follow the list")
	}
	delete(revoked, c.ID)
	now = t0.Add(time.Hour + DefaultLeeway + time.Second)
	if err := v.Recheck(c); err == nil || err.Error() != "token expired at 2026-11-25T10:00:00Z" {
		t.Fatalf("expired: %v", err)
	}
	now = t0
	untrusted := verifierAt(t, newIssuer(t).keys, AudienceConnector, t0, nil)
	if err := untrusted.Recheck(c); err == nil || err.Error() != `token is signed by key id "`+is.key.KeyID+`", which is no longer trusted` {
		t.Fatalf("key removed: %v", err)
	}
	// What a credential records of its join token is enough to re-check it.
	ref := JoinRef{ID: c.ID, KeyID: c.KeyID, ExpiresAt: c.ExpiresAt}.Claims("prod")
	if err := v.Recheck(ref); err != nil {
		t.Fatalf("from a credential's join reference: %v", err)
	}
}

func FuzzVerifyProof(f *testing.F) {
	// A fixed key and proof: every fuzzing process must agree on which one input is genuine.
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	jwk := map[string]any{"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(key.Public().(ed25519.PublicKey))}
	good := signRaw(f, jwt.SigningMethodEdDSA, key, &ProofClaims{ID: "p1", Method: "GET", URL: "https://gw.example.com/connect",
		IssuedAt: jwt.NewNumericDate(t0), TokenHash: TokenHash("tok")}, map[string]any{"typ": ProofType, "jwk": jwk})
	want := ProofRequest{Method: "GET", Host: "gw.example.com", Path: "/connect", Token: "tok", Now: t0, Window: time.Minute}
	genuine, err := VerifyProof(good, want)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-2])
	f.Add("")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Fuzz(func(t *testing.T, proof string) {
		p, err := VerifyProof(proof, want)
		if err == nil {
			// The fuzzer cannot sign: whatever verifies must be the genuine proof, byte for byte.
			if proof != good || *p != *genuine {
				t.Fatalf("forged proof %q verified: %+v", proof, p)
			}
			return
		}
		if !errors.Is(err, ErrInvalidToken) || len(err.Error()) > 400 {
			t.Fatalf("error %q", err)
		}
	})
}
