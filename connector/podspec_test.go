package connector

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/collector"
	"github.com/warren-dev/warren/internal/collectorpod"
)

const (
	collectorNS    = "warren-acquire"
	collectorImage = "ghcr.io/warren-dev/warren-collector@sha256:1111111111111111111111111111111111111111111111111111111111111111"
)

// podSpecCeiling allows everything ("*", which covers no named-only resource) and keeps warren-acquire's pods to
// warren's collector pod: the broad rule must not get past the podSpec rule.
const podSpecCeiling = `rules:
- verbs: ["*"]
  apiGroups: ["*"]
  resources: ["*"]
- verbs: [create]
  resources: [pods]
  namespaces: [warren-acquire]
  podSpec:
    kind: warren-collector
    images: ["` + collectorImage + `"]
`

func collectorPod() *corev1.Pod {
	return collectorpod.NodePod(collectorpod.NodeParams{Name: "warren-collector-abc-1", Namespace: collectorNS, NodeName: "node-7",
		Image: collectorImage, Target: "payments/api-7f9c/main", ContainerID: "containerd://4f1c", AcquisitionID: "abc",
		ActiveDeadlineSeconds: 900, Tolerations: []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
		Args: collector.ModeArgs{Mode: collector.ModeNode, ContainerID: "4f1c", Namespace: "k8s.io", RuntimeDir: collector.DefaultRuntimeDir,
			ContainerdRoot: collector.DefaultContainerdRoot}})
}

func podJSON(t *testing.T, mutate func(p *corev1.Pod)) string {
	t.Helper()
	p := collectorPod()
	if mutate != nil {
		mutate(p)
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCeilingPodSpec: with a podSpec rule, the connector reads every pod creation in the collector namespace and
// lets through exactly warren's collector pod, byte for byte as checked; every other shape, encoding or trick is
// refused with what differs, and nothing reaches the API server. A broad ceiling rule does not get past it, and
// the other requests on pods there are kept to reading, attaching and deleting.
func TestCeilingPodSpec(t *testing.T) {
	var mu sync.Mutex
	var got []string
	handler := func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/api/v1/namespaces/payments/pods/") {
			serveTarget(w, r)
			return
		}
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path+" "+string(b))
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte("{}"))
	}
	ceiling, err := auth.ParsePolicy([]byte(podSpecCeiling))
	if err != nil {
		t.Fatal(err)
	}
	b := newBench(t, benchOpts{ceiling: ceiling, api: handler})
	// The token allows everything, the resources named-only too: what refuses is the ceiling.
	who := caller("*:*", "patch:pods/ephemeralcontainers")
	send := func(method, path, contentType, encoding, body string) (int, string) {
		h := http.Header{}
		if contentType != "" {
			h.Set("Content-Type", contentType)
		}
		if encoding != "" {
			h.Set("Content-Encoding", encoding)
		}
		r := request{method: method, target: path, header: h, body: body}
		tok, id := b.assert(r, who, nil)
		got := b.send(r, id, tok)
		return got.code, got.message
	}
	create := "/api/v1/namespaces/" + collectorNS + "/pods"
	good := podJSON(t, nil)
	if code, msg := send("POST", create, "application/json", "", good); code != http.StatusCreated {
		t.Fatalf("warren's collector pod: %d %s", code, msg)
	}
	if len(got) != 1 || got[0] != "POST "+create+" "+good {
		t.Fatalf("the API server received %q, want the pod as checked", got)
	}
	if code, msg := send("POST", create, "application/json; charset=utf-8", "", good); code != http.StatusCreated {
		t.Fatalf("with a charset: %d %s", code, msg)
	}

	const pre = "connector: " + collectorPodRefusal
	const not = pre + "not warren's collector pod: "
	big := strings.Repeat(" ", collectorpod.MaxBody) + good
	for _, tc := range []struct {
		name, contentType, encoding, body string
		code                              int
		msg                               string
	}{
		{"privileged", "", "", podJSON(t, func(p *corev1.Pod) { p.Spec.Containers[0].SecurityContext.Privileged = ptr(true) }), 403,
			not + "spec.containers[0].securityContext.privileged is true, warren's collector pod has false"},
		{"an extra volume", "", "", podJSON(t, func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
		}), 403, not + "spec.volumes is a list of 3, warren's collector pod has a list of 2"},
		{"another image", "", "", podJSON(t, func(p *corev1.Pod) {
			p.Spec.Containers[0].Image = "evil.example/tools@sha256:" + strings.Repeat("2", 64)
		}), 403, not + `image "evil.example/tools@sha256:` + strings.Repeat("2", 64) + `" is not one of the collector images the cluster's policy allows (` + collectorImage + ")"},
		{"an image by tag", "", "", podJSON(t, func(p *corev1.Pod) { p.Spec.Containers[0].Image = "ghcr.io/warren-dev/warren-collector:latest" }), 403,
			not + `image "ghcr.io/warren-dev/warren-collector:latest" is not one of the collector images the cluster's policy allows (` + collectorImage + ")"},
		{"hostNetwork", "", "", podJSON(t, func(p *corev1.Pod) { p.Spec.HostNetwork = true }), 403,
			not + "spec.hostNetwork is true, warren's collector pod has absent"},
		{"hostIPC", "", "", podJSON(t, func(p *corev1.Pod) { p.Spec.HostIPC = true }), 403,
			not + "spec.hostIPC is true, warren's collector pod has absent"},
		{"a second container", "", "", podJSON(t, func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "x", Image: "busybox"})
		}), 403, not + "2 containers; it has one"},
		{"an init container", "", "", podJSON(t, func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox", SecurityContext: &corev1.SecurityContext{Privileged: ptr(true)}}}
		}), 403, not + "spec.initContainers is a list of 1, warren's collector pod has absent"},
		{"env from a secret", "", "", podJSON(t, func(p *corev1.Pod) {
			p.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}}}}
		}), 403, not + "spec.containers[0].envFrom is a list of 1, warren's collector pod has absent"},
		{"another command", "", "", podJSON(t, func(p *corev1.Pod) { p.Spec.Containers[0].Command = []string{"/bin/sh"} }), 403,
			not + `spec.containers[0].command[0] is "/bin/sh", warren's collector pod has "/warren-collector"`},
		{"collector args that read the host", "", "", podJSON(t, func(p *corev1.Pod) {
			p.Spec.Containers[0].Args = append(p.Spec.Containers[0].Args, "--root=/proc/1/root")
		}), 403, not + "the collector's arguments: flag provided but not defined: -root"},
		{"exec-mode args", "", "", podJSON(t, func(p *corev1.Pod) { p.Spec.Containers[0].Args = []string{"collect", "--root=/proc/1/root"} }), 403,
			not + `the collector's arguments do not start with "node"`},
		{"containerd's socket directory", "", "", podJSON(t, func(p *corev1.Pod) {
			p.Spec.Containers[0].Args = collector.ModeArgs{Mode: collector.ModeNode, ContainerID: "4f1c", Namespace: "k8s.io",
				RuntimeDir: "/run/containerd", ContainerdRoot: collector.DefaultContainerdRoot}.Args()
		}), 403, not + `host directory "/run/containerd" is not one the cluster's policy allows (` + strings.Join(collectorpod.DefaultHostPaths, ", ") + ")"},
		{"a volume's host path changed", "", "", podJSON(t, func(p *corev1.Pod) { p.Spec.Volumes[0].HostPath.Path = "/" }), 403,
			not + `spec.volumes[0].hostPath.path is "/", warren's collector pod has "/run/containerd/io.containerd.runtime.v2.task"`},
		{"a mount read-write", "", "", podJSON(t, func(p *corev1.Pod) { p.Spec.Containers[0].VolumeMounts[1].ReadOnly = false }), 403,
			not + "spec.containers[0].volumeMounts[1].readOnly is absent, warren's collector pod has true"},
		{"bidirectional propagation", "", "", podJSON(t, func(p *corev1.Pod) {
			b := corev1.MountPropagationBidirectional
			p.Spec.Containers[0].VolumeMounts[0].MountPropagation = &b
		}), 403, not + `spec.containers[0].volumeMounts[0].mountPropagation is "Bidirectional", warren's collector pod has "HostToContainer"`},
		{"SYS_ADMIN", "", "", podJSON(t, func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext.Capabilities.Add = append(p.Spec.Containers[0].SecurityContext.Capabilities.Add, "SYS_ADMIN")
		}), 403, not + "spec.containers[0].securityContext.capabilities.add is a list of 3, warren's collector pod has a list of 2"},
		{"a service account token", "", "", podJSON(t, func(p *corev1.Pod) { p.Spec.AutomountServiceAccountToken = ptr(true) }), 403,
			not + "spec.automountServiceAccountToken is true, warren's collector pod has false"},
		{"another runtime class", "", "", podJSON(t, func(p *corev1.Pod) { p.Spec.RuntimeClassName = ptr("unconfined") }), 403,
			not + `spec.runtimeClassName is "unconfined", warren's collector pod has absent`},
		{"another namespace in the body", "", "", podJSON(t, func(p *corev1.Pod) { p.Namespace = "kube-system" }), 403,
			not + `metadata.namespace "kube-system" in a request to namespace "warren-acquire"`},
		{"generateName", "", "", podJSON(t, func(p *corev1.Pod) { p.GenerateName, p.Name = "x-", "" }), 403,
			not + "metadata.name is empty (generateName is not allowed)"},
		{"no deadline", "", "", podJSON(t, func(p *corev1.Pod) { p.Spec.ActiveDeadlineSeconds = nil }), 403,
			not + "spec.activeDeadlineSeconds 0: want 1 to 86400"},
		{"not pinned to a node", "", "", podJSON(t, func(p *corev1.Pod) { p.Spec.NodeName = "" }), 403,
			not + "spec.nodeName is empty: the pod must be pinned to the target's node"},
		{"an owner reference", "", "", podJSON(t, func(p *corev1.Pod) { p.Finalizers = []string{"x/y"} }), 403,
			not + "metadata.finalizers is a list of 1, warren's collector pod has absent"},
		{"a duplicate key", "", "", strings.Replace(good, `"hostPID":true`, `"hostPID":true,"hostPID":true`, 1), 400,
			pre + `the pod is not strict JSON: duplicate field "spec.hostPID"`},
		{"a duplicate key that would win", "", "", strings.Replace(good, `"privileged":false`, `"privileged":false,"privileged":true`, 1), 400,
			pre + `the pod is not strict JSON: duplicate field "spec.containers[0].securityContext.privileged"`},
		{"a field in another case", "", "", strings.Replace(good, `"hostPID":true`, `"hostPID":true,"hostNetwork":false,"HostNetwork":true`, 1), 400,
			pre + `the pod is not strict JSON: unknown field "spec.HostNetwork"`},
		{"an unknown field", "", "", strings.Replace(good, `"hostPID":true`, `"hostPID":true,"hostUsers2":true`, 1), 400,
			pre + `the pod is not strict JSON: unknown field "spec.hostUsers2"`},
		{"an escaped key", "", "", strings.Replace(good, `"privileged":false`, `"privil\u0065ged":true`, 1), 403,
			not + "spec.containers[0].securityContext.privileged is true, warren's collector pod has false"},
		{"a second document", "", "", good + good, 400, pre + "the pod is not valid JSON: invalid character '{' after top-level value"},
		{"invalid UTF-8", "", "", strings.Replace(good, "payments/api-7f9c/main", "payments/\xff", 1), 400, pre + "the pod is not valid UTF-8"},
		{"YAML", "application/yaml", "", "apiVersion: v1\nkind: Pod\n", 415,
			pre + `the pod must be sent as application/json to be checked, not "application/yaml"`},
		{"protobuf", "application/vnd.kubernetes.protobuf", "", "k8s\x00", 415,
			pre + `the pod must be sent as application/json to be checked, not "application/vnd.kubernetes.protobuf"`},
		{"CBOR", "application/cbor", "", "\xd9\xd9\xf7", 415, pre + `the pod must be sent as application/json to be checked, not "application/cbor"`},
		{"JSON patch type", "application/json-patch+json", "", "[]", 415,
			pre + `the pod must be sent as application/json to be checked, not "application/json-patch+json"`},
		{"another charset", "application/json; charset=utf-16", "", good, 415,
			pre + `the pod must be sent as application/json to be checked, not "application/json; charset=utf-16"`},
		{"gzip", "", "gzip", good, 415, pre + `the pod must be sent without a Content-Encoding to be checked, not "gzip"`},
		{"oversized", "", "", big, 413, pre + "the pod is larger than 65536 bytes; warren's collector pod is about 3 KiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct := tc.contentType
			if ct == "" {
				ct = "application/json"
			}
			before := len(got)
			code, msg := send("POST", create, ct, tc.encoding, tc.body)
			if code != tc.code || msg != tc.msg {
				t.Fatalf("%d %q\nwant %d %q", code, msg, tc.code, tc.msg)
			}
			if len(got) != before {
				t.Fatalf("the API server received it: %q", got[before:])
			}
		})
	}

	// The other requests on pods there: reading, attaching, deleting pass; changing a pod, exec into it, adding an
	// ephemeral container do not, whatever the broad rule says.
	base := "/api/v1/namespaces/" + collectorNS + "/pods/warren-collector-abc-1"
	for _, tc := range []struct {
		method, path string
		code         int
		msg          string
	}{
		{"GET", base, 201, ""},
		{"DELETE", base, 201, ""},
		{"POST", base + "/attach?stdin=true", 201, ""},
		{"GET", base + "/log", 201, ""},
		{"PUT", base, 403, `connector: the cluster's policy does not allow it: in namespace "warren-acquire" pods are kept to warren's collector pod (a podSpec rule): update pods is refused there`},
		{"PATCH", base, 403, `connector: the cluster's policy does not allow it: in namespace "warren-acquire" pods are kept to warren's collector pod (a podSpec rule): patch pods is refused there`},
		{"POST", base + "/exec?command=sh", 403, `connector: the cluster's policy does not allow it: in namespace "warren-acquire" pods are kept to warren's collector pod (a podSpec rule): create pods/exec is refused there`},
		{"PATCH", base + "/ephemeralcontainers", 403, `connector: the cluster's policy does not allow it: in namespace "warren-acquire" pods are kept to warren's collector pod (a podSpec rule): patch pods/ephemeralcontainers is refused there`},
		{"POST", base + "/portforward", 403, `connector: the cluster's policy does not allow it: in namespace "warren-acquire" pods are kept to warren's collector pod (a podSpec rule): create pods/portforward is refused there`},
		// Elsewhere the broad rule applies as it did.
		{"POST", "/api/v1/namespaces/payments/pods", 201, ""},
	} {
		code, msg := send(tc.method, tc.path, "application/json", "", "{}")
		if code != tc.code || msg != tc.msg {
			t.Errorf("%s %s: %d %q\nwant %d %q", tc.method, tc.path, code, msg, tc.code, tc.msg)
		}
	}
}

// TestCeilingPodSpecRules: a podSpec rule must be exactly a create of pods in named namespaces with pinned images,
// and never comes in a token.
func TestCeilingPodSpecRules(t *testing.T) {
	for _, tc := range []struct{ rule, want string }{
		{"- verbs: [create, delete]\n  resources: [pods]\n  namespaces: [a]\n  podSpec: {kind: warren-collector, images: [\"" + collectorImage + "\"]}",
			"a rule with a podSpec must be verbs [create], resources [pods], no apiGroups but the core group, no names"},
		{"- verbs: [create]\n  resources: [pods]\n  podSpec: {kind: warren-collector, images: [\"" + collectorImage + "\"]}",
			"a rule with a podSpec must name its namespaces (the collector's), not every namespace"},
		{"- verbs: [create]\n  resources: [pods]\n  namespaces: [a]\n  podSpec: {kind: anything, images: [\"" + collectorImage + "\"]}",
			`podSpec kind "anything": the only kind is warren-collector`},
		{"- verbs: [create]\n  resources: [pods]\n  namespaces: [a]\n  podSpec: {kind: warren-collector, images: [\"ghcr.io/x:latest\"]}",
			`podSpec image "ghcr.io/x:latest": want a reference pinned by digest, NAME@sha256:<64 hex digits>`},
		{"- verbs: [create]\n  resources: [pods]\n  namespaces: [a]\n  podSpec: {kind: warren-collector, images: []}",
			"podSpec: no images: list warren's collector image(s), each pinned by digest (NAME@sha256:...)"},
		{"- verbs: [create]\n  resources: [pods]\n  namespaces: [a]\n  podSpec: {kind: warren-collector, images: [\"" + collectorImage + "\"], hostPaths: [/run/../etc]}",
			`podSpec host path "/run/../etc": want an absolute, clean directory`},
		{"- verbs: [create]\n  resources: [pods]\n  namespaces: [a]\n  podSpec: {kind: warren-collector, image: \"" + collectorImage + "\"}",
			`error unmarshaling JSON: while decoding JSON: json: unknown field "image"`},
	} {
		_, err := auth.ParsePolicy([]byte("rules:\n" + tc.rule + "\n"))
		if err == nil || !strings.HasSuffix(err.Error(), tc.want) {
			t.Errorf("%s\n: %v\nwant ...%s", tc.rule, err, tc.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// serveTarget is the API server's view of the collector pods' targets: payments/api-7f9c runs main as
// containerd://4f1c on node-7.
func serveTarget(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path != "/api/v1/namespaces/payments/pods/api-7f9c" {
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`))
		return
	}
	json.NewEncoder(w).Encode(corev1.Pod{Spec: corev1.PodSpec{NodeName: "node-7"}, Status: corev1.PodStatus{
		ContainerStatuses: []corev1.ContainerStatus{{Name: "main", ContainerID: "containerd://4f1c"}}}})
}

// TestCeilingPodSpecTarget: warren's collector pod must read a container the caller may acquire: one the named pod
// runs under that id on that node, in a pod the token may exec into.
func TestCeilingPodSpecTarget(t *testing.T) {
	c := newBench(t, benchOpts{api: serveTarget}).conn
	tokenWith := func(rules ...string) *auth.Claims {
		cl := &auth.Claims{}
		cl.Subject = "alice"
		for _, r := range rules {
			pr, err := auth.ParseRule(r)
			if err != nil {
				t.Fatal(err)
			}
			cl.Warren.Rules = append(cl.Warren.Rules, pr)
		}
		return cl
	}
	exec := tokenWith("create:pods/exec:payments")
	base := func() *collectorpod.NodeParams {
		p := collectorpod.NodeParams{NodeName: "node-7", Target: "payments/api-7f9c/main", ContainerID: "containerd://4f1c",
			Args: collector.ModeArgs{ContainerID: "4f1c"}}
		return &p
	}
	if err := c.bindTarget(t.Context(), base(), exec); err != nil {
		t.Fatalf("the container of a pod the token may exec into: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*collectorpod.NodeParams)
		claims *auth.Claims
		code   int
		msg    string
	}{
		{"another node", func(p *collectorpod.NodeParams) { p.NodeName = "node-8" }, exec, 403,
			`the collector pod's target: pod payments/api-7f9c is on node "node-7", the collector pod is pinned to "node-8"`},
		{"another container id", func(p *collectorpod.NodeParams) { p.Args.ContainerID, p.ContainerID = "beef", "containerd://beef" }, exec, 403,
			`the collector pod's target: container main of pod payments/api-7f9c is "containerd://4f1c", not containerd://beef`},
		{"an annotation that lies", func(p *collectorpod.NodeParams) { p.Args.ContainerID = "beef" }, exec, 403,
			`the collector pod's target: annotation warren.dev/container-id "containerd://4f1c" is not the container the collector reads (containerd://beef)`},
		{"no such container", func(p *collectorpod.NodeParams) { p.Target = "payments/api-7f9c/sidecar" }, exec, 403,
			`the collector pod's target: pod payments/api-7f9c has no container "sidecar"`},
		{"no such pod", func(p *collectorpod.NodeParams) { p.Target = "payments/gone/main" }, tokenWith("create:pods/exec:payments"), 403,
			`the collector pod's target: pod payments/gone does not exist`},
		{"a malformed target", func(p *collectorpod.NodeParams) { p.Target = "payments/api-7f9c" }, exec, 403,
			`the collector pod's target: annotation warren.dev/target "payments/api-7f9c": want NAMESPACE/POD/CONTAINER`},
		{"a pod the token may not exec into", func(p *collectorpod.NodeParams) {}, tokenWith("get:pods:payments", "create:pods/exec:kube-system"), 403,
			`the collector pod's target: the node mode reads what exec would, and token of "alice" cannot create resource "pods/exec" in API group "" ` +
				`in the namespace "payments" (it needs --rule create:pods/exec:payments:api-7f9c)`},
	} {
		p := base()
		tc.mutate(p)
		err := c.bindTarget(t.Context(), p, tc.claims)
		if err == nil || err.Code != tc.code || err.Message != tc.msg {
			t.Errorf("%s: %v\nwant %d %s", tc.name, err, tc.code, tc.msg)
		}
	}
}
