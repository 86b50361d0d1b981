package connector

import (
	"encoding/json"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/review"
)

// The connector answers a review its ceiling (or the caller's rules) refuses; one both allow reaches the API
// server, as the review it decided, re-encoded.
func TestConnectorAnswersReviewsFromItsCeiling(t *testing.T) {
	ceiling, err := auth.ParsePolicy([]byte("rules:\n- verbs: [create]\n  resources: [pods/exec]\n  namespaces: [payments]\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := newBench(t, benchOpts{ceiling: ceiling})
	who := caller("create:pods/exec:payments,kube-system")
	ask := func(ns string) answer {
		body, _ := json.Marshal(map[string]any{"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
			"spec": map[string]any{"resourceAttributes": map[string]any{"verb": "create", "resource": "pods", "subresource": "exec", "namespace": ns}}})
		r := request{method: "POST", target: review.Path, body: string(body), header: map[string][]string{"Content-Type": {"application/json"}}}
		tok, id := b.assert(r, who, nil)
		return b.send(r, id, tok)
	}
	if got := ask("kube-system"); got.code != 201 {
		t.Fatalf("outside the ceiling: %+v", got)
	}
	if len(b.api.requests()) != 0 {
		t.Fatal("a review the ceiling refuses reached the API server")
	}
	if got := ask("payments"); got.code != 200 { // the stand-in API server's own answer, passed back
		t.Fatalf("inside the ceiling: %+v", got)
	}
	seen := b.api.requests()
	if len(seen) != 1 || seen[0].Method != "POST" || seen[0].URL.Path != review.Path {
		t.Fatalf("the API server saw %d requests", len(seen))
	}
	// What went on is the review as decided, re-encoded (package review checks its bytes).
	want, _ := json.Marshal(authorizationv1.SelfSubjectAccessReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "authorization.k8s.io/v1", Kind: "SelfSubjectAccessReview"},
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: "create", Resource: "pods", Subresource: "exec", Namespace: "payments"}}})
	if seen[0].ContentLength != int64(len(want)) || seen[0].Header.Get("Content-Type") != "application/json" {
		t.Fatalf("the review that went on: %d bytes of %s, want %d", seen[0].ContentLength, seen[0].Header.Get("Content-Type"), len(want))
	}
}
