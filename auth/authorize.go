package auth

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"

	"k8s.io/apiserver/pkg/authentication/serviceaccount"
)

// Authorize decides whether rules allow the request a. It denies by default. Resource requests need a rule matching
// verb, API group, resource (or resource/subresource), namespace and name, with Kubernetes RBAC's semantics ("*"
// matches anything, including subresources; "*/scale" matches the scale subresource of any resource), except for
// NamedOnlyResources, which only a rule naming them covers. Non-resource requests are allowed only for discovery
// and health paths (see IsDiscoveryPath), with any valid token.
//
// When allowed, reason names the rule that matched; when denied, it is worded like Kubernetes' own 403 message,
// e.g. `cannot list resource "pods" in API group "" in the namespace "x"`.
func Authorize(rules []Rule, a Attributes) (allowed bool, reason string) {
	if !a.ResourceRequest {
		if (a.Verb == "get" || a.Verb == "head") && IsDiscoveryPath(a.Path) {
			return true, "discovery path"
		}
		return false, fmt.Sprintf("cannot %s path %q", a.Verb, clip(a.Path))
	}
	if a.Verb == "" {
		return false, fmt.Sprintf("unsupported HTTP method for resource %q", a.CombinedResource())
	}
	for i, r := range rules {
		// A podSpec rule grants only through the connector's check of the pod (Policy.PodSpecFor).
		if r.PodSpec == nil && r.matches(a) {
			return true, fmt.Sprintf("allowed by rule %d (%s)", i+1, r)
		}
	}
	msg := forbiddenMessage(a)
	if n := namedOnly(a); n != nil {
		// Say why, when a rule would have allowed it but for a wildcard standing in for the name.
		for _, r := range rules {
			if r.matchesRBAC(a) {
				msg += n.note()
				break
			}
		}
	}
	return false, msg
}

// forbiddenMessage follows k8s.io/apiserver's responsewriters.forbiddenMessage, without the user name.
func forbiddenMessage(a Attributes) string {
	res := a.CombinedResource()
	if a.Namespace != "" {
		return fmt.Sprintf("cannot %s resource %q in API group %q in the namespace %q", a.Verb, res, a.APIGroup, a.Namespace)
	}
	return fmt.Sprintf("cannot %s resource %q in API group %q at the cluster scope", a.Verb, res, a.APIGroup)
}

// SuggestRule returns the narrowest rule, in --rule form, that would allow a resource request a, or "" for a
// non-resource request. Useful to tell a denied caller what to ask for.
func SuggestRule(a Attributes) string {
	if !a.ResourceRequest {
		return ""
	}
	res := a.Resource
	if a.APIGroup != "" {
		res += "." + a.APIGroup
	}
	if a.Subresource != "" {
		res += "/" + a.Subresource
	}
	s := a.Verb + ":" + res
	switch {
	case a.Namespace != "" && a.Name != "":
		s += ":" + a.Namespace + ":" + a.Name
	case a.Namespace != "":
		s += ":" + a.Namespace
	case a.Name != "":
		s += "::" + a.Name
	}
	return s
}

// IsDiscoveryPath reports whether a non-resource path is API discovery, OpenAPI, version or health: what
// Kubernetes' system:discovery and system:public-info-viewer roles grant to every authenticated user. Discovery
// paths are /api, /api/VERSION, /apis, /apis/GROUP, /apis/GROUP/VERSION (each with an optional trailing slash),
// /openapi and anything under /openapi/, /version, /healthz, /livez and /readyz.
func IsDiscoveryPath(p string) bool {
	switch p {
	case "/version", "/version/", "/healthz", "/livez", "/readyz", "/openapi", "/openapi/":
		return true
	}
	if strings.HasPrefix(p, "/openapi/") {
		return true
	}
	segs := strings.Split(strings.TrimSuffix(strings.TrimPrefix(p, "/"), "/"), "/")
	for _, s := range segs[1:] {
		if s == "" || s == "." || s == ".." {
			return false
		}
	}
	switch segs[0] {
	case "api":
		return len(segs) <= 2
	case "apis":
		return len(segs) <= 3
	}
	return false
}

// matches is RBAC's rule matching, except that NamedOnlyResources need naming.
func (r Rule) matches(a Attributes) bool {
	if n := namedOnly(a); n != nil && n.appliesTo(r) && !n.namedBy(r) {
		return false
	}
	return r.matchesRBAC(a)
}

func (r Rule) matchesRBAC(a Attributes) bool {
	return matchVerb(r.Verbs, a.Verb) &&
		matchGroup(r.APIGroups, a.APIGroup) &&
		matchResource(r.Resources, a.Resource, a.Subresource) &&
		matchNamespace(r.Namespaces, a.Namespace) &&
		matchName(r.Names, a.Name)
}

func matchVerb(verbs []string, v string) bool {
	return slices.Contains(verbs, All) || slices.Contains(verbs, v)
}

func matchGroup(groups []string, g string) bool {
	if len(groups) == 0 {
		return g == ""
	}
	return slices.Contains(groups, All) || slices.Contains(groups, g)
}

// matchResource is RBAC's ResourceMatches.
func matchResource(resources []string, res, sub string) bool {
	combined := res
	if sub != "" {
		combined += "/" + sub
	}
	for _, r := range resources {
		if r == All || r == combined {
			return true
		}
		if sub != "" && r == "*/"+sub {
			return true
		}
	}
	return false
}

// matchNamespace: no namespaces or "*" cover everything, cluster scope included; named namespaces cover only
// requests inside one of them.
func matchNamespace(namespaces []string, ns string) bool {
	if len(namespaces) == 0 || slices.Contains(namespaces, All) {
		return true
	}
	return ns != "" && slices.Contains(namespaces, ns)
}

func matchName(names []string, name string) bool {
	if len(names) == 0 || slices.Contains(names, All) {
		return true
	}
	return name != "" && slices.Contains(names, name)
}

// String returns the rule in the --rule form VERBS:RESOURCES[:NAMESPACES[:NAMES]] when it has one API group, else
// a JSON-like rendering.
func (r Rule) String() string {
	groups := r.APIGroups
	if len(groups) == 0 {
		groups = []string{""}
	}
	if len(groups) != 1 {
		return fmt.Sprintf("verbs=%v apiGroups=%q resources=%v namespaces=%v names=%v", r.Verbs, r.APIGroups, r.Resources, r.Namespaces, r.Names)
	}
	res := make([]string, len(r.Resources))
	for i, x := range r.Resources {
		base, sub, hasSub := strings.Cut(x, "/")
		switch {
		case base == All && groups[0] == All && !hasSub:
		case groups[0] != "":
			base += "." + groups[0]
		}
		if hasSub {
			base += "/" + sub
		}
		res[i] = base
	}
	s := strings.Join(r.Verbs, ",") + ":" + strings.Join(res, ",")
	if len(r.Names) > 0 {
		return s + ":" + strings.Join(r.Namespaces, ",") + ":" + strings.Join(r.Names, ",")
	}
	if len(r.Namespaces) > 0 {
		return s + ":" + strings.Join(r.Namespaces, ",")
	}
	return s
}

// Impersonation headers, as Kubernetes reads them.
const (
	impersonateUser       = "Impersonate-User"
	impersonateGroup      = "Impersonate-Group"
	impersonateUID        = "Impersonate-Uid"
	impersonateExtraPrefx = "Impersonate-Extra-"
)

// AuthorizeImpersonation decides whether rules allow the Impersonate-* headers of a request. Without such headers
// it allows. Each impersonated value needs a rule with verb impersonate, as Kubernetes checks it: users, groups
// (API group ""), serviceaccounts (API group "", in the service account's namespace, for a user
// system:serviceaccount:NS:NAME), uids and userextras/KEY (API group authentication.k8s.io), each value as the name.
// Unknown Impersonate-* headers and empty values are denied.
func AuthorizeImpersonation(rules []Rule, h http.Header) (bool, string) {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys) // deterministic reasons
	found := false
	for _, k := range keys {
		ck := http.CanonicalHeaderKey(k)
		if !strings.HasPrefix(ck, "Impersonate-") {
			continue
		}
		found = true
		for _, v := range h[k] {
			a, err := impersonationAttributes(ck, v)
			if err != "" {
				return false, err
			}
			if ok, reason := Authorize(rules, a); !ok {
				return false, reason
			}
		}
		if len(h[k]) == 0 {
			return false, fmt.Sprintf("empty %s header", ck)
		}
	}
	if !found {
		return true, "no impersonation"
	}
	return true, "impersonation allowed"
}

func impersonationAttributes(header, value string) (Attributes, string) {
	a := Attributes{Verb: "impersonate", ResourceRequest: true, Name: value}
	if value == "" {
		return a, fmt.Sprintf("empty %s header", header)
	}
	switch {
	case header == impersonateUser:
		if ns, name, err := serviceaccount.SplitUsername(value); err == nil {
			a.Resource, a.Namespace, a.Name = "serviceaccounts", ns, name
		} else {
			a.Resource = "users"
		}
	case header == impersonateGroup:
		a.Resource = "groups"
	case header == impersonateUID:
		a.APIGroup, a.Resource = "authentication.k8s.io", "uids"
	case strings.HasPrefix(header, impersonateExtraPrefx):
		key := strings.ToLower(header[len(impersonateExtraPrefx):])
		if k, err := url.PathUnescape(key); err == nil {
			key = k
		}
		if key == "" {
			return a, "impersonation extra header without a key"
		}
		a.APIGroup, a.Resource, a.Subresource = "authentication.k8s.io", "userextras", key
	default:
		return a, fmt.Sprintf("unsupported impersonation header %q", clip(header))
	}
	return a, ""
}
