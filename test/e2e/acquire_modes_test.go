package e2e

// The ephemeral and node modes end to end: the kubelet stand-in runs the collector image as an ephemeral container
// in a distroless target's PID namespace, and as the node mode's pod reading a real containerd's state
// (internal/testenv/containerdtest) for a target whose container the stand-in reports under that containerd's id.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/warren-dev/warren/acquire"
	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/collector"
	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/internal/collectorpod"
	"github.com/warren-dev/warren/internal/testenv/containerdtest"
	"github.com/warren-dev/warren/internal/testenv/wait"
)

// collectorImage makes the stand-in's image of warren's collector from the collector binary the acquisition
// suite built (the stand-in has no registry: the image's name maps to a directory) and returns its reference,
// pinned by the binary's digest as a release's would be by the image's.
func collectorImage(t *testing.T) string {
	t.Helper()
	needAcquire(t)
	bin, err := os.ReadFile(filepath.Join(acqShared.collectorDir, collector.BinaryName(runtime.GOARCH)))
	if err != nil {
		t.Fatal(err)
	}
	makeImage(t, "warren-collector", map[string][]byte{collectorpod.CollectorPath: bin}, `{"Entrypoint":["/warren-collector"]}`)
	if err := os.Chmod(filepath.Join(fakeKubelet.images, "warren-collector", "rootfs", collectorpod.CollectorPath), 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bin)
	return "warren.test/warren-collector@sha256:" + hex.EncodeToString(sum[:])
}

// presetRules are the rules of the named presets for the stream namespace.
func presetRules(t testing.TB, collectorNS string, names ...string) []string {
	t.Helper()
	rules, err := acquire.PresetRules(names, []string{streamNS}, collectorNS)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rules {
		out = append(out, r.Rule)
	}
	return out
}

func (e *streamEnv) tokenConfig(t testing.TB, rules ...string) *rest.Config {
	cfg := callerConfig(e.gs, streamCluster, callerToken(t, []string{streamCluster}, rules...))
	cfg.Timeout = 0
	return cfg
}

// distroless is a pod of the stand-in's distroless image (no shell) whose application plants a file.
func distroless(t *testing.T, prefix, planted string, mutate func(*corev1.PodSpec)) *corev1.Pod {
	t.Helper()
	return imagePod(t, prefix, "distroless", "", func(s *corev1.PodSpec) {
		s.Containers[0].Args = []string{"-write", "/tmp/implant.bin=" + planted}
		if mutate != nil {
			mutate(s)
		}
	})
}

func attempt(st *evidence.Statement, mode string) evidence.ModeAttempt {
	for _, a := range st.Predicate.ModeAttempts {
		if a.Mode == mode {
			return a
		}
	}
	return evidence.ModeAttempt{}
}

// TestAcquireDistrolessAuto: a distroless container acquired in auto mode with the examiner's consent: exec finds
// no shell, the ephemeral container runs the collector image in the target's PID namespace, and the planted file
// comes through /proc/<pid>/root with its hash; the statement says why exec was not used, which container was added
// and that it stays, as whom it ran; the witness is the connector's record of the attach; and the node's container
// log of the ephemeral container holds ciphertext only.
func TestAcquireDistrolessAuto(t *testing.T) {
	e := newStreamEnv(t)
	image := collectorImage(t)
	planted := "dropped by the attacker " + uniqueName("x")
	pod := distroless(t, "acq-distroless-auto", planted, nil)
	waitFile(t, containerPath(t, pod, "main", "/tmp/implant.bin"))
	a := e.newAcquisition(t, pod.Name)
	a.cfg.REST = e.tokenConfig(t, presetRules(t, "", "acquire-ephemeral")...)
	a.cfg.CollectorImage = image
	a.cfg.Consented, a.cfg.ConsentedBy = []string{acquire.ModeExec, acquire.ModeEphemeral}, "--allow-modes exec,ephemeral"
	sum := a.run(t)
	dir := streamNS + "/" + pod.Name + "/main"
	if sum.Failed != 0 || sum.Index.Targets[0].Mode != acquire.ModeEphemeral {
		t.Fatalf("summary: %s", prettyJSON(sum.Index))
	}
	st := a.statement(t, dir)
	p := st.Predicate
	if p.Mode != "ephemeral" || p.Method != "collector" || p.Collector.Digest == "" {
		t.Fatalf("predicate: %s", prettyJSON(p))
	}
	t.Logf("ephemeral-mode acquisition: %s, %d files, %d bytes, sealed stdout %d bytes", p.FinishedOn.Sub(p.StartedOn).Round(time.Millisecond),
		p.Archive.Files, p.Archive.Size, p.Witness.StdoutBytes)
	ex := attempt(st, "exec")
	if ex.Outcome != evidence.OutcomeFailed || !strings.HasPrefix(ex.Reason, "container main has no /bin/sh (a distroless image?)") {
		t.Fatalf("exec attempt: %+v", ex)
	}
	if eph := attempt(st, "ephemeral"); eph.Outcome != evidence.OutcomeUsed || !strings.Contains(eph.Reason, "an ephemeral container in the target's PID namespace") {
		t.Fatalf("ephemeral attempt: %+v", eph)
	}
	src := p.Ephemeral
	if src == nil || src.TargetContainer != "main" || src.Image != image || src.Consent != "--allow-modes exec,ephemeral" ||
		!strings.HasPrefix(src.Container, collectorpod.EphemeralPrefix) || !strings.HasPrefix(src.User, "root at start, then the user of the target's process") {
		t.Fatalf("ephemeral: %+v", src)
	}
	if !slices.ContainsFunc(p.Footprint, func(f string) bool {
		return strings.HasPrefix(f, "added ephemeral container "+src.Container) && strings.Contains(f, "it cannot be removed")
	}) {
		t.Fatalf("footprint: %q", p.Footprint)
	}
	files := a.entries(t, dir)
	if got, ok := subjectOf(st, "container/fs/tmp/implant.bin"); !ok || got != sum256([]byte(planted)) || string(files["container/fs/tmp/implant.bin"]) != planted {
		t.Fatalf("planted file: subject %q (%v), stored %q", got, ok, files["container/fs/tmp/implant.bin"])
	}
	var self collector.SelfInfo
	if err := json.Unmarshal(files[collector.SelfPath], &self); err != nil || self.Target == nil || self.Target.Root != fmt.Sprintf("/proc/%d/root", self.Target.RootPID) {
		t.Fatalf("self.json: %v %s", err, files[collector.SelfPath])
	}
	if !strings.Contains(string(files["container/processes.json"]), `"/app"`) {
		t.Errorf("the target's process is not in processes.json:\n%s", files["container/processes.json"])
	}
	// The witness: the connector's record of the attach has the same digest of the (sealed) stdout.
	w := p.Witness
	conn := e.connAudit.wait(t, "the connector's record of the attach", func(r audit.Record) bool { return r.AuditID == w.AuditID })
	if w.StdoutBytes == 0 || conn.Subresource != "attach" || conn.StdoutSHA256 != w.StdoutSHA256 || conn.StdoutBytes != w.StdoutBytes {
		t.Fatalf("witness %+v, connector %d %s %s", w, conn.StdoutBytes, conn.StdoutSHA256, conn.Subresource)
	}
	// The node's log of the ephemeral container: the sealed stream, never the evidence.
	log, err := adminClient(t).CoreV1().Pods(streamNS).GetLogs(pod.Name, &corev1.PodLogOptions{Container: src.Container}).DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), strings.TrimSpace(collector.SealMagic)) || strings.Contains(string(log), planted) ||
		strings.Contains(string(log), "collector/self.json") {
		t.Fatalf("the node's log of %s holds more than ciphertext (%d bytes)", src.Container, len(log))
	}
	// The ephemeral container stays in the pod: terminated once the collector ended.
	got, err := adminClient(t).CoreV1().Pods(streamNS).Get(context.Background(), pod.Name, metav1.GetOptions{})
	if err != nil || len(got.Spec.EphemeralContainers) != 1 {
		t.Fatalf("pod after: %v %+v", err, got.Spec.EphemeralContainers)
	}
	wait.Until(t, 15*time.Second, "the ephemeral container to end", func() bool {
		got, _ := adminClient(t).CoreV1().Pods(streamNS).Get(context.Background(), pod.Name, metav1.GetOptions{})
		return got != nil && len(got.Status.EphemeralContainerStatuses) == 1 && got.Status.EphemeralContainerStatuses[0].State.Terminated != nil
	})
	rep, err := evidence.Verify(context.Background(), a.store, acqShared.keys)
	if err != nil || len(rep.Failures) != 0 {
		t.Fatalf("verify: %v %v", err, rep.Failures)
	}
}

// TestAcquireRunAsNonRoot: a runAsNonRoot pod whose distroless container runs as uid 1000: the ephemeral container
// runs as that user with no capability at all, is admitted, and reads the target's files through /proc/<pid>/root.
func TestAcquireRunAsNonRoot(t *testing.T) {
	e := newStreamEnv(t)
	image := collectorImage(t)
	planted := "written by uid 1000"
	uid := int64(1000)
	pod := distroless(t, "acq-nonroot", planted, func(s *corev1.PodSpec) {
		yes := true
		s.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid}
	})
	waitFile(t, containerPath(t, pod, "main", "/tmp/implant.bin"))
	a := e.newAcquisition(t, pod.Name)
	a.cfg.REST = e.tokenConfig(t, presetRules(t, "", "acquire-ephemeral")...)
	a.cfg.Mode, a.cfg.CollectorImage = acquire.ModeEphemeral, image
	a.cfg.Consented, a.cfg.ConsentedBy = []string{acquire.ModeEphemeral}, "--mode ephemeral"
	sum := a.run(t)
	if sum.Failed != 0 {
		t.Fatalf("summary: %s", prettyJSON(sum.Index))
	}
	dir := streamNS + "/" + pod.Name + "/main"
	st := a.statement(t, dir)
	src := st.Predicate.Ephemeral
	if src == nil || src.User != "uid 1000 gid 1000, the target's (its runAsUser)" ||
		src.Capabilities != "none (dropped ALL): the target's processes, not root, have none either" {
		t.Fatalf("ephemeral: %+v", src)
	}
	files := a.entries(t, dir)
	if string(files["container/fs/tmp/implant.bin"]) != planted {
		t.Fatalf("planted file: %q", files["container/fs/tmp/implant.bin"])
	}
	var self collector.SelfInfo
	if err := json.Unmarshal(files[collector.SelfPath], &self); err != nil || self.UID != 1000 || self.GID != 1000 {
		t.Fatalf("the collector ran as %d:%d (%v)", self.UID, self.GID, err)
	}
	// The pod spec's ephemeral container as warren built it.
	got, err := adminClient(t).CoreV1().Pods(streamNS).Get(context.Background(), pod.Name, metav1.GetOptions{})
	if err != nil || len(got.Spec.EphemeralContainers) != 1 {
		t.Fatal(err)
	}
	sc := got.Spec.EphemeralContainers[0].SecurityContext
	if sc == nil || *sc.RunAsUser != 1000 || *sc.RunAsGroup != 1000 || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		len(sc.Capabilities.Add) != 0 || *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem {
		t.Fatalf("ephemeral container's security context: %+v", sc)
	}
}

// TestAcquireDistrolessImageUser: a distroless image whose USER (65532) the pod spec does not name: the ephemeral
// collector starts as root with the target's capabilities, takes the target process's user before it reads anything,
// and reads what that user can (its 0600 file), as the statement and self.json say.
func TestAcquireDistrolessImageUser(t *testing.T) {
	e := newStreamEnv(t)
	image := collectorImage(t)
	cached, err := cachedImageDir()
	if err != nil {
		t.Fatal(err)
	}
	app, err := os.ReadFile(filepath.Join(cached, "distroless", "rootfs", "app"))
	if err != nil {
		t.Fatal(err)
	}
	ref := makeImage(t, "distroless-nonroot", map[string][]byte{"/bin/app": app, "/etc/passwd": []byte("root:x:0:0::/root:/sbin/nologin\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n")},
		`{"Entrypoint":["/bin/app"],"User":"65532"}`)
	if err := os.Chmod(filepath.Join(fakeKubelet.images, "distroless-nonroot", "rootfs", "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	pod := imagePod(t, "acq-imageuser", ref, "", func(s *corev1.PodSpec) { s.Containers[0].Args = []string{"-write", "/tmp/implant.bin=mine"} })
	waitFile(t, containerPath(t, pod, "main", "/tmp/implant.bin"))
	if err := os.Chmod(containerPath(t, pod, "main", "/tmp/implant.bin"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := e.newAcquisition(t, pod.Name)
	a.cfg.REST = e.tokenConfig(t, presetRules(t, "", "acquire-ephemeral")...)
	a.cfg.Mode, a.cfg.CollectorImage = acquire.ModeEphemeral, image
	a.cfg.Consented, a.cfg.ConsentedBy = []string{acquire.ModeEphemeral}, "--mode ephemeral"
	if sum := a.run(t); sum.Failed != 0 {
		t.Fatalf("summary: %s", prettyJSON(sum.Index))
	}
	dir := streamNS + "/" + pod.Name + "/main"
	files := a.entries(t, dir)
	var self collector.SelfInfo
	if err := json.Unmarshal(files[collector.SelfPath], &self); err != nil || self.Target == nil ||
		!strings.HasPrefix(self.Target.User, "uid 65532 gid 65532 groups [] (taken from process ") {
		t.Fatalf("self.json: %v %s", err, files[collector.SelfPath])
	}
	if string(files["container/fs/tmp/implant.bin"]) != "mine" {
		t.Fatalf("the target user's 0600 file: %q", files["container/fs/tmp/implant.bin"])
	}
	if src := a.statement(t, dir).Predicate.Ephemeral; src == nil || !strings.HasPrefix(src.User, "root at start, then the user of the target's process") {
		t.Fatalf("ephemeral: %+v", src)
	}
}

// TestAcquireDistrolessNeedsConsent: without consent (no --allow-modes, no terminal) and without the rights, a
// distroless target fails saying what each mode lacked; no ephemeral container is added.
func TestAcquireDistrolessNeedsConsent(t *testing.T) {
	e := newStreamEnv(t)
	image := collectorImage(t)
	pod := distroless(t, "acq-consent", "x", nil)
	a := e.newAcquisition(t, pod.Name)
	a.cfg.REST, a.cfg.CollectorImage = e.presetConfig(t), image
	sum := a.run(t)
	noShell := "container main has no /bin/sh (a distroless image?): exec mode cannot collect it; use the ephemeral or node mode " +
		"(--allow-modes exec,ephemeral, or --mode ephemeral), or acquire its node's disk (warren acquire volume)"
	want := "exec: failed: " + noShell + "; ephemeral: not-consented: " + "an ephemeral container cannot be removed from its pod once added: " +
		"it stays in the pod's spec and status (terminated once the collector exits) for the pod's life, and its output, sealed with a key " +
		"only warren has, stays in the node's container log: not used without consent: give --allow-modes with ephemeral for unattended " +
		"runs, or run warren acquire on a terminal to be asked"
	if tg := sum.Index.Targets[0]; sum.Failed != 1 || tg.Reason != want {
		t.Fatalf("reason: %q\nwant:   %q", tg.Reason, want)
	}
	// Consent, but not the rights: the token's missing rules are named.
	a = e.newAcquisition(t, pod.Name)
	a.cfg.REST, a.cfg.CollectorImage = e.presetConfig(t), image
	a.cfg.Consented = []string{acquire.ModeExec, acquire.ModeEphemeral}
	sum = a.run(t)
	want = "exec: failed: " + noShell + `; ephemeral: not-permitted: token of "e2e-caller" cannot create resource "pods/attach" in API group "" ` +
		`in the namespace "default" (it needs --rule create:pods/attach:default:` + pod.Name + `); token of "e2e-caller" cannot patch resource ` +
		`"pods/ephemeralcontainers" in API group "" in the namespace "default" (it needs --rule patch:pods/ephemeralcontainers:default:` + pod.Name + `)`
	if tg := sum.Index.Targets[0]; sum.Failed != 1 || tg.Reason != want {
		t.Fatalf("reason: %q\nwant:   %q", tg.Reason, want)
	}
	got, err := adminClient(t).CoreV1().Pods(streamNS).Get(context.Background(), pod.Name, metav1.GetOptions{})
	if err != nil || len(got.Spec.EphemeralContainers) != 0 {
		t.Fatalf("ephemeral containers added: %v %+v", err, got.Spec.EphemeralContainers)
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	wait.Until(t, 15*time.Second, "the application to plant "+path, func() bool {
		_, err := os.Stat(path)
		return err == nil
	})
}

// TestEphemeralWhatReadingTheTargetNeeds: what the kernel asks of a process that reads /proc/1/root of another
// container's process, measured with busybox ephemeral containers in the stand-in (real processes, real
// credentials): the same user and capabilities that cover the target's read it; a root reader without the target's
// capabilities, or of another user, does not (which is why warren copies the target's user and capability set,
// and why kubectl debug's profiles fail on such targets).
func TestEphemeralWhatReadingTheTargetNeeds(t *testing.T) {
	needKubelet(t)
	cs := adminClient(t)
	uid := int64(1000)
	root := imagePod(t, "eph-root", "busybox", "echo root-owned > /tmp/f; chmod 600 /tmp/f; exec sleep 3600", nil)
	user := imagePod(t, "eph-user", "busybox", "echo user-owned > /tmp/f; chmod 600 /tmp/f; exec sleep 3600", func(s *corev1.PodSpec) {
		s.SecurityContext = &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &uid}
	})
	waitFile(t, containerPath(t, root, "main", "/tmp/f"))
	waitFile(t, containerPath(t, user, "main", "/tmp/f"))
	for i, c := range []struct {
		name   string
		pod    *corev1.Pod
		sc     *corev1.SecurityContext
		reads  bool
		result string
	}{
		{"root, default capabilities, root target", root, nil, true, "root-owned"},
		{"root, no capabilities, root target", root, &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}, false, ""},
		{"root, default capabilities, uid 1000 target", user, &corev1.SecurityContext{RunAsUser: new(int64)}, false, ""},
		{"root, SYS_PTRACE added, uid 1000 target", user, &corev1.SecurityContext{RunAsUser: new(int64),
			Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_PTRACE"}}}, true, "user-owned"},
		{"uid 1000, no capabilities, uid 1000 target", user, &corev1.SecurityContext{RunAsUser: &uid, RunAsGroup: &uid,
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}, true, "user-owned"},
	} {
		t.Run(c.name, func(t *testing.T) {
			name := fmt.Sprintf("probe-%d", i)
			ec := corev1.EphemeralContainer{TargetContainerName: "main", EphemeralContainerCommon: corev1.EphemeralContainerCommon{
				Name: name, Image: "busybox", Command: []string{"sh", "-c", "cat /proc/1/root/tmp/f 2>&1; echo exit=$?"}, SecurityContext: c.sc}}
			body, _ := json.Marshal(map[string]any{"spec": map[string]any{"ephemeralContainers": []corev1.EphemeralContainer{ec}}})
			if _, err := cs.CoreV1().Pods(streamNS).Patch(context.Background(), c.pod.Name, "application/strategic-merge-patch+json", body,
				metav1.PatchOptions{}, "ephemeralcontainers"); err != nil {
				t.Fatal(err)
			}
			var out string
			wait.Until(t, 20*time.Second, "the probe's output", func() bool {
				b, err := cs.CoreV1().Pods(streamNS).GetLogs(c.pod.Name, &corev1.PodLogOptions{Container: name}).DoRaw(context.Background())
				out = string(b)
				return err == nil && strings.Contains(out, "exit=")
			})
			if got := strings.Contains(out, "exit=0"); got != c.reads || (c.reads && !strings.Contains(out, c.result)) {
				t.Fatalf("reads %v, want %v: %q", got, c.reads, out)
			}
			if !c.reads && !strings.Contains(out, "Permission denied") {
				t.Fatalf("refused, but not for permission: %q", out)
			}
		})
	}
}

// ---- The node mode --------------------------------------------------------------------------------------------

// nodeEnv is a gateway and a connector whose ceiling keeps the collector namespace's pods to warren's collector pod,
// the collector namespace, and a real containerd whose directories the collector pod mounts.
type nodeEnv struct {
	*streamEnv
	cd          *containerdtest.Containerd
	collectorNS string
	image       string
}

func newNodeEnv(t *testing.T) *nodeEnv {
	t.Helper()
	needKubelet(t)
	n := &nodeEnv{collectorNS: uniqueName("warren-acquire"), image: collectorImage(t)}
	n.cd = containerdtest.ForTest(t)
	cs := adminClient(t)
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n.collectorNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), n.collectorNS, metav1.DeleteOptions{})
	})
	// No controller manager: the namespace's default service account is made by hand.
	if _, err := cs.CoreV1().ServiceAccounts(n.collectorNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ceiling, err := auth.ParsePolicy([]byte(fmt.Sprintf(`rules:
- verbs: ["*"]
  apiGroups: ["*"]
  resources: ["*"]
- verbs: [create]
  resources: [pods]
  namespaces: [%s]
  podSpec:
    kind: warren-collector
    images: [%q]
    hostPaths: [%q, %q]
`, n.collectorNS, n.image, n.runtimeDir(), n.cd.Root)))
	if err != nil {
		t.Fatal(err)
	}
	e := &streamEnv{gwAudit: &memAudit{}, connAudit: &memAudit{}}
	e.gs = startGatewayWith(t, "127.0.0.1:0", gatewayOpts{audit: e.gwAudit})
	e.conn = startConnector(t, e.gs, streamCluster, connectorOpts{name: "c", audit: e.connAudit, ceiling: ceiling})
	e.gs.waitConnectors(streamCluster, 1, 10*time.Second)
	e.token = callerToken(t, []string{streamCluster}, presetRules(t, n.collectorNS, "acquire-node")...)
	e.cfg = callerConfig(e.gs, streamCluster, e.token)
	e.cfg.Timeout = 0
	e.cs = clientset(t, e.cfg)
	n.streamEnv = e
	return n
}

func (n *nodeEnv) runtimeDir() string {
	return filepath.Join(n.cd.State, "io.containerd.runtime.v2.task")
}

// run starts a detached container in the real containerd (args: fsops operations, then wait).
func (n *nodeEnv) run(t *testing.T, spec containerdtest.RunSpec) {
	t.Helper()
	if err := n.cd.RunDetached(t.Context(), "k8s.io", spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.cd.StopTask(context.Background(), "k8s.io", spec.ID); err != nil {
			t.Errorf("stop task %s: %v", spec.ID, err)
		}
	})
}

// targetPod is a pod whose container "main" the stand-in reports as the containerd container id.
func (n *nodeEnv) targetPod(t *testing.T, id string) *corev1.Pod {
	t.Helper()
	return startPodSpec(t, "acq-node", corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "busybox"}}},
		"external.fakekubelet.warren.dev/main", "containerd://"+id)
}

func (n *nodeEnv) acquisition(t *testing.T, pods ...string) *acquisition {
	a := n.newAcquisition(t, pods...)
	a.cfg.Mode, a.cfg.CollectorImage, a.cfg.CollectorNamespace = acquire.ModeNode, n.image, n.collectorNS
	a.cfg.Consented, a.cfg.ConsentedBy = []string{acquire.ModeNode}, "--mode node"
	a.cfg.NodeRuntimeDir, a.cfg.NodeContainerdRoot = n.runtimeDir(), n.cd.Root
	a.cfg.StartTimeout = time.Minute
	return a
}

// collectorPodsGone checks that no collector pod is left in the collector namespace.
func (n *nodeEnv) collectorPodsGone(t *testing.T) {
	t.Helper()
	list, err := adminClient(t).CoreV1().Pods(n.collectorNS).List(context.Background(), metav1.ListOptions{})
	if err != nil || len(list.Items) != 0 {
		t.Fatalf("collector pods left: %v %d", err, len(list.Items))
	}
}

// TestAcquireNodeModeContainerd: the node mode against a real containerd. The stand-in reports the target pod's
// container under the id of a container that containerd runs (with the overlayfs snapshotter) and that wrote,
// deleted and changed files; warren's collector pod, created through the connector's podSpec check, pinned to the
// node with the host's PID namespace and containerd's directories mounted read-only, finds it by that id and
// reads its processes, its file system and its drift from the live upper directory; the pod is deleted, and the
// statement says so.
func TestAcquireNodeModeContainerd(t *testing.T) {
	n := newNodeEnv(t)
	img, err := containerdtest.BuildImage(t.TempDir(), containerdtest.DriftImage("docker.io/warren/node-e2e:1", containerdtest.FSOps(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.cd.Import(t.Context(), "k8s.io", img.Tarball, "overlayfs"); err != nil {
		t.Fatal(err)
	}
	id := "0d1e" + strings.Repeat("7", 60)
	n.run(t, containerdtest.RunSpec{ID: id, Image: "docker.io/warren/node-e2e:1", Snapshotter: "overlayfs",
		Args: append(append([]string{"/fsops"}, containerdtest.DriftOps...), "wait")})
	pid, err := n.cd.TaskPID(t.Context(), "k8s.io", id)
	if err != nil {
		t.Fatal(err)
	}
	waitFile(t, fmt.Sprintf("/proc/%d/root/app.sock", pid))
	pod := n.targetPod(t, id)

	a := n.acquisition(t, pod.Name)
	sum := a.run(t)
	if sum.Failed != 0 || sum.Index.Targets[0].Mode != acquire.ModeNode {
		t.Fatalf("summary: %s\n%s", prettyJSON(sum.Index), a.log.String())
	}
	dir := streamNS + "/" + pod.Name + "/main"
	st := a.statement(t, dir)
	p := st.Predicate
	np := p.NodePod
	if p.Mode != "node" || np == nil || np.Namespace != n.collectorNS || np.Node != fakeKubeletNode || np.ContainerID != id ||
		np.Snapshotter != "overlayfs" || !np.DeletedConfirmed || np.Deleted.IsZero() || np.DeleteError != "" || np.Consent != "--mode node" {
		t.Fatalf("node pod: %s", prettyJSON(np))
	}
	if !slices.ContainsFunc(p.Footprint, func(f string) bool { return strings.HasPrefix(f, "created collector pod "+n.collectorNS+"/"+np.Pod) }) ||
		!slices.ContainsFunc(p.Footprint, func(f string) bool {
			return strings.HasPrefix(f, "deleted collector pod "+n.collectorNS+"/"+np.Pod) && strings.HasSuffix(f, "(confirmed gone)")
		}) {
		t.Fatalf("footprint: %q", p.Footprint)
	}
	n.collectorPodsGone(t)
	t.Logf("node-mode acquisition: %s (collector pod created to deleted: %s), %d files, %d bytes", p.FinishedOn.Sub(p.StartedOn).Round(time.Millisecond),
		np.Deleted.Sub(np.Created).Round(time.Millisecond), p.Archive.Files, p.Archive.Size)
	files := a.entries(t, dir)
	var changes []collector.DriftChange
	if err := json.Unmarshal(files[collector.DriftChangesPath], &changes); err != nil {
		t.Fatalf("drift: %v", err)
	}
	byKey := map[string]collector.DriftChange{}
	for _, c := range changes {
		byKey[c.Path+" "+c.Change] = c
	}
	for _, k := range []string{"new.txt added", "etc/old.txt deleted", "etc/changed.txt changed", "etc/mode.txt changed", "opq/a deleted", "opq/fresh added"} {
		if _, ok := byKey[k]; !ok {
			t.Errorf("drift: no %s in %d changes", k, len(changes))
		}
	}
	const written = "planted by the container\n"
	if got, ok := subjectOf(st, "drift/fs/new.txt"); !ok || got != sum256([]byte(written)) || string(files["drift/fs/new.txt"]) != written {
		t.Fatalf("the container's write in the drift: %q %v %q", got, ok, files["drift/fs/new.txt"])
	}
	if string(files["container/fs/new.txt"]) != written {
		t.Errorf("container/fs/new.txt: %q", files["container/fs/new.txt"])
	}
	if !strings.Contains(string(files["container/processes.json"]), `"/fsops"`) {
		t.Errorf("the container's process is not in processes.json")
	}
	var info collector.NodeInfo
	if err := json.Unmarshal(files[collector.NodeBundlePath], &info); err != nil || info.ContainerID != id || info.Snapshotter != "overlayfs" {
		t.Fatalf("node/bundle.json: %v %+v", err, info)
	}
	// The witness of the collection is the connector's record of the attach to the collector pod.
	w := p.Witness
	conn := n.connAudit.wait(t, "the connector's record of the attach", func(r audit.Record) bool { return r.AuditID == w.AuditID })
	if conn.StdoutSHA256 != w.StdoutSHA256 || conn.Subresource != "attach" || conn.Namespace != n.collectorNS {
		t.Fatalf("witness %+v, connector %+v", w, conn)
	}
	// The pod creation passed the connector's check of its body.
	if _, ok := n.connAudit.find(func(r audit.Record) bool {
		return r.Verb == "create" && r.Resource == "pods" && r.Namespace == n.collectorNS && r.Decision == "allow"
	}); !ok {
		t.Fatal("no allowed pod creation in the connector's audit log")
	}
}

// TestAcquireNodeModeBadInputs: a pod whose container is not on the node, and one whose root no snapshotter made,
// each fail with one clear error; their collector pods are deleted all the same.
func TestAcquireNodeModeBadInputs(t *testing.T) {
	n := newNodeEnv(t)
	missing := n.targetPod(t, "feed"+strings.Repeat("0", 60))
	rootfs := t.TempDir()
	if err := os.WriteFile(filepath.Join(rootfs, "fsops"), containerdtest.FSOps(t), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"proc", "dev", "sys", "tmp"} {
		os.Mkdir(filepath.Join(rootfs, d), 0o755)
	}
	n.run(t, containerdtest.RunSpec{ID: "bare", Rootfs: rootfs, Args: []string{"/fsops", "wait"}})
	bare := n.targetPod(t, "bare")
	a := n.acquisition(t, missing.Name, bare.Name)
	sum := a.run(t)
	reasons := map[string]string{}
	for _, tg := range sum.Index.Targets {
		reasons[tg.Pod] = tg.Reason
	}
	if sum.Failed != 2 {
		t.Fatalf("summary: %s", prettyJSON(sum.Index))
	}
	wantMissing := "the collector sent no evidence: the collector said: warren-collector: no running container feed" + strings.Repeat("0", 60) +
		" in containerd namespace k8s.io on this node (" + filepath.Join(n.runtimeDir(), "k8s.io", "feed"+strings.Repeat("0", 60)) +
		": lstat: no such file or directory): the node mode reads running containers; for one that stopped, acquire the node's disk (warren acquire volume)"
	if reasons[missing.Name] != wantMissing {
		t.Errorf("missing container: %q\nwant: %q", reasons[missing.Name], wantMissing)
	}
	wantBare := "the collector sent no evidence: the collector said: warren-collector: container bare: unsupported snapshotter: its root file " +
		"system is a directory given to containerd directly (" + rootfs + "), which no snapshotter made: " + collector.UnsupportedNote
	if reasons[bare.Name] != wantBare {
		t.Errorf("bare rootfs: %q\nwant: %q", reasons[bare.Name], wantBare)
	}
	n.collectorPodsGone(t)
}

// TestAcquireNodeModeCeiling: through the gateway and the connector, the token of the node preset creates exactly
// warren's collector pod and nothing else in the collector namespace: a privileged variant, another image, an extra
// host mount, warren's pod for a container the token may not exec into, and pods sent as protobuf or YAML are each
// refused with what differs.
func TestAcquireNodeModeCeiling(t *testing.T) {
	n := newNodeEnv(t)
	good := collectorpod.NodePod(collectorpod.NodeParams{Name: uniqueName("warren-collector"), Namespace: n.collectorNS, NodeName: fakeKubeletNode,
		Image: n.image, Target: "default/x/main", ContainerID: "containerd://abc", AcquisitionID: "t", ActiveDeadlineSeconds: 60,
		Args: collector.ModeArgs{Mode: collector.ModeNode, ContainerID: "abc", Namespace: "k8s.io", RuntimeDir: n.runtimeDir(), ContainerdRoot: n.cd.Root}})
	// client-go sends protobuf by default: the connector does not decode it, so even warren's own pod is refused so.
	_, err := n.cs.CoreV1().Pods(n.collectorNS).Create(context.Background(), good, metav1.CreateOptions{})
	if want := `connector: the cluster's policy allows only warren's collector pod here (podSpec warren-collector): the pod must be sent as ` +
		`application/json to be checked, not "application/vnd.kubernetes.protobuf"`; err == nil || err.Error() != want {
		t.Errorf("protobuf: %v\nwant 415 %s", err, want)
	}
	jsonCfg := rest.CopyConfig(n.cfg)
	jsonCfg.ContentType = "application/json"
	pods := clientset(t, jsonCfg).CoreV1().Pods(n.collectorNS)
	const pre = "connector: the cluster's policy allows only warren's collector pod here (podSpec warren-collector): not warren's collector pod: "
	for _, c := range []struct {
		name   string
		mutate func(p *corev1.Pod)
		want   string
	}{
		{"privileged", func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext.Privileged = new(bool)
			*p.Spec.Containers[0].SecurityContext.Privileged = true
		},
			pre + "spec.containers[0].securityContext.privileged is true, warren's collector pod has false"},
		{"another image", func(p *corev1.Pod) { p.Spec.Containers[0].Image = "busybox@sha256:" + strings.Repeat("3", 64) },
			pre + `image "busybox@sha256:` + strings.Repeat("3", 64) + `" is not one of the collector images the cluster's policy allows (` + n.image + ")"},
		{"the node's root mounted", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
			p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "host", MountPath: "/host"})
		}, pre + "spec.containers[0].volumeMounts is a list of 3, warren's collector pod has a list of 2"},
	} {
		p := good.DeepCopy()
		p.Name = uniqueName("variant")
		c.mutate(p)
		_, err := pods.Create(context.Background(), p, metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) || apierrors.ReasonForError(err) != metav1.StatusReasonForbidden || err.Error() != c.want {
			t.Errorf("%s: %v\nwant 403 %s", c.name, err, c.want)
		}
	}
	// Warren's pod, but for a container of a pod the token may not exec into: the node mode reads what exec would.
	other := good.DeepCopy()
	other.Annotations[collectorpod.AnnotationTarget] = "kube-system/etcd/main"
	_, err = pods.Create(context.Background(), other, metav1.CreateOptions{})
	if want := `connector: the cluster's policy allows only warren's collector pod here (podSpec warren-collector): the collector pod's target: ` +
		`the node mode reads what exec would, and token of "e2e-caller" cannot create resource "pods/exec" in API group "" in the namespace ` +
		`"kube-system" (it needs --rule create:pods/exec:kube-system:etcd)`; err == nil || err.Error() != want {
		t.Errorf("another namespace's container: %v\nwant %s", err, want)
	}
	// The same pod as YAML: not read, refused.
	body := "apiVersion: v1\nkind: Pod\nmetadata: {name: yaml}\nspec: {containers: [{name: c, image: busybox}]}\n"
	res := n.cs.CoreV1().RESTClient().Post().Namespace(n.collectorNS).Resource("pods").SetHeader("Content-Type", "application/yaml").
		Body([]byte(body)).Do(context.Background())
	if err := res.Error(); err == nil || !strings.Contains(err.Error(), `the pod must be sent as application/json to be checked, not "application/yaml"`) {
		t.Errorf("YAML: %v", err)
	}
	list, err := adminClient(t).CoreV1().Pods(n.collectorNS).List(context.Background(), metav1.ListOptions{})
	if err != nil || len(list.Items) != 0 {
		t.Fatalf("pods were created: %v %d", err, len(list.Items))
	}
}

// TestAcquireModesCLI: the flags as a person gives them: a distroless target without --allow-modes (not on a
// terminal) fails saying the ephemeral mode needs consent; with --allow-modes exec,ephemeral and a token of the
// acquire-ephemeral preset it is acquired in ephemeral mode, the table says so, and the statement names the consent;
// a --collector-image by tag is a usage error.
func TestAcquireModesCLI(t *testing.T) {
	e := newStreamEnv(t)
	image := collectorImage(t)
	pod := distroless(t, "acq-cli-modes", "cli", nil)
	token := callerToken(t, []string{streamCluster}, presetRules(t, "", "acquire-ephemeral")...)
	out := filepath.Join(t.TempDir(), "out")
	args := append(e.acquireArgs(token, out), pod.Name, "--collector-image", image)
	stdout, stderr, code := warrenAcquire(t, args...)
	if code != 1 || !strings.Contains(stdout, "ephemeral: not-consented: an ephemeral container cannot be removed from its pod once added") {
		t.Fatalf("without --allow-modes: exit %d\n%s\n%s", code, stdout, stderr)
	}
	stdout, stderr, code = warrenAcquire(t, append(args, "--allow-modes", "exec,ephemeral")...)
	if code != 0 || !strings.Contains(stdout, "ephemeral/collector") || !strings.Contains(stderr, "adding ephemeral container warren-collector-") {
		t.Fatalf("with --allow-modes: exit %d\n%s\n%s", code, stdout, stderr)
	}
	store := mustStore(t, out)
	rep := evidence.VerifyTarget(context.Background(), store, streamNS+"/"+pod.Name+"/main", acqShared.keys)
	if !rep.OK() || rep.Statement.Predicate.Ephemeral.Consent != "--allow-modes exec,ephemeral" {
		t.Fatalf("statement: %v %+v", rep.Failures, rep.Statement)
	}
	_, stderr, code = warrenAcquire(t, append(e.acquireArgs(token, out), pod.Name, "--mode", "ephemeral", "--collector-image", "warren.test/warren-collector:v1")...)
	if code != 2 || !strings.Contains(stderr, `--collector-image "warren.test/warren-collector:v1": want an image pinned by digest`) {
		t.Fatalf("an image by tag: exit %d\n%s", code, stderr)
	}
}
