package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/warren-dev/warren/auth"
)

// maxTokenOutput bounds what a token command may print.
const maxTokenOutput = auth.MaxTokenBytes + 1024

// RunTokenCommand runs command with /bin/sh -c and returns the token it printed (surrounding white space removed).
// A failure (with the start of what it wrote to stderr), an empty or an oversized output is an error naming the
// command.
func RunTokenCommand(ctx context.Context, command string) (string, error) {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	var out, errOut bytes.Buffer
	cmd.Stdout = &limitedBuffer{buf: &out, max: maxTokenOutput}
	cmd.Stderr = &limitedBuffer{buf: &errOut, max: 4 << 10, truncate: true}
	stdout := cmd.Stdout.(*limitedBuffer)
	if err := cmd.Run(); err != nil || stdout.overflow {
		if stdout.overflow {
			return "", fmt.Errorf("token command %q printed more than %d bytes: want one token", command, maxTokenOutput)
		}
		if msg := strings.TrimSpace(errOut.String()); msg != "" {
			return "", fmt.Errorf("token command %q failed: %v: %s", command, err, msg)
		}
		return "", fmt.Errorf("token command %q failed: %v", command, err)
	}
	token := strings.TrimSpace(out.String())
	if token == "" {
		return "", fmt.Errorf("token command %q printed nothing", command)
	}
	return token, nil
}

// ExecCredential runs command once (bounded by TokenCommandTimeout as well as ctx) and returns the
// client.authentication.k8s.io/v1 ExecCredential that kubectl's exec credential plugin protocol expects on standard
// output (`warren credential`, which `warren kubeconfig --token-command` configures): the token, and its expiry so
// that kubectl asks again only once it has expired. The expiry is read, not verified: the gateway verifies.
func ExecCredential(ctx context.Context, command string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, TokenCommandTimeout)
	defer cancel()
	token, err := RunTokenCommand(ctx, command)
	if err != nil {
		return nil, err
	}
	status := map[string]any{"token": token}
	if info, err := ParseToken(token); err == nil && !info.Expiry.IsZero() {
		status["expirationTimestamp"] = info.Expiry.UTC().Format(time.RFC3339)
	}
	out, err := json.Marshal(map[string]any{
		"apiVersion": "client.authentication.k8s.io/v1",
		"kind":       "ExecCredential",
		"spec":       map[string]any{"interactive": false},
		"status":     status,
	})
	return append(out, '\n'), err
}

var errTooLong = errors.New("output too long")

// limitedBuffer keeps at most max bytes: past that, a write fails (errTooLong) and overflow is set, or with
// truncate the rest is dropped.
type limitedBuffer struct {
	buf      *bytes.Buffer
	max      int
	truncate bool
	overflow bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); len(p) > room {
		if !b.truncate {
			b.overflow = true
			return 0, errTooLong
		}
		b.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.buf.Write(p)
}

// TokenInfo is what a caller token says about itself, read without verifying it: the gateway verifies; a client
// only wants to know who it acts as and when to ask for a fresh token.
type TokenInfo struct {
	Subject string
	ID      string // jti
	Issuer  string
	Expiry  time.Time // zero when the token has no exp
	// Rules are the token's warren rules, as the gateway will apply them.
	Rules []auth.Rule
}

// ParseToken reads a token's claims without verifying its signature.
func ParseToken(token string) (TokenInfo, error) {
	var claims auth.Claims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err != nil {
		return TokenInfo{}, fmt.Errorf("not a JWT: %v", err)
	}
	info := TokenInfo{Subject: claims.Subject, ID: claims.ID, Issuer: claims.Issuer, Rules: claims.Warren.Rules}
	if claims.ExpiresAt != nil {
		info.Expiry = claims.ExpiresAt.Time
	}
	return info, nil
}
