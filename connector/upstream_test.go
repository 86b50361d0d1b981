package connector

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/warren-dev/warren/internal/wire"
)

// TestUpstreamStripsIdentityHeaders: whatever arrives over the tunnel, headers that assert an identity to the API
// server (request-header authentication, forwarding proxies) never reach it, nor the caller's credentials; the
// connector's own credentials do.
func TestUpstreamStripsIdentityHeaders(t *testing.T) {
	seen := make(chan http.Header, 1)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		io.WriteString(w, "{}")
	}))
	defer api.Close()
	strip := append(append([]string{}, wire.IdentityHeaders...), "X-Cluster-User", "X-Cluster-Extra-*")
	h, closeIdle, err := newUpstream(&rest.Config{Host: api.URL, BearerToken: "connector-credential"}, strip, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer closeIdle()
	req := httptest.NewRequest("GET", "http://stream/api/v1/namespaces/x/pods", nil)
	for k, v := range map[string]string{
		"Authorization": "Bearer caller-token", "X-Remote-User": "system:admin", "X-Remote-Group": "system:masters",
		"X-Remote-Uid": "0", "X-Remote-Extra-Scopes": "*", "X-Forwarded-User": "admin", "X-Forwarded-For": "10.9.9.9",
		"X-Real-Ip": "10.9.9.9", "Forwarded": "for=10.9.9.9", "X-Cluster-User": "admin", "X-Cluster-Extra-A": "b",
		wire.HeaderAssertion: "an-assertion", wire.HeaderRequestID: "r1", "Accept": "application/json",
	} {
		req.Header.Set(k, v)
	}
	req.Header["x-remote-group"] = []string{"not canonical"}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	got := <-seen
	for k := range got {
		switch http.CanonicalHeaderKey(k) {
		case "Authorization", "Accept", "Accept-Encoding", "User-Agent":
		default:
			t.Errorf("the API server got header %s: %q", k, got[k])
		}
	}
	if got.Get("Authorization") != "Bearer connector-credential" || got.Get("Accept") != "application/json" {
		t.Errorf("the API server got Authorization %q, Accept %q", got.Get("Authorization"), got.Get("Accept"))
	}
}

// TestUpstreamErrorLogsTheRequestID: when the API server cannot be reached, the log line names the request (the
// proxy's error handler sees the outgoing request, whose Warren-* headers are already gone).
func TestUpstreamErrorLogsTheRequestID(t *testing.T) {
	api := httptest.NewServer(http.NotFoundHandler())
	addr := api.URL
	api.Close() // nothing listens there now
	var logged bytes.Buffer
	h, closeIdle, err := newUpstream(&rest.Config{Host: addr, BearerToken: "t"}, wire.IdentityHeaders, slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer closeIdle()
	req := httptest.NewRequest("GET", "http://stream/api/v1/pods", nil)
	req.Header.Set(wire.HeaderRequestID, "req-42")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusBadGateway {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if line := logged.String(); !strings.Contains(line, `msg="API server unreachable" request_id=req-42 `) {
		t.Errorf("log %q: want the request id req-42", line)
	}
}
