package connector

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/auditrec"
	"github.com/warren-dev/warren/internal/collectorpod"
	"github.com/warren-dev/warren/internal/review"
	"github.com/warren-dev/warren/internal/streams"
	"github.com/warren-dev/warren/internal/wire"
)

// ImpersonatedUserPrefix prefixes the token subject in Impersonate-User, so that Kubernetes RBAC bindings and
// audit logs can tell warren's callers from the cluster's own users.
const ImpersonatedUserPrefix = "warren:"

// ImpersonatedTokenIDExtra is the Impersonate-Extra key carrying the caller token's id (jti) into Kubernetes' audit
// log.
const ImpersonatedTokenIDExtra = "warren-token-id"

// joinTokenClaims reads a connector token's claims without verifying them: the gateway does that; the connector
// only reads its cluster (to check that assertions are for it) and its expiry (to warn ahead).
func joinTokenClaims(token string) (auth.Claims, error) {
	var claims auth.Claims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err != nil {
		return claims, fmt.Errorf("connector token is not a JWT: %v", err)
	}
	return claims, nil
}

// clusterOfToken reads the cluster a connector token is bound to (unverified: joinTokenClaims).
func clusterOfToken(token string) (string, error) {
	claims, err := joinTokenClaims(token)
	if err != nil {
		return "", err
	}
	if len(claims.Warren.Clusters) != 1 {
		return "", fmt.Errorf("connector token names %d clusters, want 1: make it with `warren token connector`", len(claims.Warren.Clusters))
	}
	return claims.Warren.Clusters[0], nil
}

// refusalTimeout bounds what follows a refusal on a stream: the rest of a body the connector will not use is read
// for at most this long, then the stream closes (net/http would wait for it with no deadline).
const refusalTimeout = 2 * time.Second

func closeAfterRefusal(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(refusalTimeout))
	rc.SetWriteDeadline(time.Now().Add(refusalTimeout))
}

// authorize is the connector's own check of every request that arrives over the tunnel tunnelID, independent of
// the gateway's: the gateway's assertion verified with the pinned keys, for this cluster, this tunnel and exactly
// this request, never used before; the caller's rules in it; and the customer's ceiling. The gateway cannot switch
// it off: no header it sends changes what is checked.
func (c *Connector) authorize(tunnelID string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requestID := r.Header.Get(wire.HeaderRequestID)
		entry, w, r := auditrec.Begin(c.cfg.Audit, audit.ComponentConnector, c.cluster, requestID, w, r)
		defer func() {
			if err := entry.End(c.cfg.Audit); err != nil {
				c.log.Error("cannot write the audit log", "request_id", requestID, "err", err)
			}
		}()
		refuse := func(code int, message string, retryAfter int) {
			entry.Deny(message)
			closeAfterRefusal(w)
			wire.WriteStatus(w, code, "connector: "+message, retryAfter)
		}
		refuseAssertion := func(why string) {
			entry.Deny("refused the gateway's assertion: " + why)
			closeAfterRefusal(w)
			wire.WriteStatus(w, http.StatusUnauthorized, "connector refused the gateway's assertion: "+why, 0)
		}
		if err := auditrec.Err(c.cfg.Audit); err != nil {
			// Fail closed: what the connector cannot audit, it does not serve. (This refusal's own record is
			// counted as lost, and the count written, once the log takes records again.) Another connector of the
			// cluster may well audit it: the header lets the gateway try one.
			w.Header().Set(wire.HeaderRefusal, wire.RefusalUnauditable)
			refuse(http.StatusServiceUnavailable, fmt.Sprintf("cannot write its audit log (%v); it refuses requests until it can", err), 5)
			return
		}
		token := r.Header.Get(wire.HeaderAssertion)
		if token == "" {
			refuseAssertion("the request carries none (" + wire.HeaderAssertion + " header): every request must come with the gateway's signed assertion of it")
			return
		}
		a, err := c.assertions.Verify(token)
		if err != nil {
			refuseAssertion(err.Error())
			return
		}
		entry.Assertion(a.ID)
		if err := a.Check(c.cluster, tunnelID, auth.RequestBinding(r, requestID)); err != nil {
			refuseAssertion(err.Error())
			return
		}
		// Last, so that only a genuine assertion of this very request takes a place in the cache.
		if err := c.replays.Remember(c.assertions, a); err != nil {
			var full *auth.ReplayCacheFullError
			if errors.As(err, &full) {
				wait := max(1, int(math.Ceil(full.RetryAfter.Seconds())))
				c.log.Warn("replay cache full: refusing requests until assertion ids expire", "size", full.Size, "retry_in", wait)
				refuse(http.StatusTooManyRequests, fmt.Sprintf("too many requests: %v; retry in %ds", err, wait), wait)
				return
			}
			if errors.Is(err, auth.ErrReplayed) {
				c.log.Warn("replayed assertion refused", "request_id", requestID, "assertion", a.ID)
				refuseAssertion(fmt.Sprintf("assertion %q was used before: each is good for one request", a.ID))
				return
			}
			refuseAssertion(err.Error())
			return
		}
		claims := a.CallerClaims()
		entry.Caller(claims)
		if c.cfg.Revoked != nil && claims.ID != "" && c.cfg.Revoked(claims.ID) {
			refuse(http.StatusUnauthorized, fmt.Sprintf("the caller's token %q has been revoked", claims.ID), 0)
			return
		}
		if now := c.now(); now.After(claims.ExpiresAt.Add(c.assertions.Leeway())) {
			refuse(http.StatusUnauthorized, "the caller's token expired at "+claims.ExpiresAt.UTC().Format(time.RFC3339), 0)
			return
		}
		// The gateway checks the Audit-ID too; the connector does not rely on it before the API server adopts it.
		auditID, err := wire.CheckAuditID(r.Header)
		if err != nil {
			refuse(http.StatusBadRequest, err.Error(), 0)
			return
		}
		entry.AuditID(auditID)
		// A SelfSubjectAccessReview asks about the caller's own rights: answerReview decides it below.
		isReview := review.Is(r, r.URL.Path)
		if isReview {
			if c.answerReview(w, r, claims, entry) {
				return
			}
		} else {
			d := auth.Check(r, r.URL.Path, claims, c.cfg.Ceiling)
			entry.Attributes(d.Attributes)
			if !d.Allowed && len(d.PodSpecs) > 0 {
				if err := c.checkCollectorPod(r, d.Namespace, d.PodSpecs, claims); err != nil {
					refuse(err.Code, collectorPodRefusal+err.Message, 0)
					return
				}
				entry.Note("pod body checked: warren's collector pod (podSpec " + collectorpod.Kind + ")")
			} else if !d.Allowed {
				refuse(d.Status, d.Reason, 0)
				return
			}
			if auth.LongRunning(r, d.Attributes) {
				// Re-checked while it runs, on the caller's token id and expiry as asserted: a token revoked at this
				// connector (or, with DisconnectExpiredTokens, expired) meanwhile ends the stream here, whatever the
				// gateway does.
				ctx, untrack := c.streams.Track(r.Context(), callerStreamToken(claims))
				defer untrack()
				defer func() {
					if e := streams.EndedBy(ctx); e != nil {
						entry.Note("ended: " + e.Reason)
					}
				}()
				if auth.Follows(r, d.Attributes) {
					ctx = streams.WithCleanEnd(ctx, endedByConnector)
				}
				r = r.WithContext(ctx)
			}
		}
		if wire.Upgrade(r.Header) != "" {
			// The customer's witness of what left the cluster: the stdout of each exec and attach session.
			if a, err := auth.Classify(r, r.URL.Path); err == nil && a.Resource == "pods" && (a.Subresource == "exec" || a.Subresource == "attach") {
				entry.WitnessStdout(wire.IsSPDY(r.Header))
			}
		}
		if c.cfg.Impersonate {
			for k := range r.Header {
				if strings.HasPrefix(http.CanonicalHeaderKey(k), "Impersonate-") {
					refuse(http.StatusForbidden, "this connector impersonates the caller itself; Impersonate-* headers are refused", 0)
					return
				}
			}
			r.Header.Set("Impersonate-User", ImpersonatedUserPrefix+claims.Subject)
			for _, g := range claims.Warren.Groups {
				r.Header.Add("Impersonate-Group", g)
			}
			if claims.ID != "" {
				r.Header.Set("Impersonate-Extra-"+ImpersonatedTokenIDExtra, claims.ID)
			}
		}
		next.ServeHTTP(w, r)
	})
}
