package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/gatewaytls"
	"github.com/warren-dev/warren/tunnel"
)

// callerFlags are the gateway's flags that configure the verification of caller tokens.
type callerFlags struct {
	keys         *string
	jwksURL      *string
	algorithms   *string
	maxLifetime  *time.Duration
	revoked      *string
	multiCluster *bool
	// disconnectExpired ends open streams when their token expires (revocation and a key rotated out always do).
	disconnectExpired *bool
}

// revokedHelp describes --revoked-tokens, at the gateway and at the connector.
const revokedHelp = "re-read when it changes; must exist (empty to revoke nothing); if it disappears the ids read before stay revoked; " +
	"the open streams (exec, attach, port-forward, watch, logs -f) of a token added to it end within 5s"

// disconnectExpiredHelp describes --disconnect-expired-tokens, at the gateway and at the connector.
const disconnectExpiredHelp = "also end open streams (exec, attach, port-forward, watch, logs -f) when their caller token expires; " +
	"by default a stream lasts beyond its token's expiry (a token is checked when a request starts), so that a long exec or acquisition outlives a short token"

func addCallerFlags(fs *flag.FlagSet, keysHelp string) *callerFlags {
	return &callerFlags{
		keys:              fs.String("issuer-keys", "", keysHelp),
		jwksURL:           fs.String("issuer-jwks-url", "", "an https JWKS URL with more issuer keys, refetched for unknown key ids and hourly (redirects only to https on the same host)"),
		algorithms:        fs.String("algorithms", auth.AlgEdDSA, "token signature algorithms accepted, comma-separated: EdDSA, ES256, RS256"),
		maxLifetime:       fs.Duration("max-token-lifetime", 24*time.Hour, "refuse caller tokens valid for longer than this (exp - iat)"),
		revoked:           fs.String("revoked-tokens", "", "file of revoked token ids (jti), one per line; "+revokedHelp),
		multiCluster:      fs.Bool("allow-multi-cluster-tokens", false, "accept caller tokens that name several clusters (by default a token must name one: a leaked token for several reaches them all)"),
		disconnectExpired: fs.Bool("disconnect-expired-tokens", false, disconnectExpiredHelp),
	}
}

// removedFlag is a flag that no longer exists: setting it (or its WARREN_ variable) fails with why and what to use.
type removedFlag string

func (f removedFlag) String() string   { return "" }
func (f removedFlag) Set(string) error { return errors.New(string(f)) }

// revocationList loads a --revoked-tokens file and has mon watch it; "" means none.
func revocationList(path string, mon *auth.Monitor) (*auth.RevocationList, error) {
	if path == "" {
		return nil, nil
	}
	rl, err := auth.NewRevocationList(path, auth.DefaultCheckInterval)
	if err != nil {
		return nil, fmt.Errorf("--revoked-tokens: %w", err)
	}
	mon.Watch("--revoked-tokens", rl.Check)
	return rl, nil
}

// verifier builds the caller-token verifier and the functions that reload its files (for SIGHUP); mon watches
// what it reloads.
func (f *callerFlags) verifier(ctx context.Context, mon *auth.Monitor) (*auth.Verifier, []func() error, error) {
	var sets auth.KeySets
	var reloads []func() error
	var sources []auth.Refresher // what open streams' re-checks look at afresh
	if *f.keys != "" {
		kf, err := auth.NewKeyFiles(auth.DefaultCheckInterval, splitList(*f.keys)...)
		if err != nil {
			return nil, nil, fmt.Errorf("--issuer-keys: %w", err)
		}
		sets = append(sets, kf)
		reloads = append(reloads, kf.Reload)
		mon.Watch("--issuer-keys", kf.Check)
		sources = append(sources, kf)
	}
	if *f.jwksURL != "" {
		remote, err := auth.NewRemoteJWKS(ctx, *f.jwksURL, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("--issuer-jwks-url: %w", err)
		}
		sets = append(sets, remote)
		reloads = append(reloads, func() error { return remote.Reload(context.Background()) })
		mon.WatchLogOnly("--issuer-jwks-url", remote.Err)
	}
	if len(sets) == 0 {
		return nil, nil, errors.New("missing --issuer-keys: the public key(s) that sign caller tokens (signing.pub from warren keygen)")
	}
	cfg := auth.VerifierConfig{
		Keys:              sets,
		Audience:          auth.AudienceCaller,
		MaxLifetime:       *f.maxLifetime,
		Algorithms:        splitList(*f.algorithms),
		AllowMultiCluster: *f.multiCluster,
	}
	rl, err := revocationList(*f.revoked, mon)
	if err != nil {
		return nil, nil, err
	}
	if rl != nil {
		cfg.Revoked = rl.Revoked
		reloads = append(reloads, rl.Reload)
		sources = append(sources, rl)
	}
	cfg.Sources = sources
	v, err := auth.NewVerifier(cfg)
	if err != nil {
		return nil, nil, err
	}
	return v, reloads, nil
}

// reloadOnHangup runs the reload functions on SIGHUP until ctx is done. Files are also re-read when they change.
func reloadOnHangup(ctx context.Context, log *slog.Logger, reloads []func() error) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				failed := false
				for _, reload := range reloads {
					if err := reload(); err != nil {
						failed = true
						log.Error("reload failed; keeping what was loaded before", "err", err)
					}
				}
				if !failed {
					log.Info("keys and revocation list reloaded")
				}
			}
		}
	}()
}

// monitorReloads runs mon.Check every check interval until ctx is done, so that a key file or revocation list
// that goes bad is logged even when no request looks a key up.
func monitorReloads(ctx context.Context, mon *auth.Monitor) {
	go func() {
		tick := time.NewTicker(auth.DefaultCheckInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				mon.Check()
			}
		}
	}()
}

// auditFlags configure the audit log of the gateway or the connector.
type auditFlags struct {
	path, signingKey *string
}

func addAuditFlags(fs *flag.FlagSet, defaultPath, help string) *auditFlags {
	return &auditFlags{
		path:       fs.String("audit-log", defaultPath, help),
		signingKey: fs.String("audit-signing-key", "", "Ed25519 key (signing.key of `warren keygen`, not the token issuer's) that signs checkpoints of the audit log, for `warren audit verify --key`; default: no checkpoints"),
	}
}

// open opens the audit log ("-" meaning standard output), or returns nil without --audit-log.
func (f *auditFlags) open(component string) (*audit.Log, error) {
	if *f.path == "" {
		if *f.signingKey != "" {
			return nil, errors.New("--audit-signing-key needs --audit-log")
		}
		return nil, nil
	}
	cfg := audit.DefaultConfig()
	cfg.Component = component
	if *f.signingKey != "" {
		k, err := auth.LoadSigningKey(*f.signingKey)
		if err != nil {
			return nil, fmt.Errorf("--audit-signing-key: %w", err)
		}
		cfg.SigningKey, cfg.KeyID = k.Key, k.KeyID
	}
	if *f.path == "-" {
		l, err := audit.NewWithConfig(os.Stdout, cfg)
		if err != nil {
			return nil, fmt.Errorf("--audit-log: %w", err)
		}
		return l, nil
	}
	l, err := audit.OpenWithConfig(*f.path, cfg)
	if err != nil {
		return nil, fmt.Errorf("--audit-log: %w", err)
	}
	return l, nil
}

// tunnelFlags tune the tunnel; the defaults are tunnel.Config's.
type tunnelFlags struct {
	ping, keepalive, writeTimeout *time.Duration
	window                        *uint
	windowBudget                  *int64
	maxStreams                    *int
}

func addTunnelFlags(fs *flag.FlagSet) *tunnelFlags {
	return &tunnelFlags{
		ping:         fs.Duration("ping-interval", 15*time.Second, "WebSocket ping period of the tunnel"),
		keepalive:    fs.Duration("keepalive-interval", 10*time.Second, "yamux keepalive period of the tunnel"),
		writeTimeout: fs.Duration("write-timeout", 10*time.Second, "bound on every tunnel write and keepalive answer"),
		window:       fs.Uint("stream-window", 0, "largest yamux receive window of one stream, bytes (throughput per stream <= window / RTT); 0: the tunnel's default, 16 MiB"),
		windowBudget: fs.Int64("window-budget", 0, "bytes of receive window all streams of one tunnel may grow to beyond their first 256 KiB each (what a peer may send ahead of readers that stopped); 0: the tunnel's default, 64 MiB"),
		maxStreams:   fs.Int("max-streams", 1024, "streams open at once on one tunnel"),
	}
}

func (f *tunnelFlags) config() tunnel.Config {
	return tunnel.Config{
		PingInterval:      *f.ping,
		KeepAliveInterval: *f.keepalive,
		WriteTimeout:      *f.writeTimeout,
		StreamWindow:      uint32(*f.window),
		WindowBudget:      *f.windowBudget,
		MaxStreams:        *f.maxStreams,
	}
}

// gatewayTLS is how connectors and bootstrap verify the gateway: system roots, or the CA in caFile, and SPKI pins
// when given. It also returns the CA's PEM ("" without caFile).
func gatewayTLS(caFile string, pins []string) (*tls.Config, []byte, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	var pem []byte
	if caFile != "" {
		var err error
		if pem, err = os.ReadFile(caFile); err != nil {
			return nil, nil, fmt.Errorf("cannot read --ca-file: %v", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("--ca-file %s holds no PEM certificate", caFile)
		}
	}
	if len(pins) > 0 {
		parsed, err := gatewaytls.ParsePins(pins)
		if err != nil {
			return nil, nil, fmt.Errorf("--pin: %w", err)
		}
		cfg = gatewaytls.PinTLSConfig(cfg, parsed, caFile != "")
	}
	return cfg, pem, nil
}
