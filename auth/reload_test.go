package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
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
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if fail.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		data, _ := MarshalJWKS(current.Load().(map[string]crypto.PublicKey))
		w.Write(data)
	}))
	t.Cleanup(srv.Close)

	r, err := NewRemoteJWKS(context.Background(), srv.URL, jwksClient(srv))
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
	if _, err := NewRemoteJWKS(context.Background(), srv.URL, jwksClient(srv)); err == nil {
		t.Error("NewRemoteJWKS succeeded against a failing server")
	}
}

// jwksClient is JWKSClient trusting srv's certificate.
func jwksClient(srv *httptest.Server) *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	return JWKSClient(roots)
}

// jwksServer serves keys at /jwks.json over TLS, and whatever else mux adds.
func jwksServer(t *testing.T, keys map[string]crypto.PublicKey, tlsServer bool, mux func(*http.ServeMux)) *httptest.Server {
	t.Helper()
	m := http.NewServeMux()
	m.HandleFunc("/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		data, _ := MarshalJWKS(keys)
		w.Write(data)
	})
	if mux != nil {
		mux(m)
	}
	var srv *httptest.Server
	if tlsServer {
		srv = httptest.NewTLSServer(m)
	} else {
		srv = httptest.NewServer(m)
	}
	t.Cleanup(srv.Close)
	return srv
}

// TestRemoteJWKSFetchedSafely: only https, redirects only to https on the same host, TLS 1.2 or later, a bounded
// document, and a refetch that ends with the request that caused it.
func TestRemoteJWKSFetchedSafely(t *testing.T) {
	is := newIssuer(t)
	keys := map[string]crypto.PublicKey{is.key.KeyID: is.pub}
	ctx := context.Background()

	plain := jwksServer(t, keys, false, nil)
	if _, err := NewRemoteJWKS(ctx, plain.URL+"/jwks.json", nil); err == nil ||
		err.Error() != `JWKS URL "`+plain.URL+`/jwks.json" must be https://HOST/...: keys fetched any other way could be replaced on the way` {
		t.Errorf("http URL: %v", err)
	}
	for _, bad := range []string{"HTTP://x/jwks", "https:///jwks", "file:///etc/jwks.json", "//x/jwks", "ftp://x/jwks"} {
		if _, err := NewRemoteJWKS(ctx, bad, nil); err == nil || !strings.Contains(err.Error(), "must be https://") {
			t.Errorf("%s: %v", bad, err)
		}
	}

	other := jwksServer(t, keys, true, nil) // another host:port, also serving the keys
	srv := jwksServer(t, keys, true, func(m *http.ServeMux) {
		m.HandleFunc("/to-http", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, plain.URL+"/jwks.json", http.StatusFound)
		})
		m.HandleFunc("/to-other-host", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+"/jwks.json", http.StatusMovedPermanently)
		})
		m.HandleFunc("/same-host", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/jwks.json", http.StatusFound)
		})
		m.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/loop", http.StatusFound)
		})
		m.HandleFunc("/huge", func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte(`{"keys":[` + strings.Repeat(" ", maxJWKSBytes) + `]}`))
		})
	})
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	roots.AddCert(other.Certificate())
	client := JWKSClient(roots)
	host := strings.TrimPrefix(srv.URL, "https://")
	for _, tc := range []struct{ path, want string }{
		{"/to-http", `refusing the redirect to ` + plain.URL + `/jwks.json: a JWKS is followed only to https on ` + host},
		{"/to-other-host", `refusing the redirect to ` + other.URL + `/jwks.json: a JWKS is followed only to https on ` + host},
		{"/loop", "more than 3 redirects"},
		{"/huge", "larger than 1048576 bytes"},
	} {
		_, err := NewRemoteJWKS(ctx, srv.URL+tc.path, client)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.path, err, tc.want)
		}
	}
	r, err := NewRemoteJWKS(ctx, srv.URL+"/same-host", client)
	if err != nil {
		t.Fatalf("a redirect on the same host: %v", err)
	}
	if _, ok := r.Key(is.key.KeyID); !ok {
		t.Fatal("key missing after a same-host redirect")
	}
	// The caller's client is copied, not changed.
	if client.CheckRedirect != nil {
		t.Error("NewRemoteJWKS changed the caller's client")
	}

	// TLS 1.2 at least: a server offering only TLS 1.1 is refused.
	old := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"keys":[]}`)) }))
	old.TLS = &tls.Config{MaxVersion: tls.VersionTLS11}
	old.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes, expected
	old.StartTLS()
	t.Cleanup(old.Close)
	oldRoots := x509.NewCertPool()
	oldRoots.AddCert(old.Certificate())
	if _, err := NewRemoteJWKS(ctx, old.URL, JWKSClient(oldRoots)); err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Errorf("TLS 1.1 server: %v", err)
	}

	// A refetch started by a lookup (an unknown kid) ends with the caller's context.
	block := make(chan struct{})
	started := make(chan struct{}, 1)
	slow := jwksServer(t, keys, true, func(m *http.ServeMux) {
		var served atomic.Bool
		m.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
			if !served.Swap(true) {
				data, _ := MarshalJWKS(keys)
				w.Write(data)
				return
			}
			started <- struct{}{}
			select {
			case <-block:
			case <-r.Context().Done():
			}
		})
	})
	t.Cleanup(func() { close(block) })
	rs, err := NewRemoteJWKS(ctx, slow.URL+"/slow", jwksClient(slow))
	if err != nil {
		t.Fatal(err)
	}
	rs.MinInterval = time.Nanosecond
	rs.Timeout = time.Minute
	// endsWithContext runs lookup with a context it cancels once the server has the fetch, and checks that lookup
	// returns within seconds, finding nothing.
	endsWithContext := func(what string, lookup func(context.Context) bool) {
		t.Helper()
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan bool, 1)
		go func() { done <- lookup(cctx) }()
		<-started
		cancel()
		select {
		case found := <-done:
			if found {
				t.Fatalf("%s found an unknown key", what)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the refetch did not end with the caller's context", what)
		}
	}
	endsWithContext("KeyContext", func(c context.Context) bool {
		_, ok := rs.KeyContext(c, "unknown")
		return ok
	})
	if rs.Err() != nil {
		t.Errorf("a caller that went away is not the key set's failure: %v", rs.Err())
	}
	if _, ok := rs.Key(is.key.KeyID); !ok {
		t.Error("the keys fetched before were lost")
	}
	v := verifierAt(t, KeySets{rs}, AudienceCaller, t0, nil)
	rotated := signRaw(t, jwt.SigningMethodEdDSA, is.key.Key, baseClaims(AudienceCaller), map[string]any{"kid": "rotated"})
	endsWithContext("VerifyContext", func(c context.Context) bool {
		_, err := v.VerifyContext(c, rotated)
		return err == nil
	})
}

func TestRevocationList(t *testing.T) {
	is := newIssuer(t)
	path := filepath.Join(t.TempDir(), "revoked")
	if _, err := NewRevocationList(path, time.Second); err == nil ||
		err.Error() != "revocation list "+path+" does not exist: create it (empty to revoke nothing)" {
		t.Fatalf("missing file at start: %v", err)
	}
	writeAndBump(t, path, nil)
	l, err := NewRevocationList(path, time.Second)
	if err != nil {
		t.Fatalf("empty file: %v", err)
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
	writeAndBump(t, path, []byte(c.ID+"\n"))
	if err := l.Reload(); err != nil {
		t.Fatal(err)
	}
	// A file that disappears un-revokes nothing: the token stays refused, on lookup as on Reload, and the error
	// says so until the file is back.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	clock.advance(2 * time.Second)
	want := "revocation list " + path + " is gone; still refusing the 1 token ids read before: put the file back (empty to revoke nothing)"
	if err := l.Check(); err == nil || err.Error() != want {
		t.Fatalf("Check after the file went: %v, want %q", err, want)
	}
	if _, err := v.Verify(tok); err == nil || !strings.Contains(err.Error(), "has been revoked") {
		t.Fatalf("the file went and the token is accepted again: %v", err)
	}
	if err := l.Reload(); err == nil || err.Error() != want {
		t.Fatalf("Reload after the file went: %v", err)
	}
	if _, err := v.Verify(tok); err == nil {
		t.Fatal("Reload without the file un-revoked the token")
	}
	// Back, empty: an empty file is a deliberate "nothing revoked".
	writeAndBump(t, path, nil)
	clock.advance(2 * time.Second)
	if err := l.Check(); err != nil {
		t.Fatalf("file back: %v", err)
	}
	if _, err := v.Verify(tok); err != nil {
		t.Errorf("emptied list still revokes: %v", err)
	}
}

// TestKeyFilesCheck: Check notices a file that went bad without a lookup, keeps the keys, and recovers.
func TestKeyFilesCheck(t *testing.T) {
	a := newIssuer(t)
	path := filepath.Join(t.TempDir(), "issuer.pub")
	copyFile(t, filepath.Join(a.dir, PublicKeyFile), path)
	kf, err := NewKeyFiles(time.Second, path)
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{}
	clock.t.Store(time.Now().UnixNano())
	kf.now = clock.now
	os.Remove(path)
	if err := kf.Check(); err != nil {
		t.Fatalf("checked before the interval: %v", err)
	}
	clock.advance(2 * time.Second)
	if err := kf.Check(); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Check after the file went: %v", err)
	}
	if _, ok := kf.Key(a.key.KeyID); !ok {
		t.Fatal("the keys went with the file")
	}
	copyFile(t, filepath.Join(a.dir, PublicKeyFile), path)
	clock.advance(2 * time.Second)
	if err := kf.Check(); err != nil {
		t.Fatalf("file back: %v", err)
	}
}
