package connector

import (
	"errors"
	"fmt"
	"time"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/streams"
)

// newStreamRegistry is the connector's own registry of long-running requests by caller token, independent of the
// gateway's: a gateway that keeps a revoked token's exec open cannot keep it open here.
func (c *Connector) newStreamRegistry() *streams.Registry {
	return streams.New(streams.Config{Interval: c.cfg.StreamCheckInterval, Logger: c.log, Check: c.recheck, Refresh: c.cfg.RefreshRevoked})
}

// recheck asks whether the caller token of open streams still holds, on what authorize decided of it from the
// gateway's assertion: its id is not on the connector's revocation list (Revoked) and, with
// DisconnectExpiredTokens, it has not expired (by the gateway's clock, with the assertions' leeway). The messages
// are authorize's refusals'.
func (c *Connector) recheck(tok streams.Token) error {
	if c.cfg.Revoked != nil && tok.ID != "" && c.cfg.Revoked(tok.ID) {
		return fmt.Errorf("the caller's token %q has been revoked", tok.ID)
	}
	if c.cfg.DisconnectExpiredTokens && !tok.Expiry.IsZero() && c.now().After(tok.Expiry.Add(c.assertions.Leeway())) {
		return fmt.Errorf("the caller's token expired at %s", tok.Expiry.UTC().Format(time.RFC3339))
	}
	return nil
}

// callerStreamToken is the registry's view of the caller as authorize decided it.
func callerStreamToken(claims *auth.Claims) streams.Token {
	key := claims.ID
	if key == "" {
		key = claims.Issuer + "\x00" + claims.Subject
	}
	return streams.Token{Key: key, ID: claims.ID, Expiry: claims.Expiry(), Claims: claims}
}

// endedByConnector: a watch or follow the connector ended because its token stopped holding ends cleanly.
func endedByConnector(cause error) bool {
	var e *streams.Ended
	return errors.As(cause, &e)
}
