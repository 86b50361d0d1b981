package connector

import (
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/internal/wire"
)

// fakeAPI is an API server stand-in that records the Audit-ID of each request it gets.
type fakeAPI struct {
	mu       sync.Mutex
	auditIDs []string
	handler  http.HandlerFunc // default: 200 {}
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.auditIDs = append(f.auditIDs, r.Header.Get("Audit-Id"))
	f.mu.Unlock()
	if f.handler != nil {
		f.handler(w, r)
		return
	}
	w.Write([]byte("{}"))
}

type memSink struct {
	mu   sync.Mutex
	recs []audit.Record
}

func (m *memSink) Write(r audit.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, r)
	return nil
}

// testConnector is a connector whose API server is api; its tunnel is never dialled: tests call its handler.
func testConnector(t *testing.T, api http.Handler, cfg Config) *Connector {
	t.Helper()
	srv := httptest.NewTLSServer(api)
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	cfg.Kube = &rest.Config{Host: srv.URL, TLSClientConfig: rest.TLSClientConfig{CAData: ca}, BearerToken: "connector-sa"}
	cfg.GatewayURL = "https://gateway.invalid"
	cfg.Token = func() (string, error) { return "unused", nil }
	cfg.Cluster = "prod"
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// The connector bounds the Audit-ID itself: a gateway that lets a bad one through cannot put it in the cluster's
// audit log. A good one reaches the API server and the connector's audit record.
func TestConnectorBoundsTheAuditID(t *testing.T) {
	api := &fakeAPI{}
	sink := &memSink{}
	c := testConnector(t, api, Config{Audit: sink})
	for _, tc := range []struct {
		id      string
		code    int
		message string
	}{
		{"warren-acq-abc-7", 200, ""},
		{strings.Repeat("x", 200), 400, "connector: Audit-ID of 200 characters: want 1 to 128 characters of A-Z a-z 0-9 . _ : -"},
		{"a{b}", 400, `connector: Audit-ID with the character "{" at 1: want 1 to 128 characters of A-Z a-z 0-9 . _ : -`},
	} {
		req := httptest.NewRequest("GET", "/api/v1/namespaces/a/pods/p", nil)
		req.Header.Set("Audit-ID", tc.id)
		req.Header.Set(wire.HeaderRequestID, "gw-1")
		rec := httptest.NewRecorder()
		c.upstream.ServeHTTP(rec, req)
		var st struct{ Message string }
		json.Unmarshal(rec.Body.Bytes(), &st)
		if rec.Code != tc.code || st.Message != tc.message {
			t.Errorf("Audit-ID %.20q: %d %q, want %d %q", tc.id, rec.Code, st.Message, tc.code, tc.message)
		}
	}
	if len(api.auditIDs) != 1 || api.auditIDs[0] != "warren-acq-abc-7" {
		t.Fatalf("the API server saw %q", api.auditIDs)
	}
	if len(sink.recs) != 3 || sink.recs[0].AuditID != "warren-acq-abc-7" || sink.recs[0].RequestID != "gw-1" || sink.recs[1].Decision != audit.DecisionDeny {
		t.Fatalf("audit: %+v", sink.recs)
	}
}
