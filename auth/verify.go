package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Signature algorithms a Verifier can accept. EdDSA (Ed25519) is the default; the others only when listed in
// VerifierConfig.Algorithms. "none" and the HMAC algorithms are never accepted: with public keys they would let anyone
// who holds a public key forge tokens.
const (
	AlgEdDSA = "EdDSA"
	AlgES256 = "ES256"
	AlgRS256 = "RS256"
)

var supportedAlgs = []string{AlgEdDSA, AlgES256, AlgRS256}

const (
	// DefaultLeeway is the clock skew tolerated on exp, nbf and iat when VerifierConfig.Leeway is zero.
	DefaultLeeway = 30 * time.Second
	// MaxTokenBytes bounds the size of a token Verify will parse.
	MaxTokenBytes = 16 << 10
	maxKeyIDBytes = 128
)

// VerifierConfig configures a Verifier. Keys and Audience are required.
type VerifierConfig struct {
	// Keys finds the public key named by a token's "kid" header.
	Keys KeySet
	// Audience the token's "aud" must contain: AudienceCaller or AudienceConnector. For AudienceConnector the token
	// must also name exactly one cluster.
	Audience string
	// Leeway tolerates clock skew on exp, nbf and iat. Zero means DefaultLeeway; negative means none.
	Leeway time.Duration
	// MaxLifetime, if positive, rejects tokens whose exp is more than MaxLifetime after their iat (or nbf).
	MaxLifetime time.Duration
	// Now returns the current time; default time.Now.
	Now func() time.Time

	// Issuer, if set, must equal the token's "iss".
	Issuer string
	// Algorithms allowed in the "alg" header; default [EdDSA]. Only EdDSA, ES256 and RS256 may be listed.
	Algorithms []string
	// Revoked, if set, is asked about the token id (jti) of every otherwise valid token; true rejects the token.
	Revoked func(jti string) bool
	// AllowMultiCluster accepts caller tokens that name several clusters. By default a caller token must name
	// exactly one: a token for several clusters works at each of them, so one leak reaches them all.
	AllowMultiCluster bool
	// Sources are the reloading files behind Keys and Revoked (KeyFiles, RevocationList). Refresh makes them look
	// at their files now, whatever their own check interval. Optional.
	Sources []Refresher
}

// Refresher is a reloading source of keys or revocations. Refresh looks at its files now and reads them again if
// they changed; on error it keeps what it had.
type Refresher interface {
	Refresh() error
}

// Verifier checks tokens: signature by a known key with an allowed algorithm, audience, time claims, and the shape
// of the warren claim. Safe for concurrent use.
type Verifier struct {
	cfg    VerifierConfig
	leeway time.Duration
	now    func() time.Time
	parser *jwt.Parser
	cache  verifiedCache
	// noun names what is verified in error messages: "token", or "assertion" for an AssertionVerifier's.
	noun string
	// assertion is set for an AssertionVerifier's: the "typ" header must then be AssertionType, which every other
	// token must not carry.
	assertion bool
}

// NewVerifier validates c and returns a Verifier.
func NewVerifier(c VerifierConfig) (*Verifier, error) {
	if c.Keys == nil {
		return nil, errors.New("verifier needs a key set")
	}
	if c.Audience == "" {
		return nil, errors.New("verifier needs an audience")
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = []string{AlgEdDSA}
	}
	for _, a := range c.Algorithms {
		if !slices.Contains(supportedAlgs, a) {
			return nil, fmt.Errorf("algorithm %q cannot be allowed; choose from %s", a, strings.Join(supportedAlgs, ", "))
		}
	}
	c.Algorithms = slices.Clone(c.Algorithms)
	v := &Verifier{cfg: c, leeway: c.Leeway, now: c.Now, noun: "token"}
	if v.leeway == 0 {
		v.leeway = DefaultLeeway
	} else if v.leeway < 0 {
		v.leeway = 0
	}
	if v.now == nil {
		v.now = time.Now
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(c.Algorithms),
		jwt.WithAudience(c.Audience),
		jwt.WithLeeway(v.leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(v.now),
	}
	if c.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(c.Issuer))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// Verify checks a token and returns its claims. Every error matches ErrInvalidToken and reads as one sentence for
// the caller, e.g. `token expired at 2026-11-25T10:00:00Z`.
func (v *Verifier) Verify(token string) (*Claims, error) {
	return v.VerifyContext(context.Background(), token)
}

// VerifyContext is Verify for a request: a key fetch it causes (an unknown key id at a JWKS URL) ends with ctx.
func (v *Verifier) VerifyContext(ctx context.Context, token string) (*Claims, error) {
	if token == "" {
		return nil, invalid(nil, "token is empty")
	}
	if len(token) > MaxTokenBytes {
		return nil, invalid(jwt.ErrTokenMalformed, fmt.Sprintf("malformed token: longer than %d bytes", MaxTokenBytes))
	}
	sum := sha256.Sum256([]byte(token))
	if c, ok := v.cached(ctx, sum); ok {
		return c, nil
	}
	claims := new(Claims)
	tok, err := v.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) { return v.keyFunc(ctx, t) })
	if err != nil {
		return nil, v.explain(tok, &claims.RegisteredClaims, err)
	}
	if err := v.checkClaims(claims); err != nil {
		return nil, err
	}
	kid, _ := tok.Header["kid"].(string)
	claims.KeyID = kid
	if key, ok := keyContext(ctx, v.cfg.Keys, kid); ok {
		claims.key = key
		v.cache.put(sum, cachedToken{claims: claims, kid: kid, key: key})
	}
	return claims, nil
}

// Recheck tells whether a token verified earlier still holds now: not expired (with the leeway), its signing key
// (c.KeyID) still trusted, and the very key that verified it when Verify did (a different key put under the same
// id does not keep it alive), its id not revoked. The gateway re-checks live connectors' join tokens with it.
// Errors match ErrInvalidToken and read as one sentence.
func (v *Verifier) Recheck(c *Claims) error { return v.recheck(c, true, true) }

// RecheckStream is Recheck for the token of an open stream (exec, port-forward, watch, logs -f): expiry only when
// expiry is set (--disconnect-expired-tokens), and the key only when the claims name one, so that claims a
// connector took from elsewhere than a token it verified are still checked for revocation. The gateway and the
// connector call it on every token with open streams once per check interval; it checks no signature. Call
// Refresh first to see file changes at once.
func (v *Verifier) RecheckStream(c *Claims, expiry bool) error {
	return v.recheck(c, expiry, c != nil && c.KeyID != "")
}

func (v *Verifier) recheck(c *Claims, expiry, key bool) error {
	if c == nil {
		return invalid(nil, "no token")
	}
	if expiry && (c.ExpiresAt == nil || v.now().After(c.ExpiresAt.Time.Add(v.leeway))) {
		return invalid(jwt.ErrTokenExpired, "token expired at "+stamp(c.ExpiresAt))
	}
	if key {
		k, ok := v.cfg.Keys.Key(c.KeyID)
		if eq, comparable := k.(interface{ Equal(crypto.PublicKey) bool }); !ok || (c.key != nil && (!comparable || !eq.Equal(c.key))) {
			return invalid(ErrUntrustedKey, fmt.Sprintf("token is signed by key id %q, which is no longer trusted", clip(c.KeyID)))
		}
	}
	if v.Revoked(c.ID) {
		return invalid(ErrRevoked, fmt.Sprintf("token %q has been revoked", clip(c.ID)))
	}
	return nil
}

// Revoked reports whether id is on the verifier's revocation list (VerifierConfig.Revoked); false without one.
// Besides token ids, the gateway looks connector identities up in the connectors' list.
func (v *Verifier) Revoked(id string) bool {
	return v.cfg.Revoked != nil && v.cfg.Revoked(id)
}

// Refresh makes the reloading sources (VerifierConfig.Sources) look at their files now, and returns the first error.
func (v *Verifier) Refresh() error {
	var first error
	for _, s := range v.cfg.Sources {
		if err := s.Refresh(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// keyFunc runs after the algorithm passed the allowlist and before the signature is checked.
func (v *Verifier) keyFunc(ctx context.Context, t *jwt.Token) (any, error) {
	n := v.noun
	if _, ok := t.Header["crit"]; ok {
		// RFC 7515 4.1.11: a recipient must reject critical extensions it does not understand; we understand none.
		return nil, invalid(jwt.ErrTokenUnverifiable, `malformed `+n+`: header parameter "crit" is not supported`)
	}
	// Explicit typing (RFC 8725 3.11): a gateway's assertion can never pass for a caller or connector token, nor
	// the reverse, whatever keys the two verifiers share.
	typ, _ := t.Header["typ"].(string)
	switch {
	case v.assertion && typ != AssertionType:
		return nil, invalid(jwt.ErrTokenUnverifiable, fmt.Sprintf("not a gateway assertion: its typ header is %q, want %q", clip(typ), AssertionType))
	case !v.assertion && strings.EqualFold(typ, AssertionType):
		return nil, invalid(jwt.ErrTokenUnverifiable, "this is a gateway's assertion, not a token: assertions are good only between a gateway and a connector, for one request")
	}
	raw, ok := t.Header["kid"]
	if !ok {
		return nil, invalid(jwt.ErrTokenUnverifiable, n+" has no key id (kid header)")
	}
	kid, ok := raw.(string)
	if !ok || kid == "" {
		return nil, invalid(jwt.ErrTokenUnverifiable, "malformed "+n+": key id (kid header) must be a non-empty string")
	}
	if len(kid) > maxKeyIDBytes || !printable(kid) {
		return nil, invalid(jwt.ErrTokenUnverifiable, fmt.Sprintf("%s is signed by unknown key id %q", n, clip(kid)))
	}
	key, ok := keyContext(ctx, v.cfg.Keys, kid)
	if !ok {
		return nil, invalid(ErrUntrustedKey, fmt.Sprintf("%s is signed by unknown key id %q", n, kid))
	}
	alg := t.Method.Alg()
	if !keyFitsAlg(key, alg) {
		return nil, invalid(jwt.ErrTokenUnverifiable, fmt.Sprintf("%s algorithm %q does not match key %q", n, alg, kid))
	}
	return key, nil
}

func keyFitsAlg(key crypto.PublicKey, alg string) bool {
	switch k := key.(type) {
	case ed25519.PublicKey:
		return alg == AlgEdDSA
	case *ecdsa.PublicKey:
		return alg == AlgES256 && k.Curve == elliptic.P256()
	case *rsa.PublicKey:
		return alg == AlgRS256 && k.N.BitLen() >= 2048
	}
	return false
}

// explain turns a jwt/v5 error into one sentence. Claims errors are only reported for tokens whose signature
// verified: jwt/v5 validates claims after the signature.
func (v *Verifier) explain(tok *jwt.Token, c *jwt.RegisteredClaims, err error) error {
	n := v.noun
	var te *tokenError
	if errors.As(err, &te) {
		return te
	}
	if tok == nil {
		return invalid(err, "malformed "+n+": want three base64url parts separated by dots")
	}
	// The algorithm first: a token with alg "none" or HS256 gets exactly that answer.
	alg, ok := tok.Header["alg"].(string)
	if errors.Is(err, jwt.ErrTokenMalformed) {
		return invalid(err, "malformed "+n+": "+strings.TrimPrefix(err.Error(), jwt.ErrTokenMalformed.Error()+": "))
	}
	if !ok {
		return invalid(err, "malformed "+n+": header has no algorithm (alg)")
	}
	if !slices.Contains(v.cfg.Algorithms, alg) {
		return invalid(err, fmt.Sprintf("%s algorithm %q is not allowed", n, clip(alg)))
	}
	if errors.Is(err, jwt.ErrTokenSignatureInvalid) {
		return invalid(err, n+" signature is invalid")
	}
	// Claims: the signature is good. Report the most useful problem first.
	switch {
	case c.ExpiresAt == nil && errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return invalid(err, n+" has no expiry (exp claim)")
	case errors.Is(err, jwt.ErrTokenExpired):
		return invalid(err, n+" expired at "+stamp(c.ExpiresAt))
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return invalid(err, n+" not valid before "+stamp(c.NotBefore))
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return invalid(err, n+" issued in the future, at "+stamp(c.IssuedAt))
	case len(c.Audience) == 0 && errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return invalid(err, fmt.Sprintf("%s has no audience; it must include %q", n, v.cfg.Audience))
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return invalid(err, fmt.Sprintf("%s audience %s does not include %q", n, clipList(c.Audience), v.cfg.Audience))
	case errors.Is(err, jwt.ErrTokenInvalidIssuer), v.cfg.Issuer != "" && c.Issuer == "":
		return invalid(err, fmt.Sprintf("%s issuer %q is not trusted (want %q)", n, clip(c.Issuer), v.cfg.Issuer))
	case errors.Is(err, jwt.ErrInvalidType):
		return invalid(err, "malformed "+n+": "+err.Error())
	}
	return invalid(err, n+" is invalid")
}

// checkClaims applies warren's rules on top of the registered claims.
func (v *Verifier) checkClaims(c *Claims) error {
	if v.cfg.MaxLifetime > 0 {
		start := c.IssuedAt
		if start == nil {
			start = c.NotBefore
		}
		if start == nil {
			return invalid(nil, "token has no issue time (iat claim), required to check its lifetime")
		}
		if life := c.ExpiresAt.Sub(start.Time); life > v.cfg.MaxLifetime {
			return invalid(nil, fmt.Sprintf("token lifetime %v exceeds the maximum %v", life, v.cfg.MaxLifetime))
		}
	}
	// A token meant for both roles would let a connector's token call the API or the reverse.
	if slices.Contains(c.Audience, AudienceCaller) && slices.Contains(c.Audience, AudienceConnector) {
		return invalid(nil, fmt.Sprintf("token audience %s mixes %q and %q", clipList(c.Audience), AudienceCaller, AudienceConnector))
	}
	if len(c.Warren.Clusters) == 0 {
		return invalid(nil, "token grants no clusters (warren.clusters is empty)")
	}
	for _, name := range c.Warren.Clusters {
		if err := ValidateClusterName(name); err != nil {
			return invalid(nil, "malformed token: warren.clusters: "+err.Error())
		}
	}
	if v.cfg.Audience == AudienceCaller && len(c.Warren.Clusters) > 1 && !v.cfg.AllowMultiCluster {
		return invalid(nil, fmt.Sprintf("token names %d clusters %s; this gateway accepts caller tokens for one cluster only: issue one token per cluster, or start the gateway with --allow-multi-cluster-tokens",
			len(c.Warren.Clusters), clipList(c.Warren.Clusters)))
	}
	if v.cfg.Audience == AudienceConnector {
		if len(c.Warren.Clusters) != 1 {
			return invalid(nil, fmt.Sprintf("connector token must name exactly one cluster, it names %d", len(c.Warren.Clusters)))
		}
		if len(c.Warren.Rules) != 0 {
			return invalid(nil, "connector token must not carry rules")
		}
	}
	for i, r := range c.Warren.Rules {
		if err := r.Validate(); err != nil {
			return invalid(nil, fmt.Sprintf("malformed token: warren.rules[%d]: %v", i, err))
		}
		if r.PodSpec != nil {
			return invalid(nil, fmt.Sprintf("malformed token: warren.rules[%d]: a podSpec belongs in a connector's ceiling, not in a token", i))
		}
	}
	if v.cfg.Revoked != nil && c.ID == "" {
		return invalid(nil, "token has no id (jti claim), required to check revocation")
	}
	if v.cfg.Revoked != nil && v.cfg.Revoked(c.ID) {
		return invalid(ErrRevoked, fmt.Sprintf("token %q has been revoked", clip(c.ID)))
	}
	return nil
}

func stamp(d *jwt.NumericDate) string {
	if d == nil {
		return "(unknown)"
	}
	return d.UTC().Format(time.RFC3339)
}

// clipList formats a claim list like fmt's %v, bounded for hostile tokens.
func clipList(l []string) string {
	const max = 8
	out := make([]string, 0, min(len(l), max+1))
	for i, s := range l {
		if i == max {
			out = append(out, fmt.Sprintf("...(%d more)", len(l)-max))
			break
		}
		out = append(out, clip(s))
	}
	return "[" + strings.Join(out, " ") + "]"
}
