package acquire

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-dev/warren/client"
	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/internal/wire"
)

// recording is what a run's requests leave behind: each request gets the next Audit-ID of the acquisition and is
// recorded, with the gateway's request id and status, in the log of whatever asked for it (a target, or the run
// itself). Safe for concurrent use.
type recording struct {
	ids *auditIDs
	run *requestLog // requests outside any target's context
	now func() time.Time

	mu    sync.Mutex
	token string // the last caller token seen
}

// wrap is a transport.WrapperFunc: the innermost round tripper of every transport client-go builds for the run
// (plain requests, exec over WebSocket and SPDY), so that it sees each request as it leaves, credentials included.
func (rs *recording) wrap(rt http.RoundTripper) http.RoundTripper { return &recorder{next: rt, rs: rs} }

type recorder struct {
	next http.RoundTripper
	rs   *recording
}

// auditIDs hands out warren-acq-<id>-<n>, n counting from 1.
type auditIDs struct {
	prefix string
	n      atomic.Int64
}

func (a *auditIDs) next() string { return a.prefix + strconv.FormatInt(a.n.Add(1), 10) }

// AuditIDPrefix is what every Audit-ID of acquisition id starts with.
func AuditIDPrefix(id string) string { return "warren-acq-" + id + "-" }

// requestLog collects the requests made for one purpose. Safe for concurrent use.
type requestLog struct {
	mu   sync.Mutex
	reqs []evidence.Request
}

func (l *requestLog) add(r evidence.Request) {
	l.mu.Lock()
	l.reqs = append(l.reqs, r)
	l.mu.Unlock()
}

func (l *requestLog) list() []evidence.Request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]evidence.Request(nil), l.reqs...)
}

// call is one logical operation (an exec) whose request's Audit-ID, gateway request id and status the caller wants.
type call struct {
	auditID, gatewayID string
	status             int
	retryAfter         time.Duration // of a 429 or 503 answer
}

type logKey struct{}
type callKey struct{}

// withLog makes the requests made with ctx go to log.
func withLog(ctx context.Context, log *requestLog) context.Context {
	return context.WithValue(ctx, logKey{}, log)
}

// withCall makes the request made with ctx fill c.
func withCall(ctx context.Context, c *call) context.Context {
	return context.WithValue(ctx, callKey{}, c)
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	rs := r.rs
	id := rs.ids.next()
	out := req.Clone(req.Context())
	out.Header.Set(wire.HeaderAuditID, id)
	if tok := wire.BearerToken(req.Header); tok != "" {
		rs.mu.Lock()
		rs.token = tok
		rs.mu.Unlock()
	}
	rec := evidence.Request{AuditID: id, Method: req.Method, Path: apiPath(req.URL.Path), Time: rs.now().UTC()}
	resp, err := r.next.RoundTrip(out)
	if resp != nil {
		rec.Status = resp.StatusCode
		rec.GatewayRequestID = resp.Header.Get(wire.HeaderRequestID)
	}
	log, _ := req.Context().Value(logKey{}).(*requestLog)
	if log == nil {
		log = rs.run
	}
	log.add(rec)
	if c, ok := req.Context().Value(callKey{}).(*call); ok {
		c.auditID, c.gatewayID, c.status = rec.AuditID, rec.GatewayRequestID, rec.Status
		if resp != nil {
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
				c.retryAfter = time.Duration(s) * time.Second
			}
		}
	}
	return resp, err
}

// caller is the identity of the last token seen on the way out.
func (rs *recording) caller() (evidence.Caller, client.TokenInfo, bool) {
	rs.mu.Lock()
	tok := rs.token
	rs.mu.Unlock()
	info, err := client.ParseToken(tok)
	if tok == "" || err != nil {
		return evidence.Caller{}, client.TokenInfo{}, false
	}
	return evidence.Caller{Subject: info.Subject, TokenID: info.ID, Issuer: info.Issuer}, info, true
}

// apiPath is the API path after the gateway's /clusters/<cluster> prefix.
func apiPath(p string) string {
	if rest, ok := strings.CutPrefix(p, "/clusters/"); ok {
		if _, api, ok := strings.Cut(rest, "/"); ok {
			return "/" + api
		}
	}
	return p
}
