// Package wire holds what gateway and connector agree on beyond the tunnel itself: the headers a proxied request
// carries between them, and the Kubernetes Status bodies that both use for errors so kubectl prints them.
package wire

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Headers set by the gateway on a request it forwards to the connector. A caller cannot set them: the gateway
// removes every inbound header with HeaderPrefix first.
const (
	HeaderPrefix = "Warren-"
	// HeaderAssertion carries the gateway's signed assertion of the request (auth.Assertion): who the caller is,
	// what it may do, and exactly which request, cluster and tunnel it is for. The caller's token itself never
	// leaves the gateway.
	HeaderAssertion = "Warren-Assertion"
	// HeaderRequestID correlates the gateway's and the connector's logs and audit records.
	HeaderRequestID = "Warren-Request-Id"
	// HeaderConnectorName and HeaderConnectorVersion describe a connector on its tunnel upgrade request.
	HeaderConnectorName    = "Warren-Connector-Name"
	HeaderConnectorVersion = "Warren-Connector-Version"
	// HeaderProof carries a connector's proof of possession of its key (RFC 9449's DPoP header) on /connect/join
	// and /connect.
	HeaderProof = "DPoP"
	// HeaderTunnelID is the id the gateway gives each tunnel session (128 random bits, hex), in its answer to the
	// connector's upgrade. Every assertion sent over the tunnel names it, so that no other connector accepts them.
	HeaderTunnelID = "Warren-Tunnel-Id"
	// HeaderRefusal is set by a connector on a refusal of its own making before anything reached the API server,
	// for a reason another connector of the cluster may not share (RefusalUnauditable): the gateway may send the
	// request to another connector. The connector removes it from the API server's answers, and the gateway from
	// what it passes on, so that only a connector's own refusal carries it.
	HeaderRefusal = "Warren-Refusal"
)

// RefusalUnauditable (HeaderRefusal): the connector cannot write its audit log, so it serves nothing.
const RefusalUnauditable = "unauditable"

// Paths of the gateway's connector endpoints, under its base URL.
const (
	// PathJoin: POST with the join token (Authorization: Bearer) and a proof of possession; answers JoinResponse.
	PathJoin = "/connect/join"
	// PathConnect: GET WebSocket upgrade with the credential (Authorization: DPoP) and a proof of possession.
	PathConnect = "/connect"
)

// JoinResponse is the gateway's answer to a join: the connector's credential and when to renew it.
type JoinResponse struct {
	Credential   string `json:"credential"`
	CredentialID string `json:"credentialID"`
	Identity     string `json:"identity"` // RFC 7638 thumbprint of the connector's key
	Cluster      string `json:"cluster"`
	// ExpiresIn and RenewIn are seconds from the answer: the credential's lifetime left, and when the connector
	// should renew it (two thirds of it).
	ExpiresIn int64 `json:"expiresIn"`
	RenewIn   int64 `json:"renewIn"`
	// NewIdentity tells a first join from a renewal.
	NewIdentity bool `json:"newIdentity"`
}

// DPoPToken returns the credential of an "Authorization: DPoP" header (RFC 9449 7.1), or "".
func DPoPToken(h http.Header) string {
	v := h.Get("Authorization")
	if len(v) > 5 && strings.EqualFold(v[:5], "dpop ") {
		return strings.TrimSpace(v[5:])
	}
	return ""
}

// StripWarrenHeaders deletes every header with HeaderPrefix.
func StripWarrenHeaders(h http.Header) {
	for k := range h {
		if strings.HasPrefix(k, HeaderPrefix) {
			delete(h, k)
		}
	}
}

// reasons maps the status codes warren answers with to Kubernetes' reasons, which kubectl shows in brackets.
var reasons = map[int]metav1.StatusReason{
	http.StatusBadRequest:                  metav1.StatusReasonBadRequest,
	http.StatusUnauthorized:                metav1.StatusReasonUnauthorized,
	http.StatusForbidden:                   metav1.StatusReasonForbidden,
	http.StatusNotFound:                    metav1.StatusReasonNotFound,
	http.StatusMethodNotAllowed:            metav1.StatusReasonMethodNotAllowed,
	http.StatusRequestEntityTooLarge:       metav1.StatusReasonRequestEntityTooLarge,
	http.StatusTooManyRequests:             metav1.StatusReasonTooManyRequests,
	http.StatusRequestHeaderFieldsTooLarge: "RequestHeaderFieldsTooLarge",
	http.StatusInternalServerError:         metav1.StatusReasonInternalError,
	http.StatusBadGateway:                  "BadGateway",
	http.StatusServiceUnavailable:          metav1.StatusReasonServiceUnavailable,
	http.StatusGatewayTimeout:              metav1.StatusReasonTimeout,
}

// Status builds the Kubernetes Status object for an error answer.
func Status(code int, message string) *metav1.Status {
	return &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Message:  message,
		Reason:   reasons[code],
		Code:     int32(code),
	}
}

// WriteStatus answers with a Kubernetes Status body. retryAfter > 0 adds a Retry-After header, in seconds, and
// says the same in the Status (details.retryAfterSeconds, as kube-apiserver does), which a client reaches even
// where it sees only the body (client-go's WebSocket upgrade errors).
func WriteStatus(w http.ResponseWriter, code int, message string, retryAfter int) {
	st := Status(code, message)
	if retryAfter > 0 {
		st.Details = &metav1.StatusDetails{RetryAfterSeconds: int32(retryAfter)}
	}
	body, _ := json.Marshal(st)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.WriteHeader(code)
	w.Write(append(body, '\n'))
}

// BearerToken returns the token of an "Authorization: Bearer" header, or "" when there is none.
func BearerToken(h http.Header) string {
	v := h.Get("Authorization")
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return ""
}

// ClockEstimateError bounds the error of a connector's estimate of the gateway's clock, which it takes from the
// gateway's Date headers: their second's resolution, and half a round trip. The connector's leeway on assertions
// is never below it, and the gateway allows for it when a connector ends a stream for its token's expiry.
const ClockEstimateError = time.Second
