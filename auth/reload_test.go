package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"github.com/golang-jwt/jwt/v5"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestJWKSRoundTrip(t *testing.T) {
	ed, _, _ := ed25519.GenerateKey(rand.Reader)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rs, _ := rsa.GenerateKey(rand.Reader, 2048)
	in := map[string]crypto.PublicKey{}
	for _, k := range []crypto.PublicKey{ed, &ec.PublicKey, &rs.PublicKey} {
		kid, err := KeyID(k)
		if err != nil {
			t.Fatal(err)
		}
		in[kid] = k
	}
	data, err := MarshalJWKS(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ParseJWKS(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 3 {
		t.Fatalf("got %d keys", len(out))
	}
	for kid, k := range in {
		got, ok := out[kid]
		if !ok || !got.(interface{ Equal(crypto.PublicKey) bool }).Equal(k) {
			t.Errorf("key %s lost in the round trip", kid)
		}
		// Without "kid" a key is stored under its thumbprint, which is the same id.
		if id, _ := KeyID(got); id != kid {
			t.Errorf("thumbprint %s != %s", id, kid)
		}
	}
	noKid := strings.ReplaceAll(string(data), `"kid":`, `"x-kid":`)
	if out, err := ParseJWKS([]byte(noKid)); err != nil || len(out) != 3 {
		t.Errorf("JWKS without kids: %v %d", err, len(out))
	}

	for name, doc := range map[string]string{
		"not json":      `{`,
		"no keys":       `{}`,
		"private key":   `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}]}`,
		"short x":       `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA"}]}`,
		"unknown kty":   `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`,
		"off curve":     `{"keys":[{"kty":"EC","crv":"P-256","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}`,
		"small rsa":     `{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`,
		"duplicate kid": `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"a"},{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"a"}]}`,
	} {
		if _, err := ParseJWKS([]byte(doc)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	// Encryption keys are skipped, not errors.
	if out, err := ParseJWKS([]byte(`{"keys":[{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}]}`)); err != nil || len(out) != 0 {
		t.Errorf("enc key: %v %v", out, err)
	}
}

// A JWKS file loads like a PEM file and verifies tokens.
func TestLoadPublicKeysJWKS(t *testing.T) {
	is := newIssuer(t)
	data, err := MarshalJWKS(map[string]crypto.PublicKey{is.key.KeyID: is.pub})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "keys.json")
	os.WriteFile(p, data, 0o644)
	keys, err := LoadPublicKeys(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verifierAt(t, keys, AudienceCaller, t0, nil).Verify(is.caller(t, nil)); err != nil {
		t.Fatal(err)
	}
}

// fakeClock is a settable clock.
type fakeClock struct{ t atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.t.Add(int64(d)) }

func TestKeyFilesReload(t *testing.T) {
	a, b := newIssuer(t), newIssuer(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "issuer.pub")
	copyFile(t, filepath.Join(a.dir, PublicKeyFile), path)

	kf, err := NewKeyFiles(time.Second, path)
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{}
	clock.t.Store(time.Now().UnixNano())
	kf.now = clock.now
	if _, ok := kf.Key(a.key.KeyID); !ok {
		t.Fatal("key a missing")
	}
	// Rotate: b's key replaces a's. The change is seen after the check interval.
	writeAndBump(t, path, mustRead(t, filepath.Join(b.dir, PublicKeyFile)))
	if _, ok := kf.Key(a.key.KeyID); !ok {
		t.Fatal("reloaded before the check interval")
	}
	clock.advance(2 * time.Second)
	if _, ok := kf.Key(b.key.KeyID); !ok {
		t.Fatal("rotated key not picked up")
	}
	if _, ok := kf.Key(a.key.KeyID); ok {
		t.Fatal("old key still present")
	}
	// A broken file keeps the previous keys and reports the error.
	writeAndBump(t, path, []byte("garbage"))
	clock.advance(2 * time.Second)
	if _, ok := kf.Key(b.key.KeyID); !ok {
		t.Fatal("broken file dropped the keys")
	}
	if kf.Err() == nil {
		t.Fatal("no error for the broken file")
	}
	// Reload (SIGHUP) reads at once.
	writeAndBump(t, path, append(mustRead(t, filepath.Join(a.dir, PublicKeyFile)), mustRead(t, filepath.Join(b.dir, PublicKeyFile))...))
	if err := kf.Reload(); err != nil {
		t.Fatal(err)
	}
	if len(kf.KeyIDs()) != 2 || kf.Err() != nil {
		t.Fatalf("keys after reload: %v, %v", kf.KeyIDs(), kf.Err())
	}
	if _, err := NewKeyFiles(0, filepath.Join(dir, "missing.pub")); err == nil {
		t.Error("NewKeyFiles with a missing file")
	}
	// KeySets: first match wins, misses fall through.
	sets := KeySets{a.keys, b.keys}
	if _, ok := sets.Key(b.key.KeyID); !ok {
		t.Error("KeySets missed b")
	}
	if _, ok := sets.Key("nope"); ok {
		t.Error("KeySets found nope")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	if err := os.WriteFile(to, mustRead(t, from), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeAndBump writes a file and moves its mtime forward, so a change is visible even on coarse file systems.
func writeAndBump(t *testing.T, path string, data []byte) {
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

func TestRemoteJWKS(t *testing.T) {
	a, b := newIssuer(t), newIssuer(t)
	var current atomic.Value
	current.Store(map[string]crypto.PublicKey{a.key.KeyID: a.pub})
	var hits atomic.Int32
	var fail atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if fail.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		data, _ := MarshalJWKS(current.Load().(map[string]crypto.PublicKey))
		w.Write(data)
	}))
	t.Cleanup(srv.Close)

	r, err := NewRemoteJWKS(context.Background(), srv.URL, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{}
	clock.t.Store(time.Now().UnixNano())
	r.now = clock.now
	r.fetched = clock.now()

	v := verifierAt(t, r, AudienceCaller, t0, nil)
	if _, err := v.Verify(a.caller(t, nil)); err != nil {
		t.Fatal(err)
	}
	// Rotation: an unknown kid refetches, but at most once per MinInterval.
	current.Store(map[string]crypto.PublicKey{a.key.KeyID: a.pub, b.key.KeyID: b.pub})
	if _, err := v.Verify(b.caller(t, nil)); err == nil {
		t.Fatal("refetched within MinInterval")
	}
	clock.advance(2 * time.Minute)
	if _, err := v.Verify(b.caller(t, nil)); err != nil {
		t.Fatalf("rotated key: %v", err)
	}
	n := hits.Load()
	for i := range 5 {
		v.Verify(signRaw(t, jwt.SigningMethodEdDSA, a.key.Key, baseClaims(AudienceCaller), map[string]any{"kid": fmt.Sprint("unknown-", i)}))
	}
	if hits.Load() != n {
		t.Errorf("unknown kids caused %d fetches", hits.Load()-n)
	}
	// A failing endpoint keeps the keys.
	fail.Store(true)
	if err := r.Reload(context.Background()); err == nil {
		t.Fatal("Reload succeeded against a failing server")
	}
	if _, err := v.Verify(b.caller(t, nil)); err != nil {
		t.Fatalf("keys lost after a failed fetch: %v", err)
	}
	if r.Err() == nil {
		t.Error("no error recorded")
	}
	if _, err := NewRemoteJWKS(context.Background(), srv.URL, srv.Client()); err == nil {
		t.Error("NewRemoteJWKS succeeded against a failing server")
	}
}

func TestRevocationList(t *testing.T) {
	is := newIssuer(t)
	path := filepath.Join(t.TempDir(), "revoked")
	l, err := NewRevocationList(path, time.Second)
	if err != nil {
		t.Fatalf("missing file: %v", err)
	}
	clock := &fakeClock{}
	clock.t.Store(time.Now().UnixNano())
	l.now = clock.now
	v := verifierAt(t, is.keys, AudienceCaller, t0, func(c *VerifierConfig) { c.Revoked = l.Revoked })
	tok := is.caller(t, nil)
	c, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	writeAndBump(t, path, []byte("# revoked tokens\n\n"+c.ID+"\nffff\n"))
	clock.advance(2 * time.Second)
	if _, err := v.Verify(tok); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("revoked token: %v", err)
	}
	if l.Len() != 2 {
		t.Errorf("Len %d", l.Len())
	}
	writeAndBump(t, path, []byte("a b\n"))
	if err := l.Reload(); err == nil {
		t.Error("malformed list accepted")
	}
	if _, err := v.Verify(tok); err == nil {
		t.Error("malformed list dropped the revocations")
	}
	os.Remove(path)
	l.Reload()
	if _, err := v.Verify(tok); err != nil {
		t.Errorf("removed list still revokes: %v", err)
	}
}
