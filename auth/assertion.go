package auth

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/warren-dev/warren/internal/wire"
)

// A gateway does not forward the caller's token to the connector that serves a request: a connector (whose own
// credential lives at the customer's) would collect tokens usable at the gateway for other clusters. Instead the
// gateway signs, with a key of its own that connectors pin, an assertion of this exact request: one cluster, one
// tunnel session, the method, path, query, upgrade and impersonation headers, the request id, the caller's identity
// and rules, for at most AssertionLifetime. The connector verifies it (AssertionVerifier), refuses it a second
// time (ReplayCache), and re-checks its rules and the customer's ceiling. Nothing in it works anywhere else.
const (
	// AudienceAssertion is the one audience of an assertion. Caller and connector verifiers require theirs.
	AudienceAssertion = "warren-assertion"
	// AssertionType is an assertion's "typ" header (RFC 8725 3.11 explicit typing). Verifiers of caller and
	// connector tokens refuse it; the assertion verifier requires it.
	AssertionType = "warren-assertion+jwt"
	// AssertionIssuer is the "iss" of assertions.
	AssertionIssuer = "warren-gateway"
	// AssertionLifetime is how long an assertion is valid (exp - iat). A request reaches its connector within
	// milliseconds; the minute covers a loaded gateway, the leeway covers clock skew. Connectors refuse longer.
	AssertionLifetime = time.Minute
	// MaxAssertionBytes bounds an assertion the verifier will parse. It carries the request's path and query
	// (bounded by the gateway's header limit, 64 KiB by default) and the caller's rules (MaxTokenBytes), in base64.
	MaxAssertionBytes = 512 << 10
)

// AssertedRequest is the request an assertion vouches for, exactly as it travels from the gateway to the
// connector. RequestBinding computes it on both sides; they must be equal.
type AssertedRequest struct {
	// ID is the request's id (wire.HeaderRequestID), under which gateway and connector audit it. It is the
	// request's identity for the chain of custody, whatever carries it later.
	ID     string `json:"id"`
	Method string `json:"method"`
	// Path is the escaped path after /clusters/<cluster>, as on the request line.
	Path  string `json:"path"`
	Query string `json:"query,omitempty"`
	// Upgrade is what the request asks to switch to (wire.Upgrade), "" for none.
	Upgrade string `json:"upgrade,omitempty"`
	// Impersonation is ImpersonationDigest of the caller's Impersonate-* headers, "" when there are none: they are
	// authorized by the caller's rules, so they are part of what is vouched for.
	Impersonation string `json:"impersonation,omitempty"`
}

// RequestBinding is the AssertedRequest of r with request id id: the gateway computes it from the request it
// sends to the connector, the connector from the one it received.
func RequestBinding(r *http.Request, id string) AssertedRequest {
	return AssertedRequest{
		ID:            id,
		Method:        r.Method,
		Path:          r.URL.EscapedPath(),
		Query:         r.URL.RawQuery,
		Upgrade:       wire.Upgrade(r.Header),
		Impersonation: ImpersonationDigest(r.Header),
	}
}

// ImpersonationDigest is the hex SHA-256 of the canonical form of h's Impersonate-* headers (keys canonicalized
// and sorted, each key's values in order, JSON-encoded so that no value can pass for two), "" when h has none.
func ImpersonationDigest(h http.Header) string {
	keys := make([]string, 0, 4)
	for k := range h {
		if strings.HasPrefix(http.CanonicalHeaderKey(k), "Impersonate-") {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return ""
	}
	// Sorting the keys as given puts "Impersonate-User" before "impersonate-user", the order in which
	// http.Header.Write sends them and the receiver appends their values under one key.
	sort.Strings(keys)
	merged := make(map[string][]string, len(keys))
	for _, k := range keys {
		ck := http.CanonicalHeaderKey(k)
		merged[ck] = append(merged[ck], h[k]...)
	}
	type field struct {
		Key    string   `json:"k"`
		Values []string `json:"v"`
	}
	fields := make([]field, 0, len(merged))
	for k, v := range merged {
		fields = append(fields, field{Key: k, Values: v})
	}
	sort.Slice(fields, func(i, j int) bool { return fields[i].Key < fields[j].Key })
	data, _ := json.Marshal(fields)
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// AssertedCaller is who made the request, as the gateway verified the caller's token, with the token's rules.
type AssertedCaller struct {
	Issuer  string   `json:"iss"`
	Subject string   `json:"sub"`
	TokenID string   `json:"jti,omitempty"`
	Groups  []string `json:"groups,omitempty"`
	// Expiry is the caller token's own expiry.
	Expiry *jwt.NumericDate `json:"exp"`
	Rules  []Rule           `json:"rules"`
}

// Assertion is the payload of a gateway's assertion. It has no "warren" claim and an audience of its own, so no
// verifier of caller or connector tokens can take it for one.
type Assertion struct {
	jwt.RegisteredClaims
	// Cluster is the one cluster the assertion is for; the caller token's other clusters are not named.
	Cluster string `json:"cluster"`
	// Session is the tunnel the gateway sends the request over: the id the connector gave when it dialled
	// (wire.HeaderTunnelID). Another connector of the same cluster refuses it.
	Session string          `json:"session"`
	Request AssertedRequest `json:"req"`
	Caller  AssertedCaller  `json:"caller"`
}

// AssertionOptions describe what a gateway vouches for.
type AssertionOptions struct {
	Caller  *Claims // the verified caller token
	Cluster string
	Session string
	Request AssertedRequest
	Now     time.Time // default time.Now()
}

// SignAssertion signs an assertion valid for AssertionLifetime, with a fresh random id.
func (k *SigningKey) SignAssertion(o AssertionOptions) (string, error) {
	if k == nil || len(k.Key) == 0 || k.KeyID == "" {
		return "", errors.New("no signing key")
	}
	if o.Caller == nil {
		return "", errors.New("an assertion needs the verified caller")
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	jti, err := newTokenID()
	if err != nil {
		return "", err
	}
	c := o.Caller
	a := Assertion{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    AssertionIssuer,
			Audience:  jwt.ClaimStrings{AudienceAssertion},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(AssertionLifetime)),
			ID:        jti,
		},
		Cluster: o.Cluster,
		Session: o.Session,
		Request: o.Request,
		Caller: AssertedCaller{Issuer: c.Issuer, Subject: c.Subject, TokenID: c.ID, Groups: c.Warren.Groups,
			Expiry: c.ExpiresAt, Rules: c.Warren.Rules},
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, a)
	t.Header["kid"] = k.KeyID
	t.Header["typ"] = AssertionType
	s, err := t.SignedString(k.Key)
	if err != nil {
		return "", fmt.Errorf("failed to sign the assertion: %w", err)
	}
	return s, nil
}

// AssertionVerifierConfig configures an AssertionVerifier.
type AssertionVerifierConfig struct {
	// Keys are the gateway's public keys the connector pins (several during a rotation). Required.
	Keys KeySet
	// Leeway tolerates clock skew between gateway and connector on exp, nbf and iat. Zero means DefaultLeeway;
	// negative means none.
	Leeway time.Duration
	// Now returns the current time; default time.Now.
	Now func() time.Time
}

// AssertionVerifier checks a gateway's assertions: EdDSA signature by a pinned key, typ, audience, issuer, a
// lifetime of at most AssertionLifetime, and the shape of every claim. Safe for concurrent use.
type AssertionVerifier struct {
	v *Verifier
}

// NewAssertionVerifier validates c and returns an AssertionVerifier.
func NewAssertionVerifier(c AssertionVerifierConfig) (*AssertionVerifier, error) {
	v, err := NewVerifier(VerifierConfig{Keys: c.Keys, Audience: AudienceAssertion, Issuer: AssertionIssuer,
		Leeway: c.Leeway, Now: c.Now, Algorithms: []string{AlgEdDSA}})
	if err != nil {
		return nil, err
	}
	v.noun, v.assertion = "assertion", true
	return &AssertionVerifier{v: v}, nil
}

// Leeway is the clock skew the verifier tolerates: an assertion is valid until its exp plus Leeway.
func (av *AssertionVerifier) Leeway() time.Duration { return av.v.leeway }

// Verify checks an assertion's signature and claims and returns them. It does not look at the request: see
// Assertion.Check. Every error matches ErrInvalidToken and reads as one sentence, e.g. `assertion expired at ...`.
func (av *AssertionVerifier) Verify(token string) (*Assertion, error) {
	v := av.v
	if token == "" {
		return nil, invalid(nil, "assertion is empty")
	}
	if len(token) > MaxAssertionBytes {
		return nil, invalid(jwt.ErrTokenMalformed, fmt.Sprintf("malformed assertion: longer than %d bytes", MaxAssertionBytes))
	}
	a := new(Assertion)
	// The pinned keys are files: no lookup waits on the network, so no request context is needed.
	tok, err := v.parser.ParseWithClaims(token, a, func(t *jwt.Token) (any, error) { return v.keyFunc(context.Background(), t) })
	if err != nil {
		return nil, v.explain(tok, &a.RegisteredClaims, err)
	}
	if err := a.validate(); err != nil {
		return nil, err
	}
	return a, nil
}

// validate checks what the parser does not: the lifetime, the id's form, and every claim the connector relies on.
func (a *Assertion) validate() error {
	bad := func(format string, args ...any) error {
		return invalid(nil, "malformed assertion: "+fmt.Sprintf(format, args...))
	}
	if len(a.Audience) != 1 {
		return bad("audience %s must be exactly [%s]", clipList(a.Audience), AudienceAssertion)
	}
	if a.IssuedAt == nil {
		return bad("no issue time (iat claim)")
	}
	if life := a.ExpiresAt.Sub(a.IssuedAt.Time); life > AssertionLifetime {
		return invalid(nil, fmt.Sprintf("assertion lifetime %v exceeds the maximum %v", life, AssertionLifetime))
	}
	if _, err := a.replayKey(); err != nil {
		return bad("%v", err)
	}
	if err := ValidateClusterName(a.Cluster); err != nil {
		return bad("cluster: %v", err)
	}
	if a.Session == "" || len(a.Session) > 64 || !printable(a.Session) {
		return bad("session %q must be a tunnel id", clip(a.Session))
	}
	r := a.Request
	if r.ID == "" || len(r.ID) > 128 || !printable(r.ID) {
		return bad("request id %q", clip(r.ID))
	}
	if r.Method == "" || !strings.HasPrefix(r.Path, "/") {
		return bad("request %q %q", clip(r.Method), clip(r.Path))
	}
	c := a.Caller
	if strings.TrimSpace(c.Subject) == "" {
		return bad("the caller has no subject")
	}
	if c.Expiry == nil {
		return bad("the caller token's expiry is missing")
	}
	for i, rule := range c.Rules {
		if err := rule.Validate(); err != nil {
			return bad("caller.rules[%d]: %v", i, err)
		}
	}
	return nil
}

// replayKey is the assertion's id as a ReplayCache key: SignAssertion's ids are 128 random bits in hex.
func (a *Assertion) replayKey() ([16]byte, error) {
	var k [16]byte
	if len(a.ID) != 32 || strings.ToLower(a.ID) != a.ID {
		return k, fmt.Errorf("id (jti) %q must be 32 lowercase hex digits", clip(a.ID))
	}
	if _, err := hex.Decode(k[:], []byte(a.ID)); err != nil {
		return k, fmt.Errorf("id (jti) %q must be 32 lowercase hex digits", clip(a.ID))
	}
	return k, nil
}

// ErrAssertionMismatch is matched by the errors Check returns: the assertion is genuine but vouches for another
// request, cluster or tunnel.
var ErrAssertionMismatch = errors.New("assertion does not match the request")

// Check reports whether the assertion vouches for exactly this request (RequestBinding of what arrived), on this
// cluster, over this tunnel session. Errors match ErrInvalidToken and ErrAssertionMismatch and say what differs.
func (a *Assertion) Check(cluster, session string, got AssertedRequest) error {
	differ := func(format string, args ...any) error {
		return &mismatchError{msg: fmt.Sprintf(format, args...)}
	}
	want := a.Request
	switch {
	case a.Cluster != cluster:
		return differ("assertion is for cluster %q, this connector serves %q", a.Cluster, cluster)
	case a.Session != session:
		return differ("assertion is for tunnel session %q, not this connector's: it was sent to another connector", clip(a.Session))
	case got.ID != want.ID:
		return differ("the request id is %q, the assertion is for %q", clip(got.ID), clip(want.ID))
	case got.Method != want.Method:
		return differ("the request is a %s, the assertion is for a %s", clip(got.Method), clip(want.Method))
	case got.Path != want.Path:
		return differ("the request path is %q, the assertion is for %q", clip(got.Path), clip(want.Path))
	case got.Query != want.Query:
		return differ("the request query is %q, the assertion is for %q", clip(got.Query), clip(want.Query))
	case got.Upgrade != want.Upgrade:
		return differ("the request upgrades to %q, the assertion is for %q", clip(got.Upgrade), clip(want.Upgrade))
	case got.Impersonation != want.Impersonation:
		return differ("the request's Impersonate-* headers are not those the assertion is for")
	}
	return nil
}

type mismatchError struct{ msg string }

func (e *mismatchError) Error() string { return e.msg }

func (e *mismatchError) Is(target error) bool {
	return target == ErrInvalidToken || target == ErrAssertionMismatch
}

// CallerClaims returns the caller as Claims for Check and impersonation: its identity, its rules, and the one
// cluster of the assertion.
func (a *Assertion) CallerClaims() *Claims {
	c := a.Caller
	return &Claims{
		RegisteredClaims: jwt.RegisteredClaims{Issuer: c.Issuer, Subject: c.Subject, ID: c.TokenID, ExpiresAt: c.Expiry},
		Warren:           Scope{Clusters: []string{a.Cluster}, Rules: c.Rules, Groups: c.Groups},
	}
}

// TrustsKey reports whether the verifier accepts tokens signed by the private half of pub. A gateway's
// assertion key must not also be a caller issuer key: with it, a stolen gateway key would mint caller tokens.
func (v *Verifier) TrustsKey(pub crypto.PublicKey) bool {
	kid, err := KeyID(pub)
	if err != nil {
		return false
	}
	k, ok := v.cfg.Keys.Key(kid)
	if !ok {
		return false
	}
	eq, ok := k.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(pub)
}
