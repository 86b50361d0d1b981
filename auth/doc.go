// Package auth issues and verifies warren's tokens and decides what a token allows.
//
// Tokens are JWTs signed with Ed25519 (EdDSA); ES256 and RS256 are accepted only when a Verifier is configured for
// them, "none" and HMAC never. The "kid" header names the signing key by its RFC 7638 thumbprint (KeyID). Callers
// present tokens with audience AudienceCaller to the gateway; connectors present a token with audience
// AudienceConnector bound to one cluster. The "warren" claim (Scope) lists the clusters and the RBAC-like Rules of
// a caller.
//
// Authorization follows Kubernetes: Classify derives the request attributes with the API server's own
// RequestInfoFactory (after refusing non-canonical paths), Authorize matches them against rules with RBAC semantics
// and denies by default, and AuthorizeImpersonation checks Impersonate-* headers. A connector's Policy (LoadPolicy)
// is a ceiling in the same rule format.
//
// Key sets: StaticKeys (LoadPublicKeys: PEM or JWKS files), KeyFiles (the same files, reloaded when they change or
// on Reload), RemoteJWKS (a JWKS URL), and KeySets to combine them. RevocationList is a reloading jti deny list for
// VerifierConfig.Revoked. Nothing in the package starts goroutines or reads the environment.
package auth
