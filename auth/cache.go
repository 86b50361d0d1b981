package auth

import (
	"context"
	"crypto"
	"crypto/sha256"
	"sync"
)

// maxCachedTokens bounds the verified-token cache: entries hold the parsed claims only (the key is a hash), a few
// hundred bytes each.
const maxCachedTokens = 8192

// verifiedCache remembers tokens that passed every check, so that a caller's requests cost one signature check per
// token rather than one per request (Ed25519 verification dominates a small request's CPU). A hit re-checks what
// can change since: the time (exp, nbf), revocation, and that the signing key is still trusted, so a key rotated
// out of the key files invalidates its tokens at once. Anything doubtful goes through the full check again.
type verifiedCache struct {
	mu      sync.Mutex
	entries map[[sha256.Size]byte]cachedToken
}

type cachedToken struct {
	claims *Claims // shared, never modified
	kid    string
	key    crypto.PublicKey
}

func (c *verifiedCache) get(sum [sha256.Size]byte) (cachedToken, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[sum]
	return e, ok
}

func (c *verifiedCache) put(sum [sha256.Size]byte, e cachedToken) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[[sha256.Size]byte]cachedToken)
	}
	if len(c.entries) >= maxCachedTokens {
		for k := range c.entries { // map order is random: this evicts an arbitrary entry
			delete(c.entries, k)
			break
		}
	}
	c.entries[sum] = e
}

// cached returns the claims of a token verified before, if they still hold now.
func (v *Verifier) cached(ctx context.Context, sum [sha256.Size]byte) (*Claims, bool) {
	e, ok := v.cache.get(sum)
	if !ok {
		return nil, false
	}
	now := v.now()
	c := e.claims
	if c.ExpiresAt == nil || now.After(c.ExpiresAt.Time.Add(v.leeway)) {
		return nil, false
	}
	if c.NotBefore != nil && now.Add(v.leeway).Before(c.NotBefore.Time) {
		return nil, false
	}
	key, ok := keyContext(ctx, v.cfg.Keys, e.kid)
	if !ok {
		return nil, false
	}
	if k, ok := key.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(e.key) {
		return nil, false
	}
	if v.cfg.Revoked != nil && v.cfg.Revoked(c.ID) {
		return nil, false
	}
	return c, true
}
