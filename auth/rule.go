package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// All is the wildcard accepted in every list of a Rule.
const All = "*"

// Rule grants verbs on resources, read like a Kubernetes RBAC PolicyRule. Every list is OR-ed; the lists are AND-ed.
//
//   - Verbs are Kubernetes request verbs (get, list, watch, create, update, patch, delete, deletecollection) or
//     impersonate; "*" is any verb.
//   - APIGroups default to [""] (the core group) when omitted; "*" is any group.
//   - Resources are plural resource names, optionally with a subresource ("pods/exec"); "*" is any resource and any
//     subresource, "*/scale" is the scale subresource of any resource.
//   - Namespaces omitted or containing "*" cover every namespace and cluster-scoped resources too; a rule naming
//     namespaces covers only requests inside those namespaces.
//   - Names omitted (or "*") cover every object; otherwise only requests naming one of them (a list or a create
//     without a name never matches a rule with names, as in RBAC).
//
// Unlike RBAC, no wildcard in resources ("*", "*/proxy") or apiGroups ("*") covers what is exec or a credential in
// disguise; a rule grants these only by naming them exactly (NamedOnlyResources, docs/rules.md):
//
//   - nodes/proxy, any verb, upgrade or not: the kubelet's API with the API server's kubelet credentials (exec,
//     run, attach, port-forward into any pod of the node; checkpoints; node logs; pprof, debug flags);
//   - pods/proxy and services/proxy when the request upgrades the connection: a raw stream to any port, as
//     port-forward (a plain proxied HTTP request stays under the usual semantics);
//   - pods/ephemeralcontainers: a new container with any image and command in a running pod;
//   - serviceaccounts/token: API tokens that reach the API server without warren;
//   - certificatesigningrequests/approval (certificates.k8s.io): client certificates, likewise;
//   - in a rule naming namespaces, namespaces, namespaces/status and namespaces/finalize: the namespace object
//     itself, which Kubernetes places in its own namespace. delete:*:payments deletes objects in payments, not
//     the namespace; delete:namespaces:payments deletes the namespace payments itself (as a RoleBinding in
//     payments granting delete on namespaces would in RBAC).
//
// An upgrade (WebSocket, SPDY) on any proxy subresource needs the verb create, as exec does.
type Rule struct {
	Verbs      []string `json:"verbs"`
	APIGroups  []string `json:"apiGroups,omitempty"`
	Resources  []string `json:"resources"`
	Namespaces []string `json:"namespaces,omitempty"`
	Names      []string `json:"names,omitempty"`
	// PodSpec, in a ceiling only, keeps the pods of the rule's namespaces to warren's collector pod (see PodSpec).
	PodSpec *PodSpec `json:"podSpec,omitempty"`
}

// Scope is the "warren" claim of a token: the clusters it may reach and, for a caller, what it may do there.
type Scope struct {
	Clusters []string `json:"clusters"`
	Rules    []Rule   `json:"rules,omitempty"`
	// Groups are the caller's groups, which a connector in impersonation mode passes to Kubernetes as
	// Impersonate-Group so that RBAC and the Kubernetes audit log see them.
	Groups []string `json:"groups,omitempty"`
}

// Verbs that a rule may name. The first eight are what Kubernetes derives from a request (RequestInfo).
var knownVerbs = []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "impersonate"}

// Bounds keep hostile rules (in tokens, policies or flags) cheap to handle.
const (
	maxRuleItems  = 256
	maxNameLength = 253
)

// ParseRule parses the command-line form of a rule, VERBS:RESOURCES[:NAMESPACES[:NAMES]], each part a comma list:
//
//	get,list:pods                     get and list pods in every namespace
//	create:pods/exec:payments:api-1   exec into pod api-1 in namespace payments
//	get:deployments.apps:a,b          get deployments (API group apps) in namespaces a and b
//	*:*                               everything
//
// A resource may carry its API group as resource.group (the group itself may contain dots: ingresses.networking.k8s.io)
// and a subresource as resource/subresource (deployments.apps/scale). All resources of one rule must share an API
// group; write one rule per group. An empty NAMESPACES part means every namespace, so names can be given alone
// (get:namespaces::payments). NAMES is the last part and may contain ':' (get:clusterroles::system:node).
func ParseRule(s string) (Rule, error) {
	r, err := parseRule(s)
	if err != nil {
		return Rule{}, fmt.Errorf("rule %q: %w", s, err)
	}
	return r, nil
}

func parseRule(s string) (Rule, error) {
	if strings.TrimSpace(s) == "" {
		return Rule{}, errors.New("empty rule; want VERBS:RESOURCES[:NAMESPACES[:NAMES]], e.g. get,list:pods")
	}
	parts := strings.SplitN(s, ":", 4)
	if len(parts) < 2 {
		return Rule{}, errors.New("missing resources; want VERBS:RESOURCES[:NAMESPACES[:NAMES]], e.g. get,list:pods")
	}
	var r Rule
	var err error
	if r.Verbs, err = splitList("verbs", parts[0], false); err != nil {
		return Rule{}, err
	}
	resources, err := splitList("resources", parts[1], false)
	if err != nil {
		return Rule{}, err
	}
	group := ""
	for i, res := range resources {
		name, g := splitGroup(res)
		if g == "" && strings.Contains(res, ".") {
			return Rule{}, fmt.Errorf("invalid API group in %q: want resource.group such as deployments.apps", clip(res))
		}
		if i > 0 && g != group {
			return Rule{}, fmt.Errorf("resources %s and %s are in different API groups (%q, %q); write one rule per API group",
				resources[0], res, group, g)
		}
		group = g
		r.Resources = append(r.Resources, name)
	}
	r.APIGroups = []string{group}
	if len(parts) > 2 {
		if r.Namespaces, err = splitList("namespaces", parts[2], true); err != nil {
			return Rule{}, err
		}
	}
	if len(parts) > 3 {
		if r.Names, err = splitList("names", parts[3], true); err != nil {
			return Rule{}, err
		}
		if slices.Contains(r.Names, All) {
			r.Names = nil // "*" means any name, which is what no names means
		}
	}
	if err := r.validate(); err != nil {
		return Rule{}, err
	}
	return r, nil
}

// splitList splits a comma list, refusing empty items. An empty list is an error unless optional.
func splitList(what, s string, optional bool) ([]string, error) {
	if s == "" {
		if optional {
			return nil, nil
		}
		return nil, fmt.Errorf("no %s given", what)
	}
	items := strings.Split(s, ",")
	for _, it := range items {
		if strings.TrimSpace(it) == "" {
			return nil, fmt.Errorf("empty item in %s %q", what, s)
		}
		if it != strings.TrimSpace(it) {
			return nil, fmt.Errorf("%s %q: remove the spaces around %q", what, s, strings.TrimSpace(it))
		}
	}
	return items, nil
}

// splitGroup splits "deployments.apps/scale" into ("deployments/scale", "apps"). A bare "*" means any resource in
// any group; "pods" is in the core group "".
func splitGroup(res string) (resource, group string) {
	if res == All {
		return All, All
	}
	base, sub, hasSub := strings.Cut(res, "/")
	base, group, _ = strings.Cut(base, ".")
	if hasSub {
		base += "/" + sub
	}
	return base, group
}

// Validate reports whether the rule is well formed: at least one verb and one resource, known verbs, and names that
// Kubernetes could accept. Rules from tokens and policy files are validated before use.
func (r Rule) Validate() error { return r.validate() }

func (r Rule) validate() error {
	if len(r.Verbs) == 0 {
		return errors.New("no verbs given")
	}
	if len(r.Resources) == 0 {
		return errors.New("no resources given")
	}
	for what, list := range map[string][]string{"verbs": r.Verbs, "apiGroups": r.APIGroups, "resources": r.Resources,
		"namespaces": r.Namespaces, "names": r.Names} {
		if len(list) > maxRuleItems {
			return fmt.Errorf("too many %s (%d, at most %d)", what, len(list), maxRuleItems)
		}
	}
	for _, v := range r.Verbs {
		if v != All && !slices.Contains(knownVerbs, v) {
			return fmt.Errorf("unknown verb %q (known: %s, or *)", clip(v), strings.Join(knownVerbs, ", "))
		}
	}
	for _, g := range r.APIGroups {
		if g != All && g != "" && !isDNSSubdomain(g) {
			return fmt.Errorf("invalid API group %q: want a DNS name such as apps or networking.k8s.io", clip(g))
		}
	}
	for _, res := range r.Resources {
		if err := validateResource(res); err != nil {
			return err
		}
	}
	for _, ns := range r.Namespaces {
		if ns != All && !isDNSLabel(ns) {
			return fmt.Errorf("invalid namespace %q: want a lowercase DNS label such as payments, or *", clip(ns))
		}
	}
	for _, n := range r.Names {
		if n == "" || len(n) > maxNameLength || strings.ContainsAny(n, "/%") || n == "." || n == ".." || !printable(n) {
			return fmt.Errorf("invalid name %q", clip(n))
		}
	}
	if r.PodSpec != nil {
		return r.PodSpec.validate(r)
	}
	return nil
}

func validateResource(res string) error {
	if res == All {
		return nil
	}
	base, sub, hasSub := strings.Cut(res, "/")
	if hasSub {
		if !isResourceName(sub) {
			return fmt.Errorf("invalid subresource in %q: want resource/subresource such as pods/exec", clip(res))
		}
		if base == All {
			return nil // "*/scale"
		}
	}
	if !isResourceName(base) {
		return fmt.Errorf("invalid resource %q: want a lowercase plural such as pods, deployments.apps or pods/exec", clip(res))
	}
	return nil
}

// isResourceName accepts lowercase resource (and subresource) names: letters, digits, '-'.
func isResourceName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isDNSLabel is Kubernetes' RFC 1123 label: the shape of a namespace name.
func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isDNSSubdomain is Kubernetes' RFC 1123 subdomain: the shape of an API group name.
func isDNSSubdomain(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !isDNSLabel(l) {
			return false
		}
	}
	return true
}

func printable(s string) bool {
	for _, c := range s {
		if c < 0x21 || c == 0x7f || c == '\uFFFD' {
			return false
		}
	}
	return true
}

// clip shortens hostile input before it goes into an error message.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
