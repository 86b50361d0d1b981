package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/warren-dev/warren/collector"
	"github.com/warren-dev/warren/internal/collectorpod"
)

// PodSpec, in a rule of the connector's ceiling (never in a token), keeps the pods of the rule's namespaces to one
// shape: warren's collector pod (Kind "warren-collector", the node mode's), with one of Images (each pinned by
// digest) and only HostPaths mounted (default collectorpod.DefaultHostPaths). A right to create pods is otherwise a
// right to create any privileged pod on any node; with such a rule the connector reads the body of every pod
// creation there and lets through only exactly that pod (collectorpod.CheckNodePod).
//
// The rule restricts as well as grants: in its namespaces, whatever the other rules say,
//
//   - create pods is allowed only for a body that passes the check;
//   - get, list, watch, delete and deletecollection of pods, create and get of pods/attach, get of pods/log and
//     pods/status are left to the other rules (they read and end the collector, which the token needs);
//   - everything else on pods is refused: update and patch (a pod's image can be changed in place), pods/exec (the
//     collector binary run again with other arguments, as root in the host's PID namespace), pods/ephemeralcontainers
//     (another image in that pod, with its host mounts), pods/portforward, pods/proxy, pods/binding, pods/resize.
//
// A rule with a podSpec must be exactly verbs [create], resources [pods] (the core group) and name namespaces.
type PodSpec struct {
	Kind      string   `json:"kind"`
	Images    []string `json:"images"`
	HostPaths []string `json:"hostPaths,omitempty"`
}

// Allowed is what the check lets through.
func (s *PodSpec) Allowed() collectorpod.Allowed {
	return collectorpod.Allowed{Images: s.Images, HostPaths: s.HostPaths}
}

func (s *PodSpec) validate(r Rule) error {
	if s.Kind != collectorpod.Kind {
		return fmt.Errorf("podSpec kind %q: the only kind is %s", clip(s.Kind), collectorpod.Kind)
	}
	if !slices.Equal(r.Verbs, []string{"create"}) || !slices.Equal(r.Resources, []string{"pods"}) ||
		!(len(r.APIGroups) == 0 || slices.Equal(r.APIGroups, []string{""})) || len(r.Names) > 0 {
		return errors.New("a rule with a podSpec must be verbs [create], resources [pods], no apiGroups but the core group, no names")
	}
	if len(r.Namespaces) == 0 || slices.Contains(r.Namespaces, All) {
		return errors.New("a rule with a podSpec must name its namespaces (the collector's), not every namespace")
	}
	if len(s.Images) == 0 {
		return errors.New("podSpec: no images: list warren's collector image(s), each pinned by digest (NAME@sha256:...)")
	}
	for _, img := range s.Images {
		if !collectorpod.ValidImage(img) {
			return fmt.Errorf("podSpec image %q: want a reference pinned by digest, NAME@sha256:<64 hex digits>", clip(img))
		}
	}
	for _, p := range s.HostPaths {
		if !collector.CleanAbsDir(p) {
			return fmt.Errorf("podSpec host path %q: want an absolute, clean directory", clip(p))
		}
	}
	return nil
}

// podsSafeInCollectorNS are the requests on pods a collector namespace leaves to the other rules.
func podsSafeInCollectorNS(verb, sub string) bool {
	switch sub {
	case "":
		return verb == "get" || verb == "list" || verb == "watch" || verb == "delete" || verb == "deletecollection"
	case "attach":
		return verb == "create" || verb == "get"
	case "log", "status":
		return verb == "get"
	}
	return false
}

// PodSpecDecision is what a ceiling says about a request its podSpec rules speak for.
type PodSpecDecision struct {
	// Restricted: a podSpec rule covers the request's namespace and resource (pods).
	Restricted bool
	// Check, for a pod creation, are the podSpec rules whose check the body must pass (one is enough).
	Check []*PodSpec
	// Refusal, when set, is why the request is refused whatever the other rules say.
	Refusal string
}

// PodSpecFor says how the ceiling's podSpec rules stand on a.
func (p *Policy) PodSpecFor(a Attributes) PodSpecDecision {
	var d PodSpecDecision
	if p == nil || !a.ResourceRequest || a.APIGroup != "" || a.Resource != "pods" {
		return d
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		if r.PodSpec != nil && slices.Contains(r.Namespaces, a.Namespace) {
			d.Restricted = true
			d.Check = append(d.Check, r.PodSpec)
		}
	}
	if !d.Restricted {
		return d
	}
	switch {
	case a.Verb == "create" && a.Subresource == "":
	case podsSafeInCollectorNS(a.Verb, a.Subresource):
		d.Check = nil
	default:
		d.Check = nil
		what := "pods"
		if a.Subresource != "" {
			what += "/" + a.Subresource
		}
		d.Refusal = fmt.Sprintf("in namespace %q pods are kept to warren's collector pod (a podSpec rule): %s %s is refused there",
			a.Namespace, a.Verb, what)
	}
	return d
}

// podSpecNames lists the kinds and images a decision checks against, for messages.
func (d PodSpecDecision) describe() string {
	var imgs []string
	for _, s := range d.Check {
		imgs = append(imgs, s.Images...)
	}
	return collectorpod.Kind + " with image " + strings.Join(imgs, " or ")
}
