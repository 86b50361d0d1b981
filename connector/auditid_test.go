package connector

import (
	"net/http"
	"strings"
	"testing"
)

// The connector bounds the Audit-ID itself: a gateway that lets a bad one through cannot put it in the cluster's
// audit log. A good one reaches the API server and the connector's audit record.
func TestConnectorBoundsTheAuditID(t *testing.T) {
	b := newBench(t, benchOpts{})
	var goodID string
	for _, tc := range []struct {
		auditID string
		code    int
		message string
	}{
		{"warren-acq-abc-7", 200, ""},
		{strings.Repeat("x", 200), 400, "connector: Audit-ID of 200 characters: want 1 to 128 characters of A-Z a-z 0-9 . _ : -"},
		{"a{b}", 400, `connector: Audit-ID with the character "{" at 1: want 1 to 128 characters of A-Z a-z 0-9 . _ : -`},
	} {
		r := request{method: "GET", target: "/api/v1/namespaces/payments/pods?limit=500", header: http.Header{"Audit-Id": {tc.auditID}}}
		tok, id := b.assert(r, caller("get,list:pods:payments"), nil)
		if got := b.send(r, id, tok); got.code != tc.code || got.message != tc.message {
			t.Errorf("Audit-ID %.20q: %d %q, want %d %q", tc.auditID, got.code, got.message, tc.code, tc.message)
		}
		if tc.code == 200 {
			goodID = id
		}
	}
	seen := b.api.requests()
	if len(seen) != 1 || seen[0].Header.Get("Audit-Id") != "warren-acq-abc-7" {
		t.Fatalf("the API server saw %d requests", len(seen))
	}
	if rec, ok := b.audit.find(goodID); !ok || rec.AuditID != "warren-acq-abc-7" {
		t.Fatalf("audit: %+v", rec)
	}
}
