package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/wire"
)

// TestRewriteStripsIdentityHeaders: the request sent over the tunnel carries none of the caller's identity headers
// (request-header authentication, forwarding proxies, warren's own), whatever their case, and not its
// Authorization, nor the caller's token in any other form: only the request id (clusterTransport adds the assertion).
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
	rt := &route{cluster: "prod", path: "/api/v1/pods", requestID: "r1"}
	in = in.WithContext(context.WithValue(in.Context(), routeKey{}, rt))
	pr := &httputil.ProxyRequest{In: in, Out: in.Clone(in.Context())}
	rewrite(pr)
	in.Header.Set(wire.HeaderAssertion, "forged")
	want := http.Header{"Accept": {"application/json"}, wire.HeaderRequestID: {"r1"}}
	if len(pr.Out.Header) != len(want) {
		t.Fatalf("headers sent on: %q, want %q", pr.Out.Header, want)
	}
	for k, v := range want {
		if pr.Out.Header.Get(k) != v[0] {
			t.Errorf("%s = %q, want %q", k, pr.Out.Header.Get(k), v[0])
		}
	}
}

// TestReadyReportsReloadFailures: /readyz answers 503 with the failure Ready reports, 200 once it is gone.
func TestReadyReportsReloadFailures(t *testing.T) {
	keys, err := auth.NewStaticKeys()
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.VerifierConfig{Keys: keys, Audience: auth.AudienceCaller})
	if err != nil {
		t.Fatal(err)
	}
	var failure error
	g, err := New(Config{CallerVerifier: v, ConnectorVerifier: v, SigningKey: testSigningKey(t), Ready: func() error { return failure }})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	failure = errors.New("--revoked-tokens: revocation list r is gone; still refusing the 3 token ids read before")
	rec := httptest.NewRecorder()
	g.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	var st metav1.Status
	json.Unmarshal(rec.Body.Bytes(), &st)
	if rec.Code != http.StatusServiceUnavailable || st.Message != "gateway not ready: "+failure.Error() {
		t.Fatalf("/readyz with a failed reload: %d %q", rec.Code, rec.Body)
	}
	failure = nil
	rec = httptest.NewRecorder()
	g.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/readyz once recovered: %d %q", rec.Code, rec.Body)
	}
}
