package connector

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"time"

	"k8s.io/client-go/rest"

	"github.com/warren-dev/warren/internal/proxybuf"
	"github.com/warren-dev/warren/internal/streams"
	"github.com/warren-dev/warren/internal/wire"
)

type x509UnknownAuthority = x509.UnknownAuthorityError

// newUpstream returns the handler that forwards requests from the tunnel to the API server with the connector's
// own credentials, and the function that closes its idle connections to the API server. Headers named in strip
// (wire.StripIdentityHeaders' form) never reach the API server.
func newUpstream(kc *rest.Config, strip []string, log *slog.Logger) (http.Handler, func(), error) {
	target, _, err := rest.DefaultServerUrlFor(kc)
	if err != nil {
		return nil, nil, fmt.Errorf("API server address: %w", err)
	}
	// Every request, upgrade or not, goes over one HTTP/1.1-only transport with client-go's TLS and credentials:
	// Go refuses an Upgrade header other than websocket over HTTP/2 (SPDY exec would fail), and HTTP/1.1 with large
	// buffers was faster for the rest too (make bench), so client-go's HTTP/2 transport is not used.
	tlsCfg, err := rest.TLSConfigFor(kc)
	if err != nil {
		return nil, nil, fmt.Errorf("API server TLS: %w", err)
	}
	h1 := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   false,
		// HTTP/1.1 keeps one connection per request in flight: keep as many idle as the gateway keeps streams.
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		// The caller's Accept-Encoding passes through; the transport must not add gzip and decode it.
		DisableCompression: true,
		ReadBufferSize:     64 << 10,
		WriteBufferSize:    64 << 10,
	}
	if kc.Proxy != nil {
		h1.Proxy = kc.Proxy
	}
	if kc.Dial != nil {
		h1.DialContext = kc.Dial // as client-go's own transports honour it
	}
	if tlsCfg != nil {
		tlsCfg = tlsCfg.Clone()
		tlsCfg.NextProtos = []string{"http/1.1"}
		h1.TLSClientConfig = tlsCfg
	}
	transport, err := rest.HTTPWrappersForConfig(kc, h1)
	if err != nil {
		return nil, nil, fmt.Errorf("API server credentials: %w", err)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			// client-go's bearer round tripper keeps an Authorization header that is already set: the caller's
			// must go, or it would reach the API server in place of the connector's.
			pr.Out.Header.Del("Authorization")
			// Whatever the gateway let through: identity asserted in headers is the connector's alone to give.
			wire.StripIdentityHeaders(pr.Out.Header, strip)
			wire.StripWarrenHeaders(pr.Out.Header)
		},
		Transport: transport,
		ModifyResponse: func(res *http.Response) error {
			// Warren-* answer headers are the connector's to set (a refusal of its own): none may come from the API
			// server, whose answer the gateway would otherwise take for one.
			wire.StripWarrenHeaders(res.Header)
			return streams.ModifyResponse(res) // watches and follows ended for their token end cleanly
		},
		FlushInterval: -1,
		BufferPool:    proxybuf.New(),
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the gateway side went away
			}
			// r is the outgoing request, whose Warren-* headers Rewrite removed: the id comes from the context.
			requestID, _ := r.Context().Value(requestIDKey{}).(string)
			log.Info("API server unreachable", "request_id", requestID, "err", err)
			wire.WriteStatus(w, http.StatusBadGateway, fmt.Sprintf("connector cannot reach the API server at %s: %v", target.Host, err), 0)
		},
	}
	withID := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, r.Header.Get(wire.HeaderRequestID))))
	})
	return withID, h1.CloseIdleConnections, nil
}

// requestIDKey keys the request's Warren-Request-Id in its context, for the proxy's error handler.
type requestIDKey struct{}
