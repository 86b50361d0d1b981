package auth

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func rules(t testing.TB, specs ...string) []Rule {
	t.Helper()
	var out []Rule
	for _, s := range specs {
		r, err := ParseRule(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestAuthorize(t *testing.T) {
	tests := []struct {
		name   string
		rules  []string
		method string
		target string
		hdr    []string
		allow  bool
		reason string // substring of the reason
	}{
		// Deny by default.
		{"no rules", nil, "GET", "/api/v1/namespaces/x/pods", nil, false, `cannot list resource "pods" in API group "" in the namespace "x"`},
		{"no rules cluster scope", nil, "GET", "/api/v1/nodes", nil, false, `cannot list resource "nodes" in API group "" at the cluster scope`},

		// Verbs.
		{"verb get", []string{"get:pods"}, "GET", "/api/v1/namespaces/x/pods/p", nil, true, "rule 1"},
		{"verb get is not list", []string{"get:pods"}, "GET", "/api/v1/namespaces/x/pods", nil, false, `cannot list resource "pods"`},
		{"verb list", []string{"list:pods"}, "GET", "/api/v1/namespaces/x/pods", nil, true, ""},
		{"verb list is not watch", []string{"list:pods"}, "GET", "/api/v1/namespaces/x/pods?watch=1", nil, false, "cannot watch"},
		{"verb watch", []string{"watch:pods"}, "GET", "/api/v1/namespaces/x/pods?watch=1", nil, true, ""},
		{"verb create", []string{"create:pods"}, "POST", "/api/v1/namespaces/x/pods", nil, true, ""},
		{"verb update", []string{"update:pods"}, "PUT", "/api/v1/namespaces/x/pods/p", nil, true, ""},
		{"verb patch", []string{"patch:pods"}, "PATCH", "/api/v1/namespaces/x/pods/p", nil, true, ""},
		{"update is not patch", []string{"update:pods"}, "PATCH", "/api/v1/namespaces/x/pods/p", nil, false, "cannot patch"},
		{"verb delete", []string{"delete:pods"}, "DELETE", "/api/v1/namespaces/x/pods/p", nil, true, ""},
		{"delete is not deletecollection", []string{"delete:pods"}, "DELETE", "/api/v1/namespaces/x/pods", nil, false, "cannot deletecollection"},
		{"verb deletecollection", []string{"deletecollection:pods"}, "DELETE", "/api/v1/namespaces/x/pods", nil, true, ""},
		{"verb *", []string{"*:pods"}, "DELETE", "/api/v1/namespaces/x/pods", nil, true, ""},
		{"second rule matches", []string{"get:pods", "list:pods"}, "GET", "/api/v1/namespaces/x/pods", nil, true, "rule 2 (list:pods)"},
		{"unknown method", []string{"*:*"}, "OPTIONS", "/api/v1/namespaces/x/pods", nil, false, "unsupported HTTP method"},

		// API groups.
		{"core rule does not cover apps", []string{"get:deployments"}, "GET", "/apis/apps/v1/namespaces/x/deployments/d", nil, false,
			`cannot get resource "deployments" in API group "apps" in the namespace "x"`},
		{"apps group", []string{"get:deployments.apps"}, "GET", "/apis/apps/v1/namespaces/x/deployments/d", nil, true, ""},
		{"apps rule does not cover core", []string{"get:pods.apps"}, "GET", "/api/v1/namespaces/x/pods/p", nil, false, ""},
		{"group wildcard", []string{"get:deployments.*"}, "GET", "/apis/apps/v1/namespaces/x/deployments/d", nil, true, ""},
		{"dotted group", []string{"list:ingresses.networking.k8s.io"}, "GET", "/apis/networking.k8s.io/v1/ingresses", nil, true, ""},
		{"all resources of a group", []string{"get:*.apps"}, "GET", "/apis/apps/v1/namespaces/x/statefulsets/s", nil, true, ""},
		{"all resources of a group, not core", []string{"get:*.apps"}, "GET", "/api/v1/namespaces/x/secrets/s", nil, false, ""},

		// Resources and subresources.
		{"resource mismatch", []string{"get:pods"}, "GET", "/api/v1/namespaces/x/secrets/s", nil, false, `cannot get resource "secrets"`},
		{"resource does not cover subresource", []string{"*:pods"}, "POST", "/api/v1/namespaces/x/pods/p/exec", nil, false,
			`cannot create resource "pods/exec" in API group "" in the namespace "x"`},
		{"subresource", []string{"create:pods/exec"}, "POST", "/api/v1/namespaces/x/pods/p/exec", nil, true, ""},
		{"subresource does not cover resource", []string{"get:pods/log"}, "GET", "/api/v1/namespaces/x/pods/p", nil, false, ""},
		{"websocket exec needs create", []string{"get:pods/exec"}, "GET", "/api/v1/namespaces/x/pods/p/exec",
			[]string{"Upgrade", "websocket"}, false, `cannot create resource "pods/exec"`},
		{"websocket exec with create", []string{"create:pods/exec"}, "GET", "/api/v1/namespaces/x/pods/p/exec",
			[]string{"Upgrade", "websocket"}, true, ""},
		{"attach", []string{"create:pods/attach"}, "POST", "/api/v1/namespaces/x/pods/p/attach", nil, true, ""},
		{"exec is not attach", []string{"create:pods/exec"}, "POST", "/api/v1/namespaces/x/pods/p/attach", nil, false, ""},
		{"portforward websocket", []string{"create:pods/portforward"}, "GET", "/api/v1/namespaces/x/pods/p/portforward",
			[]string{"Upgrade", "websocket"}, true, ""},
		{"log", []string{"get:pods/log"}, "GET", "/api/v1/namespaces/x/pods/p/log", nil, true, ""},
		{"star covers subresources", []string{"create:*"}, "POST", "/api/v1/namespaces/x/pods/p/exec", nil, true, ""},
		{"*/scale", []string{"update:*.apps/scale"}, "PUT", "/apis/apps/v1/namespaces/x/deployments/d/scale", nil, true, ""},
		{"*/scale any group", []string{"update:*.*/scale"}, "PUT", "/apis/apps/v1/namespaces/x/deployments/d/scale", nil, true, ""},
		{"*/scale is not the resource", []string{"update:*.apps/scale"}, "PUT", "/apis/apps/v1/namespaces/x/deployments/d", nil, false, ""},
		{"scale with group", []string{"update:deployments.apps/scale"}, "PUT", "/apis/apps/v1/namespaces/x/deployments/d/scale", nil, true, ""},
		{"everything", []string{"*:*"}, "DELETE", "/apis/apps/v1/namespaces/x/deployments", nil, true, ""},

		// Namespaces.
		{"named namespace", []string{"list:pods:x"}, "GET", "/api/v1/namespaces/x/pods", nil, true, ""},
		{"other namespace", []string{"list:pods:x"}, "GET", "/api/v1/namespaces/y/pods", nil, false, `in the namespace "y"`},
		{"several namespaces", []string{"list:pods:x,y"}, "GET", "/api/v1/namespaces/y/pods", nil, true, ""},
		{"named namespace is not all namespaces", []string{"list:pods:x"}, "GET", "/api/v1/pods", nil, false,
			`cannot list resource "pods" in API group "" at the cluster scope`},
		{"star namespace covers all namespaces", []string{"list:pods:*"}, "GET", "/api/v1/pods", nil, true, ""},
		{"omitted namespace covers all namespaces", []string{"list:pods"}, "GET", "/api/v1/pods", nil, true, ""},
		{"named namespace is not cluster scope", []string{"get:nodes:x"}, "GET", "/api/v1/nodes/n", nil, false, "at the cluster scope"},
		{"star namespace covers cluster scope", []string{"get:nodes:*"}, "GET", "/api/v1/nodes/n", nil, true, ""},
		{"namespace object via its namespace", []string{"get:namespaces:x"}, "GET", "/api/v1/namespaces/x", nil, true, ""},
		{"namespace object, other", []string{"get:namespaces:x"}, "GET", "/api/v1/namespaces/y", nil, false, ""},
		{"create namespace is cluster scope", []string{"create:namespaces:x"}, "POST", "/api/v1/namespaces", nil, false, "at the cluster scope"},

		// Names.
		{"named object", []string{"get:pods:x:p"}, "GET", "/api/v1/namespaces/x/pods/p", nil, true, ""},
		{"other object", []string{"get:pods:x:p"}, "GET", "/api/v1/namespaces/x/pods/q", nil, false, ""},
		{"names do not cover list", []string{"list:pods:x:p"}, "GET", "/api/v1/namespaces/x/pods", nil, false, ""},
		{"names cover a list by field selector", []string{"list:pods:x:p"}, "GET", "/api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Dp", nil, true, ""},
		{"names do not cover create", []string{"create:pods:x:p"}, "POST", "/api/v1/namespaces/x/pods", nil, false, ""},
		{"exec into a named pod", []string{"create:pods/exec:payments:api-7f9c"}, "POST", "/api/v1/namespaces/payments/pods/api-7f9c/exec", nil, true, ""},
		{"exec into another pod", []string{"create:pods/exec:payments:api-7f9c"}, "POST", "/api/v1/namespaces/payments/pods/db-0/exec", nil, false, ""},
		{"cluster-scoped name", []string{"get:clusterroles.rbac.authorization.k8s.io::system:node"}, "GET",
			"/apis/rbac.authorization.k8s.io/v1/clusterroles/system:node", nil, true, ""},

		// Non-resource paths.
		{"version", nil, "GET", "/version", nil, true, "discovery"},
		{"api", nil, "GET", "/api", nil, true, ""},
		{"api version", nil, "GET", "/api/v1", nil, true, ""},
		{"apis", nil, "GET", "/apis", nil, true, ""},
		{"apis group", nil, "GET", "/apis/apps", nil, true, ""},
		{"apis group version", nil, "GET", "/apis/apps/v1", nil, true, ""},
		{"openapi", nil, "GET", "/openapi/v3/apis/apps/v1?hash=x", nil, true, ""},
		{"openapi v2", nil, "GET", "/openapi/v2", nil, true, ""},
		{"healthz", nil, "GET", "/healthz", nil, true, ""},
		{"readyz", nil, "HEAD", "/readyz", nil, true, ""},
		{"post to discovery", nil, "POST", "/apis", nil, false, `cannot post path "/apis"`},
		{"root", []string{"*:*"}, "GET", "/", nil, false, `cannot get path "/"`},
		{"metrics", []string{"*:*"}, "GET", "/metrics", nil, false, `cannot get path "/metrics"`},
		{"logs", []string{"*:*"}, "GET", "/logs/kube-apiserver.log", nil, false, ""},
		{"debug", []string{"*:*"}, "GET", "/debug/pprof/", nil, false, ""},
		{"healthz subpath", nil, "GET", "/healthz/etcd", nil, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := classifyURL(t, tc.method, tc.target, tc.hdr...)
			if err != nil {
				t.Fatal(err)
			}
			ok, reason := Authorize(rules(t, tc.rules...), a)
			if ok != tc.allow {
				t.Fatalf("Authorize(%v, %+v) = %v (%s), want %v", tc.rules, a, ok, reason, tc.allow)
			}
			if !strings.Contains(reason, tc.reason) {
				t.Errorf("reason %q, want it to contain %q", reason, tc.reason)
			}
			if !ok && a.ResourceRequest && a.Verb != "" {
				// The suggested rule allows exactly the denied request.
				s := SuggestRule(a)
				if ok, _ := Authorize(rules(t, s), a); !ok {
					t.Errorf("suggested rule %q does not allow %+v", s, a)
				}
			}
		})
	}
}

// TestAuthorizeRuleStructs covers rules that ParseRule cannot produce: several API groups, omitted apiGroups.
func TestAuthorizeRuleStructs(t *testing.T) {
	a := Attributes{Verb: "get", APIGroup: "apps", Resource: "deployments", Namespace: "x", Name: "d", ResourceRequest: true}
	for _, tc := range []struct {
		r     Rule
		allow bool
	}{
		{Rule{Verbs: []string{"get"}, Resources: []string{"deployments"}}, false}, // apiGroups default to ""
		{Rule{Verbs: []string{"get"}, APIGroups: []string{"", "apps"}, Resources: []string{"deployments"}}, true},
		{Rule{Verbs: []string{"get"}, APIGroups: []string{"*"}, Resources: []string{"deployments"}, Names: []string{"*"}}, true},
		{Rule{Verbs: []string{"get"}, APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Namespaces: []string{"y", "*"}}, true},
		{Rule{Verbs: []string{"list", "watch"}, APIGroups: []string{"apps"}, Resources: []string{"deployments"}}, false},
	} {
		if ok, reason := Authorize([]Rule{tc.r}, a); ok != tc.allow {
			t.Errorf("rule %+v: %v (%s), want %v", tc.r, ok, reason, tc.allow)
		}
	}
}

func TestAuthorizeImpersonation(t *testing.T) {
	tests := []struct {
		name   string
		rules  []string
		hdr    http.Header
		allow  bool
		reason string
	}{
		{"no headers", nil, http.Header{"Accept": {"x"}}, true, ""},
		{"user denied", nil, http.Header{"Impersonate-User": {"alice"}}, false,
			`cannot impersonate resource "users" in API group "" at the cluster scope`},
		{"user allowed", []string{"impersonate:users::alice"}, http.Header{"Impersonate-User": {"alice"}}, true, ""},
		{"other user", []string{"impersonate:users::alice"}, http.Header{"Impersonate-User": {"bob"}}, false, ""},
		{"group needs its own rule", []string{"impersonate:users::alice"},
			http.Header{"Impersonate-User": {"alice"}, "Impersonate-Group": {"system:masters"}}, false, `"groups"`},
		{"group allowed", []string{"impersonate:users::alice", "impersonate:groups::dev"},
			http.Header{"Impersonate-User": {"alice"}, "Impersonate-Group": {"dev"}}, true, ""},
		{"every group checked", []string{"impersonate:users::alice", "impersonate:groups::dev"},
			http.Header{"Impersonate-User": {"alice"}, "Impersonate-Group": {"dev", "system:masters"}}, false, ""},
		{"service account", []string{"impersonate:serviceaccounts:ci:deployer"},
			http.Header{"Impersonate-User": {"system:serviceaccount:ci:deployer"}}, true, ""},
		{"service account in other namespace", []string{"impersonate:serviceaccounts:ci:deployer"},
			http.Header{"Impersonate-User": {"system:serviceaccount:kube-system:deployer"}}, false,
			`cannot impersonate resource "serviceaccounts" in API group "" in the namespace "kube-system"`},
		{"service account is not a user", []string{"impersonate:users"},
			http.Header{"Impersonate-User": {"system:serviceaccount:ci:deployer"}}, false, ""},
		{"uid", []string{"impersonate:users", "impersonate:uids.authentication.k8s.io::1234"},
			http.Header{"Impersonate-User": {"alice"}, "Impersonate-Uid": {"1234"}}, true, ""},
		{"uid denied", []string{"impersonate:users"},
			http.Header{"Impersonate-User": {"alice"}, "Impersonate-Uid": {"1234"}}, false, `"uids" in API group "authentication.k8s.io"`},
		{"extra", []string{"impersonate:users", "impersonate:userextras.authentication.k8s.io/scopes::view"},
			http.Header{"Impersonate-User": {"alice"}, "Impersonate-Extra-Scopes": {"view"}}, true, ""},
		{"extra other value", []string{"impersonate:users", "impersonate:userextras.authentication.k8s.io/scopes::view"},
			http.Header{"Impersonate-User": {"alice"}, "Impersonate-Extra-Scopes": {"admin"}}, false, `"userextras/scopes"`},
		{"non-canonical header key", nil, http.Header{"impersonate-user": {"alice"}}, false, ""},
		{"empty value", []string{"*:*"}, http.Header{"Impersonate-User": {""}}, false, "empty"},
		{"unknown impersonation header", []string{"*:*"}, http.Header{"Impersonate-Something": {"x"}}, false, "unsupported"},
		{"star allows all", []string{"impersonate:*.*"},
			http.Header{"Impersonate-User": {"alice"}, "Impersonate-Group": {"g"}, "Impersonate-Uid": {"u"}}, true, ""},
		{"other verbs do not impersonate", []string{"*:users,groups"},
			http.Header{"Impersonate-User": {"alice"}}, true, ""}, // "*" verbs include impersonate, as in RBAC
		{"get does not impersonate", []string{"get,list:users"}, http.Header{"Impersonate-User": {"alice"}}, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok, reason := AuthorizeImpersonation(rules(t, tc.rules...), tc.hdr)
			if ok != tc.allow || !strings.Contains(reason, tc.reason) {
				t.Fatalf("AuthorizeImpersonation = %v, %q; want %v, containing %q", ok, reason, tc.allow, tc.reason)
			}
		})
	}
}

func TestRuleString(t *testing.T) {
	for _, s := range []string{"get,list:pods", "create:pods/exec:payments:api-7f9c", "get:deployments.apps/scale:a,b",
		"*:*", "get:*.apps", "get:namespaces::payments", "get:pods:*"} {
		r := rules(t, s)[0]
		if got := r.String(); got != s {
			t.Errorf("ParseRule(%q).String() = %q", s, got)
		}
	}
}

func TestLoadPolicy(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", `
rules:
- verbs: [get, list, watch]
  apiGroups: ["*"]
  resources: ["*"]
- verbs: [create]
  resources: [pods/exec]
  namespaces: [payments]
`)
	p, err := LoadPolicy(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Rules) != 2 {
		t.Fatalf("rules %+v", p.Rules)
	}
	for _, tc := range []struct {
		method, target string
		allow          bool
	}{
		{"GET", "/apis/apps/v1/deployments", true},
		{"DELETE", "/api/v1/namespaces/x/pods/p", false},
		{"POST", "/api/v1/namespaces/payments/pods/p/exec", true},
		{"POST", "/api/v1/namespaces/other/pods/p/exec", false},
	} {
		a, err := classifyURL(t, tc.method, tc.target)
		if err != nil {
			t.Fatal(err)
		}
		if ok, reason := p.Authorize(a); ok != tc.allow {
			t.Errorf("%s %s: %v (%s)", tc.method, tc.target, ok, reason)
		}
	}
	var nilPolicy *Policy
	if ok, _ := nilPolicy.Authorize(Attributes{Verb: "get", Resource: "pods", ResourceRequest: true}); ok {
		t.Error("nil policy allowed a request")
	}

	for name, tc := range map[string]struct{ body, want string }{
		"unknown field":   {"rules:\n- verbs: [get]\n  resources: [pods]\n  namespace: [x]\n", "unknown field"},
		"top-level typo":  {"rule:\n- verbs: [get]\n  resources: [pods]\n", "unknown field"},
		"duplicate field": {"rules:\n- verbs: [get]\n  verbs: [list]\n  resources: [pods]\n", "duplicate"},
		"invalid rule":    {"rules:\n- verbs: [get]\n  resources: [Pods]\n", `rule 1`},
		"unknown verb":    {"rules:\n- verbs: [gte]\n  resources: [pods]\n", `unknown verb "gte"`},
		"no resources":    {"rules:\n- verbs: [get]\n", "no resources"},
		"no rules":        {"rules: []\n", "no rules"},
		"empty":           {"", "no rules"},
		"not yaml":        {"rules: [\n", "yaml"},
		"wrong type":      {"rules:\n- verbs: get\n  resources: [pods]\n", "cannot unmarshal"},
	} {
		t.Run(name, func(t *testing.T) {
			path := write(strings.ReplaceAll(name, " ", "_")+".yaml", tc.body)
			_, err := LoadPolicy(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("LoadPolicy: %v; want error naming the file and containing %q", err, tc.want)
			}
		})
	}
	if _, err := LoadPolicy(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}
