package audit

import (
	"net/url"
	"slices"
	"time"
)

// Decisions of a Record.
const (
	DecisionAllow = "allow"
	DecisionDeny  = "deny"
)

// Components writing records.
const (
	ComponentGateway   = "gateway"
	ComponentConnector = "connector"
)

// Record is one audit line. Optional fields are omitted from the JSON when empty. Seq and PrevHash are set by
// Log.Write; whatever the caller puts there is overwritten.
type Record struct {
	Time      time.Time `json:"time"`      // written as RFC 3339 with nanoseconds, in UTC; zero means now
	Component string    `json:"component"` // ComponentGateway or ComponentConnector
	RequestID string    `json:"requestID"`
	AuditID   string    `json:"auditID,omitempty"` // the Audit-ID sent on to the API server (its audit event's auditID)
	Cluster   string    `json:"cluster"`
	Subject   string    `json:"subject,omitempty"`
	TokenID   string    `json:"tokenID,omitempty"`
	Issuer    string    `json:"issuer,omitempty"`
	// AssertionID is, at the connector, the id (jti) of the gateway's assertion the request came with: the
	// gateway's signed word for this exact request.
	AssertionID string   `json:"assertionID,omitempty"`
	Method      string   `json:"method"`
	Path        string   `json:"path"` // API path with query
	Verb        string   `json:"verb"`
	APIGroup    string   `json:"apiGroup,omitempty"`
	Resource    string   `json:"resource,omitempty"`
	Subresource string   `json:"subresource,omitempty"`
	Namespace   string   `json:"namespace,omitempty"`
	Name        string   `json:"name,omitempty"`
	Decision    string   `json:"decision"`         // DecisionAllow or DecisionDeny
	Reason      string   `json:"reason,omitempty"` // for a denial, the missing permission
	Status      int      `json:"status"`
	BytesIn     int64    `json:"bytesIn"`
	BytesOut    int64    `json:"bytesOut"`
	DurationMS  float64  `json:"durationMs"`
	Command     []string `json:"command,omitempty"` // exec: the command query parameters, in order (ExecDetails)
	Container   string   `json:"container,omitempty"`
	// StdoutBytes and StdoutSHA256 witness an exec session's stdout as it went to the caller (the connector writes
	// them): bytes of the stdout channel or stream, and their SHA-256 in lowercase hex.
	StdoutBytes  int64  `json:"stdoutBytes,omitempty"`
	StdoutSHA256 string `json:"stdoutSha256,omitempty"`
	SourceIP     string `json:"sourceIP,omitempty"`
	UserAgent    string `json:"userAgent,omitempty"`
	// Suppressed, on a summary record, counts refusals that were not recorded one by one (see Suppressed).
	Suppressed *Suppressed `json:"suppressed,omitempty"`
	// Truncated names the fields Write clipped to MaxFieldBytes of JSON, each with its length in bytes before.
	Truncated map[string]int `json:"truncated,omitempty"`
	Seq       uint64         `json:"seq"`      // set by Log.Write: 1 for the first record of a file, then +1
	PrevHash  string         `json:"prevHash"` // set by Log.Write: hex SHA-256 of the previous line, 64 zeros for the first

	// Kubelet is set for requests through nodes/proxy: what they do at the kubelet (KubeletDetails). Command and
	// Container are set for exec, attach and run there too.
	Kubelet *KubeletCall `json:"kubelet,omitempty"`

	// Event names what a record that is not an API request is about (EventConnector*); empty for API requests.
	Event string `json:"event,omitempty"`
	// Connector describes the connector identity and tunnel of a connector event.
	Connector *ConnectorDetails `json:"connector,omitempty"`
}

// Events of connector records: joins (a new identity or a renewal, or refused), tunnels opened or refused, and
// tunnels ended, with the reason (the gateway's re-check ending them, or the tunnel lost).
const (
	EventConnectorIdentityNew = "connector.identity.new"
	EventConnectorRenewed     = "connector.credential.renewed"
	EventConnectorJoinRefused = "connector.join.refused"
	EventConnectorTunnelOpen  = "connector.tunnel.open"
	EventConnectorTunnelDeny  = "connector.tunnel.refused"
	EventConnectorTunnelEnd   = "connector.tunnel.end"
)

// ConnectorDetails identify a connector in a connector event. Name and Version are what the connector says of
// itself: labels, never an identity.
type ConnectorDetails struct {
	Identity          string     `json:"identity,omitempty"` // RFC 7638 thumbprint of the connector's key
	CredentialID      string     `json:"credentialID,omitempty"`
	CredentialExpires *time.Time `json:"credentialExpires,omitempty"`
	JoinTokenID       string     `json:"joinTokenID,omitempty"`
	Session           string     `json:"session,omitempty"`
	Started           *time.Time `json:"started,omitempty"` // when the tunnel opened (tunnel end records)
	Name              string     `json:"name,omitempty"`
	Version           string     `json:"version,omitempty"`
}

// Suppressed is what a summary record stands for: refusals of one source (Record.SourceIP) that were counted but
// not recorded one by one, because that source was refused more often than its audit budget allows.
type Suppressed struct {
	Count    int64            `json:"count"`
	Since    time.Time        `json:"since"`    // the first of them
	Until    time.Time        `json:"until"`    // the last
	Statuses map[string]int64 `json:"statuses"` // how many of each HTTP status ("401": 12000)
}

// ExecDetails returns what an exec or attach request runs: the "command" query parameters in the order the client
// sent them (kubectl sends one per argument), and the "container" parameter. The slice is a copy.
func ExecDetails(query url.Values) (command []string, container string) {
	return slices.Clone(query["command"]), query.Get("container")
}
