package gateway

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/internal/wire"
)

// testGateway is a gateway for cluster "prod" without connectors, auditing to memory.
func testGateway(t *testing.T) (*Gateway, testKeys, *memSink) {
	t.Helper()
	k := newTestKeys(t)
	sink := &memSink{}
	g := newTestGateway(t, k, func(c *Config) { c.Audit = sink })
	return g, k, sink
}

type memSink struct{ recs []audit.Record }

func (m *memSink) Write(r audit.Record) error { m.recs = append(m.recs, r); return nil }

// A bad Audit-ID is refused before anything else is decided, with the gateway's request id in the answer and in
// its audit record; a good one is recorded.
func TestAuditIDIsBoundedAndEveryAnswerNamesTheRequest(t *testing.T) {
	g, k, sink := testGateway(t)
	tok := k.callerToken(t, "alice", "prod", "get:pods")
	cases := []struct {
		name    string
		auditID []string
		code    int
		message string
		recID   string // the auditID recorded; "=request" for the gateway's own id
	}{
		{"bad characters", []string{`x injected`}, 400, `Audit-ID with the character " " at 1: want 1 to 128 characters of A-Z a-z 0-9 . _ : - (it goes on to the cluster's audit log)`, ""},
		{"too long", []string{strings.Repeat("a", 129)}, 400, "Audit-ID of 129 characters: want 1 to 128 characters of A-Z a-z 0-9 . _ : - (it goes on to the cluster's audit log)", ""},
		{"two", []string{"a", "b"}, 400, "2 Audit-ID headers: send at most one (it goes on to the cluster's audit log)", ""},
		// No connector: 503, after the Audit-ID was taken.
		{"good", []string{"warren-acq-abc-1"}, 503, `no connector is connected for cluster "prod"`, "warren-acq-abc-1"},
		{"none: the gateway's request id", nil, 503, `no connector is connected for cluster "prod"`, "=request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sink.recs = nil
			req := httptest.NewRequest("GET", "/clusters/prod/api/v1/namespaces/a/pods/p", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			for _, v := range c.auditID {
				req.Header.Add("Audit-ID", v)
			}
			rec := httptest.NewRecorder()
			g.ServeHTTP(rec, req)
			var st struct {
				Message string
				Code    int
			}
			json.Unmarshal(rec.Body.Bytes(), &st)
			if rec.Code != c.code || !strings.HasPrefix(st.Message, c.message) {
				t.Fatalf("%d %q, want %d %q", rec.Code, st.Message, c.code, c.message)
			}
			reqID := rec.Header().Get(wire.HeaderRequestID)
			if len(sink.recs) != 1 || reqID == "" || sink.recs[0].RequestID != reqID {
				t.Fatalf("answer names request %q; audit %+v", reqID, sink.recs)
			}
			want := c.recID
			if want == "=request" {
				want = reqID
			}
			if sink.recs[0].AuditID != want {
				t.Fatalf("recorded auditID %q, want %q", sink.recs[0].AuditID, want)
			}
		})
	}
}
