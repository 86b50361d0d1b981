package wire

import (
	"net/http"
	"strings"
)

// IdentityHeaders are request headers that assert who a request comes from (or where from) to a server that trusts
// the hop before it. No caller may send them on: the gateway and the connector remove them from every request they
// forward (StripIdentityHeaders). A name ending in "*" is a prefix.
//
//   - X-Remote-User, X-Remote-Group, X-Remote-Uid, X-Remote-Extra-*: kube-apiserver's request-header
//     authentication (--requestheader-username-headers and so on, the names kubeadm and the aggregation layer
//     use). The API server reads them from any client that presents a front-proxy client certificate, so a caller's
//     X-Remote-User: system:admin would be believed whenever the connector authenticates with one.
//   - X-Forwarded-*: what a fronting proxy asserts: X-Forwarded-User, -Groups and -Email of authenticating proxies,
//     X-Forwarded-For, which the API server records as the request's source IPs.
//   - X-Real-Ip and Forwarded (RFC 7239): source addresses, read the same way.
//
// Impersonate-* headers are not here: they are the caller's to send, and each needs an impersonate rule (see
// auth.AuthorizeImpersonation).
var IdentityHeaders = []string{
	"X-Remote-User", "X-Remote-Group", "X-Remote-Uid", "X-Remote-Extra-*",
	"X-Forwarded-*", "X-Real-Ip", "Forwarded",
}

// StripIdentityHeaders deletes from h every header whose name is one of names, or starts with one that ends in
// "*", ignoring case: h may hold keys that are not in canonical form.
func StripIdentityHeaders(h http.Header, names []string) {
	for k := range h {
		if matchesHeaderName(k, names) {
			delete(h, k)
		}
	}
}

func matchesHeaderName(key string, names []string) bool {
	for _, n := range names {
		if prefix, ok := strings.CutSuffix(n, "*"); ok {
			if len(key) >= len(prefix) && strings.EqualFold(key[:len(prefix)], prefix) {
				return true
			}
		} else if strings.EqualFold(key, n) {
			return true
		}
	}
	return false
}

// ValidHeaderPattern reports whether n is a header name, or one followed by "*" (a prefix), as StripIdentityHeaders
// takes them.
func ValidHeaderPattern(n string) bool {
	n = strings.TrimSuffix(n, "*")
	if n == "" {
		return false
	}
	for _, c := range []byte(n) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
