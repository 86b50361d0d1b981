package auth

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// A connector proves on every request to the gateway's connector endpoints that it holds its private key, with a
// proof of possession in the format of OAuth 2.0 DPoP (RFC 9449): a JWT of type "dpop+jwt", signed with the
// connector's Ed25519 key and carrying the public key in its "jwk" header, whose claims bind it to one request
// (method "htm", URL "htu"), one moment ("iat"), one token ("ath": the SHA-256 of the join token or credential sent
// with it) and one use ("jti", which the gateway remembers while the proof is fresh). A copied token without the key
// is useless; a copied proof is useless for any other request, token, or after its window.
//
// No well-kept Go library implements DPoP; golang-jwt (already used for every other token) does the JWS part.

// ProofType is the "typ" header of a proof of possession (RFC 9449 4.2).
const ProofType = "dpop+jwt"

// MaxProofBytes bounds the size of a proof VerifyProof will parse; a genuine one is about 450 bytes.
const MaxProofBytes = 4 << 10

// ProofClaims are the claims of a proof of possession (RFC 9449 4.2).
type ProofClaims struct {
	ID        string           `json:"jti"`
	Method    string           `json:"htm"`
	URL       string           `json:"htu"`
	IssuedAt  *jwt.NumericDate `json:"iat"`
	TokenHash string           `json:"ath"`
}

// GetExpirationTime and the other methods make ProofClaims a jwt.Claims; VerifyProof checks the time itself.
func (c *ProofClaims) GetExpirationTime() (*jwt.NumericDate, error) { return nil, nil }
func (c *ProofClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.IssuedAt, nil }
func (c *ProofClaims) GetNotBefore() (*jwt.NumericDate, error)      { return nil, nil }
func (c *ProofClaims) GetIssuer() (string, error)                   { return "", nil }
func (c *ProofClaims) GetSubject() (string, error)                  { return "", nil }
func (c *ProofClaims) GetAudience() (jwt.ClaimStrings, error)       { return nil, nil }

// TokenHash is the "ath" of a proof sent with token: base64url (no padding) of its SHA-256.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// NewProof signs a proof of possession with key for a request of method to rawURL (https://HOST/path; query and
// fragment are dropped, as RFC 9449 asks) sent with token, issued at now.
func NewProof(key ed25519.PrivateKey, method, rawURL, token string, now time.Time) (string, error) {
	if len(key) != ed25519.PrivateKeySize {
		return "", errors.New("proof of possession needs an Ed25519 private key")
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("proof of possession: URL %q is not absolute", rawURL)
	}
	u.RawQuery, u.Fragment = "", ""
	jti, err := newTokenID()
	if err != nil {
		return "", err
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, &ProofClaims{
		ID: jti, Method: method, URL: u.String(), IssuedAt: jwt.NewNumericDate(now), TokenHash: TokenHash(token),
	})
	t.Header["typ"] = ProofType
	t.Header["jwk"] = map[string]string{"kty": "OKP", "crv": "Ed25519",
		"x": base64.RawURLEncoding.EncodeToString(key.Public().(ed25519.PublicKey))}
	s, err := t.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("failed to sign the proof of possession: %w", err)
	}
	return s, nil
}

// ProofRequest is what a proof must match: the request as the gateway received it, and the token sent with it.
type ProofRequest struct {
	Method string
	// Host is the request's Host; Path its path (without query). The proof's URL must have this host and a path
	// ending with Path, so that a gateway behind a proxy that strips a path prefix still matches.
	Host, Path string
	Token      string
	// Now is the gateway's time; the proof's iat must be within Window of it, either way.
	Now    time.Time
	Window time.Duration
}

// Proof is a verified proof of possession.
type Proof struct {
	// KeyID is the RFC 7638 thumbprint of the key that signed it: the connector's identity.
	KeyID    string
	ID       string // jti, for the replay cache
	IssuedAt time.Time
}

// VerifyProof checks a proof of possession: an EdDSA JWT of type dpop+jwt signed by the Ed25519 public key in its
// own jwk header (never a private one), for want's method, URL and token, issued within want.Window of want.Now.
// Every error matches ErrInvalidToken and reads as one sentence. Remembering ID against replays is the caller's.
func VerifyProof(proof string, want ProofRequest) (*Proof, error) {
	if proof == "" {
		return nil, invalid(nil, "no proof of possession (DPoP header)")
	}
	if len(proof) > MaxProofBytes {
		return nil, invalid(jwt.ErrTokenMalformed, fmt.Sprintf("malformed proof of possession: longer than %d bytes", MaxProofBytes))
	}
	var pub ed25519.PublicKey
	claims := new(ProofClaims)
	// Strict decoding: one proof has one encoding, so that what the replay cache remembers is the proof itself.
	parser := jwt.NewParser(jwt.WithValidMethods([]string{AlgEdDSA}), jwt.WithoutClaimsValidation(), jwt.WithStrictDecoding())
	tok, err := parser.ParseWithClaims(proof, claims, func(t *jwt.Token) (any, error) {
		if typ, _ := t.Header["typ"].(string); typ != ProofType {
			return nil, invalid(jwt.ErrTokenUnverifiable, fmt.Sprintf("proof of possession has type %q, want %q", clip(typ), ProofType))
		}
		if _, ok := t.Header["crit"]; ok {
			return nil, invalid(jwt.ErrTokenUnverifiable, `malformed proof of possession: header parameter "crit" is not supported`)
		}
		k, err := proofKey(t.Header["jwk"])
		if err != nil {
			return nil, err
		}
		pub = k
		return k, nil
	})
	if err != nil {
		var te *tokenError
		if errors.As(err, &te) {
			return nil, te
		}
		if tok == nil || errors.Is(err, jwt.ErrTokenMalformed) {
			return nil, invalid(err, "malformed proof of possession: want a dpop+jwt JWT signed with the connector's key")
		}
		if alg, _ := tok.Header["alg"].(string); alg != AlgEdDSA {
			return nil, invalid(err, fmt.Sprintf("proof of possession algorithm %q is not allowed: sign it with EdDSA (Ed25519)", clip(alg)))
		}
		return nil, invalid(err, "proof of possession signature is invalid")
	}
	if claims.ID == "" || len(claims.ID) > 128 {
		return nil, invalid(nil, "proof of possession needs an id (jti) of at most 128 bytes")
	}
	if claims.Method != want.Method {
		return nil, invalid(nil, fmt.Sprintf("proof of possession is for method %q, the request is %s", clip(claims.Method), want.Method))
	}
	if err := proofURLMatches(claims.URL, want.Host, want.Path); err != nil {
		return nil, err
	}
	if claims.TokenHash != TokenHash(want.Token) {
		return nil, invalid(nil, "proof of possession is for another token (ath does not match the token sent with it)")
	}
	if claims.IssuedAt == nil {
		return nil, invalid(nil, "proof of possession has no issue time (iat)")
	}
	iat := claims.IssuedAt.Time
	if d := want.Now.Sub(iat); d > want.Window || -d > want.Window {
		return nil, invalid(nil, fmt.Sprintf("proof of possession was issued at %s, more than %v from the gateway's time %s: check the connector's clock",
			iat.UTC().Format(time.RFC3339), want.Window, want.Now.UTC().Format(time.RFC3339)))
	}
	kid, err := KeyID(pub)
	if err != nil {
		return nil, invalid(err, "proof of possession key: "+err.Error())
	}
	return &Proof{KeyID: kid, ID: claims.ID, IssuedAt: iat}, nil
}

// proofKey reads the public key of a proof's jwk header: an Ed25519 OKP key, without private part.
func proofKey(raw any) (ed25519.PublicKey, error) {
	jwk, ok := raw.(map[string]any)
	if !ok {
		return nil, invalid(jwt.ErrTokenUnverifiable, "proof of possession has no public key (jwk header)")
	}
	if _, private := jwk["d"]; private {
		return nil, invalid(jwt.ErrTokenUnverifiable, "proof of possession jwk header holds a private key: never send it")
	}
	kty, _ := jwk["kty"].(string)
	crv, _ := jwk["crv"].(string)
	if kty != "OKP" || crv != "Ed25519" {
		return nil, invalid(jwt.ErrTokenUnverifiable, fmt.Sprintf("proof of possession key is %q/%q, want an Ed25519 key (OKP/Ed25519)", clip(kty), clip(crv)))
	}
	x, _ := jwk["x"].(string)
	b, err := base64.RawURLEncoding.DecodeString(x)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, invalid(jwt.ErrTokenUnverifiable, "proof of possession key: x is not a base64url Ed25519 public key")
	}
	return ed25519.PublicKey(b), nil
}

func proofURLMatches(raw, host, path string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return invalid(nil, fmt.Sprintf("proof of possession URL (htu) %q is not an https URL without query", clip(raw)))
	}
	if !strings.EqualFold(hostWithoutDefaultPort(u.Scheme, u.Host), hostWithoutDefaultPort(u.Scheme, host)) ||
		!strings.HasSuffix(u.Path, path) {
		return invalid(nil, fmt.Sprintf("proof of possession is for %s, not for this request (host %q, path %q)", clip(raw), clip(host), clip(path)))
	}
	return nil
}

func hostWithoutDefaultPort(scheme, hostport string) string {
	h, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		if strings.Contains(h, ":") {
			return "[" + h + "]"
		}
		return h
	}
	return hostport
}
