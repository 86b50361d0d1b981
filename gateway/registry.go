package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-dev/warren/tunnel"
)

// connectorSession is one live connector tunnel and the HTTP transport that pools streams over it.
type connectorSession struct {
	id          string
	cluster     string
	name        string // the connector's own name (pod or host), for logs
	version     string
	remote      string
	connectedAt time.Time
	log         *slog.Logger

	tunnel    *tunnel.Session
	transport *http.Transport
}

// openError marks a failure to open a stream on a session, before anything of the request was sent: the request
// can safely go to another connector of the same cluster.
type openError struct{ err error }

func (e *openError) Error() string {
	return fmt.Sprintf("failed to open a stream to the connector: %v", e.err)
}
func (e *openError) Unwrap() error { return e.err }

func newConnectorSession(t *tunnel.Session, cfg TransportConfig) *connectorSession {
	cs := &connectorSession{tunnel: t}
	cs.transport = &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := t.Open(ctx)
			if err != nil {
				return nil, &openError{err}
			}
			return c, nil
		},
		// Streams are cheap but not free: keep enough idle ones that a busy cluster does not open a stream per
		// request (Go's default keeps 2 per host).
		MaxIdleConnsPerHost: cfg.MaxIdleStreams,
		MaxIdleConns:        cfg.MaxIdleStreams,
		// Shorter than the connector's idle timeout, so that the gateway, not the connector, retires idle streams
		// and never sends a request on a stream the connector is closing.
		IdleConnTimeout: cfg.IdleStreamTimeout,
		// The caller's Accept-Encoding passes through as is; the transport must not add gzip and decode it.
		DisableCompression:     true,
		MaxResponseHeaderBytes: 1 << 20,
		WriteBufferSize:        64 << 10,
		ReadBufferSize:         64 << 10,
	}
	return cs
}

func (cs *connectorSession) close() {
	cs.tunnel.Close()
	cs.transport.CloseIdleConnections()
}

// registry is the set of live connector sessions, by cluster. A cluster is known once a connector of it has
// connected, or when it is configured up front; it stays known when its connectors leave, so that callers get 503
// (no connector) rather than 404 (no such cluster).
type registry struct {
	mu       sync.Mutex
	clusters map[string]*clusterSessions
}

type clusterSessions struct {
	sessions []*connectorSession // immutable slice, replaced on change, so pick needs no copy
	next     atomic.Uint32       // round robin over sessions
}

func newRegistry(known []string) *registry {
	r := &registry{clusters: make(map[string]*clusterSessions)}
	for _, c := range known {
		r.clusters[c] = &clusterSessions{}
	}
	return r
}

func (r *registry) add(cs *connectorSession) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.clusters[cs.cluster]
	if c == nil {
		c = &clusterSessions{}
		r.clusters[cs.cluster] = c
	}
	c.sessions = append(append([]*connectorSession(nil), c.sessions...), cs)
}

func (r *registry) remove(cs *connectorSession) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.clusters[cs.cluster]
	if c == nil {
		return
	}
	kept := make([]*connectorSession, 0, len(c.sessions))
	for _, s := range c.sessions {
		if s != cs {
			kept = append(kept, s)
		}
	}
	c.sessions = kept
}

var (
	errUnknownCluster = errors.New("unknown cluster")
	errNoConnector    = errors.New("no connector connected")
)

// sessions returns the live sessions of a cluster and the index to start from: successive calls start at
// successive sessions, so requests spread over a cluster's connectors. The slice must not be modified.
func (r *registry) sessions(cluster string) (list []*connectorSession, start int, err error) {
	r.mu.Lock()
	c := r.clusters[cluster]
	if c != nil {
		list = c.sessions
	}
	r.mu.Unlock()
	if c == nil {
		return nil, 0, errUnknownCluster
	}
	if len(list) == 0 {
		return nil, 0, errNoConnector
	}
	return list, int(c.next.Add(1)) % len(list), nil
}

func (r *registry) all() []*connectorSession {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*connectorSession
	for _, c := range r.clusters {
		out = append(out, c.sessions...)
	}
	return out
}

// known reports whether the cluster has had a connector or was configured.
func (r *registry) known(cluster string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.clusters[cluster] != nil
}

// count returns the number of live sessions of a cluster.
func (r *registry) count(cluster string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.clusters[cluster]; c != nil {
		return len(c.sessions)
	}
	return 0
}
