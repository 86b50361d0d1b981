package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/testenv/wait"
)

func clientset(t testing.TB, cfg *rest.Config) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// TestClientGoThroughTunnel drives every basic verb with client-go through gateway and connector.
func TestClientGoThroughTunnel(t *testing.T) {
	gs := startGateway(t, "127.0.0.1:0")
	startConnector(t, gs, "prod", connectorOpts{name: "a"})
	gs.waitConnectors("prod", 1, 10*time.Second)
	cfg := callerConfig(gs, "prod", callerToken(t, []string{"prod"}, allRules...))
	cs := clientset(t, cfg)
	ctx := context.Background()

	// Discovery and version.
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("ServerVersion: %v", err)
	}
	if v.GitVersion != "v1.37.2" {
		t.Fatalf("server version %q, want v1.37.2 (the real apiserver)", v.GitVersion)
	}
	groups, err := cs.Discovery().ServerGroups()
	if err != nil || len(groups.Groups) < 5 {
		t.Fatalf("ServerGroups: %d groups, %v", len(groups.Groups), err)
	}

	// Create, get, list, update, watch, delete a ConfigMap in a new namespace.
	ns := "spine-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })

	w, err := cs.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	defer w.Stop()

	cm, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "evidence"},
		Data:       map[string]string{"hash": "one"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	got, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "evidence", metav1.GetOptions{})
	if err != nil || got.Data["hash"] != "one" {
		t.Fatalf("get: %v %v", got, err)
	}
	cm.Data["hash"] = "two"
	if _, err := cs.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update: %v", err)
	}
	list, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) != 1 || list.Items[0].Data["hash"] != "two" {
		t.Fatalf("list: %v %v", list, err)
	}
	if err := cs.CoreV1().ConfigMaps(ns).Delete(ctx, "evidence", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "evidence", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get after delete: %v, want NotFound from the API server", err)
	}

	// The watch saw all three changes, streamed as they happened.
	want := []watch.EventType{watch.Added, watch.Modified, watch.Deleted}
	for _, typ := range want {
		select {
		case ev := <-w.ResultChan():
			if ev.Type != typ {
				t.Fatalf("watch event %s (%+v), want %s", ev.Type, ev.Object, typ)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("watch: no %s event within 10s", typ)
		}
	}
}

// TestKubectlThroughTunnel uses the real kubectl binary with a kubeconfig pointing at the gateway.
func TestKubectlThroughTunnel(t *testing.T) {
	gs := startGateway(t, "127.0.0.1:0")
	startConnector(t, gs, "prod", connectorOpts{name: "a"})
	gs.waitConnectors("prod", 1, 10*time.Second)
	kc := writeKubeconfig(t, gs, "prod", callerToken(t, []string{"prod"}, allRules...))

	if out := kubectl(t, kc, "api-resources", "-o", "name"); !strings.Contains(out, "pods") || !strings.Contains(out, "deployments.apps") {
		t.Fatalf("kubectl api-resources: %s", out)
	}
	if out := kubectl(t, kc, "get", "namespaces", "-o", "name"); !strings.Contains(out, "namespace/kube-system") {
		t.Fatalf("kubectl get namespaces: %s", out)
	}
	ns := "kubectl-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	kubectl(t, kc, "create", "namespace", ns)
	t.Cleanup(func() { kubectlResult(kc, "delete", "namespace", ns, "--wait=false") })

	// A watch from kubectl: started first, it must print the ConfigMap created afterwards.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watchOut := &logBuffer{}
	watchCmd := kubectlCommand(ctx, kc, "get", "configmaps", "-n", ns, "--watch", "-o", "name")
	watchCmd.Stdout = watchOut
	if err := watchCmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); watchCmd.Wait() }()
	wait.Until(t, 10*time.Second, "kubectl watch reached the API server", func() bool { return watchStarted(t, ns) })

	kubectl(t, kc, "create", "configmap", "evidence", "-n", ns, "--from-literal=hash=one")
	wait.Until(t, 10*time.Second, "kubectl watch printed the new configmap", func() bool {
		return strings.Contains(watchOut.String(), "configmap/evidence")
	})
	out := kubectl(t, kc, "get", "configmap", "evidence", "-n", ns, "-o", "jsonpath={.data.hash}")
	if out != "one" {
		t.Fatalf("kubectl get: %q", out)
	}
	kubectl(t, kc, "patch", "configmap", "evidence", "-n", ns, "-p", `{"data":{"hash":"two"}}`)
	kubectl(t, kc, "label", "configmap", "evidence", "-n", ns, "case=ir-42")
	out = kubectl(t, kc, "get", "configmaps", "-n", ns, "-l", "case=ir-42", "-o", "jsonpath={.items[*].data.hash}")
	if out != "two" {
		t.Fatalf("kubectl get after patch: %q", out)
	}
	kubectl(t, kc, "delete", "configmap", "evidence", "-n", ns)
	_, stderr, err := kubectlResult(kc, "get", "configmap", "evidence", "-n", ns)
	if err == nil || !strings.Contains(stderr, `configmaps "evidence" not found`) {
		t.Fatalf("kubectl get after delete: err=%v stderr=%s", err, stderr)
	}
}

// watchStarted reports whether the API server has seen a watch on namespace ns's configmaps.
func watchStarted(t *testing.T, ns string) bool {
	events, err := kube.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if e.Verb == "watch" && strings.Contains(e.RequestURI, "/namespaces/"+ns+"/configmaps") {
			return true
		}
	}
	return false
}

// status does a raw GET through the gateway and decodes the Kubernetes Status answer.
func status(t *testing.T, gs *gatewayServer, path, token string) (int, metav1.Status) {
	t.Helper()
	// Only a transport (the request names the whole path), and the token may be empty or malformed on purpose.
	cfg := &rest.Config{BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAFile: gs.caFile}}
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", gs.url()+path, nil)
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var st metav1.Status
	if resp.StatusCode >= 300 {
		if err := json.Unmarshal(body, &st); err != nil || st.Kind != "Status" {
			t.Fatalf("GET %s: %d with a body that is not a Kubernetes Status: %q", path, resp.StatusCode, body)
		}
		if int(st.Code) != resp.StatusCode {
			t.Fatalf("Status.code %d differs from HTTP status %d", st.Code, resp.StatusCode)
		}
	}
	return resp.StatusCode, st
}

func TestRoutingErrors(t *testing.T) {
	gs := startGateway(t, "127.0.0.1:0")
	startConnector(t, gs, "prod", connectorOpts{name: "a"})
	gs.waitConnectors("prod", 1, 10*time.Second)
	all := callerToken(t, []string{"prod"}, allRules...)
	nope := callerToken(t, []string{"nope"}, allRules...)
	multi, err := keys.IssueCaller(auth.IssueOptions{Subject: "e2e-caller", Clusters: []string{"prod", "staging"}, MultiCluster: true,
		Rules: []auth.Rule{{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}}}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, path, token string
		code              int
		message           string
	}{
		{"unknown cluster", "/clusters/nope/api/v1/namespaces", nope, 404,
			`unknown cluster "nope": no connector of it has connected to this gateway`},
		{"cluster not in token", "/clusters/other/api/v1/namespaces", all, 403,
			`token of "e2e-caller" does not grant access to cluster "other"`},
		{"no token", "/clusters/prod/api/v1/namespaces", "", 401,
			`missing bearer token: send the caller token as "Authorization: Bearer <token>"`},
		{"garbage token", "/clusters/prod/api/v1/namespaces", "not-a-jwt", 401,
			`invalid caller token: `},
		{"connector token as caller", "/clusters/prod/api/v1/namespaces", connectorToken(t, "prod"), 401,
			`invalid caller token: token audience [warren-connector] does not include "warren"`},
		{"token for two clusters", "/clusters/prod/api/v1/namespaces", multi, 401,
			`invalid caller token: token names 2 clusters [prod staging]; this gateway accepts caller tokens for one cluster only: issue one token per cluster, or start the gateway with --allow-multi-cluster-tokens`},
		{"outside /clusters", "/api/v1/namespaces", all, 404,
			`no such path "/api/v1/namespaces": the Kubernetes API of cluster C is at /clusters/C/`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, st := status(t, gs, c.path, c.token)
			if code != c.code || !strings.HasPrefix(st.Message, c.message) {
				t.Fatalf("got %d %q, want %d %q", code, st.Message, c.code, c.message)
			}
		})
	}

	// client-go sees the Status as a typed error.
	_, err = clientset(t, callerConfig(gs, "nope", nope)).CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("client-go on unknown cluster: %v, want NotFound", err)
	}

	// A gateway configured to accept them takes the multi-cluster token.
	lax := startGatewayWith(t, "127.0.0.1:0", gatewayOpts{allowMultiCluster: true})
	startConnector(t, lax, "prod", connectorOpts{name: "a"})
	lax.waitConnectors("prod", 1, 10*time.Second)
	if code, st := status(t, lax, "/clusters/prod/api/v1/namespaces/default", multi); code != 200 {
		t.Fatalf("multi-cluster token at a gateway that accepts them: %d %q", code, st.Message)
	}
}

// TestConnectorKilledAndRestarted: callers get 503 within seconds of losing the only connector, and service comes
// back when a connector reconnects.
func TestConnectorKilledAndRestarted(t *testing.T) {
	gs := startGateway(t, "127.0.0.1:0")
	rc := startConnector(t, gs, "prod", connectorOpts{name: "a"})
	gs.waitConnectors("prod", 1, 10*time.Second)
	token := callerToken(t, []string{"prod"}, allRules...)
	cs := clientset(t, callerConfig(gs, "prod", token))
	if _, err := cs.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("before the kill: %v", err)
	}

	killed := time.Now()
	rc.stop()
	var code int
	var st metav1.Status
	wait.Until(t, 5*time.Second, "503 after the connector died", func() bool {
		code, st = status(t, gs, "/clusters/prod/api/v1/namespaces/default", token)
		return code == http.StatusServiceUnavailable
	})
	t.Logf("503 %v after the connector stopped", time.Since(killed).Round(time.Millisecond))
	if want := `no connector is connected for cluster "prod": check that its connector runs and reaches the gateway`; st.Message != want {
		t.Fatalf("503 message %q, want %q", st.Message, want)
	}
	_, err := cs.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{})
	if !apierrors.IsServiceUnavailable(err) {
		t.Fatalf("client-go without connector: %v, want ServiceUnavailable", err)
	}

	startConnector(t, gs, "prod", connectorOpts{name: "b"})
	gs.waitConnectors("prod", 1, 10*time.Second)
	if _, err := cs.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
}

// TestGatewayRestarted: the connector notices the gateway going away and comes back to the new one on its own.
func TestGatewayRestarted(t *testing.T) {
	gs := startGateway(t, "127.0.0.1:0")
	rc := startConnector(t, gs, "prod", connectorOpts{name: "a"})
	gs.waitConnectors("prod", 1, 10*time.Second)
	token := callerToken(t, []string{"prod"}, allRules...)

	gs.stop()
	wait.Until(t, 5*time.Second, "connector noticed the gateway left", func() bool { return !rc.c.Connected() })
	restarted := time.Now()
	gs.start(gs.addr)
	gs.waitConnectors("prod", 1, 30*time.Second)
	t.Logf("connector back %v after the gateway restarted", time.Since(restarted).Round(time.Millisecond))
	cs := clientset(t, callerConfig(gs, "prod", token))
	if _, err := cs.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("after the gateway restart: %v", err)
	}
}

// TestTwoConnectorsOneStopped: requests spread over a cluster's connectors, and keep working, without a single
// failure, when one of them is stopped (as in a rolling update: it drains). A SIGKILLed connector is in
// TestBinaryTwoConnectorsOneKilled.
func TestTwoConnectorsOneStopped(t *testing.T) {
	gs := startGateway(t, "127.0.0.1:0")
	a := startConnector(t, gs, "prod", connectorOpts{name: "a"})
	startConnector(t, gs, "prod", connectorOpts{name: "b"})
	gs.waitConnectors("prod", 2, 10*time.Second)
	cs := clientset(t, callerConfig(gs, "prod", callerToken(t, []string{"prod"}, allRules...)))
	ctx := context.Background()

	get := func() error {
		_, err := cs.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
		return err
	}
	for range 20 {
		if err := get(); err != nil {
			t.Fatal(err)
		}
	}
	// Stop a while 4 callers keep requesting; none of their requests may fail.
	var wg sync.WaitGroup
	stopLoad := make(chan struct{})
	errs := make(chan error, 4)
	var served [4]atomic.Int64
	// allServed waits until every caller has had n more requests served than in from.
	allServed := func(n int64, what string) [4]int64 {
		var from [4]int64
		for i := range served {
			from[i] = served[i].Load()
		}
		wait.Until(t, 20*time.Second, what, func() bool {
			if len(errs) > 0 {
				return true // a caller failed: reported below
			}
			for i := range served {
				if served[i].Load() < from[i]+n {
					return false
				}
			}
			return true
		})
		return from
	}
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				if err := get(); err != nil {
					errs <- err
					return
				}
				served[i].Add(1)
			}
		}()
	}
	allServed(10, "load on both connectors") // each caller's requests have gone to both, round robin
	a.stop()
	gs.waitConnectors("prod", 1, 5*time.Second)
	allServed(10, "load on the survivor")
	close(stopLoad)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("request failed while a connector died: %v", err)
	}
	t.Logf("requests served by each caller during the stop: %d %d %d %d", served[0].Load(), served[1].Load(), served[2].Load(), served[3].Load())
	for range 20 {
		if err := get(); err != nil {
			t.Fatalf("after the stop: %v", err)
		}
	}
}
