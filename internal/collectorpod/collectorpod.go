// Package collectorpod is the one definition of what warren asks Kubernetes to run beside a target: the node mode's
// collector pod and the ephemeral mode's container. `warren acquire` builds them here, and the connector, when the
// customer's ceiling restricts pod creation to warren's collector (a podSpec rule), rebuilds the pod from the few
// values a request may choose and refuses any body that is not exactly that (Check).
package collectorpod

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warren-dev/warren/collector"
)

// What every collector container has.
const (
	// CollectorPath is where warren's collector image holds the collector (the Dockerfile's collector stage).
	CollectorPath = "/warren-collector"
	// ContainerName is the node pod's one container.
	ContainerName = "collector"
	// EphemeralPrefix starts an ephemeral collector container's name.
	EphemeralPrefix = "warren-collector-"
	// Kind is the podSpec kind a ceiling names to allow this pod only.
	Kind = "warren-collector"

	LabelName        = "app.kubernetes.io/name"
	LabelComponent   = "app.kubernetes.io/component"
	LabelAcquisition = "warren.dev/acquisition"
	// AnnotationTarget and AnnotationContainerID name the container the pod collects, for whoever finds it.
	AnnotationTarget      = "warren.dev/target"
	AnnotationContainerID = "warren.dev/container-id"

	componentNode = "node-collector"
	volRuntime    = "containerd-runtime"
	volRoot       = "containerd-root"
)

// NodeCapabilities are the node pod's only capabilities: DAC_READ_SEARCH reads any file of the bundle and the
// snapshots (reading, never writing, which DAC_OVERRIDE would also allow), SYS_PTRACE reads /proc/<pid>/ of the
// target's processes, which run as other users or with capabilities the collector does not have.
var NodeCapabilities = []corev1.Capability{"DAC_READ_SEARCH", "SYS_PTRACE"}

// Node pod resources: bounded, so that a collection cannot starve the node.
var (
	nodeRequests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")}
	nodeLimits   = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("1Gi")}
)

// NodeParams are what a node pod may differ in. Everything else is fixed by NodePod.
type NodeParams struct {
	Name, Namespace string // the pod's
	NodeName        string // the target's node
	Image           string // warren's collector image, pinned by digest
	// Args are the collector's (mode node): which container, and where containerd keeps its runtime directory and
	// root, which the pod mounts read-only at the same paths.
	Args collector.ModeArgs
	// Tolerations let the pod onto the target's node: its taints.
	Tolerations []corev1.Toleration
	// Target names the target ("namespace/pod/container") and its runtime id, for the pod's annotations;
	// AcquisitionID the run, for its label.
	Target, ContainerID, AcquisitionID string
	// ActiveDeadlineSeconds bounds the pod's life: the kubelet ends it then, should the acquirer be gone.
	ActiveDeadlineSeconds int64
}

// NodePod is the node mode's collector pod: pinned to the node, in the host's PID namespace, the two containerd
// directories mounted read-only (with HostToContainer propagation, so the pod never keeps another container's
// mounts alive), two capabilities, no service account token, no host network or IPC, stdin for the session.
func NodePod(p NodeParams) *corev1.Pod {
	f := false
	t := true
	var zero int64
	root := int64(0)
	deadline := p.ActiveDeadlineSeconds
	hostToContainer := corev1.MountPropagationHostToContainer
	dir := corev1.HostPathDirectory
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace,
			Labels:      map[string]string{LabelName: Kind, LabelComponent: componentNode, LabelAcquisition: p.AcquisitionID},
			Annotations: map[string]string{AnnotationTarget: p.Target, AnnotationContainerID: p.ContainerID},
		},
		Spec: corev1.PodSpec{
			NodeName:                      p.NodeName,
			HostPID:                       true,
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  &f,
			EnableServiceLinks:            &f,
			TerminationGracePeriodSeconds: &zero,
			ActiveDeadlineSeconds:         &deadline,
			Tolerations:                   p.Tolerations,
			SecurityContext: &corev1.PodSecurityContext{RunAsUser: &root, RunAsGroup: &root,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name:            ContainerName,
				Image:           p.Image,
				Command:         []string{CollectorPath},
				Args:            p.Args.Args(),
				Stdin:           true,
				StdinOnce:       true,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Resources:       corev1.ResourceRequirements{Requests: nodeRequests, Limits: nodeLimits},
				SecurityContext: &corev1.SecurityContext{
					Privileged:               &f,
					AllowPrivilegeEscalation: &f,
					ReadOnlyRootFilesystem:   &t,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: NodeCapabilities},
				},
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				VolumeMounts: []corev1.VolumeMount{
					{Name: volRuntime, MountPath: p.Args.RuntimeDir, ReadOnly: true, MountPropagation: &hostToContainer},
					{Name: volRoot, MountPath: p.Args.ContainerdRoot, ReadOnly: true, MountPropagation: &hostToContainer},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: volRuntime, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: p.Args.RuntimeDir, Type: &dir}}},
				{Name: volRoot, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: p.Args.ContainerdRoot, Type: &dir}}},
			},
		},
	}
}

// TolerationsFor tolerates exactly the node's taints (all of them, Exists, when the node could not be read).
func TolerationsFor(node *corev1.Node) []corev1.Toleration {
	if node == nil {
		return []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	}
	var out []corev1.Toleration
	for _, t := range node.Spec.Taints {
		out = append(out, corev1.Toleration{Key: t.Key, Operator: corev1.TolerationOpEqual, Value: t.Value, Effect: t.Effect})
		if t.Value == "" {
			out[len(out)-1].Operator, out[len(out)-1].Value = corev1.TolerationOpExists, ""
		}
	}
	return out
}

// Target is what an ephemeral collector container is built from: the pod and the container it reads.
type Target struct {
	Pod       *corev1.Pod
	Container string
}

// EphemeralPlan is an ephemeral collector container and why its security context is what it is.
type EphemeralPlan struct {
	Container corev1.EphemeralContainer
	// User says whose user the collector runs as; Capabilities which it has and why. For the statement.
	User, Capabilities string
	// AsTargetUser: the target's user is not in the pod spec (the image's USER decides): the collector starts as
	// root with the target's capabilities and takes the user of the target's process itself.
	AsTargetUser bool
}

// Ephemeral builds the ephemeral collector container for t. Kubernetes' debugging profiles fail here (a container
// of their own user and capability set cannot read /proc/<pid>/root of a target of another user, and a root one
// is refused in a runAsNonRoot pod: kubernetes#113006, kubectl#1650, #1781), so the spec copies the target's:
//
//   - its user and group (runAsUser, runAsGroup: the container's, else the pod's), so that /proc/<pid>/root of the
//     target's processes is readable (the kernel lets a process read another's only with the same user, or with
//     CAP_SYS_PTRACE) and a runAsNonRoot pod admits it;
//   - for a non-root target no capability at all (its processes have none either);
//   - for a root target its capability set (the same add and drop): the kernel also wants the reader's capabilities
//     to cover the target's; nothing beyond;
//   - a privileged target has every capability: the collector gets SYS_PTRACE instead of privilege;
//   - when the pod spec does not say who the target runs as, the collector starts as root with the target's
//     capabilities and takes the user of the target's process itself before it reads anything (AsTargetUser);
//     in a runAsNonRoot pod that is impossible, and Ephemeral returns an error saying so.
func Ephemeral(t Target, name, image string, args collector.ModeArgs) (*EphemeralPlan, error) {
	var target *corev1.Container
	for i := range t.Pod.Spec.Containers {
		if t.Pod.Spec.Containers[i].Name == t.Container {
			target = &t.Pod.Spec.Containers[i]
		}
	}
	if target == nil {
		return nil, fmt.Errorf("pod %s/%s has no container %q", t.Pod.Namespace, t.Pod.Name, t.Container)
	}
	psc := t.Pod.Spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	csc := target.SecurityContext
	if csc == nil {
		csc = &corev1.SecurityContext{}
	}
	uid, gid, nonRoot := psc.RunAsUser, psc.RunAsGroup, psc.RunAsNonRoot
	if csc.RunAsUser != nil {
		uid = csc.RunAsUser
	}
	if csc.RunAsGroup != nil {
		gid = csc.RunAsGroup
	}
	if csc.RunAsNonRoot != nil {
		nonRoot = csc.RunAsNonRoot
	}
	f := false
	t2 := true
	sc := &corev1.SecurityContext{AllowPrivilegeEscalation: &f, ReadOnlyRootFilesystem: &t2, Privileged: &f,
		SeccompProfile: csc.SeccompProfile}
	plan := &EphemeralPlan{}
	switch {
	case uid != nil && *uid != 0:
		u := *uid
		sc.RunAsUser, sc.RunAsGroup = &u, gid
		sc.Capabilities = &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}
		plan.User = "uid " + strconv.FormatInt(u, 10) + groupText(gid) + ", the target's (its runAsUser)"
		plan.Capabilities = "none (dropped ALL): the target's processes, not root, have none either"
	case uid == nil && nonRoot != nil && *nonRoot:
		return nil, fmt.Errorf("container %s of pod %s/%s runs as its image's user, which the pod spec does not name, and the pod "+
			"requires non-root: an ephemeral container could read its processes only as that same user, which warren cannot "+
			"know beforehand (and a root one would not be admitted): use the node mode (--mode node), or set runAsUser on the target",
			t.Container, t.Pod.Namespace, t.Pod.Name)
	default:
		zero := int64(0)
		sc.RunAsUser = &zero
		if gid != nil {
			sc.RunAsGroup = gid
		}
		if uid == nil {
			plan.AsTargetUser = true
			plan.User = "root at start, then the user of the target's process (the pod spec names none: the image decides)"
		} else {
			plan.User = "root, the target's (its runAsUser 0)"
		}
		switch {
		case csc.Privileged != nil && *csc.Privileged:
			sc.Capabilities = &corev1.Capabilities{Add: []corev1.Capability{"SYS_PTRACE"}}
			plan.Capabilities = "the runtime's default set and SYS_PTRACE: the target is privileged (every capability), " +
				"so reading its processes needs CAP_SYS_PTRACE; not privileged itself"
		case csc.Capabilities != nil:
			sc.Capabilities = csc.Capabilities.DeepCopy()
			plan.Capabilities = "the target's capability set (" + capsText(csc.Capabilities) + "): reading a root process's " +
				"root needs the reader's capabilities to cover its own"
		default:
			plan.Capabilities = "the runtime's default set, the target's: reading a root process's root needs the reader's " +
				"capabilities to cover its own"
		}
	}
	args.Mode, args.AsTargetUser = collector.ModeEphemeral, plan.AsTargetUser
	plan.Container = corev1.EphemeralContainer{
		TargetContainerName: t.Container,
		EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name:                     name,
			Image:                    image,
			Command:                  []string{CollectorPath},
			Args:                     args.Args(),
			Stdin:                    true,
			StdinOnce:                true,
			ImagePullPolicy:          corev1.PullIfNotPresent,
			SecurityContext:          sc,
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		},
	}
	return plan, nil
}

func groupText(gid *int64) string {
	if gid == nil {
		return ""
	}
	return " gid " + strconv.FormatInt(*gid, 10)
}

func capsText(c *corev1.Capabilities) string {
	var parts []string
	if len(c.Drop) > 0 {
		parts = append(parts, "drop "+joinCaps(c.Drop))
	}
	if len(c.Add) > 0 {
		parts = append(parts, "add "+joinCaps(c.Add))
	}
	if len(parts) == 0 {
		return "the default"
	}
	return strings.Join(parts, ", ")
}

func joinCaps(cs []corev1.Capability) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = string(c)
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}
