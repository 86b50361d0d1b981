package auth

import (
	"crypto"
	"errors"
	"net/http"
	"net/url"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// TestRecheckStream: what can change about a verified token after the fact ends it: revocation, its key rotated out of
// the key files (or replaced under the same id), and, only when asked, its expiry.
func TestRecheckStream(t *testing.T) {
	a, b := newIssuer(t), newIssuer(t)
	dir := t.TempDir()
	keysPath := filepath.Join(dir, "issuer.pub")
	copyFile(t, filepath.Join(a.dir, PublicKeyFile), keysPath)
	kf, err := NewKeyFiles(time.Hour, keysPath) // an hour: only Refresh makes it look
	if err != nil {
		t.Fatal(err)
	}
	revPath := filepath.Join(dir, "revoked")
	writeAndBump(t, revPath, nil)
	rl, err := NewRevocationList(revPath, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var now atomic.Int64
	now.Store(t0.UnixNano())
	v, err := NewVerifier(VerifierConfig{Keys: kf, Audience: AudienceCaller, Revoked: rl.Revoked,
		Sources: []Refresher{kf, rl}, Leeway: 10 * time.Second, Now: func() time.Time { return time.Unix(0, now.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(a.caller(t, nil)) // valid until t0 + 15 min
	if err != nil {
		t.Fatal(err)
	}
	if err := v.RecheckStream(c, true); err != nil {
		t.Fatalf("fresh token: %v", err)
	}

	// Revoked: seen at once after Refresh, although the list's own interval is an hour.
	writeAndBump(t, revPath, []byte(c.ID+"\n"))
	if err := v.RecheckStream(c, false); err != nil {
		t.Fatalf("before Refresh the list is not looked at: %v", err)
	}
	if err := v.Refresh(); err != nil {
		t.Fatal(err)
	}
	err = v.RecheckStream(c, false)
	if want := `token "` + c.ID + `" has been revoked`; err == nil || err.Error() != want || !errors.Is(err, ErrRevoked) || !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("revoked: %v, want %q", err, want)
	}
	writeAndBump(t, revPath, []byte("# nothing\n"))
	v.Refresh()

	// The key rotated out of the key files.
	writeAndBump(t, keysPath, mustRead(t, filepath.Join(b.dir, PublicKeyFile)))
	v.Refresh()
	err = v.RecheckStream(c, false)
	if want := `token is signed by key id "` + a.key.KeyID + `", which is no longer trusted`; err == nil || err.Error() != want || !errors.Is(err, ErrUntrustedKey) {
		t.Fatalf("key rotated out: %v, want %q", err, want)
	}
	// Back again: the token holds again (nothing is remembered).
	writeAndBump(t, keysPath, mustRead(t, filepath.Join(a.dir, PublicKeyFile)))
	v.Refresh()
	if err := v.RecheckStream(c, false); err != nil {
		t.Fatalf("key back: %v", err)
	}

	// Expiry only when asked, and with the leeway.
	now.Store(t0.Add(15*time.Minute + 5*time.Second).UnixNano())
	if err := v.RecheckStream(c, true); err != nil {
		t.Fatalf("within the leeway: %v", err)
	}
	now.Store(t0.Add(15*time.Minute + 11*time.Second).UnixNano())
	if err := v.RecheckStream(c, false); err != nil {
		t.Fatalf("expired, expiry not asked: %v", err)
	}
	err = v.RecheckStream(c, true)
	if want := "token expired at 2026-11-25T09:15:00Z"; err == nil || err.Error() != want || !errors.Is(err, ErrExpired) {
		t.Fatalf("expired: %v, want %q", err, want)
	}
	if got := c.Expiry(); !got.Equal(t0.Add(15 * time.Minute)) {
		t.Fatalf("Expiry() = %v", got)
	}
}

// TestRecheckStreamReplacedKey: a different key put under the same key id does not keep the old key's tokens alive.
func TestRecheckStreamReplacedKey(t *testing.T) {
	a, b := newIssuer(t), newIssuer(t)
	keys := &mutableKeys{keys: map[string]crypto.PublicKey{a.key.KeyID: a.pub}}
	v := verifierAt(t, keys, AudienceCaller, t0, nil)
	c, err := v.Verify(a.caller(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	keys.mu.Lock()
	keys.keys[a.key.KeyID] = b.pub
	keys.mu.Unlock()
	if err := v.RecheckStream(c, false); !errors.Is(err, ErrUntrustedKey) {
		t.Fatalf("key replaced under the same id: %v", err)
	}
	if err := v.Recheck(c); !errors.Is(err, ErrUntrustedKey) { // the connectors' re-check too
		t.Fatalf("key replaced under the same id: %v", err)
	}
	// Claims that did not come from a token this Verifier verified (a connector's view of the caller from the
	// gateway, say) are checked for what they carry: no key id, no key check.
	other := &Claims{}
	other.ID = "x"
	if err := v.RecheckStream(other, false); err != nil {
		t.Fatalf("foreign claims: %v", err)
	}
}

// TestLongRunningAndFollows: the API server's own list of long-running requests, and every spelling of follow= and
// watch= it honours. An attacker's odd boolean must not make a follow or a watch look short.
func TestLongRunningAndFollows(t *testing.T) {
	cases := []struct {
		method, target string
		upgrade        bool
		long, follows  bool
	}{
		{"GET", "/api/v1/namespaces/a/pods/p/log", false, true, false},
		{"GET", "/api/v1/namespaces/a/pods/p/log?follow=true", false, true, true},
		{"GET", "/api/v1/namespaces/a/pods/p/log?follow=1", false, true, true},
		{"GET", "/api/v1/namespaces/a/pods/p/log?follow=yes", false, true, true},
		{"GET", "/api/v1/namespaces/a/pods/p/log?follow=TRUE", false, true, true},
		{"GET", "/api/v1/namespaces/a/pods/p/log?follow=", false, true, true},
		{"GET", "/api/v1/namespaces/a/pods/p/log?follow", false, true, true},
		{"GET", "/api/v1/namespaces/a/pods/p/log?follow=on&follow=false", false, true, true}, // the first value counts
		{"GET", "/api/v1/namespaces/a/pods/p/log?follow=False", false, true, false},
		{"GET", "/api/v1/namespaces/a/pods/p/log?follow=0", false, true, false},
		{"GET", "/api/v1/namespaces/a/pods/p/log?follow=false&follow=true", false, true, false},
		{"GET", "/api/v1/namespaces/a/pods?watch=true", false, true, true},
		{"GET", "/api/v1/namespaces/a/pods?watch=1", false, true, true},
		{"GET", "/api/v1/namespaces/a/pods?watch=yes", false, true, true},
		{"GET", "/api/v1/namespaces/a/pods?watch=TRUE", false, true, true},
		{"GET", "/api/v1/namespaces/a/pods?watch=", false, true, true},
		{"GET", "/api/v1/pods?watch", false, true, true},
		{"GET", "/api/v1/watch/namespaces/a/pods", false, true, true},
		{"GET", "/apis/apps/v1/deployments?watch=t", false, true, true},
		{"GET", "/api/v1/namespaces/a/pods?watch=0", false, false, false},
		{"GET", "/api/v1/namespaces/a/pods?watch=FALSE", false, false, false},
		{"GET", "/api/v1/namespaces/a/pods", false, false, false},
		{"GET", "/api/v1/namespaces/a/pods/p", false, false, false},
		{"GET", "/api/v1/namespaces/a/pods/p?follow=true", false, false, false},
		{"POST", "/api/v1/namespaces/a/pods/p/exec?command=sh", false, true, false},
		{"GET", "/api/v1/namespaces/a/pods/p/exec?command=sh", true, true, false},
		{"POST", "/api/v1/namespaces/a/pods/p/attach", false, true, false},
		{"POST", "/api/v1/namespaces/a/pods/p/portforward", false, true, false},
		{"GET", "/api/v1/namespaces/a/services/s/proxy/metrics", false, true, false},
		{"GET", "/api/v1/nodes/n/proxy/containerLogs/a/p/c?follow=true", false, true, false},
		{"GET", "/api/v1/namespaces/a/configmaps/c", true, true, false}, // any upgrade holds its stream
		{"GET", "/debug/pprof/profile", false, true, false},
		{"GET", "/openapi/v2", false, false, false},
		{"GET", "/version", false, false, false},
	}
	for _, c := range cases {
		u, err := url.ParseRequestURI(c.target)
		if err != nil {
			t.Fatal(err)
		}
		r := &http.Request{Method: c.method, URL: u, Header: http.Header{}}
		if c.upgrade {
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
		}
		a, err := Classify(r, u.Path)
		if err != nil {
			t.Fatalf("%s %s: %v", c.method, c.target, err)
		}
		if got := LongRunning(r, a); got != c.long {
			t.Errorf("LongRunning(%s %s) = %v, want %v (verb %s, subresource %q)", c.method, c.target, got, c.long, a.Verb, a.Subresource)
		}
		if got := Follows(r, a); got != c.follows {
			t.Errorf("Follows(%s %s) = %v, want %v", c.method, c.target, got, c.follows)
		}
		if c.follows && !c.long {
			t.Errorf("%s: a follow must also be long-running", c.target)
		}
	}
}
