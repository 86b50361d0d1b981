package auth

import (
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/warren-dev/warren/internal/wire"
)

// Long-running requests as kube-apiserver counts them (k8s.io/kubernetes pkg/controlplane/apiserver/config.go:
// filters.BasicLongRunningRequestCheck with these verbs and subresources, plus /debug/pprof/): the requests it
// exempts from its request timeout and its max-in-flight limits because they may last as long as the caller wants.
// Written out rather than imported: k8s.io/apiserver/pkg/server/filters would take auth from 295 to 818 packages.
var (
	longRunningVerbs        = map[string]bool{"watch": true, "proxy": true}
	longRunningSubresources = map[string]bool{"attach": true, "exec": true, "proxy": true, "log": true, "portforward": true}
)

// LongRunning reports whether r may hold its stream for as long as the caller or the server wants: what
// kube-apiserver calls long-running (a watch, any verb proxy, the subresources attach, exec, proxy, log and
// portforward, /debug/pprof/), and any request the proxies forward as an upgrade. A log counts whether it follows or
// not, as at the API server: a log without follow still streams the whole file. The decision rests on the
// Kubernetes attributes (Classify), so every spelling of watch= that the API server honours counts (RequestInfo
// decodes it as the API server does).
func LongRunning(r *http.Request, a Attributes) bool {
	if wire.Upgrade(r.Header) != "" || longRunningVerbs[a.Verb] {
		return true
	}
	if a.ResourceRequest {
		return longRunningSubresources[a.Subresource]
	}
	return strings.HasPrefix(a.Path, "/debug/pprof/")
}

// Follows reports whether r streams until the server or the caller ends it, rather than towards an end of its own:
// a watch, or a pod log with follow. Only such a response may be ended by warren with a clean end of body; any other
// response cut short must look cut, or its reader would take a truncated log for the whole file.
//
// follow is decoded as the API server decodes a boolean query parameter (runtime.Convert_Slice_string_To_bool,
// which the generated conversion of PodLogOptions calls): the first value, false only for "0" and "false" in any
// case; an empty value (follow=) is true.
func Follows(r *http.Request, a Attributes) bool {
	if a.Verb == "watch" {
		return true
	}
	if !a.ResourceRequest || a.Resource != "pods" || a.Subresource != "log" || r.URL == nil {
		return false
	}
	values, present := r.URL.Query()["follow"]
	if !present {
		return false
	}
	var follow bool
	if err := runtime.Convert_Slice_string_To_bool(&values, &follow, nil); err != nil {
		return true // cannot happen (the conversion has no failure); if it did, assume the longer stream
	}
	return follow
}
