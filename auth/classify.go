package auth

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/endpoints/request"

	"github.com/warren-dev/warren/internal/wire"
)

// Attributes describe a Kubernetes API request the way the API server's authorizers see it.
type Attributes struct {
	// Verb is the Kubernetes verb (get, list, watch, create, update, patch, delete, deletecollection, or proxy) of a
	// resource request, the lowercase HTTP method of a non-resource request.
	Verb        string
	APIGroup    string // "" is the core group
	APIVersion  string
	Resource    string
	Subresource string
	Namespace   string // "" for cluster-scoped and all-namespace requests
	Name        string
	Path        string
	// ResourceRequest is false for non-resource paths such as /version, /apis or /healthz.
	ResourceRequest bool
	// Upgrade is the protocol the request upgrades the connection to (wire.Upgrade: what the proxies forward as an
	// upgrade), "" for none.
	Upgrade string
}

// KubeletPath is the path a nodes/proxy request reaches at the node's kubelet (what follows
// /api/v1/nodes/NAME/proxy, "" for its root), and false for any other request.
func (a Attributes) KubeletPath() (string, bool) {
	if a.APIGroup != "" || a.Resource != "nodes" || a.Subresource != "proxy" {
		return "", false
	}
	_, rest, ok := strings.Cut(a.Path, "/nodes/"+a.Name+"/proxy")
	return rest, ok
}

// CombinedResource is "resource/subresource", or the resource alone.
func (a Attributes) CombinedResource() string {
	if a.Subresource != "" {
		return a.Resource + "/" + a.Subresource
	}
	return a.Resource
}

// requestInfo is configured exactly as kube-apiserver's (genericapiserver.NewRequestInfoResolver).
var requestInfo = &request.RequestInfoFactory{
	APIPrefixes:          sets.NewString("api", "apis"),
	GrouplessAPIPrefixes: sets.NewString("api"),
}

// streamingSubresources are the pod subresources that run a command or open a port. Over WebSocket they are
// GET requests; Kubernetes 1.35+ requires create for them as for SPDY's POST.
var streamingSubresources = map[string]bool{"exec": true, "attach": true, "portforward": true}

// proxySubresource is that of nodes/proxy, pods/proxy and services/proxy: an upgrade through it is a stream to the
// kubelet or to a port of a pod, as exec and port-forward are.
const proxySubresource = "proxy"

// Classify derives the Kubernetes attributes of r for the API path path: the decoded path after the
// /clusters/<cluster> prefix, starting with "/". The method and query (watch=, fieldSelector=) come from r.
//
// It refuses, with an error wrapping ErrBadPath, paths that components could resolve differently: "." and ".."
// segments, empty segments ("//"; one trailing "/" is allowed), backslashes and control characters, and "/" or "."
// percent-encoded in r's escaped path. Any GET, HEAD or POST of pods/exec, pods/attach or pods/portforward has the
// verb create, whatever the Upgrade header says, and so has an upgrade on any proxy subresource (nodes/proxy,
// pods/proxy, services/proxy): a WebSocket or SPDY upgrade must not be authorized as get.
func Classify(r *http.Request, path string) (Attributes, error) {
	if err := checkPath(path); err != nil {
		return Attributes{}, fmt.Errorf("%w %q: %s", ErrBadPath, clip(path), err)
	}
	if r.URL != nil {
		if err := checkEncoded(r.URL.EscapedPath()); err != nil {
			return Attributes{}, fmt.Errorf("%w %q: %s", ErrBadPath, clip(r.URL.EscapedPath()), err)
		}
	}
	u := &url.URL{Path: path}
	if r.URL != nil {
		u.RawQuery = r.URL.RawQuery
	}
	// RequestInfoFactory reads only Method and URL.
	info, err := requestInfo.NewRequestInfo(&http.Request{Method: r.Method, URL: u})
	if err != nil {
		return Attributes{}, fmt.Errorf("%w %q: cannot tell the resource from the path", ErrBadPath, clip(path))
	}
	a := Attributes{
		Verb:            info.Verb,
		APIGroup:        info.APIGroup,
		APIVersion:      info.APIVersion,
		Resource:        info.Resource,
		Subresource:     info.Subresource,
		Namespace:       info.Namespace,
		Name:            info.Name,
		Path:            path,
		ResourceRequest: info.IsResourceRequest,
		Upgrade:         wire.Upgrade(r.Header),
	}
	switch {
	case !a.ResourceRequest:
	case a.APIGroup == "" && a.Resource == "pods" && streamingSubresources[a.Subresource] &&
		(r.Method == http.MethodGet || r.Method == http.MethodHead || a.Upgrade != ""):
		a.Verb = "create"
	case a.Subresource == proxySubresource && a.Upgrade != "":
		a.Verb = "create"
	}
	return a, nil
}

// checkPath refuses decoded paths that are not in canonical form.
func checkPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("path must start with /")
	}
	if len(p) > 8<<10 {
		return fmt.Errorf("path longer than %d bytes", 8<<10)
	}
	segs := strings.Split(p[1:], "/")
	for i, s := range segs {
		switch {
		case s == "" && i == len(segs)-1: // "/" alone, or one trailing slash
		case s == "":
			return fmt.Errorf("empty path segment (//)")
		case s == "." || s == "..":
			return fmt.Errorf("%q segment; send the resolved path", s)
		case strings.ContainsAny(s, `\`):
			return fmt.Errorf("backslash in path")
		case strings.IndexFunc(s, func(c rune) bool { return c < 0x20 || c == 0x7f }) >= 0:
			return fmt.Errorf("control character in path")
		}
	}
	return checkEncoded(p)
}

// checkEncoded refuses %2F and %2E (encoded "/" and ".") and %5C (encoded "\"): a decoding proxy or API server
// could otherwise see other segments than we authorized.
func checkEncoded(p string) error {
	for i := 0; i+2 < len(p); i++ {
		if p[i] != '%' {
			continue
		}
		switch strings.ToLower(p[i+1 : i+3]) {
		case "2f":
			return fmt.Errorf("percent-encoded / in path")
		case "2e":
			return fmt.Errorf("percent-encoded . in path")
		case "5c":
			return fmt.Errorf("percent-encoded \\ in path")
		case "25":
			return fmt.Errorf("percent-encoded %% in path")
		}
	}
	return nil
}
