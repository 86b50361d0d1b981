// Package limit enforces warren's request limits: a token bucket per caller token and per cluster, a cap on the
// requests of each token in flight at once and, among them, on its long-running ones (watch, exec, attach,
// port-forward, logs, proxy), and a cap on the share of one tunnel's streams a token may hold.
//
// Memory is bounded: at most Config.MaxKeys token buckets and MaxKeys cluster buckets are kept, the least recently
// used evicted first, and a count exists only while something is held under it. The package starts no goroutines.
//
// How the defaults are sized: one token must be able to run an acquisition of 50 pods at once (50 exec sessions,
// each after a few GETs, about 250 requests within a second or two), and must not be able to starve the other
// callers of a cluster or a tunnel: its rate is a quarter of the cluster's, its burst half the cluster's, and it
// holds at most a quarter of a tunnel's streams.
//
// The package is public so that a program embedding package gateway can set gateway.Config.Limits:
// limit.New(limit.DefaultConfig()), or a Config of its own.
package limit

import (
	"container/list"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Which limit refused a request, as Allow reports it.
const (
	LimitToken   = "token"
	LimitCluster = "cluster"
)

// Config configures a Limiter. A zero or negative field takes its default (DefaultConfig); a rate of
// float64(rate.Inf) (math.MaxFloat64) or +Inf disables that bucket.
type Config struct {
	TokenRate    float64 // requests per second per token id (jti); default 50
	TokenBurst   int     // default 250
	ClusterRate  float64 // requests per second per cluster, all tokens together; default 200
	ClusterBurst int     // default 500
	// TokenStreams bounds the concurrent long-running requests (auth.LongRunning: watch, exec, attach,
	// port-forward, logs, proxy) per token; default 64.
	TokenStreams int
	// TokenInflight bounds the concurrent requests of any kind per token, long-running ones included; default 128.
	// A caller that stops reading holds its request, and what the tunnel buffered for it, until the gateway's idle
	// write timeout: this bounds how many of those one token can have.
	TokenInflight int
	// TokenTunnelShare is the largest fraction of one tunnel's streams (tunnel.Config.MaxStreams) that one token's
	// requests may hold at once, so that no token can fill a tunnel and leave other callers waiting; default 0.25.
	// At least one stream is always allowed.
	TokenTunnelShare float64
	MaxKeys          int // bound on the tracked tokens, and separately on the clusters; default 10000
	// Now is the clock; default time.Now. It is called with the Limiter's lock held, from any goroutine.
	Now func() time.Time
}

// DefaultConfig returns the defaults, for flag defaults and documentation.
func DefaultConfig() Config {
	return Config{
		TokenRate:        50,
		TokenBurst:       250,
		ClusterRate:      200,
		ClusterBurst:     500,
		TokenStreams:     64,
		TokenInflight:    128,
		TokenTunnelShare: 0.25,
		MaxKeys:          10000,
		Now:              time.Now,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if !(c.TokenRate > 0) { // also NaN
		c.TokenRate = d.TokenRate
	}
	if c.TokenBurst <= 0 {
		c.TokenBurst = d.TokenBurst
	}
	if !(c.ClusterRate > 0) {
		c.ClusterRate = d.ClusterRate
	}
	if c.ClusterBurst <= 0 {
		c.ClusterBurst = d.ClusterBurst
	}
	if c.TokenStreams <= 0 {
		c.TokenStreams = d.TokenStreams
	}
	if c.TokenInflight <= 0 {
		c.TokenInflight = d.TokenInflight
	}
	if !(c.TokenTunnelShare > 0) || c.TokenTunnelShare > 1 {
		c.TokenTunnelShare = d.TokenTunnelShare
	}
	if c.MaxKeys <= 0 {
		c.MaxKeys = d.MaxKeys
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	return c
}

// Limiter applies a Config. All methods may be called concurrently.
type Limiter struct {
	cfg Config // with defaults applied; read-only

	// mu guards everything below and serializes every operation on the buckets, so that Allow's check of two
	// buckets and its refund of the first are atomic.
	mu       sync.Mutex
	tokens   lru     // token id -> bucket
	clusters lru     // cluster -> bucket
	streams  counter // token id -> long-running requests in flight
	inflight counter // token id -> requests in flight
	tunnels  counter // tunnel id, token id -> streams held on that tunnel
}

// New returns a Limiter for c.
func New(c Config) *Limiter {
	c = c.withDefaults()
	return &Limiter{
		cfg:      c,
		tokens:   newLRU(c.MaxKeys, limitOf(c.TokenRate), c.TokenBurst),
		clusters: newLRU(c.MaxKeys, limitOf(c.ClusterRate), c.ClusterBurst),
		streams:  counter{},
		inflight: counter{},
		tunnels:  counter{},
	}
}

func limitOf(r float64) rate.Limit {
	if r >= float64(rate.Inf) || math.IsInf(r, 1) {
		return rate.Inf
	}
	return rate.Limit(r)
}

// Allow takes one request from the token's bucket and the cluster's. tokenID is the bucket's key: the token's jti,
// or for a token without one another stable identity (issuer and subject), never a per-request value. When either is empty it takes nothing and
// returns false, the limit that was hit (LimitToken, checked first, or LimitCluster), and how long until that
// bucket holds a token again, rounded up to whole seconds and at least one second, for a Retry-After header.
func (l *Limiter) Allow(tokenID, cluster string) (ok bool, retryAfter time.Duration, which string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	tr := l.tokens.get(tokenID).ReserveN(now, 1)
	if d, refused := refusal(tr, now); refused {
		return false, d, LimitToken
	}
	cr := l.clusters.get(cluster).ReserveN(now, 1)
	if d, refused := refusal(cr, now); refused {
		tr.CancelAt(now) // the request is not served: give the token's bucket its token back
		return false, d, LimitCluster
	}
	return true, 0, ""
}

// refusal reports whether a reservation must wait, cancelling it if so, and the Retry-After to announce.
func refusal(r *rate.Reservation, now time.Time) (time.Duration, bool) {
	if !r.OK() { // cannot happen with a burst of at least 1; refuse rather than wait forever
		return time.Second, true
	}
	d := r.DelayFrom(now)
	if d <= 0 {
		return 0, false
	}
	r.CancelAt(now)
	return roundUpSeconds(d), true
}

func roundUpSeconds(d time.Duration) time.Duration {
	const maxRetry = 24 * time.Hour // beyond this a client should not wait anyway; also keeps the sum from overflowing
	if d > maxRetry {
		return maxRetry
	}
	return (d + time.Second - 1) / time.Second * time.Second
}

// AcquireStream takes one of the token's stream slots (TokenStreams), for a long-running request. It returns ok
// false when all are in use. release gives the slot back; calling it again does nothing. release is never nil, so
// a caller may defer it even when ok is false (it then does nothing).
func (l *Limiter) AcquireStream(tokenID string) (release func(), ok bool) {
	return l.acquire(l.streams, tokenID, l.cfg.TokenStreams)
}

// AcquireRequest takes one of the token's in-flight slots (TokenInflight), for any request; as AcquireStream.
func (l *Limiter) AcquireRequest(tokenID string) (release func(), ok bool) {
	return l.acquire(l.inflight, tokenID, l.cfg.TokenInflight)
}

// AcquireTunnel takes one of the token's streams on a tunnel of tunnelStreams streams (its MaxStreams): at most
// TokenTunnelShare of them, and at least one. tunnelID names the tunnel (unique among live tunnels); as
// AcquireStream otherwise.
func (l *Limiter) AcquireTunnel(tunnelID, tokenID string, tunnelStreams int) (release func(), ok bool) {
	return l.acquire(l.tunnels, tunnelID+"\x00"+tokenID, l.TunnelShare(tunnelStreams))
}

// TunnelShare is how many of a tunnel's tunnelStreams streams one token may hold.
func (l *Limiter) TunnelShare(tunnelStreams int) int {
	return max(1, int(float64(tunnelStreams)*l.cfg.TokenTunnelShare))
}

// Config returns the configuration in force, defaults applied.
func (l *Limiter) Config() Config { return l.cfg }

func (l *Limiter) acquire(c counter, key string, limit int) (func(), bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c[key] >= limit {
		return func() {}, false
	}
	c[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			c.release(key)
		})
	}, true
}

// counter counts what each key holds; a key is present only while it holds something, so its size is bounded by
// what is in flight.
type counter map[string]int

func (c counter) release(key string) {
	if n := c[key] - 1; n > 0 {
		c[key] = n
	} else {
		delete(c, key)
	}
}

// lru holds at most max buckets, evicting the least recently used. Evicting a bucket forgets what it spent: the
// key starts again with a full burst. With MaxKeys well above the number of keys used within a bucket's refill
// time (burst/rate, 2 s by default), only buckets that had refilled anyway are evicted.
type lru struct {
	max   int
	limit rate.Limit
	burst int
	order *list.List               // of *lruEntry, most recently used first
	byKey map[string]*list.Element // -> element of order
}

type lruEntry struct {
	key    string
	bucket *rate.Limiter
}

func newLRU(max int, limit rate.Limit, burst int) lru {
	return lru{max: max, limit: limit, burst: burst, order: list.New(), byKey: map[string]*list.Element{}}
}

// get returns key's bucket, creating it full if needed, and marks it most recently used.
func (c *lru) get(key string) *rate.Limiter {
	if e, ok := c.byKey[key]; ok {
		c.order.MoveToFront(e)
		return e.Value.(*lruEntry).bucket
	}
	if c.order.Len() >= c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.byKey, oldest.Value.(*lruEntry).key)
	}
	b := rate.NewLimiter(c.limit, c.burst)
	c.byKey[key] = c.order.PushFront(&lruEntry{key: key, bucket: b})
	return b
}

func (c *lru) len() int { return c.order.Len() }
