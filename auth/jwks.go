package auth

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
)

// jwk holds the members of a JSON Web Key that warren reads (RFC 7517, 7518, 8037).
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid,omitempty"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	D   string `json:"d,omitempty"` // present only in private keys, which are refused
}

// maxJWKSKeys bounds a key set document.
const maxJWKSKeys = 100

// ParseJWKS parses a JWK Set ({"keys": [...]}) of Ed25519 (OKP), ECDSA (EC P-256/384/521) and RSA public keys. Each
// key is returned under its "kid", or its RFC 7638 thumbprint when it has none. Keys whose "use" is not "sig" are
// skipped; private keys, unknown key types and duplicate key ids are errors.
func ParseJWKS(data []byte) (map[string]crypto.PublicKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("invalid JWKS: %w", err)
	}
	if set.Keys == nil {
		return nil, errors.New(`invalid JWKS: no "keys" member`)
	}
	if len(set.Keys) > maxJWKSKeys {
		return nil, fmt.Errorf("JWKS holds %d keys, more than %d", len(set.Keys), maxJWKSKeys)
	}
	keys := make(map[string]crypto.PublicKey, len(set.Keys))
	for i, raw := range set.Keys {
		var k jwk
		if err := json.Unmarshal(raw, &k); err != nil {
			return nil, fmt.Errorf("JWKS key %d: %w", i, err)
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		pub, err := k.publicKey()
		if err != nil {
			return nil, fmt.Errorf("JWKS key %d: %w", i, err)
		}
		kid := k.Kid
		if kid == "" {
			if kid, err = KeyID(pub); err != nil {
				return nil, fmt.Errorf("JWKS key %d: %w", i, err)
			}
		}
		if _, dup := keys[kid]; dup {
			return nil, fmt.Errorf("JWKS key %d: duplicate key id %q", i, clip(kid))
		}
		keys[kid] = pub
	}
	return keys, nil
}

func (k jwk) publicKey() (crypto.PublicKey, error) {
	if k.D != "" {
		return nil, errors.New("a private key; publish only public keys")
	}
	b := func(s, what string) ([]byte, error) {
		v, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil || len(v) == 0 {
			return nil, fmt.Errorf("invalid %q", what)
		}
		return v, nil
	}
	switch k.Kty {
	case "OKP":
		if k.Crv != "Ed25519" {
			return nil, fmt.Errorf("unsupported OKP curve %q", clip(k.Crv))
		}
		x, err := b(k.X, "x")
		if err != nil {
			return nil, err
		}
		if len(x) != ed25519.PublicKeySize {
			return nil, errors.New(`invalid Ed25519 "x"`)
		}
		return ed25519.PublicKey(x), nil
	case "EC":
		var curve elliptic.Curve
		var ec ecdh.Curve
		switch k.Crv {
		case "P-256":
			curve, ec = elliptic.P256(), ecdh.P256()
		case "P-384":
			curve, ec = elliptic.P384(), ecdh.P384()
		case "P-521":
			curve, ec = elliptic.P521(), ecdh.P521()
		default:
			return nil, fmt.Errorf("unsupported EC curve %q", clip(k.Crv))
		}
		x, err := b(k.X, "x")
		if err != nil {
			return nil, err
		}
		y, err := b(k.Y, "y")
		if err != nil {
			return nil, err
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(x) != size || len(y) != size {
			return nil, errors.New("EC coordinates of the wrong size")
		}
		point := append(append([]byte{4}, x...), y...)
		// ecdh checks the point is on the curve.
		if _, err := ec.NewPublicKey(point); err != nil {
			return nil, errors.New("EC point is not on the curve")
		}
		return &ecdsa.PublicKey{Curve: curve, X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}, nil
	case "RSA":
		n, err := b(k.N, "n")
		if err != nil {
			return nil, err
		}
		e, err := b(k.E, "e")
		if err != nil {
			return nil, err
		}
		if len(e) > 4 {
			return nil, errors.New(`RSA exponent "e" too large`)
		}
		ev := int(new(big.Int).SetBytes(e).Int64())
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: ev}
		if pub.N.BitLen() < 2048 || ev < 3 || ev%2 == 0 {
			return nil, errors.New("RSA key shorter than 2048 bits or with an invalid exponent")
		}
		return pub, nil
	}
	return nil, fmt.Errorf("unsupported key type %q", clip(k.Kty))
}

// MarshalJWKS renders public keys as a JWK Set, each under the given key id (map key).
func MarshalJWKS(keys map[string]crypto.PublicKey) ([]byte, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	set := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	for _, kid := range sortedKeys(keys) {
		k := jwk{Kid: kid, Use: "sig"}
		switch p := keys[kid].(type) {
		case ed25519.PublicKey:
			k.Kty, k.Crv, k.X, k.Alg = "OKP", "Ed25519", b64(p), AlgEdDSA
		case *ecdsa.PublicKey:
			raw, err := p.Bytes()
			if err != nil {
				return nil, err
			}
			n := (len(raw) - 1) / 2
			k.Kty, k.Crv, k.X, k.Y = "EC", p.Curve.Params().Name, b64(raw[1:1+n]), b64(raw[1+n:])
			if p.Curve == elliptic.P256() {
				k.Alg = AlgES256
			}
		case *rsa.PublicKey:
			k.Kty, k.N, k.E, k.Alg = "RSA", b64(p.N.Bytes()), b64(big32(p.E)), AlgRS256
		default:
			return nil, fmt.Errorf("unsupported public key type %T", p)
		}
		set.Keys = append(set.Keys, k)
	}
	return json.Marshal(set)
}
