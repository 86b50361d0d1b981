package collectorpod

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warren-dev/warren/collector"
)

func int64p(v int64) *int64 { return &v }
func boolp(v bool) *bool    { return &v }

// TestEphemeral: the ephemeral collector container takes the target's user and capability set, never more: no
// capability for a non-root target, the target's set for a root one, SYS_PTRACE (not privilege) for a privileged
// one, root taking the target's user when the spec names none, and an error for a runAsNonRoot target of unknown user.
func TestEphemeral(t *testing.T) {
	pod := func(psc *corev1.PodSecurityContext, csc *corev1.SecurityContext) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}, Spec: corev1.PodSpec{SecurityContext: psc,
			Containers: []corev1.Container{{Name: "main", SecurityContext: csc}}}}
	}
	for _, c := range []struct {
		name          string
		pod           *corev1.Pod
		uid           *int64
		drop, add     []corev1.Capability
		asTarget      bool
		capsUnchanged bool // the runtime's default set: no capabilities field
		wantErrPrefix string
	}{
		{name: "pod runAsUser", pod: pod(&corev1.PodSecurityContext{RunAsUser: int64p(1000), RunAsGroup: int64p(2000)}, nil),
			uid: int64p(1000), drop: []corev1.Capability{"ALL"}},
		{name: "container runAsUser over the pod's", pod: pod(&corev1.PodSecurityContext{RunAsUser: int64p(1000)}, &corev1.SecurityContext{RunAsUser: int64p(1001)}),
			uid: int64p(1001), drop: []corev1.Capability{"ALL"}},
		{name: "root with its own capabilities", pod: pod(nil, &corev1.SecurityContext{RunAsUser: int64p(0),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_BIND_SERVICE"}}}),
			uid: int64p(0), drop: []corev1.Capability{"ALL"}, add: []corev1.Capability{"NET_BIND_SERVICE"}},
		{name: "privileged", pod: pod(nil, &corev1.SecurityContext{Privileged: boolp(true)}), uid: int64p(0), asTarget: true,
			add: []corev1.Capability{"SYS_PTRACE"}},
		{name: "the image's user", pod: pod(nil, nil), uid: int64p(0), asTarget: true, capsUnchanged: true},
		{name: "runAsNonRoot, the image's user", pod: pod(&corev1.PodSecurityContext{RunAsNonRoot: boolp(true)}, nil),
			wantErrPrefix: "container main of pod ns/p runs as its image's user, which the pod spec does not name, and the pod requires non-root"},
	} {
		t.Run(c.name, func(t *testing.T) {
			plan, err := Ephemeral(Target{Pod: c.pod, Container: "main"}, "warren-collector-x", "img@sha256:"+strings.Repeat("a", 64), collector.ModeArgs{})
			if c.wantErrPrefix != "" {
				if err == nil || !strings.HasPrefix(err.Error(), c.wantErrPrefix) {
					t.Fatalf("%v, want %q", err, c.wantErrPrefix)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ec := plan.Container
			sc := ec.SecurityContext
			if ec.TargetContainerName != "main" || !ec.Stdin || !ec.StdinOnce || ec.TTY || ec.Command[0] != CollectorPath || ec.Args[0] != "ephemeral" ||
				*sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem || *sc.Privileged {
				t.Fatalf("container: %+v", ec)
			}
			if (sc.RunAsUser == nil) != (c.uid == nil) || (c.uid != nil && *sc.RunAsUser != *c.uid) {
				t.Fatalf("runAsUser %v, want %v", sc.RunAsUser, c.uid)
			}
			if plan.AsTargetUser != c.asTarget {
				t.Fatalf("as target user %v", plan.AsTargetUser)
			}
			if plan.AsTargetUser != slices.Contains(ec.Args, "--as-target-user") {
				t.Fatalf("args %v, as target user %v", ec.Args, plan.AsTargetUser)
			}
			if c.capsUnchanged {
				if sc.Capabilities != nil {
					t.Fatalf("capabilities %+v, want the runtime's default", sc.Capabilities)
				}
				return
			}
			if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, c.drop) || !slices.Equal(sc.Capabilities.Add, c.add) {
				t.Fatalf("capabilities %+v, want drop %v add %v", sc.Capabilities, c.drop, c.add)
			}
		})
	}
}

// TestNodePodRoundTrip: the pod warren sends passes the connector's check as it is, and its parameters come back.
func TestNodePodRoundTrip(t *testing.T) {
	img := "ghcr.io/warren-dev/warren-collector@sha256:" + strings.Repeat("b", 64)
	p := NodeParams{Name: "warren-collector-a-1", Namespace: "warren-acquire", NodeName: "n1", Image: img, Target: "a/b/c",
		ContainerID: "containerd://abc", AcquisitionID: "a", ActiveDeadlineSeconds: 600, Tolerations: TolerationsFor(&corev1.Node{
			Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "k", Value: "v", Effect: corev1.TaintEffectNoSchedule}, {Key: "gpu", Effect: corev1.TaintEffectNoExecute}}}}),
		Args: collector.ModeArgs{Mode: collector.ModeNode, ContainerID: "abc", Namespace: "k8s.io", RuntimeDir: collector.DefaultRuntimeDir,
			ContainerdRoot: collector.DefaultContainerdRoot}}
	body, err := json.Marshal(NodePod(p))
	if err != nil {
		t.Fatal(err)
	}
	got, cerr := CheckNodePod(body, "warren-acquire", Allowed{Images: []string{img}})
	if cerr != nil {
		t.Fatal(cerr)
	}
	if got.NodeName != "n1" || got.Args.ContainerID != "abc" || len(got.Tolerations) != 2 || got.Tolerations[1].Operator != corev1.TolerationOpExists {
		t.Fatalf("params: %+v", got)
	}
	if pod := NodePod(p); !pod.Spec.HostPID || pod.Spec.HostNetwork || *pod.Spec.AutomountServiceAccountToken ||
		*pod.Spec.Containers[0].VolumeMounts[0].MountPropagation != corev1.MountPropagationHostToContainer || !pod.Spec.Containers[0].VolumeMounts[1].ReadOnly {
		t.Fatalf("pod: %+v", pod.Spec)
	}
	if len(TolerationsFor(nil)) != 1 || TolerationsFor(nil)[0].Operator != corev1.TolerationOpExists {
		t.Fatal("an unread node is tolerated whatever its taints")
	}
}
