package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// Monitor watches what is reloaded behind a Verifier (KeyFiles, RevocationList, RemoteJWKS): each keeps serving
// what it read last when a reload fails, so that a half-written file locks nobody out and a deleted revocation list
// un-revokes nothing, which is only safe if someone notices. Check asks every source for its state, logs once when
// one starts failing (and when its error changes) and once when it recovers, and returns the failures of the
// sources added with Watch, for readiness (/readyz). It starts no goroutines: call Check periodically and from the
// readiness probe. Safe for concurrent use.
type Monitor struct {
	log *slog.Logger

	mu      sync.Mutex // guards sources and their last state; held during Check
	sources []*monitored
}

type monitored struct {
	name  string
	check func() error
	ready bool   // a failure fails readiness
	last  string // the error last seen, "" for none
}

// NewMonitor returns a Monitor logging to log (nil: discard).
func NewMonitor(log *slog.Logger) *Monitor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Monitor{log: log}
}

// Watch adds a source whose failure fails readiness: a file under the operator's control, such as --issuer-keys
// (KeyFiles.Check) or --revoked-tokens (RevocationList.Check). name is how logs and readiness call it.
func (m *Monitor) Watch(name string, check func() error) { m.add(name, check, true) }

// WatchLogOnly adds a source whose failures are only logged: a remote one (RemoteJWKS.Err), whose outage must not
// take the service out of rotation while the keys fetched before still verify.
func (m *Monitor) WatchLogOnly(name string, check func() error) { m.add(name, check, false) }

func (m *Monitor) add(name string, check func() error, ready bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sources = append(m.sources, &monitored{name: name, check: check, ready: ready})
}

// Check asks every source, logs what changed since the last Check, and returns the failures of the Watch sources
// joined, each prefixed with its name; nil when all are well.
func (m *Monitor) Check() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, s := range m.sources {
		err := s.check()
		now := ""
		if err != nil {
			now = err.Error()
			if s.ready {
				errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
			}
		}
		switch {
		case now == s.last:
		case now == "":
			m.log.Info("reloaded after an earlier failure", "source", s.name)
		default:
			m.log.Error("reload failed; still using what was read before", "source", s.name, "err", err)
		}
		s.last = now
	}
	return errors.Join(errs...)
}
