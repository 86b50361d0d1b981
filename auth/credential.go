package auth

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// A connector credential is what the gateway gives a connector in exchange for its join token (the token of
// `warren token connector`): a short-lived JWT the gateway signs with its own key, bound to the connector's key
// (cnf.jkt, RFC 9449 6.1), to one cluster and to the join token it came from. The connector dials its tunnels with it
// and a fresh proof of possession, and renews it before it expires by presenting its join token again.

const (
	// AudienceConnectorCredential is the audience of connector credentials: only the gateway's /connect accepts them.
	AudienceConnectorCredential = "warren-connector-credential"
	// CredentialType is the "typ" header of connector credentials, so that no other token the gateway signs (such
	// as a per-request assertion) can pass for one.
	CredentialType = "warren-connector-credential+jwt"
	// CredentialIssuer is the "iss" of connector credentials.
	CredentialIssuer = "warren-gateway"
)

// CredentialClaims are the claims of a connector credential.
type CredentialClaims struct {
	jwt.RegisteredClaims
	// Confirmation binds the credential to the connector's key: its RFC 7638 thumbprint, the connector identity.
	Confirmation struct {
		KeyThumbprint string `json:"jkt"`
	} `json:"cnf"`
	// Cluster is the one cluster the connector serves.
	Cluster string `json:"cluster"`
	// Join describes the join token exchanged for the credential, so that a gateway that restarted (with the same
	// key) can still re-check it: revoked, signing key no longer trusted, expired.
	Join JoinRef `json:"join"`
}

// JoinRef identifies a join token: its id, the key id that signed it, and its expiry.
type JoinRef struct {
	ID        string           `json:"jti"`
	KeyID     string           `json:"kid"`
	ExpiresAt *jwt.NumericDate `json:"exp"`
}

// Claims returns the join token's claims as far as the credential records them, for Verifier.Recheck.
func (j JoinRef) Claims(cluster string) *Claims {
	c := &Claims{KeyID: j.KeyID}
	c.ID, c.ExpiresAt = j.ID, j.ExpiresAt
	c.Warren.Clusters = []string{cluster}
	return c
}

// CredentialOptions describe a connector credential.
type CredentialOptions struct {
	Identity string  // the connector key's thumbprint (Proof.KeyID)
	Join     *Claims // the verified join token
	TTL      time.Duration
	Now      time.Time
}

// IssueConnectorCredential signs a connector credential for o.TTL, but never past the join token's expiry. It
// returns the token and its claims.
func (k *SigningKey) IssueConnectorCredential(o CredentialOptions) (string, *CredentialClaims, error) {
	if k == nil || len(k.Key) == 0 || k.KeyID == "" {
		return "", nil, errors.New("no signing key")
	}
	if o.Identity == "" || o.Join == nil || len(o.Join.Warren.Clusters) != 1 || o.Join.ExpiresAt == nil {
		return "", nil, errors.New("a connector credential needs an identity and a verified join token for one cluster")
	}
	if o.TTL <= 0 {
		return "", nil, fmt.Errorf("credential lifetime must be positive, got %v", o.TTL)
	}
	exp := o.Now.Add(o.TTL)
	if j := o.Join.ExpiresAt.Time; j.Before(exp) {
		exp = j
	}
	jti, err := newTokenID()
	if err != nil {
		return "", nil, err
	}
	c := &CredentialClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    CredentialIssuer,
			Subject:   ConnectorSubjectPrefix + o.Join.Warren.Clusters[0],
			Audience:  jwt.ClaimStrings{AudienceConnectorCredential},
			IssuedAt:  jwt.NewNumericDate(o.Now),
			NotBefore: jwt.NewNumericDate(o.Now),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        jti,
		},
		Cluster: o.Join.Warren.Clusters[0],
		Join:    JoinRef{ID: o.Join.ID, KeyID: o.Join.KeyID, ExpiresAt: o.Join.ExpiresAt},
	}
	c.Confirmation.KeyThumbprint = o.Identity
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = k.KeyID
	t.Header["typ"] = CredentialType
	s, err := t.SignedString(k.Key)
	if err != nil {
		return "", nil, fmt.Errorf("failed to sign the connector credential: %w", err)
	}
	return s, c, nil
}

// VerifyConnectorCredential checks a connector credential signed by k (only k: it is the gateway's own) at now:
// type, audience, expiry, and that it names a cluster, an identity and a join token. Every error matches
// ErrInvalidToken and reads as one sentence.
func (k *SigningKey) VerifyConnectorCredential(token string, now time.Time) (*CredentialClaims, error) {
	if token == "" {
		return nil, invalid(nil, "no connector credential")
	}
	if len(token) > MaxTokenBytes {
		return nil, invalid(jwt.ErrTokenMalformed, fmt.Sprintf("malformed connector credential: longer than %d bytes", MaxTokenBytes))
	}
	pub := k.Key.Public().(ed25519.PublicKey)
	c := new(CredentialClaims)
	parser := jwt.NewParser(jwt.WithValidMethods([]string{AlgEdDSA}), jwt.WithExpirationRequired(), jwt.WithStrictDecoding(),
		jwt.WithAudience(AudienceConnectorCredential), jwt.WithIssuer(CredentialIssuer), jwt.WithTimeFunc(func() time.Time { return now }))
	_, err := parser.ParseWithClaims(token, c, func(t *jwt.Token) (any, error) {
		if typ, _ := t.Header["typ"].(string); typ != CredentialType {
			return nil, invalid(jwt.ErrTokenUnverifiable, fmt.Sprintf("token of type %q is not a connector credential", clip(typ)))
		}
		if kid, _ := t.Header["kid"].(string); kid != k.KeyID {
			return nil, invalid(jwt.ErrTokenUnverifiable, fmt.Sprintf("connector credential is signed by key %q, not by this gateway's key %q (the gateway restarted with another key?)", clip(kid), k.KeyID))
		}
		return pub, nil
	})
	if err != nil {
		var te *tokenError
		switch {
		case errors.As(err, &te):
			return nil, te
		case errors.Is(err, jwt.ErrTokenExpired):
			return nil, invalid(err, "connector credential expired at "+stamp(c.ExpiresAt))
		case errors.Is(err, jwt.ErrTokenSignatureInvalid):
			return nil, invalid(err, "connector credential signature is invalid")
		}
		return nil, invalid(err, "connector credential is invalid: "+err.Error())
	}
	if c.Confirmation.KeyThumbprint == "" || ValidateClusterName(c.Cluster) != nil || c.Join.ID == "" || c.Join.ExpiresAt == nil || c.ID == "" {
		return nil, invalid(nil, "malformed connector credential: it must name its key (cnf.jkt), cluster, join token and id")
	}
	return c, nil
}
