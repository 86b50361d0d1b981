package acquire

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/warren-dev/warren/evidence"
)

// target is one container to acquire.
type target struct {
	namespace, pod, container string
	dir                       string
	obj                       *corev1.Pod // as found; nil when the pod could not be read
	// problem, when set, is why the target cannot be acquired (not running, no such container): it is recorded
	// as failed without an exec.
	problem string
}

func (t *target) name() string { return t.namespace + "/" + t.pod + "/" + t.container }

// findTargets resolves the configured targets to containers, in a stable order (namespace, pod, container as the
// pod lists them). A named pod that cannot be read is a target with a problem, not an error; a list that cannot be
// made is an error (nothing could be found).
func findTargets(ctx context.Context, cs kubernetes.Interface, c Config) ([]*target, error) {
	type request struct {
		pod       *corev1.Pod
		container string // "" for every container (or -c)
	}
	var reqs []request
	var out []*target
	rctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
	defer cancel()
	if len(c.Pods) > 0 {
		seen := map[string]bool{}
		got := map[string]*corev1.Pod{}
		for _, p := range c.Pods {
			name, container, _ := strings.Cut(p, "/")
			if seen[name+"/"+container] {
				continue
			}
			seen[name+"/"+container] = true
			pod, ok := got[name]
			if !ok {
				var err error
				if pod, err = cs.CoreV1().Pods(c.Namespace).Get(rctx, name, metav1.GetOptions{}); err != nil {
					if container == "" {
						container = c.Container
					}
					out = append(out, &target{namespace: c.Namespace, pod: name, container: container, problem: podError(c.Namespace, name, err)})
					continue
				}
				got[name] = pod
			}
			reqs = append(reqs, request{pod, container})
		}
	} else {
		ns := c.Namespace
		if c.AllNamespaces {
			ns = ""
		}
		list, err := cs.CoreV1().Pods(ns).List(rctx, metav1.ListOptions{LabelSelector: c.Selector})
		if err != nil {
			return nil, fmt.Errorf("cannot list the pods of %s: %w", nsWhere(c), err)
		}
		if len(list.Items) == 0 {
			if c.Selector != "" {
				return nil, fmt.Errorf("no pod matches -l %s in %s", c.Selector, nsWhere(c))
			}
			return nil, fmt.Errorf("no pod in %s", nsWhere(c))
		}
		for i := range list.Items {
			reqs = append(reqs, request{pod: &list.Items[i]})
		}
		sort.SliceStable(reqs, func(i, j int) bool {
			a, b := reqs[i].pod, reqs[j].pod
			return a.Namespace < b.Namespace || (a.Namespace == b.Namespace && a.Name < b.Name)
		})
	}
	for _, r := range reqs {
		switch ctr := cmpOr(r.container, c.Container); {
		case ctr != "":
			out = append(out, newTarget(r.pod, ctr))
		default:
			for _, x := range r.pod.Spec.Containers {
				out = append(out, newTarget(r.pod, x.Name))
			}
		}
	}
	seen := map[string]bool{}
	uniq := out[:0]
	for _, t := range out {
		if seen[t.name()] {
			continue // "p" and "p/main" name the same container
		}
		seen[t.name()] = true
		dir, err := evidence.TargetDir(t.namespace, t.pod, t.container)
		if err != nil && t.problem == "" {
			t.problem = err.Error()
		}
		t.dir = dir
		uniq = append(uniq, t)
	}
	return uniq, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func nsWhere(c Config) string {
	if c.AllNamespaces {
		return "any namespace"
	}
	return "namespace " + c.Namespace
}

func podError(ns, name string, err error) string {
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Sprintf("pod %s/%s not found", ns, name)
	case apierrors.IsForbidden(err):
		return fmt.Sprintf("cannot read pod %s/%s: %v", ns, name, apierrors.ReasonForError(err))
	}
	return fmt.Sprintf("cannot read pod %s/%s: %v", ns, name, err)
}

// newTarget is container ctr of pod, with the problem that stops an exec into it, if any.
func newTarget(pod *corev1.Pod, ctr string) *target {
	t := &target{namespace: pod.Namespace, pod: pod.Name, container: ctr, obj: pod}
	found := false
	var names []string
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
		found = found || c.Name == ctr
	}
	switch {
	case !found:
		t.problem = fmt.Sprintf("pod %s/%s has no container %q (it has %s)", pod.Namespace, pod.Name, ctr, strings.Join(names, ", "))
	case pod.Status.Phase != corev1.PodRunning:
		t.problem = fmt.Sprintf("pod %s/%s is %s, not Running: exec needs a running container (for a stopped pod, acquire its node's disk: warren acquire volume)",
			pod.Namespace, pod.Name, phase(pod))
	default:
		for _, s := range pod.Status.ContainerStatuses {
			if s.Name == ctr && s.State.Running == nil {
				why := "not started"
				switch {
				case s.State.Waiting != nil:
					why = "waiting: " + s.State.Waiting.Reason
				case s.State.Terminated != nil:
					why = fmt.Sprintf("terminated: %s, exit %d", s.State.Terminated.Reason, s.State.Terminated.ExitCode)
				}
				t.problem = fmt.Sprintf("container %s of pod %s/%s is not running (%s): exec needs a running container", ctr, pod.Namespace, pod.Name, why)
			}
		}
	}
	return t
}

func phase(pod *corev1.Pod) string {
	if pod.DeletionTimestamp != nil {
		return "being deleted"
	}
	if pod.Status.Phase == "" {
		return "Pending"
	}
	return string(pod.Status.Phase)
}

// containerStatusOf is the status of container name, if the kubelet reported one.
func containerStatusOf(pod *corev1.Pod, name string) (corev1.ContainerStatus, bool) {
	for _, s := range pod.Status.ContainerStatuses {
		if s.Name == name {
			return s, true
		}
	}
	return corev1.ContainerStatus{}, false
}

// imageOf is the image the pod's spec names for container name.
func imageOf(pod *corev1.Pod, name string) string {
	for _, c := range pod.Spec.Containers {
		if c.Name == name {
			return c.Image
		}
	}
	return ""
}
