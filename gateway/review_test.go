package gateway

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"

	"github.com/warren-dev/warren/internal/review"
)

func reviewBody(verb, resource, sub, ns, name string) []byte {
	b, _ := json.Marshal(authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: verb, Resource: resource, Subresource: sub, Namespace: ns, Name: name}},
	})
	return append([]byte(`{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview",`), b[1:]...)
}

// The gateway answers a review the token does not allow itself, with the exact --rule it lacks, whatever rules the
// token has for selfsubjectaccessreviews; a review it allows goes on towards the connector (here: 503, none).
func TestGatewayAnswersReviewsFromTheToken(t *testing.T) {
	g, k, sink := testGateway(t)
	tok := k.callerToken(t, "alice", "prod", "get,list:pods:payments", "create:pods/exec:payments:api-1")
	for _, c := range []struct {
		name   string
		body   []byte
		code   int
		reason string // allowed=false with this reason when code is 201
	}{
		{"exec elsewhere", reviewBody("create", "pods", "exec", "payments", "api-2"), 201,
			`warren gateway: token of "alice" cannot create resource "pods/exec" in API group "" in the namespace "payments" (it needs --rule create:pods/exec:payments:api-2)`},
		{"log", reviewBody("get", "pods", "log", "payments", "api-1"), 201,
			`warren gateway: token of "alice" cannot get resource "pods/log" in API group "" in the namespace "payments" (it needs --rule get:pods/log:payments:api-1)`},
		{"nodes", reviewBody("get", "nodes", "", "", "n1"), 201,
			`warren gateway: token of "alice" cannot get resource "nodes" in API group "" at the cluster scope (it needs --rule get:nodes::n1)`},
		{"allowed: asks the connector", reviewBody("create", "pods", "exec", "payments", "api-1"), 503, ""},
		{"not a review", []byte(`{"kind":"Pod","apiVersion":"v1"}`), 400, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			sink.recs = nil
			req := httptest.NewRequest("POST", "/clusters/prod"+review.Path, bytes.NewReader(c.body))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			g.ServeHTTP(rec, req)
			if rec.Code != c.code {
				t.Fatalf("%d %s, want %d", rec.Code, rec.Body, c.code)
			}
			if len(sink.recs) != 1 || sink.recs[0].Resource != "selfsubjectaccessreviews" || sink.recs[0].Verb != "create" {
				t.Fatalf("audit: %+v", sink.recs)
			}
			if c.code != 201 {
				return
			}
			var got authorizationv1.SelfSubjectAccessReview
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got.Status.Allowed || !got.Status.Denied || got.Status.Reason != c.reason {
				t.Fatalf("status %+v, want denied: %s", got.Status, c.reason)
			}
			if !strings.Contains(sink.recs[0].Reason, "denied by the gateway") {
				t.Fatalf("audit reason %q", sink.recs[0].Reason)
			}
		})
	}
}
