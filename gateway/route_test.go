package gateway_test

// The decisions of the gateway's cluster route (serveCluster, clusterTransport, proxyError), one by one, in-process:
// a gateway and a connector over a real tunnel (proxyEnv), so that `make test-short` covers every refusal without a
// kube-apiserver. Each case asserts the exact status, Kubernetes Status message and Retry-After, and that the
// gateway's audit log has the refusal with the same status.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/gateway/limit"
)

// call sends method path (the gateway's, /clusters/...) with token ("" for none) and more headers.
func (e *proxyEnv) call(method, path, token string, header http.Header) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.gwSrv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// issue signs a caller token of e's issuer with rules, for clusters, valid from now-age for ttl.
func (e *proxyEnv) issue(clusters []string, ttl, age time.Duration, multi bool, rules ...string) string {
	e.t.Helper()
	var rs []auth.Rule
	for _, s := range rules {
		r, err := auth.ParseRule(s)
		if err != nil {
			e.t.Fatal(err)
		}
		rs = append(rs, r)
	}
	tok, err := e.key.IssueCaller(auth.IssueOptions{Subject: "alice", Clusters: clusters, MultiCluster: multi, Rules: rs, TTL: ttl,
		Now: func() time.Time { return time.Now().Add(-age) }})
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// answerWant is one expected answer of the cluster route.
type answerWant struct {
	code       int
	message    string
	retryAfter string
}

// checkRefusal reads resp as a Kubernetes Status and compares it with want.
func checkRefusal(t *testing.T, resp *http.Response, want answerWant) {
	t.Helper()
	if resp.StatusCode != want.code {
		code, msg, _ := status(t, resp)
		t.Fatalf("got %d %q, want %d %q", code, msg, want.code, want.message)
	}
	code, msg, retry := status(t, resp)
	if code != want.code || msg != want.message || retry != want.retryAfter {
		t.Fatalf("got %d %q (Retry-After %q)\nwant %d %q (Retry-After %q)", code, msg, retry, want.code, want.message, want.retryAfter)
	}
}

// deniedRecord waits for the gateway's deny record of path with status code and reason.
func deniedRecord(t *testing.T, m *memAudit, path string, code int, reason string) {
	t.Helper()
	waitRecord(t, m, fmt.Sprintf("the refusal of %s", path), func(r audit.Record) bool {
		return r.Path == path && r.Decision == audit.DecisionDeny && r.Status == code && r.Reason == reason
	})
}

// TestClusterRouteRefusals: every refusal the gateway's route to a cluster can answer before (or instead of) the
// cluster's answer, with its exact status and message, and its audit record.
func TestClusterRouteRefusals(t *testing.T) {
	e := newProxyEnv(t, proxyEnvOpts{maxHeaderBytes: 8 << 10, clusters: []string{"staging"}})
	good, _ := e.token(time.Hour)
	revokedTok, revokedID := e.token(time.Hour)
	e.revoke(e.gwRevoked, revokedID)
	e.gw.RecheckStreams() // the revocation list is looked at now (it reloads every hour otherwise)
	expired := e.issue([]string{cluster}, time.Hour, 2*time.Hour, false, "get,list:pods")
	multi := e.issue([]string{cluster, "staging"}, time.Hour, 0, true, "get,list:pods")
	staging := e.issue([]string{"staging"}, time.Hour, 0, false, "get,list:pods")
	nope := e.issue([]string{"nope"}, time.Hour, 0, false, "get,list:pods")
	connTok, err := e.key.IssueConnector(cluster, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	const pods = "/clusters/" + cluster + "/api/v1/namespaces/ns/pods"
	cases := []struct {
		name         string
		method, path string
		token        string
		header       http.Header
		want         answerWant
	}{
		{name: "no token", path: pods, want: answerWant{401, `missing bearer token: send the caller token as "Authorization: Bearer <token>"`, ""}},
		{name: "not a JWT", path: pods, token: "not-a-jwt", want: answerWant{401, "invalid caller token: malformed token: want three base64url parts separated by dots", ""}},
		{name: "another scheme", path: pods, header: http.Header{"Authorization": {"Basic YWxpY2U6cHc="}},
			want: answerWant{401, `missing bearer token: send the caller token as "Authorization: Bearer <token>"`, ""}},
		{name: "expired token", path: pods, token: expired, want: answerWant{401, "invalid caller token: token expired at " + expiry(t, expired).UTC().Format(time.RFC3339), ""}},
		{name: "revoked token", path: pods, token: revokedTok, want: answerWant{401, `invalid caller token: token "` + revokedID + `" has been revoked`, ""}},
		{name: "connector token as a caller's", path: pods, token: connTok,
			want: answerWant{401, `invalid caller token: token audience [warren-connector] does not include "warren"`, ""}},
		{name: "token for two clusters", path: pods, token: multi,
			want: answerWant{401, `invalid caller token: token names 2 clusters [prod staging]; this gateway accepts caller tokens for one cluster only: issue one token per cluster, or start the gateway with --allow-multi-cluster-tokens`, ""}},
		{name: "cluster not in the token", path: "/clusters/staging/api/v1/namespaces/ns/pods", token: good,
			want: answerWant{403, `token of "alice" does not grant access to cluster "staging"`, ""}},
		{name: "unknown cluster", path: "/clusters/nope/api/v1/namespaces/ns/pods", token: nope,
			want: answerWant{404, `unknown cluster "nope": no connector of it has connected to this gateway`, ""}},
		{name: "known cluster without a connector", path: "/clusters/staging/api/v1/namespaces/ns/pods", token: staging,
			want: answerWant{503, `no connector is connected for cluster "staging": check that its connector runs and reaches the gateway`, ""}},
		{name: "no cluster in the path", path: "/clusters//api/v1/pods", token: good,
			want: answerWant{404, "no cluster in the path: the Kubernetes API of cluster C is at /clusters/C/", ""}},
		{name: "not a cluster name", path: "/clusters/pr%21od/api/v1/pods", token: good,
			want: answerWant{400, `invalid cluster name "pr%21od": use letters, digits, '-', '_' and '.'`, ""}},
		{name: "an encoded dot-dot for a cluster", path: "/clusters/%2E%2E/api/v1/pods", token: good,
			want: answerWant{400, `invalid cluster name "%2E%2E": use letters, digits, '-', '_' and '.'`, ""}},
		{name: "outside the token's rules", path: "/clusters/" + cluster + "/api/v1/namespaces/ns/secrets", token: good,
			want: answerWant{403, `token of "alice" cannot list resource "secrets" in API group "" in the namespace "ns" (it needs --rule list:secrets:ns)`, ""}},
		{name: "a verb the rules do not grant", method: http.MethodDelete, path: pods + "/p", token: good,
			want: answerWant{403, `token of "alice" cannot delete resource "pods" in API group "" in the namespace "ns" (it needs --rule delete:pods:ns:p)`, ""}},
		{name: "dot segments", path: "/clusters/" + cluster + "/api/v1/namespaces/ns/pods/../secrets", token: good,
			want: answerWant{400, `bad request path "/api/v1/namespaces/ns/pods/../secrets": ".." segment; send the resolved path`, ""}},
		{name: "bad Audit-ID", path: pods, token: good, header: http.Header{"Audit-Id": {"a b"}},
			want: answerWant{400, `Audit-ID with the character " " at 1: want 1 to 128 characters of A-Z a-z 0-9 . _ : - (it goes on to the cluster's audit log)`, ""}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method := c.method
			if method == "" {
				method = http.MethodGet
			}
			resp := e.call(method, c.path, c.token, c.header)
			if resp.Header.Get("Warren-Request-Id") == "" {
				t.Errorf("the answer names no request (Warren-Request-Id)")
			}
			checkRefusal(t, resp, c.want)
			deniedRecord(t, e.gwAudit, c.path, c.want.code, c.want.message)
		})
	}
	// Nothing refused reached the cluster: the connector audited none of it.
	for _, r := range e.connAudit.records() {
		t.Errorf("the connector saw a refused request: %s %s %d", r.Method, r.Path, r.Status)
	}
	// The route itself works for the good token.
	if resp := e.call(http.MethodGet, pods, good, nil); resp.StatusCode != http.StatusOK {
		code, msg, _ := status(t, resp)
		t.Fatalf("the good token: %d %q", code, msg)
	} else {
		resp.Body.Close()
	}
}

// TestClusterRouteOversizedHeaders: headers over MaxHeaderBytes get 431 with their size as the gateway counts it
// (method, target and each header line), and nothing goes to the cluster.
func TestClusterRouteOversizedHeaders(t *testing.T) {
	e := newProxyEnv(t, proxyEnvOpts{maxHeaderBytes: 8 << 10})
	tok, _ := e.token(time.Hour)
	const target = "/clusters/" + cluster + "/api/v1/namespaces/ns/pods"
	pad := strings.Repeat("a", 9<<10)
	conn, err := net.Dial("tcp", e.gwSrv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\nX-Padding: %s\r\n\r\n", target, tok, pad)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	size := len("GET") + len(target) + 12 + len("Authorization") + len("Bearer "+tok) + 4 + len("X-Padding") + len(pad) + 4
	want := fmt.Sprintf("request headers are %d bytes, more than the 8192 allowed", size)
	checkRefusal(t, resp, answerWant{431, want, ""})
	deniedRecord(t, e.gwAudit, target, 431, want)
	if n := len(e.connAudit.records()); n != 0 {
		t.Fatalf("the connector saw %d requests", n)
	}
}

// TestClusterRouteLimits: the per-token rate, the per-cluster rate, with Retry-After in whole seconds; a refused
// request gives the token's bucket its place back when the cluster's refuses it. (The limits on streams, requests
// in flight and a token's share of a tunnel are limits_test.go's.) The limiter's clock stands still, so that the
// waits are exact.
func TestClusterRouteLimits(t *testing.T) {
	now := time.Now()
	lim := limit.New(limit.Config{TokenRate: 0.5, TokenBurst: 2, ClusterRate: 0.25, ClusterBurst: 3, Now: func() time.Time { return now }})
	e := newProxyEnv(t, proxyEnvOpts{limits: lim})
	const pods = "/clusters/" + cluster + "/api/v1/namespaces/ns/pods"
	a, _ := e.token(time.Hour)
	b, _ := e.token(time.Hour)
	for range 2 {
		if resp := e.call(http.MethodGet, pods, a, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("within the burst: %d", resp.StatusCode)
		} else {
			resp.Body.Close()
		}
	}
	checkRefusal(t, e.call(http.MethodGet, pods, a, nil), answerWant{429, "too many requests for this token; retry in 2s", "2"})
	// b has its own token bucket, but the cluster's burst of 3 has one place left.
	if resp := e.call(http.MethodGet, pods, b, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("another token within the cluster's burst: %d", resp.StatusCode)
	} else {
		resp.Body.Close()
	}
	checkRefusal(t, e.call(http.MethodGet, pods, b, nil), answerWant{429, "too many requests for this cluster; retry in 4s", "4"})
	deniedRecord(t, e.gwAudit, pods, 429, "too many requests for this cluster; retry in 4s")
}

// TestClusterRouteConnectorsCheck: the connector's second check, as a caller sees it through the gateway: what the
// token allows but the customer's ceiling does not, a token revoked at the connector only, and a connector that
// cannot audit. The gateway passes the connector's Status on unchanged (code, message, Retry-After) and audits the
// answer as the cluster's; the API server sees none of them.
func TestClusterRouteConnectorsCheck(t *testing.T) {
	ceiling, err := auth.ParsePolicy([]byte("rules:\n- verbs: [get, list, watch]\n  resources: [configmaps, pods]\n  namespaces: [ns]\n"))
	if err != nil {
		t.Fatal(err)
	}
	sink := &failingSink{}
	e := newProxyEnv(t, proxyEnvOpts{ceiling: ceiling, separateRevocations: true, connAuditSink: sink})
	tok, _ := e.token(time.Hour)
	revokedTok, revokedID := e.token(time.Hour)
	e.revoke(e.connRevoked, revokedID) // the gateway's list does not have it
	if err := e.refreshConnRevoked(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, path, token string
		broken            bool // the connector's audit log cannot be written
		want              answerWant
	}{
		{"under the ceiling", "/api/v1/namespaces/ns/pods", tok, false, answerWant{200, "", ""}},
		{"another namespace than the ceiling's", "/api/v1/namespaces/other/pods", tok, false,
			answerWant{403, `connector: the cluster's policy does not allow it: cannot list resource "pods" in API group "" in the namespace "other"`, ""}},
		{"a subresource the ceiling does not name", "/api/v1/namespaces/ns/pods/p/log", tok, false,
			answerWant{403, `connector: the cluster's policy does not allow it: cannot get resource "pods/log" in API group "" in the namespace "ns"`, ""}},
		{"revoked at the connector", "/api/v1/namespaces/ns/pods", revokedTok, false,
			answerWant{401, `connector: the caller's token "` + revokedID + `" has been revoked`, ""}},
		{"the connector cannot audit", "/api/v1/namespaces/ns/pods", tok, true,
			answerWant{503, "connector: cannot write its audit log (disk full); it refuses requests until it can", "5"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sink.setBroken(c.broken)
			defer sink.setBroken(false)
			path := "/clusters/" + cluster + c.path
			resp := e.call(http.MethodGet, path, c.token, nil)
			if c.want.code == http.StatusOK {
				if resp.StatusCode != http.StatusOK {
					code, msg, _ := status(t, resp)
					t.Fatalf("%d %q, want 200", code, msg)
				}
				resp.Body.Close()
				return
			}
			checkRefusal(t, resp, c.want)
			// The gateway allowed it; the cluster's side (the connector) refused it.
			waitRecord(t, e.gwAudit, "the gateway's record", func(r audit.Record) bool {
				return r.Path == path && r.Decision == audit.DecisionAllow && r.Status == c.want.code && r.TokenID != ""
			})
		})
	}
	if n := e.api.requests.Load(); n != 1 {
		t.Fatalf("the API server saw %d requests, want the one allowed", n)
	}
}

// failingSink is an audit log whose Err the test switches.
type failingSink struct {
	memAudit
	broken atomic.Bool
}

func (s *failingSink) setBroken(v bool) { s.broken.Store(v) }

func (s *failingSink) Err() error {
	if s.broken.Load() {
		return errors.New("disk full")
	}
	return nil
}

// TestClusterRouteGatewayShuttingDown: once Close has begun, the route answers 503 with Retry-After.
func TestClusterRouteGatewayShuttingDown(t *testing.T) {
	e := newProxyEnv(t, proxyEnvOpts{})
	tok, _ := e.token(time.Hour)
	e.gw.Close()
	checkRefusal(t, e.call(http.MethodGet, "/clusters/"+cluster+"/api/v1/namespaces/ns/pods", tok, nil),
		answerWant{503, "gateway is shutting down", "5"})
}

// expiry is a token's expiry, read without verifying it.
func expiry(t *testing.T, tok string) time.Time {
	t.Helper()
	var c auth.Claims
	parseUnverified(t, tok, &c)
	return c.ExpiresAt.Time
}
