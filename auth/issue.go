package auth

import (
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Audiences and the default issuer of warren tokens.
const (
	// AudienceCaller is the audience of tokens that callers (kubectl, client-go) present to the gateway.
	AudienceCaller = "warren"
	// AudienceConnector is the audience of the token a connector presents when it dials the gateway.
	AudienceConnector = "warren-connector"
	// DefaultIssuer is the "iss" of tokens issued by `warren token`.
	DefaultIssuer = "warren"
)

// ConnectorSubjectPrefix prefixes the cluster name in the subject of connector tokens.
const ConnectorSubjectPrefix = "connector:"

// Claims is the payload of warren tokens: the registered JWT claims plus the "warren" scope.
type Claims struct {
	jwt.RegisteredClaims
	Warren Scope `json:"warren"`
	// KeyID is the "kid" of the key that signed the token, set by Verify (not a claim).
	KeyID string `json:"-"`

	// key is the key that verified the token under KeyID, set by Verify: Recheck asks whether it is still trusted.
	key crypto.PublicKey
}

// Expiry returns when the token expires, the zero time if it has no expiry.
func (c *Claims) Expiry() time.Time {
	if c == nil || c.ExpiresAt == nil {
		return time.Time{}
	}
	return c.ExpiresAt.Time
}

// HasCluster reports whether the token grants access to the named cluster.
func (c *Claims) HasCluster(name string) bool {
	return c != nil && name != "" && slices.Contains(c.Warren.Clusters, name)
}

// IssueOptions describe a caller token.
type IssueOptions struct {
	Issuer   string // default DefaultIssuer
	Subject  string // required: who the token is for; shows in audit logs
	Clusters []string
	// MultiCluster allows several Clusters. A token for several clusters works at each of them, so one leak
	// reaches them all, and gateways refuse it unless configured to accept it (VerifierConfig.AllowMultiCluster).
	MultiCluster bool
	Rules        []Rule
	Groups       []string         // optional: the caller's groups, for connectors that impersonate
	TTL          time.Duration    // required, > 0
	Now          func() time.Time // default time.Now
}

// DefaultIssueOptions returns the defaults of a caller token's settings, for `warren token issue`'s flags: issuer
// DefaultIssuer, a lifetime of 15 minutes.
func DefaultIssueOptions() IssueOptions {
	return IssueOptions{Issuer: DefaultIssuer, TTL: 15 * time.Minute}
}

// IssueCaller signs a caller token (audience "warren") granting Rules on Clusters for TTL.
func (k *SigningKey) IssueCaller(o IssueOptions) (string, error) {
	if strings.TrimSpace(o.Subject) == "" {
		return "", errors.New("a token needs a subject (who it is for, e.g. alice@example.com)")
	}
	if len(o.Clusters) == 0 {
		return "", errors.New("a token needs at least one cluster")
	}
	if len(o.Clusters) > 1 && !o.MultiCluster {
		return "", fmt.Errorf("a token for %d clusters works at each of them, so one leak reaches them all: issue one token per cluster, or ask for several explicitly (MultiCluster, --multi-cluster)", len(o.Clusters))
	}
	for _, c := range o.Clusters {
		if err := ValidateClusterName(c); err != nil {
			return "", err
		}
	}
	if len(o.Rules) == 0 {
		return "", errors.New("a caller token needs at least one rule, e.g. get,list:pods")
	}
	for i, r := range o.Rules {
		if err := r.Validate(); err != nil {
			return "", fmt.Errorf("rule %d: %w", i+1, err)
		}
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	iss := o.Issuer
	if iss == "" {
		iss = DefaultIssuer
	}
	return k.sign(iss, o.Subject, AudienceCaller, Scope{Clusters: o.Clusters, Rules: o.Rules, Groups: o.Groups}, o.TTL, now())
}

// MaxConnectorTokenLifetime is the longest join token a gateway accepts by default, and the lifetime `warren token
// connector` gives one: a year, since a join token only ever buys short-lived credentials bound to a key.
const MaxConnectorTokenLifetime = 8760 * time.Hour

// IssueConnector signs the token of the connector of one cluster: audience "warren-connector", subject
// "connector:<cluster>", warren.clusters [cluster].
func (k *SigningKey) IssueConnector(cluster string, ttl time.Duration, now time.Time) (string, error) {
	if err := ValidateClusterName(cluster); err != nil {
		return "", err
	}
	return k.sign(DefaultIssuer, ConnectorSubjectPrefix+cluster, AudienceConnector, Scope{Clusters: []string{cluster}}, ttl, now)
}

func (k *SigningKey) sign(iss, sub, aud string, scope Scope, ttl time.Duration, now time.Time) (string, error) {
	if k == nil || len(k.Key) == 0 || k.KeyID == "" {
		return "", errors.New("no signing key")
	}
	if ttl <= 0 {
		return "", fmt.Errorf("token lifetime must be positive, got %v", ttl)
	}
	jti, err := newTokenID()
	if err != nil {
		return "", err
	}
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    iss,
			Subject:   sub,
			Audience:  jwt.ClaimStrings{aud},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			ID:        jti,
		},
		Warren: scope,
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = k.KeyID
	s, err := t.SignedString(k.Key)
	if err != nil {
		return "", fmt.Errorf("failed to sign token: %w", err)
	}
	return s, nil
}

// newTokenID returns a random 128-bit hex token id (jti).
func newTokenID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("failed to generate token id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// ValidateClusterName reports whether name can be a cluster name: it appears as one path segment in
// /clusters/<cluster>/, so it must be a non-empty run of letters, digits, '-', '_' and '.' (not "." or "..").
func ValidateClusterName(name string) error {
	if name == "" {
		return errors.New("empty cluster name")
	}
	if len(name) > maxNameLength || name == "." || name == ".." {
		return fmt.Errorf("invalid cluster name %q", clip(name))
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("invalid cluster name %q: use letters, digits, '-', '_' and '.'", clip(name))
		}
	}
	return nil
}
