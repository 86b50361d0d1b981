package connector

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/review"
)

// The connector answers a review its ceiling refuses; one it allows reaches the API server, whose answer passes back
// unchanged.
func TestConnectorAnswersReviewsFromItsCeiling(t *testing.T) {
	api := &fakeAPI{handler: func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","status":{"allowed":true,"reason":"RBAC: allowed"}}`))
	}}
	ceiling, err := auth.ParsePolicy([]byte("rules:\n- verbs: [create]\n  resources: [pods/exec]\n  namespaces: [payments]\n"))
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	c := testConnector(t, api, Config{Ceiling: ceiling, Audit: sink})
	ask := func(ns string) authorizationv1.SelfSubjectAccessReview {
		body, _ := json.Marshal(map[string]any{"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
			"spec": map[string]any{"resourceAttributes": map[string]any{"verb": "create", "resource": "pods", "subresource": "exec", "namespace": ns}}})
		req := httptest.NewRequest("POST", review.Path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		c.upstream.ServeHTTP(rec, req)
		if rec.Code != http.StatusCreated {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		var got authorizationv1.SelfSubjectAccessReview
		json.Unmarshal(rec.Body.Bytes(), &got)
		return got
	}
	if got := ask("kube-system"); got.Status.Allowed || got.Status.Reason != `warren connector: the cluster's policy does not allow it: cannot create resource "pods/exec" in API group "" in the namespace "kube-system"` {
		t.Fatalf("outside the ceiling: %+v", got.Status)
	}
	if len(api.auditIDs) != 0 {
		t.Fatal("a review the ceiling refuses reached the API server")
	}
	if got := ask("payments"); !got.Status.Allowed || got.Status.Reason != "RBAC: allowed" {
		t.Fatalf("inside the ceiling: %+v", got.Status)
	}
	if len(api.auditIDs) != 1 || len(sink.recs) != 2 || sink.recs[0].Resource != "selfsubjectaccessreviews" {
		t.Fatalf("API server saw %d; audit %+v", len(api.auditIDs), sink.recs)
	}
}
