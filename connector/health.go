package connector

import (
	"fmt"
	"io"
	"net/http"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/internal/auditrec"
)

// HealthHandler answers probes: /healthz while the process runs, /readyz while a tunnel is up, the audit log takes
// records (the connector refuses requests it cannot audit) and ready reports no error (a key file or revocation
// list that failed to reload). ready may be nil.
func (c *Connector) HealthHandler(ready func() error) http.Handler {
	return healthHandler(c.Connected, c.cfg.Audit, ready)
}

func healthHandler(connected func() bool, sink audit.Sink, ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := auditrec.Err(sink); err != nil {
			http.Error(w, fmt.Sprintf("the audit log cannot be written (%v): requests are refused until it can", err), http.StatusServiceUnavailable)
			return
		}
		if !connected() {
			http.Error(w, "not connected to the gateway", http.StatusServiceUnavailable)
			return
		}
		if ready != nil {
			if err := ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		io.WriteString(w, "ok\n")
	})
	return mux
}
