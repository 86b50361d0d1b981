package auth

import (
	"errors"
	"fmt"
	"net/http"
)

// Decision is the outcome of Check: the request's Kubernetes attributes, and whether it may go on. When it may
// not, Status (400 or 403) and Reason are what the caller is told.
type Decision struct {
	Attributes
	Allowed bool
	Status  int
	Reason  string
	// PodSpecs, when set on a decision not (yet) allowed, are the ceiling's podSpec rules the request's body must
	// pass one of (a pod creation in a collector namespace): the connector reads and checks it.
	PodSpecs []*PodSpec
}

// Check decides a request of a verified caller: path is the API path after the /clusters/<cluster> prefix. The
// token's rules must allow it (Kubernetes' attributes, RBAC-like matching, deny by default), caller-supplied
// Impersonate-* headers need impersonate rules, and, when ceiling is not nil, the ceiling must allow it too.
// The gateway and the connector both call it, so that either can refuse what the other let through.
func Check(r *http.Request, path string, claims *Claims, ceiling *Policy) Decision {
	a, err := Classify(r, path)
	if err != nil {
		reason := err.Error()
		if !errors.Is(err, ErrBadPath) {
			reason = "bad request: " + reason
		}
		return Decision{Attributes: a, Status: http.StatusBadRequest, Reason: reason}
	}
	if ok, why := AuthorizeImpersonation(claims.Warren.Rules, r.Header); !ok {
		return Decision{Attributes: a, Status: http.StatusForbidden, Reason: fmt.Sprintf("token of %q cannot impersonate: %s", claims.Subject, why)}
	}
	return Decide(claims, ceiling, a)
}

// Decide decides attributes a for a verified caller: the token's rules must allow them and, when ceiling is not
// nil, the ceiling too. A denial's Reason names the rule the token lacks (as --rule) or the ceiling's refusal. Check
// uses it for requests, and warren's answer to a SelfSubjectAccessReview for the action asked about.
func Decide(claims *Claims, ceiling *Policy, a Attributes) Decision {
	d := Decision{Attributes: a, Status: http.StatusForbidden}
	if ok, why := Authorize(claims.Warren.Rules, a); !ok {
		d.Reason = fmt.Sprintf("token of %q %s", claims.Subject, why)
		if s := SuggestRule(a); s != "" {
			d.Reason += fmt.Sprintf(" (it needs --rule %s)", s)
		}
		return d
	}
	if ceiling != nil {
		if ps := ceiling.PodSpecFor(a); ps.Check != nil {
			d.PodSpecs, d.Reason = ps.Check, "the pod's body must be "+ps.describe()+" (a podSpec rule of the cluster's policy)"
			return d
		}
		if ok, why := ceiling.Authorize(a); !ok {
			d.Reason = "the cluster's policy does not allow it: " + why
			return d
		}
	}
	d.Allowed, d.Status, d.Reason = true, http.StatusOK, ""
	return d
}
