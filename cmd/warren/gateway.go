package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/warren-dev/warren/gateway"
	"github.com/warren-dev/warren/gateway/limit"
)

const gatewayUsage = `usage: warren gateway --listen ADDR --tls-cert F --tls-key F --gateway-key KEY --issuer-keys PUB[,PUB] --connector-keys PUB[,PUB]

Serves the Kubernetes API of cluster C at https://ADDR/clusters/C/ and takes connectors at wss://ADDR/connect.
Public key files are PEM public keys or JWKS files; they are re-read when they change and on SIGHUP. The caller's
token never leaves the gateway: each request reaches its connector with an assertion signed by --gateway-key,
whose public half connectors pin (warren connector --gateway-keys).

`

// GatewayOptions are the flags of `warren gateway`; Validate turns them into gateway.ServeConfig.
type GatewayOptions struct {
	serve                                   gateway.ServeConfig // flags bound to its fields where the types match
	callers                                 callerOptions
	connectorKeys, clusters, trustedProxies string // comma-separated
	audit                                   auditOptions
	limits                                  limit.Config
	tunnel                                  tunnelOptions
	log                                     logOptions
}

// NewGatewayOptions returns the options with the libraries' defaults.
func NewGatewayOptions() *GatewayOptions {
	return &GatewayOptions{serve: gateway.DefaultServeConfig(), limits: limit.DefaultConfig()}
}

// AddFlags binds the options to fs.
func (o *GatewayOptions) AddFlags(fs *flag.FlagSet) {
	s, g := &o.serve, &o.serve.Gateway
	cc, lim, door := &g.Connectors, &o.limits, &g.FrontDoor
	fs.StringVar(&s.Listen, "listen", s.Listen, "address to serve HTTPS on")
	fs.StringVar(&s.TLSCertFile, "tls-cert", "", "TLS certificate (PEM) of the gateway")
	fs.StringVar(&s.TLSKeyFile, "tls-key", "", "TLS private key (PEM) of the gateway")
	o.callers.addFlags(fs, "public keys that sign caller tokens: comma-separated PEM or JWKS files")
	fs.StringVar(&o.connectorKeys, "connector-keys", "", "public keys that sign connector (join) tokens, comma-separated files")
	fs.StringVar(&s.SigningKeyFile, "gateway-key", "", "the gateway's own Ed25519 private key (signing.key of warren keygen --out DIR), read at start: it signs the assertion each request carries to its connector (connectors pin its public half with --gateway-keys) and connector credentials. Not an issuer key")
	fs.StringVar(&s.RevokedConnectorsFile, "revoked-connectors", "", "file of revoked connector join token ids (jti) and connector identities (key thumbprints), one per line; re-read when it changes, and live tunnels of what it lists end within 5 s")
	fs.DurationVar(&s.MaxConnectorTokenLifetime, "max-connector-token-lifetime", s.MaxConnectorTokenLifetime, "refuse connector (join) tokens valid for longer than this (exp - iat)")
	fs.DurationVar(&cc.CredentialTTL, "connector-credential-ttl", cc.CredentialTTL, "lifetime of the credentials connectors get for their join token; they renew at 2/3 of it")
	fs.IntVar(&cc.MaxIdentities, "max-connector-identities", cc.MaxIdentities, "connector identities (keys) a cluster may hold at once; a new one over it is refused, never a live one evicted")
	fs.IntVar(&cc.MaxTunnelsPerIdentity, "max-tunnels-per-connector", cc.MaxTunnelsPerIdentity, "tunnels one connector identity may hold at once")
	o.audit.addFlags(fs, s.AuditLog, "audit log: one hash-chained JSON line per request (- for standard output)")
	fs.Float64Var(&lim.TokenRate, "token-rate", lim.TokenRate, "requests per second allowed per caller token")
	fs.IntVar(&lim.TokenBurst, "token-burst", lim.TokenBurst, "burst of requests allowed per caller token")
	fs.Float64Var(&lim.ClusterRate, "cluster-rate", lim.ClusterRate, "requests per second allowed per cluster, all tokens together")
	fs.IntVar(&lim.ClusterBurst, "cluster-burst", lim.ClusterBurst, "burst of requests allowed per cluster")
	fs.IntVar(&lim.TokenStreams, "token-streams", lim.TokenStreams, "concurrent long-running requests (watch, exec, attach, port-forward, logs, proxy) per caller token")
	fs.IntVar(&lim.TokenInflight, "token-inflight", lim.TokenInflight, "concurrent requests of any kind per caller token")
	fs.Float64Var(&lim.TokenTunnelShare, "token-tunnel-share", lim.TokenTunnelShare, "largest fraction of one tunnel's streams (--max-streams) one caller token may hold, so that it cannot leave other callers waiting")
	o.tunnel.addFlags(fs)
	fs.DurationVar(&g.MaxStreamDuration, "max-stream-duration", g.MaxStreamDuration, "end exec, attach, port-forward, watch and logs -f sessions after this long")
	fs.DurationVar(&g.IdleWriteTimeout, "idle-write-timeout", g.IdleWriteTimeout, "end a request (upgraded sessions too) whose caller has taken nothing of what the gateway writes to it for this long")
	fs.StringVar(&s.MetricsListen, "metrics-listen", "", "address for Prometheus /metrics (plain HTTP, e.g. 127.0.0.1:9090); default: none")
	fs.IntVar(&g.MaxHeaderBytes, "max-header-bytes", g.MaxHeaderBytes, "largest request headers accepted; larger get 431")
	fs.StringVar(&s.DownloadDir, "download-dir", "", "directory of connector binaries served at /download/ to bootstrap scripts (warren-linux-amd64, warren-linux-arm64); without it the gateway serves its own build for its platform")
	fs.StringVar(&o.clusters, "clusters", "", "clusters known before their connector connects (503 instead of 404), comma-separated")
	fs.StringVar(&o.trustedProxies, "trusted-proxies", "", "addresses or CIDRs of the proxies in front of the gateway (Ingress, load balancer), comma-separated: only their X-Forwarded-For (and PROXY header, with --proxy-protocol) name the client; default: none, the connection's address is the client")
	fs.BoolVar(&door.ProxyProtocol, "proxy-protocol", door.ProxyProtocol, "connections from --trusted-proxies start with a PROXY protocol header (v1 or v2); others are served as they come")
	fs.IntVar(&door.MaxUnauthenticated, "max-unauthenticated-connections", door.MaxUnauthenticated, "connections on which no request has authenticated yet, at most; past it a new one makes the oldest of them close")
	fs.IntVar(&door.MaxUnauthenticatedPerSource, "max-unauthenticated-per-source", door.MaxUnauthenticatedPerSource, "unauthenticated connections, and unauthenticated requests in flight, per client address (IPv6: per /64); more are refused")
	fs.BoolVar(&g.ServeWithoutAudit, "serve-without-audit", g.ServeWithoutAudit, "serve API requests even while the audit log cannot be written (default: refuse them with 503 and fail /readyz)")
	o.log.addFlags(fs)
}

// Validate checks the flags together and returns what gateway.Serve runs. It reads no key or certificate: Serve
// does, and says which flag was at fault.
func (o *GatewayOptions) Validate() (gateway.ServeConfig, error) {
	cfg := o.serve
	log, err := o.log.logger()
	if err != nil {
		return cfg, err
	}
	if fi, err := os.Stat(cfg.DownloadDir); cfg.DownloadDir != "" && (err != nil || !fi.IsDir()) {
		return cfg, fmt.Errorf("--download-dir %s is not a directory", cfg.DownloadDir)
	}
	switch {
	case !(o.limits.TokenTunnelShare > 0 && o.limits.TokenTunnelShare <= 1):
		return cfg, fmt.Errorf("--token-tunnel-share %v: want a fraction of a tunnel's streams, more than 0 and at most 1", o.limits.TokenTunnelShare)
	case cfg.Gateway.IdleWriteTimeout <= 0:
		return cfg, fmt.Errorf("--idle-write-timeout %v: want a positive duration", cfg.Gateway.IdleWriteTimeout)
	case cfg.TLSCertFile == "" || cfg.TLSKeyFile == "":
		return cfg, errors.New("missing --tls-cert or --tls-key: the gateway serves HTTPS only; give its certificate and key (PEM)")
	case o.connectorKeys == "":
		return cfg, errors.New("missing --connector-keys: the public key(s) that sign connector tokens (signing.pub from warren keygen)")
	case cfg.SigningKeyFile == "":
		return cfg, errors.New("missing --gateway-key: the gateway's own Ed25519 private key, which signs the assertion each request carries to its connector; make one with `warren keygen --out DIR` (DIR/signing.key here, DIR/signing.pub to the connectors' --gateway-keys)")
	}
	door := &cfg.Gateway.FrontDoor
	if door.TrustedProxies, err = gateway.ParseCIDRs(o.trustedProxies); err != nil {
		return cfg, fmt.Errorf("--trusted-proxies: %w", err)
	}
	if door.ProxyProtocol && len(door.TrustedProxies) == 0 {
		return cfg, errors.New("--proxy-protocol needs --trusted-proxies: the addresses of the load balancers whose PROXY header to honour")
	}
	if err := o.audit.validate(); err != nil {
		return cfg, err
	}
	cfg.Callers = o.callers.keyFiles()
	cfg.ConnectorKeyFiles = splitList(o.connectorKeys)
	cfg.AuditLog, cfg.AuditSigningKeyFile = o.audit.path, o.audit.signingKey
	cfg.Executable, _ = os.Executable() // "" when unknown: then only --download-dir is served
	cfg.Version = version
	g := &cfg.Gateway
	g.Clusters = splitList(o.clusters)
	g.Limits = limit.New(o.limits)
	g.Tunnel = o.tunnel.config()
	g.DisconnectExpiredTokens = o.callers.disconnectExpired
	g.Logger = log
	return cfg, nil
}

// runGateway implements `warren gateway`: gateway.Serve until SIGINT or SIGTERM.
func runGateway(args []string, _, stderr io.Writer) error {
	return runOptions(cli{name: "warren gateway", usage: gatewayUsage, signals: true}, NewGatewayOptions(), args, stderr, gateway.Serve)
}
