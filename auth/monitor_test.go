package auth

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestMonitorLogsOncePerChange(t *testing.T) {
	var buf bytes.Buffer
	m := NewMonitor(slog.New(slog.NewTextHandler(&buf, nil)))
	var fileErr, urlErr error
	m.Watch("--revoked-tokens", func() error { return fileErr })
	m.WatchLogOnly("--issuer-jwks-url", func() error { return urlErr })
	count := func(s string) int { return strings.Count(buf.String(), s) }

	if err := m.Check(); err != nil || buf.Len() != 0 {
		t.Fatalf("all well: %v, logged %q", err, buf.String())
	}
	fileErr = errors.New("revocation list r is gone")
	urlErr = errors.New("failed to fetch JWKS")
	for range 3 {
		err := m.Check()
		if err == nil || err.Error() != "--revoked-tokens: revocation list r is gone" {
			t.Fatalf("Check = %v, want only the file's failure", err)
		}
	}
	if count("reload failed") != 2 || count("source=--revoked-tokens") != 1 || count("source=--issuer-jwks-url") != 1 {
		t.Fatalf("want one error line per source after three checks:\n%s", buf.String())
	}
	fileErr = errors.New("revocation list r: line 2: want one token id (jti) per line")
	m.Check()
	if count("reload failed") != 3 {
		t.Fatalf("a new error is logged:\n%s", buf.String())
	}
	fileErr, urlErr = nil, nil
	if err := m.Check(); err != nil {
		t.Fatalf("recovered: %v", err)
	}
	m.Check()
	if count("reloaded after an earlier failure") != 2 {
		t.Fatalf("want one recovery line per source:\n%s", buf.String())
	}
}
