package acquire

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warren-dev/warren/evidence"
)

// DefaultAllowModes are the modes ModeAuto may use: exec, then the ephemeral container (with consent, given by
// --allow-modes or at a terminal prompt: it cannot be removed from the pod). The node mode creates a privileged pod
// and is never in the default.
var DefaultAllowModes = []string{ModeExec, ModeEphemeral}

// modeOrder is the order ModeAuto tries the modes in.
var modeOrder = []string{ModeExec, ModeEphemeral, ModeNode}

// Traces of the modes that leave one, for the consent question and the statement.
const (
	ephemeralTrace = "an ephemeral container cannot be removed from its pod once added: it stays in the pod's spec and status " +
		"(terminated once the collector exits) for the pod's life, and its output, sealed with a key only warren has, " +
		"stays in the node's container log"
	nodeTrace = "the node mode creates a short-lived pod on the target's node that runs warren's collector as root in the " +
		"node's PID namespace, with containerd's directories mounted read-only; warren deletes it afterwards"
)

// chain is the modes to try for the run, in order.
func (c Config) chain() []string {
	if c.Mode != ModeAuto {
		return []string{c.Mode}
	}
	var out []string
	for _, m := range modeOrder {
		if slices.Contains(c.AllowModes, m) {
			out = append(out, m)
		}
	}
	return out
}

// consents remembers the examiner's answers for the run.
type consents struct {
	mu      sync.Mutex
	answers map[string]string // mode -> how consent was given ("" : refused)
	asked   map[string]bool
}

// consent says whether mode may leave its trace, and how the examiner agreed: given beforehand (Consented), or
// asked once per run at a terminal (Confirm). Nothing else counts.
func (r *run) consent(ctx context.Context, mode string) (bool, string) {
	if mode == ModeExec {
		return true, ""
	}
	if slices.Contains(r.cfg.Consented, mode) {
		return true, r.cfg.ConsentedBy
	}
	r.consents.mu.Lock()
	defer r.consents.mu.Unlock()
	if r.consents.answers == nil {
		r.consents.answers, r.consents.asked = map[string]string{}, map[string]bool{}
	}
	if r.consents.asked[mode] {
		how := r.consents.answers[mode]
		return how != "", how
	}
	if r.cfg.Confirm == nil {
		return false, ""
	}
	trace := ephemeralTrace
	if mode == ModeNode {
		trace = nodeTrace
	}
	r.consents.asked[mode] = true
	if r.cfg.Confirm(ctx, mode, trace) {
		how := "confirmed at the terminal prompt at " + r.cfg.Now().UTC().Format(time.RFC3339)
		r.consents.answers[mode] = how
		return true, how
	}
	return false, ""
}

func notConsentedReason(mode string) string {
	trace := ephemeralTrace
	if mode == ModeNode {
		trace = nodeTrace
	}
	return trace + ": not used without consent: give --allow-modes with " + mode + " for unattended runs, or run warren acquire on a terminal to be asked"
}

// action is one thing a mode needs the token, the ceiling and RBAC to allow.
type action struct {
	verb, resource, subresource, namespace, name string
}

func (a action) String() string {
	res := a.resource
	if a.subresource != "" {
		res += "/" + a.subresource
	}
	return a.verb + " " + res + " in namespace " + a.namespace
}

// needs are the actions of mode for target t.
func (r *run) needs(mode string, t *target) []action {
	switch mode {
	case ModeExec:
		return []action{{"create", "pods", "exec", t.namespace, t.pod}}
	case ModeEphemeral:
		return []action{
			{"patch", "pods", "ephemeralcontainers", t.namespace, t.pod},
			{"create", "pods", "attach", t.namespace, t.pod},
		}
	case ModeNode:
		ns := r.cfg.CollectorNamespace
		return []action{
			{"create", "pods", "", ns, ""},
			{"create", "pods", "attach", ns, ""},
			{"get", "pods", "", ns, ""},
			{"delete", "pods", "", ns, ""},
		}
	}
	return nil
}

// permitted asks, once per run for each action, whether the token, the connector's ceiling and RBAC allow what
// mode needs for t; it returns every refusal, in words, with the rule to add.
func (r *run) permitted(ctx context.Context, mode string, t *target) (bool, string) {
	var refusals []string
	for _, a := range r.needs(mode, t) {
		ok, why := r.review(ctx, a)
		if !ok {
			refusals = append(refusals, why)
		}
	}
	if len(refusals) > 0 {
		return false, strings.Join(dedupe(refusals), "; ")
	}
	return true, ""
}

type reviewAnswer struct {
	ok  bool
	why string
}

// review asks about a in its namespace, and only when that is refused about its pod (rules may name pods), each
// question once per run.
func (r *run) review(ctx context.Context, a action) (bool, string) {
	ok, why := r.reviewCached(ctx, a, "")
	if ok || a.name == "" {
		return ok, why
	}
	return r.reviewCached(ctx, a, a.name)
}

func (r *run) reviewCached(ctx context.Context, a action, name string) (bool, string) {
	v, _ := r.shared.get(ctx, "review/"+a.String()+"/"+name, func(ctx context.Context) (any, error) {
		ok, why, err := r.ask(ctx, a, name)
		if err != nil {
			// An older gateway or connector forwards the review to the API server: the request itself will tell.
			r.cfg.Observer.Warn(fmt.Sprintf("cannot ask whether the token may %s (%v); going on", a, err))
			return reviewAnswer{ok: true}, nil
		}
		return reviewAnswer{ok, why}, nil
	})
	ans, _ := v.(reviewAnswer)
	return ans.ok, ans.why
}

// ask sends one SelfSubjectAccessReview and says who refused, in words.
func (r *run) ask(ctx context.Context, a action, name string) (bool, string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	rev, err := r.cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: a.verb, Resource: a.resource, Subresource: a.subresource, Namespace: a.namespace, Name: name}},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, "", err
	}
	st := rev.Status
	if st.Allowed {
		return true, "", nil
	}
	switch why := st.Reason; {
	case strings.HasPrefix(why, reviewByGateway):
		return false, strings.TrimPrefix(why, reviewByGateway), nil
	case strings.HasPrefix(why, reviewByConnector):
		return false, "the connector refuses it: " + strings.TrimPrefix(why, reviewByConnector), nil
	}
	detail := ""
	if st.Reason != "" || st.EvaluationError != "" {
		detail = " (" + strings.TrimSpace(st.Reason+" "+st.EvaluationError) + ")"
	}
	return false, fmt.Sprintf("the cluster's RBAC does not let the connector %s%s: ask the cluster's admin to grant it "+
		"(the warren-connector chart does with acquisition.ephemeral.enabled or acquisition.node.enabled)", a, detail), nil
}

// attempts collects a target's mode attempts.
type attempts []evidence.ModeAttempt

func (as *attempts) add(mode, outcome, reason string) {
	*as = append(*as, evidence.ModeAttempt{Mode: mode, Outcome: outcome, Reason: reason})
}

// summary says why no mode was used, for the target's failure.
func (as attempts) summary() string {
	var parts []string
	for _, a := range as {
		parts = append(parts, a.Mode+": "+a.Outcome+": "+a.Reason)
	}
	return strings.Join(parts, "; ")
}

// usable are the modes of the chain that could be used at all: exec, and those consented to or that a prompt can
// ask about.
func (r *run) usable() []string {
	var out []string
	for _, m := range r.cfg.chain() {
		if m == ModeExec || slices.Contains(r.cfg.Consented, m) || r.cfg.Confirm != nil {
			out = append(out, m)
		}
	}
	return out
}

// preflightModes asks, before anything moves, whether the token may do what the run's modes need. Exec is asked as
// before (per namespace, then per pod); where the token may not exec, auto mode goes on if another usable mode is
// permitted for every such target (each target then records exec as not permitted); otherwise nothing is collected
// and the error lists what each mode lacks. An explicit ephemeral or node mode needs its own rights for every target.
func (r *run) preflightModes(ctx context.Context, targets []*target) error {
	chain := r.cfg.chain()
	var runnable []*target
	for _, t := range targets {
		if t.problem == "" {
			runnable = append(runnable, t)
		}
	}
	if len(runnable) == 0 {
		return nil
	}
	if chain[0] != ModeExec {
		var refusals []string
		for _, t := range runnable {
			if ok, why := r.permitted(ctx, chain[0], t); !ok {
				refusals = append(refusals, why)
			}
		}
		if len(refusals) > 0 {
			return fmt.Errorf("%w: nothing was collected: --mode %s: %s", ErrNotAllowed, chain[0], strings.Join(dedupe(refusals), "; "))
		}
		return nil
	}
	err := preflight(ctx, r.cs, runnable, r.cfg.RequestTimeout, r.cfg.Observer.Warn)
	usable := r.usable()
	if err == nil || len(usable) == 1 {
		return err
	}
	var refusals []string
	for _, t := range runnable {
		if ok, _ := r.permitted(ctx, ModeExec, t); ok {
			continue
		}
		found := false
		var why []string
		for _, m := range usable[1:] {
			ok, w := r.permitted(ctx, m, t)
			if ok {
				found = true
				break
			}
			why = append(why, m+" mode: "+w)
		}
		if !found {
			refusals = append(refusals, why...)
		}
	}
	if len(refusals) > 0 {
		return fmt.Errorf("%w; %s", err, strings.Join(dedupe(refusals), "; "))
	}
	return nil
}
