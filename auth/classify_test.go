package auth

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func newReq(method, target string, hdr ...string) *http.Request {
	r := httptest.NewRequest(method, "http://gw"+target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	return r
}

// classifyURL runs Classify the way the gateway does: the path after /clusters/<cluster>.
func classifyURL(t testing.TB, method, target string, hdr ...string) (Attributes, error) {
	r := newReq(method, "/clusters/prod"+target, hdr...)
	return Classify(r, strings.TrimPrefix(r.URL.Path, "/clusters/prod"))
}

func TestClassify(t *testing.T) {
	tests := []struct {
		method, target string
		hdr            []string
		want           Attributes
	}{
		{"GET", "/api/v1/pods", nil, Attributes{Verb: "list", APIVersion: "v1", Resource: "pods"}},
		{"GET", "/api/v1/pods?watch=true", nil, Attributes{Verb: "watch", APIVersion: "v1", Resource: "pods"}},
		{"GET", "/api/v1/watch/pods", nil, Attributes{Verb: "watch", APIVersion: "v1", Resource: "pods"}},
		{"GET", "/api/v1/namespaces/x/pods", nil, Attributes{Verb: "list", APIVersion: "v1", Resource: "pods", Namespace: "x"}},
		{"GET", "/api/v1/namespaces/x/pods/p", nil, Attributes{Verb: "get", APIVersion: "v1", Resource: "pods", Namespace: "x", Name: "p"}},
		{"HEAD", "/api/v1/namespaces/x/pods/p", nil, Attributes{Verb: "get", APIVersion: "v1", Resource: "pods", Namespace: "x", Name: "p"}},
		{"GET", "/api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Dp", nil,
			Attributes{Verb: "list", APIVersion: "v1", Resource: "pods", Namespace: "x", Name: "p"}},
		{"POST", "/api/v1/namespaces/x/pods", nil, Attributes{Verb: "create", APIVersion: "v1", Resource: "pods", Namespace: "x"}},
		{"PUT", "/api/v1/namespaces/x/pods/p", nil, Attributes{Verb: "update", APIVersion: "v1", Resource: "pods", Namespace: "x", Name: "p"}},
		{"PATCH", "/api/v1/namespaces/x/pods/p/status", nil,
			Attributes{Verb: "patch", APIVersion: "v1", Resource: "pods", Subresource: "status", Namespace: "x", Name: "p"}},
		{"DELETE", "/api/v1/namespaces/x/pods/p", nil, Attributes{Verb: "delete", APIVersion: "v1", Resource: "pods", Namespace: "x", Name: "p"}},
		{"DELETE", "/api/v1/namespaces/x/pods", nil, Attributes{Verb: "deletecollection", APIVersion: "v1", Resource: "pods", Namespace: "x"}},
		{"POST", "/api/v1/namespaces/x/pods/p/exec?command=sh", nil,
			Attributes{Verb: "create", APIVersion: "v1", Resource: "pods", Subresource: "exec", Namespace: "x", Name: "p"}},
		{"GET", "/api/v1/namespaces/x/pods/p/exec?command=sh", []string{"Connection", "Upgrade", "Upgrade", "websocket"},
			Attributes{Verb: "create", APIVersion: "v1", Resource: "pods", Subresource: "exec", Namespace: "x", Name: "p", Upgrade: "websocket"}},
		{"GET", "/api/v1/namespaces/x/pods/p/exec", nil, // no upgrade header: still create, never get
			Attributes{Verb: "create", APIVersion: "v1", Resource: "pods", Subresource: "exec", Namespace: "x", Name: "p"}},
		{"GET", "/api/v1/namespaces/x/pods/p/attach", []string{"Upgrade", "WebSocket"},
			Attributes{Verb: "create", APIVersion: "v1", Resource: "pods", Subresource: "attach", Namespace: "x", Name: "p"}},
		{"GET", "/api/v1/namespaces/x/pods/p/portforward", []string{"Upgrade", "websocket"},
			Attributes{Verb: "create", APIVersion: "v1", Resource: "pods", Subresource: "portforward", Namespace: "x", Name: "p"}},
		{"POST", "/api/v1/namespaces/x/pods/p/portforward", []string{"Upgrade", "SPDY/3.1"},
			Attributes{Verb: "create", APIVersion: "v1", Resource: "pods", Subresource: "portforward", Namespace: "x", Name: "p"}},
		{"GET", "/api/v1/namespaces/x/pods/p/log?follow=true", nil,
			Attributes{Verb: "get", APIVersion: "v1", Resource: "pods", Subresource: "log", Namespace: "x", Name: "p"}},
		{"GET", "/api/v1/namespaces/x/pods/p/proxy/metrics", nil,
			Attributes{Verb: "get", APIVersion: "v1", Resource: "pods", Subresource: "proxy", Namespace: "x", Name: "p"}},
		// An upgrade through any proxy subresource is a stream (exec at the kubelet, a raw port): create, as exec.
		{"GET", "/api/v1/namespaces/x/pods/p/proxy/ws", []string{"Connection", "Upgrade", "Upgrade", "websocket"},
			Attributes{Verb: "create", APIVersion: "v1", Resource: "pods", Subresource: "proxy", Namespace: "x", Name: "p", Upgrade: "websocket"}},
		{"GET", "/api/v1/namespaces/x/services/s/proxy/", []string{"Connection", "keep-alive, Upgrade", "Upgrade", "websocket"},
			Attributes{Verb: "create", APIVersion: "v1", Resource: "services", Subresource: "proxy", Namespace: "x", Name: "s", Upgrade: "websocket"}},
		{"GET", "/api/v1/nodes/n1/proxy/exec/x/p/c?command=id", []string{"Connection", "Upgrade", "Upgrade", "websocket"},
			Attributes{Verb: "create", APIVersion: "v1", Resource: "nodes", Subresource: "proxy", Name: "n1", Upgrade: "websocket"}},
		{"POST", "/api/v1/nodes/n1/proxy/exec/x/p/c?command=id", []string{"Connection", "Upgrade", "Upgrade", "SPDY/3.1"},
			Attributes{Verb: "create", APIVersion: "v1", Resource: "nodes", Subresource: "proxy", Name: "n1", Upgrade: "SPDY/3.1"}},
		{"HEAD", "/api/v1/nodes/n1/proxy/exec/x/p/c", []string{"Connection", "upgrade", "Upgrade", "WebSocket"},
			Attributes{Verb: "create", APIVersion: "v1", Resource: "nodes", Subresource: "proxy", Name: "n1", Upgrade: "WebSocket"}},
		{"GET", "/api/v1/nodes/n1/proxy/exec/x/p/c", []string{"Connection", "keep-alive", "Connection", "Upgrade", "Upgrade", "websocket"},
			Attributes{Verb: "create", APIVersion: "v1", Resource: "nodes", Subresource: "proxy", Name: "n1", Upgrade: "websocket"}},
		// What no proxy forwards as an upgrade is none: an Upgrade header without "Connection: upgrade", or the
		// reverse. The plain GET that goes on is classified as such.
		{"GET", "/api/v1/nodes/n1/proxy/pods", []string{"Upgrade", "websocket"},
			Attributes{Verb: "get", APIVersion: "v1", Resource: "nodes", Subresource: "proxy", Name: "n1"}},
		{"GET", "/api/v1/nodes/n1/proxy/pods", []string{"Connection", "Upgrade"},
			Attributes{Verb: "get", APIVersion: "v1", Resource: "nodes", Subresource: "proxy", Name: "n1"}},
		{"POST", "/api/v1/nodes/n1/proxy/run/x/p/c?cmd=id", nil,
			Attributes{Verb: "create", APIVersion: "v1", Resource: "nodes", Subresource: "proxy", Name: "n1"}},
		// A watch over WebSocket stays a watch.
		{"GET", "/api/v1/pods?watch=true", []string{"Connection", "Upgrade", "Upgrade", "websocket"},
			Attributes{Verb: "watch", APIVersion: "v1", Resource: "pods", Upgrade: "websocket"}},
		{"GET", "/api/v1/namespaces/x", nil, Attributes{Verb: "get", APIVersion: "v1", Resource: "namespaces", Namespace: "x", Name: "x"}},
		{"PUT", "/api/v1/namespaces/x/finalize", nil,
			Attributes{Verb: "update", APIVersion: "v1", Resource: "namespaces", Subresource: "finalize", Namespace: "x", Name: "x"}},
		{"GET", "/api/v1/namespaces", nil, Attributes{Verb: "list", APIVersion: "v1", Resource: "namespaces"}},
		{"GET", "/api/v1/nodes/n1", nil, Attributes{Verb: "get", APIVersion: "v1", Resource: "nodes", Name: "n1"}},
		{"GET", "/apis/apps/v1/namespaces/x/deployments/d", nil,
			Attributes{Verb: "get", APIGroup: "apps", APIVersion: "v1", Resource: "deployments", Namespace: "x", Name: "d"}},
		{"PUT", "/apis/apps/v1/namespaces/x/deployments/d/scale", nil,
			Attributes{Verb: "update", APIGroup: "apps", APIVersion: "v1", Resource: "deployments", Subresource: "scale", Namespace: "x", Name: "d"}},
		{"GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:node", nil,
			Attributes{Verb: "get", APIGroup: "rbac.authorization.k8s.io", APIVersion: "v1", Resource: "clusterroles", Name: "system:node"}},
		{"GET", "/version", nil, Attributes{Verb: "get"}},
		{"GET", "/api", nil, Attributes{Verb: "get"}},
		{"GET", "/api/v1", nil, Attributes{Verb: "get"}},
		{"GET", "/apis/apps/v1", nil, Attributes{Verb: "get"}},
		{"GET", "/openapi/v3/apis/apps/v1?hash=abc", nil, Attributes{Verb: "get"}},
		{"POST", "/logs", nil, Attributes{Verb: "post"}},
		{"GET", "/", nil, Attributes{Verb: "get"}},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			got, err := classifyURL(t, tc.method, tc.target, tc.hdr...)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			want.Path, _, _ = strings.Cut(tc.target, "?")
			want.ResourceRequest = want.Resource != ""
			if got != want {
				t.Errorf("Classify:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestClassifyBadPaths(t *testing.T) {
	for _, target := range []string{
		"/api/v1/namespaces/x/pods/../secrets",
		"/api/v1/namespaces/x/./pods",
		"/api/v1//pods",
		"//api/v1/pods",
		"/api/v1/namespaces/x/pods/a%2Fb",
		"/api/v1/namespaces/x/pods/a%2fb",
		"/api/v1/namespaces/x/pods/%2E%2E/exec",
		"/api/v1/namespaces/x/pods/%2e",
		"/api/v1/namespaces/x/pods/a%5Cb",
		"/api/v1/namespaces/x/pods/a%252Fb",
		"/api/v1/namespaces/x/pods/a%00b",
		"/api/v1/watch",
	} {
		t.Run(target, func(t *testing.T) {
			r := &http.Request{Method: "GET", URL: mustURL(t, "/clusters/prod"+target), Header: http.Header{}}
			a, err := Classify(r, strings.TrimPrefix(r.URL.Path, "/clusters/prod"))
			if !errors.Is(err, ErrBadPath) {
				t.Fatalf("Classify = %+v, %v; want ErrBadPath", a, err)
			}
		})
	}
	// A path argument that is not rooted.
	if _, err := Classify(newReq("GET", "/x"), "api/v1/pods"); !errors.Is(err, ErrBadPath) {
		t.Errorf("unrooted path: %v", err)
	}
	// A trailing slash is fine.
	if a, err := Classify(newReq("GET", "/x"), "/api/v1/pods/"); err != nil || a.Verb != "list" || a.Resource != "pods" {
		t.Errorf("trailing slash: %+v %v", a, err)
	}
}
