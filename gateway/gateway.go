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

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/auditrec"
	"github.com/warren-dev/warren/internal/limit"
	"github.com/warren-dev/warren/internal/wire"
	"github.com/warren-dev/warren/tunnel"
)

// Config configures a Gateway.
type Config struct {
	// CallerVerifier checks the tokens of API callers (audience "warren"). Required.
	CallerVerifier *auth.Verifier
	// ConnectorVerifier checks the tokens connectors present on /connect (audience "warren-connector"). Required.
	ConnectorVerifier *auth.Verifier
	// Clusters are known from the start: before their first connector arrives, callers get 503 rather than 404.
	Clusters []string
	// Audit receives one record per API request, allowed or not. Nil: no audit.
	Audit auditrec.Sink
	// Limits bounds request rates and concurrent streams per token and per cluster. Nil: no limits.
	Limits *limit.Limiter
	// MaxHeaderBytes bounds a request's headers; larger ones get 431. Default 64 KiB.
	MaxHeaderBytes int
	// MaxStreamDuration ends long-lived requests (exec, attach, port-forward, watch, logs -f) after this long.
	// Default 12 h.
	MaxStreamDuration time.Duration
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
	// Logger receives the gateway's logs. Default: discard.
	Logger *slog.Logger
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
	cfg     Config
	log     *slog.Logger
	reg     *registry
	proxy   *httputil.ReverseProxy
	metrics *metrics
	audit   auditrec.Sink // Config.Audit, or auditrec.Discard
	mux     *http.ServeMux

	mu       sync.Mutex
	closed   bool
	closing  chan struct{} // closed by Close: connect handlers end their tunnels
	handlers sync.WaitGroup
}

// New returns a Gateway.
func New(cfg Config) (*Gateway, error) {
	if cfg.CallerVerifier == nil || cfg.ConnectorVerifier == nil {
		return nil, errors.New("gateway: CallerVerifier and ConnectorVerifier are required")
	}
	for _, c := range cfg.Clusters {
		if err := auth.ValidateClusterName(c); err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.MaxStreamDuration <= 0 {
		cfg.MaxStreamDuration = 12 * time.Hour
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = 64 << 10
	}
	if cfg.Transport.MaxIdleStreams <= 0 {
		cfg.Transport.MaxIdleStreams = 64
	}
	if cfg.Transport.IdleStreamTimeout <= 0 {
		cfg.Transport.IdleStreamTimeout = 90 * time.Second
	}
	g := &Gateway{
		cfg:     cfg,
		log:     cfg.Logger,
		reg:     newRegistry(cfg.Clusters),
		metrics: newMetrics(cfg.Metrics),
		audit:   cfg.Audit,
		closing: make(chan struct{}),
	}
	if g.audit == nil {
		g.audit = auditrec.Discard
	}
	g.proxy = &httputil.ReverseProxy{
		Rewrite:       rewrite,
		Transport:     clusterTransport{g.reg},
		FlushInterval: -1, // watches and logs -f flow as they come
		BufferPool:    newCopyBuffers(),
		ErrorHandler:  g.proxyError,
		ErrorLog:      slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	g.mux = http.NewServeMux()
	g.mux.HandleFunc("GET /connect", g.serveConnect)
	g.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	g.mux.HandleFunc("GET /readyz", g.serveReady)
	if cfg.Downloads != nil {
		g.mux.Handle("GET /download/", cfg.Downloads)
	}
	g.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		wire.WriteStatus(w, http.StatusNotFound, fmt.Sprintf("no such path %q: the Kubernetes API of cluster C is at /clusters/C/", r.URL.Path), 0)
	})
	return g, nil
}

// ServeHTTP routes API calls itself rather than through http.ServeMux, which would answer a path with "." or ".."
// segments with a redirect to its cleaned form: warren refuses such paths with 400 instead.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/clusters/") || strings.HasPrefix(r.URL.EscapedPath(), "/clusters/") {
		g.serveCluster(w, r)
		return
	}
	g.mux.ServeHTTP(w, r)
}

// Connectors returns the number of live connector sessions of a cluster.
func (g *Gateway) Connectors(cluster string) int { return g.reg.count(cluster) }

// Close ends every connector tunnel and waits for their handlers. Requests in flight over them fail with 502.
// Call it after http.Server.Shutdown, which does not wait for hijacked (tunnel) connections.
func (g *Gateway) Close() error {
	g.mu.Lock()
	if !g.closed {
		g.closed = true
		close(g.closing)
	}
	g.mu.Unlock()
	for _, cs := range g.reg.all() {
		// Drop the session before closing it, so that no new request picks it meanwhile.
		g.reg.remove(cs)
		cs.tunnel.Close()
	}
	g.handlers.Wait()
	return nil
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
	io.WriteString(w, "ok\n")
}

// serveConnect authenticates a connector, upgrades its request to a tunnel and holds the tunnel until it ends.
func (g *Gateway) serveConnect(w http.ResponseWriter, r *http.Request) {
	token := wire.BearerToken(r.Header)
	if token == "" {
		wire.WriteStatus(w, http.StatusUnauthorized, "missing connector token: send it as \"Authorization: Bearer <token>\" (warren token connector makes one)", 0)
		return
	}
	claims, err := g.cfg.ConnectorVerifier.Verify(token)
	if err != nil {
		g.metrics.handshakes.WithLabelValues("refused").Inc()
		g.log.Info("connector refused", "remote", r.RemoteAddr, "err", err)
		wire.WriteStatus(w, http.StatusUnauthorized, "invalid connector token: "+err.Error(), 0)
		return
	}
	cluster := claims.Warren.Clusters[0]

	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		wire.WriteStatus(w, http.StatusServiceUnavailable, "gateway is shutting down", 5)
		return
	}
	g.handlers.Add(1)
	g.mu.Unlock()
	handedOver := false // once the tunnel is up, its end (OnEnd below) calls handlers.Done
	defer func() {
		if !handedOver {
			g.handlers.Done()
		}
	}()

	id := newID()
	log := g.log.With("cluster", cluster, "connector", r.Header.Get(wire.HeaderConnectorName), "session", id)
	tcfg := g.cfg.Tunnel
	tcfg.Logger = log
	t, err := tunnel.Upgrade(w, r, tcfg)
	if errors.Is(err, tunnel.ErrNotTunnel) {
		wire.WriteStatus(w, http.StatusBadRequest, err.Error(), 0)
		return
	}
	if err != nil {
		log.Info("tunnel upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	cs := newConnectorSession(t, g.cfg.Transport)
	cs.id, cs.cluster, cs.log = id, cluster, log
	cs.name = r.Header.Get(wire.HeaderConnectorName)
	cs.version = r.Header.Get(wire.HeaderConnectorVersion)
	cs.remote = r.RemoteAddr
	cs.connectedAt = time.Now()

	g.reg.add(cs)
	g.metrics.handshakes.WithLabelValues("accepted").Inc()
	g.metrics.connectors.WithLabelValues(cluster).Set(float64(g.reg.count(cluster)))
	log.Info("connector connected", "remote", cs.remote, "version", cs.version, "sessions", g.reg.count(cluster))
	// The handler returns now and the tunnel's end does the rest: a handler held until then would keep net/http's
	// buffers of the connection (about 10 KiB) and a goroutine stack for every idle connector.
	handedOver = true
	t.OnEnd(func() {
		defer g.handlers.Done()
		g.reg.remove(cs)
		g.metrics.connectors.WithLabelValues(cluster).Set(float64(g.reg.count(cluster)))
		cs.close()
		log.Info("connector disconnected", "after", time.Since(cs.connectedAt).Round(time.Millisecond).String(), "sessions", g.reg.count(cluster))
	})
	select {
	case <-g.closing: // Close ran meanwhile and may not have seen this session
		g.reg.remove(cs)
		t.Close()
	default:
	}
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
