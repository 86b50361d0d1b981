package wire

import (
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// Upgrade returns the protocol a request asks to switch to, exactly as net/http/httputil.ReverseProxy decides
// whether to forward it as an upgrade: "" unless a Connection header carries the token "upgrade"; otherwise the
// first Upgrade header line, verbatim. Both proxies on warren's path (gateway and connector) are ReverseProxies,
// which drop Upgrade and Connection as hop-by-hop headers and send on only "Connection: Upgrade" and this value,
// so this is what the API server (and a kubelet behind it) can see as an upgrade. Every decision that depends on
// a request being an upgrade (its verb, whether it is long-lived, whether it may be sent again, how its frames are
// followed) uses this function and nothing else.
func Upgrade(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// IsWebSocket reports whether the forwarded upgrade is a WebSocket, as the API server tells it
// (k8s.io/streaming wsstream.IsWebSocketRequest: the Upgrade value is "websocket", case-insensitively).
func IsWebSocket(h http.Header) bool {
	return strings.EqualFold(Upgrade(h), "websocket")
}

// IsSPDY reports whether the forwarded upgrade is SPDY/3.1, as the API server's SPDY upgrader tells it (the
// Upgrade value contains "spdy/3.1", case-insensitively).
func IsSPDY(h http.Header) bool {
	return strings.Contains(strings.ToLower(Upgrade(h)), "spdy/3.1")
}
