// Package review is how warren answers "may this token do X here": Kubernetes' SelfSubjectAccessReview, sent
// through the gateway. Forwarded as is, the API server would answer for the connector's own identity, not for the
// caller's token. So each layer answers for itself, in order: the gateway from the token's rules, the connector from
// the token's rules and the cluster's ceiling; only a review both allow reaches the API server, whose RBAC answers
// for the identity the connector acts as (its service account, or the caller when it impersonates). A refusal says
// which layer refused and, for the token, the exact --rule it lacks. `kubectl auth can-i` works through warren the
// same way.
package review

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/warren-dev/warren/auth"
)

// Path is the API path of SelfSubjectAccessReviews.
const Path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"

// MaxBodyBytes bounds a review's body; a real one is a few hundred bytes.
const MaxBodyBytes = 64 << 10

// Is reports whether r, whose API path is path, asks for a SelfSubjectAccessReview.
func Is(r *http.Request, path string) bool {
	return r.Method == http.MethodPost && (path == Path || path == Path+"/")
}

// RequestAttributes are the attributes of the review request itself (create selfsubjectaccessreviews), for audit
// records. Any valid token may ask about itself, as any authenticated user may in Kubernetes.
var RequestAttributes = auth.Attributes{Verb: "create", APIGroup: "authorization.k8s.io", APIVersion: "v1",
	Resource: "selfsubjectaccessreviews", Path: Path, ResourceRequest: true}

// Error is a review that cannot be read; Code is the HTTP status to answer with.
type Error struct {
	Code    int
	Message string
}

func (e *Error) Error() string { return e.Message }

// Code is the HTTP status to refuse a review with that Read could not read: the Error's, else 400.
func Code(err error) int {
	var re *Error
	if errors.As(err, &re) {
		return re.Code
	}
	return http.StatusBadRequest
}

// Read reads and decodes the review in r's body (JSON, YAML or protobuf, at most MaxBodyBytes) and gives r the
// review back as JSON, exactly as decoded, so that the request goes on with the question that was decided. It
// returns the attributes of the action asked about.
func Read(r *http.Request) (*authorizationv1.SelfSubjectAccessReview, auth.Attributes, error) {
	if r.Body == nil {
		return nil, auth.Attributes{}, &Error{http.StatusBadRequest, "a SelfSubjectAccessReview needs a body"}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	r.Body.Close()
	if err != nil {
		return nil, auth.Attributes{}, &Error{http.StatusBadRequest, fmt.Sprintf("cannot read the body: %v", err)}
	}
	if len(body) > MaxBodyBytes {
		return nil, auth.Attributes{}, &Error{http.StatusRequestEntityTooLarge, fmt.Sprintf("a SelfSubjectAccessReview of more than %d bytes", MaxBodyBytes)}
	}
	var rev authorizationv1.SelfSubjectAccessReview
	obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, &rev)
	if err != nil {
		return nil, auth.Attributes{}, &Error{http.StatusBadRequest, fmt.Sprintf("not a SelfSubjectAccessReview: %v", err)}
	}
	if got, ok := obj.(*authorizationv1.SelfSubjectAccessReview); !ok || gvk.Group != authorizationv1.GroupName || gvk.Kind != "SelfSubjectAccessReview" {
		return nil, auth.Attributes{}, &Error{http.StatusBadRequest, fmt.Sprintf("not a SelfSubjectAccessReview: %s", gvk)}
	} else {
		rev = *got
	}
	a, err := attributes(rev.Spec)
	if err != nil {
		return nil, auth.Attributes{}, &Error{http.StatusBadRequest, err.Error()}
	}
	// What goes on is the review as decided, re-encoded: the next decoder (the connector's, the API server's) cannot
	// read another question out of the same bytes (duplicate fields, another encoding).
	out := rev.DeepCopy()
	out.TypeMeta = metav1.TypeMeta{APIVersion: authorizationv1.SchemeGroupVersion.String(), Kind: "SelfSubjectAccessReview"}
	canonical, err := json.Marshal(out)
	if err != nil {
		return nil, auth.Attributes{}, &Error{http.StatusBadRequest, err.Error()}
	}
	r.Body = io.NopCloser(bytes.NewReader(canonical))
	r.ContentLength = int64(len(canonical))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Del("Content-Encoding")
	return &rev, a, nil
}

func attributes(spec authorizationv1.SelfSubjectAccessReviewSpec) (auth.Attributes, error) {
	switch ra, na := spec.ResourceAttributes, spec.NonResourceAttributes; {
	case ra != nil && na != nil:
		return auth.Attributes{}, errors.New("a review asks about resourceAttributes or nonResourceAttributes, not both")
	case ra != nil:
		if ra.Verb == "" || ra.Resource == "" {
			return auth.Attributes{}, errors.New("resourceAttributes need a verb and a resource")
		}
		return auth.Attributes{Verb: ra.Verb, APIGroup: ra.Group, APIVersion: ra.Version, Resource: ra.Resource,
			Subresource: ra.Subresource, Namespace: ra.Namespace, Name: ra.Name, ResourceRequest: true}, nil
	case na != nil:
		if na.Verb == "" || na.Path == "" {
			return auth.Attributes{}, errors.New("nonResourceAttributes need a verb and a path")
		}
		return auth.Attributes{Verb: na.Verb, Path: na.Path}, nil
	}
	return auth.Attributes{}, errors.New("a review asks about resourceAttributes or nonResourceAttributes")
}

// Describe is the action asked about, for logs and audit records: "create pods/exec in namespace payments".
func Describe(a auth.Attributes) string {
	if !a.ResourceRequest {
		return fmt.Sprintf("%s %s", a.Verb, a.Path)
	}
	res := a.CombinedResource()
	if a.APIGroup != "" {
		res = a.Resource + "." + a.APIGroup
		if a.Subresource != "" {
			res += "/" + a.Subresource
		}
	}
	if a.Name != "" {
		res += " " + a.Name
	}
	if a.Namespace != "" {
		return fmt.Sprintf("%s %s in namespace %s", a.Verb, res, a.Namespace)
	}
	return fmt.Sprintf("%s %s", a.Verb, res)
}

// Answer writes the review back with its status, as the API server would (201 Created, JSON).
func Answer(w http.ResponseWriter, rev *authorizationv1.SelfSubjectAccessReview, allowed bool, reason string) {
	out := rev.DeepCopy()
	out.TypeMeta = metav1.TypeMeta{APIVersion: authorizationv1.SchemeGroupVersion.String(), Kind: "SelfSubjectAccessReview"}
	out.Status = authorizationv1.SubjectAccessReviewStatus{Allowed: allowed, Denied: !allowed, Reason: reason}
	body, _ := json.Marshal(out)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	w.Write(append(body, '\n'))
}
