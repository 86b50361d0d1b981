package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"testing"

	"github.com/warren-dev/warren/internal/wire"
)

// TestRewriteStripsIdentityHeaders: the request sent over the tunnel carries none of the caller's identity headers
// (request-header authentication, forwarding proxies, warren's own), whatever their case, and not its
// Authorization; only the caller token on warren's header, for the connector to verify.
func TestRewriteStripsIdentityHeaders(t *testing.T) {
	in := httptest.NewRequest("GET", "https://gw/clusters/prod/api/v1/pods", nil)
	for k, v := range map[string]string{
		"Authorization": "Bearer caller-token", "X-Remote-User": "system:admin", "X-Remote-Group": "system:masters",
		"X-Remote-Uid": "0", "X-Remote-Extra-Scopes": "*", "X-Forwarded-User": "admin", "X-Real-Ip": "10.9.9.9",
		"Forwarded": "for=10.9.9.9", wire.HeaderRequestID: "forged", "Accept": "application/json",
	} {
		in.Header.Set(k, v)
	}
	in.Header["x-remote-extra-acme"] = []string{"not canonical"}
	rt := &route{cluster: "prod", path: "/api/v1/pods", token: "caller-token", requestID: "r1"}
	in = in.WithContext(context.WithValue(in.Context(), routeKey{}, rt))
	pr := &httputil.ProxyRequest{In: in, Out: in.Clone(in.Context())}
	rewrite(pr)
	want := http.Header{"Accept": {"application/json"}, wire.HeaderCallerToken: {"caller-token"}, wire.HeaderRequestID: {"r1"}}
	if len(pr.Out.Header) != len(want) {
		t.Fatalf("headers sent on: %q, want %q", pr.Out.Header, want)
	}
	for k, v := range want {
		if pr.Out.Header.Get(k) != v[0] {
			t.Errorf("%s = %q, want %q", k, pr.Out.Header.Get(k), v[0])
		}
	}
}
