package auth

import (
	"fmt"
	"slices"
)

// NamedOnly is a resource that no wildcard covers: a rule grants it only when it names it exactly, in its own API
// group. "*" in a rule's resources, "*/proxy"-style subresource wildcards and apiGroups "*" never reach it. These
// are the resources that are exec or a credential in disguise, where RBAC's "a wildcard covers everything"
// surprises whoever wrote get,list,watch:* for a read-only responder; and the namespace object under a rule that
// names namespaces.
type NamedOnly struct {
	APIGroup string // "" is the core group
	Resource string // resource or resource/subresource, as a rule names it
	// Upgrade limits the entry to requests that upgrade the connection (wire.Upgrade): a plain proxied HTTP
	// request stays under RBAC's usual semantics.
	Upgrade bool
	// NamespacedRules limits the entry to rules that name namespaces: a cluster-wide rule covers it as RBAC says.
	NamespacedRules bool
	// Why is the reason, as the caller reads it in a refusal.
	Why string
}

// NamedOnlyResources is the list, with the reason for each. Both points (gateway and connector) and both rule sets
// (the caller's token and the customer's ceiling) apply it, through Authorize.
var NamedOnlyResources = []NamedOnly{
	{Resource: "nodes/proxy",
		Why: "it is the kubelet's API, reached with the API server's own kubelet credentials: exec, run, attach and port-forward into any pod of the node, checkpoints (container memory), node logs, pprof and debug flags"},
	{Resource: "pods/proxy", Upgrade: true,
		Why: "an upgraded connection through it is a raw stream to any port of the pod, as port-forward is"},
	{Resource: "services/proxy", Upgrade: true,
		Why: "an upgraded connection through it is a raw stream to any port behind the service, as port-forward is"},
	{Resource: "pods/ephemeralcontainers",
		Why: "it adds a container with any image and command to a running pod: exec by another name"},
	{Resource: "serviceaccounts/token",
		Why: "it mints API tokens for a service account, which reach the API server without warren"},
	{APIGroup: "certificates.k8s.io", Resource: "certificatesigningrequests/approval",
		Why: "approving certificate signing requests issues client certificates that reach the API server without warren"},
	{Resource: "namespaces", NamespacedRules: true,
		Why: "in a rule naming namespaces, it is the namespace object itself (delete removes everything in it)"},
	{Resource: "namespaces/status", NamespacedRules: true,
		Why: "in a rule naming namespaces, it is the status of the namespace object itself"},
	{Resource: "namespaces/finalize", NamespacedRules: true,
		Why: "in a rule naming namespaces, it is the finalizers of the namespace object itself (PUT finalize completes its deletion)"},
}

// namedOnly returns the entry that request a falls under, whatever the rule, or nil. Entries limited to
// namespaced rules are returned too; the rule decides (namesIt).
func namedOnly(a Attributes) *NamedOnly {
	if !a.ResourceRequest {
		return nil
	}
	res := a.CombinedResource()
	if a.Verb == "proxy" && a.Subresource == "" {
		// RequestInfo's verb for the legacy /api/v1/proxy/RESOURCE/NAME/... paths: the same proxy subresource.
		res += "/" + proxySubresource
	}
	for i := range NamedOnlyResources {
		n := &NamedOnlyResources[i]
		if n.APIGroup == a.APIGroup && n.Resource == res && (!n.Upgrade || a.Upgrade != "") {
			return n
		}
	}
	return nil
}

// appliesTo reports whether the entry restricts rule r.
func (n *NamedOnly) appliesTo(r Rule) bool {
	return !n.NamespacedRules || (len(r.Namespaces) > 0 && !slices.Contains(r.Namespaces, All))
}

// namedBy reports whether rule r names the entry's resource exactly, in its API group: no "*" for either.
func (n *NamedOnly) namedBy(r Rule) bool {
	group := slices.Contains(r.APIGroups, n.APIGroup) || (n.APIGroup == "" && len(r.APIGroups) == 0)
	return group && slices.Contains(r.Resources, n.Resource)
}

// note is what a refusal of a request under the entry adds, so that the caller learns why a wildcard did not do.
func (n *NamedOnly) note() string {
	if n.NamespacedRules {
		return fmt.Sprintf("; a rule naming namespaces covers %q only when it names %q in its resources: %s", n.Resource, n.Resource, n.Why)
	}
	what := n.Resource
	if n.APIGroup != "" {
		what += " in API group " + n.APIGroup
	}
	if n.Upgrade {
		what = "an upgrade on " + what
	}
	return fmt.Sprintf("; no wildcard grants %s, a rule must name it (%s)", what, n.Why)
}
