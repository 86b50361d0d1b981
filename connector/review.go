package connector

import (
	"net/http"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/auditrec"
	"github.com/warren-dev/warren/internal/review"
	"github.com/warren-dev/warren/internal/wire"
)

// answerReview answers a SelfSubjectAccessReview the connector's own checks refuse: the caller's rules (as the
// gateway's assertion carries them) and the cluster's ceiling. It reports whether it answered.
// A review both allow goes on to the API server, whose RBAC answers for the identity the connector acts as.
func (c *Connector) answerReview(w http.ResponseWriter, r *http.Request, claims *auth.Claims, entry *auditrec.Entry) bool {
	entry.Attributes(review.RequestAttributes)
	rev, a, err := review.Read(r)
	if err != nil {
		entry.Deny(err.Error())
		wire.WriteStatus(w, review.Code(err), "connector: "+err.Error(), 0)
		return true
	}
	d := auth.Decide(claims, c.cfg.Ceiling, a)
	if !d.Allowed && len(d.PodSpecs) > 0 {
		// A pod creation a podSpec rule speaks for: allowed for warren's collector pod only, which is what the
		// asker (warren acquire's node mode) will send; the API server's RBAC answers the rest.
		entry.Note("review of " + review.Describe(a) + ": allowed by the connector for warren's collector pod only (podSpec), asked the API server")
		return false
	}
	if !d.Allowed {
		entry.Note("review of " + review.Describe(a) + ": denied by the connector: " + d.Reason)
		review.Answer(w, rev, false, "warren connector: "+d.Reason)
		return true
	}
	entry.Note("review of " + review.Describe(a) + ": allowed by the connector, asked the API server")
	return false
}
