package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/gateway"
	"github.com/warren-dev/warren/gateway/limit"
	"github.com/warren-dev/warren/internal/download"
)

const gatewayUsage = `usage: warren gateway --listen ADDR --tls-cert F --tls-key F --gateway-key KEY --issuer-keys PUB[,PUB] --connector-keys PUB[,PUB]

Serves the Kubernetes API of cluster C at https://ADDR/clusters/C/ and takes connectors at wss://ADDR/connect.
Public key files are PEM public keys or JWKS files; they are re-read when they change and on SIGHUP. The caller's
token never leaves the gateway: each request reaches its connector with an assertion signed by --gateway-key,
whose public half connectors pin (warren connector --gateway-keys).

`

func runGateway(args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("warren gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", ":8443", "address to serve HTTPS on")
	certFile := fs.String("tls-cert", "", "TLS certificate (PEM) of the gateway")
	keyFile := fs.String("tls-key", "", "TLS private key (PEM) of the gateway")
	callers := addCallerFlags(fs, "public keys that sign caller tokens: comma-separated PEM or JWKS files")
	connectorKeys := fs.String("connector-keys", "", "public keys that sign connector (join) tokens, comma-separated files")
	gatewayKey := fs.String("gateway-key", "", "the gateway's own Ed25519 private key (signing.key of warren keygen --out DIR), read at start: it signs the assertion each request carries to its connector (connectors pin its public half with --gateway-keys) and connector credentials. Not an issuer key")
	revokedConnectors := fs.String("revoked-connectors", "", "file of revoked connector join token ids (jti) and connector identities (key thumbprints), one per line; re-read when it changes, and live tunnels of what it lists end within 5 s")
	maxConnectorLifetime := fs.Duration("max-connector-token-lifetime", 8760*time.Hour, "refuse connector (join) tokens valid for longer than this (exp - iat)")
	cc := gateway.DefaultConnectorConfig()
	fs.DurationVar(&cc.CredentialTTL, "connector-credential-ttl", cc.CredentialTTL, "lifetime of the credentials connectors get for their join token; they renew at 2/3 of it")
	fs.IntVar(&cc.MaxIdentities, "max-connector-identities", cc.MaxIdentities, "connector identities (keys) a cluster may hold at once; a new one over it is refused, never a live one evicted")
	fs.IntVar(&cc.MaxTunnelsPerIdentity, "max-tunnels-per-connector", cc.MaxTunnelsPerIdentity, "tunnels one connector identity may hold at once")
	auditLog := addAuditFlags(fs, "-", "audit log: one hash-chained JSON line per request (- for standard output)")
	lim := limit.DefaultConfig()
	fs.Float64Var(&lim.TokenRate, "token-rate", lim.TokenRate, "requests per second allowed per caller token")
	fs.IntVar(&lim.TokenBurst, "token-burst", lim.TokenBurst, "burst of requests allowed per caller token")
	fs.Float64Var(&lim.ClusterRate, "cluster-rate", lim.ClusterRate, "requests per second allowed per cluster, all tokens together")
	fs.IntVar(&lim.ClusterBurst, "cluster-burst", lim.ClusterBurst, "burst of requests allowed per cluster")
	fs.IntVar(&lim.TokenStreams, "token-streams", lim.TokenStreams, "concurrent long-running requests (watch, exec, attach, port-forward, logs, proxy) per caller token")
	fs.IntVar(&lim.TokenInflight, "token-inflight", lim.TokenInflight, "concurrent requests of any kind per caller token")
	fs.Float64Var(&lim.TokenTunnelShare, "token-tunnel-share", lim.TokenTunnelShare, "largest fraction of one tunnel's streams (--max-streams) one caller token may hold, so that it cannot leave other callers waiting")
	tun := addTunnelFlags(fs)
	maxStream := fs.Duration("max-stream-duration", gateway.DefaultConfig().MaxStreamDuration, "end exec, attach, port-forward, watch and logs -f sessions after this long")
	idleWrite := fs.Duration("idle-write-timeout", gateway.DefaultConfig().IdleWriteTimeout, "end a request (upgraded sessions too) whose caller has taken nothing of what the gateway writes to it for this long")
	metricsListen := fs.String("metrics-listen", "", "address for Prometheus /metrics (plain HTTP, e.g. 127.0.0.1:9090); default: none")
	maxHeader := fs.Int("max-header-bytes", gateway.DefaultConfig().MaxHeaderBytes, "largest request headers accepted; larger get 431")
	downloadDir := fs.String("download-dir", "", "directory of connector binaries served at /download/ to bootstrap scripts (warren-linux-amd64, warren-linux-arm64); without it the gateway serves its own build for its platform")
	clusters := fs.String("clusters", "", "clusters known before their connector connects (503 instead of 404), comma-separated")
	door := gateway.DefaultConfig().FrontDoor
	trustedProxies := fs.String("trusted-proxies", "", "addresses or CIDRs of the proxies in front of the gateway (Ingress, load balancer), comma-separated: only their X-Forwarded-For (and PROXY header, with --proxy-protocol) name the client; default: none, the connection's address is the client")
	fs.BoolVar(&door.ProxyProtocol, "proxy-protocol", false, "connections from --trusted-proxies start with a PROXY protocol header (v1 or v2); others are served as they come")
	fs.IntVar(&door.MaxUnauthenticated, "max-unauthenticated-connections", door.MaxUnauthenticated, "connections on which no request has authenticated yet, at most; past it a new one makes the oldest of them close")
	fs.IntVar(&door.MaxUnauthenticatedPerSource, "max-unauthenticated-per-source", door.MaxUnauthenticatedPerSource, "unauthenticated connections, and unauthenticated requests in flight, per client address (IPv6: per /64); more are refused")
	serveWithoutAudit := fs.Bool("serve-without-audit", false, "serve API requests even while the audit log cannot be written (default: refuse them with 503 and fail /readyz)")
	newLogger := logFlags(fs)
	fs.Usage = func() { fmt.Fprint(fs.Output(), gatewayUsage); fs.PrintDefaults() }
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger()
	if err != nil {
		return err
	}
	if fi, err := os.Stat(*downloadDir); *downloadDir != "" && (err != nil || !fi.IsDir()) {
		return fmt.Errorf("--download-dir %s is not a directory", *downloadDir)
	}
	self, _ := os.Executable() // "" when unknown: then only --download-dir is served
	switch {
	case !(lim.TokenTunnelShare > 0 && lim.TokenTunnelShare <= 1):
		return fmt.Errorf("--token-tunnel-share %v: want a fraction of a tunnel's streams, more than 0 and at most 1", lim.TokenTunnelShare)
	case *idleWrite <= 0:
		return fmt.Errorf("--idle-write-timeout %v: want a positive duration", *idleWrite)
	case *certFile == "" || *keyFile == "":
		return errors.New("missing --tls-cert or --tls-key: the gateway serves HTTPS only; give its certificate and key (PEM)")
	case *connectorKeys == "":
		return errors.New("missing --connector-keys: the public key(s) that sign connector tokens (signing.pub from warren keygen)")
	case *gatewayKey == "":
		return errors.New("missing --gateway-key: the gateway's own Ed25519 private key, which signs the assertion each request carries to its connector; make one with `warren keygen --out DIR` (DIR/signing.key here, DIR/signing.pub to the connectors' --gateway-keys)")
	}
	signingKey, err := auth.LoadSigningKey(*gatewayKey)
	if err != nil {
		return fmt.Errorf("--gateway-key: %w", err)
	}
	if door.TrustedProxies, err = gateway.ParseCIDRs(*trustedProxies); err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	if door.ProxyProtocol && len(door.TrustedProxies) == 0 {
		return errors.New("--proxy-protocol needs --trusted-proxies: the addresses of the load balancers whose PROXY header to honour")
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return fmt.Errorf("cannot load the TLS certificate: %v; check --tls-cert and --tls-key", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	mon := auth.NewMonitor(log)
	callerVerifier, reloads, err := callers.verifier(ctx, mon)
	if err != nil {
		return err
	}
	connKeys, err := auth.NewKeyFiles(auth.DefaultCheckInterval, splitList(*connectorKeys)...)
	if err != nil {
		return fmt.Errorf("--connector-keys: %w", err)
	}
	mon.Watch("--connector-keys", connKeys.Check)
	reloads = append(reloads, connKeys.Reload)
	connCfg := auth.VerifierConfig{Keys: connKeys, Audience: auth.AudienceConnector, MaxLifetime: *maxConnectorLifetime}
	if *revokedConnectors != "" {
		rl, err := auth.NewRevocationList(*revokedConnectors, auth.DefaultCheckInterval)
		if err != nil {
			return fmt.Errorf("--revoked-connectors: %w", err)
		}
		connCfg.Revoked = rl.Revoked
		reloads = append(reloads, rl.Reload)
		mon.Watch("--revoked-connectors", rl.Check)
	}
	connectorVerifier, err := auth.NewVerifier(connCfg)
	if err != nil {
		return err
	}
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	auditSink, err := auditLog.open(audit.ComponentGateway)
	if err != nil {
		return err
	}
	if auditSink == nil {
		return errors.New("--audit-log must not be empty: the gateway audits every request (- for standard output)")
	}
	defer auditSink.Close()
	g, err := gateway.New(gateway.Config{
		CallerVerifier:          callerVerifier,
		ConnectorVerifier:       connectorVerifier,
		SigningKey:              signingKey,
		Connectors:              cc,
		Clusters:                splitList(*clusters),
		Audit:                   auditSink,
		ServeWithoutAudit:       *serveWithoutAudit,
		FrontDoor:               door,
		Limits:                  limit.New(lim),
		MaxHeaderBytes:          *maxHeader,
		Tunnel:                  tun.config(),
		MaxStreamDuration:       *maxStream,
		IdleWriteTimeout:        *idleWrite,
		DisconnectExpiredTokens: *callers.disconnectExpired,
		Metrics:                 registry,
		Downloads:               download.New(*downloadDir, self),
		Ready:                   mon.Check,
		Logger:                  log,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		g.Close() // its re-check of connectors runs from New
		return fmt.Errorf("cannot listen on %s: %v; is another process using it? choose another --listen", *listen, err)
	}
	if *metricsListen != "" {
		mln, err := net.Listen("tcp", *metricsListen)
		if err != nil {
			ln.Close()
			g.Close()
			return fmt.Errorf("cannot listen on --metrics-listen %s: %v", *metricsListen, err)
		}
		msrv := &http.Server{Handler: promhttp.HandlerFor(registry, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
		go msrv.Serve(mln)
		defer msrv.Close()
	}
	srv := g.Server(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})

	// After a reload, the open streams of tokens it revoked end at once.
	reloadOnHangup(ctx, log, append(reloads, func() error { g.RecheckStreams(); return nil }))
	monitorReloads(ctx, mon)

	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(g.Listener(ln), "", "") }()
	log.Info("gateway listening", "addr", ln.Addr().String(), "version", version)
	select {
	case err := <-served:
		g.Close()
		return fmt.Errorf("serving stopped: %w", err)
	case <-ctx.Done():
	}
	log.Info("gateway shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(shutdownCtx) // ends plain requests; tunnels are hijacked connections, which g.Close ends
	g.Close()
	<-served
	return nil
}
