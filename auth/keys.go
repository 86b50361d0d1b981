package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sort"
)

// File names written by GenerateKeyPair.
const (
	SigningKeyFile = "signing.key"
	PublicKeyFile  = "signing.pub"
)

// SigningKey is an issuer's private key and the key id (RFC 7638 thumbprint of its public key) put in the "kid"
// header of every token it signs.
type SigningKey struct {
	Key   ed25519.PrivateKey
	KeyID string
}

// NewSigningKey wraps an Ed25519 private key, computing its key id.
func NewSigningKey(key ed25519.PrivateKey) (*SigningKey, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("invalid Ed25519 private key")
	}
	kid, err := KeyID(key.Public())
	if err != nil {
		return nil, err
	}
	return &SigningKey{Key: key, KeyID: kid}, nil
}

// GenerateKeyPair writes a new Ed25519 key pair: DIR/signing.key (PKCS#8 PEM, mode 0600) and DIR/signing.pub (PKIX
// PEM, mode 0644), creating DIR (mode 0700) if needed. It never overwrites an existing key. It returns the key id.
func GenerateKeyPair(dir string) (kid string, err error) {
	keyPath := filepath.Join(dir, SigningKeyFile)
	pubPath := filepath.Join(dir, PublicKeyFile)
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return "", fmt.Errorf("%s already exists; refusing to overwrite a key (choose another directory or remove it)", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("failed to check %s: %w", p, err)
		}
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("failed to generate key: %w", err)
	}
	kid, err = KeyID(pub)
	if err != nil {
		return "", err
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", fmt.Errorf("failed to encode private key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("failed to encode public key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("failed to create key directory: %w", err)
	}
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600); err != nil {
		return "", err
	}
	if err := writeNew(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		os.Remove(keyPath) // a private key without its public half is only confusing
		return "", err
	}
	return kid, nil
}

// writeNew creates path exclusively (O_EXCL: never follows or replaces an existing file) with exactly mode perm.
func writeNew(path string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists; refusing to overwrite a key (choose another directory or remove it)", path)
		}
		return fmt.Errorf("failed to write key: %w", err)
	}
	// The umask may have narrowed perm; the public key should be readable as documented.
	if err := f.Chmod(perm); err == nil {
		_, err = f.Write(data)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}

// LoadSigningKey reads an Ed25519 private key in PKCS#8 PEM ("PRIVATE KEY"), as written by GenerateKeyPair.
func LoadSigningKey(path string) (*SigningKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("signing key %s does not exist; create one with `warren keygen --out DIR`", path)
		}
		return nil, fmt.Errorf("failed to read signing key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("signing key %s is not PEM; want a PKCS#8 \"PRIVATE KEY\" as written by `warren keygen`", path)
	}
	if block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("signing key %s holds a %q block; want a PKCS#8 \"PRIVATE KEY\" as written by `warren keygen`", path, block.Type)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	ed, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s is a %T; warren signs with Ed25519 keys (`warren keygen`)", path, key)
	}
	return NewSigningKey(ed)
}

// KeyID returns the RFC 7638 JWK thumbprint (SHA-256, base64url without padding) of an Ed25519, ECDSA (P-256, P-384,
// P-521) or RSA public key. It is the "kid" of tokens signed by the matching private key.
func KeyID(pub crypto.PublicKey) (string, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	var canonical string
	// The thumbprint input is the JSON of the required members only, in lexicographic order, without whitespace.
	switch k := pub.(type) {
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return "", errors.New("invalid Ed25519 public key")
		}
		canonical = fmt.Sprintf(`{"crv":"Ed25519","kty":"OKP","x":"%s"}`, b64(k))
	case *ecdsa.PublicKey:
		var crv string
		switch k.Curve {
		case elliptic.P256():
			crv = "P-256"
		case elliptic.P384():
			crv = "P-384"
		case elliptic.P521():
			crv = "P-521"
		default:
			return "", errors.New("unsupported ECDSA curve")
		}
		raw, err := k.Bytes() // uncompressed point 0x04 || X || Y, coordinates padded to the field size
		if err != nil {
			return "", fmt.Errorf("invalid ECDSA public key: %w", err)
		}
		n := (len(raw) - 1) / 2
		canonical = fmt.Sprintf(`{"crv":"%s","kty":"EC","x":"%s","y":"%s"}`, crv, b64(raw[1:1+n]), b64(raw[1+n:]))
	case *rsa.PublicKey:
		if k.N == nil || k.E <= 0 {
			return "", errors.New("invalid RSA public key")
		}
		e := big32(k.E)
		canonical = fmt.Sprintf(`{"e":"%s","kty":"RSA","n":"%s"}`, b64(e), b64(k.N.Bytes()))
	default:
		return "", fmt.Errorf("unsupported public key type %T", pub)
	}
	sum := sha256.Sum256([]byte(canonical))
	return b64(sum[:]), nil
}

// big32 is the minimal big-endian encoding of a positive int.
func big32(v int) []byte {
	var b []byte
	for ; v > 0; v >>= 8 {
		b = append([]byte{byte(v)}, b...)
	}
	return b
}

// KeySet finds the public key that verifies a token by the token's "kid" header. Implementations must be safe for
// concurrent use; a reloading implementation may change its answers between calls.
type KeySet interface {
	Key(kid string) (crypto.PublicKey, bool)
}

// ContextKeySet is a KeySet whose lookups may fetch keys (RemoteJWKS): KeyContext bounds such a fetch by ctx, so
// that it ends with the request that caused it.
type ContextKeySet interface {
	KeySet
	KeyContext(ctx context.Context, kid string) (crypto.PublicKey, bool)
}

// keyContext looks kid up in ks, passing ctx on when ks takes one.
func keyContext(ctx context.Context, ks KeySet, kid string) (crypto.PublicKey, bool) {
	if c, ok := ks.(ContextKeySet); ok {
		return c.KeyContext(ctx, kid)
	}
	return ks.Key(kid)
}

// StaticKeys is a fixed KeySet, each key under its RFC 7638 key id. Safe for concurrent use once built.
type StaticKeys struct {
	keys map[string]crypto.PublicKey
}

// NewStaticKeys builds a KeySet from public keys, each under its KeyID.
func NewStaticKeys(pubs ...crypto.PublicKey) (*StaticKeys, error) {
	s := &StaticKeys{keys: make(map[string]crypto.PublicKey, len(pubs))}
	for _, p := range pubs {
		kid, err := KeyID(p)
		if err != nil {
			return nil, err
		}
		s.keys[kid] = p
	}
	return s, nil
}

// Key implements KeySet.
func (s *StaticKeys) Key(kid string) (crypto.PublicKey, bool) {
	if s == nil {
		return nil, false
	}
	k, ok := s.keys[kid]
	return k, ok
}

// KeyIDs returns the ids of the keys in the set, sorted.
func (s *StaticKeys) KeyIDs() []string {
	return sortedKeys(s.keys)
}

func sortedKeys[V any](m map[string]V) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// LoadPublicKeys reads public key files: PEM files of PKIX public keys ("PUBLIC KEY" blocks; a file may hold
// several), such as the signing.pub written by GenerateKeyPair, each key stored under its KeyID; or JWKS files (a
// JSON object with "keys"), each key stored under its "kid" (its KeyID if it has none).
func LoadPublicKeys(paths ...string) (*StaticKeys, error) {
	if len(paths) == 0 {
		return nil, errors.New("no public key files given")
	}
	s := &StaticKeys{keys: map[string]crypto.PublicKey{}}
	for _, p := range paths {
		ks, err := readKeyFile(p)
		if err != nil {
			return nil, err
		}
		maps.Copy(s.keys, ks)
	}
	return s, nil
}

func readKeyFile(path string) (map[string]crypto.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("public key file %s does not exist; copy the issuer's signing.pub (from `warren keygen --out DIR`) there", path)
		}
		return nil, fmt.Errorf("failed to read public key file: %w", err)
	}
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		keys, err := ParseJWKS(data)
		if err != nil {
			return nil, fmt.Errorf("public key file %s: %w", path, err)
		}
		return keys, nil
	}
	keys := map[string]crypto.PublicKey{}
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("public key file %s holds a %q block; want PKIX \"PUBLIC KEY\" blocks such as signing.pub from `warren keygen`", path, block.Type)
		}
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key file %s: %w", path, err)
		}
		kid, err := KeyID(k)
		if err != nil {
			return nil, fmt.Errorf("public key file %s: %w", path, err)
		}
		keys[kid] = k
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("public key file %s holds no PEM \"PUBLIC KEY\" block; want signing.pub from `warren keygen`", path)
	}
	return keys, nil
}
