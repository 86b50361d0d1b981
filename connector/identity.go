package connector

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/wire"
	"github.com/warren-dev/warren/tunnel"
)

// A connector's identity at the gateway is its Ed25519 key (docs/connectors.md). It joins with its join token (the
// token of `warren token connector`) and a proof that it holds the key, and gets a short-lived credential bound to
// the key; it opens tunnels with that credential and a fresh proof each time, and renews the credential at two
// thirds of its lifetime, presenting the join token (re-read) again, without dropping its tunnels.

// KeyFile is the name of the connector's key in its state directory.
const KeyFile = "connector.key"

// LoadOrCreateKey returns the connector key kept in dir (KeyFile: PKCS#8 PEM, mode 0600), creating dir (0700) and
// the key when there is none yet. With it, a restarted connector keeps its identity, and so its slot at the gateway.
// Give each connector a directory of its own.
func LoadOrCreateKey(dir string) (key ed25519.PrivateKey, created bool, err error) {
	path := filepath.Join(dir, KeyFile)
	data, err := os.ReadFile(path)
	if err == nil {
		sk, err := parseKey(data)
		if err != nil {
			return nil, false, fmt.Errorf("connector key %s: %v; delete it to make a new identity", path, err)
		}
		return sk, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("cannot read the connector key: %w", err)
	}
	_, key, err = ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("cannot generate the connector key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, false, fmt.Errorf("cannot encode the connector key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("cannot create the state directory: %w", err)
	}
	// Written aside and renamed, so that a crash never leaves half a key behind.
	tmp, err := os.CreateTemp(dir, KeyFile+".*")
	if err != nil {
		return nil, false, fmt.Errorf("cannot write the connector key in %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name())
	if err = tmp.Chmod(0o600); err == nil {
		if _, err = tmp.Write(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err == nil {
			err = tmp.Sync()
		}
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return nil, false, fmt.Errorf("cannot write the connector key in %s: %w", dir, err)
	}
	return key, true, nil
}

func parseKey(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New(`not a PEM "PRIVATE KEY"`)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	ed, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T, not an Ed25519 key", k)
	}
	return ed, nil
}

// credential is the connector's current credential. Times are the connector's own clock.
type credential struct {
	token, id        string
	renewAt, expires time.Time
}

// JoinError is the gateway refusing a join or a renewal.
type JoinError struct{ tunnel.HandshakeError }

func (e *JoinError) Error() string {
	return fmt.Sprintf("gateway refused the join: %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// Identity returns the connector's identity: the RFC 7638 thumbprint of its key, as the gateway's logs, metrics and
// audit name it, and as --revoked-connectors lists it.
func (c *Connector) Identity() string { return c.identity }

// gatewayNow is the connector's estimate of the gateway's time, for the proofs it signs: the gateway accepts proofs
// within a minute of its own clock, and says its time in every answer's Date header.
func (c *Connector) gatewayNow() time.Time {
	return time.Now().Add(time.Duration(c.clockOffset.Load()))
}

// learnClock takes the gateway's time from an answer; it returns how much the estimate moved.
func (c *Connector) learnClock(resp *http.Response, sent time.Time) time.Duration {
	d, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return 0
	}
	// Date has a resolution of a second; half a second is its expected error.
	offset := d.Add(500 * time.Millisecond).Sub(sent)
	return offset - time.Duration(c.clockOffset.Swap(int64(offset)))
}

// currentCredential returns a credential to dial with, joining first when there is none or it is due for renewal.
func (c *Connector) currentCredential(ctx context.Context) (*credential, error) {
	c.credMu.Lock()
	cred := c.cred
	c.credMu.Unlock()
	if cred != nil && time.Now().Before(cred.renewAt) {
		return cred, nil
	}
	return c.join(ctx, cred)
}

// dropCredential forgets cred after the gateway refused it (it restarted with another key, say): the next dial
// joins again.
func (c *Connector) dropCredential(cred *credential) {
	c.credMu.Lock()
	defer c.credMu.Unlock()
	if c.cred == cred {
		c.cred = nil
	}
}

// join exchanges the join token for a credential, or renews the credential: the same call. stale is the credential
// the caller found unfit; when another goroutine replaced it meanwhile, that one is returned.
func (c *Connector) join(ctx context.Context, stale *credential) (*credential, error) {
	c.joinMu.Lock()
	defer c.joinMu.Unlock()
	c.credMu.Lock()
	cur := c.cred
	c.credMu.Unlock()
	if cur != nil && cur != stale && time.Now().Before(cur.renewAt) {
		return cur, nil
	}
	token, err := c.cfg.Token()
	if err != nil {
		return nil, fmt.Errorf("failed to read the connector token: %w", err)
	}
	for attempt := 0; ; attempt++ {
		cred, resp, err := c.joinOnce(ctx, token)
		if err == nil {
			c.warnIfJoinTokenEnds(token)
			c.credMu.Lock()
			c.cred = cred
			close(c.credChanged)
			c.credChanged = make(chan struct{})
			c.credMu.Unlock()
			return cred, nil
		}
		var je *JoinError
		// A first proof signed with a clock far from the gateway's fails; the answer's Date corrects it.
		if attempt == 0 && resp != nil && errors.As(err, &je) && je.StatusCode == http.StatusUnauthorized &&
			strings.Contains(je.Message, "proof of possession was issued at") {
			continue
		}
		return nil, err
	}
}

// JoinTokenWarning is how long before its join token expires the connector starts to warn, once a day, that it
// needs a new one: the credentials it gets end with the join token, and so do its tunnels.
const JoinTokenWarning = 7 * 24 * time.Hour

// warnIfJoinTokenEnds warns, at most once a day, when the join token expires within JoinTokenWarning. Called under
// joinMu.
func (c *Connector) warnIfJoinTokenEnds(token string) {
	claims, err := joinTokenClaims(token)
	if err != nil || claims.ExpiresAt == nil {
		return // the gateway took it: whatever it is, it was good enough
	}
	left := claims.ExpiresAt.Sub(c.gatewayNow())
	if left > JoinTokenWarning || (!c.joinTokenWarned.IsZero() && time.Since(c.joinTokenWarned) < 24*time.Hour) {
		return
	}
	c.joinTokenWarned = time.Now()
	c.log.Warn("the join token expires soon: put a new one in the connector's token file before then (warren token connector), or the connector leaves the gateway when it expires",
		"expires", claims.ExpiresAt.UTC().Format(time.RFC3339), "expires_in", left.Round(time.Minute).String(), "join_token", claims.ID)
}

func (c *Connector) joinOnce(ctx context.Context, token string) (*credential, *http.Response, error) {
	sent := time.Now()
	proof, err := auth.NewProof(c.key, http.MethodPost, c.joinURL, token, c.gatewayNow())
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.joinURL, http.NoBody)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set(wire.HeaderProof, proof)
	req.Header.Set(wire.HeaderConnectorName, c.cfg.Name)
	req.Header.Set(wire.HeaderConnectorVersion, c.cfg.Version)
	resp, err := c.dialer.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to join: %w", err)
	}
	defer resp.Body.Close()
	c.learnClock(resp, sent)
	if resp.StatusCode != http.StatusOK {
		return nil, resp, &JoinError{*tunnel.ReadRefusal(resp)}
	}
	var jr wire.JoinResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&jr); err != nil {
		return nil, resp, fmt.Errorf("failed to join: unreadable answer from the gateway: %w", err)
	}
	if jr.Credential == "" || jr.ExpiresIn <= 0 {
		return nil, resp, errors.New("failed to join: the gateway's answer holds no credential")
	}
	if jr.Cluster != c.cluster {
		return nil, resp, fmt.Errorf("failed to join: the gateway admitted this connector for cluster %q, but it serves %q", jr.Cluster, c.cluster)
	}
	if jr.Identity != c.identity {
		return nil, resp, fmt.Errorf("failed to join: the gateway bound the credential to key %s, not this connector's %s", jr.Identity, c.identity)
	}
	renew := time.Duration(jr.RenewIn) * time.Second
	if renew <= 0 || renew > time.Duration(jr.ExpiresIn)*time.Second {
		renew = time.Duration(jr.ExpiresIn) * time.Second * 2 / 3
	}
	cred := &credential{token: jr.Credential, id: jr.CredentialID, renewAt: sent.Add(renew), expires: sent.Add(time.Duration(jr.ExpiresIn) * time.Second)}
	if jr.NewIdentity {
		c.log.Info("joined the gateway as a new connector identity", "identity", c.identity, "credential", jr.CredentialID,
			"expires_in", (time.Duration(jr.ExpiresIn) * time.Second).String())
	} else {
		c.log.Debug("connector credential renewed", "identity", c.identity, "credential", jr.CredentialID,
			"expires_in", (time.Duration(jr.ExpiresIn) * time.Second).String())
	}
	return cred, resp, nil
}

// renewLoop renews the credential at two thirds of its lifetime while Run runs, retrying a failed renewal until the
// credential expires (the tunnels stay up meanwhile); the dial loop joins again after that.
func (c *Connector) renewLoop(ctx context.Context) {
	retry := time.Duration(0)
	for {
		c.credMu.Lock()
		cred, changed := c.cred, c.credChanged
		c.credMu.Unlock()
		var timer *time.Timer
		var due <-chan time.Time
		if cred != nil {
			wait := time.Until(cred.renewAt)
			if retry > 0 {
				wait = retry
			}
			timer = time.NewTimer(wait)
			due = timer.C
		}
		fired := false
		select {
		case <-ctx.Done():
		case <-changed:
			retry = 0
		case <-due:
			fired = true
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
		if !fired {
			continue
		}
		if _, err := c.join(ctx, cred); err != nil {
			if ctx.Err() != nil {
				return
			}
			left := time.Until(cred.expires)
			if left <= 0 {
				c.log.Warn("connector credential expired without renewal: the gateway ends this connector's tunnels; "+describe(err), "err", err)
				c.dropCredential(cred)
				retry = 0
				continue
			}
			// Retry a few times before it expires, never faster than every second nor slower than every 30 s.
			retry = min(max(left/4, time.Second), 30*time.Second)
			retry = retry/2 + time.Duration(mrand.Int64N(int64(retry/2)+1))
			c.log.Warn("cannot renew the connector credential: "+describe(err), "err", err,
				"expires_in", left.Round(time.Second).String(), "retry_in", retry.Round(time.Millisecond).String())
			continue
		}
		retry = 0
	}
}
