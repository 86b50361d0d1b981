package review

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/warren-dev/warren/auth"
)

func ssar(ra *authorizationv1.ResourceAttributes, na *authorizationv1.NonResourceAttributes) *authorizationv1.SelfSubjectAccessReview {
	r := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: ra, NonResourceAttributes: na}}
	r.APIVersion, r.Kind = "authorization.k8s.io/v1", "SelfSubjectAccessReview"
	return r
}

func TestRead(t *testing.T) {
	exec := &authorizationv1.ResourceAttributes{Verb: "create", Resource: "pods", Subresource: "exec", Namespace: "payments", Name: "api-1"}
	jsonBody, _ := json.Marshal(ssar(exec, nil))
	var pb bytes.Buffer
	if err := protobuf.NewSerializer(scheme.Scheme, scheme.Scheme).Encode(ssar(exec, nil), &pb); err != nil {
		t.Fatal(err)
	}
	pod, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Pod"})
	both, _ := json.Marshal(ssar(exec, &authorizationv1.NonResourceAttributes{Verb: "get", Path: "/x"}))
	none, _ := json.Marshal(ssar(nil, nil))
	nonres, _ := json.Marshal(ssar(nil, &authorizationv1.NonResourceAttributes{Verb: "get", Path: "/healthz"}))
	wantExec := auth.Attributes{Verb: "create", Resource: "pods", Subresource: "exec", Namespace: "payments", Name: "api-1", ResourceRequest: true}
	for _, c := range []struct {
		name string
		body []byte
		want auth.Attributes
		code int
		msg  string
	}{
		{"json", jsonBody, wantExec, 0, ""},
		{"protobuf", pb.Bytes(), wantExec, 0, ""},
		{"non-resource", nonres, auth.Attributes{Verb: "get", Path: "/healthz"}, 0, ""},
		{"another kind", pod, auth.Attributes{}, 400, "not a SelfSubjectAccessReview"},
		{"garbage", []byte("{"), auth.Attributes{}, 400, "not a SelfSubjectAccessReview"},
		{"both", both, auth.Attributes{}, 400, "a review asks about resourceAttributes or nonResourceAttributes, not both"},
		{"neither", none, auth.Attributes{}, 400, "a review asks about resourceAttributes or nonResourceAttributes"},
		{"too large", append(jsonBody, bytes.Repeat([]byte(" "), MaxBodyBytes)...), auth.Attributes{}, 413, "a SelfSubjectAccessReview of more than 65536 bytes"},
		// Two resourceAttributes: whatever one decoder makes of it, the same goes on (re-encoded), never the other.
		{"duplicate fields", []byte(`{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","spec":{"resourceAttributes":{"verb":"get","resource":"pods"},"resourceAttributes":{"verb":"create","resource":"pods","subresource":"exec","namespace":"payments","name":"api-1"}}}`), wantExec, 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", Path, bytes.NewReader(c.body))
			rev, a, err := Read(r)
			if c.code != 0 {
				var re *Error
				if !errors.As(err, &re) || re.Code != c.code || !strings.HasPrefix(re.Message, c.msg) {
					t.Fatalf("Read = %v, want %d %q", err, c.code, c.msg)
				}
				return
			}
			if err != nil || a != c.want || rev == nil {
				t.Fatalf("Read = %+v, %v; want %+v", a, err, c.want)
			}
			// The body goes on as the review decided, in JSON.
			b, _ := io.ReadAll(r.Body)
			var again authorizationv1.SelfSubjectAccessReview
			if err := json.Unmarshal(b, &again); err != nil || r.ContentLength != int64(len(b)) || r.Header.Get("Content-Type") != "application/json" ||
				again.Kind != "SelfSubjectAccessReview" {
				t.Fatalf("the body that goes on: %s (%v)", b, err)
			}
			if _, a2, err := Read(httptest.NewRequest("POST", Path, bytes.NewReader(b))); err != nil || a2 != a {
				t.Fatalf("the body that goes on asks %+v (%v), not %+v", a2, err, a)
			}
		})
	}
}

func TestAnswer(t *testing.T) {
	rec := httptest.NewRecorder()
	Answer(rec, ssar(&authorizationv1.ResourceAttributes{Verb: "get", Resource: "pods"}, nil), false, "warren gateway: no")
	if rec.Code != http.StatusCreated || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(rec.Body.Bytes(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := obj.(*authorizationv1.SelfSubjectAccessReview)
	if got.Status.Allowed || !got.Status.Denied || got.Status.Reason != "warren gateway: no" || got.Spec.ResourceAttributes.Resource != "pods" {
		t.Fatalf("%+v", got)
	}
	var _ runtime.Object = got
}

func TestIs(t *testing.T) {
	post := httptest.NewRequest("POST", "/x", nil)
	get := httptest.NewRequest("GET", "/x", nil)
	if !Is(post, Path) || !Is(post, Path+"/") || Is(get, Path) || Is(post, "/apis/authorization.k8s.io/v1/subjectaccessreviews") ||
		Is(post, "/apis/authorization.k8s.io/v1beta1/selfsubjectaccessreviews") {
		t.Fatal("Is")
	}
}
