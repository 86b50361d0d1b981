package gateway_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/connector"
	"github.com/warren-dev/warren/gateway"
	"github.com/warren-dev/warren/internal/testenv/testlog"
	"github.com/warren-dev/warren/internal/testenv/wait"
	"github.com/warren-dev/warren/internal/wire"
	"github.com/warren-dev/warren/tunnel"
)

// fakeClock is the gateway's (and its connector verifier's) clock in these tests: credentials expire when the test
// says so.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newFastEnv is an env whose gateway runs on a fake clock (starting now) and re-checks connectors every 20 ms.
func newFastEnv(t *testing.T, mod func(*gateway.Config)) (*env, *fakeClock) {
	clock := &fakeClock{t: time.Now()}
	e := newEnv(t, func(c *gateway.Config, vc *auth.VerifierConfig) {
		c.Now, vc.Now = clock.Now, clock.Now
		c.Connectors.CheckInterval = 20 * time.Millisecond
		if mod != nil {
			mod(c)
		}
	})
	return e, clock
}

// rawConnector speaks the connector protocol by hand, so that tests can do what the connector never does (not
// renew, replay a proof, open 100 tunnels).
type rawConnector struct {
	e   *env
	key ed25519.PrivateKey
	id  string
}

func (e *env) rawConnector() *rawConnector {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	id, _ := auth.KeyID(key.Public())
	return &rawConnector{e: e, key: key, id: id}
}

func (c *rawConnector) proof(method, path, token string, at time.Time) string {
	c.e.t.Helper()
	p, err := auth.NewProof(c.key, method, c.e.srv.URL+path, token, at)
	if err != nil {
		c.e.t.Fatal(err)
	}
	return p
}

// joinWith posts a join with the given proof; it returns the status, the answer (on 200) or the Status message.
func (c *rawConnector) joinWith(token, proof string) (int, wire.JoinResponse, string, http.Header) {
	c.e.t.Helper()
	req, _ := http.NewRequest("POST", c.e.srv.URL+wire.PathJoin, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if proof != "" {
		req.Header.Set(wire.HeaderProof, proof)
	}
	resp, err := c.e.net.client.Do(req)
	if err != nil {
		c.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var jr wire.JoinResponse
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&jr); err != nil {
			c.e.t.Fatal(err)
		}
		return resp.StatusCode, jr, "", resp.Header
	}
	var st struct {
		Message string `json:"message"`
	}
	json.NewDecoder(resp.Body).Decode(&st)
	return resp.StatusCode, jr, st.Message, resp.Header
}

func (c *rawConnector) join(token string, at time.Time) (int, wire.JoinResponse, string) {
	code, jr, msg, _ := c.joinWith(token, c.proof("POST", wire.PathJoin, token, at))
	return code, jr, msg
}

func (c *rawConnector) mustJoin(token string, at time.Time) wire.JoinResponse {
	c.e.t.Helper()
	code, jr, msg := c.join(token, at)
	if code != http.StatusOK {
		c.e.t.Fatalf("join: %d %s", code, msg)
	}
	return jr
}

// dial opens a tunnel with the credential and the proof given (answering requests with a forged PodList).
func (c *rawConnector) dialWith(credential, proof string) (*tunnel.Session, error) {
	return c.e.rogue(http.Header{"Authorization": {"DPoP " + credential}, wire.HeaderProof: {proof}})
}

func (c *rawConnector) dial(credential string, at time.Time) (*tunnel.Session, error) {
	return c.dialWith(credential, c.proof("GET", wire.PathConnect, credential, at))
}

// refusal returns the status and message of a refused tunnel.
func refusal(t *testing.T, err error) (int, string) {
	t.Helper()
	var he *tunnel.HandshakeError
	if !errors.As(err, &he) {
		t.Fatalf("not a refusal: %v", err)
	}
	return he.StatusCode, he.Message
}

func waitEnded(t *testing.T, s *tunnel.Session, within time.Duration) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(within):
		t.Fatalf("tunnel still up after %v", within)
	}
}

// records returns the audit records of an event.
func (e *env) records(event string) []audit.Record {
	var out []audit.Record
	for _, r := range e.audit.records() {
		if r.Event == event {
			out = append(out, r)
		}
	}
	return out
}

// TestJoinTokenThiefWithOneKey: a thief who holds the join token and joins with a key of its own opens at most
// --max-tunnels-per-connector tunnels (4 of 100), gets exactly its identity's share of requests (half, next to the
// real connector), and never evicts the real connector.
func TestJoinTokenThiefWithOneKey(t *testing.T) {
	e, clock := newFastEnv(t, nil)
	tok := e.connectorToken("prod", time.Hour)
	e.startConnector("real", staticToken(tok), nil)
	e.waitConnectors(1, 10*time.Second)
	real := e.g.ConnectorSessions("prod")[0]

	thief := e.rawConnector()
	jr := thief.mustJoin(tok, clock.Now())
	// Tunnels over the identity's bound are refused; past 64 attempts in 2 minutes, the key's quota of proofs is
	// spent too (its join took one place).
	opened, overTunnels, overQuota := 0, 0, 0
	tunnelLimit := fmt.Sprintf(`connector identity %s already has 4 tunnels to cluster "prod", the most allowed (--max-tunnels-per-connector); retry once one has ended`, thief.id)
	quota := fmt.Sprintf("connector key %s made more than 64 joins and tunnels in 2m0s; retry later", thief.id)
	for range 100 {
		_, err := thief.dial(jr.Credential, clock.Now())
		if err == nil {
			opened++
			continue
		}
		switch code, msg := refusal(t, err); {
		case code == http.StatusTooManyRequests && msg == tunnelLimit:
			overTunnels++
		case code == http.StatusTooManyRequests && msg == quota:
			overQuota++
		default:
			t.Fatalf("tunnel refused with %d %q", code, msg)
		}
	}
	if opened != 4 || overTunnels != 59 || overQuota != 37 || e.g.Connectors("prod") != 5 || e.g.ConnectorIdentities("prod") != 2 {
		t.Fatalf("thief opened %d tunnels (%d refused for the tunnel bound, %d for the key's quota); cluster has %d tunnels, %d identities",
			opened, overTunnels, overQuota, e.g.Connectors("prod"), e.g.ConnectorIdentities("prod"))
	}
	served := map[string]int{}
	caller := e.callerToken()
	for range 100 {
		code, by := e.listPods(caller)
		if code != http.StatusOK {
			t.Fatalf("status %d %s", code, by)
		}
		served[by]++
	}
	if served["real"] != 50 || served["rogue"] != 50 {
		t.Fatalf("served %v: the thief's 4 tunnels must buy no more than its identity's half", served)
	}
	if now := e.g.ConnectorSessions("prod")[0]; now.Session != real.Session || now.Identity != real.Identity {
		t.Fatalf("the real connector's tunnel changed: %+v, was %+v", now, real)
	}
	if n := len(e.records(audit.EventConnectorTunnelDeny)); n != 96 {
		t.Fatalf("%d refused tunnels audited, want 96", n)
	}
}

// TestJoinTokenThiefWithManyKeys: a thief joining with 100 keys gets the free identity slots only (7 of the 8), each
// audited as a new identity with its address; the real connector is never evicted and comes back as itself after
// losing its tunnel even while every slot is taken; identities without tunnels give their slot up after the linger.
func TestJoinTokenThiefWithManyKeys(t *testing.T) {
	e, clock := newFastEnv(t, nil)
	tok := e.connectorToken("prod", time.Hour)
	_, realKey, _ := ed25519.GenerateKey(rand.Reader)
	real := e.startConnector("real", staticToken(tok), func(c *connector.Config) { c.Key = realKey })
	e.waitConnectors(1, 10*time.Second)

	joined := 0
	for range 100 {
		thief := e.rawConnector()
		code, _, msg := thief.join(tok, clock.Now())
		if code == http.StatusOK {
			joined++
			continue
		}
		want := fmt.Sprintf(`cluster "prod" already has 8 connector identities, the most allowed (--max-connector-identities): a new one (%s) is refused while they live; if they are not all yours, revoke the join token (--revoked-connectors)`, thief.id)
		if code != http.StatusTooManyRequests || msg != want {
			t.Fatalf("join refused with %d %q, want 429 %q", code, msg, want)
		}
	}
	if joined != 7 || e.g.ConnectorIdentities("prod") != 8 {
		t.Fatalf("thief joined %d identities; cluster has %d", joined, e.g.ConnectorIdentities("prod"))
	}
	news := e.records(audit.EventConnectorIdentityNew)
	if len(news) != 8 {
		t.Fatalf("%d new identities audited, want 8", len(news))
	}
	for _, r := range news {
		if r.Cluster != "prod" || r.SourceIP != "127.0.0.1" || r.Connector == nil || r.Connector.Identity == "" ||
			r.Connector.CredentialID == "" || r.Connector.JoinTokenID != tokenID(t, tok) || r.Decision != audit.DecisionAllow {
			t.Fatalf("new identity record %+v %+v", r, r.Connector)
		}
	}
	if n := len(e.records(audit.EventConnectorJoinRefused)); n != 93 {
		t.Fatalf("%d refused joins audited, want 93", n)
	}

	// The real connector loses its tunnel and restarts with its key: its identity kept its slot.
	real.stop()
	e.waitConnectors(0, 5*time.Second)
	e.startConnector("real-again", staticToken(tok), func(c *connector.Config) { c.Key = realKey })
	e.waitConnectors(1, 10*time.Second)
	if code, by := e.listPods(e.callerToken()); code != http.StatusOK || by != "real-again" {
		t.Fatalf("after the restart: %d %s", code, by)
	}
	if e.g.ConnectorIdentities("prod") != 8 {
		t.Fatalf("identities %d after the real connector came back, want 8", e.g.ConnectorIdentities("prod"))
	}

	// The thief's identities hold no tunnel: after the linger (2 min) their slots are free again.
	clock.Add(2*time.Minute + time.Second)
	wait.Until(t, 5*time.Second, "idle identities give their slots up", func() bool { return e.g.ConnectorIdentities("prod") == 1 })
}

// TestRecheckEndsTunnels: a live tunnel ends within the check interval once its credential expired unrenewed, its
// identity or join token is revoked, or the key that signed its join token leaves --connector-keys; each end is
// logged and audited with the reason.
func TestRecheckEndsTunnels(t *testing.T) {
	cases := []struct {
		name  string
		do    func(e *env, clock *fakeClock, c *rawConnector, join string)
		want  func(e *env, c *rawConnector, join string) string
		label string
	}{
		{"credential expired", func(e *env, clock *fakeClock, _ *rawConnector, _ string) { clock.Add(time.Hour) },
			func(e *env, _ *rawConnector, _ string) string { return "its credential expired at " }, "credential_expired"},
		{"join token revoked", func(e *env, _ *fakeClock, _ *rawConnector, join string) { e.revoke(tokenID(e.t, join)) },
			func(e *env, _ *rawConnector, join string) string {
				return fmt.Sprintf(`its join token is no longer valid: token %q has been revoked`, tokenID(e.t, join))
			}, "join_token_revoked"},
		{"identity revoked", func(e *env, _ *fakeClock, c *rawConnector, _ string) { e.revoke(c.id) },
			func(e *env, c *rawConnector, _ string) string {
				return fmt.Sprintf(`connector identity %q has been revoked`, c.id)
			}, "identity_revoked"},
		{"signing key removed", func(e *env, _ *fakeClock, _ *rawConnector, _ string) {
			other := e.t.TempDir()
			auth.GenerateKeyPair(other)
			copyFile(e.t, filepath.Join(other, auth.PublicKeyFile), e.keysFile+".new")
			os.Rename(e.keysFile+".new", e.keysFile)
		}, func(e *env, _ *rawConnector, _ string) string {
			return fmt.Sprintf(`its join token is no longer valid: token is signed by key id %q, which is no longer trusted`, e.issuer.KeyID)
		}, "join_token_key_untrusted"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			e, clock := newFastEnv(t, func(cfg *gateway.Config) { cfg.Metrics = reg })
			join := e.connectorToken("prod", 2*time.Hour)
			rc := e.rawConnector()
			jr := rc.mustJoin(join, clock.Now())
			s, err := rc.dial(jr.Credential, clock.Now())
			if err != nil {
				t.Fatal(err)
			}
			e.waitConnectors(1, time.Second)
			c.do(e, clock, rc, join)
			// The check runs every 20 ms and the files are looked at every 20 ms: well within a second.
			waitEnded(t, s, time.Second)
			e.waitConnectors(0, time.Second)
			wait.Until(t, time.Second, "the end audited", func() bool { return len(e.records(audit.EventConnectorTunnelEnd)) == 1 })
			end := e.records(audit.EventConnectorTunnelEnd)[0]
			if want := c.want(e, rc, join); !strings.HasPrefix(end.Reason, want) || end.Connector.Identity != rc.id ||
				end.Connector.CredentialID != jr.CredentialID || end.Connector.Started == nil || end.SourceIP != "127.0.0.1" {
				t.Fatalf("tunnel end record %+v %+v, want reason %q", end, end.Connector, want)
			}
			if logs := e.logs.String(); !strings.Contains(logs, `level=WARN msg="connector identity ended: `) || !strings.Contains(logs, "reason=") {
				t.Fatalf("no log line of the end")
			}
			if got := counter(t, reg, "warren_gateway_connector_tunnels_ended_total", map[string]string{"cluster": "prod", "reason": c.label}); got != 1 {
				t.Fatalf("tunnels ended{reason=%s} = %v", c.label, got)
			}
			// Nor can it come back with what it holds.
			if _, err := rc.dial(jr.Credential, clock.Now()); err == nil {
				t.Fatal("the ended identity opened a tunnel again")
			}
		})
	}
}

// TestRenewalKeepsTheTunnel (in a synctest bubble): the connector renews its credential (lifetime 2 s here) at two
// thirds of its lifetime, again and again for a minute, on the same tunnel: each before the one it holds expires,
// no reconnect, and the tunnel outlives its first thirty credentials.
func TestRenewalKeepsTheTunnel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnvOn(t, memoryNet(t), func(c *gateway.Config, _ *auth.VerifierConfig) {
			c.Connectors.CredentialTTL = 2 * time.Second
			c.Connectors.CheckInterval = 50 * time.Millisecond
		})
		tok := e.connectorToken("prod", time.Hour)
		r := e.startConnector("a", staticToken(tok), nil)
		e.waitConnectors(1, 10*time.Second)
		first := e.g.ConnectorSessions("prod")[0]
		joined := time.Now()
		time.Sleep(time.Minute) // thirty lifetimes of a credential
		synctest.Wait()
		// Each credential was renewed before it expired: no two renewals (nor the join and the first) are a
		// lifetime apart.
		renewals := e.records(audit.EventConnectorRenewed)
		if len(renewals) < 30 {
			t.Fatalf("%d renewals in a minute of 2 s credentials", len(renewals))
		}
		last := joined
		for i, rec := range renewals {
			if gap := rec.Time.Sub(last); gap >= 2*time.Second {
				t.Fatalf("renewal %d came %v after the one before: its credential had expired", i, gap)
			}
			last = rec.Time
		}
		now := e.g.ConnectorSessions("prod")
		if len(now) != 1 || now[0].Session != first.Session || !r.c.Connected() {
			t.Fatalf("tunnels %+v, want the first one (%s) still", now, first.Session)
		}
		if n := len(e.records(audit.EventConnectorTunnelEnd)); n != 0 {
			t.Fatalf("%d tunnels ended", n)
		}
		for _, rec := range e.records(audit.EventConnectorRenewed) {
			if rec.Connector.Identity != r.c.Identity() || rec.Connector.CredentialID == first.CredentialID {
				t.Fatalf("renewal record %+v", rec.Connector)
			}
		}
	})
}

// TestRotationWithoutRestart (in a bubble): a new join token in the connector's token file is used at the next renewal; the old
// one can then be revoked without the connector losing its tunnel, and the old token joins nobody any more.
func TestRotationWithoutRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnvOn(t, memoryNet(t), func(c *gateway.Config, _ *auth.VerifierConfig) {
			c.Connectors.CredentialTTL = 2 * time.Second
			c.Connectors.CheckInterval = 50 * time.Millisecond
		})
		old, rotated := e.connectorToken("prod", time.Hour), e.connectorToken("prod", time.Hour)
		var current atomic.Value
		current.Store(old)
		r := e.startConnector("a", func() (string, error) { return current.Load().(string), nil }, nil)
		e.waitConnectors(1, 10*time.Second)
		session := e.g.ConnectorSessions("prod")[0].Session

		current.Store(rotated) // the Secret is updated; the connector re-reads its token file at the next renewal
		wait.Until(t, 5*time.Second, "a renewal with the new join token", func() bool {
			for _, rec := range e.records(audit.EventConnectorRenewed) {
				if rec.Connector.JoinTokenID == tokenID(t, rotated) {
					return true
				}
			}
			return false
		})
		e.revoke(tokenID(t, old))
		for range 20 { // 20 × 50 ms: twenty re-checks
			time.Sleep(50 * time.Millisecond)
			if s := e.g.ConnectorSessions("prod"); len(s) != 1 || s[0].Session != session || !r.c.Connected() {
				t.Fatalf("tunnels after revoking the old token: %+v", s)
			}
		}
		thief := e.rawConnector()
		if code, _, msg := thief.join(old, time.Now()); code != http.StatusUnauthorized || msg != fmt.Sprintf(`invalid connector token: token %q has been revoked`, tokenID(t, old)) {
			t.Fatalf("join with the revoked token: %d %q", code, msg)
		}
	})
}

// TestJoinTokenAboutToExpire: a join token with less than a second left gets no credential (the answer gives its
// lifetime in whole seconds: 0), but a refusal that says why; with a second left it gets a one-second credential.
// (The connector used to get a credential of 0 s and report "the gateway's answer holds no credential".)
func TestJoinTokenAboutToExpire(t *testing.T) {
	e, clock := newFastEnv(t, nil)
	tok := e.connectorToken("prod", time.Hour)
	exp := expiry(t, tok)
	rc := e.rawConnector()
	clock.Add(time.Until(exp) - time.Second)
	if jr := rc.mustJoin(tok, clock.Now()); jr.ExpiresIn != 1 {
		t.Fatalf("a join a second before the token expires: a credential for %d s, want 1", jr.ExpiresIn)
	}
	clock.Add(time.Second / 2)
	want := "invalid connector token: token expires at " + exp.UTC().Format(time.RFC3339) +
		", in under a second, too soon to issue a credential: put a new one in the connector's token file"
	if code, _, msg := rc.join(tok, clock.Now()); code != http.StatusUnauthorized || msg != want {
		t.Fatalf("a join half a second before the token expires: %d %q, want 401 %q", code, msg, want)
	}
}

// TestReplayedProofIsRefused: a proof of possession is good for one request, at /connect/join and at /connect.
func TestReplayedProofIsRefused(t *testing.T) {
	e, clock := newFastEnv(t, nil)
	tok := e.connectorToken("prod", time.Hour)
	rc := e.rawConnector()
	p := rc.proof("POST", wire.PathJoin, tok, clock.Now())
	code, jr, msg, _ := rc.joinWith(tok, p)
	if code != http.StatusOK {
		t.Fatalf("join: %d %s", code, msg)
	}
	var claims auth.ProofClaims
	parseUnverified(t, p, &claims)
	if code, _, msg, _ := rc.joinWith(tok, p); code != http.StatusUnauthorized ||
		msg != fmt.Sprintf("proof of possession %q was already used: a proof is good for one request", claims.ID) {
		t.Fatalf("replayed join proof: %d %q", code, msg)
	}
	dp := rc.proof("GET", wire.PathConnect, jr.Credential, clock.Now())
	if _, err := rc.dialWith(jr.Credential, dp); err != nil {
		t.Fatal(err)
	}
	parseUnverified(t, dp, &claims)
	_, err := rc.dialWith(jr.Credential, dp)
	if code, msg := refusal(t, err); code != http.StatusUnauthorized ||
		msg != fmt.Sprintf("proof of possession %q was already used: a proof is good for one request", claims.ID) {
		t.Fatalf("replayed tunnel proof: %d %q", code, msg)
	}
	// After the window the proof is refused for its age, so the cache may forget it.
	clock.Add(3 * time.Minute)
	if code, _, msg, _ := rc.joinWith(tok, p); code != http.StatusUnauthorized || !strings.HasPrefix(msg, "invalid proof of possession: proof of possession was issued at ") {
		t.Fatalf("old proof: %d %q", code, msg)
	}
}

// TestConnectorRefusals: every way in that is refused, with its status and message.
func TestConnectorRefusals(t *testing.T) {
	reg := prometheus.NewRegistry()
	e, clock := newFastEnv(t, func(c *gateway.Config) { c.Metrics = reg })
	tok := e.connectorToken("prod", time.Hour)
	rc := e.rawConnector()
	jr := rc.mustJoin(tok, clock.Now())
	other := e.rawConnector()
	caller := e.callerToken()
	expired, err := e.issuer.IssueConnector("prod", time.Hour, time.Now().Add(-time.Hour-10*time.Second)) // within the 30 s leeway
	if err != nil {
		t.Fatal(err)
	}
	foreignKey, _ := auth.NewSigningKey(rc.key) // any key but the gateway's
	foreignJoin := &auth.Claims{Warren: auth.Scope{Clusters: []string{"prod"}}}
	foreignJoin.ID, foreignJoin.ExpiresAt = "j", jwt.NewNumericDate(clock.Now().Add(time.Hour))
	foreignCred, _, err := foreignKey.IssueConnectorCredential(auth.CredentialOptions{Identity: rc.id, Join: foreignJoin, TTL: time.Hour, Now: clock.Now()})
	if err != nil {
		t.Fatal(err)
	}

	joins := []struct {
		name, token, proof string
		code               int
		msg                string
	}{
		{"no token", "", "", 401, `missing connector token: send it as "Authorization: Bearer <token>" (warren token connector makes one)`},
		{"caller token", caller, rc.proof("POST", wire.PathJoin, caller, clock.Now()), 401, `invalid connector token: token audience [warren] does not include "warren-connector"`},
		{"no proof", tok, "", 401, "invalid proof of possession: no proof of possession (DPoP header)"},
		{"proof for another token", tok, rc.proof("POST", wire.PathJoin, "other", clock.Now()), 401,
			"invalid proof of possession: proof of possession is for another token (ath does not match the token sent with it)"},
		{"proof for the tunnel", tok, rc.proof("GET", wire.PathJoin, tok, clock.Now()), 401, `invalid proof of possession: proof of possession is for method "GET", the request is POST`},
		{"expired token within the leeway", expired, rc.proof("POST", wire.PathJoin, expired, clock.Now()), 401, "invalid connector token: token expired at " +
			time.Unix(tokenExp(t, expired), 0).UTC().Format(time.RFC3339)},
	}
	for _, c := range joins {
		t.Run("join "+c.name, func(t *testing.T) {
			code, _, msg, h := rc.joinWith(c.token, c.proof)
			if code != c.code || msg != c.msg {
				t.Fatalf("%d %q, want %d %q", code, msg, c.code, c.msg)
			}
			if _, err := http.ParseTime(h.Get("Date")); err != nil {
				t.Fatalf("no Date for the connector's clock: %v", err)
			}
		})
	}

	tunnels := []struct {
		name   string
		header http.Header
		code   int
		msg    string
	}{
		{"no credential", http.Header{}, 401, `missing connector credential: send "Authorization: DPoP <credential>" with a proof of possession, as warren connector does`},
		{"join token as credential", http.Header{"Authorization": {"DPoP " + tok}, wire.HeaderProof: {rc.proof("GET", wire.PathConnect, tok, clock.Now())}}, 401,
			`invalid connector credential: token of type "JWT" is not a connector credential`},
		{"another gateway's credential", http.Header{"Authorization": {"DPoP " + foreignCred}, wire.HeaderProof: {rc.proof("GET", wire.PathConnect, foreignCred, clock.Now())}}, 401,
			fmt.Sprintf(`invalid connector credential: connector credential is signed by key %q, not by this gateway's key %q (the gateway restarted with another key?)`, foreignKey.KeyID, gatewayKeyID(t, jr.Credential))},
		{"no proof", http.Header{"Authorization": {"DPoP " + jr.Credential}}, 401, "invalid proof of possession: no proof of possession (DPoP header)"},
		{"stolen credential, thief's own proof", http.Header{"Authorization": {"DPoP " + jr.Credential}, wire.HeaderProof: {other.proof("GET", wire.PathConnect, jr.Credential, clock.Now())}}, 401,
			fmt.Sprintf("invalid proof of possession: it is signed by key %s, but the credential is bound to key %s", other.id, rc.id)},
		{"proof for the join", http.Header{"Authorization": {"DPoP " + jr.Credential}, wire.HeaderProof: {rc.proof("GET", wire.PathJoin, jr.Credential, clock.Now())}}, 401,
			fmt.Sprintf(`invalid proof of possession: proof of possession is for %s/connect/join, not for this request (host %q, path "/connect")`, e.srv.URL, strings.TrimPrefix(e.srv.URL, "http://"))},
	}
	for _, c := range tunnels {
		t.Run("tunnel "+c.name, func(t *testing.T) {
			_, err := e.rogue(c.header)
			if code, msg := refusal(t, err); code != c.code || msg != c.msg {
				t.Fatalf("%d %q, want %d %q", code, msg, c.code, c.msg)
			}
		})
	}

	// Revocations refuse at the door too: the identity (403) and its join token (401, the connector joins again).
	e.revoke(rc.id)
	wait.Until(t, 5*time.Second, "the revocation list read again", func() bool { return e.isRevoked(rc.id) })
	wantRevoked := fmt.Sprintf(`connector identity %q has been revoked (--revoked-connectors); to give this connector a new identity, delete its key (connector.key in its --state-dir)`, rc.id)
	if code, _, msg := rc.join(tok, clock.Now()); code != http.StatusForbidden || msg != wantRevoked {
		t.Fatalf("join of a revoked identity: %d %q", code, msg)
	}
	_, err = rc.dial(jr.Credential, clock.Now())
	if code, msg := refusal(t, err); code != http.StatusForbidden || msg != wantRevoked {
		t.Fatalf("tunnel of a revoked identity: %d %q", code, msg)
	}
	jr2 := other.mustJoin(tok, clock.Now())
	e.revoke(tokenID(t, tok))
	wait.Until(t, 5*time.Second, "the revocation list read again", func() bool { return e.isRevoked(tokenID(t, tok)) })
	_, err = other.dial(jr2.Credential, clock.Now())
	if code, msg := refusal(t, err); code != http.StatusUnauthorized || msg != fmt.Sprintf(`the connector's join token is no longer valid: token %q has been revoked`, tokenID(t, tok)) {
		t.Fatalf("tunnel with a revoked join token: %d %q", code, msg)
	}
	if got := counter(t, reg, "warren_gateway_connector_refusals_total", map[string]string{"cluster": "-", "endpoint": "join", "reason": "join_token"}); got != 3 {
		t.Fatalf("join refusals before the cluster was known = %v, want 3", got)
	}
	if got := counter(t, reg, "warren_gateway_connector_refusals_total", map[string]string{"cluster": "prod", "endpoint": "tunnel", "reason": "identity_revoked"}); got != 1 {
		t.Fatalf("identity_revoked refusals = %v", got)
	}
}

// TestCredentialSurvivesAGatewayRestartWithItsKey: a restarted gateway with the same signing key takes a
// connector's tunnel on its credential (the identity is taken up again); with another key, the credential is refused
// and the connector joins again.
func TestCredentialSurvivesAGatewayRestartWithItsKey(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	key, _ := auth.NewSigningKey(priv)
	e, clock := newFastEnv(t, func(c *gateway.Config) { c.SigningKey = key })
	tok := e.connectorToken("prod", time.Hour)
	rc := e.rawConnector()
	jr := rc.mustJoin(tok, clock.Now())
	e2 := e.restarted(func(c *gateway.Config) { c.SigningKey = key })
	rc.e = e2
	if _, err := rc.dial(jr.Credential, clock.Now()); err != nil {
		t.Fatalf("credential after a restart with the same key: %v", err)
	}
	if e2.g.ConnectorIdentities("prod") != 1 {
		t.Fatalf("identities %d", e2.g.ConnectorIdentities("prod"))
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherKey, _ := auth.NewSigningKey(other)
	e3 := e.restarted(func(c *gateway.Config) { c.SigningKey = otherKey })
	rc.e = e3
	_, err := rc.dial(jr.Credential, clock.Now())
	if code, msg := refusal(t, err); code != http.StatusUnauthorized || !strings.HasPrefix(msg, fmt.Sprintf("invalid connector credential: connector credential is signed by key %q, not by this gateway's key", key.KeyID)) {
		t.Fatalf("credential at a gateway with another key: %d %q", code, msg)
	}
}

// TestConnectorMetricsAndLogs: each tunnel's identity, credential, join token, remote address and start are in the
// metrics and logs.
func TestConnectorMetricsAndLogs(t *testing.T) {
	reg := prometheus.NewRegistry()
	e, _ := newFastEnv(t, func(c *gateway.Config) { c.Metrics = reg })
	tok := e.connectorToken("prod", time.Hour)
	r := e.startConnector("a", staticToken(tok), nil)
	e.waitConnectors(1, 10*time.Second)
	s := e.g.ConnectorSessions("prod")[0]
	if s.Identity != r.c.Identity() || s.JoinTokenID != tokenID(t, tok) || s.CredentialID == "" || s.Name != "a" || !strings.HasPrefix(s.Remote, "127.0.0.1:") {
		t.Fatalf("session %+v", s)
	}
	labels := map[string]string{"cluster": "prod", "identity": s.Identity, "session": s.Session, "credential": s.CredentialID,
		"join_token": s.JoinTokenID, "remote": s.Remote}
	if got := gauge(t, reg, "warren_gateway_connector_tunnel_start_time_seconds", labels); got != float64(s.Started.UnixNano())/1e9 {
		t.Fatalf("tunnel start %v, want %v", got, s.Started)
	}
	if got := gauge(t, reg, "warren_gateway_connector_identities", map[string]string{"cluster": "prod"}); got != 1 {
		t.Fatalf("identities %v", got)
	}
	for _, want := range []string{"identity=" + s.Identity, "credential=" + s.CredentialID, "join_token=" + s.JoinTokenID, "remote=" + s.Remote, "session=" + s.Session} {
		if !strings.Contains(e.logs.String(), want) {
			t.Fatalf("gateway logs lack %s", want)
		}
	}
	open := e.records(audit.EventConnectorTunnelOpen)
	if len(open) != 1 || open[0].Status != http.StatusSwitchingProtocols || open[0].Connector.Session != s.Session || open[0].TokenID != s.CredentialID {
		t.Fatalf("tunnel open records %+v", open)
	}
	r.stop()
	e.waitConnectors(0, 5*time.Second)
	wait.Until(t, time.Second, "the series of the ended tunnel removed", func() bool {
		return gauge(t, reg, "warren_gateway_connector_tunnel_start_time_seconds", labels) == -1
	})
}

// restarted starts another gateway like e's (same keys and lists), as after a restart.
func (e *env) restarted(mod func(*gateway.Config)) *env {
	e.t.Helper()
	e2 := *e
	e2.audit, e2.logs = &memAudit{}, &testlog.Buffer{}
	connKeys, err := auth.NewKeyFiles(20*time.Millisecond, e.keysFile)
	if err != nil {
		e.t.Fatal(err)
	}
	list, err := auth.NewRevocationList(e.revoked, 20*time.Millisecond)
	if err != nil {
		e.t.Fatal(err)
	}
	cv, err := auth.NewVerifier(auth.VerifierConfig{Keys: connKeys, Audience: auth.AudienceConnector, Revoked: list.Revoked})
	if err != nil {
		e.t.Fatal(err)
	}
	callerKeys, _ := auth.LoadPublicKeys(filepath.Join(e.dir, auth.PublicKeyFile))
	callers, _ := auth.NewVerifier(auth.VerifierConfig{Keys: callerKeys, Audience: auth.AudienceCaller})
	cfg := gateway.Config{CallerVerifier: callers, ConnectorVerifier: cv, SigningKey: e.gwKey, Audit: e2.audit, Clusters: []string{"prod"},
		Logger: slogTo(e2.logs)}
	cfg.Connectors.CheckInterval = 20 * time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	e2.g, err = gateway.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e2.srv = newServer(e.t, e2.g)
	return &e2
}

func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	return metricValue(t, reg, name, labels, func(m metricSample) float64 { return m.counter })
}

func gauge(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	return metricValue(t, reg, name, labels, func(m metricSample) float64 { return m.gauge })
}

func parseUnverified(t *testing.T, tok string, claims jwt.Claims) *jwt.Token {
	t.Helper()
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, claims)
	if err != nil {
		t.Fatal(err)
	}
	return parsed
}

func tokenExp(t *testing.T, tok string) int64 {
	var c auth.Claims
	parseUnverified(t, tok, &c)
	return c.ExpiresAt.Unix()
}

// gatewayKeyID is the key id that signed a credential: the gateway's.
func gatewayKeyID(t *testing.T, cred string) string {
	var c auth.CredentialClaims
	kid, _ := parseUnverified(t, cred, &c).Header["kid"].(string)
	return kid
}

func slogTo(w *testlog.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newServer(t *testing.T, g *gateway.Gateway) *httptest.Server {
	srv := httptest.NewServer(g)
	t.Cleanup(func() {
		srv.Close()
		g.Close()
	})
	return srv
}

type metricSample struct{ counter, gauge float64 }

// metricValue returns the value of the series of name with exactly labels, or -1 when there is none.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string, pick func(metricSample) float64) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue series
				}
			}
			return pick(metricSample{counter: m.GetCounter().GetValue(), gauge: m.GetGauge().GetValue()})
		}
	}
	return -1
}

// TestProofCacheCannotBeFilledByAThief: joins refused to a thief's fresh keys leave no trace in the replay cache,
// and one key's many tunnels exhaust only that key's quota, so the real connector still gets in.
func TestProofCacheCannotBeFilledByAThief(t *testing.T) {
	e, clock := newFastEnv(t, func(c *gateway.Config) {
		c.Connectors.MaxIdentities, c.Connectors.MaxRememberedProofs, c.Connectors.MaxProofsPerKey = 2, 20, 5
	})
	tok := e.connectorToken("prod", time.Hour)
	real := e.rawConnector()
	realJoin := real.mustJoin(tok, clock.Now())
	thief := e.rawConnector()
	thiefJoin := thief.mustJoin(tok, clock.Now())
	for range 200 { // ten times the cache: each refused for the identity bound
		if code, _, msg := e.rawConnector().join(tok, clock.Now()); code != http.StatusTooManyRequests || !strings.Contains(msg, "already has 2 connector identities") {
			t.Fatalf("thief's join: %d %q", code, msg)
		}
	}
	// The thief's one identity opens and closes tunnels: its quota runs out, not anybody else's.
	busy := 0
	for range 10 {
		s, err := thief.dial(thiefJoin.Credential, clock.Now())
		if err == nil {
			s.Close()
			continue
		}
		code, msg := refusal(t, err)
		if want := fmt.Sprintf("connector key %s made more than 5 joins and tunnels in 2m0s; retry later", thief.id); code != http.StatusTooManyRequests || msg != want {
			t.Fatalf("thief's tunnel: %d %q, want 429 %q", code, msg, want)
		}
		busy++
	}
	if busy != 6 { // one place went to its join
		t.Fatalf("%d of the thief's tunnels refused for its quota, want 6", busy)
	}
	if _, err := real.dial(realJoin.Credential, clock.Now()); err != nil {
		t.Fatalf("the real connector's tunnel: %v", err)
	}
	if code, _, msg := real.join(tok, clock.Now()); code != http.StatusOK {
		t.Fatalf("the real connector's renewal: %d %q", code, msg)
	}
}

// TestJoinTokenExpiryIsWarnedAhead (in a bubble): a connector whose join token expires within a week warns at its
// join and then once a day, saying when and what to do; one whose token has longer says nothing.
func TestJoinTokenExpiryIsWarnedAhead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Two days of the bubble's time: keepalives, checks and renewals spaced out so that they take little real
		// time; the warnings come at renewals all the same.
		quiet := tunnel.Config{PingInterval: time.Hour, KeepAliveInterval: time.Hour}
		e := newEnvOn(t, memoryNet(t), func(c *gateway.Config, _ *auth.VerifierConfig) {
			c.Connectors.CredentialTTL, c.Connectors.CheckInterval, c.Tunnel = 6*time.Hour, time.Hour, quiet
		})
		short, long := e.connectorToken("prod", 50*time.Hour), e.connectorToken("prod", 30*24*time.Hour)
		a := e.startConnector("a", staticToken(short), func(c *connector.Config) { c.Tunnel = quiet })
		b := e.startConnector("b", staticToken(long), func(c *connector.Config) { c.Tunnel = quiet })
		e.waitConnectors(2, 10*time.Second)
		const warning = `level=WARN msg="the join token expires soon: put a new one in the connector's token file before then (warren token connector), or the connector leaves the gateway when it expires"`
		want := fmt.Sprintf(`%s connector=a expires=%s expires_in=50h0m0s join_token=%s`, warning, expiry(t, short).UTC().Format(time.RFC3339), tokenID(t, short))
		if logs := a.logs.String(); !strings.Contains(logs, want) || strings.Count(logs, warning) != 1 {
			t.Fatalf("at the join, want one warning %s; logs:\n%s", want, logs)
		}
		time.Sleep(49 * time.Hour) // renewals all along; a day apart, two more warnings
		synctest.Wait()
		if n := strings.Count(a.logs.String(), warning); n != 3 {
			t.Fatalf("%d warnings in 49 hours, want 3 (at the join, then once a day)", n)
		}
		if strings.Contains(b.logs.String(), warning) {
			t.Fatal("a connector whose join token has a month left warned")
		}
	})
}
