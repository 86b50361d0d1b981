package connector

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/auditrec"
	"github.com/warren-dev/warren/internal/wire"
)

// ImpersonatedUserPrefix prefixes the token subject in Impersonate-User, so that Kubernetes RBAC bindings and
// audit logs can tell warren's callers from the cluster's own users.
const ImpersonatedUserPrefix = "warren:"

// ImpersonatedTokenIDExtra is the Impersonate-Extra key carrying the caller token's id (jti) into Kubernetes' audit
// log.
const ImpersonatedTokenIDExtra = "warren-token-id"

// clusterOfToken reads the cluster a connector token is bound to. The token is not verified here: the gateway
// does that; the connector only needs the name to check that callers' tokens are for its cluster.
func clusterOfToken(token string) (string, error) {
	var claims auth.Claims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err != nil {
		return "", fmt.Errorf("connector token is not a JWT: %v", err)
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

// authorize is the connector's own check of every request, independent of the gateway's: the caller's token
// verified with the connector's copy of the issuer keys, its rules, and the customer's ceiling. The gateway
// cannot switch it off: no header it sends changes what is checked.
func (c *Connector) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requestID := r.Header.Get(wire.HeaderRequestID)
		entry, w, r := auditrec.Begin(c.cfg.Audit, audit.ComponentConnector, c.cluster, requestID, w, r)
		defer func() {
			if err := entry.End(c.cfg.Audit); err != nil {
				c.log.Error("cannot write the audit log", "request_id", requestID, "err", err)
			}
		}()
		refuseRetry := func(code int, message string, retryAfter int) {
			entry.Deny(message)
			closeAfterRefusal(w)
			wire.WriteStatus(w, code, "connector: "+message, retryAfter)
		}
		refuse := func(code int, message string) { refuseRetry(code, message, 0) }
		if err := auditrec.Err(c.cfg.Audit); err != nil {
			// Fail closed: what the connector cannot audit, it does not serve. (This refusal's own record is
			// counted as lost, and the count written, once the log takes records again.)
			refuseRetry(http.StatusServiceUnavailable, fmt.Sprintf("cannot write its audit log (%v); it refuses requests until it can", err), 5)
			return
		}
		var claims *auth.Claims
		if c.cfg.Callers != nil {
			token := r.Header.Get(wire.HeaderCallerToken)
			if token == "" {
				refuse(http.StatusUnauthorized, "no caller token came with the request")
				return
			}
			var err error
			if claims, err = c.cfg.Callers.VerifyContext(r.Context(), token); err != nil {
				entry.Deny("refused the caller token: " + err.Error())
				closeAfterRefusal(w)
				wire.WriteStatus(w, http.StatusUnauthorized, "connector refused the caller token: "+err.Error(), 0)
				return
			}
			entry.Caller(claims)
			if !claims.HasCluster(c.cluster) {
				refuse(http.StatusForbidden, fmt.Sprintf("token of %q does not grant access to cluster %q", claims.Subject, c.cluster))
				return
			}
			d := auth.Check(r, r.URL.Path, claims, c.cfg.Ceiling)
			entry.Attributes(d.Attributes)
			if !d.Allowed {
				refuse(d.Status, d.Reason)
				return
			}
		} else if c.cfg.Ceiling != nil {
			a, err := auth.Classify(r, r.URL.Path)
			entry.Attributes(a)
			if err != nil {
				refuse(http.StatusBadRequest, err.Error())
				return
			}
			if ok, why := auth.AuthorizeImpersonation(c.cfg.Ceiling.Rules, r.Header); !ok {
				refuse(http.StatusForbidden, "the cluster's policy does not allow impersonation: "+why)
				return
			}
			if ok, why := c.cfg.Ceiling.Authorize(a); !ok {
				refuse(http.StatusForbidden, "the cluster's policy does not allow it: "+why)
				return
			}
		}
		if c.cfg.Impersonate {
			for k := range r.Header {
				if strings.HasPrefix(k, "Impersonate-") {
					refuse(http.StatusForbidden, "this connector impersonates the caller itself; Impersonate-* headers are refused")
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
