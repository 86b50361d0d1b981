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

// FuzzClassify feeds arbitrary methods, paths and queries through Classify and Authorize: no panic, canonical
// paths only, and a request with no rules is only ever allowed for discovery.
func FuzzClassify(f *testing.F) {
	for _, s := range [][3]string{
		{"GET", "/api/v1/namespaces/x/pods/p", ""},
		{"GET", "/api/v1/pods", "watch=true&fieldSelector=metadata.name%3Dp"},
		{"POST", "/api/v1/namespaces/x/pods/p/exec", "command=sh"},
		{"GET", "/apis/apps/v1/namespaces/x/deployments/d/scale", ""},
		{"DELETE", "/api/v1/namespaces/x/pods", "labelSelector=a%3Db"},
		{"GET", "/api/v1/watch/namespaces/x/pods", ""},
		{"GET", "/api/v1/namespaces/x/pods/../secrets", ""},
		{"GET", "/version", ""},
		{"GET", "/openapi/v3", ""},
		{"PUT", "/api/v1/namespaces/x/finalize", ""},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, method, path, query string) {
		r := &http.Request{Method: method, URL: &url.URL{Path: "/clusters/c" + path, RawQuery: query}, Header: http.Header{}}
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
		star := rules(t, "*:*")
		if ok, _ := Authorize(star, a); a.ResourceRequest && a.Verb != "" && !ok {
			t.Fatalf("*:* denied %+v", a)
		}
	})
}
