package gateway

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/sessionend"
	"github.com/warren-dev/warren/internal/streams"
	"github.com/warren-dev/warren/internal/wire"
)

// newStreamRegistry is the gateway's registry of long-running requests by caller token: every check interval it
// asks the caller verifier whether each token with open streams still holds (not revoked, its key still trusted,
// and, with DisconnectExpiredTokens, not expired), and ends the streams of those that do not.
func (g *Gateway) newStreamRegistry() *streams.Registry {
	return streams.New(streams.Config{
		Check:    g.recheckStream,
		Refresh:  g.cfg.CallerVerifier.Refresh,
		Interval: g.cfg.StreamCheckInterval,
		Logger:   g.log,
	})
}

func (g *Gateway) recheckStream(tok streams.Token) error {
	return g.cfg.CallerVerifier.RecheckStream(tok.Claims, g.cfg.DisconnectExpiredTokens)
}

// RecheckStreams re-checks the tokens of all open streams now, as after a SIGHUP reload of the revocation list.
func (g *Gateway) RecheckStreams() { g.streams.CheckNow() }

func streamToken(c *auth.Claims) streams.Token {
	return streams.Token{Key: limitKey(c), ID: c.ID, Expiry: c.Expiry(), Claims: c}
}

// endedByGateway reports whether a stream's context was cancelled by the gateway's own decision (the token no
// longer holds, the maximum stream length): a watch or a follow then ends cleanly rather than breaks.
func endedByGateway(cause error) bool {
	var e *streams.Ended
	return errors.As(cause, &e) || errors.Is(cause, errMaxStreamDuration)
}

// tokenEnd is what the client of an upgraded session is told when its token stopped holding.
func tokenEnd(reason string) *sessionend.End {
	return &sessionend.End{WSCode: sessionend.ClosePolicyViolation, Code: http.StatusUnauthorized, Reason: string(metav1.StatusReasonUnauthorized),
		Message: "warren: " + reason}
}

// lostOrRevoked is why a session the cluster's side ended is over: its token stopped holding (the connector ends
// the streams of a revoked token too, and may notice first), or else the connection to the cluster was lost.
func (g *Gateway) lostOrRevoked(rt *route) *sessionend.End {
	g.cfg.CallerVerifier.Refresh()
	if err := g.recheckStream(streamToken(rt.claims)); err != nil {
		rt.entry.Note("ended: " + err.Error())
		return tokenEnd(err.Error())
	}
	// The connector ends an expired token's streams by its estimate of the gateway's clock, taken from a Date
	// header: up to wire.ClockEstimateError early. Its reason is then the expiry, not a lost connection.
	if exp := rt.claims.Expiry(); g.cfg.DisconnectExpiredTokens && !exp.IsZero() && time.Until(exp) < wire.ClockEstimateError {
		reason := "token expired at " + exp.UTC().Format(time.RFC3339)
		rt.entry.Note("ended: " + reason)
		return tokenEnd(reason)
	}
	return &sessionend.End{WSCode: sessionend.CloseInternalError, Code: http.StatusServiceUnavailable, Reason: string(metav1.StatusReasonServiceUnavailable),
		Message: fmt.Sprintf("warren: the connection to cluster %q was lost", rt.cluster)}
}

// errTokenShare: every tunnel of the cluster already carries the token's share of its streams.
var errTokenShare = errors.New("the token holds its share of every tunnel's streams")

// admit takes one of the token's streams on a tunnel (limit.Config.TokenTunnelShare), or returns ok false.
func (t clusterTransport) admit(cs *connectorSession, rt *route) (release func(), ok bool) {
	if t.limits == nil {
		return func() {}, true
	}
	return t.limits.AcquireTunnel(cs.id, limitKey(rt.claims), cs.tunnel.MaxStreams())
}

// releaseOnClose gives the token's stream on the tunnel back when the response is done with (the body closed;
// for an upgrade, the connection).
func releaseOnClose(resp *http.Response, release func()) {
	if rwc, ok := resp.Body.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body = &releasingConn{ReadWriteCloser: rwc, release: release}
		return
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, release: release}
}

type releasingBody struct {
	io.ReadCloser
	release func()
}

func (b *releasingBody) Close() error {
	defer b.release()
	return b.ReadCloser.Close()
}

// releasingConn keeps the upgraded body an io.ReadWriteCloser, which httputil.ReverseProxy requires of it.
type releasingConn struct {
	io.ReadWriteCloser
	release func()
}

func (c *releasingConn) Close() error {
	defer c.release()
	return c.ReadWriteCloser.Close()
}
