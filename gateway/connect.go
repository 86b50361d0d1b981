package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/auditrec"
	"github.com/warren-dev/warren/internal/wire"
	"github.com/warren-dev/warren/tunnel"
)

// How a connector gets in (docs/connectors.md has the whole design and its threat model):
//
//   - POST /connect/join: the connector presents its join token (the token of `warren token connector`, signed by a
//     --connector-keys key) and a proof of possession of its own Ed25519 key. The gateway admits the identity (the
//     key's thumbprint) within the cluster's bound, and answers a short-lived credential it signs itself, bound to
//     that key, the cluster and the join token. The same call renews it: a known identity gets a fresh credential.
//   - GET /connect: the tunnel, opened with the credential and a fresh proof of possession, within the identity's
//     bound of tunnels.
//   - Every CheckInterval the gateway re-checks every identity: credential expired and not renewed, identity or join
//     token revoked, join token expired or its signing key no longer trusted. Those that fail lose their tunnels.

// ConnectorConfig bounds and times connector identities and their tunnels. The zero value of a field takes the
// default DefaultConnectorConfig documents.
type ConnectorConfig struct {
	// CredentialTTL is the lifetime of the credentials the gateway issues (never past the join token's expiry);
	// connectors renew them at two thirds of it. Default 1 h.
	CredentialTTL time.Duration
	// CheckInterval is how often live identities are re-checked; one that fails loses its tunnels within it.
	// Default auth.DefaultCheckInterval (5 s), the period at which key files and revocation lists are re-read.
	CheckInterval time.Duration
	// MaxIdentities bounds the connector identities of one cluster at once. A newcomer over it is refused (429) and
	// never evicts a live one. Default 8: two chart replicas, a rolling update's surge, and room for pods replaced
	// before their old identity lingers out, or for connectors with several tunnels later.
	MaxIdentities int
	// MaxTunnelsPerIdentity bounds the tunnels of one identity: a connector's own tunnels plus those it opened
	// again before the gateway noticed the old ones dead. Requests spread over identities first, so more tunnels
	// buy no more share. Default 4.
	MaxTunnelsPerIdentity int
	// IdentityLinger is how long an identity without any tunnel keeps its slot, so that a connector that lost its
	// tunnel comes back as itself rather than competing for a slot. Default 2 min (a dead peer is noticed within
	// 25 s, and a connector retries at most 30 s apart).
	IdentityLinger time.Duration
	// ProofWindow is how far from the gateway's time a proof of possession may have been issued, either way.
	// Connectors correct their clock by the gateway's Date header. Default 1 min.
	ProofWindow time.Duration
	// MaxRememberedProofs bounds the proof ids remembered against replay (each for 2 × ProofWindow); when full,
	// joins and tunnels get 503 with Retry-After rather than a forgotten proof being accepted twice. Default 65536.
	// A refused join gives its proof's place back (a replay of it could only earn a credential for a key the
	// replayer does not hold), and one key may hold at most MaxProofsPerKey places, so that a holder of the join
	// token cannot fill the cache and lock the real connector out.
	MaxRememberedProofs int
	// MaxProofsPerKey bounds the proofs one key has remembered at once: its successful joins and tunnels within
	// 2 × ProofWindow. Over it, that key's requests get 429. Default 64.
	MaxProofsPerKey int
}

// DefaultConnectorConfig returns the defaults of ConnectorConfig.
func DefaultConnectorConfig() ConnectorConfig {
	return ConnectorConfig{
		CredentialTTL:         time.Hour,
		CheckInterval:         auth.DefaultCheckInterval,
		MaxIdentities:         8,
		MaxTunnelsPerIdentity: 4,
		IdentityLinger:        2 * time.Minute,
		ProofWindow:           time.Minute,
		MaxRememberedProofs:   1 << 16,
		MaxProofsPerKey:       64,
	}
}

func (c ConnectorConfig) withDefaults() ConnectorConfig {
	d := DefaultConnectorConfig()
	if c.CredentialTTL <= 0 {
		c.CredentialTTL = d.CredentialTTL
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = d.CheckInterval
	}
	if c.MaxIdentities <= 0 {
		c.MaxIdentities = d.MaxIdentities
	}
	if c.MaxTunnelsPerIdentity <= 0 {
		c.MaxTunnelsPerIdentity = d.MaxTunnelsPerIdentity
	}
	if c.IdentityLinger <= 0 {
		c.IdentityLinger = d.IdentityLinger
	}
	if c.ProofWindow <= 0 {
		c.ProofWindow = d.ProofWindow
	}
	if c.MaxRememberedProofs <= 0 {
		c.MaxRememberedProofs = d.MaxRememberedProofs
	}
	if c.MaxProofsPerKey <= 0 {
		c.MaxProofsPerKey = d.MaxProofsPerKey
	}
	return c
}

func (c ConnectorConfig) limits() limits {
	return limits{maxIdentities: c.MaxIdentities, maxTunnels: c.MaxTunnelsPerIdentity, linger: c.IdentityLinger}
}

// connectorRefusal is one way a join or a tunnel is refused: the status, the message, and the metric's reason.
type connectorRefusal struct {
	code       int
	reason     string // metric label
	message    string
	retryAfter int
}

// serveJoin exchanges a join token and a proof of possession for a credential (see the top of this file).
func (g *Gateway) serveJoin(w http.ResponseWriter, r *http.Request) {
	now := g.now()
	w.Header().Set("Date", now.UTC().Format(http.TimeFormat)) // connectors set their proofs' clock by it
	requestID := newID()
	details := &audit.ConnectorDetails{Name: label(r.Header.Get(wire.HeaderConnectorName)), Version: label(r.Header.Get(wire.HeaderConnectorVersion))}
	entry, w, r := auditrec.Begin(g.audit, audit.ComponentGateway, "", requestID, w, r)
	entry.Connector(audit.EventConnectorJoinRefused, "", details)
	cluster := "" // known once the join token verified
	defer func() {
		if err := entry.End(g.audit); err != nil {
			g.log.Error("cannot write the audit log", "request_id", requestID, "err", err)
		}
	}()
	refuse := func(f connectorRefusal) {
		entry.Deny(f.message)
		g.metrics.connectorRefused(g.clusterLabel(cluster), "join", f.reason)
		g.log.Info("connector join refused", "cluster", cluster, "remote", r.RemoteAddr, "connector", details.Name, "identity", details.Identity, "reason", f.message)
		closeAfterRefusal(w, g.door.cfg.RefusalTimeout)
		wire.WriteStatus(w, f.code, f.message, f.retryAfter)
	}
	if g.isClosing() {
		refuse(connectorRefusal{http.StatusServiceUnavailable, "shutting_down", "gateway is shutting down", 5})
		return
	}
	token := wire.BearerToken(r.Header)
	if token == "" {
		refuse(connectorRefusal{http.StatusUnauthorized, "join_token", "missing connector token: send it as \"Authorization: Bearer <token>\" (warren token connector makes one)", 0})
		return
	}
	join, err := g.cfg.ConnectorVerifier.Verify(token)
	if err != nil {
		refuse(connectorRefusal{http.StatusUnauthorized, "join_token", "invalid connector token: " + err.Error(), 0})
		return
	}
	doorOf(r).authenticated()
	if !now.Before(join.ExpiresAt.Time) {
		// Within the verifier's leeway for clock skew, but a credential from it would be expired already.
		refuse(connectorRefusal{http.StatusUnauthorized, "join_token", "invalid connector token: token expired at " + join.ExpiresAt.UTC().Format(time.RFC3339), 0})
		return
	}
	if join.ExpiresAt.Sub(now) < time.Second {
		// A credential ends with its join token, and the answer gives its lifetime in whole seconds: this one would
		// say 0, which no connector can use (it used to be refused as "the gateway's answer holds no credential").
		refuse(connectorRefusal{http.StatusUnauthorized, "join_token", "invalid connector token: token expires at " +
			join.ExpiresAt.UTC().Format(time.RFC3339) + ", in under a second, too soon to issue a credential: put a new one in the connector's token file", 0})
		return
	}
	cluster = join.Warren.Clusters[0]
	entry.Caller(join)
	details.JoinTokenID = join.ID
	entry.Connector(audit.EventConnectorJoinRefused, cluster, details)
	proof, forget, f := g.checkProof(r, token, now)
	if f != nil {
		refuse(*f)
		return
	}
	admitted := false
	defer func() {
		if !admitted {
			forget()
		}
	}()
	details.Identity = proof.KeyID
	if g.cfg.ConnectorVerifier.Revoked(proof.KeyID) {
		refuse(identityRevoked(proof.KeyID))
		return
	}
	ident, created, err := g.reg.join(cluster, proof.KeyID, join, now, g.conn.limits())
	if err != nil {
		refuse(g.limitRefusal(cluster, proof.KeyID, err))
		return
	}
	cred, cc, err := g.key.IssueConnectorCredential(auth.CredentialOptions{Identity: proof.KeyID, Join: join, TTL: g.conn.CredentialTTL, Now: now})
	if err != nil {
		refuse(connectorRefusal{http.StatusInternalServerError, "internal", "cannot issue a connector credential: " + err.Error(), 0})
		return
	}
	exp := cc.ExpiresAt.Time
	g.reg.credential(ident, cc.ID, exp)
	details.CredentialID, details.CredentialExpires = cc.ID, &exp
	event, result := audit.EventConnectorRenewed, "renewed"
	if created {
		event, result = audit.EventConnectorIdentityNew, "new"
	}
	entry.Connector(event, cluster, details)
	g.metrics.joins.WithLabelValues(g.clusterLabel(cluster), result).Inc()
	g.updateGauges(cluster)
	log := g.log.With("cluster", cluster, "identity", proof.KeyID, "credential", cc.ID, "join_token", join.ID, "remote", r.RemoteAddr,
		"connector", details.Name, "version", details.Version)
	if created {
		// A new identity is worth an operator's look: it is either a new connector pod or someone else holding the
		// join token. The audit record says the same.
		log.Info("new connector identity joined", "expires", exp.UTC().Format(time.RFC3339), "identities", g.reg.countIdentities(cluster))
	} else {
		log.Debug("connector credential renewed", "expires", exp.UTC().Format(time.RFC3339))
	}
	admitted = true
	lifetime := exp.Sub(now)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(wire.JoinResponse{
		Credential: cred, CredentialID: cc.ID, Identity: proof.KeyID, Cluster: cluster, NewIdentity: created,
		ExpiresIn: int64(lifetime / time.Second), RenewIn: int64(lifetime * 2 / 3 / time.Second),
	})
}

// checkProof verifies the request's proof of possession for token and remembers it against replay. A join calls
// forget when it refuses the request after all, so that refused attempts hold no place in the cache.
func (g *Gateway) checkProof(r *http.Request, token string, now time.Time) (proof *auth.Proof, forget func(), f *connectorRefusal) {
	proof, err := auth.VerifyProof(r.Header.Get(wire.HeaderProof), auth.ProofRequest{
		Method: r.Method, Host: r.Host, Path: r.URL.Path, Token: token, Now: now, Window: g.conn.ProofWindow,
	})
	if err != nil {
		return nil, nil, &connectorRefusal{http.StatusUnauthorized, "proof", "invalid proof of possession: " + err.Error(), 0}
	}
	switch err := g.proofs.remember(proof.KeyID, proof.ID, now); err {
	case nil:
		return proof, func() { g.proofs.forget(proof.KeyID, proof.ID) }, nil
	case errReplayed:
		return nil, nil, &connectorRefusal{http.StatusUnauthorized, "proof_replayed",
			fmt.Sprintf("proof of possession %q was already used: a proof is good for one request", label(proof.ID)), 0}
	case errKeyBusy:
		return nil, nil, &connectorRefusal{http.StatusTooManyRequests, "busy", fmt.Sprintf(
			"connector key %s made more than %d joins and tunnels in %v; retry later", proof.KeyID, g.conn.MaxProofsPerKey, 2*g.conn.ProofWindow),
			int(g.conn.ProofWindow / time.Second)}
	default:
		return nil, nil, &connectorRefusal{http.StatusServiceUnavailable, "busy", "too many connector handshakes at once; retry shortly", 5}
	}
}

func identityRevoked(id string) connectorRefusal {
	return connectorRefusal{http.StatusForbidden, "identity_revoked", fmt.Sprintf(
		"connector identity %q has been revoked (--revoked-connectors); to give this connector a new identity, delete its key (connector.key in its --state-dir)", id), 0}
}

func (g *Gateway) limitRefusal(cluster, id string, err error) connectorRefusal {
	switch {
	case errors.Is(err, errIdentityLimit):
		return connectorRefusal{http.StatusTooManyRequests, "identity_limit", fmt.Sprintf(
			"cluster %q already has %d connector identities, the most allowed (--max-connector-identities): a new one (%s) is refused while they live; if they are not all yours, revoke the join token (--revoked-connectors)",
			cluster, g.conn.MaxIdentities, id), int(g.conn.IdentityLinger / time.Second)}
	case errors.Is(err, errTunnelLimit):
		return connectorRefusal{http.StatusTooManyRequests, "tunnel_limit", fmt.Sprintf(
			"connector identity %s already has %d tunnels to cluster %q, the most allowed (--max-tunnels-per-connector); retry once one has ended",
			id, g.conn.MaxTunnelsPerIdentity, cluster), 30}
	}
	return connectorRefusal{http.StatusInternalServerError, "internal", err.Error(), 0}
}

// serveConnect authenticates a tunnel (credential and proof of possession), upgrades it and registers it; the
// tunnel's end does the rest.
func (g *Gateway) serveConnect(w http.ResponseWriter, r *http.Request) {
	now := g.now()
	w.Header().Set("Date", now.UTC().Format(http.TimeFormat))
	// The session's id is the gateway's, never the connector's: every assertion sent over this tunnel names it, and
	// the connector learns it from the upgrade's answer, so that no other tunnel's connector accepts them.
	id := newSessionID()
	details := &audit.ConnectorDetails{Session: id, Name: label(r.Header.Get(wire.HeaderConnectorName)), Version: label(r.Header.Get(wire.HeaderConnectorVersion))}
	// Refusals go through the audit's writer; the upgrade takes the plain one, so that the tunnel's connection is
	// not read through the audit's byte counter, which would also keep net/http's buffers of the request alive for
	// the tunnel's whole life.
	raw := w
	entry, w, r := auditrec.Begin(g.audit, audit.ComponentGateway, "", id, w, r)
	entry.Connector(audit.EventConnectorTunnelDeny, "", details)
	cluster := ""
	defer func() {
		if err := entry.End(g.audit); err != nil {
			g.log.Error("cannot write the audit log", "request_id", id, "err", err)
		}
	}()
	refuse := func(f connectorRefusal) {
		entry.Deny(f.message)
		g.metrics.handshakes.WithLabelValues("refused").Inc()
		g.metrics.connectorRefused(g.clusterLabel(cluster), "tunnel", f.reason)
		g.log.Info("connector refused", "cluster", cluster, "remote", r.RemoteAddr, "connector", details.Name, "identity", details.Identity, "reason", f.message)
		closeAfterRefusal(w, g.door.cfg.RefusalTimeout)
		wire.WriteStatus(w, f.code, f.message, f.retryAfter)
	}
	cred := wire.DPoPToken(r.Header)
	if cred == "" {
		msg := "missing connector credential: send \"Authorization: DPoP <credential>\" with a proof of possession, as warren connector does"
		if wire.BearerToken(r.Header) != "" {
			// A connector from before join tokens: its token alone no longer opens a tunnel.
			msg = "a connector token alone no longer opens a tunnel: the connector must exchange it at " + wire.PathJoin +
				" for a credential bound to its key; upgrade the connector to this gateway's version"
		}
		refuse(connectorRefusal{http.StatusUnauthorized, "credential", msg, 0})
		return
	}
	cc, err := g.key.VerifyConnectorCredential(cred, now)
	if err != nil {
		refuse(connectorRefusal{http.StatusUnauthorized, "credential", "invalid connector credential: " + err.Error(), 0})
		return
	}
	doorOf(r).authenticated()
	cluster = cc.Cluster
	details.Identity, details.CredentialID, details.JoinTokenID = cc.Confirmation.KeyThumbprint, cc.ID, cc.Join.ID
	exp := cc.ExpiresAt.Time
	details.CredentialExpires = &exp
	entry.Caller(&auth.Claims{RegisteredClaims: cc.RegisteredClaims})
	entry.Connector(audit.EventConnectorTunnelDeny, cluster, details)
	// A tunnel's proof stays remembered even when the tunnel is refused: replayed later with the credential it came
	// with, it could open one. Only holders of a credential get here, each within its own key's quota.
	proof, _, f := g.checkProof(r, cred, now)
	if f != nil {
		refuse(*f)
		return
	}
	if proof.KeyID != cc.Confirmation.KeyThumbprint {
		refuse(connectorRefusal{http.StatusUnauthorized, "proof", fmt.Sprintf(
			"invalid proof of possession: it is signed by key %s, but the credential is bound to key %s", proof.KeyID, cc.Confirmation.KeyThumbprint), 0})
		return
	}
	if g.cfg.ConnectorVerifier.Revoked(proof.KeyID) {
		refuse(identityRevoked(proof.KeyID))
		return
	}
	if err := g.cfg.ConnectorVerifier.Recheck(cc.Join.Claims(cluster)); err != nil {
		refuse(connectorRefusal{http.StatusUnauthorized, joinFailure(err), "the connector's join token is no longer valid: " + err.Error(), 0})
		return
	}

	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		refuse(connectorRefusal{http.StatusServiceUnavailable, "shutting_down", "gateway is shutting down", 5})
		return
	}
	g.handlers.Add(1)
	g.mu.Unlock()
	handedOver := false // once the tunnel is up, its end (OnEnd below) calls handlers.Done
	defer func() {
		if !handedOver {
			g.handlers.Done()
		}
	}()
	ident, created, res, err := g.reg.reserve(cc, now, g.conn.limits())
	if err != nil {
		refuse(g.limitRefusal(cluster, proof.KeyID, err))
		return
	}
	defer res.cancel() // unless committed below
	if created {
		// The gateway did not know the identity: it restarted (with the same key), or the identity lingered out.
		// Its credential still vouches for it.
		g.log.Info("connector identity taken up again from its credential", "cluster", cluster, "identity", ident.id, "remote", r.RemoteAddr)
	}

	log := g.log.With("cluster", cluster, "connector", details.Name, "identity", ident.id, "credential", cc.ID,
		"join_token", cc.Join.ID, "session", id, "remote", r.RemoteAddr, "version", details.Version)
	tcfg := g.cfg.Tunnel
	tcfg.Logger = log
	raw.Header().Set(wire.HeaderTunnelID, id)
	t, err := tunnel.Upgrade(raw, r, tcfg)
	if errors.Is(err, tunnel.ErrNotTunnel) {
		refuse(connectorRefusal{http.StatusBadRequest, "not_tunnel", err.Error(), 0})
		return
	}
	if err != nil {
		entry.Deny("tunnel upgrade failed: " + err.Error())
		log.Info("tunnel upgrade failed", "err", err)
		return
	}
	cs := newConnectorSession(t, g.cfg.Transport)
	cs.id, cs.cluster, cs.ident, cs.log = id, cluster, ident, log
	cs.credID, cs.joinID = cc.ID, cc.Join.ID
	cs.name, cs.version = details.Name, details.Version
	cs.remote = r.RemoteAddr
	cs.connectedAt = now
	entry.Connector(audit.EventConnectorTunnelOpen, cluster, details)
	entry.Switched()
	if !res.commit(cs) {
		// The sweep ended the identity while the tunnel was upgraded.
		entry.Deny("the connector identity was ended while its tunnel opened")
		cs.close()
		return
	}
	g.metrics.handshakes.WithLabelValues("accepted").Inc()
	g.metrics.sessionOpened(cs)
	g.updateGauges(cluster)
	log.Info("connector connected", "sessions", g.reg.count(cluster), "identities", g.reg.countIdentities(cluster))
	// The handler returns now and the tunnel's end does the rest: a handler held until then would keep net/http's
	// buffers of the connection (about 10 KiB) and a goroutine stack for every idle connector.
	handedOver = true
	t.OnEnd(func() {
		defer g.handlers.Done()
		g.reg.remove(cs, g.now())
		g.updateGauges(cluster)
		cs.close()
		g.sessionEnded(cs)
	})
	select {
	case <-g.closing: // Close ran meanwhile and may not have seen this session
		g.reg.remove(cs, now)
		t.Close()
	default:
	}
}

// sessionEndReason is why the gateway ended a tunnel itself.
type sessionEndReason struct {
	metric  string
	message string
}

// sessionEnded logs, audits and counts the end of a tunnel.
func (g *Gateway) sessionEnded(cs *connectorSession) {
	now := g.now()
	reason := sessionEndReason{metric: "tunnel_ended", message: "the tunnel ended (the connector left or the connection was lost)"}
	if g.isClosing() {
		reason = sessionEndReason{metric: "gateway_closed", message: "the gateway shut down"}
	}
	if r := cs.endReason.Load(); r != nil {
		reason = *r
	}
	g.metrics.sessionClosed(cs, reason.metric)
	cs.log.Info("connector disconnected", "reason", reason.message, "after", now.Sub(cs.connectedAt).Round(time.Millisecond).String(), "sessions", g.reg.count(cs.cluster))
	started := cs.connectedAt
	rec := audit.Record{
		Time: now, Component: audit.ComponentGateway, RequestID: cs.id, Cluster: cs.cluster, Method: http.MethodGet, Path: wire.PathConnect,
		Decision: audit.DecisionAllow, Reason: reason.message, Status: http.StatusSwitchingProtocols, SourceIP: sourceHost(cs.remote),
		TokenID: cs.credID, DurationMS: float64(now.Sub(started).Microseconds()) / 1000, Event: audit.EventConnectorTunnelEnd,
		Connector: &audit.ConnectorDetails{Identity: cs.ident.id, CredentialID: cs.credID, JoinTokenID: cs.joinID, Session: cs.id,
			Started: &started, Name: cs.name, Version: cs.version},
	}
	if err := g.audit.Write(rec); err != nil {
		g.log.Error("cannot write the audit log", "request_id", cs.id, "err", err)
	}
}

// sweepLoop re-checks connector identities every CheckInterval until Close.
func (g *Gateway) sweepLoop() {
	defer g.sweeper.Done()
	t := time.NewTicker(g.conn.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-g.closing:
			return
		case <-t.C:
			g.sweep()
		}
	}
}

// sweep ends the tunnels of every identity that no longer passes (recheck), and frees the slots of identities that
// lingered without a tunnel.
func (g *Gateway) sweep() {
	now := g.now()
	g.proofs.purge(now)
	for _, ident := range g.reg.identities() {
		st := g.reg.state(ident, now, g.conn.IdentityLinger)
		if st.forgotten {
			continue
		}
		reason := g.recheck(ident, st, now)
		if reason == nil {
			if st.idle {
				g.reg.forget(ident)
				g.updateGauges(ident.cluster)
				g.log.Debug("connector identity without tunnels gave its slot up", "cluster", ident.cluster, "identity", ident.id)
			}
			continue
		}
		sessions := g.reg.forget(ident)
		g.updateGauges(ident.cluster)
		g.log.Warn("connector identity ended: "+reason.message, "cluster", ident.cluster, "identity", ident.id, "sessions", len(sessions))
		for _, cs := range sessions {
			cs.endReason.Store(reason)
			cs.tunnel.Close() // OnEnd logs and audits each, with the reason
		}
	}
}

// recheck tells why an identity no longer holds, or nil.
func (g *Gateway) recheck(ident *identity, st identityState, now time.Time) *sessionEndReason {
	if !now.Before(st.credExp) && !st.credExp.IsZero() {
		return &sessionEndReason{"credential_expired", fmt.Sprintf("its credential expired at %s and was not renewed", st.credExp.UTC().Format(time.RFC3339))}
	}
	if g.cfg.ConnectorVerifier.Revoked(ident.id) {
		return &sessionEndReason{"identity_revoked", fmt.Sprintf("connector identity %q has been revoked", ident.id)}
	}
	if err := g.cfg.ConnectorVerifier.Recheck(st.join); err != nil {
		return &sessionEndReason{joinFailure(err), "its join token is no longer valid: " + err.Error()}
	}
	return nil
}

// joinFailure is the metric reason of a join token that no longer holds.
func joinFailure(err error) string {
	switch {
	case errors.Is(err, auth.ErrRevoked):
		return "join_token_revoked"
	case errors.Is(err, auth.ErrUntrustedKey):
		return "join_token_key_untrusted"
	case errors.Is(err, auth.ErrExpired):
		return "join_token_expired"
	}
	return "join_token_invalid"
}

// proofCache remembers the proofs of possession seen while they are fresh, so that none is accepted twice. Entries
// are counted per key: one key cannot take more than perKey places.
type proofCache struct {
	mu     sync.Mutex
	seen   map[proofKey]time.Time // -> when it may be forgotten
	perKey map[string]int
	keep   time.Duration
	limit  int
	keyCap int
}

type proofKey struct{ key, id string }

var (
	errReplayed        = errors.New("proof replayed")
	errKeyBusy         = errors.New("too many proofs of this key")
	errReplayCacheFull = errors.New("proof cache full")
)

func newProofCache(window time.Duration, limit, perKey int) *proofCache {
	// A proof is accepted while its iat is within window of the gateway's time: from iat - window to iat + window.
	return &proofCache{seen: make(map[proofKey]time.Time), perKey: make(map[string]int), keep: 2 * window, limit: limit, keyCap: perKey}
}

func (c *proofCache) remember(key, id string, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := proofKey{key, id}
	if until, ok := c.seen[k]; ok && now.Before(until) {
		return errReplayed
	}
	if c.perKey[key] >= c.keyCap || len(c.seen) >= c.limit {
		c.purgeLocked(now)
	}
	if c.perKey[key] >= c.keyCap {
		return errKeyBusy
	}
	if len(c.seen) >= c.limit {
		return errReplayCacheFull
	}
	if _, ok := c.seen[k]; !ok {
		c.perKey[key]++
	}
	c.seen[k] = now.Add(c.keep)
	return nil
}

// forget gives a refused join's place back: presented again, its proof could at most earn a credential bound to a
// key the replayer does not hold.
func (c *proofCache) forget(key, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked(proofKey{key, id})
}

func (c *proofCache) purge(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.purgeLocked(now)
}

func (c *proofCache) purgeLocked(now time.Time) {
	for k, until := range c.seen {
		if !now.Before(until) {
			c.dropLocked(k)
		}
	}
}

func (c *proofCache) dropLocked(k proofKey) {
	if _, ok := c.seen[k]; !ok {
		return
	}
	delete(c.seen, k)
	if c.perKey[k.key]--; c.perKey[k.key] <= 0 {
		delete(c.perKey, k.key)
	}
}

// label bounds what a connector says of itself (name, version) before it goes into logs, audit and metrics: at
// most 64 printable ASCII bytes.
func label(s string) string {
	const max = 64
	b := make([]byte, 0, min(len(s), max))
	for i := 0; i < len(s) && len(b) < max; i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		b = append(b, c)
	}
	return string(b)
}

func sourceHost(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// ConnectorSession describes one live tunnel, for status pages and tests.
type ConnectorSession struct {
	Cluster, Identity, Session, CredentialID, JoinTokenID string
	Name, Version, Remote                                 string
	Started                                               time.Time
}

// ConnectorSessions returns the live tunnels of a cluster, oldest identity first.
func (g *Gateway) ConnectorSessions(cluster string) []ConnectorSession {
	var out []ConnectorSession
	for _, grp := range g.reg.groups(cluster) {
		for _, cs := range grp.sessions {
			out = append(out, ConnectorSession{Cluster: cs.cluster, Identity: cs.ident.id, Session: cs.id, CredentialID: cs.credID,
				JoinTokenID: cs.joinID, Name: cs.name, Version: cs.version, Remote: cs.remote, Started: cs.connectedAt})
		}
	}
	return out
}

// ConnectorIdentities returns the number of connector identities holding a slot of a cluster.
func (g *Gateway) ConnectorIdentities(cluster string) int { return g.reg.countIdentities(cluster) }

func (g *Gateway) isClosing() bool {
	select {
	case <-g.closing:
		return true
	default:
		return false
	}
}

// clusterLabel is a cluster as a metric label: only clusters the gateway knows, "-" for others.
func (g *Gateway) clusterLabel(cluster string) string {
	if cluster != "" && g.reg.known(cluster) {
		return cluster
	}
	return "-"
}

func (g *Gateway) updateGauges(cluster string) {
	g.metrics.connectors.WithLabelValues(cluster).Set(float64(g.reg.count(cluster)))
	g.metrics.identities.WithLabelValues(cluster).Set(float64(g.reg.countIdentities(cluster)))
}
