package auth

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func FuzzVerify(f *testing.F) {
	is := newIssuer(f)
	good := is.caller(f, nil)
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add(strings.Replace(good, ".", "..", 1))
	v := verifierAt(f, is.keys, AudienceCaller, t0, nil)
	vc := verifierAt(f, is.keys, AudienceConnector, t0, func(c *VerifierConfig) { c.MaxLifetime = time.Hour })
	f.Fuzz(func(t *testing.T, tok string) {
		for _, v := range []*Verifier{v, vc} {
			c, err := v.Verify(tok)
			if tok == good && v == vc && err == nil {
				t.Fatal("caller token verified as connector token")
			}
			if tok == good && v != vc {
				continue // the one genuine token
			}
			if err == nil || c != nil {
				t.Fatalf("forged token %q verified: %+v", tok, c)
			}
			if len(err.Error()) > 400 {
				t.Fatalf("error too long: %d bytes", len(err.Error()))
			}
		}
	})
}

func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"get,list:pods", "create:pods/exec:payments:api-1", "*:*", "get:deployments.apps/scale:a,b:x",
		"get:clusterroles.rbac.authorization.k8s.io::system:node", "::::", "get:pods.:x", "get:*/scale"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "rule ") {
				t.Fatalf("error without context: %v", err)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("ParseRule(%q) returned an invalid rule %+v: %v", s, r, err)
		}
		if len(r.Verbs) == 0 || len(r.Resources) == 0 || len(r.APIGroups) != 1 {
			t.Fatalf("ParseRule(%q) = %+v", s, r)
		}
	})
}

// FuzzClassify feeds arbitrary methods, paths, queries and Connection/Upgrade headers through Classify and
// Authorize: no panic, canonical paths only, a request with no rules is only ever allowed for discovery, an upgrade
// through a proxy subresource is never a read, and no wildcard reaches a NamedOnly resource.
func FuzzClassify(f *testing.F) {
	for _, s := range [][5]string{
		{"GET", "/api/v1/namespaces/x/pods/p", "", "", ""},
		{"GET", "/api/v1/pods", "watch=true&fieldSelector=metadata.name%3Dp", "", ""},
		{"POST", "/api/v1/namespaces/x/pods/p/exec", "command=sh", "", ""},
		{"GET", "/apis/apps/v1/namespaces/x/deployments/d/scale", "", "", ""},
		{"DELETE", "/api/v1/namespaces/x/pods", "labelSelector=a%3Db", "", ""},
		{"GET", "/api/v1/watch/namespaces/x/pods", "", "", ""},
		{"GET", "/api/v1/namespaces/x/pods/../secrets", "", "", ""},
		{"GET", "/version", "", "", ""},
		{"GET", "/openapi/v3", "", "", ""},
		{"PUT", "/api/v1/namespaces/x/finalize", "", "", ""},
		{"GET", "/api/v1/nodes/n/proxy/exec/x/p/c", "command=id", "keep-alive, Upgrade", "websocket"},
		{"POST", "/api/v1/namespaces/x/pods/p/proxy/", "", "upgrade", "SPDY/3.1"},
		{"PATCH", "/api/v1/namespaces/x/pods/p/ephemeralcontainers", "", "", ""},
		{"DELETE", "/api/v1/namespaces/x", "", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}
	star, reader, nsStar := rules(f, "*:*"), rules(f, "get,list,watch:*"), rules(f, "*:*:x,y")
	f.Fuzz(func(t *testing.T, method, path, query, connection, upgrade string) {
		h := http.Header{}
		if connection != "" {
			h.Set("Connection", connection)
		}
		if upgrade != "" {
			h.Set("Upgrade", upgrade)
		}
		r := &http.Request{Method: method, URL: &url.URL{Path: "/clusters/c" + path, RawQuery: query}, Header: h}
		a, err := Classify(r, path)
		if err != nil {
			if !errors.Is(err, ErrBadPath) {
				t.Fatalf("error %v does not wrap ErrBadPath", err)
			}
			return
		}
		for _, seg := range strings.Split(path, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("accepted %q", path)
			}
		}
		if ok, reason := Authorize(nil, a); ok && (a.ResourceRequest || !IsDiscoveryPath(a.Path)) {
			t.Fatalf("no rules allowed %+v: %s", a, reason)
		}
		if a.ResourceRequest && a.Resource == "pods" && streamingSubresources[a.Subresource] && a.APIGroup == "" &&
			(a.Verb == "get" || a.Verb == "list") {
			t.Fatalf("streaming subresource classified as %s", a.Verb)
		}
		if a.ResourceRequest && a.Subresource == proxySubresource && a.Upgrade != "" && a.Verb != "create" {
			t.Fatalf("an upgrade through %s classified as %s", a.CombinedResource(), a.Verb)
		}
		n := namedOnly(a)
		if ok, _ := Authorize(star, a); a.ResourceRequest && a.Verb != "" && ok != (n == nil || n.NamespacedRules) {
			t.Fatalf("*:* allowed %v for %+v (named only: %v)", ok, a, n)
		}
		if ok, _ := Authorize(reader, a); ok && (n != nil && !n.NamespacedRules || a.Upgrade != "" && a.Subresource == proxySubresource) {
			t.Fatalf("get,list,watch:* allowed %+v", a)
		}
		if ok, _ := Authorize(nsStar, a); ok && a.ResourceRequest && (n != nil || a.Namespace == "") {
			t.Fatalf("*:*:x,y allowed %+v", a)
		}
	})
}

// FuzzVerifyAssertion: nothing but the gateway's genuine assertion verifies, and whatever verifies passes the
// shape checks the connector relies on.
func FuzzVerifyAssertion(f *testing.F) {
	g := newTestGateway(f)
	good := g.sign(f, nil)
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIiwidHlwIjoid2FycmVuLWFzc2VydGlvbitqd3QifQ.e30.")
	f.Add(newIssuer(f).caller(f, nil))
	v := g.verifier(f, t0)
	f.Fuzz(func(t *testing.T, tok string) {
		a, err := v.Verify(tok)
		if tok == good {
			if err != nil {
				t.Fatalf("the genuine assertion: %v", err)
			}
			return
		}
		if err == nil || a != nil {
			t.Fatalf("forged assertion %q verified: %+v", tok, a)
		}
		if !errors.Is(err, ErrInvalidToken) || len(err.Error()) > 400 {
			t.Fatalf("error %q", err)
		}
	})
}
