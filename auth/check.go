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
	d := Decision{Attributes: a, Status: http.StatusForbidden}
	who := fmt.Sprintf("token of %q", claims.Subject)
	if ok, why := AuthorizeImpersonation(claims.Warren.Rules, r.Header); !ok {
		d.Reason = fmt.Sprintf("%s cannot impersonate: %s", who, why)
		return d
	}
	if ok, why := Authorize(claims.Warren.Rules, a); !ok {
		d.Reason = who + " " + why
		if s := SuggestRule(a); s != "" {
			d.Reason += fmt.Sprintf(" (it needs --rule %s)", s)
		}
		return d
	}
	if ceiling != nil {
		if ok, why := ceiling.Authorize(a); !ok {
			d.Reason = "the cluster's policy does not allow it: " + why
			return d
		}
	}
	d.Allowed, d.Status, d.Reason = true, http.StatusOK, ""
	return d
}
