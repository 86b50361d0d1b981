package e2e

// The streaming suite's environment: the fake kubelet (one per package, like kube), pods that run on it, a gateway
// and a connector with audit sinks, a caller token with a forensic responder's rules, and the client-go executors
// and port-forward dialers of both protocols.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	streamhttp "k8s.io/streaming/pkg/httpstream"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/internal/testenv/kubetest"
	"github.com/warren-dev/warren/internal/testenv/wait"
)

// ---- The fake kubelet ----------------------------------------------------------------------------------------------

// fakeKubeletNode is the Node the fake kubelet registers; pods with this spec.nodeName run on it.
const fakeKubeletNode = "warren-node"

// fakeKubelet is the package's kubelet stand-in (internal/testenv/k8s/cmd/fakekubelet), started by the first test that needs it
// and stopped by runMain (stopFakeKubelet) after every test has run, so that one process serves the whole package.
//
// Its containers are isolated (their own mount and PID namespaces, root filesystems of images built from Debian
// packages by scripts/rootfs.sh, the node's network): a pod names an image, busybox unless a test says otherwise
// (busybox, busybox-notools, debian, distroless; or one a test makes with makeImage). A test reaches a container's
// files from this machine with containerPath. A pod asks for a read-only root with readOnlyRootFilesystem, a
// read-only /tmp with an emptyDir mounted readOnly there, a noexec (or read-only) /tmp with the annotation
// fakekubelet.warren.dev/tmpfs: "/tmp:noexec" (startPodSpec's annotations); users with runAsUser and runAsGroup.
// See the package doc of internal/testenv/k8s/fakekubelet for the rest (volumes, ephemeral containers, hostPID) and for what is
// not emulated.
var fakeKubelet struct {
	once   sync.Once
	err    error
	dir    string
	cmd    *exec.Cmd
	log    *logBuffer
	done   chan struct{} // closed when the process has exited
	addr   string        // host:port it serves the kubelet API on
	root   string        // its --root-dir: pods/NAMESPACE_NAME_UID/containers/NAME/pid is a container's node PID
	images string        // the image directory of this run, for makeImage; searched after the cache
}

// fakeKubeletPath is where scripts/kube-bin.sh builds the stand-in: next to kube-apiserver and kubectl.
func fakeKubeletPath() string { return filepath.Join(filepath.Dir(kube.KubectlPath), "fakekubelet") }

// cachedImageDir is where scripts/rootfs.sh builds the stand-in's images:
// ${WARREN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/warren}/rootfs.
func cachedImageDir() (string, error) {
	cache := os.Getenv("WARREN_CACHE")
	if cache == "" {
		userCache, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("failed to find the image cache (set WARREN_CACHE): %w", err)
		}
		cache = filepath.Join(userCache, "warren")
	}
	return filepath.Join(cache, "rootfs"), nil
}

// needKubelet starts the fake kubelet once for the package and waits until its Node is registered. It fails the
// test (never skips) when the binary is missing.
func needKubelet(t testing.TB) {
	t.Helper()
	fakeKubelet.once.Do(func() { fakeKubelet.err = startFakeKubelet() })
	if fakeKubelet.err != nil {
		t.Fatalf("fake kubelet: %v", fakeKubelet.err)
	}
	select {
	case <-fakeKubelet.done:
		t.Fatalf("the fake kubelet has exited; its output:\n%s", fakeKubelet.log.String())
	default:
	}
}

func startFakeKubelet() error {
	bin := fakeKubeletPath()
	if err := isExecutableFile(bin); err != nil {
		return fmt.Errorf("%v: run scripts/kube-bin.sh, which builds it (module internal/testenv/k8s, ./cmd/fakekubelet)", err)
	}
	cached, err := cachedImageDir()
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(cached, "busybox", "rootfs")); err != nil {
		return fmt.Errorf("no busybox image (%v): run scripts/rootfs.sh (scripts/kube-bin.sh runs it)", err)
	}
	dir, err := os.MkdirTemp("", "warren-fakekubelet-")
	if err != nil {
		return err
	}
	fakeKubelet.dir = dir
	fakeKubelet.root = filepath.Join(dir, "root")
	fakeKubelet.images = filepath.Join(dir, "images")
	if err := os.Mkdir(fakeKubelet.images, 0o755); err != nil {
		return err
	}
	ready := filepath.Join(dir, "ready")
	fakeKubelet.log = &logBuffer{}
	fakeKubelet.done = make(chan struct{})
	cmd := exec.Command(bin, "--kubeconfig", kube.AdminKubeconfig, "--node-name", fakeKubeletNode,
		"--listen", "127.0.0.1:0", "--ready-file", ready, "--root-dir", fakeKubelet.root,
		"--image-dir", cached, "--image-dir", fakeKubelet.images,
		"--cert-dir", filepath.Join(dir, "pki"), "--log-level", "info")
	cmd.Stdout, cmd.Stderr = fakeKubelet.log, fakeKubelet.log
	// Not tied to any test's lifetime: stopFakeKubelet ends it at the end of the package, and if the test binary
	// dies first, the kernel kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	fakeKubelet.cmd = cmd
	go func() {
		_ = cmd.Wait()
		close(fakeKubelet.done)
	}()
	begin := time.Now()
	deadline := begin.Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(ready); err == nil {
			fakeKubelet.addr = strings.TrimSpace(string(b))
			fmt.Fprintf(os.Stderr, "e2e: fake kubelet ready at %s in %v\n", fakeKubelet.addr, time.Since(begin).Round(time.Millisecond))
			return nil
		}
		select {
		case <-fakeKubelet.done:
			return fmt.Errorf("exited before it was ready: %s", fakeKubelet.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within 60s: %s", fakeKubelet.log.String())
		}
	}
}

// stopFakeKubelet stops the fake kubelet if a test started it (SIGTERM: it kills its processes and exits 0; SIGKILL
// after 15 s) and returns code, or 1 if the kubelet had died early or did not stop cleanly. runMain calls it once
// every test has run.
func stopFakeKubelet(code int) int {
	if fakeKubelet.cmd == nil {
		return code
	}
	defer os.RemoveAll(fakeKubelet.dir)
	select {
	case <-fakeKubelet.done:
		fmt.Fprintf(os.Stderr, "e2e: the fake kubelet exited during the tests (%v):\n%s\n", fakeKubelet.cmd.ProcessState, tail(fakeKubelet.log.String(), 40))
		return 1
	default:
	}
	_ = fakeKubelet.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-fakeKubelet.done:
	case <-time.After(15 * time.Second):
		_ = fakeKubelet.cmd.Process.Kill()
		<-fakeKubelet.done
		fmt.Fprintln(os.Stderr, "e2e: the fake kubelet did not stop within 15s of SIGTERM")
		return 1
	}
	if !fakeKubelet.cmd.ProcessState.Success() {
		fmt.Fprintf(os.Stderr, "e2e: the fake kubelet exited with %v:\n%s\n", fakeKubelet.cmd.ProcessState, tail(fakeKubelet.log.String(), 40))
		return 1
	}
	return code
}

func isExecutableFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// ---- Pods ----------------------------------------------------------------------------------------------------------

// streamNS is where the streaming suite's pods run; its default ServiceAccount exists (kubetest creates it).
const streamNS = "default"

// adminClient talks to the API server directly, for set-up that is not the subject of a test.
func adminClient(t testing.TB) *kubernetes.Clientset {
	t.Helper()
	return clientset(t, kube.RestConfig(kubetest.UserAdmin))
}

var podSeq atomic.Int64

// uniqueName returns a DNS-1123 name unique in this test binary and among earlier runs against the same cluster.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano()%1e8, podSeq.Add(1))
}

// startPod creates a pod with one container "main" bound to the fake kubelet's node, waits until it is Running
// and ready, and deletes it at the end of the test. The image is busybox unless c names one; with no command and
// no args, the container just runs (sleep infinity).
func startPod(t *testing.T, prefix string, c corev1.Container) *corev1.Pod {
	t.Helper()
	return startPodSpec(t, prefix, corev1.PodSpec{Containers: []corev1.Container{c}})
}

// startPodSpec is startPod for a pod spec of the test's own (volumes, security context, annotations aside); its
// first container is called "main" unless it has a name. The node, restart policy and grace period are set here.
func startPodSpec(t testing.TB, prefix string, spec corev1.PodSpec, annotations ...string) *corev1.Pod {
	t.Helper()
	needKubelet(t)
	cs := adminClient(t)
	for i := range spec.Containers {
		c := &spec.Containers[i]
		if c.Name == "" && i == 0 {
			c.Name = "main"
		}
		if c.Image == "" {
			c.Image = "busybox"
		}
		if len(c.Command) == 0 && len(c.Args) == 0 && c.Image == "busybox" {
			c.Command = []string{"sleep", "infinity"}
		}
	}
	spec.NodeName = fakeKubeletNode
	spec.RestartPolicy = corev1.RestartPolicyNever
	spec.TerminationGracePeriodSeconds = new(int64)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: uniqueName(prefix), Namespace: streamNS}, Spec: spec}
	for i := 0; i+1 < len(annotations); i += 2 {
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[annotations[i]] = annotations[i+1]
	}
	ctx := context.Background()
	created, err := cs.CoreV1().Pods(streamNS).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", pod.Name, err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Pods(streamNS).Delete(context.Background(), created.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
	var got *corev1.Pod
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err = cs.CoreV1().Pods(streamNS).Get(ctx, created.Name, metav1.GetOptions{})
		if err == nil && got.Status.Phase == corev1.PodRunning && podReady(got) {
			return got
		}
		stuck := false // the fake kubelet will not start it: no such image, a configuration it cannot apply
		if err == nil {
			for _, st := range got.Status.ContainerStatuses {
				stuck = stuck || st.State.Waiting != nil && st.State.Waiting.Reason != "ContainerCreating"
			}
		}
		if err == nil && (stuck || got.Status.Phase == corev1.PodSucceeded || got.Status.Phase == corev1.PodFailed) ||
			time.Now().After(deadline) {
			// Pending with a waiting reason (ErrImagePull, CreateContainerConfigError), or ended: say why.
			var states []string
			if got != nil {
				for _, st := range got.Status.ContainerStatuses {
					states = append(states, fmt.Sprintf("%s: %+v", st.Name, st.State))
				}
			}
			t.Fatalf("pod %s not Running and ready (phase %v, err %v): %s", created.Name, got.Status.Phase, err,
				strings.Join(states, "; "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func podReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// containerPID is the PID on this machine of a container's process (PID 1 in its own namespace), read from the
// fake kubelet's pid file.
func containerPID(t *testing.T, pod *corev1.Pod, container string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fakeKubelet.root, "pods", pod.Namespace+"_"+pod.Name+"_"+string(pod.UID),
		"containers", container, "pid"))
	if err != nil {
		t.Fatalf("no PID for container %s of pod %s: %v", container, pod.Name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// containerPath is path in the container's root as seen from this machine (/proc/PID/root/...): what a test
// reads or plants there is the container's file, as a collector on the node would see it.
func containerPath(t *testing.T, pod *corev1.Pod, container, path string) string {
	t.Helper()
	return fmt.Sprintf("/proc/%d/root%s", containerPID(t, pod, container), filepath.Clean("/"+path))
}

// makeImage makes an image for this test run only, named name, and returns its reference (warren.test/NAME): the
// files (path in the image -> content; mode 0755 when the path is under /bin, else 0644) and config.json, the OCI
// config's Entrypoint, Cmd, Env, WorkingDir and User as JSON (empty: none). It is removed at the end of the test.
func makeImage(t *testing.T, name string, files map[string][]byte, config string) string {
	t.Helper()
	needKubelet(t)
	dir := filepath.Join(fakeKubelet.images, name)
	if err := os.MkdirAll(filepath.Join(dir, "rootfs", "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for path, data := range files {
		mode := os.FileMode(0o644)
		if strings.HasPrefix(path, "/bin/") {
			mode = 0o755
		}
		p := filepath.Join(dir, "rootfs", filepath.Clean("/"+path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
	}
	if config != "" {
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return "warren.test/" + name
}

// sleeper is a pod whose container just runs: a target for exec and port-forward.
func sleeper(t *testing.T) *corev1.Pod {
	return startPod(t, "sleeper", corev1.Container{Command: []string{"sleep", "infinity"}})
}

// ---- Gateway, connector, caller -------------------------------------------------------------------------------------

const streamCluster = "stream"

// streamRules are a forensic responder's: read pods, exec/attach/port-forward into them, read their logs, in one
// namespace. Nothing else.
var streamRules = []string{
	"get,list:pods:" + streamNS,
	"create:pods/exec,pods/attach,pods/portforward:" + streamNS,
	"get:pods/log:" + streamNS,
}

// memAudit keeps audit records in memory for assertions.
type memAudit struct {
	mu   sync.Mutex
	recs []audit.Record
}

func (m *memAudit) Write(r audit.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, r)
	return nil
}

func (m *memAudit) records() []audit.Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]audit.Record(nil), m.recs...)
}

// find returns the first record that matches.
func (m *memAudit) find(match func(audit.Record) bool) (audit.Record, bool) {
	return findRecord(m.records(), match)
}

// wait waits until a record matches; the gateway writes it once the request (the whole stream) has ended.
func (m *memAudit) wait(t *testing.T, what string, match func(audit.Record) bool) audit.Record {
	t.Helper()
	var rec audit.Record
	wait.Until(t, 15*time.Second, "audit record of "+what, func() bool {
		var ok bool
		rec, ok = m.find(match)
		return ok
	})
	return rec
}

// streamEnv is a gateway and one connector (verifying callers itself) for cluster "stream", both auditing to
// memory, and a caller with streamRules.
type streamEnv struct {
	gs        *gatewayServer
	conn      *runningConnector
	gwAudit   *memAudit
	connAudit *memAudit
	token     string
	cfg       *rest.Config // through the gateway, no client timeout (streams are long)
	cs        *kubernetes.Clientset
	kc        string // kubeconfig for kubectl
}

func newStreamEnv(t testing.TB) *streamEnv {
	return newStreamEnvWith(t, gatewayOpts{})
}

func newStreamEnvWith(t testing.TB, o gatewayOpts) *streamEnv {
	t.Helper()
	needKubelet(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("fake kubelet output (last lines, whole package):\n%s", tail(fakeKubelet.log.String(), 60))
		}
	})
	e := &streamEnv{gwAudit: &memAudit{}, connAudit: &memAudit{}}
	if o.audit == nil {
		o.audit = e.gwAudit
	}
	e.gs = startGatewayWith(t, "127.0.0.1:0", o)
	// The connector re-checks open streams as the gateway does: same revocation list and expiry setting.
	e.conn = startConnector(t, e.gs, streamCluster, connectorOpts{name: "c", audit: e.connAudit,
		revoked: o.revoked, disconnectExpired: o.disconnectExpired, streamCheck: o.streamCheck, leeway: o.leeway, tunnel: o.tunnel})
	e.gs.waitConnectors(streamCluster, 1, 10*time.Second)
	e.token = callerToken(t, []string{streamCluster}, streamRules...)
	e.cfg = callerConfig(e.gs, streamCluster, e.token)
	e.cfg.Timeout = 0 // as kubectl: a client timeout would cut exec, logs -f and port-forward
	e.cs = clientset(t, e.cfg)
	e.kc = writeKubeconfig(t, e.gs, streamCluster, e.token)
	return e
}

// ---- Exec and attach with client-go ----------------------------------------------------------------------------------

// executorKind is one way client-go speaks the remote command protocol.
type executorKind struct {
	name   string
	method string // what the gateway sees: POST for SPDY, GET for WebSocket
	new    func(cfg *rest.Config, u *url.URL) (remotecommand.Executor, error)
}

// shouldFallback is the predicate kubectl uses. It must come from k8s.io/streaming: client-go's WebSocket round
// tripper returns k8s.io/streaming/pkg/httpstream.UpgradeFailureError, which the same-named apimachinery function
// does not recognise (see TestStreamFallbackPredicate).
func shouldFallback(err error) bool {
	return streamhttp.IsUpgradeFailure(err) || streamhttp.IsHTTPSProxyError(err)
}

var executorKinds = []executorKind{
	{"spdy", http.MethodPost, func(cfg *rest.Config, u *url.URL) (remotecommand.Executor, error) {
		return remotecommand.NewSPDYExecutor(cfg, http.MethodPost, u)
	}},
	{"websocket", http.MethodGet, func(cfg *rest.Config, u *url.URL) (remotecommand.Executor, error) {
		return remotecommand.NewWebSocketExecutor(cfg, http.MethodGet, u.String())
	}},
	{"fallback", http.MethodGet, func(cfg *rest.Config, u *url.URL) (remotecommand.Executor, error) {
		return newFallbackExecutor(cfg, u, shouldFallback)
	}},
}

// newFallbackExecutor is kubectl's executor: WebSocket first, SPDY when pred says the upgrade failed.
func newFallbackExecutor(cfg *rest.Config, u *url.URL, pred func(error) bool) (remotecommand.Executor, error) {
	ws, err := remotecommand.NewWebSocketExecutor(cfg, http.MethodGet, u.String())
	if err != nil {
		return nil, err
	}
	sp, err := remotecommand.NewSPDYExecutor(cfg, http.MethodPost, u)
	if err != nil {
		return nil, err
	}
	return remotecommand.NewFallbackExecutor(ws, sp, pred)
}

// execURL is the exec subresource URL of pod through cfg (the gateway).
func execURL(cs *kubernetes.Clientset, pod string, opts *corev1.PodExecOptions) *url.URL {
	opts.Container = "main"
	return cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(streamNS).Name(pod).SubResource("exec").
		VersionedParams(opts, scheme.ParameterCodec).URL()
}

func attachURL(cs *kubernetes.Clientset, pod string, opts *corev1.PodAttachOptions) *url.URL {
	opts.Container = "main"
	return cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(streamNS).Name(pod).SubResource("attach").
		VersionedParams(opts, scheme.ParameterCodec).URL()
}

// execResult is what a remote command returned.
type execResult struct {
	stdout, stderr string
	err            error
}

// runExec runs command in pod with the executor kind; stdin may be nil.
func (e *streamEnv) runExec(ctx context.Context, t testing.TB, kind executorKind, pod string, command []string, stdin io.Reader) execResult {
	t.Helper()
	u := execURL(e.cs, pod, &corev1.PodExecOptions{Command: command, Stdin: stdin != nil, Stdout: true, Stderr: true})
	ex, err := kind.new(e.cfg, u)
	if err != nil {
		t.Fatalf("%s executor: %v", kind.name, err)
	}
	var out, errOut bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: &out, Stderr: &errOut})
	return execResult{out.String(), errOut.String(), err}
}

// exitCode is the remote exit status of err: 0 for nil, -1 when err carries none.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee interface{ ExitStatus() int }
	if errors.As(err, &ee) {
		return ee.ExitStatus()
	}
	return -1
}

// sizeQueue is a remotecommand.TerminalSizeQueue fed by a channel; close it to end the client's resize loop.
type sizeQueue chan remotecommand.TerminalSize

func (q sizeQueue) Next() *remotecommand.TerminalSize {
	s, ok := <-q
	if !ok {
		return nil
	}
	return &s
}

// ---- Port-forward with client-go ------------------------------------------------------------------------------------

// dialerKind is one way client-go opens a port-forward connection.
type dialerKind struct {
	name   string
	method string // what the gateway sees
	new    func(t *testing.T, cfg *rest.Config, u *url.URL) httpstream.Dialer
}

func spdyDialer(t *testing.T, cfg *rest.Config, u *url.URL) httpstream.Dialer {
	rt, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
}

func websocketDialer(t *testing.T, cfg *rest.Config, u *url.URL) httpstream.Dialer {
	d, err := portforward.NewSPDYOverWebsocketDialer(u, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

var dialerKinds = []dialerKind{
	{"spdy", http.MethodPost, spdyDialer},
	{"websocket", http.MethodGet, websocketDialer},
	{"fallback", http.MethodGet, func(t *testing.T, cfg *rest.Config, u *url.URL) httpstream.Dialer {
		return portforward.NewFallbackDialer(websocketDialer(t, cfg, u), spdyDialer(t, cfg, u), shouldFallback)
	}},
}

func portForwardURL(cs *kubernetes.Clientset, pod string) *url.URL {
	return cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(streamNS).Name(pod).SubResource("portforward").URL()
}

// forwarding is a running client-go port-forward to one port of a pod.
type forwarding struct {
	local uint16
	stop  func() // idempotent; waits for ForwardPorts to return
	done  chan struct{}
	err   error // ForwardPorts' return, after done
}

// forward forwards a free local port to remotePort of pod with the dialer and stops at the end of the test.
func forward(t *testing.T, dialer httpstream.Dialer, remotePort int) *forwarding {
	t.Helper()
	stopCh, readyCh := make(chan struct{}), make(chan struct{})
	var out, errOut logBuffer
	fw, err := portforward.New(dialer, []string{"0:" + strconv.Itoa(remotePort)}, stopCh, readyCh, &out, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarding{done: make(chan struct{})}
	go func() {
		defer close(f.done)
		f.err = fw.ForwardPorts()
	}()
	var once sync.Once
	f.stop = func() {
		once.Do(func() { close(stopCh) })
		<-f.done
	}
	t.Cleanup(f.stop)
	select {
	case <-readyCh:
	case <-f.done:
		t.Fatalf("port-forward failed: %v (stderr %q)", f.err, errOut.String())
	case <-time.After(30 * time.Second):
		t.Fatal("port-forward not ready within 30s")
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		t.Fatalf("GetPorts: %v %v", ports, err)
	}
	f.local = ports[0].Local
	return f
}

// ---- The "pod's" HTTP server and payloads ---------------------------------------------------------------------------

// podServer is an HTTP server on 127.0.0.1, the port a pod "listens" on: the fake kubelet forwards to 127.0.0.1.
//
//	GET  /hello?n=N   -> "hello N"
//	POST /sha256      -> hex SHA-256 of the body and its length: "HEX LEN"
//	GET  /blob?n=N    -> N bytes of payload(N), with header X-Sha256
type podServer struct {
	port     int
	requests atomic.Int64
	srv      *http.Server
}

func startPodServer(t *testing.T) *podServer {
	t.Helper()
	ps := &podServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		ps.requests.Add(1)
		fmt.Fprintf(w, "hello %s", r.URL.Query().Get("n"))
	})
	mux.HandleFunc("POST /sha256", func(w http.ResponseWriter, r *http.Request) {
		ps.requests.Add(1)
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%x %d", h.Sum(nil), n)
	})
	mux.HandleFunc("GET /blob", func(w http.ResponseWriter, r *http.Request) {
		ps.requests.Add(1)
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		b := payload(n)
		w.Header().Set("X-Sha256", sha256hex(b))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Write(b)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ps.port = ln.Addr().(*net.TCPAddr).Port
	ps.srv = &http.Server{Handler: mux}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ps.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		ps.srv.Close()
		<-done
	})
	return ps
}

// payloads caches deterministic pseudo-random payloads by size.
var payloads sync.Map

// payload returns n deterministic pseudo-random bytes (the same n gives the same bytes); callers must not modify them.
func payload(n int) []byte {
	if b, ok := payloads.Load(n); ok {
		return b.([]byte)
	}
	r := rand.New(rand.NewPCG(uint64(n), 42))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n - n%8; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	payloads.Store(n, b)
	return b
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256hex(b)
}

// checkForwardedHTTP drives the pod's HTTP server through a forwarded local port: several requests on one kept-alive
// connection, several in parallel on fresh connections, a 10 MB upload and a 10 MB download with matching hashes.
func checkForwardedHTTP(t *testing.T, local uint16, ps *podServer) {
	t.Helper()
	base := fmt.Sprintf("http://127.0.0.1:%d", local)
	before := ps.requests.Load()

	keep := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer keep.CloseIdleConnections()
	for i := range 5 {
		if got := httpGet(t, keep, fmt.Sprintf("%s/hello?n=%d", base, i)); got != fmt.Sprintf("hello %d", i) {
			t.Fatalf("request %d on a kept-alive connection: %q", i, got)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := c.Get(fmt.Sprintf("%s/hello?n=p%d", base, i))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if string(b) != fmt.Sprintf("hello p%d", i) {
				errs <- fmt.Errorf("parallel request %d: %q", i, b)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	const size = 10 << 20
	body := payload(size)
	resp, err := keep.Post(base+"/sha256", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("10 MB upload: %v", err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%s %d", sha256hex(body), size); string(got) != want {
		t.Fatalf("10 MB upload: server saw %q, want %q", got, want)
	}
	resp, err = keep.Get(fmt.Sprintf("%s/blob?n=%d", base, size))
	if err != nil {
		t.Fatalf("10 MB download: %v", err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || n != size || hex.EncodeToString(h.Sum(nil)) != resp.Header.Get("X-Sha256") {
		t.Fatalf("10 MB download: %d bytes, sha256 %x (want %s), err %v", n, h.Sum(nil), resp.Header.Get("X-Sha256"), err)
	}
	if n := ps.requests.Load() - before; n != 5+8+2 {
		t.Fatalf("the pod's server saw %d requests, want 15", n)
	}
}

func httpGet(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %q %v", u, resp.StatusCode, b, err)
	}
	return string(b)
}

// ---- kubectl -------------------------------------------------------------------------------------------------------

// kubectlWith runs kubectl with env added to the environment and stdin (may be nil), for at most 2 minutes.
func kubectlWith(env []string, stdin io.Reader, kubeconfig string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := kubectlCommand(ctx, kubeconfig, args...)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = stdin
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func kubectlEnv(env []string, kubeconfig string, args ...string) (stdout, stderr string, err error) {
	return kubectlWith(env, nil, kubeconfig, args...)
}

// writeKubeconfigAt writes a kubeconfig for server (a cluster URL) trusting caPEM.
func writeKubeconfigAt(t *testing.T, server string, caPEM []byte, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: caller
  user:
    token: %s
contexts:
- name: c
  context: {cluster: c, user: caller}
current-context: c
`, server, base64.StdEncoding.EncodeToString(caPEM), token)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// ---- Processes (the fake kubelet's containers' processes are this machine's too, under other PIDs) ------------------

// procsWith returns the pids of the processes whose command line contains marker.
func procsWith(marker string) []int {
	var pids []int
	for pid := range markedProcs(marker) {
		pids = append(pids, pid)
	}
	return pids
}

// shellsWith returns the pids of the processes whose command line contains marker and whose parent's does not. A
// shell forks before it execs a command, and until the exec the child has the shell's command line: such a child
// is not a session of its own.
func shellsWith(marker string) []int {
	marked := markedProcs(marker)
	var pids []int
	for pid, ppid := range marked {
		if _, child := marked[ppid]; !child {
			pids = append(pids, pid)
		}
	}
	return pids
}

// markedProcs maps the processes whose command line contains marker to their parents.
func markedProcs(marker string) map[int]int {
	entries, _ := os.ReadDir("/proc")
	parents := map[int]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte(marker)) {
			continue
		}
		parents[pid] = procParent(pid)
	}
	return parents
}

// procParent is the parent pid of pid (/proc/PID/stat), or -1.
func procParent(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after its last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return -1
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return -1
	}
	return ppid
}

// procWchar is the number of bytes pid has written (/proc/PID/io wchar), or -1.
func procWchar(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "wchar: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}
