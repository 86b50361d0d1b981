package auth

import (
	"strings"
	"testing"
)

var (
	wsUpgrade   = []string{"Connection", "Upgrade", "Upgrade", "websocket"}
	spdyUpgrade = []string{"Connection", "Upgrade", "Upgrade", "SPDY/3.1"}
)

// namedOnlyRequest is one request that falls under a NamedOnly entry, and the exact rule that grants it.
type namedOnlyRequest struct {
	name           string
	method, target string
	hdr            []string
	grant          string // the narrowest rule naming the resource
	verb           string // the verb Classify gives it
	// wildcards lists rules that cover it by RBAC's semantics (verb, namespace and name wildcards included) but
	// reach the resource only through a wildcard in resources or apiGroups (or, for the namespace object, under
	// a rule naming namespaces).
	wildcards []string
}

func namedOnlyRequests() []namedOnlyRequest {
	nodeProxyWild := []string{"*:*", "*:*:*", "*:*.*", "get,list,watch,create:*", "create:*/proxy", "*:*/proxy",
		"create:*.*/proxy", "create:nodes.*/proxy", "create:*:*:warren-node"}
	return []namedOnlyRequest{
		{"nodes/proxy websocket exec", "GET", "/api/v1/nodes/warren-node/proxy/exec/default/p/main?command=id", wsUpgrade,
			"create:nodes/proxy", "create", nodeProxyWild},
		{"nodes/proxy spdy exec", "POST", "/api/v1/nodes/warren-node/proxy/exec/default/p/main?command=id", spdyUpgrade,
			"create:nodes/proxy", "create", nodeProxyWild},
		{"nodes/proxy head upgrade", "HEAD", "/api/v1/nodes/warren-node/proxy/attach/default/p/main", wsUpgrade,
			"create:nodes/proxy", "create", nodeProxyWild},
		{"nodes/proxy keep-alive, Upgrade", "GET", "/api/v1/nodes/warren-node/proxy/portForward/default/p",
			[]string{"Connection", "keep-alive, Upgrade", "Upgrade", "websocket"}, "create:nodes/proxy", "create", nodeProxyWild},
		{"nodes/proxy two Connection lines", "GET", "/api/v1/nodes/warren-node/proxy/exec/default/p/main",
			[]string{"Connection", "keep-alive", "Connection", "upgrade", "Upgrade", "WebSocket"}, "create:nodes/proxy", "create", nodeProxyWild},
		{"nodes/proxy run without upgrade", "POST", "/api/v1/nodes/warren-node/proxy/run/default/p/main?cmd=id", nil,
			"create:nodes/proxy", "create", nodeProxyWild},
		{"nodes/proxy checkpoint", "POST", "/api/v1/nodes/warren-node/proxy/checkpoint/default/p/main", nil,
			"create:nodes/proxy", "create", nodeProxyWild},
		{"nodes/proxy logs read", "GET", "/api/v1/nodes/warren-node/proxy/logs/", nil,
			"get:nodes/proxy", "get", []string{"get:*", "get,list,watch:*", "get:*/proxy", "get:*.*", "get:nodes.*/proxy", "*:*"}},
		{"nodes/proxy pprof", "GET", "/api/v1/nodes/warren-node/proxy/debug/pprof/heap", nil,
			"get:nodes/proxy", "get", []string{"get:*", "get:*/proxy", "*:*:*"}},
		{"nodes/proxy debug flags", "PUT", "/api/v1/nodes/warren-node/proxy/debug/flags/v", nil,
			"update:nodes/proxy", "update", []string{"update:*", "*:*/proxy"}},
		{"nodes/proxy with port", "GET", "/api/v1/nodes/warren-node:10250/proxy/metrics", nil,
			"get:nodes/proxy", "get", []string{"get:*", "get:*/proxy"}},
		{"legacy proxy path to a node", "GET", "/api/v1/proxy/nodes/warren-node/exec/default/p/main", wsUpgrade,
			"", "proxy", []string{"*:*", "*:*:*", "*:*.*"}},
		{"pods/proxy websocket", "GET", "/api/v1/namespaces/payments/pods/p/proxy/ws", wsUpgrade,
			"create:pods/proxy:payments", "create", []string{"*:*", "create:*:payments", "create:*/proxy:payments", "create:pods.*/proxy"}},
		{"pods/proxy spdy", "POST", "/api/v1/namespaces/payments/pods/p:8080/proxy/", spdyUpgrade,
			"create:pods/proxy", "create", []string{"*:*", "create:*/proxy"}},
		{"services/proxy websocket", "GET", "/api/v1/namespaces/payments/services/s/proxy/ws", wsUpgrade,
			"create:services/proxy:payments", "create", []string{"*:*", "create:*", "create:*/proxy", "*:*.*:payments"}},
		{"pods/ephemeralcontainers", "PATCH", "/api/v1/namespaces/payments/pods/p/ephemeralcontainers", nil,
			"patch:pods/ephemeralcontainers:payments", "patch",
			[]string{"*:*", "patch:*:payments", "patch:*/ephemeralcontainers", "patch:pods.*/ephemeralcontainers", "*:*.*"}},
		{"pods/ephemeralcontainers update", "PUT", "/api/v1/namespaces/payments/pods/p/ephemeralcontainers", nil,
			"update:pods/ephemeralcontainers", "update", []string{"update:*", "update,patch:*/ephemeralcontainers"}},
		{"serviceaccounts/token", "POST", "/api/v1/namespaces/payments/serviceaccounts/default/token", nil,
			"create:serviceaccounts/token:payments:default", "create", []string{"*:*", "create:*", "create:*/token", "create:*:payments:default"}},
		{"csr approval", "PUT", "/apis/certificates.k8s.io/v1/certificatesigningrequests/c/approval", nil,
			"update:certificatesigningrequests.certificates.k8s.io/approval", "update",
			[]string{"*:*", "update:*.*", "update:*.certificates.k8s.io", "update:*.*/approval", "update:certificatesigningrequests.*/approval"}},
		// The namespace object under a rule that names namespaces: RequestInfo gives it namespace = its name.
		{"delete the namespace", "DELETE", "/api/v1/namespaces/payments", nil,
			"delete:namespaces:payments", "delete", []string{"delete:*:payments", "*:*:payments", "delete:*.*:payments", "delete:namespaces.*:payments"}},
		{"finalize the namespace", "PUT", "/api/v1/namespaces/payments/finalize", nil,
			"update:namespaces/finalize:payments", "update", []string{"update:*:payments", "*:*:payments", "update:*/finalize:payments"}},
		{"namespace status", "PUT", "/api/v1/namespaces/payments/status", nil,
			"update:namespaces/status:payments", "update", []string{"*:*:payments,other", "update:*/status:payments"}},
		{"read the namespace", "GET", "/api/v1/namespaces/payments", nil,
			"get:namespaces:payments", "get", []string{"get:*:payments", "get,list,watch:*:payments"}},
	}
}

// TestNamedOnly: each request under NamedOnlyResources is refused under every rule that would reach it through a
// wildcard, with the reason in the message, and allowed by the rule naming it.
func TestNamedOnly(t *testing.T) {
	for _, tc := range namedOnlyRequests() {
		t.Run(tc.name, func(t *testing.T) {
			a, err := classifyURL(t, tc.method, tc.target, tc.hdr...)
			if err != nil {
				t.Fatal(err)
			}
			if a.Verb != tc.verb {
				t.Fatalf("verb %q, want %q", a.Verb, tc.verb)
			}
			n := namedOnly(a)
			if n == nil {
				t.Fatalf("%+v is under no NamedOnly entry", a)
			}
			for _, w := range tc.wildcards {
				ok, reason := Authorize(rules(t, w), a)
				if ok {
					t.Errorf("rule %s allowed %s %s: %s", w, tc.method, tc.target, reason)
					continue
				}
				if !strings.Contains(reason, n.Why) {
					t.Errorf("rule %s: the refusal %q does not say why", w, reason)
				}
				// The ceiling is the same decision.
				if ok, _ := (&Policy{Rules: rules(t, w)}).Authorize(a); ok {
					t.Errorf("policy rule %s allowed %s %s", w, tc.method, tc.target)
				}
			}
			if tc.grant == "" {
				return // no rule grants it: the API server serves no legacy proxy path
			}
			if ok, reason := Authorize(rules(t, tc.grant), a); !ok {
				t.Errorf("the naming rule %s refused it: %s", tc.grant, reason)
			}
			if ok, reason := Authorize(rules(t, "*:"+strings.Split(tc.grant, ":")[1]), a); !ok {
				t.Errorf("a verb wildcard on the named resource refused it: %s", reason)
			}
			// With the wildcard rules and the naming rule together, the naming rule decides.
			if ok, reason := Authorize(rules(t, append(append([]string{}, tc.wildcards...), tc.grant)...), a); !ok ||
				!strings.Contains(reason, "("+tc.grant+")") {
				t.Errorf("wildcards + %s: %v %s", tc.grant, ok, reason)
			}
			if s := SuggestRule(a); s != "" {
				if ok, _ := Authorize(rules(t, s), a); !ok {
					t.Errorf("the suggested rule %s does not allow it", s)
				}
			}
		})
	}
}

// A refusal explains the wildcard only when a wildcard was what stood in for the name.
func TestNamedOnlyNoteOnlyForWildcards(t *testing.T) {
	for _, tc := range []struct {
		rule, method, target string
		hdr                  []string
	}{
		{"get:nodes/proxy", "GET", "/api/v1/nodes/n/proxy/exec/x/p/c", wsUpgrade}, // named, but the verb is create
		{"get,list:pods", "POST", "/api/v1/nodes/n/proxy/run/x/p/c", nil},
		{"update:namespaces:payments", "PUT", "/api/v1/namespaces/payments/finalize", nil}, // a resource is not its subresource
		{"get:*:other", "GET", "/api/v1/namespaces/payments", nil},
	} {
		a, err := classifyURL(t, tc.method, tc.target, tc.hdr...)
		if err != nil {
			t.Fatal(err)
		}
		ok, reason := Authorize(rules(t, tc.rule), a)
		if ok || reason != forbiddenMessage(a) {
			t.Errorf("%s %s under %s: %v %q, want the plain refusal %q", tc.method, tc.target, tc.rule, ok, reason, forbiddenMessage(a))
		}
	}
}

// TestNamedOnlyExactMessage pins the whole refusal a read-only token gets for exec through nodes/proxy.
func TestNamedOnlyExactMessage(t *testing.T) {
	a, err := classifyURL(t, "GET", "/api/v1/nodes/warren-node/proxy/exec/default/p/main?command=id", wsUpgrade...)
	if err != nil {
		t.Fatal(err)
	}
	_, reason := Authorize(rules(t, "*:*"), a)
	want := `cannot create resource "nodes/proxy" in API group "" at the cluster scope; no wildcard grants nodes/proxy, ` +
		`a rule must name it (it is the kubelet's API, reached with the API server's own kubelet credentials: exec, run, ` +
		`attach and port-forward into any pod of the node, checkpoints (container memory), node logs, pprof and debug flags)`
	if reason != want {
		t.Fatalf("reason\n %s\nwant\n %s", reason, want)
	}
	a, _ = classifyURL(t, "DELETE", "/api/v1/namespaces/payments")
	_, reason = Authorize(rules(t, "delete:*:payments"), a)
	want = `cannot delete resource "namespaces" in API group "" in the namespace "payments"; a rule naming namespaces covers ` +
		`"namespaces" only when it names "namespaces" in its resources: in a rule naming namespaces, it is the namespace ` +
		`object itself (delete removes everything in it)`
	if reason != want {
		t.Fatalf("reason\n %s\nwant\n %s", reason, want)
	}
}

// What stays under RBAC's usual semantics: the same resources without the condition of their entry.
func TestNamedOnlyLeavesTheRest(t *testing.T) {
	for _, tc := range []struct {
		rule, method, target string
		hdr                  []string
	}{
		// A plain (not upgraded) request through pods/proxy or services/proxy is an HTTP request to the pod.
		{"get:*", "GET", "/api/v1/namespaces/x/pods/p/proxy/metrics", nil},
		{"get:*/proxy", "GET", "/api/v1/namespaces/x/services/s/proxy/", nil},
		{"create:*", "POST", "/api/v1/namespaces/x/pods/p/proxy/submit", nil},
		// Upgrade without Connection: upgrade is no upgrade: no proxy forwards it as one.
		{"get:*", "GET", "/api/v1/namespaces/x/pods/p/proxy/ws", []string{"Upgrade", "websocket"}},
		// A cluster-wide rule covers the namespace object, as RBAC says.
		{"delete:*", "DELETE", "/api/v1/namespaces/payments", nil},
		{"*:*:*", "PUT", "/api/v1/namespaces/payments/finalize", nil},
		{"get:*", "GET", "/api/v1/namespaces/payments", nil},
		// Objects inside the namespace, under a namespaced wildcard.
		{"delete:*:payments", "DELETE", "/api/v1/namespaces/payments/pods/p", nil},
		{"*:*:payments", "DELETE", "/apis/apps/v1/namespaces/payments/deployments", nil},
		// Exec in the open: pods/exec is what "create" on "*" is known to mean.
		{"create:*", "POST", "/api/v1/namespaces/x/pods/p/exec?command=id", nil},
		{"create:*/exec", "GET", "/api/v1/namespaces/x/pods/p/exec?command=id", wsUpgrade},
		// Other credential-adjacent resources stay RBAC's: reading is RBAC's business (see docs/rules.md).
		{"get:*", "GET", "/api/v1/namespaces/x/secrets/s", nil},
		{"create:*.*", "POST", "/apis/certificates.k8s.io/v1/certificatesigningrequests", nil},
		{"create:*.*", "POST", "/apis/authentication.k8s.io/v1/tokenreviews", nil},
		{"update:*.*", "PUT", "/apis/certificates.k8s.io/v1/certificatesigningrequests/c/status", nil},
	} {
		t.Run(tc.rule+" "+tc.method+" "+tc.target, func(t *testing.T) {
			a, err := classifyURL(t, tc.method, tc.target, tc.hdr...)
			if err != nil {
				t.Fatal(err)
			}
			if ok, reason := Authorize(rules(t, tc.rule), a); !ok {
				t.Fatalf("refused: %s", reason)
			}
		})
	}
}

// The list in the package doc of Rule and in docs/rules.md must be this table: a new entry without its reason
// written where rules are documented fails here.
func TestNamedOnlyTableShape(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range NamedOnlyResources {
		key := n.APIGroup + "/" + n.Resource
		if seen[key] {
			t.Errorf("duplicate entry %s", key)
		}
		seen[key] = true
		if err := validateResource(n.Resource); err != nil || strings.Contains(n.Resource, All) {
			t.Errorf("entry %s: %v", key, err)
		}
		if n.Why == "" {
			t.Errorf("entry %s has no reason", key)
		}
	}
}
