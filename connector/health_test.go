package connector

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/warren-dev/warren/audit"
)

// TestHealthHandler: /healthz answers while the process runs; /readyz fails while the audit log cannot be
// written, while no tunnel is up, and while a reloaded source reports an error, each saying so.
func TestHealthHandler(t *testing.T) {
	full := audit.New(fullDiskWriter{})
	full.Write(audit.Record{})
	up := func() bool { return true }
	for _, c := range []struct {
		name      string
		path      string
		connected func() bool
		audit     *audit.Log
		ready     func() error
		code      int
		body      string
	}{
		{"alive", "/healthz", func() bool { return false }, full, nil, http.StatusOK, "ok\n"},
		{"audit log full", "/readyz", up, full, nil, http.StatusServiceUnavailable,
			"the audit log cannot be written (audit log write failed: no space left on device (1 records lost since)): requests are refused until it can\n"},
		{"no tunnel", "/readyz", func() bool { return false }, nil, nil, http.StatusServiceUnavailable, "not connected to the gateway\n"},
		{"a reload failed", "/readyz", up, nil, func() error { return errors.New("--gateway-keys: bad PEM") }, http.StatusServiceUnavailable, "not ready: --gateway-keys: bad PEM\n"},
		{"ready", "/readyz", up, nil, func() error { return nil }, http.StatusOK, "ok\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var sink interface{ Write(audit.Record) error }
			if c.audit != nil {
				sink = c.audit
			}
			rec := httptest.NewRecorder()
			healthHandler(c.connected, sink, c.ready).ServeHTTP(rec, httptest.NewRequest("GET", c.path, nil))
			if rec.Code != c.code || rec.Body.String() != c.body {
				t.Errorf("%s: %d %q, want %d %q", c.path, rec.Code, rec.Body.String(), c.code, c.body)
			}
		})
	}
}

type fullDiskWriter struct{}

func (fullDiskWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }
