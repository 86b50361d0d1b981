package kubetest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// auditPolicy records every request at level Metadata (who, what, when, the response code; no bodies) in all stages.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: Metadata
`

// AuditEvent is the part of a kube-apiserver audit event (audit.k8s.io/v1 Event) that tests look at.
type AuditEvent struct {
	AuditID    string // the request's Audit-ID: the client's when it sent one (warren's gateway always does)
	RequestURI string // path and query as the apiserver received them, e.g. /api/v1/namespaces/default/configmaps
	Verb       string // Kubernetes verb: get, list, watch, create, update, patch, delete, ...
	User       string // authenticated user name, e.g. "admin" or "warren-connector"
	Stage      string // RequestReceived, ResponseStarted, ResponseComplete or Panic
	// ImpersonatedUser is the user the request impersonated (Impersonate-User), "" when none.
	ImpersonatedUser string
	// ImpersonatedExtra is the impersonated user's extra attributes (Impersonate-Extra-*).
	ImpersonatedExtra map[string][]string
	Code              int // HTTP status; 0 in stage RequestReceived
}

// rawAuditEvent mirrors the JSON fields of audit.k8s.io/v1 Event we read.
type rawAuditEvent struct {
	AuditID    string `json:"auditID"`
	RequestURI string `json:"requestURI"`
	Verb       string `json:"verb"`
	Stage      string `json:"stage"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ImpersonatedUser *struct {
		Username string              `json:"username"`
		Extra    map[string][]string `json:"extra"`
	} `json:"impersonatedUser"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// AuditEvents parses the audit log written so far, oldest first. The apiserver writes an event after the response
// has gone out, so a test that looks for its own request should poll until it appears (with a deadline).
// A last line still being written (no newline yet) is left out.
func (c *Cluster) AuditEvents() ([]AuditEvent, error) {
	f, err := os.Open(c.AuditLog)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // nothing audited yet
	}
	if err != nil {
		return nil, fmt.Errorf("failed to open the audit log: %w", err)
	}
	defer f.Close()
	return parseAuditLog(f)
}

func parseAuditLog(r io.Reader) ([]AuditEvent, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var events []AuditEvent
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n') // events can be longer than bufio.Scanner's default limit
		if errors.Is(err, io.EOF) {
			return events, nil // a partial last line is an event being written
		}
		if err != nil {
			return events, fmt.Errorf("failed to read the audit log: %w", err)
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var raw rawAuditEvent
		if err := json.Unmarshal(line, &raw); err != nil {
			return events, fmt.Errorf("failed to parse line %d of the audit log: %w", n, err)
		}
		ev := AuditEvent{AuditID: raw.AuditID, RequestURI: raw.RequestURI, Verb: raw.Verb, User: raw.User.Username, Stage: raw.Stage}
		if raw.ResponseStatus != nil {
			ev.Code = raw.ResponseStatus.Code
		}
		if raw.ImpersonatedUser != nil {
			ev.ImpersonatedUser, ev.ImpersonatedExtra = raw.ImpersonatedUser.Username, raw.ImpersonatedUser.Extra
		}
		events = append(events, ev)
	}
}
