package acquire

import (
	"fmt"
	"strings"

	"github.com/warren-dev/warren/auth"
)

// PresetRule is one rule an acquisition needs, in `warren token issue --rule` form, and what for.
type PresetRule struct {
	Rule string
	Why  string
	// ClusterScope: the rule names no namespace because its resources are cluster-scoped (a rule naming
	// namespaces never covers them).
	ClusterScope bool
}

// Preset is exactly what `warren acquire` asks for in namespaces (the token preset "acquire"): each request of an
// acquisition is allowed by one of these rules, and nothing else is. The cluster-scoped rules (the Node, the
// ClusterRoleBindings and the ClusterRoles they grant) are optional: without them the acquisition records those
// items as skipped ("forbidden").
func Preset(namespaces []string) ([]PresetRule, error) {
	if len(namespaces) == 0 {
		return nil, fmt.Errorf("the acquire preset needs the namespaces of the targets (--namespace N, or * for all)")
	}
	ns := ""
	for i, n := range namespaces {
		if i > 0 {
			ns += ","
		}
		ns += n
	}
	rules := []PresetRule{
		{Rule: "get,list:pods:" + ns, Why: "find the targets (by name, -l or --all) and store the Pod"},
		{Rule: "create:pods/exec:" + ns, Why: "collect inside the containers"},
		{Rule: "get:pods/log:" + ns, Why: "the containers' current and previous logs"},
		{Rule: "list:events:" + ns, Why: "the events about each pod"},
		{Rule: "get:serviceaccounts:" + ns, Why: "each pod's service account"},
		{Rule: "list:rolebindings.rbac.authorization.k8s.io:" + ns, Why: "the RoleBindings that bind it"},
		{Rule: "get:roles.rbac.authorization.k8s.io:" + ns, Why: "the Roles they grant"},
		{Rule: "get:replicasets.apps,deployments.apps,statefulsets.apps,daemonsets.apps:" + ns, Why: "the pod's owner chain"},
		{Rule: "get:jobs.batch,cronjobs.batch:" + ns, Why: "the pod's owner chain (batch)"},
		{Rule: "get:replicationcontrollers:" + ns, Why: "the pod's owner chain (legacy)"},
		{Rule: "get:nodes", Why: "each pod's Node (and its architecture, for the collector binary)", ClusterScope: true},
		{Rule: "list:clusterrolebindings.rbac.authorization.k8s.io", Why: "the ClusterRoleBindings that bind the service account", ClusterScope: true},
		{Rule: "get:clusterroles.rbac.authorization.k8s.io", Why: "the ClusterRoles they grant", ClusterScope: true},
	}
	for _, r := range rules {
		if _, err := auth.ParseRule(r.Rule); err != nil {
			return nil, err
		}
	}
	return rules, nil
}

// Presets are the token presets: acquire (exec), acquire-ephemeral (and the ephemeral mode), acquire-node (and the
// node mode).
var Presets = []string{"acquire", "acquire-ephemeral", "acquire-node"}

// PresetRules are the rules of the presets named (several are merged): each adds to acquire's what its mode needs.
// collectorNamespace is where the node mode creates its pods (Config.CollectorNamespace).
func PresetRules(names []string, namespaces []string, collectorNamespace string) ([]PresetRule, error) {
	rules, err := Preset(namespaces)
	if err != nil {
		return nil, err
	}
	ns := strings.Join(namespaces, ",")
	for _, name := range names {
		switch name {
		case "acquire":
		case "acquire-ephemeral":
			rules = append(rules,
				PresetRule{Rule: "patch:pods/ephemeralcontainers:" + ns, Why: "the ephemeral mode: add the collector as an ephemeral container (it cannot be removed)"},
				PresetRule{Rule: "create:pods/attach:" + ns, Why: "the ephemeral mode: read the collector's sealed stream"})
		case "acquire-node":
			if collectorNamespace == "" {
				collectorNamespace = DefaultConfig().CollectorNamespace
			}
			rules = append(rules,
				PresetRule{Rule: "create,get,delete:pods:" + collectorNamespace, Why: "the node mode: create, watch and delete the collector pod " +
					"(the connector's ceiling should keep it to warren's collector pod: a podSpec rule)"},
				PresetRule{Rule: "create:pods/attach:" + collectorNamespace, Why: "the node mode: read the collector's sealed stream"})
		default:
			return nil, fmt.Errorf("unknown preset %q: want %s", name, strings.Join(Presets, ", "))
		}
	}
	seen := map[string]bool{}
	out := rules[:0]
	for _, r := range rules {
		if _, err := auth.ParseRule(r.Rule); err != nil {
			return nil, err
		}
		if !seen[r.Rule] {
			seen[r.Rule] = true
			out = append(out, r)
		}
	}
	return out, nil
}
