package e2e

// Scope bypasses through resources that are exec or credentials in disguise (auth.NamedOnlyResources), against the
// real kube-apiserver and the kubelet stand-in: exec through nodes/proxy, and the namespace object under a rule that
// names namespaces.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/testenv/wait"
)

// nodeProxyExec is the path, after /clusters/<cluster>, of an exec into pod's container main through the kubelet
// API under nodes/proxy: the API server forwards it, upgrade and all, to the kubelet with its own credentials.
func nodeProxyExec(pod, marker string) string {
	return fmt.Sprintf("/api/v1/nodes/%s/proxy/exec/%s/%s/main?command=echo&command=%s&output=1&stdout=1", fakeKubeletNode,
		streamNS, pod, marker)
}

// upgradeHeaders are what a WebSocket (GET) and a SPDY (POST) exec client sends.
var upgradeHeaders = []struct {
	name, method string
	header       http.Header
}{
	{"websocket", http.MethodGet, http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"},
		"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-Websocket-Protocol": {"v4.channel.k8s.io"}}},
	{"spdy", http.MethodPost, http.Header{"Connection": {"Upgrade"}, "Upgrade": {"SPDY/3.1"}, "X-Stream-Protocol-Version": {"v4.channel.k8s.io"}}},
	{"spdy keep-alive, Upgrade", http.MethodPost, http.Header{"Connection": {"keep-alive, Upgrade"}, "Upgrade": {"spdy/3.1"},
		"X-Stream-Protocol-Version": {"v4.channel.k8s.io"}}},
}

const nodeProxyWhy = `it is the kubelet's API, reached with the API server's own kubelet credentials: exec, run, attach and ` +
	`port-forward into any pod of the node, checkpoints (container memory), node logs, pprof and debug flags`

// TestNodeProxyExecNeedsANamedRule: read-only tokens (get,list,watch:*, get:*/proxy, get:nodes/proxy) cannot exec
// through nodes/proxy, over WebSocket or SPDY, at the gateway; the customer's ceiling refuses it at the connector
// whatever the gateway let through; and a token naming create:nodes/proxy does exec, audited as exec into the pod.
func TestNodeProxyExecNeedsANamedRule(t *testing.T) {
	e := newStreamEnv(t)
	pod := sleeper(t)
	marker := uniqueName("nodeproxy")
	c := rawClient(t, e.gs)

	refused := func(message string) string {
		return `token of "e2e-caller" cannot create resource "nodes/proxy" in API group "" at the cluster scope` + message +
			` (it needs --rule create:nodes/proxy::` + fakeKubeletNode + `)`
	}
	wildcard := `; no wildcard grants nodes/proxy, a rule must name it (` + nodeProxyWhy + `)`
	for _, tc := range []struct{ rules, message string }{
		{"get,list,watch:*", refused("")},
		{"get:*/proxy", refused("")},
		{"get:nodes/proxy", refused("")},
		{"create:*", refused(wildcard)},
		{"*:*:*", refused(wildcard)},
		{"create:*/proxy", refused(wildcard)},
	} {
		token := callerToken(t, []string{streamCluster}, tc.rules)
		for _, u := range upgradeHeaders {
			got := send(t, c, e.gs, u.method, "/clusters/"+streamCluster+nodeProxyExec(pod.Name, marker), token, u.header)
			if got.code != http.StatusForbidden || got.message != tc.message {
				t.Errorf("%s over %s: %d %q\nwant 403 %q", tc.rules, u.name, got.code, got.message, tc.message)
			}
		}
	}
	rec, ok := e.gwAudit.find(func(r audit.Record) bool { return strings.Contains(r.Path, marker) && r.Decision == audit.DecisionDeny })
	if !ok || rec.Kubelet == nil || rec.Kubelet.Operation != "exec" || rec.Kubelet.Pod != pod.Name || rec.Container != "main" {
		t.Errorf("the refusal's audit record does not say it was exec into %s: %+v", pod.Name, rec)
	}

	// The ceiling of auth.Policy's example, at a connector of its own; the gateway-side token is allowed.
	ceiling, err := auth.ParsePolicy([]byte(`
rules:
- verbs: [get, list, watch]
  resources: ["*"]
  apiGroups: ["*"]
- verbs: [create]
  resources: [pods/exec]
  namespaces: [payments]
`))
	if err != nil {
		t.Fatal(err)
	}
	gs := startGatewayWith(t, "127.0.0.1:0", gatewayOpts{})
	startConnector(t, gs, "ceiling", connectorOpts{name: "ceiling", ceiling: ceiling})
	gs.waitConnectors("ceiling", 1, 10*time.Second)
	cc := rawClient(t, gs)
	granted := callerToken(t, []string{"ceiling"}, "get,create:nodes/proxy")
	for _, u := range upgradeHeaders {
		got := send(t, cc, gs, u.method, "/clusters/ceiling"+nodeProxyExec(pod.Name, marker), granted, u.header)
		want := `connector: the cluster's policy does not allow it: cannot create resource "nodes/proxy" in API group "" at the cluster scope`
		if got.code != http.StatusForbidden || got.message != want {
			t.Errorf("ceiling, %s: %d %q\nwant 403 %q", u.name, got.code, got.message, want)
		}
	}
	// A plain read of the kubelet's API: the ceiling's get on "*" does not reach nodes/proxy either.
	got := send(t, cc, gs, "GET", "/clusters/ceiling/api/v1/nodes/"+fakeKubeletNode+"/proxy/healthz?"+marker, granted, nil)
	if want := `connector: the cluster's policy does not allow it: cannot get resource "nodes/proxy" in API group "" at the cluster scope` +
		wildcard; got.code != http.StatusForbidden || got.message != want {
		t.Errorf("ceiling, GET healthz: %d %q\nwant 403 %q", got.code, got.message, want)
	}
	neverSeen(t, marker)

	// Named, it goes through. The API server proxies to a node only at a global unicast address, never loopback: a
	// second kubelet stand-in serves on this machine's own non-loopback address. kube-apiserver 1.37 forwards an
	// upgraded nodes/proxy request without its query (UpgradeAwareHandler.tryUpgrade), so exec and attach reach the
	// kubelet without their parameters; SPDY port-forward, whose ports travel in the stream headers, works in full.
	node, podName := proxyableKubelet(t)
	named := callerToken(t, []string{streamCluster}, "create:nodes/proxy::"+node)
	cfg := callerConfig(e.gs, streamCluster, named)
	cfg.Timeout = 0
	ps := startPodServer(t)
	u, err := url.Parse(fmt.Sprintf("%s/api/v1/nodes/%s/proxy/portForward/%s/%s", cfg.Host, node, streamNS, podName))
	if err != nil {
		t.Fatal(err)
	}
	fw := forward(t, spdyDialer(t, cfg, u), ps.port)
	if got := httpGet(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/hello?n=%s", fw.local, marker)); got != "hello "+marker {
		t.Fatalf("port-forward through nodes/proxy with create:nodes/proxy: %q", got)
	}
	fw.stop()
	want := audit.KubeletCall{Operation: "portForward", Path: "/portForward/" + streamNS + "/" + podName, Namespace: streamNS, Pod: podName}
	for _, sink := range []*memAudit{e.gwAudit, e.connAudit} {
		rec := sink.wait(t, "port-forward via nodes/proxy", func(r audit.Record) bool {
			return strings.Contains(r.Path, "/proxy/portForward/") && r.Decision == audit.DecisionAllow
		})
		if rec.Kubelet == nil || *rec.Kubelet != want || rec.Verb != "create" || rec.Resource != "nodes" ||
			rec.Subresource != "proxy" || rec.Status != http.StatusSwitchingProtocols {
			t.Errorf("%s audit of port-forward via nodes/proxy: %+v (kubelet %+v), want kubelet %+v", rec.Component, rec, rec.Kubelet, want)
		}
	}
	// A WebSocket exec passes warren and reaches the kubelet, which answers for itself (the query did not come).
	word := uniqueName("granted")
	ex, err := remotecommand.NewWebSocketExecutorForProtocols(cfg, "GET",
		cfg.Host+strings.Replace(nodeProxyExec(podName, word), fakeKubeletNode, node, 1), "v4.channel.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: io.Discard})
	cancel()
	if err == nil || !strings.Contains(err.Error(), "(400 Bad Request): you must specify at least 1 of stdin, stdout, stderr") {
		t.Fatalf("WebSocket exec through nodes/proxy with create:nodes/proxy: %v, want the kubelet's own 400", err)
	}
	rec = e.gwAudit.wait(t, "WebSocket exec via nodes/proxy", func(r audit.Record) bool { return strings.Contains(r.Path, word) })
	if rec.Decision != audit.DecisionAllow || rec.Kubelet == nil || rec.Kubelet.Operation != "exec" || rec.Kubelet.Pod != podName ||
		rec.Container != "main" || !slices.Equal(rec.Command, []string{"echo", word}) {
		t.Errorf("audit of exec via nodes/proxy: %+v (kubelet %+v), want exec into %s/%s container main, command [echo %s]",
			rec, rec.Kubelet, streamNS, podName, word)
	}
}

// proxyableKubelet starts a second kubelet stand-in, for this test, serving on a non-loopback address of this
// machine (the API server refuses to proxy to a node at a loopback address), and a pod on it. It returns the Node's
// name and the pod's.
func proxyableKubelet(t *testing.T) (node, pod string) {
	t.Helper()
	var ip net.IP
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			ip = n.IP
			break
		}
	}
	if ip == nil {
		t.Fatalf("this machine has no non-loopback IPv4 address (%v): the API server proxies to nodes only at such an address", addrs)
	}
	node = uniqueName("warren-proxy-node")
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	log := &logBuffer{}
	cmd := exec.Command(fakeKubeletPath(), "--kubeconfig", kube.AdminKubeconfig, "--node-name", node,
		"--listen", net.JoinHostPort(ip.String(), "0"), "--ready-file", ready, "--root-dir", filepath.Join(dir, "root"))
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	admin := adminClient(t)
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		admin.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{})
		if t.Failed() {
			t.Logf("kubelet stand-in %s:\n%s", node, tail(log.String(), 40))
		}
	})
	wait.Until(t, 60*time.Second, "kubelet stand-in "+node+" ready", func() bool {
		_, err := os.Stat(ready)
		return err == nil
	})
	created, err := admin.CoreV1().Pods(streamNS).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("nodeproxy-target"), Namespace: streamNS},
		Spec: corev1.PodSpec{NodeName: node, RestartPolicy: corev1.RestartPolicyNever, TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{Name: "main", Image: "busybox", Command: []string{"sleep", "infinity"}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin.CoreV1().Pods(streamNS).Delete(context.Background(), created.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
	wait.Until(t, 30*time.Second, "pod "+created.Name+" Running", func() bool {
		p, err := admin.CoreV1().Pods(streamNS).Get(context.Background(), created.Name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning
	})
	return node, created.Name
}

// TestNamespacedWildcardLeavesTheNamespaceAlone: delete:*:NS deletes what is in NS, never NS itself (nor its
// finalizers); delete:namespaces:NS does delete NS, as RBAC would with a RoleBinding in NS.
func TestNamespacedWildcardLeavesTheNamespaceAlone(t *testing.T) {
	ns := uniqueName("nsdel")
	gs := startGateway(t, "127.0.0.1:0")
	startConnector(t, gs, "prod", connectorOpts{name: "ns"})
	gs.waitConnectors("prod", 1, 10*time.Second)
	admin := adminClient(t)
	ctx := context.Background()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// No controller-manager finalizes a deleted namespace here: do it, as it would.
		admin.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		if n, err := admin.CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{}); err == nil {
			n.Spec.Finalizers = nil
			admin.CoreV1().Namespaces().Finalize(context.Background(), n, metav1.UpdateOptions{})
		}
	})
	if _, err := admin.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "evidence"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := rawClient(t, gs)
	note := `; a rule naming namespaces covers "namespaces" only when it names "namespaces" in its resources: in a rule naming ` +
		`namespaces, it is the namespace object itself (delete removes everything in it)`
	finalizeNote := `; a rule naming namespaces covers "namespaces/finalize" only when it names "namespaces/finalize" in its ` +
		`resources: in a rule naming namespaces, it is the finalizers of the namespace object itself (PUT finalize completes its deletion)`
	for _, rules := range []string{"delete:*:" + ns, "*:*:" + ns, "delete,update:*.*:" + ns} {
		token := callerToken(t, []string{"prod"}, rules)
		got := send(t, c, gs, "DELETE", "/clusters/prod/api/v1/namespaces/"+ns, token, nil)
		want := `token of "e2e-caller" cannot delete resource "namespaces" in API group "" in the namespace "` + ns + `"` + note +
			` (it needs --rule delete:namespaces:` + ns + `:` + ns + `)`
		if got.code != http.StatusForbidden || got.message != want {
			t.Errorf("%s: DELETE the namespace: %d %q\nwant 403 %q", rules, got.code, got.message, want)
		}
		if strings.HasPrefix(rules, "delete:") {
			continue
		}
		got = send(t, c, gs, "PUT", "/clusters/prod/api/v1/namespaces/"+ns+"/finalize", token, http.Header{"Content-Type": {"application/json"}})
		want = `token of "e2e-caller" cannot update resource "namespaces/finalize" in API group "" in the namespace "` + ns + `"` +
			finalizeNote + ` (it needs --rule update:namespaces/finalize:` + ns + `:` + ns + `)`
		if got.code != http.StatusForbidden || got.message != want {
			t.Errorf("%s: PUT finalize: %d %q\nwant 403 %q", rules, got.code, got.message, want)
		}
	}
	if n, err := admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil || n.DeletionTimestamp != nil {
		t.Fatalf("namespace %s after the refusals: %v, deletion %v", ns, err, n.DeletionTimestamp)
	}
	// What is inside stays the namespaced wildcard's.
	if got := send(t, c, gs, "DELETE", "/clusters/prod/api/v1/namespaces/"+ns+"/configmaps/evidence",
		callerToken(t, []string{"prod"}, "delete:*:"+ns), nil); got.code != http.StatusOK {
		t.Fatalf("delete:*:%s deleting a ConfigMap in it: %d %q", ns, got.code, got.message)
	}
	// Naming the namespaces resource in a namespaced rule grants the namespace object itself.
	if got := send(t, c, gs, "DELETE", "/clusters/prod/api/v1/namespaces/"+ns,
		callerToken(t, []string{"prod"}, "delete:namespaces:"+ns), nil); got.code != http.StatusOK {
		t.Fatalf("delete:namespaces:%s: %d %q", ns, got.code, got.message)
	}
	n, err := admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil || n.DeletionTimestamp == nil {
		t.Fatalf("namespace %s after delete:namespaces:%s: %v, deletion %v", ns, ns, err, n)
	}
}
