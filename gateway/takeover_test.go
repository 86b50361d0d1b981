package gateway_test

// Regression tests of the connector takeover (issue 10, point 4) and of the double round robin. They use only what
// the gateway, connector and tunnel packages exported before the fix, so that they also run against that code.

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/tunnel"
)

// TestTwoConnectorsShareEvenly: with two connectors, 100 sequential requests go 50 to each. (The round robin used
// to move twice per request, so every request started at the same connector: 100 : 0.)
func TestTwoConnectorsShareEvenly(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.connectorToken("prod", time.Hour)
	e.startConnector("a", staticToken(tok), nil)
	e.startConnector("b", staticToken(tok), nil)
	e.waitConnectors(2, 10*time.Second)
	caller := e.callerToken()
	served := map[string]int{}
	for range 100 {
		code, by := e.listPods(caller)
		if code != http.StatusOK {
			t.Fatalf("status %d: %s", code, by)
		}
		served[by]++
	}
	if served["a"] != 50 || served["b"] != 50 {
		t.Fatalf("100 requests served %v, want 50 each", served)
	}
}

// TestStolenConnectorTokenCannotTakeOver: whoever holds a copy of the connector token and opens 100 tunnels with
// it, as the connector once did, gets none of them, and the real connector keeps answering everything. (A rogue
// used to answer 80 of 100 requests with a forged PodList.)
func TestStolenConnectorTokenCannotTakeOver(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.connectorToken("prod", time.Hour)
	e.startConnector("real", staticToken(tok), nil)
	e.waitConnectors(1, 10*time.Second)

	opened := 0
	for range 100 {
		_, err := e.rogue(http.Header{"Authorization": {"Bearer " + tok}, "Warren-Connector-Name": {"real"}})
		var he *tunnel.HandshakeError
		switch {
		case err == nil:
			opened++
		case !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized ||
			he.Message != "a connector token alone no longer opens a tunnel: the connector must exchange it at /connect/join for a credential bound to its key; upgrade the connector to this gateway's version":
			t.Fatalf("rogue tunnel refused with %v", err)
		}
	}
	if opened != 0 || e.g.Connectors("prod") != 1 {
		t.Fatalf("the stolen token opened %d tunnels; the cluster has %d", opened, e.g.Connectors("prod"))
	}
	caller := e.callerToken()
	for i := range 100 {
		if code, by := e.listPods(caller); code != http.StatusOK || by != "real" {
			t.Fatalf("request %d: %d served by %q", i, code, by)
		}
	}
}

// TestRevokedConnectorTokenEndsTunnel (in a synctest bubble): revoking the connector token ends its live tunnel
// within the check interval (5 s by default), and the connector cannot come back with it, however long it tries.
// (Live tunnels used to survive revocation.)
func TestRevokedConnectorTokenEndsTunnel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, tok := oneConnector(t, time.Hour)
		e.revoke(tokenID(t, tok))
		tunnelEndsWithin(t, e, auth.DefaultCheckInterval)
		if code, msg := e.listPods(e.callerToken()); code != http.StatusServiceUnavailable {
			t.Fatalf("after revocation: %d %s", code, msg)
		}
		staysAway(t, e, "a revoked token")
	})
}

// oneConnector is an env in memory (for a bubble) with connector "a" connected with a join token valid for ttl.
func oneConnector(t *testing.T, ttl time.Duration) (*env, string) {
	t.Helper()
	e := newEnvOn(t, memoryNet(t), nil)
	tok := e.connectorToken("prod", ttl)
	e.startConnector("a", staticToken(tok), nil)
	e.waitConnectors(1, 10*time.Second)
	return e, tok
}

// tunnelEndsWithin checks that prod's one tunnel has ended d from now (the gateway's check interval: its rounds
// run on their own ticker, so the end may come at any time within it).
func tunnelEndsWithin(t *testing.T, e *env, d time.Duration) {
	t.Helper()
	time.Sleep(d)
	synctest.Wait()
	if n := e.g.Connectors("prod"); n != 0 {
		t.Fatalf("%d tunnels are still up %v later", n, d)
	}
}

// staysAway checks that the connector, retrying all along (every 200 ms at most), does not open a tunnel again
// in a minute.
func staysAway(t *testing.T, e *env, what string) {
	t.Helper()
	for range 60 {
		time.Sleep(time.Second)
		if n := e.g.Connectors("prod"); n != 0 {
			t.Fatalf("%s reconnected: %d tunnels", what, n)
		}
	}
}

// TestRemovedConnectorKeyEndsTunnel (in a bubble): taking the key that signed the connector token out of
// --connector-keys ends the tunnel within the check interval, for good. (Live tunnels used to survive it.)
func TestRemovedConnectorKeyEndsTunnel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _ := oneConnector(t, time.Hour)
		other := t.TempDir()
		if _, err := auth.GenerateKeyPair(other); err != nil {
			t.Fatal(err)
		}
		copyFile(t, filepath.Join(other, auth.PublicKeyFile), e.keysFile+".new")
		if err := os.Rename(e.keysFile+".new", e.keysFile); err != nil {
			t.Fatal(err)
		}
		tunnelEndsWithin(t, e, auth.DefaultCheckInterval)
		staysAway(t, e, "a token of a removed key")
	})
}

// TestExpiredConnectorTokenEndsTunnel (in a bubble): a tunnel does not outlive the connector token it was opened
// with by more than the check interval. (It used to live on for as long as the connection held.)
func TestExpiredConnectorTokenEndsTunnel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, tok := oneConnector(t, 3*time.Second)
		expires := expiry(t, tok)
		time.Sleep(time.Until(expires) - time.Millisecond)
		synctest.Wait()
		if n := e.g.Connectors("prod"); n != 1 {
			t.Fatalf("%d tunnels before the token expired, want 1", n)
		}
		time.Sleep(time.Millisecond)
		tunnelEndsWithin(t, e, auth.DefaultCheckInterval)
		staysAway(t, e, "an expired token")
	})
}
