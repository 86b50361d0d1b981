package acquire

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ErrNotAllowed is matched by Run's error when the token (or the connector's ceiling, or RBAC) does not allow the
// execs an acquisition needs: nothing was collected.
var ErrNotAllowed = errors.New("not allowed")

// Reviews answered by warren start with these (package internal/review): the layer that refused.
const (
	reviewByGateway   = "warren gateway: "
	reviewByConnector = "warren connector: "
)

// preflight asks, before anything moves, whether the execs may go: the gateway answers for the token, the
// connector for its ceiling, the API server's RBAC for the identity the connector acts as. A namespace is asked
// once without a name (a rule without names covers every pod); only when that is refused is each pod asked (rules
// may name pods). Every refusal is collected, so the error says all that is missing at once.
func preflight(ctx context.Context, cs kubernetes.Interface, targets []*target, timeout time.Duration, warn func(string)) error {
	byNS := map[string][]string{}
	for _, t := range targets {
		if t.problem == "" && !contains(byNS[t.namespace], t.pod) {
			byNS[t.namespace] = append(byNS[t.namespace], t.pod)
		}
	}
	var refusals []string
	for _, ns := range sortedKeys(setOf(byNS)) {
		ok, reason, err := mayExec(ctx, cs, ns, "", timeout)
		if err != nil {
			// An older gateway or connector forwards the review to the API server, which may not answer for the
			// token; the execs will tell.
			warn(fmt.Sprintf("cannot ask whether the token may exec into pods of namespace %s (%v); going on", ns, err))
			continue
		}
		if ok {
			continue
		}
		for _, pod := range byNS[ns] {
			ok, podReason, err := mayExec(ctx, cs, ns, pod, timeout)
			if err != nil {
				refusals = append(refusals, reason)
				break
			}
			if !ok {
				refusals = append(refusals, podReason)
			}
		}
	}
	if len(refusals) == 0 {
		return nil
	}
	return fmt.Errorf("%w: nothing was collected: %s", ErrNotAllowed, strings.Join(dedupe(refusals), "; "))
}

// mayExec asks for create pods/exec in ns (for one pod when name is set) and says who refused, in words.
func mayExec(ctx context.Context, cs kubernetes.Interface, ns, name string, timeout time.Duration) (bool, string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rev, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: "create", Resource: "pods", Subresource: "exec", Namespace: ns, Name: name}},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, "", err
	}
	st := rev.Status
	if st.Allowed {
		return true, "", nil
	}
	switch r := st.Reason; {
	case strings.HasPrefix(r, reviewByGateway):
		return false, strings.TrimPrefix(r, reviewByGateway), nil
	case strings.HasPrefix(r, reviewByConnector):
		return false, "the connector refuses it: " + strings.TrimPrefix(r, reviewByConnector), nil
	}
	what := "pods"
	if name != "" {
		what = "pod " + name
	}
	why := ""
	if st.Reason != "" || st.EvaluationError != "" {
		why = " (" + strings.TrimSpace(st.Reason+" "+st.EvaluationError) + ")"
	}
	return false, fmt.Sprintf("the cluster's RBAC does not let the connector exec into %s of namespace %s%s: "+
		"ask the cluster's admin to grant create on pods/exec there (the warren-connector chart's default RBAC does)", what, ns, why), nil
}

// expiryWarning says when the token would expire before the acquisition's estimated end (every target taking
// its whole time budget, Parallel at a time), which a gateway started with --disconnect-expired-tokens ends
// streams at.
func expiryWarning(expiry, now time.Time, targets, parallel int, budget time.Duration, refreshing bool) string {
	if expiry.IsZero() || targets == 0 {
		return ""
	}
	rounds := (targets + parallel - 1) / parallel
	end := now.Add(time.Duration(rounds) * budget)
	switch {
	case !expiry.After(now):
		return fmt.Sprintf("the token expired at %s: issue a new one", expiry.UTC().Format(time.RFC3339))
	case expiry.Before(now.Add(budget)) || (!refreshing && expiry.Before(end)):
		what := "a fresh token is fetched for new requests (--token-command), but a stream that started with the old one ends when it expires"
		if !refreshing {
			what = "later targets fail, and streams end then"
		}
		return fmt.Sprintf("the token expires at %s (in %s), before the acquisition's estimated end (%s, %d target(s), %d at a time, up to %s each); "+
			"a gateway with --disconnect-expired-tokens ends streams at expiry: %s. Use a token valid longer (warren token issue --ttl), or --token-command",
			expiry.UTC().Format(time.RFC3339), expiry.Sub(now).Round(time.Second), end.UTC().Format(time.RFC3339), targets, parallel, budget, what)
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func setOf[V any](m map[string]V) map[string]bool {
	out := map[string]bool{}
	for k := range m {
		out[k] = true
	}
	return out
}

func dedupe(list []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range list {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}
