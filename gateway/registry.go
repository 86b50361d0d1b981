package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/tunnel"
)

// connectorSession is one live connector tunnel and the HTTP transport that pools streams over it.
type connectorSession struct {
	id          string // the session's id (wire.HeaderTunnelID): assertions sent over it name it
	cluster     string
	ident       *identity
	credID      string // the credential it was opened with
	joinID      string // the join token behind that credential
	name        string // the connector's own name (pod or host): a label, never an identity
	version     string
	remote      string
	connectedAt time.Time
	log         *slog.Logger
	// endReason is why the gateway ended the session, when it did (the sweep); nil while it lives or when the
	// tunnel ended otherwise.
	endReason atomic.Pointer[sessionEndReason]

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

// identity is one connector identity of a cluster: the key a connector holds (id: the key's RFC 7638 thumbprint),
// the join token it was admitted with, its latest credential, and its live tunnels. Requests spread over a
// cluster's identities first, then over the identity's tunnels, so more tunnels buy no more share.
type identity struct {
	id      string
	cluster string
	seq     uint64        // order of admission: the round robin goes oldest first
	next    atomic.Uint32 // round robin over its sessions

	// Guarded by registry.mu.
	join      *auth.Claims // the join token's claims, re-checked by the gateway's sweep
	credID    string       // the latest credential issued (or presented)
	credExp   time.Time    // the latest expiry of its credentials: renewing moves it on
	sessions  []*connectorSession
	pending   int       // tunnels admitted and being upgraded
	idleSince time.Time // since when it has had no tunnel
	forgotten bool      // dropped from the registry: no new tunnel may join it
}

// registry is the set of live connector identities and sessions, by cluster. A cluster is known once a connector of
// it has joined, or when it is configured up front; it stays known when its connectors leave, so that callers get
// 503 (no connector) rather than 404 (no such cluster).
type registry struct {
	mu       sync.Mutex
	clusters map[string]*clusterSessions
	admitted uint64 // identities admitted so far: the next one's seq
}

type clusterSessions struct {
	identities map[string]*identity // every identity holding one of the cluster's slots
	groups     []backendGroup       // immutable, replaced on change: identities with a tunnel, oldest first
	sessions   int
	next       atomic.Uint32 // round robin over groups
}

// backendGroup is an identity and a snapshot of its tunnels.
type backendGroup struct {
	id       *identity
	sessions []*connectorSession
}

func newRegistry(known []string) *registry {
	r := &registry{clusters: make(map[string]*clusterSessions)}
	for _, c := range known {
		r.clusters[c] = newClusterSessions()
	}
	return r
}

func newClusterSessions() *clusterSessions {
	return &clusterSessions{identities: make(map[string]*identity)}
}

var (
	errUnknownCluster = errors.New("unknown cluster")
	errNoConnector    = errors.New("no connector connected")
	// errIdentityLimit and errTunnelLimit refuse a newcomer over a bound: a live identity or tunnel is never
	// evicted for it.
	errIdentityLimit = errors.New("too many connector identities for this cluster")
	errTunnelLimit   = errors.New("too many tunnels for this connector identity")
)

// limits are the bounds the registry enforces, and how long an identity without tunnels keeps its slot.
type limits struct {
	maxIdentities, maxTunnels int
	linger                    time.Duration
}

func (r *registry) cluster(name string) *clusterSessions {
	c := r.clusters[name]
	if c == nil {
		c = newClusterSessions()
		r.clusters[name] = c
	}
	return c
}

// lookupLocked returns the identity id of cluster, creating it when there is a free slot. Identities that have
// lingered without a tunnel for longer than l.linger, or whose credential expired while they had none, give their
// slot up first.
func (r *registry) lookupLocked(cluster, id string, now time.Time, l limits) (ident *identity, created bool, err error) {
	c := r.cluster(cluster)
	if ident = c.identities[id]; ident != nil {
		return ident, false, nil
	}
	if len(c.identities) >= l.maxIdentities {
		for _, other := range c.identities {
			if other.idleLocked(now, l.linger) {
				r.forgetLocked(other)
			}
		}
	}
	if len(c.identities) >= l.maxIdentities {
		return nil, false, errIdentityLimit
	}
	r.admitted++
	ident = &identity{id: id, cluster: cluster, seq: r.admitted, idleSince: now}
	c.identities[id] = ident
	return ident, true, nil
}

// idleLocked reports whether an identity without tunnels may give its slot up.
func (ident *identity) idleLocked(now time.Time, linger time.Duration) bool {
	if len(ident.sessions) > 0 || ident.pending > 0 {
		return false
	}
	// A zero credExp is an identity whose join is still being answered: it has its credential in a moment.
	return now.Sub(ident.idleSince) >= linger || (!ident.credExp.IsZero() && !now.Before(ident.credExp))
}

func (r *registry) forgetLocked(ident *identity) {
	c := r.clusters[ident.cluster]
	if c != nil && c.identities[ident.id] == ident {
		delete(c.identities, ident.id)
		c.rebuild()
	}
	ident.forgotten = true
}

// join admits a join or renewal: the identity id of cluster, joined with the (verified) join token, gets a
// credential credID valid until exp. created tells a new identity from a renewal.
func (r *registry) join(cluster, id string, join *auth.Claims, now time.Time, l limits) (ident *identity, created bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ident, created, err = r.lookupLocked(cluster, id, now, l)
	if err != nil {
		return nil, false, err
	}
	ident.join = join
	return ident, created, nil
}

// credential records a credential issued to (or presented by) an identity.
func (r *registry) credential(ident *identity, credID string, exp time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ident.credID = credID
	if exp.After(ident.credExp) {
		ident.credExp = exp
	}
}

// reserve admits a tunnel of the identity a credential vouches for, within the bounds: the caller upgrades the
// connection, then commits the reservation with the session, or cancels it. An identity the gateway does not know
// (it restarted, or the identity lingered out) is taken up again from the credential, which records its join token;
// created tells whether it is new to this gateway.
func (r *registry) reserve(cred *auth.CredentialClaims, now time.Time, l limits) (ident *identity, created bool, res *reservation, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ident, created, err = r.lookupLocked(cred.Cluster, cred.Confirmation.KeyThumbprint, now, l)
	if err != nil {
		return nil, false, nil, err
	}
	if len(ident.sessions)+ident.pending >= l.maxTunnels {
		if created {
			r.forgetLocked(ident)
		}
		return nil, false, nil, errTunnelLimit
	}
	if ident.join == nil || created {
		ident.join = cred.Join.Claims(cred.Cluster)
	}
	if exp := cred.ExpiresAt.Time; exp.After(ident.credExp) {
		ident.credExp, ident.credID = exp, cred.ID
	}
	ident.pending++
	return ident, created, &reservation{r: r, ident: ident, at: now}, nil
}

// reservation is a tunnel slot of an identity, held while the tunnel is being upgraded.
type reservation struct {
	r     *registry
	ident *identity
	at    time.Time
	done  bool // guarded by registry.mu
}

// commit registers the tunnel. It returns false when the identity was forgotten meanwhile (revoked by the
// sweep): the caller closes the tunnel.
func (res *reservation) commit(cs *connectorSession) bool {
	r, ident := res.r, res.ident
	r.mu.Lock()
	defer r.mu.Unlock()
	if res.done {
		return false
	}
	res.done = true
	ident.pending--
	if ident.forgotten {
		return false
	}
	ident.sessions = append(append([]*connectorSession(nil), ident.sessions...), cs)
	r.cluster(ident.cluster).rebuild()
	return true
}

// cancel gives the slot back unless commit took it.
func (res *reservation) cancel() {
	r, ident := res.r, res.ident
	r.mu.Lock()
	defer r.mu.Unlock()
	if res.done {
		return
	}
	res.done = true
	ident.pending--
	if len(ident.sessions) == 0 && ident.pending == 0 {
		ident.idleSince = res.at
	}
}

// remove drops a tunnel; its identity keeps its slot for the linger time.
func (r *registry) remove(cs *connectorSession, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ident := cs.ident
	kept := make([]*connectorSession, 0, len(ident.sessions))
	for _, s := range ident.sessions {
		if s != cs {
			kept = append(kept, s)
		}
	}
	if len(kept) == len(ident.sessions) {
		return
	}
	ident.sessions = kept
	if len(kept) == 0 && ident.pending == 0 {
		ident.idleSince = now
	}
	if c := r.clusters[ident.cluster]; c != nil && c.identities[ident.id] == ident {
		c.rebuild()
	}
}

// forget drops an identity (revoked, expired): no request goes to its tunnels from now on, and no new tunnel joins
// it. It returns the tunnels for the caller to close.
func (r *registry) forget(ident *identity) []*connectorSession {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forgetLocked(ident)
	return ident.sessions
}

// rebuild replaces the routing snapshot; the caller holds registry.mu.
func (c *clusterSessions) rebuild() {
	groups := make([]backendGroup, 0, len(c.identities))
	n := 0
	for _, ident := range c.identities {
		if len(ident.sessions) > 0 {
			groups = append(groups, backendGroup{id: ident, sessions: ident.sessions})
			n += len(ident.sessions)
		}
	}
	// Oldest identity first, so that the order (and a deterministic round robin) does not follow map order.
	slices.SortFunc(groups, func(a, b backendGroup) int { return cmp.Compare(a.id.seq, b.id.seq) })
	c.groups, c.sessions = groups, n
}

// backends is the order in which one request tries a cluster's tunnels: one tunnel of the next identity in turn
// (the identity's next tunnel in turn), then that identity's other tunnels, then the other identities'. It is looked
// up once per request.
type backends struct {
	groups              []backendGroup
	first, firstSession int
	total               int
}

// backends picks the tunnels of the next request of a cluster.
func (r *registry) backends(cluster string) (backends, error) {
	r.mu.Lock()
	c := r.clusters[cluster]
	var groups []backendGroup
	total := 0
	if c != nil {
		groups, total = c.groups, c.sessions
	}
	r.mu.Unlock()
	if c == nil {
		return backends{}, errUnknownCluster
	}
	if len(groups) == 0 {
		return backends{}, errNoConnector
	}
	first := int((c.next.Add(1) - 1) % uint32(len(groups)))
	g := groups[first]
	return backends{groups: groups, first: first, firstSession: int((g.id.next.Add(1) - 1) % uint32(len(g.sessions))), total: total}, nil
}

// all yields the tunnels in the order the request tries them.
func (b backends) all(yield func(*connectorSession) bool) {
	for i := range b.groups {
		g := b.groups[(b.first+i)%len(b.groups)]
		start := 0
		if i == 0 {
			start = b.firstSession
		}
		for j := range g.sessions {
			if !yield(g.sessions[(start+j)%len(g.sessions)]) {
				return
			}
		}
	}
}

// groups returns a cluster's routing snapshot without moving its round robin.
func (r *registry) groups(cluster string) []backendGroup {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.clusters[cluster]; c != nil {
		return c.groups
	}
	return nil
}

// identities returns every identity of every cluster.
func (r *registry) identities() []*identity {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*identity
	for _, c := range r.clusters {
		for _, ident := range c.identities {
			out = append(out, ident)
		}
	}
	return out
}

// identityState is what the sweep checks of an identity.
type identityState struct {
	join      *auth.Claims
	credExp   time.Time
	sessions  []*connectorSession
	idle      bool
	forgotten bool
}

func (r *registry) state(ident *identity, now time.Time, linger time.Duration) identityState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return identityState{join: ident.join, credExp: ident.credExp, sessions: ident.sessions,
		idle: ident.idleLocked(now, linger), forgotten: ident.forgotten}
}

func (r *registry) all() []*connectorSession {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*connectorSession
	for _, c := range r.clusters {
		for _, ident := range c.identities {
			out = append(out, ident.sessions...)
		}
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
		return c.sessions
	}
	return 0
}

// countIdentities returns the number of identities holding a slot of a cluster.
func (r *registry) countIdentities(cluster string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.clusters[cluster]; c != nil {
		return len(c.identities)
	}
	return 0
}
