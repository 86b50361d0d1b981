package acquire

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/warren-dev/warren/collector"
	"github.com/warren-dev/warren/evidence"
)

// Archive paths of the Kubernetes-side evidence.
const (
	kubeDir = "kubernetes/"
)

// maxOwnerDepth bounds the owner chain followed (Pod → ReplicaSet → Deployment is 2).
const maxOwnerDepth = 5

// maxListItems bounds what one list the acquirer makes may bring (events of a pod, a namespace's RoleBindings, the
// ClusterRoleBindings): the cluster is the suspect, and its answers are bounded like the rest. A list cut there is
// noted as a size-cap skip.
const maxListItems = 5000

// kubeEvidence collects the Kubernetes-side evidence of one target, read-only, through the gateway. A refusal
// (the token's scope, the connector's ceiling, RBAC) or a missing object is a recorded skip, never a failure.
type kubeEvidence struct {
	cs         kubernetes.Interface
	dyn        dynamic.Interface
	redactor   *collector.Redactor
	maxLog     int64
	timeout    time.Duration // each plain request
	logTimeout time.Duration // each log (the target's time budget)
	now        func() time.Time
	shared     *shared

	// Filled as it goes.
	skipped []evidence.Skip
	notes   []evidence.FileNote
}

// entrySink is where entries go (the archive, through the target's sink).
type entrySink interface {
	WriteEntry(hdr *tar.Header, body io.Reader) error
}

func (k *kubeEvidence) skip(path string, err error) {
	reason := "error"
	switch {
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		reason = "forbidden"
	case apierrors.IsNotFound(err):
		reason = "not-found"
	}
	k.skipped = append(k.skipped, evidence.Skip{Path: path, Reason: reason, Detail: clip(err.Error(), 500)})
}

// capped notes a list that had more than maxListItems items (its continue token is set).
func (k *kubeEvidence) capped(path, cont string) {
	if cont != "" {
		k.skipped = append(k.skipped, evidence.Skip{Path: path, Reason: collector.ReasonSizeCap, Detail: fmt.Sprintf("the first %d items only", maxListItems)})
	}
}

func (k *kubeEvidence) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, k.timeout)
}

// writeJSON stores v as indented JSON.
func writeJSON(sink entrySink, name string, v any, mtime time.Time) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	return sink.WriteEntry(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: mtime, Typeflag: tar.TypeReg}, bytes.NewReader(b))
}

// node fetches the target's Node (for node.json and the collector's architecture).
func (k *kubeEvidence) node(ctx context.Context, name string) *corev1.Node {
	if name == "" {
		return nil
	}
	v, err := k.shared.get(ctx, "node/"+name, func(ctx context.Context) (any, error) {
		ctx, cancel := k.reqCtx(ctx)
		defer cancel()
		return k.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	})
	if err != nil {
		k.skip(kubeDir+"node.json", err)
		return nil
	}
	return v.(*corev1.Node)
}

// collect writes the Kubernetes-side entries of a target: the pod as found, its owners, events, service account,
// the bindings that bind it and their roles, the node, the names of the secrets it refers to, and the container's
// current and previous logs.
func (k *kubeEvidence) collect(ctx context.Context, sink entrySink, pod *corev1.Pod, container string, node *corev1.Node) error {
	now := k.now()
	podJSON, redacted, err := k.redactedJSON(pod)
	if err != nil {
		return err
	}
	if err := k.writeRedacted(sink, kubeDir+"pod.json", podJSON, redacted, now); err != nil {
		return err
	}
	if err := k.owners(ctx, sink, pod, now); err != nil {
		return err
	}
	if err := k.events(ctx, sink, pod, now); err != nil {
		return err
	}
	sa, err := k.serviceAccount(ctx, sink, pod, now)
	if err != nil {
		return err
	}
	if err := k.bindings(ctx, sink, pod, now); err != nil {
		return err
	}
	if node != nil {
		if err := writeJSON(sink, kubeDir+"node.json", node, now); err != nil {
			return err
		}
	}
	if err := writeJSON(sink, kubeDir+"secret-names.json", secretNames(pod, sa), now); err != nil {
		return err
	}
	if err := writeJSON(sink, kubeDir+"containers.json", containerStatuses(pod), now); err != nil {
		return err
	}
	for _, previous := range []bool{false, true} {
		if err := k.log(ctx, sink, pod, container, previous); err != nil {
			return err
		}
	}
	return nil
}

// writeRedacted stores b; when values were redacted, the original's size is noted (not its hash: with the rest
// stored, a hash would let anyone with the archive confirm a guessed value, as the collector reasons).
func (k *kubeEvidence) writeRedacted(sink entrySink, name string, b []byte, redacted redaction, mtime time.Time) error {
	if redacted.count > 0 {
		k.notes = append(k.notes, evidence.FileNote{Path: name, Size: int64(len(b)), Redacted: true, OriginalSize: redacted.originalSize})
	}
	return sink.WriteEntry(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: mtime, Typeflag: tar.TypeReg}, bytes.NewReader(b))
}

type redaction struct {
	count        int
	originalSize int64
}

// redactedJSON is obj as indented JSON with the env values that match the redaction patterns replaced, also inside
// the last-applied-configuration annotation (which kubectl apply fills with the whole object, env included).
func (k *kubeEvidence) redactedJSON(obj any) ([]byte, redaction, error) {
	orig, err := json.MarshalIndent(obj, "", "  ")
	if err != nil {
		return nil, redaction{}, err
	}
	var tree any
	if err := json.Unmarshal(orig, &tree); err != nil {
		return nil, redaction{}, err
	}
	n := k.redactTree(tree)
	if n == 0 {
		return append(orig, '\n'), redaction{}, nil
	}
	out, err := json.MarshalIndent(tree, "", "  ")
	if err != nil {
		return nil, redaction{}, err
	}
	return append(out, '\n'), redaction{count: n, originalSize: int64(len(orig) + 1)}, nil
}

const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// redactTree redacts, in place, the value of every {"name": N, "value": V} element of an "env" list whose name (or
// value) the redactor matches, and does the same inside a last-applied-configuration annotation. It returns how
// many it redacted.
func (k *kubeEvidence) redactTree(v any) int {
	n := 0
	switch t := v.(type) {
	case map[string]any:
		for key, val := range t {
			if key == "env" {
				if list, ok := val.([]any); ok {
					for _, item := range list {
						if e, ok := item.(map[string]any); ok {
							name, _ := e["name"].(string)
							value, hasValue := e["value"].(string)
							if hasValue && k.redactor.Match(name, value) {
								e["value"] = collector.RedactedValue
								n++
							}
						}
					}
				}
			}
			if key == lastApplied {
				if s, ok := val.(string); ok {
					var inner any
					if json.Unmarshal([]byte(s), &inner) == nil {
						if m := k.redactTree(inner); m > 0 {
							b, _ := json.Marshal(inner)
							t[key] = string(b)
							n += m
						}
					}
				}
				continue
			}
			n += k.redactTree(val)
		}
	case []any:
		for _, item := range t {
			n += k.redactTree(item)
		}
	}
	return n
}

// owners follows the controller owner references up from the pod (ReplicaSet, Deployment, Job, CronJob, ...).
func (k *kubeEvidence) owners(ctx context.Context, sink entrySink, pod *corev1.Pod, now time.Time) error {
	refs, ns := pod.OwnerReferences, pod.Namespace
	for depth := 1; depth <= maxOwnerDepth; depth++ {
		ref := controllerOf(refs)
		if ref == nil {
			return nil
		}
		name := fmt.Sprintf("%sowners/%d-%s-%s.json", kubeDir, depth, strings.ToLower(ref.Kind), ref.Name)
		gvr, ok := resourceFor(ref)
		if !ok {
			k.skipped = append(k.skipped, evidence.Skip{Path: name, Reason: "unsupported", Detail: "owner kind " + ref.APIVersion + " " + ref.Kind})
			return nil
		}
		rctx, cancel := k.reqCtx(ctx)
		obj, err := k.dyn.Resource(gvr).Namespace(ns).Get(rctx, ref.Name, metav1.GetOptions{})
		cancel()
		if err != nil {
			k.skip(name, err)
			return nil
		}
		if obj.GetUID() != ref.UID {
			k.skipped = append(k.skipped, evidence.Skip{Path: name, Reason: "not-found", Detail: fmt.Sprintf("%s %s has UID %s, the owner reference names %s", ref.Kind, ref.Name, obj.GetUID(), ref.UID)})
			return nil
		}
		b, red, err := k.redactedJSON(obj.Object)
		if err != nil {
			return err
		}
		if err := k.writeRedacted(sink, name, b, red, now); err != nil {
			return err
		}
		refs = obj.GetOwnerReferences()
	}
	return nil
}

func controllerOf(refs []metav1.OwnerReference) *metav1.OwnerReference {
	for i := range refs {
		if refs[i].Controller != nil && *refs[i].Controller {
			return &refs[i]
		}
	}
	if len(refs) > 0 {
		return &refs[0]
	}
	return nil
}

// ownerResources maps the owner kinds of the built-in workload controllers to their resources. Other kinds
// (operators' custom resources) are recorded as skipped: following them needs discovery and rules the preset
// cannot know in advance.
var ownerResources = map[schema.GroupKind]string{
	{Group: "apps", Kind: "ReplicaSet"}:        "replicasets",
	{Group: "apps", Kind: "Deployment"}:        "deployments",
	{Group: "apps", Kind: "StatefulSet"}:       "statefulsets",
	{Group: "apps", Kind: "DaemonSet"}:         "daemonsets",
	{Group: "batch", Kind: "Job"}:              "jobs",
	{Group: "batch", Kind: "CronJob"}:          "cronjobs",
	{Group: "", Kind: "ReplicationController"}: "replicationcontrollers",
}

func resourceFor(ref *metav1.OwnerReference) (schema.GroupVersionResource, bool) {
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return schema.GroupVersionResource{}, false
	}
	res, ok := ownerResources[schema.GroupKind{Group: gv.Group, Kind: ref.Kind}]
	return gv.WithResource(res), ok
}

// events stores the events about the pod.
func (k *kubeEvidence) events(ctx context.Context, sink entrySink, pod *corev1.Pod, now time.Time) error {
	ctx, cancel := k.reqCtx(ctx)
	defer cancel()
	list, err := k.cs.CoreV1().Events(pod.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.uid=" + string(pod.UID), Limit: maxListItems})
	if err != nil {
		k.skip(kubeDir+"events.json", err)
		return nil
	}
	k.capped(kubeDir+"events.json", list.Continue)
	list.APIVersion, list.Kind = "v1", "EventList"
	return writeJSON(sink, kubeDir+"events.json", list, now)
}

func (k *kubeEvidence) serviceAccount(ctx context.Context, sink entrySink, pod *corev1.Pod, now time.Time) (*corev1.ServiceAccount, error) {
	name := pod.Spec.ServiceAccountName
	if name == "" {
		name = "default"
	}
	v, err := k.shared.get(ctx, "serviceaccount/"+pod.Namespace+"/"+name, func(ctx context.Context) (any, error) {
		ctx, cancel := k.reqCtx(ctx)
		defer cancel()
		return k.cs.CoreV1().ServiceAccounts(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	})
	if err != nil {
		k.skip(kubeDir+"serviceaccount.json", err)
		return nil, nil
	}
	sa := v.(*corev1.ServiceAccount).DeepCopy()
	sa.APIVersion, sa.Kind = "v1", "ServiceAccount"
	return sa, writeJSON(sink, kubeDir+"serviceaccount.json", sa, now)
}

// boundRoles is rolebindings.json: the RoleBindings of the pod's namespace and the ClusterRoleBindings that bind
// its service account (by name, or through the groups every service account is in), and the roles they grant.
type boundRoles struct {
	ServiceAccount      string                      `json:"serviceAccount"`
	RoleBindings        []rbacv1.RoleBinding        `json:"roleBindings"`
	ClusterRoleBindings []rbacv1.ClusterRoleBinding `json:"clusterRoleBindings"`
	Roles               []rbacv1.Role               `json:"roles"`
	ClusterRoles        []rbacv1.ClusterRole        `json:"clusterRoles"`
}

func (k *kubeEvidence) bindings(ctx context.Context, sink entrySink, pod *corev1.Pod, now time.Time) error {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	ns := pod.Namespace
	out := boundRoles{ServiceAccount: "system:serviceaccount:" + ns + ":" + sa,
		RoleBindings: []rbacv1.RoleBinding{}, ClusterRoleBindings: []rbacv1.ClusterRoleBinding{}, Roles: []rbacv1.Role{}, ClusterRoles: []rbacv1.ClusterRole{}}
	binds := func(subjects []rbacv1.Subject, bindingNS string) bool {
		for _, s := range subjects {
			switch {
			case s.Kind == rbacv1.ServiceAccountKind && s.Name == sa && (s.Namespace == ns || (s.Namespace == "" && bindingNS == ns)):
				return true
			case s.Kind == rbacv1.GroupKind && slices.Contains([]string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}, s.Name):
				return true
			case s.Kind == rbacv1.UserKind && s.Name == out.ServiceAccount:
				return true
			}
		}
		return false
	}
	roles, clusterRoles := map[string]bool{}, map[string]bool{}
	v, err := k.shared.get(ctx, "rolebindings/"+ns, func(ctx context.Context) (any, error) {
		ctx, cancel := k.reqCtx(ctx)
		defer cancel()
		return k.cs.RbacV1().RoleBindings(ns).List(ctx, metav1.ListOptions{Limit: maxListItems})
	})
	if err != nil {
		k.skip(kubeDir+"rolebindings.json#roleBindings", err)
	} else {
		k.capped(kubeDir+"rolebindings.json#roleBindings", v.(*rbacv1.RoleBindingList).Continue)
		for _, b := range v.(*rbacv1.RoleBindingList).Items {
			if binds(b.Subjects, ns) {
				out.RoleBindings = append(out.RoleBindings, b)
				if b.RoleRef.Kind == "ClusterRole" {
					clusterRoles[b.RoleRef.Name] = true
				} else {
					roles[b.RoleRef.Name] = true
				}
			}
		}
	}
	v, err = k.shared.get(ctx, "clusterrolebindings", func(ctx context.Context) (any, error) {
		ctx, cancel := k.reqCtx(ctx)
		defer cancel()
		return k.cs.RbacV1().ClusterRoleBindings().List(ctx, metav1.ListOptions{Limit: maxListItems})
	})
	if err != nil {
		k.skip(kubeDir+"rolebindings.json#clusterRoleBindings", err)
	} else {
		k.capped(kubeDir+"rolebindings.json#clusterRoleBindings", v.(*rbacv1.ClusterRoleBindingList).Continue)
		for _, b := range v.(*rbacv1.ClusterRoleBindingList).Items {
			if binds(b.Subjects, "") {
				out.ClusterRoleBindings = append(out.ClusterRoleBindings, b)
				clusterRoles[b.RoleRef.Name] = true
			}
		}
	}
	for _, name := range sortedKeys(roles) {
		v, err := k.shared.get(ctx, "role/"+ns+"/"+name, func(ctx context.Context) (any, error) {
			ctx, cancel := k.reqCtx(ctx)
			defer cancel()
			return k.cs.RbacV1().Roles(ns).Get(ctx, name, metav1.GetOptions{})
		})
		if err != nil {
			k.skip(kubeDir+"rolebindings.json#roles/"+name, err)
			continue
		}
		out.Roles = append(out.Roles, *v.(*rbacv1.Role))
	}
	for _, name := range sortedKeys(clusterRoles) {
		v, err := k.shared.get(ctx, "clusterrole/"+name, func(ctx context.Context) (any, error) {
			ctx, cancel := k.reqCtx(ctx)
			defer cancel()
			return k.cs.RbacV1().ClusterRoles().Get(ctx, name, metav1.GetOptions{})
		})
		if err != nil {
			k.skip(kubeDir+"rolebindings.json#clusterRoles/"+name, err)
			continue
		}
		out.ClusterRoles = append(out.ClusterRoles, *v.(*rbacv1.ClusterRole))
	}
	return writeJSON(sink, kubeDir+"rolebindings.json", out, now)
}

// secretRefs is secret-names.json: the names of the Secrets the pod and its service account refer to, and where.
// Their data is never read.
type secretRef struct {
	Name  string `json:"name"`
	Where string `json:"where"`
}

func secretNames(pod *corev1.Pod, sa *corev1.ServiceAccount) []secretRef {
	refs := []secretRef{}
	add := func(name, where string) {
		if name != "" {
			refs = append(refs, secretRef{name, where})
		}
	}
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil {
			add(v.Secret.SecretName, "volume "+v.Name)
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.Secret != nil {
					add(s.Secret.Name, "projected volume "+v.Name)
				}
			}
		}
	}
	cs := append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	for _, c := range cs {
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				add(e.ValueFrom.SecretKeyRef.Name, "env "+e.Name+" of container "+c.Name)
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				add(e.SecretRef.Name, "envFrom of container "+c.Name)
			}
		}
	}
	for _, s := range pod.Spec.ImagePullSecrets {
		add(s.Name, "imagePullSecrets")
	}
	if sa != nil {
		for _, s := range sa.Secrets {
			add(s.Name, "service account "+sa.Name)
		}
		for _, s := range sa.ImagePullSecrets {
			add(s.Name, "service account "+sa.Name+" imagePullSecrets")
		}
	}
	return refs
}

// containerStatus is one line of containers.json: what ran, by digest.
type containerStatus struct {
	Name         string `json:"name"`
	Image        string `json:"image"`
	ImageID      string `json:"imageID"`
	ContainerID  string `json:"containerID"`
	Ready        bool   `json:"ready"`
	RestartCount int32  `json:"restartCount"`
	State        string `json:"state"`
	Init         bool   `json:"init,omitempty"`
}

func containerStatuses(pod *corev1.Pod) []containerStatus {
	out := []containerStatus{}
	add := func(list []corev1.ContainerStatus, init bool) {
		for _, s := range list {
			state := "unknown"
			switch {
			case s.State.Running != nil:
				state = "running since " + s.State.Running.StartedAt.UTC().Format(time.RFC3339)
			case s.State.Waiting != nil:
				state = "waiting: " + s.State.Waiting.Reason
			case s.State.Terminated != nil:
				state = fmt.Sprintf("terminated: %s (exit %d)", s.State.Terminated.Reason, s.State.Terminated.ExitCode)
			}
			out = append(out, containerStatus{Name: s.Name, Image: s.Image, ImageID: s.ImageID, ContainerID: s.ContainerID,
				Ready: s.Ready, RestartCount: s.RestartCount, State: state, Init: init})
		}
	}
	add(pod.Status.InitContainerStatuses, true)
	add(pod.Status.ContainerStatuses, false)
	return out
}

// log stores the container's current or previous log (with the kubelet's timestamps), up to maxLog bytes. It is
// spooled to a temporary file first: a tar entry's size comes before its bytes.
func (k *kubeEvidence) log(ctx context.Context, sink entrySink, pod *corev1.Pod, container string, previous bool) error {
	name := kubeDir + "logs/" + container + ".log"
	if previous {
		name = kubeDir + "logs/" + container + ".previous.log"
		if !hasPrevious(pod, container) {
			k.skipped = append(k.skipped, evidence.Skip{Path: name, Reason: "not-found", Detail: "the container has not restarted"})
			return nil
		}
	}
	limit := k.maxLog + 1 // one byte more tells a capped log from one of exactly maxLog bytes
	ctx, cancel := context.WithTimeout(ctx, max(k.logTimeout, k.timeout))
	defer cancel()
	rc, err := k.cs.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: container, Previous: previous,
		Timestamps: true, LimitBytes: &limit}).Stream(ctx)
	if err != nil {
		k.skip(name, err)
		return nil
	}
	defer rc.Close()
	f, err := os.CreateTemp("", "warren-log-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	n, err := io.Copy(f, io.LimitReader(rc, limit))
	if err != nil {
		k.skip(name, err)
		return nil
	}
	size := n
	if n > k.maxLog {
		size = k.maxLog
		k.notes = append(k.notes, evidence.FileNote{Path: name, Size: size, Truncated: true, OriginalSize: -1})
		k.skipped = append(k.skipped, evidence.Skip{Path: name, Reason: collector.ReasonSizeCap, Detail: fmt.Sprintf("stored the first %d bytes", k.maxLog)})
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	return sink.WriteEntry(&tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: k.now(), Typeflag: tar.TypeReg}, io.LimitReader(f, size))
}

func hasPrevious(pod *corev1.Pod, container string) bool {
	for _, s := range pod.Status.ContainerStatuses {
		if s.Name == container {
			return s.RestartCount > 0 || s.LastTerminationState.Terminated != nil
		}
	}
	return false
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
