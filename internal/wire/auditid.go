package wire

import (
	"fmt"
	"net/http"
)

// HeaderAuditID is Kubernetes' audit id header: kube-apiserver adopts a client's value as the auditID of its audit
// event (and answers with it), whatever it is. Warren bounds it so that a caller cannot write arbitrary text into
// the cluster's audit log: both the gateway and the connector refuse a request whose Audit-ID is not CheckAuditID's
// shape, and the gateway gives a request without one its own request id.
const HeaderAuditID = "Audit-Id"

// MaxAuditIDLength bounds an Audit-ID: a UUID is 36 characters, warren's acquisition ids about 40.
const MaxAuditIDLength = 128

// CheckAuditID returns the request's Audit-ID ("" when it has none) or an error saying why it is refused: more than
// one, empty, longer than MaxAuditIDLength, or a character other than A-Z a-z 0-9 . _ : -.
func CheckAuditID(h http.Header) (string, error) {
	vs := h.Values(HeaderAuditID)
	switch {
	case len(vs) == 0:
		return "", nil
	case len(vs) > 1:
		return "", fmt.Errorf("%d Audit-ID headers: send at most one", len(vs))
	}
	id := vs[0]
	if id == "" || len(id) > MaxAuditIDLength {
		return "", fmt.Errorf("Audit-ID of %d characters: want 1 to %d characters of A-Z a-z 0-9 . _ : -", len(id), MaxAuditIDLength)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return "", fmt.Errorf("Audit-ID with the character %q at %d: want 1 to %d characters of A-Z a-z 0-9 . _ : -", id[i:i+1], i, MaxAuditIDLength)
		}
	}
	return id, nil
}
