package main

// The flags several commands share: logging (gateway, connector, acquire, acquire volume), and the gateway's and
// the connector's caller-token verification, audit log and tunnel; the repeatable flag and the WARREN_ prefix.
// Each binds to the library's settings, with the library's defaults.

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/tunnel"
)

// logOptions are --log-level and --log-format.
type logOptions struct{ level, format string }

func (o *logOptions) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.level, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&o.format, "log-format", "text", "log format: text or json")
}

// logger builds the logger the flags ask for, writing to standard error.
func (o *logOptions) logger() (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(o.level)); err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", o.level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch o.format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("invalid --log-format %q: want text or json", o.format)
}

// revokedHelp describes --revoked-tokens, at the gateway and at the connector.
const revokedHelp = "re-read when it changes; must exist (empty to revoke nothing); if it disappears the ids read before stay revoked; " +
	"the open streams (exec, attach, port-forward, watch, logs -f) of a token added to it end within 5s"

// disconnectExpiredHelp describes --disconnect-expired-tokens, at the gateway and at the connector.
const disconnectExpiredHelp = "also end open streams (exec, attach, port-forward, watch, logs -f) when their caller token expires; " +
	"by default a stream lasts beyond its token's expiry (a token is checked when a request starts), so that a long exec or acquisition outlives a short token"

// callerOptions are the gateway's flags that configure the verification of caller tokens (auth.CallerKeyFiles).
type callerOptions struct {
	files             auth.CallerKeyFiles
	keys, algorithms  string // comma-separated
	disconnectExpired bool   // ends open streams when their token expires (revocation and a key rotated out always do)
}

func (o *callerOptions) addFlags(fs *flag.FlagSet, keysHelp string) {
	d := auth.DefaultCallerKeyFiles()
	fs.StringVar(&o.keys, "issuer-keys", "", keysHelp)
	fs.StringVar(&o.files.JWKSURL, "issuer-jwks-url", "", "an https JWKS URL with more issuer keys, refetched for unknown key ids and hourly (redirects only to https on the same host)")
	fs.StringVar(&o.algorithms, "algorithms", strings.Join(d.Algorithms, ","), "token signature algorithms accepted, comma-separated: EdDSA, ES256, RS256")
	fs.DurationVar(&o.files.MaxLifetime, "max-token-lifetime", d.MaxLifetime, "refuse caller tokens valid for longer than this (exp - iat)")
	fs.StringVar(&o.files.RevokedFile, "revoked-tokens", "", "file of revoked token ids (jti), one per line; "+revokedHelp)
	fs.BoolVar(&o.files.AllowMultiCluster, "allow-multi-cluster-tokens", false, "accept caller tokens that name several clusters (by default a token must name one: a leaked token for several reaches them all)")
	fs.BoolVar(&o.disconnectExpired, "disconnect-expired-tokens", false, disconnectExpiredHelp)
}

func (o *callerOptions) keyFiles() auth.CallerKeyFiles {
	f := o.files
	f.KeyFiles, f.Algorithms = splitList(o.keys), splitList(o.algorithms)
	return f
}

// removedFlag is a flag that no longer exists: setting it (or its WARREN_ variable) fails with why and what to use.
type removedFlag string

func (f removedFlag) String() string   { return "" }
func (f removedFlag) Set(string) error { return errors.New(string(f)) }

// auditOptions configure the audit log of the gateway or the connector (audit.OpenLog).
type auditOptions struct{ path, signingKey string }

func (o *auditOptions) addFlags(fs *flag.FlagSet, defaultPath, help string) {
	fs.StringVar(&o.path, "audit-log", defaultPath, help)
	fs.StringVar(&o.signingKey, "audit-signing-key", "", "Ed25519 key (signing.key of `warren keygen`, not the token issuer's) that signs checkpoints of the audit log, for `warren audit verify --key`; default: no checkpoints")
}

func (o *auditOptions) validate() error {
	if o.path == "" && o.signingKey != "" {
		return errors.New("--audit-signing-key needs --audit-log")
	}
	return nil
}

// tunnelOptions tune the tunnel; the defaults are tunnel.DefaultConfig's.
type tunnelOptions struct {
	cfg    tunnel.Config
	window uint
}

func (o *tunnelOptions) addFlags(fs *flag.FlagSet) {
	d := tunnel.DefaultConfig()
	fs.DurationVar(&o.cfg.PingInterval, "ping-interval", d.PingInterval, "WebSocket ping period of the tunnel")
	fs.DurationVar(&o.cfg.KeepAliveInterval, "keepalive-interval", d.KeepAliveInterval, "yamux keepalive period of the tunnel")
	fs.DurationVar(&o.cfg.WriteTimeout, "write-timeout", d.WriteTimeout, "bound on every tunnel write and keepalive answer")
	fs.UintVar(&o.window, "stream-window", 0, fmt.Sprintf("largest yamux receive window of one stream, bytes (throughput per stream <= window / RTT); 0: the tunnel's default, %d MiB", d.StreamWindow>>20))
	fs.Int64Var(&o.cfg.WindowBudget, "window-budget", 0, fmt.Sprintf("bytes of receive window all streams of one tunnel may grow to beyond their first 256 KiB each (what a peer may send ahead of readers that stopped); 0: the tunnel's default, %d MiB", d.WindowBudget>>20))
	fs.IntVar(&o.cfg.MaxStreams, "max-streams", d.MaxStreams, "streams open at once on one tunnel")
}

func (o *tunnelOptions) config() tunnel.Config {
	c := o.cfg
	c.StreamWindow = uint32(o.window)
	return c
}

// envPrefix is the prefix of the environment variables applyEnv reads (WARREN_TOKEN_FILE for --token-file).
const envPrefix = "WARREN_"

// stringList is a repeatable flag: each use appends one value as given.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, " ") }

func (l *stringList) Set(s string) error {
	*l = append(*l, s)
	return nil
}
