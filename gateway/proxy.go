package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/gateway/limit"
	"github.com/warren-dev/warren/internal/auditrec"
	"github.com/warren-dev/warren/internal/review"
	"github.com/warren-dev/warren/internal/sessionend"
	"github.com/warren-dev/warren/internal/streams"
	"github.com/warren-dev/warren/internal/wire"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// route is what serveCluster decided about a request, handed to the proxy through the request's context.
type route struct {
	cluster   string
	path      string // decoded API path, "/api/v1/pods"
	rawPath   string // escaped form, when it differs
	requestID string
	claims    *auth.Claims
	entry     *auditrec.Entry
	backends  backends // the cluster's tunnels, in the order this request tries them: looked up once
}

type routeKey struct{}

func routeOf(ctx context.Context) *route {
	rt, _ := ctx.Value(routeKey{}).(*route)
	return rt
}

// serveCluster authenticates an API call for /clusters/<cluster>/..., checks it against the token's scope and the
// limits, and proxies it to one of the cluster's connectors. Every outcome is audited.
func (g *Gateway) serveCluster(w http.ResponseWriter, r *http.Request) {
	requestID := newID()
	cluster, rawRest, ok := splitClusterPath(r.URL.EscapedPath())
	start := time.Now()
	iw := newIdleWriter(w, g.cfg.IdleWriteTimeout)
	defer iw.finish()
	entry, w, r := auditrec.Begin(g.audit, audit.ComponentGateway, cluster, requestID, iw, r)
	defer func() {
		code, denied := entry.Outcome()
		label := "-" // only clusters the gateway knows become label values: the path is the caller's to choose
		if g.reg.known(cluster) {
			label = cluster
		}
		g.metrics.request(label, code, !denied, time.Since(start))
		if err := entry.End(g.audit); err != nil {
			g.log.Error("cannot write the audit log", "request_id", requestID, "err", err)
		}
	}()
	defer func() {
		if iw.timedOut.Load() {
			g.log.Info("request ended: the caller stopped reading", "request_id", requestID, "idle_write_timeout", g.cfg.IdleWriteTimeout.String())
			entry.Note(fmt.Sprintf("ended: the caller read nothing for %v (idle write timeout)", g.cfg.IdleWriteTimeout))
		}
	}()
	refuse := func(code int, message string, retryAfter int) {
		entry.Deny(message)
		closeAfterRefusal(w, g.door.cfg.RefusalTimeout)
		wire.WriteStatus(w, code, message, retryAfter)
	}
	// Every answer names the request, so that a caller can find it in the gateway's and the connector's audit logs.
	w.Header().Set(wire.HeaderRequestID, requestID)
	if err := auditrec.Err(g.audit); err != nil {
		if !g.cfg.ServeWithoutAudit {
			// Fail closed: what the gateway cannot audit, it does not serve.
			refuse(http.StatusServiceUnavailable, fmt.Sprintf("the gateway cannot write its audit log (%v); it refuses requests until it can", err), 5)
			return
		}
		g.log.Error("serving without audit: the audit log cannot be written", "request_id", requestID, "err", err)
	}
	if size := headerSize(r); size > g.cfg.MaxHeaderBytes {
		refuse(http.StatusRequestHeaderFieldsTooLarge, fmt.Sprintf("request headers are %d bytes, more than the %d allowed", size, g.cfg.MaxHeaderBytes), 0)
		return
	}
	auditID, err := wire.CheckAuditID(r.Header)
	if err != nil {
		refuse(http.StatusBadRequest, err.Error()+" (it goes on to the cluster's audit log)", 0)
		return
	}
	if auditID == "" {
		// The API server's audit event then carries the gateway's request id: one id across the three logs.
		auditID = requestID
		r.Header.Set(wire.HeaderAuditID, auditID)
	}
	entry.AuditID(auditID)
	if !ok {
		refuse(http.StatusNotFound, "no cluster in the path: the Kubernetes API of cluster C is at /clusters/C/", 0)
		return
	}
	if err := auth.ValidateClusterName(cluster); err != nil {
		refuse(http.StatusBadRequest, err.Error(), 0)
		return
	}
	rest, err := url.PathUnescape(rawRest)
	if err != nil {
		refuse(http.StatusBadRequest, fmt.Sprintf("malformed path: %v", err), 0)
		return
	}
	token := wire.BearerToken(r.Header)
	if token == "" {
		refuse(http.StatusUnauthorized, "missing bearer token: send the caller token as \"Authorization: Bearer <token>\"", 0)
		return
	}
	claims, err := g.cfg.CallerVerifier.VerifyContext(r.Context(), token)
	if err != nil {
		refuse(http.StatusUnauthorized, "invalid caller token: "+err.Error(), 0)
		return
	}
	entry.Caller(claims)
	doorOf(r).authenticated()
	if !claims.HasCluster(cluster) {
		refuse(http.StatusForbidden, fmt.Sprintf("token of %q does not grant access to cluster %q", claims.Subject, cluster), 0)
		return
	}
	isReview := review.Is(r, rest)
	var d auth.Decision
	if isReview {
		// A question about the token itself: any token may ask it; answerReview below decides what to answer.
		d = auth.Decision{Attributes: review.RequestAttributes, Allowed: true, Status: http.StatusOK}
	} else {
		d = auth.Check(r, rest, claims, nil)
	}
	entry.Attributes(d.Attributes)
	if !d.Allowed {
		refuse(d.Status, d.Reason, 0)
		return
	}
	long := auth.LongRunning(r, d.Attributes)
	if l := g.cfg.Limits; l != nil {
		if ok, wait, which := l.Allow(limitKey(claims), cluster); !ok {
			refuse(http.StatusTooManyRequests, fmt.Sprintf("too many requests for this %s; retry in %v", which, wait), int(wait/time.Second))
			return
		}
		release, ok := l.AcquireRequest(limitKey(claims))
		defer release()
		if !ok {
			refuse(http.StatusTooManyRequests, fmt.Sprintf("too many requests in flight for this token (at most %d at once); retry when some have ended", l.Config().TokenInflight), 1)
			return
		}
		if long {
			release, ok := l.AcquireStream(limitKey(claims))
			defer release()
			if !ok {
				refuse(http.StatusTooManyRequests, fmt.Sprintf("too many concurrent streams (watch, exec, attach, port-forward, logs, proxy) for this token (at most %d at once)", l.Config().TokenStreams), 5)
				return
			}
		}
	}
	if isReview && g.answerReview(w, r, claims, entry) {
		return
	}
	b, err := g.reg.backends(cluster)
	if err != nil {
		code, msg := routeError(cluster, err)
		refuse(code, msg, 0)
		return
	}
	rt := &route{cluster: cluster, path: rest, requestID: requestID, claims: claims, entry: entry, backends: b}
	if rawRest != rest {
		rt.rawPath = rawRest
	}
	ctx := context.WithValue(r.Context(), routeKey{}, rt)
	if long {
		// Cancelling the request ends an upgraded stream too: httputil.ReverseProxy closes both sides. The token
		// is re-checked while the stream runs (revoked, key no longer trusted, expired with
		// DisconnectExpiredTokens): the registry cancels ctx with the reason.
		var untrack func()
		ctx, untrack = g.streams.Track(ctx, streamToken(claims))
		defer untrack()
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, g.cfg.MaxStreamDuration, errMaxStreamDuration)
		defer cancel()
		if auth.Follows(r, d.Attributes) {
			ctx = streams.WithCleanEnd(ctx, endedByGateway)
		}
		defer func() {
			if context.Cause(ctx) == errMaxStreamDuration {
				g.log.Info("stream ended: it reached the maximum length", "request_id", requestID, "max", g.cfg.MaxStreamDuration.String())
				entry.Note(fmt.Sprintf("ended after the maximum stream length of %v", g.cfg.MaxStreamDuration))
			}
			if e := streams.EndedBy(ctx); e != nil {
				entry.Note("ended: " + e.Reason)
			}
		}()
		callerCtx := r.Context()
		w = sessionend.Wrap(w, r, isPortForward(d.Attributes), func() *sessionend.End {
			switch e := streams.EndedBy(ctx); {
			case e != nil:
				return tokenEnd(e.Reason)
			case context.Cause(ctx) == errMaxStreamDuration:
				return &sessionend.End{WSCode: sessionend.ClosePolicyViolation, Code: http.StatusGatewayTimeout, Reason: string(metav1.StatusReasonTimeout),
					Message: fmt.Sprintf("warren: the session reached the maximum stream length of %v", g.cfg.MaxStreamDuration)}
			case callerCtx.Err() != nil, iw.timedOut.Load():
				return nil // the caller left, or stopped reading: nobody to tell
			}
			return g.lostOrRevoked(rt)
		})
	}
	g.proxy.ServeHTTP(w, r.WithContext(ctx))
}

var errMaxStreamDuration = errors.New("stream reached the maximum length")

// limitKey is the identity a token's limits are counted against: its id, or issuer and subject without one.
func limitKey(c *auth.Claims) string {
	if c.ID != "" {
		return c.ID
	}
	return c.Issuer + "\x00" + c.Subject
}

// headerSize approximates the request's header bytes as they came on the wire.
func headerSize(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + 12
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// rewrite turns the caller's request into the one sent over the tunnel. httputil.ReverseProxy has already removed
// hop-by-hop headers and, because Rewrite is set, inbound X-Forwarded-* headers.
func rewrite(pr *httputil.ProxyRequest) {
	rt := routeOf(pr.In.Context())
	out := pr.Out
	out.URL.Scheme = "http"
	out.URL.Host = rt.cluster // a label only: the stream decides where the request goes
	out.URL.Path, out.URL.RawPath = rt.path, rt.rawPath
	out.Host = ""
	// The caller's credentials stop here: the connector gets an assertion of this one request instead
	// (clusterTransport signs one per connector it tries), and uses its own credentials towards the API server.
	out.Header.Del("Authorization")
	wire.StripIdentityHeaders(out.Header, wire.IdentityHeaders)
	wire.StripWarrenHeaders(out.Header)
	out.Header.Set(wire.HeaderRequestID, rt.requestID)
}

// clusterTransport sends a request over a stream of one of the cluster's connectors, in the order serveCluster
// looked up (route.backends), with an assertion signed for that connector's tunnel. When that fails before an
// answer came back, the request goes to the next tunnel, with an assertion of its own, if it is safe to send again:
// always when the stream could not even be opened (nothing was sent), and for reads (GET, HEAD without body or
// upgrade) when the connector died with the request in flight.
//
// A tunnel on which the token already holds its share of the streams (limit.Config.TokenTunnelShare) is passed
// over; when every tunnel is, the request is refused (errTokenShare).
type clusterTransport struct {
	key     *auth.SigningKey
	limits  *limit.Limiter // nil: no share
	metrics *metrics
}

func (t clusterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rt := routeOf(req.Context())
	err := errNoConnector
	binding := auth.RequestBinding(req, rt.requestID)
	// A connector's refusal of its own (wire.HeaderRefusal: it cannot audit) of a request without a body, kept for
	// the caller in case no other connector serves it. Without a body the request can be sent again whatever it is
	// (an exec too: the answer was a refusal, not 101); a body has gone to the connector that refused.
	var refused *http.Response
	var releaseRefused func()
	dropRefused := func() {
		if refused != nil {
			refused.Body.Close()
			releaseRefused()
			refused = nil
		}
	}
	for cs := range rt.backends.all {
		release, ok := t.admit(cs, rt)
		if !ok {
			if err == errNoConnector {
				err = errTokenShare
			}
			continue
		}
		assertion, serr := t.key.SignAssertion(auth.AssertionOptions{Caller: rt.claims, Cluster: rt.cluster, Session: cs.id, Request: binding})
		if serr != nil {
			release()
			return nil, &signError{serr}
		}
		// Each attempt gets a header map of its own: a failed attempt's writer may still be reading the last one.
		attempt := *req
		attempt.Header = req.Header.Clone()
		attempt.Header.Set(wire.HeaderAssertion, assertion)
		resp, rerr := cs.transport.RoundTrip(&attempt)
		if rerr == nil {
			// Only the one reason warren knows: a connector's header is no label of its choosing.
			if unavailable := resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(wire.HeaderRefusal) == wire.RefusalUnauditable; unavailable {
				t.metrics.connectorUnavailable.WithLabelValues(rt.cluster, wire.RefusalUnauditable).Inc()
				if !hasBody(req) {
					dropRefused()
					refused, releaseRefused = resp, release
					cs.log.Debug("connector refused the request for a reason of its own, trying the next", "request_id", rt.requestID, "reason", wire.RefusalUnauditable)
					continue
				}
			}
			dropRefused()
			releaseOnClose(resp, release)
			return resp, nil
		}
		release()
		err = rerr
		if req.Context().Err() != nil || !resendable(req, err) {
			dropRefused()
			return nil, err
		}
		cs.log.Debug("request failed on this connector, trying the next", "request_id", rt.requestID, "err", err)
	}
	if refused != nil {
		releaseOnClose(refused, releaseRefused)
		return refused, nil
	}
	return nil, err
}

// isPortForward reports whether a is a port-forward, whose SPDY error streams carry text (exec and attach: a
// Status): pods/portforward, or the kubelet's portForward reached through nodes/proxy.
func isPortForward(a auth.Attributes) bool {
	if a.APIGroup == "" && a.Resource == "pods" && a.Subresource == "portforward" {
		return true
	}
	if path, ok := a.KubeletPath(); ok {
		call, _, _ := audit.KubeletDetails(path, nil)
		return call.Operation == "portForward"
	}
	return false
}

// hasBody reports whether req sends a body (which a second attempt could not send again).
func hasBody(req *http.Request) bool { return req.Body != nil && req.Body != http.NoBody }

// signError is a failure to sign an assertion: nothing was sent.
type signError struct{ err error }

func (e *signError) Error() string {
	return "gateway cannot sign the request's assertion: " + e.err.Error()
}
func (e *signError) Unwrap() error { return e.err }

func resendable(req *http.Request, err error) bool {
	if hasBody(req) {
		return false
	}
	var oe *openError
	if errors.As(err, &oe) {
		return true
	}
	return (req.Method == http.MethodGet || req.Method == http.MethodHead) && wire.Upgrade(req.Header) == ""
}

func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	rt := routeOf(r.Context())
	if e := streams.EndedBy(r.Context()); e != nil {
		// Ended by the token's re-check before the cluster answered: the caller is still there to be told.
		wire.WriteStatus(w, http.StatusUnauthorized, "warren: "+e.Reason, 0)
		return
	}
	if errors.Is(err, errTokenShare) {
		msg := fmt.Sprintf("too many requests in flight for this token on cluster %q: it holds its share of the streams of each of the cluster's tunnels (%.0f%%, so that other callers are served); retry when some have ended",
			rt.cluster, g.cfg.Limits.Config().TokenTunnelShare*100)
		rt.entry.Deny(msg)
		wire.WriteStatus(w, http.StatusTooManyRequests, msg, 1)
		return
	}
	if r.Context().Err() != nil {
		// The caller went away; there is nobody to answer.
		g.log.Debug("caller left mid-request", "cluster", rt.cluster, "request_id", rt.requestID, "err", err)
		return
	}
	var se *signError
	if errors.As(err, &se) {
		g.log.Error("cannot sign an assertion", "cluster", rt.cluster, "request_id", rt.requestID, "err", err)
		rt.entry.Deny(se.Error())
		wire.WriteStatus(w, http.StatusInternalServerError, se.Error(), 0)
		return
	}
	if errors.Is(err, errNoConnector) || errors.Is(err, errUnknownCluster) {
		code, msg := routeError(rt.cluster, err)
		rt.entry.Deny(msg)
		wire.WriteStatus(w, code, msg, 0)
		return
	}
	g.log.Info("connector lost mid-request", "cluster", rt.cluster, "request_id", rt.requestID, "err", err)
	wire.WriteStatus(w, http.StatusBadGateway, fmt.Sprintf("the connection to cluster %q was lost mid-request: %v", rt.cluster, err), 0)
}

func routeError(cluster string, err error) (int, string) {
	if errors.Is(err, errUnknownCluster) {
		return http.StatusNotFound, fmt.Sprintf("unknown cluster %q: no connector of it has connected to this gateway", cluster)
	}
	return http.StatusServiceUnavailable, fmt.Sprintf("no connector is connected for cluster %q: check that its connector runs and reaches the gateway", cluster)
}
