package gateway

import (
	"net/http"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/auditrec"
	"github.com/warren-dev/warren/internal/review"
	"github.com/warren-dev/warren/internal/wire"
)

// answerReview answers a SelfSubjectAccessReview from the token's rules (see package review) and reports whether
// it did. A review the token allows is not answered here: it goes on to the connector, which checks it against its
// ceiling and lets the API server answer for RBAC.
func (g *Gateway) answerReview(w http.ResponseWriter, r *http.Request, claims *auth.Claims, entry *auditrec.Entry) bool {
	rev, a, err := review.Read(r)
	if err != nil {
		entry.Deny(err.Error())
		wire.WriteStatus(w, review.Code(err), err.Error(), 0)
		return true
	}
	if d := auth.Decide(claims, nil, a); !d.Allowed {
		entry.Note("review of " + review.Describe(a) + ": denied by the gateway: " + d.Reason)
		review.Answer(w, rev, false, "warren gateway: "+d.Reason)
		return true
	}
	entry.Note("review of " + review.Describe(a) + ": allowed by the token, asked the connector")
	return false
}
