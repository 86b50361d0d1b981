package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// mutableKeys is a KeySet a test can change under a Verifier, as a key file reload does.
type mutableKeys struct {
	mu   sync.Mutex
	keys map[string]crypto.PublicKey
}

func (m *mutableKeys) Key(kid string) (crypto.PublicKey, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k, ok := m.keys[kid]
	return k, ok
}

// TestCachedTokensAreRecheckedOnEveryUse: a token verified once is not trusted beyond what still holds: expiry,
// revocation and its key's presence are checked on each use.
func TestCachedTokensAreRecheckedOnEveryUse(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	sk, err := NewSigningKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	tok, err := sk.IssueCaller(IssueOptions{Subject: "alice", Clusters: []string{"prod"}, TTL: time.Hour,
		Rules: []Rule{{Verbs: []string{"get"}, Resources: []string{"pods"}}}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	keys := &mutableKeys{keys: map[string]crypto.PublicKey{sk.KeyID: priv.Public()}}
	revoked := map[string]bool{}
	var mu sync.Mutex
	v, err := NewVerifier(VerifierConfig{Keys: keys, Audience: AudienceCaller, Now: clock,
		Revoked: func(jti string) bool { mu.Lock(); defer mu.Unlock(); return revoked[jti] }})
	if err != nil {
		t.Fatal(err)
	}
	first, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	second, err := v.Verify(tok)
	if err != nil || second != first {
		t.Fatalf("second Verify: %v, same claims: %v (want a cache hit)", err, second == first)
	}

	// Revoked after it was cached.
	mu.Lock()
	revoked[first.ID] = true
	mu.Unlock()
	if _, err := v.Verify(tok); !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), "has been revoked") {
		t.Fatalf("revoked cached token: %v", err)
	}
	mu.Lock()
	delete(revoked, first.ID)
	mu.Unlock()

	// Its key rotated out.
	keys.mu.Lock()
	delete(keys.keys, sk.KeyID)
	keys.mu.Unlock()
	if _, err := v.Verify(tok); !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), "unknown key id") {
		t.Fatalf("cached token whose key was removed: %v", err)
	}
	// A different key under the same id.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	keys.mu.Lock()
	keys.keys[sk.KeyID] = other.Public()
	keys.mu.Unlock()
	if _, err := v.Verify(tok); err == nil {
		t.Fatal("cached token accepted after its key id was given another key")
	}
	keys.mu.Lock()
	keys.keys[sk.KeyID] = priv.Public()
	keys.mu.Unlock()

	// Expired since.
	if _, err := v.Verify(tok); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	if _, err := v.Verify(tok); !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), "token expired at") {
		t.Fatalf("expired cached token: %v", err)
	}
}
