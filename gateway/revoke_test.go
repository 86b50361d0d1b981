package gateway_test

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/internal/testenv/wait"
)

// endedWith matches the audit record of a stream warren ended for reason.
func endedWith(path, reason string) func(audit.Record) bool {
	return func(r audit.Record) bool { return strings.Contains(r.Path, path) && r.Reason == "ended: "+reason }
}

// TestRevocationEndsOpenStreams: a token revoked while its watch, logs -f and exec are open loses all three within
// the gateway's re-check interval: the watch and the follow end cleanly (the body ends, no error), the exec gets a
// closing frame that says why, and the audit records say so. Another token's streams go on. (The connector's own
// re-checks are off here, so that the gateway's are what is tested; TestRevocationAtTheConnector tests those.) On
// the old code the streams ran until the maximum stream length (12 h).
func TestRevocationEndsOpenStreams(t *testing.T) {
	e := newProxyEnv(t, proxyEnvOpts{connInterval: time.Hour})
	tok, id := e.token(time.Hour)
	other, _ := e.token(time.Hour)

	_, watch := e.openStream(tok, "/api/v1/namespaces/ns/configmaps?watch=1")
	_, follow := e.openStream(tok, "/api/v1/namespaces/ns/pods/p/log?follow=true")
	exec := e.openExec(tok)
	_, otherWatch := e.openStream(other, "/api/v1/namespaces/ns/configmaps?watch=true")

	type ended struct {
		what string
		err  error
		code int
		why  string
		at   time.Time
	}
	results := make(chan ended, 3)
	drain := func(what string, r io.Reader) {
		_, err := io.Copy(io.Discard, r)
		results <- ended{what: what, err: err, at: time.Now()}
	}
	go drain("watch", watch)
	go drain("logs -f", follow)
	go func() {
		code, why, err := exec.closing()
		results <- ended{what: "exec", err: err, code: code, why: why, at: time.Now()}
	}()

	revokedAt := e.revoke(e.gwRevoked, id)
	reason := `token "` + id + `" has been revoked`
	for range 3 {
		select {
		case r := <-results:
			t.Logf("%s ended %v after the revocation (interval 100ms)", r.what, r.at.Sub(revokedAt).Round(time.Millisecond))
			switch r.what {
			case "exec":
				if r.err != nil || r.code != 1008 || r.why != "warren: "+reason {
					t.Errorf("exec: closing frame %d %q (%v), want 1008 %q", r.code, r.why, r.err, "warren: "+reason)
				}
			default:
				if r.err != nil {
					t.Errorf("%s: ended with %v, want a clean end of the body", r.what, r.err)
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatal("streams of the revoked token still open 10s after the revocation")
		}
	}
	for _, path := range []string{"/configmaps", "/log", "/exec"} {
		waitRecord(t, e.gwAudit, "gateway "+path, endedWith(path, reason))
	}
	wait.Until(t, 5*time.Second, "the API server's side of the streams ends", func() bool { return e.api.streams.Load() == 1 })

	// The other token's watch is still open, and the revoked token is refused from now on.
	otherDone := make(chan error, 1)
	go func() { _, err := otherWatch.ReadByte(); otherDone <- err }()
	select {
	case err := <-otherDone:
		t.Fatalf("another token's watch ended: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	resp, err := e.get(tok, "/api/v1/namespaces/ns/configmaps")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(string(body), `"message":"invalid caller token: token \"`+id+`\" has been revoked"`) {
		t.Fatalf("new request with the revoked token: %d %s", resp.StatusCode, body)
	}
}

// TestRevocationAtTheConnector: the connector ends a revoked token's streams by itself, whatever the gateway does
// (here the gateway's list does not have the token). When both have it and the connector notices first, the exec's
// client is still told why: the gateway checks the token again when the cluster's side ends a session.
func TestRevocationAtTheConnector(t *testing.T) {
	t.Run("gateway-unaware", func(t *testing.T) {
		e := newProxyEnv(t, proxyEnvOpts{separateRevocations: true})
		tok, id := e.token(time.Hour)
		_, watch := e.openStream(tok, "/api/v1/namespaces/ns/configmaps?watch=yes")
		exec := e.openExec(tok)
		revokedAt := e.revoke(e.connRevoked, id)
		done := make(chan error, 1)
		go func() { _, err := io.Copy(io.Discard, watch); done <- err }()
		code, why, err := exec.closing()
		t.Logf("exec ended %v after the revocation at the connector: %d %q", time.Since(revokedAt).Round(time.Millisecond), code, why)
		if err != nil || code != 1011 {
			t.Fatalf("exec: %d %q %v; want the session ended (the gateway, unaware, says the cluster's side went away)", code, why, err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("watch ended with %v, want a clean end", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("watch still open 10s after the connector's revocation")
		}
		reason := `the caller's token "` + id + `" has been revoked`
		waitRecord(t, e.connAudit, "connector exec", endedWith("/exec", reason))
		waitRecord(t, e.connAudit, "connector watch", endedWith("/configmaps", reason))
	})
	t.Run("connector-first", func(t *testing.T) {
		e := newProxyEnv(t, proxyEnvOpts{gwInterval: time.Hour})
		tok, id := e.token(time.Hour)
		exec := e.openExec(tok)
		e.revoke(e.gwRevoked, id)
		code, why, err := exec.closing()
		if want := `warren: token "` + id + `" has been revoked`; err != nil || code != 1008 || why != want {
			t.Fatalf("exec: %d %q %v; want 1008 %q", code, why, err, want)
		}
		waitRecord(t, e.gwAudit, "gateway exec", endedWith("/exec", `token "`+id+`" has been revoked`))
	})
}

// TestKeyRotatedOutEndsOpenStreams: the issuer's key removed from the key files ends its tokens' streams, with the
// reason.
func TestKeyRotatedOutEndsOpenStreams(t *testing.T) {
	e := newProxyEnv(t, proxyEnvOpts{})
	tok, _ := e.token(time.Hour)
	exec := e.openExec(tok)
	_, watch := e.openStream(tok, "/api/v1/watch/namespaces/ns/configmaps")
	other := newProxyEnv(t, proxyEnvOpts{}) // another issuer's key replaces this one
	copyFileBumped(t, other.keysPath, e.keysPath)
	code, why, err := exec.closing()
	want := `warren: token is signed by key id "` + e.key.KeyID + `", which is no longer trusted`
	if err != nil || code != 1008 || why != want {
		t.Fatalf("exec: %d %q %v; want 1008 %q", code, why, err, want)
	}
	if _, err := io.Copy(io.Discard, watch); err != nil {
		t.Fatalf("watch: %v, want a clean end", err)
	}
}

// TestExpiredTokensStreams (in synctest bubbles): with DisconnectExpiredTokens a token's streams end when it expires
// (within the stream check interval after), with the reason; without it (the default), an exec outlives its token
// by half an hour and more, while new requests with the token are refused.
func TestExpiredTokensStreams(t *testing.T) {
	const ttl = 2 * time.Second
	const interval = 100 * time.Millisecond // proxyEnv's stream check interval
	t.Run("disconnect", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newProxyEnv(t, proxyEnvOpts{disconnectExpired: true, net: memoryNet(t)})
			tok, _ := e.token(ttl)
			expires := expiry(t, tok)
			exec := e.openExec(tok)
			_, follow := e.openStream(tok, "/api/v1/namespaces/ns/pods/p/log?follow=")
			type end struct {
				code int
				why  string
				err  error
			}
			execEnd, followEnd := make(chan end, 1), make(chan error, 1)
			go func() {
				code, why, err := exec.closing()
				execEnd <- end{code, why, err}
			}()
			go func() {
				_, err := io.Copy(io.Discard, follow)
				followEnd <- err
			}()
			time.Sleep(time.Until(expires) - time.Millisecond)
			synctest.Wait()
			if len(execEnd) != 0 || len(followEnd) != 0 {
				t.Fatal("the streams ended before their token expired")
			}
			time.Sleep(time.Millisecond + interval)
			synctest.Wait()
			if len(execEnd) == 0 || len(followEnd) == 0 {
				t.Fatalf("the streams are open %v after their token expired", interval)
			}
			want := "warren: token expired at " + expires.UTC().Format(time.RFC3339)
			if got := <-execEnd; got.err != nil || got.code != 1008 || got.why != want {
				t.Fatalf("exec: %d %q %v; want 1008 %q", got.code, got.why, got.err, want)
			}
			if err := <-followEnd; err != nil {
				t.Fatalf("logs -f: %v, want a clean end", err)
			}
			waitRecord(t, e.gwAudit, "exec", func(r audit.Record) bool {
				return strings.Contains(r.Path, "/exec") && r.Reason == "ended: token expired at "+expires.UTC().Format(time.RFC3339)
			})
		})
	})
	t.Run("default", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newProxyEnv(t, proxyEnvOpts{net: memoryNet(t)})
			tok, _ := e.token(ttl)
			exec := e.openExec(tok)
			frames := make(chan error, 1)
			go func() {
				op, p, err := exec.frame()
				frames <- fmt.Errorf("frame %d %q (%v) at %v", op, p, err, time.Now())
			}()
			// Long past the token's expiry (short of the connector's own join token's hour): the point is that
			// nothing happens.
			time.Sleep(30 * time.Minute)
			synctest.Wait()
			if len(frames) != 0 {
				t.Fatalf("the exec of an expired token ended without --disconnect-expired-tokens: %v", <-frames)
			}
			resp, err := e.get(tok, "/api/v1/namespaces/ns/configmaps")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 401 || !strings.Contains(string(body), "invalid caller token: token expired at ") {
				t.Fatalf("new request with the expired token: %d %s", resp.StatusCode, body)
			}
			exec.conn.Close()
		})
	})
}
