package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/download"
)

// ServeConfig is a gateway process (`warren gateway`): the Gateway's Config, and the files and listeners Serve
// loads and owns. Errors name the flag of the setting at fault.
type ServeConfig struct {
	// Gateway configures the Gateway. Serve fills CallerVerifier, ConnectorVerifier, SigningKey, Audit, Metrics,
	// Downloads and Ready from the settings below; Logger is used for Serve's own logs too.
	Gateway Config
	// Listen is the address to serve HTTPS on. Default ":8443".
	Listen string
	// TLSCertFile and TLSKeyFile are the gateway's TLS certificate and key (PEM). Required.
	TLSCertFile, TLSKeyFile string
	// SigningKeyFile holds the gateway's own Ed25519 key (Config.SigningKey), read at start. Required.
	SigningKeyFile string
	// Callers are where the caller-token verifier's keys and revocation list come from.
	Callers auth.CallerKeyFiles
	// ConnectorKeyFiles are the public keys that sign connectors' join tokens. Required.
	ConnectorKeyFiles []string
	// RevokedConnectorsFile lists revoked join token ids and connector identities; "" for none.
	RevokedConnectorsFile string
	// MaxConnectorTokenLifetime refuses join tokens valid for longer (exp - iat). Default 8760 h.
	MaxConnectorTokenLifetime time.Duration
	// AuditLog is the audit log's path, "-" for standard output. Required: the gateway audits every request.
	// Default "-".
	AuditLog string
	// AuditSigningKeyFile, when set, signs the audit log's checkpoints.
	AuditSigningKeyFile string
	// MetricsListen, when set, serves Prometheus /metrics there (plain HTTP).
	MetricsListen string
	// DownloadDir holds the connector binaries served at /download/; Executable is the running binary, served for
	// its own platform when DownloadDir has none ("" when unknown).
	DownloadDir, Executable string
	// ShutdownTimeout bounds how long plain requests may take to finish once ctx is done. Default 10 s.
	ShutdownTimeout time.Duration
	// Version is logged at start.
	Version string
}

// DefaultServeConfig returns the defaults of ServeConfig, for flags and documentation.
func DefaultServeConfig() ServeConfig {
	g := DefaultConfig()
	g.Connectors = DefaultConnectorConfig()
	return ServeConfig{
		Gateway:                   g,
		Listen:                    ":8443",
		Callers:                   auth.DefaultCallerKeyFiles(),
		MaxConnectorTokenLifetime: auth.MaxConnectorTokenLifetime,
		AuditLog:                  "-",
		ShutdownTimeout:           10 * time.Second,
	}
}

// Serve loads what cfg names, serves until ctx is done (or serving fails), then shuts down: plain requests get
// ShutdownTimeout to finish, tunnels end. Every server and loop it starts has ended when it returns.
func Serve(ctx context.Context, cfg ServeConfig) error {
	log := cfg.Gateway.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
		cfg.Gateway.Logger = log
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultServeConfig().ShutdownTimeout
	}
	if cfg.AuditLog == "" {
		return errors.New("--audit-log must not be empty: the gateway audits every request (- for standard output)")
	}
	signingKey, err := auth.LoadSigningKey(cfg.SigningKeyFile)
	if err != nil {
		return fmt.Errorf("--gateway-key: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
	if err != nil {
		return fmt.Errorf("cannot load the TLS certificate: %v; check --tls-cert and --tls-key", err)
	}
	mon := auth.NewMonitor(log)
	callerVerifier, reloads, err := cfg.Callers.Load(ctx, mon)
	if err != nil {
		return err
	}
	connKeys, err := auth.NewKeyFiles(auth.DefaultCheckInterval, cfg.ConnectorKeyFiles...)
	if err != nil {
		return fmt.Errorf("--connector-keys: %w", err)
	}
	mon.Watch("--connector-keys", connKeys.Check)
	reloads = append(reloads, connKeys.Reload)
	connCfg := auth.VerifierConfig{Keys: connKeys, Audience: auth.AudienceConnector, MaxLifetime: cfg.MaxConnectorTokenLifetime}
	rl, err := auth.LoadRevocationList(cfg.RevokedConnectorsFile, "--revoked-connectors", mon)
	if err != nil {
		return err
	}
	if rl != nil {
		connCfg.Revoked = rl.Revoked
		reloads = append(reloads, rl.Reload)
	}
	connectorVerifier, err := auth.NewVerifier(connCfg)
	if err != nil {
		return err
	}
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	auditLog, err := audit.OpenLog(cfg.AuditLog, cfg.AuditSigningKeyFile, audit.ComponentGateway)
	if err != nil {
		return err
	}
	defer auditLog.Close() // last: once every request has written its record

	gc := cfg.Gateway
	gc.CallerVerifier, gc.ConnectorVerifier, gc.SigningKey = callerVerifier, connectorVerifier, signingKey
	gc.Audit, gc.Metrics, gc.Ready = auditLog, registry, mon.Check
	gc.Downloads = download.New(cfg.DownloadDir, cfg.Executable)
	g, err := New(gc)
	if err != nil {
		return err
	}
	defer g.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %v; is another process using it? choose another --listen", cfg.Listen, err)
	}
	var metrics *http.Server
	var mln net.Listener
	if cfg.MetricsListen != "" {
		if mln, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			ln.Close()
			return fmt.Errorf("cannot listen on --metrics-listen %s: %v", cfg.MetricsListen, err)
		}
		metrics = &http.Server{Handler: promhttp.HandlerFor(registry, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
	}
	srv := g.Server(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})

	// The group owns every server and loop; the first to fail, or ctx, ends them all.
	group, gctx := errgroup.WithContext(ctx)
	group.Go(func() error {
		if err := srv.ServeTLS(g.Listener(ln), "", ""); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving stopped: %w", err)
		}
		return nil
	})
	if metrics != nil {
		group.Go(func() error {
			if err := metrics.Serve(mln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serving --metrics-listen stopped: %w", err)
			}
			return nil
		})
	}
	// After a reload, the open streams of tokens it revoked end at once.
	reloads = append(reloads, func() error { g.RecheckStreams(); return nil })
	group.Go(func() error { auth.ReloadOnHangup(gctx, log, reloads); return nil })
	group.Go(func() error { mon.Run(gctx, auth.DefaultCheckInterval); return nil })
	group.Go(func() error {
		<-gctx.Done()
		if ctx.Err() != nil {
			log.Info("gateway shutting down")
		}
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		srv.Shutdown(sctx) // ends plain requests; tunnels are hijacked connections, which g.Close ends
		g.Close()
		if metrics != nil {
			metrics.Close()
		}
		return nil
	})
	log.Info("gateway listening", "addr", ln.Addr().String(), "version", cfg.Version)
	return group.Wait()
}
