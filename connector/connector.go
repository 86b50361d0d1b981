// Package connector is the half of warren that runs inside the private network. It dials out to the gateway, holds
// a tunnel open, and serves the HTTP requests that arrive over the tunnel's streams by forwarding them to the
// Kubernetes API server with its own credentials. It never listens for connections from outside.
package connector

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/gatewaytls"
	"github.com/warren-dev/warren/internal/streams"
	"github.com/warren-dev/warren/internal/wire"
	"github.com/warren-dev/warren/tunnel"
)

// Config configures a Connector.
type Config struct {
	// GatewayURL is the gateway's base URL, https://HOST[:PORT][/prefix]; the tunnel goes to <GatewayURL>/connect.
	GatewayURL string
	// Token returns the connector's join token (`warren token connector`). It is called at every join and credential
	// renewal (every 40 minutes with the gateway's default credential lifetime), so a rotated token file is picked up
	// without a restart.
	Token func() (string, error)
	// Key is the connector's Ed25519 key: its identity at the gateway, which binds its credentials to it. Nil: a key
	// made for this process (LoadOrCreateKey keeps one across restarts).
	Key ed25519.PrivateKey
	// TLSConfig verifies the gateway. Nil means the system roots. NextProtos is overridden (HTTP/1.1 only).
	TLSConfig *tls.Config
	// Proxy chooses an HTTP CONNECT proxy for the gateway. Nil means http.ProxyFromEnvironment (HTTPS_PROXY,
	// NO_PROXY).
	Proxy func(*http.Request) (*url.URL, error)
	// DialContext opens the connections to the gateway (or to the proxy). Nil means a net.Dialer with a 10 s
	// timeout and 30 s TCP keepalives. For an embedder with a network of its own, and for in-memory tests.
	DialContext func(ctx context.Context, network, address string) (net.Conn, error)
	// Kube reaches the API server: rest.InClusterConfig() in a pod, or a kubeconfig. Required.
	Kube *rest.Config
	// GatewayKeys are the gateway's public keys, pinned (several during a rotation). Every request must carry the
	// gateway's assertion of it (wire.HeaderAssertion), signed by one of them, for this cluster, this tunnel and
	// exactly this request, used once; the caller's rules in it are checked again, under the Ceiling, so a gateway
	// that checks less than it should cannot widen access. Required.
	GatewayKeys auth.KeySet
	// Ceiling, when set, is the customer's policy: a request it does not allow is refused whatever the token says.
	Ceiling *auth.Policy
	// Revoked, when set, is asked about the caller token id (jti) of every request; true refuses the request, so
	// a customer can shut out a token at its own connector.
	Revoked func(jti string) bool
	// Impersonate sends requests to the API server as the caller (Impersonate-User: warren:<sub>, the token's
	// groups, and its id as Impersonate-Extra-warren-token-id), as the gateway's assertion names them, so that
	// Kubernetes RBAC and audit see who it was.
	Impersonate bool
	// StripHeaders are more request headers that never reach the API server, besides wire.IdentityHeaders (which
	// are always removed): the names of the cluster's --requestheader-username-headers, -group-headers,
	// -uid-headers and -extra-headers-prefix when they are not the usual X-Remote-*. A name ending in "*" is a
	// prefix; case does not matter.
	StripHeaders []string
	// ReplayCacheSize bounds the assertion ids remembered to refuse a second use; when it is full, requests get
	// 429 until ids expire. Default auth.DefaultReplayCacheSize.
	ReplayCacheSize int
	// Leeway tolerates the error of the connector's estimate of the gateway's clock, and transit, on assertions'
	// times. Default auth.DefaultLeeway; with the estimate (Now nil) never less than its 1 s error, even negative.
	Leeway time.Duration
	// Now returns the time assertions are checked against; default: the gateway's time as its Date headers tell
	// it. Tests move it.
	Now func() time.Time
	// DisconnectExpiredTokens ends open streams when their caller token expires (as the gateway's assertion gave
	// its expiry, judged by the gateway's clock with Leeway), as they end when Revoked comes to list it. Default
	// false: a token is checked when a request starts.
	DisconnectExpiredTokens bool
	// RefreshRevoked, when set, makes the revocation list behind Revoked look at its file now
	// (auth.RevocationList.Refresh): the re-checks of open streams call it before each round, so that a token added
	// to the list loses its streams within one StreamCheckInterval.
	RefreshRevoked func() error
	// StreamCheckInterval is how often the caller tokens of open streams are re-checked. Default
	// auth.DefaultCheckInterval.
	StreamCheckInterval time.Duration
	// Audit, when set, receives one record per request the connector serves or refuses.
	Audit audit.Sink
	// Cluster is the cluster this connector serves; default: the one its token is bound to.
	Cluster string
	// Name identifies this connector in the gateway's logs (pod or host name). Version is reported too.
	Name, Version string
	// Tunnel tunes the tunnel.
	Tunnel tunnel.Config
	// Backoff spaces out reconnections.
	Backoff Backoff
	// DrainTimeout bounds how long Run, once its context is done, waits for requests in flight to finish while the
	// gateway sends new ones to other connectors. Default 10 s.
	DrainTimeout time.Duration
	// IdleStreamTimeout closes a stream idle between requests. Default 120 s: longer than the gateway's 90 s, so
	// that the gateway retires idle streams first.
	IdleStreamTimeout time.Duration
	// Logger receives the connector's logs. Default: discard.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults New gives Config's optional fields left zero, for flags and documentation.
func DefaultConfig() Config {
	return Config{
		Tunnel:            tunnel.DefaultConfig(),
		Backoff:           Backoff{}.withDefaults(),
		DrainTimeout:      10 * time.Second,
		IdleStreamTimeout: 120 * time.Second,
	}
}

// Connector keeps a tunnel to the gateway and serves API requests over it.
type Connector struct {
	cfg   Config
	log   *slog.Logger
	wsURL string
	// joinURL and connectURL are the connector endpoints as https URLs: what proofs of possession name.
	joinURL, connectURL string
	key                 ed25519.PrivateKey
	identity            string       // the key's thumbprint
	clockOffset         atomic.Int64 // gateway time minus ours (ns), from the gateway's Date headers

	joinMu sync.Mutex // one join at a time
	// joinTokenWarned is when the connector last warned that its join token ends soon (under joinMu).
	joinTokenWarned time.Time
	credMu          sync.Mutex // guards cred and credChanged
	cred            *credential
	credChanged     chan struct{} // closed and replaced when cred changes

	dialer   *http.Client
	upstream http.Handler
	// kube is the connector's own client of the API server, for the checks it makes itself (a collector pod's target).
	kube kubernetes.Interface
	// closeIdle closes the idle connections to the API server.
	closeIdle func()

	cluster    string
	assertions *auth.AssertionVerifier
	replays    *auth.ReplayCache
	now        func() time.Time // Config.Now, or the gateway's time
	connected  atomic.Bool
	inflight   sync.WaitGroup    // handlers serving requests from the tunnel
	streams    *streams.Registry // long-running requests by caller token, re-checked while they run
}

// New checks the configuration and prepares the transports; Run connects.
func New(cfg Config) (*Connector, error) {
	if cfg.Kube == nil {
		return nil, errors.New("Kube (the API server's rest.Config) is required")
	}
	if cfg.Token == nil {
		return nil, errors.New("Token is required")
	}
	wsURL, err := tunnelURL(cfg.GatewayURL)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.DialContext == nil {
		cfg.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	if cfg.Proxy == nil {
		cfg.Proxy = http.ProxyFromEnvironment
	}
	d := DefaultConfig()
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = d.DrainTimeout
	}
	if cfg.IdleStreamTimeout <= 0 {
		cfg.IdleStreamTimeout = d.IdleStreamTimeout
	}
	cfg.Backoff = cfg.Backoff.withDefaults()
	if cfg.GatewayKeys == nil {
		return nil, errors.New("GatewayKeys is required: the gateway's public key(s) that sign the assertion each request carries")
	}
	// Assertions are timed by the gateway's clock, as the connector knows it from the gateway's Date headers (the
	// estimate its proofs of possession use too): their clocks need not agree, only the estimate within the leeway.
	var c *Connector
	now := cfg.Now
	leeway := cfg.Leeway
	if now == nil {
		now = func() time.Time { return c.gatewayNow() }
		// The estimate itself is off by up to a second (a Date header's resolution): no leeway may be smaller, or
		// a fresh assertion could look "not valid before" (a negative Leeway, none, means just that error).
		if leeway != 0 && leeway < wire.ClockEstimateError {
			leeway = wire.ClockEstimateError
		}
	}
	assertions, err := auth.NewAssertionVerifier(auth.AssertionVerifierConfig{Keys: cfg.GatewayKeys, Leeway: leeway, Now: now})
	if err != nil {
		return nil, err
	}
	for _, h := range cfg.StripHeaders {
		if !wire.ValidHeaderPattern(h) {
			return nil, fmt.Errorf("cannot strip header %q: want a header name, or a prefix ending in *", h)
		}
	}
	if cfg.Cluster == "" {
		token, err := cfg.Token()
		if err != nil {
			return nil, fmt.Errorf("cannot read the connector token: %w", err)
		}
		if cfg.Cluster, err = clusterOfToken(token); err != nil {
			return nil, err
		}
	}
	strip := append(slices.Clone(wire.IdentityHeaders), cfg.StripHeaders...)
	upstream, closeIdle, err := newUpstream(cfg.Kube, strip, cfg.Logger)
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSConfig != nil {
		tlsCfg = cfg.TLSConfig.Clone()
	}
	// WebSocket upgrades need HTTP/1.1.
	tlsCfg.NextProtos = []string{"http/1.1"}
	dialer := &http.Client{Transport: &http.Transport{
		Proxy:               cfg.Proxy,
		DialContext:         cfg.DialContext,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   false,
	}}
	key := cfg.Key
	if key == nil {
		if _, key, err = ed25519.GenerateKey(rand.Reader); err != nil {
			return nil, fmt.Errorf("cannot generate a key: %w", err)
		}
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("Key is not an Ed25519 private key")
	}
	identity, err := auth.KeyID(key.Public())
	if err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(rest.CopyConfig(cfg.Kube))
	if err != nil {
		return nil, err
	}
	c = &Connector{cfg: cfg, log: cfg.Logger, wsURL: wsURL, dialer: dialer, cluster: cfg.Cluster, closeIdle: closeIdle,
		key: key, identity: identity, credChanged: make(chan struct{}), kube: kube,
		upstream: upstream, assertions: assertions, replays: auth.NewReplayCache(cfg.ReplayCacheSize), now: now}
	c.connectURL = httpForm(wsURL)
	c.joinURL = strings.TrimSuffix(c.connectURL, wire.PathConnect) + wire.PathJoin
	c.streams = c.newStreamRegistry()
	return c, nil
}

func tunnelURL(gateway string) (string, error) {
	u, err := url.Parse(gateway)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("gateway URL %q is not of the form https://HOST[:PORT]", gateway)
	}
	switch u.Scheme {
	case "https", "wss":
		u.Scheme = "wss"
	case "http", "ws":
		u.Scheme = "ws"
	default:
		return "", fmt.Errorf("gateway URL %q: scheme must be https", gateway)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/connect"
	u.RawQuery, u.Fragment = "", ""
	return u.String(), nil
}

// httpForm turns the tunnel's ws(s):// URL into the http(s):// URL it is requested at.
func httpForm(wsURL string) string {
	if rest, ok := strings.CutPrefix(wsURL, "wss://"); ok {
		return "https://" + rest
	}
	return "http://" + strings.TrimPrefix(wsURL, "ws://")
}

// Connected reports whether a tunnel to the gateway is up now.
func (c *Connector) Connected() bool { return c.connected.Load() }

// Run keeps a tunnel to the gateway until ctx is done, reconnecting with backoff. Then it drains (see
// Config.DrainTimeout) and returns nil once every request it was serving has ended.
func (c *Connector) Run(ctx context.Context) error {
	defer c.streams.Close() // last: once every handler has ended
	defer c.dialer.CloseIdleConnections()
	defer c.inflight.Wait()
	rctx, stopRenewing := context.WithCancel(ctx)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		c.renewLoop(rctx)
	}()
	defer func() {
		stopRenewing()
		<-renewed
	}()
	b := c.cfg.Backoff
	attempt := 0
	for {
		started := time.Now()
		err := c.connectAndServe(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) >= b.StableAfter {
			attempt = 0 // the tunnel was up long enough: this is a new incident, start again fast
		}
		wait := b.delay(attempt)
		attempt++
		var he *tunnel.HandshakeError
		var je *JoinError
		if errors.As(err, &he) && he.RetryAfter > wait {
			wait = he.RetryAfter
		}
		if errors.As(err, &je) && je.RetryAfter > wait {
			wait = je.RetryAfter
		}
		c.log.Warn(describe(err), "err", err, "retry_in", wait.Round(time.Millisecond).String())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// describe says in one line what went wrong and what to do.
func describe(err error) string {
	var he *tunnel.HandshakeError
	var je *JoinError
	switch {
	case errors.As(err, &je) && je.StatusCode == http.StatusUnauthorized && strings.Contains(je.Message, "connector token"):
		return "gateway refused the connector token: issue a new one with `warren token connector` and update --token-file"
	case errors.As(err, &je) && je.StatusCode == http.StatusUnauthorized:
		return "gateway refused the connector's proof of possession: check the connector's clock"
	case errors.As(err, &je) && je.StatusCode == http.StatusNotFound:
		return "the gateway has no " + wire.PathJoin + ": it predates connector identities; upgrade the gateway to this connector's version"
	case errors.As(err, &je) && je.StatusCode == http.StatusForbidden:
		return "gateway revoked this connector's identity: once the cause is dealt with, delete connector.key in --state-dir to make a new one"
	case errors.As(err, &je):
		return "gateway refused the join"
	case errors.As(err, &he) && he.StatusCode == http.StatusUnauthorized:
		return "gateway refused the connector credential: joining again"
	case errors.As(err, &he):
		return "gateway refused the tunnel"
	case errors.Is(err, errGatewayTooOld):
		return "gateway too old for this connector: upgrade the gateway (it must sign assertions with --gateway-key)"
	case errors.Is(err, errTunnelLost):
		return "tunnel to the gateway lost, reconnecting"
	case errors.Is(err, gatewaytls.ErrPinMismatch):
		return "gateway certificate pin mismatch: refusing the connection; check --pin against the gateway's certificate"
	case isCertError(err):
		return "cannot verify the gateway's certificate: pass the CA that signed it with --ca-file"
	default:
		return "cannot reach the gateway"
	}
}

func isCertError(err error) bool {
	var unknown x509UnknownAuthority
	return errors.As(err, &unknown) || strings.Contains(err.Error(), "x509:") || strings.Contains(err.Error(), "tls:")
}

var (
	errTunnelLost    = errors.New("tunnel lost")
	errGatewayTooOld = errors.New("the gateway named no tunnel session (" + wire.HeaderTunnelID + "): it is older than this connector and signs no assertions; upgrade the gateway first")
)

// connectAndServe dials one tunnel and serves it until it ends.
func (c *Connector) connectAndServe(ctx context.Context) error {
	cred, err := c.currentCredential(ctx)
	if err != nil {
		return err
	}
	proof, err := auth.NewProof(c.key, http.MethodGet, c.connectURL, cred.token, c.gatewayNow())
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	t, err := tunnel.Dial(dctx, c.wsURL, tunnel.DialOptions{
		Header: http.Header{
			"Authorization":             {"DPoP " + cred.token},
			wire.HeaderProof:            {proof},
			wire.HeaderConnectorName:    {c.cfg.Name},
			wire.HeaderConnectorVersion: {c.cfg.Version},
		},
		HTTPClient: c.dialer,
		Config:     c.cfg.Tunnel,
	})
	cancel()
	if err != nil {
		var he *tunnel.HandshakeError
		if errors.As(err, &he) && he.StatusCode == http.StatusUnauthorized {
			c.dropCredential(cred) // the gateway restarted with another key, or the join token went: join again
		}
		return err
	}
	// The gateway names the session; the assertions it sends over it must name it too.
	tunnelID := t.Header().Get(wire.HeaderTunnelID)
	if tunnelID == "" {
		t.Close()
		return errGatewayTooOld
	}
	c.connected.Store(true)
	defer c.connected.Store(false)
	c.log.Info("connected to the gateway", "gateway", c.wsURL, "identity", c.identity, "credential", cred.id)

	srv := &http.Server{
		Handler:           c.track(c.authorize(tunnelID, c.upstream)),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       c.cfg.IdleStreamTimeout,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
	}
	served := make(chan struct{})
	l := t.DrainListener()
	go func() {
		defer close(served)
		srv.Serve(l)
	}()
	var result error = errTunnelLost
	select {
	case <-t.Done():
	case <-ctx.Done():
		// Leaving on purpose (SIGTERM, a rolling update): the gateway sends new requests to the cluster's other
		// connectors while the ones in flight finish, up to DrainTimeout. Streams taken over by an upgrade (exec,
		// port-forward) are not waited for: they end with the tunnel. The listener is closed (yamux GoAway) before
		// the log line, so that the line means no new request arrives here; Shutdown closes it again, harmlessly.
		l.Close()
		c.log.Info("draining: the gateway sends new requests to the cluster's other connectors", "drain_timeout", c.cfg.DrainTimeout.String())
		dctx, cancel := context.WithTimeout(context.Background(), c.cfg.DrainTimeout)
		if err := srv.Shutdown(dctx); err != nil {
			c.log.Info("requests still running after the drain timeout are cut", "drain_timeout", c.cfg.DrainTimeout.String())
		}
		cancel()
		result = nil
	}
	t.Close()
	srv.Close() // whatever streams are left die with the tunnel; this also ends Serve
	<-served
	return result
}

// track counts handlers so that Run returns only when every request it served has ended.
func (c *Connector) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.inflight.Add(1)
		defer c.inflight.Done()
		h.ServeHTTP(w, r)
	})
}

// CloseIdleConnections closes the connector's idle connections to the API server, as
// http.Transport.CloseIdleConnections does: after a burst of requests, it returns what the burst left pooled now
// rather than after the idle timeout (90 s).
func (c *Connector) CloseIdleConnections() { c.closeIdle() }
