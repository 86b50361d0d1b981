package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// CallerKeyFiles says where the keys and revocation list of a caller-token Verifier come from (the gateway's
// --issuer-keys, --issuer-jwks-url, --revoked-tokens...); Load builds the Verifier.
type CallerKeyFiles struct {
	// KeyFiles are PEM or JWKS files of issuer public keys, re-read when they change.
	KeyFiles []string
	// JWKSURL is an https JWKS URL with more issuer keys, refetched for unknown key ids and hourly.
	JWKSURL string
	// Algorithms are the accepted token signature algorithms. Default EdDSA only.
	Algorithms []string
	// MaxLifetime refuses tokens valid for longer (exp - iat). Default 24 h.
	MaxLifetime time.Duration
	// RevokedFile is a file of revoked token ids (jti), one per line; "" for none.
	RevokedFile string
	// AllowMultiCluster accepts tokens that name several clusters.
	AllowMultiCluster bool
}

// DefaultCallerKeyFiles returns the defaults of CallerKeyFiles' settings, for flags and documentation.
func DefaultCallerKeyFiles() CallerKeyFiles {
	return CallerKeyFiles{Algorithms: []string{AlgEdDSA}, MaxLifetime: 24 * time.Hour}
}

// Load builds the caller-token verifier and the functions that reload its sources (for SIGHUP); mon watches what
// they reload. Errors name the flag of the setting at fault.
func (f CallerKeyFiles) Load(ctx context.Context, mon *Monitor) (*Verifier, []func() error, error) {
	var sets KeySets
	var reloads []func() error
	var sources []Refresher // what open streams' re-checks look at afresh
	if len(f.KeyFiles) > 0 {
		kf, err := NewKeyFiles(DefaultCheckInterval, f.KeyFiles...)
		if err != nil {
			return nil, nil, fmt.Errorf("--issuer-keys: %w", err)
		}
		sets = append(sets, kf)
		reloads = append(reloads, kf.Reload)
		mon.Watch("--issuer-keys", kf.Check)
		sources = append(sources, kf)
	}
	if f.JWKSURL != "" {
		remote, err := NewRemoteJWKS(ctx, f.JWKSURL, nil)
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
	cfg := VerifierConfig{
		Keys:              sets,
		Audience:          AudienceCaller,
		MaxLifetime:       f.MaxLifetime,
		Algorithms:        f.Algorithms,
		AllowMultiCluster: f.AllowMultiCluster,
	}
	rl, err := LoadRevocationList(f.RevokedFile, "--revoked-tokens", mon)
	if err != nil {
		return nil, nil, err
	}
	if rl != nil {
		cfg.Revoked = rl.Revoked
		reloads = append(reloads, rl.Reload)
		sources = append(sources, rl)
	}
	cfg.Sources = sources
	v, err := NewVerifier(cfg)
	if err != nil {
		return nil, nil, err
	}
	return v, reloads, nil
}

// LoadRevocationList loads the revocation list in path and has mon watch it under name (the flag that gave it);
// "" means none: nil, nil.
func LoadRevocationList(path, name string, mon *Monitor) (*RevocationList, error) {
	if path == "" {
		return nil, nil
	}
	rl, err := NewRevocationList(path, DefaultCheckInterval)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	mon.Watch(name, rl.Check)
	return rl, nil
}

// ReloadOnHangup runs the reload functions on every SIGHUP until ctx is done, then returns. Files are also re-read
// when they change; SIGHUP makes it happen now.
func ReloadOnHangup(ctx context.Context, log *slog.Logger, reloads []func() error) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
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
}

// Run calls Check every interval until ctx is done, so that a source that goes bad is logged even when no request
// looks a key up and no probe asks. It returns when ctx is done.
func (m *Monitor) Run(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			m.Check()
		}
	}
}
