// Package gateway is warren's central endpoint: connectors dial in to GET /connect and hold a tunnel open; callers
// reach a cluster's Kubernetes API at /clusters/<cluster>/<path>, which the gateway proxies over a stream of one of
// that cluster's tunnels.
package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/gateway/limit"
	"github.com/warren-dev/warren/internal/auditrec"
	"github.com/warren-dev/warren/internal/proxybuf"
	"github.com/warren-dev/warren/internal/streams"
	"github.com/warren-dev/warren/internal/wire"
	"github.com/warren-dev/warren/tunnel"
)

// Config configures a Gateway.
type Config struct {
	// CallerVerifier checks the tokens of API callers (audience "warren"). Required.
	CallerVerifier *auth.Verifier
	// ConnectorVerifier checks connectors' join tokens (audience "warren-connector", the tokens of `warren token
	// connector`) at /connect/join, and re-checks them every Connectors.CheckInterval while the connector lives. Its
	// MaxLifetime bounds join tokens; its Revoked list holds revoked join token ids and connector identity ids (key
	// thumbprints). Required.
	ConnectorVerifier *auth.Verifier
	// SigningKey is the gateway's own Ed25519 key. It signs the assertion each request carries to its connector
	// (auth.Assertion), which connectors verify with the public half they pin, and connector credentials. The
	// caller's token never leaves the gateway. It must not be a caller issuer key. Required.
	SigningKey *auth.SigningKey
	// Connectors bounds and times connector identities and tunnels; zero fields take DefaultConnectorConfig's.
	Connectors ConnectorConfig
	// Now returns the current time, for credentials and their re-checks; default time.Now. The ConnectorVerifier's
	// clock should agree with it.
	Now func() time.Time
	// Clusters are known from the start: before their first connector arrives, callers get 503 rather than 404.
	Clusters []string
	// Audit receives one record per API request, allowed or not. Nil: no audit. When it reports that it cannot
	// take records (audit.Health, as *audit.Log does), API requests are refused with 503 and /readyz fails,
	// unless ServeWithoutAudit.
	Audit audit.Sink
	// ServeWithoutAudit serves API requests even while Audit cannot record them (they are logged as errors and
	// counted as lost); /readyz still says so, with 200. Default false: fail closed.
	ServeWithoutAudit bool
	// Limits bounds request rates and concurrent streams per token and per cluster. Nil: no limits.
	Limits *limit.Limiter
	// MaxHeaderBytes bounds a request's headers; larger ones get 431. Default 64 KiB.
	MaxHeaderBytes int
	// MaxStreamDuration ends long-running requests (exec, attach, port-forward, watch, logs, proxy) after this
	// long. Default 12 h.
	MaxStreamDuration time.Duration
	// DisconnectExpiredTokens ends open streams when their token expires, as they end when it is revoked or its
	// signing key is no longer trusted. Default false: a token is checked when a request starts, and a long exec or
	// acquisition outlives a short token (revoke the token to end its streams).
	DisconnectExpiredTokens bool
	// StreamCheckInterval is how often the tokens of open streams are re-checked. Default
	// auth.DefaultCheckInterval (how often revocation lists and key files are looked at).
	StreamCheckInterval time.Duration
	// IdleWriteTimeout ends a request whose caller has not taken any of what the gateway writes to it for this
	// long (a chunk of 32 KiB at most per timeout), upgraded sessions included. Default 60 s.
	IdleWriteTimeout time.Duration
	// Metrics, when set, receives the gateway's Prometheus series.
	Metrics prometheus.Registerer
	// Ready, when set, is asked by every GET /readyz: an error answers 503 with it. The gateway keeps serving
	// meanwhile; it is how a key file or revocation list that failed to reload (auth.Monitor) gets noticed.
	Ready func() error
	// Downloads, when set, serves GET /download/... (the connector binaries bootstrap scripts fetch). Nil: 404.
	Downloads http.Handler
	// Tunnel tunes each connector's tunnel.
	Tunnel tunnel.Config
	// Transport tunes the pool of HTTP connections (streams) over each tunnel.
	Transport TransportConfig
	// RefusalAudit bounds the audit records of refused requests per source (see RefusalAuditConfig).
	RefusalAudit RefusalAuditConfig
	// FrontDoor is how the gateway takes connections and unauthenticated requests (see FrontDoorConfig, Listener
	// and Server).
	FrontDoor FrontDoorConfig
	// Logger receives the gateway's logs. Default: discard.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults New gives Config's optional fields left zero, for flags and documentation.
func DefaultConfig() Config {
	return Config{
		MaxHeaderBytes:    64 << 10,
		MaxStreamDuration: 12 * time.Hour,
		// Long enough for a caller paused by a slow network or a terminal on hold, short enough that a caller who
		// stopped reading on purpose does not hold its request, and what the tunnel buffered for it, for long.
		IdleWriteTimeout:    60 * time.Second,
		StreamCheckInterval: auth.DefaultCheckInterval,
		Transport:           TransportConfig{MaxIdleStreams: 64, IdleStreamTimeout: 90 * time.Second},
		RefusalAudit: RefusalAuditConfig{Rate: 5, Burst: 50, AuthenticatedRate: 20, AuthenticatedBurst: 200, GlobalRate: 200,
			GlobalBurst: 2000, MaxSources: 10000, FlushInterval: time.Minute, UnauthenticatedFieldBytes: 4 << 10},
		FrontDoor: FrontDoorConfig{MaxUnauthenticated: 4096, MaxUnauthenticatedPerSource: 256, HeaderTimeout: 10 * time.Second,
			UnauthenticatedReadTimeout: 10 * time.Second, RefusalTimeout: 2 * time.Second, IdleTimeout: 5 * time.Minute},
	}
}

// TransportConfig tunes the HTTP transport the gateway runs over each tunnel.
type TransportConfig struct {
	// MaxIdleStreams is the number of idle streams kept per connector for reuse. Default 64.
	MaxIdleStreams int
	// IdleStreamTimeout retires an idle stream. Default 90 s; the connector keeps idle streams for 120 s.
	IdleStreamTimeout time.Duration
}

// Gateway serves connectors and API callers. It is an http.Handler; Close ends every tunnel.
type Gateway struct {
	cfg      Config
	conn     ConnectorConfig // cfg.Connectors with defaults
	key      *auth.SigningKey
	now      func() time.Time
	proofs   *proofCache
	sweeper  sync.WaitGroup // sweepLoop
	log      *slog.Logger
	reg      *registry
	proxy    *httputil.ReverseProxy
	metrics  *metrics
	audit    audit.Sink // refusals, in front of Config.Audit (or audit.Discard)
	refusals *refusalAudit
	door     *frontDoor
	mux      *http.ServeMux
	streams  *streams.Registry // long-running requests by caller token, re-checked while they run

	mu       sync.Mutex
	closed   bool
	closing  chan struct{} // closed by Close: connect handlers end their tunnels
	handlers sync.WaitGroup
	requests sync.WaitGroup // API requests being served, so that Close waits for their audit records
}

// New returns a Gateway.
func New(cfg Config) (*Gateway, error) {
	if cfg.CallerVerifier == nil || cfg.ConnectorVerifier == nil {
		return nil, errors.New("CallerVerifier and ConnectorVerifier are required")
	}
	if cfg.SigningKey == nil || len(cfg.SigningKey.Key) == 0 {
		return nil, errors.New("SigningKey is required: it signs the assertion every request carries to its connector")
	}
	if cfg.CallerVerifier.TrustsKey(cfg.SigningKey.Key.Public()) {
		return nil, errors.New("the signing key is also a trusted issuer of caller tokens: a stolen gateway key would then mint caller tokens; give the gateway a key of its own (warren keygen)")
	}
	for _, c := range cfg.Clusters {
		if err := auth.ValidateClusterName(c); err != nil {
			return nil, err
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	d := DefaultConfig()
	if cfg.MaxStreamDuration <= 0 {
		cfg.MaxStreamDuration = d.MaxStreamDuration
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if cfg.IdleWriteTimeout <= 0 {
		cfg.IdleWriteTimeout = d.IdleWriteTimeout
	}
	if cfg.Transport.MaxIdleStreams <= 0 {
		cfg.Transport.MaxIdleStreams = d.Transport.MaxIdleStreams
	}
	if cfg.Transport.IdleStreamTimeout <= 0 {
		cfg.Transport.IdleStreamTimeout = d.Transport.IdleStreamTimeout
	}
	sink := cfg.Audit
	if sink == nil {
		sink = audit.Discard
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	key := cfg.SigningKey
	conn := cfg.Connectors.withDefaults()
	g := &Gateway{
		cfg:      cfg,
		conn:     conn,
		key:      key,
		now:      cfg.Now,
		proofs:   newProofCache(conn.ProofWindow, conn.MaxRememberedProofs, conn.MaxProofsPerKey),
		log:      cfg.Logger,
		reg:      newRegistry(cfg.Clusters),
		metrics:  newMetrics(cfg.Metrics),
		refusals: newRefusalAudit(sink, cfg.RefusalAudit),
		closing:  make(chan struct{}),
	}
	g.audit = g.refusals
	g.door = newFrontDoor(cfg.FrontDoor, cfg.Logger, g.metrics)
	g.streams = g.newStreamRegistry()
	g.proxy = &httputil.ReverseProxy{
		Rewrite:       rewrite,
		Transport:     clusterTransport{key: cfg.SigningKey, limits: cfg.Limits, metrics: g.metrics},
		FlushInterval: -1, // watches and logs -f flow as they come
		BufferPool:    proxybuf.New(),
		ErrorHandler:  g.proxyError,
		ModifyResponse: func(res *http.Response) error {
			// Warren-* response headers are the gateway's to set (the request id): none may come from the cluster's side.
			wire.StripWarrenHeaders(res.Header)
			return streams.ModifyResponse(res) // watches and follows the gateway ends, end cleanly
		},
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	g.mux = http.NewServeMux()
	g.mux.HandleFunc("GET "+wire.PathConnect, g.serveConnect)
	g.mux.HandleFunc("POST "+wire.PathJoin, g.serveJoin)
	g.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	g.mux.HandleFunc("GET /readyz", g.serveReady)
	if cfg.Downloads != nil {
		g.mux.Handle("GET /download/", cfg.Downloads)
	}
	g.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		wire.WriteStatus(w, http.StatusNotFound, fmt.Sprintf("no such path %q: the Kubernetes API of cluster C is at /clusters/C/", r.URL.Path), 0)
	})
	g.sweeper.Add(1)
	go g.sweepLoop()
	return g, nil
}

// ServeHTTP routes API calls itself rather than through http.ServeMux, which would answer a path with "." or ".."
// segments with a redirect to its cleaned form: warren refuses such paths with 400 instead.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r, dr := g.door.enter(w, r)
	if r == nil {
		return // refused at the door
	}
	defer dr.leave()
	if strings.HasPrefix(r.URL.Path, "/clusters/") || strings.HasPrefix(r.URL.EscapedPath(), "/clusters/") {
		g.mu.Lock()
		if g.closed { // Close is waiting for the requests in flight: no new one
			g.mu.Unlock()
			closeAfterRefusal(w, g.door.cfg.RefusalTimeout)
			wire.WriteStatus(w, http.StatusServiceUnavailable, "gateway is shutting down", 5)
			return
		}
		g.requests.Add(1)
		g.mu.Unlock()
		defer g.requests.Done()
		g.serveCluster(w, r)
		return
	}
	if r.URL.Path != wire.PathConnect { // a tunnel bounds its own writes
		iw := newIdleWriter(w, g.cfg.IdleWriteTimeout)
		defer iw.finish()
		w = iw
	}
	g.mux.ServeHTTP(w, r)
}

// Connectors returns the number of live connector sessions of a cluster.
func (g *Gateway) Connectors(cluster string) int { return g.reg.count(cluster) }

// Close ends every connector tunnel and waits for their handlers and for the re-check of connectors, and for the
// API requests in flight (up to 10 s), which fail with 502, so that their audit records are written before the
// audit log is closed. Call it after http.Server.Shutdown, which does not wait for hijacked (tunnel) connections.
func (g *Gateway) Close() error {
	g.mu.Lock()
	if !g.closed {
		g.closed = true
		close(g.closing)
	}
	g.mu.Unlock()
	g.sweeper.Wait()
	for _, cs := range g.reg.all() {
		// Drop the session before closing it, so that no new request picks it meanwhile.
		g.reg.remove(cs, g.now())
		cs.tunnel.Close()
	}
	g.handlers.Wait()
	// Requests whose tunnel is gone end at once; one stuck writing to its caller is not waited for past this.
	waitAtMost(&g.requests, closeRequestsTimeout)
	g.refusals.Close() // the summaries of refusals counted so far
	g.streams.Close()
	return nil
}

// closeRequestsTimeout bounds how long Close waits for API requests to finish and write their audit records.
const closeRequestsTimeout = 10 * time.Second

// waitAtMost waits for wg, or d. (When d passes first, its helper goroutine ends with the last request.)
func waitAtMost(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// CloseIdleConnections closes the tunnel streams kept idle for reuse on every connector, as
// http.Transport.CloseIdleConnections does: after a burst of requests, it returns what the burst left pooled now
// rather than after IdleStreamTimeout.
func (g *Gateway) CloseIdleConnections() {
	for _, cs := range g.reg.all() {
		cs.transport.CloseIdleConnections()
	}
}

func (g *Gateway) serveReady(w http.ResponseWriter, _ *http.Request) {
	select {
	case <-g.closing:
		wire.WriteStatus(w, http.StatusServiceUnavailable, "gateway is shutting down", 0)
		return
	default:
	}
	if g.cfg.Ready != nil {
		if err := g.cfg.Ready(); err != nil {
			wire.WriteStatus(w, http.StatusServiceUnavailable, "gateway not ready: "+err.Error(), 0)
			return
		}
	}
	if err := auditrec.Err(g.audit); err != nil {
		if g.cfg.ServeWithoutAudit {
			fmt.Fprintf(w, "ok, but the audit log cannot be written (%v): serving without audit (ServeWithoutAudit)\n", err)
			return
		}
		wire.WriteStatus(w, http.StatusServiceUnavailable, fmt.Sprintf("the audit log cannot be written (%v): API requests are refused until it can", err), 5)
		return
	}
	io.WriteString(w, "ok\n")
}

// newSessionID returns 128 random bits in hex: unique among all sessions a gateway ever holds.
func newSessionID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// splitClusterPath splits /clusters/<cluster>/<rest> into the cluster and the API path (at least "/"), in both the
// decoded and the escaped form.
func splitClusterPath(escaped string) (cluster, rawRest string, ok bool) {
	rest, found := strings.CutPrefix(escaped, "/clusters/")
	if !found {
		return "", "", false
	}
	cluster, rawRest, _ = strings.Cut(rest, "/")
	if cluster == "" {
		return "", "", false
	}
	return cluster, "/" + rawRest, true
}
