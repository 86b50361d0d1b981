package acquire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	streamhttp "k8s.io/streaming/pkg/httpstream"

	"github.com/warren-dev/warren/collector"
	"github.com/warren-dev/warren/evidence"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestValidate(t *testing.T) {
	base := func() Config {
		return Config{REST: nil, Pods: []string{"p"}, CollectorDir: "/bin"}
	}
	ok := base()
	ok.REST, ok.Store, ok.Signer = restStub(), &evidence.LocalStore{}, &evidence.Signer{}
	cases := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"valid", func(*Config) {}, ""},
		{"no targets", func(c *Config) { c.Pods = nil }, "no targets: name pods (POD or POD/CONTAINER), or give -l SELECTOR or --all"},
		{"names and -l", func(c *Config) { c.Selector = "a=b" }, "give pod names, -l SELECTOR or --all, not several"},
		{"names in all namespaces", func(c *Config) { c.AllNamespaces = true }, "pod names need one namespace (-n NS), not --all-namespaces"},
		{"empty container", func(c *Config) { c.Pods = []string{"p/"} }, `target "p/": want POD or POD/CONTAINER`},
		{"two slashes", func(c *Config) { c.Pods = []string{"p/c/d"} }, `target "p/c/d": want POD or POD/CONTAINER`},
		{"-c disagrees", func(c *Config) { c.Pods, c.Container = []string{"p/a"}, "b" }, `target "p/a" names container "a", -c says "b"`},
		{"profile", func(c *Config) { c.Profile = "deep" }, `--profile "deep": want triage or full`},
		{"mode node without an image", func(c *Config) { c.Mode = "node" }, "--mode node needs --collector-image (this build of warren has no default): warren's collector image, pinned by digest"},
		{"mode node", func(c *Config) {
			c.Mode, c.CollectorImage = "node", "ghcr.io/warren-dev/warren-collector@sha256:"+strings.Repeat("a", 64)
		}, ""},
		{"mode ephemeral, an image by tag", func(c *Config) { c.Mode, c.CollectorImage = "ephemeral", "ghcr.io/warren-dev/warren-collector:v1" },
			`--collector-image "ghcr.io/warren-dev/warren-collector:v1": want an image pinned by digest, NAME@sha256:<64 hex digits> (the statement names exactly what ran)`},
		{"unknown mode", func(c *Config) { c.Mode = "ssh" }, `--mode "ssh": want auto, exec, ephemeral or node`},
		{"unknown allowed mode", func(c *Config) { c.AllowModes = []string{"exec", "ssh"} }, `--allow-modes: unknown mode "ssh" (want exec, ephemeral, node)`},
		{"no allowed mode", func(c *Config) { c.AllowModes = []string{} }, "--allow-modes is empty: auto has no mode to use"},
		{"node paths", func(c *Config) {
			c.Mode, c.CollectorImage, c.NodeRuntimeDir = "node", "ghcr.io/warren-dev/warren-collector@sha256:"+strings.Repeat("a", 64), "/run/../etc"
		},
			`--node-runtime-dir "/run/../etc": want an absolute, clean directory`},
		{"method", func(c *Config) { c.Method = "magic" }, `--method "magic": want auto, collector or shell`},
		{"protocol", func(c *Config) { c.ExecProtocol = "h2" }, `--exec-protocol "h2": want auto, websocket or spdy`},
		{"no collector dir", func(c *Config) { c.CollectorDir = "" }, "no --collector-dir"},
		{"shell needs no collector", func(c *Config) { c.CollectorDir, c.Method = "", collector.MethodShell }, ""},
		{"negative budget", func(c *Config) { c.TimeBudget = -time.Second }, "--time-budget must not be negative"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := ok
			c.change(&cfg)
			err := cfg.withDefaults().validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatal(err)
			case c.want != "" && (err == nil || !errors.Is(err, ErrUsage) || !strings.HasPrefix(err.Error(), "invalid acquisition: "+c.want)):
				t.Fatalf("validate = %v, want %q", err, c.want)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	status := func(code int32, retry int32) error {
		st := metav1.Status{Code: code, Message: "m"}
		if retry > 0 {
			st.Details = &metav1.StatusDetails{RetryAfterSeconds: retry}
		}
		return &apierrors.StatusError{ErrStatus: st}
	}
	spdyErr := errors.New("unable to upgrade connection: too many requests for this token; retry in 1s")
	for _, c := range []struct {
		name  string
		err   error
		call  call
		wait  time.Duration
		retry bool
	}{
		{"websocket 429 with retryAfterSeconds", &streamhttp.UpgradeFailureError{Cause: status(429, 5)}, call{}, 5 * time.Second, true},
		{"websocket 503 without", &streamhttp.UpgradeFailureError{Cause: status(503, 0)}, call{}, time.Second, true},
		{"spdy 429: the recorder saw the answer", spdyErr, call{status: 429, retryAfter: 3 * time.Second}, 3 * time.Second, true},
		{"403 is an answer", &streamhttp.UpgradeFailureError{Cause: status(403, 0)}, call{}, 0, false},
		{"spdy 403", errors.New("unable to upgrade connection: forbidden"), call{status: 403}, 0, false},
		{"an exit code after the upgrade", errors.New("command terminated with exit code 3"), call{status: 101}, 0, false},
		{"no error", nil, call{status: 429}, 0, false},
	} {
		wait, retry := retryAfter(c.err, c.call, time.Second)
		if wait != c.wait || retry != c.retry {
			t.Errorf("%s: %v %v, want %v %v", c.name, wait, retry, c.wait, c.retry)
		}
	}
	// The fallback from WebSocket to SPDY is only for upgrades not understood, not for refusals.
	if statusOf(&streamhttp.UpgradeFailureError{Cause: status(429, 1)}) == nil || statusOf(&streamhttp.UpgradeFailureError{Cause: errors.New("bad handshake")}) != nil {
		t.Fatal("statusOf")
	}
}

func TestExpiryWarning(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name       string
		expiry     time.Time
		targets    int
		refreshing bool
		want       string
	}{
		{"no expiry", time.Time{}, 10, false, ""},
		{"plenty of time", now.Add(time.Hour), 4, false, ""},
		{"expires before the end", now.Add(15 * time.Minute), 8, false, "the token expires at 2026-12-01T12:15:00Z (in 15m0s), before the acquisition's estimated end (2026-12-01T12:20:00Z, 8 target(s), 4 at a time, up to 10m0s each)"},
		{"refreshing: only a target's own budget matters", now.Add(15 * time.Minute), 8, true, ""},
		{"refreshing, one budget", now.Add(5 * time.Minute), 1, true, "a fresh token is fetched for new requests (--token-command), but a stream that started with the old one ends when it expires"},
		{"expired", now.Add(-time.Minute), 1, false, "the token expired at 2026-12-01T11:59:00Z: issue a new one"},
	} {
		got := expiryWarning(c.expiry, now, c.targets, 4, 10*time.Minute, c.refreshing)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestRedactTree(t *testing.T) {
	k := &kubeEvidence{redactor: collector.NewRedactor([]*regexp.Regexp{regexp.MustCompile(`(?i)^custom$`)})}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Annotations: map[string]string{
			lastApplied: `{"spec":{"containers":[{"env":[{"name":"DB_PASSWORD","value":"hunter2"}]}]}}`}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "i", Env: []corev1.EnvVar{{Name: "GITHUB_TOKEN", Value: "ghp_x"}}}},
			Containers: []corev1.Container{{Name: "c", Env: []corev1.EnvVar{
				{Name: "PLAIN", Value: "keep"}, {Name: "CUSTOM", Value: "mine"},
				{Name: "URL", Value: "postgres://u:pw@db/x"},
				{Name: "FROM_SECRET", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "k"}}},
			}}},
		},
	}
	b, red, err := k.redactedJSON(pod)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, leaked := range []string{"hunter2", "ghp_x", "mine", "u:pw@"} {
		if strings.Contains(s, leaked) {
			t.Errorf("%q left in:\n%s", leaked, s)
		}
	}
	if !strings.Contains(s, `"keep"`) || red.count != 4 || red.originalSize <= int64(len(b))-50 {
		t.Fatalf("redacted %d (original %d bytes):\n%s", red.count, red.originalSize, s)
	}
	if _, red, _ := k.redactedJSON(&corev1.Pod{}); red.count != 0 {
		t.Fatal("redacted an empty pod")
	}
}

func TestSecretNames(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		Volumes: []corev1.Volume{
			{Name: "v1", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "tls"}}},
			{Name: "v2", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "proj"}}}}}}},
		},
		Containers: []corev1.Container{{Name: "c",
			Env:     []corev1.EnvVar{{Name: "E", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}}}}},
			EnvFrom: []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "all"}}}}}},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "pull"}},
	}}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "sa"}, Secrets: []corev1.ObjectReference{{Name: "sa-token"}}}
	got := fmt.Sprint(secretNames(pod, sa))
	want := "[{tls volume v1} {proj projected volume v2} {db env E of container c} {all envFrom of container c} {pull imagePullSecrets} {sa-token service account sa}]"
	if got != want {
		t.Fatalf("%s\nwant %s", got, want)
	}
}

func runningPod(name string, containers ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{"app": "x"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	for _, c := range containers {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c})
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: c,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}})
	}
	return p
}

func TestFindTargets(t *testing.T) {
	pending := runningPod("pending", "main")
	pending.Status.Phase = corev1.PodPending
	crashing := runningPod("crashing", "main", "side")
	crashing.Status.ContainerStatuses[1].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
	cs := fake.NewClientset(runningPod("a", "main", "side"), pending, crashing)
	cfg := DefaultConfig()
	cfg.Namespace = "ns"
	names := func(ts []*target) string {
		var out []string
		for _, t := range ts {
			s := t.name()
			if t.problem != "" {
				s += " (" + t.problem + ")"
			}
			out = append(out, s)
		}
		return strings.Join(out, "; ")
	}
	for _, c := range []struct {
		name string
		cfg  func(*Config)
		want string
	}{
		{"every container", func(c *Config) { c.Pods = []string{"a"} }, "ns/a/main; ns/a/side"},
		{"one container, named twice", func(c *Config) { c.Pods = []string{"a/side", "a/side", "a"} }, "ns/a/side; ns/a/main"},
		{"-c", func(c *Config) { c.Pods, c.Container = []string{"a"}, "side" }, "ns/a/side"},
		{"no such container", func(c *Config) { c.Pods = []string{"a/nope"} }, `ns/a/nope (pod ns/a has no container "nope" (it has main, side))`},
		{"not found", func(c *Config) { c.Pods = []string{"gone"} }, "ns/gone/ (pod ns/gone not found)"},
		{"pending", func(c *Config) { c.Pods = []string{"pending"} }, "ns/pending/main (pod ns/pending is Pending, not Running: exec needs a running container (for a stopped pod, acquire its node's disk: warren acquire volume))"},
		{"one container waiting", func(c *Config) { c.Pods = []string{"crashing"} }, "ns/crashing/main; ns/crashing/side (container side of pod ns/crashing is not running (waiting: CrashLoopBackOff): exec needs a running container)"},
		{"--all, sorted", func(c *Config) { c.All, c.Container = true, "main" }, "ns/a/main; ns/crashing/main; ns/pending/main (pod ns/pending is Pending, not Running: exec needs a running container (for a stopped pod, acquire its node's disk: warren acquire volume))"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cc := cfg
			c.cfg(&cc)
			ts, err := findTargets(context.Background(), cs, cc)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(ts); got != c.want {
				t.Fatalf("%s\nwant %s", got, c.want)
			}
		})
	}
	cc := cfg
	cc.Selector = "app=none"
	if _, err := findTargets(context.Background(), cs, cc); err == nil || err.Error() != "no pod matches -l app=none in namespace ns" {
		t.Fatalf("empty selector: %v", err)
	}
}

// reviewer answers SelfSubjectAccessReviews as warren's gateway would for a token allowed pods/exec in namespace
// "ok" and on pod "named" of namespace "names" only.
func reviewer(calls *int) k8stesting.ReactionFunc {
	return func(a k8stesting.Action) (bool, runtime.Object, error) {
		*calls++
		rev := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
		ra := rev.Spec.ResourceAttributes
		switch {
		case ra.Namespace == "ok", ra.Namespace == "names" && ra.Name == "named":
			rev.Status.Allowed = true
		case ra.Namespace == "rbac":
			rev.Status.Reason = ""
		case ra.Namespace == "ceiling":
			rev.Status.Reason = "warren connector: the cluster's policy does not allow it: cannot create resource \"pods/exec\""
		default:
			rule := "create:pods/exec:" + ra.Namespace
			if ra.Name != "" {
				rule += ":" + ra.Name
			}
			rev.Status.Reason = fmt.Sprintf(`warren gateway: token of "alice" cannot create resource "pods/exec" in API group "" in the namespace %q (it needs --rule %s)`, ra.Namespace, rule)
		}
		return true, rev, nil
	}
}

func TestPreflight(t *testing.T) {
	tg := func(ns, pod string) *target { return &target{namespace: ns, pod: pod, container: "main"} }
	for _, c := range []struct {
		name    string
		targets []*target
		calls   int
		want    string
	}{
		{"allowed in the namespace: one question", []*target{tg("ok", "a"), tg("ok", "b")}, 1, ""},
		{"named pods: asked one by one", []*target{tg("names", "named")}, 2, ""},
		{"a pod the rules do not name", []*target{tg("names", "named"), tg("names", "other")}, 3,
			`token of "alice" cannot create resource "pods/exec" in API group "" in the namespace "names" (it needs --rule create:pods/exec:names:other)`},
		{"the ceiling", []*target{tg("ceiling", "a")}, 2, `the connector refuses it: the cluster's policy does not allow it: cannot create resource "pods/exec"`},
		{"RBAC", []*target{tg("rbac", "a")}, 2, "the cluster's RBAC does not let the connector exec into pod a of namespace rbac: ask the cluster's admin to grant create on pods/exec there"},
		{"targets with a problem are not asked about", []*target{{namespace: "x", pod: "p", problem: "gone"}}, 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cs := fake.NewClientset()
			calls := 0
			cs.PrependReactor("create", "selfsubjectaccessreviews", reviewer(&calls))
			err := preflight(context.Background(), cs, c.targets, time.Second, func(string) {})
			switch {
			case c.want == "" && err != nil:
				t.Fatal(err)
			case c.want != "" && (err == nil || !errors.Is(err, ErrNotAllowed) || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("preflight = %v, want %q", err, c.want)
			}
			if calls != c.calls {
				t.Fatalf("%d questions, want %d", calls, c.calls)
			}
		})
	}
	// An old gateway that cannot answer: a warning, and the execs will tell.
	cs := fake.NewClientset()
	cs.PrependReactor("create", "selfsubjectaccessreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "authorization.k8s.io", Resource: "selfsubjectaccessreviews"}, "", errors.New("no"))
	})
	var warned string
	if err := preflight(context.Background(), cs, []*target{tg("ns", "p")}, time.Second, func(s string) { warned = s }); err != nil ||
		!strings.HasPrefix(warned, "cannot ask whether the token may exec into pods of namespace ns") {
		t.Fatalf("unanswered review: %v, warned %q", err, warned)
	}
}

func TestGate(t *testing.T) {
	var buf strings.Builder
	g := newGate(strings.NewReader("stdin"), &buf)
	if n, err := g.Write([]byte("out")); n != 3 || err != nil {
		t.Fatal(n, err)
	}
	b := make([]byte, 8)
	if n, err := g.Read(b); n != 5 || err != nil {
		t.Fatal(n, err)
	}
	g.close()
	if _, err := g.Write([]byte("late")); err != errGateClosed {
		t.Fatalf("a write after close: %v", err)
	}
	if _, err := g.Read(b); err != errGateClosed {
		t.Fatalf("a read after close: %v", err)
	}
	if buf.String() != "out" {
		t.Fatal(buf.String())
	}
	// close waits for a write in progress.
	pr, pw := io.Pipe()
	g = newGate(nil, pw)
	writing := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		close(writing)
		g.Write([]byte("x"))
	})
	<-writing
	closed := make(chan struct{})
	go func() {
		g.close()
		close(closed)
	}()
	io.ReadFull(pr, make([]byte, 1)) // let the write through
	<-closed
	wg.Wait()
	if _, err := g.Write([]byte("y")); err != errGateClosed {
		t.Fatalf("after close: %v", err)
	}
}

func TestRecorder(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Warren-Request-Id", "gw-"+r.Header.Get("Audit-Id"))
		w.WriteHeader(http.StatusTeapot)
	}))
	defer srv.Close()
	rs := &recording{ids: &auditIDs{prefix: AuditIDPrefix("abc")}, run: &requestLog{}, now: time.Now}
	c := &http.Client{Transport: rs.wrap(http.DefaultTransport)}
	defer http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	target := &requestLog{}
	var cl call
	for i, ctx := range []context.Context{context.Background(), withCall(withLog(context.Background(), target), &cl)} {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/clusters/prod/api/v1/namespaces/x/pods/p", nil)
		req.Header.Set("Authorization", "Bearer not-a-jwt")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if req.Header.Get("Audit-Id") != "" {
			t.Fatalf("request %d: the caller's request was changed", i)
		}
	}
	run, tgt := rs.run.list(), target.list()
	if len(run) != 1 || len(tgt) != 1 || run[0].AuditID != "warren-acq-abc-1" || tgt[0].AuditID != "warren-acq-abc-2" ||
		tgt[0].GatewayRequestID != "gw-warren-acq-abc-2" || tgt[0].Status != 418 || tgt[0].Path != "/api/v1/namespaces/x/pods/p" {
		t.Fatalf("run %+v, target %+v", run, tgt)
	}
	if cl.auditID != "warren-acq-abc-2" || cl.status != 418 {
		t.Fatalf("call %+v", cl)
	}
	if _, _, ok := rs.caller(); ok {
		t.Fatal("a token that is not a JWT named a caller")
	}
}

func TestShared(t *testing.T) {
	s := &shared{}
	loads := 0
	load := func(ctx context.Context) (any, error) {
		loads++
		if log, ok := ctx.Value(logKey{}).(*requestLog); ok {
			log.add(evidence.Request{AuditID: "r1"})
		}
		return "v", nil
	}
	a, b := &requestLog{}, &requestLog{}
	for _, log := range []*requestLog{a, b} {
		if v, err := s.get(withLog(context.Background(), log), "k", load); v != "v" || err != nil {
			t.Fatal(v, err)
		}
	}
	if loads != 1 || len(a.list()) != 1 || len(b.list()) != 1 || b.list()[0].AuditID != "r1" {
		t.Fatalf("loads %d, logs %v %v", loads, a.list(), b.list())
	}
}

func restStub() *rest.Config { return &rest.Config{Host: "https://gw/clusters/prod"} }

// A list the cluster cuts (continue token set) is stored as far as it goes and noted as capped.
func TestKubeListsAreBounded(t *testing.T) {
	cs := fake.NewClientset()
	var asked int64
	cs.PrependReactor("list", "events", func(a k8stesting.Action) (bool, runtime.Object, error) {
		asked = a.(k8stesting.ListActionImpl).ListOptions.Limit
		return true, &corev1.EventList{ListMeta: metav1.ListMeta{Continue: "more"}, Items: []corev1.Event{{Reason: "Started"}}}, nil
	})
	k := &kubeEvidence{cs: cs, timeout: time.Second, now: time.Now, shared: &shared{}}
	a := evidence.NewArchive(io.Discard)
	if err := k.events(context.Background(), archiveSinkFor(a), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", UID: "u"}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if asked != maxListItems || len(k.skipped) != 1 || k.skipped[0].Reason != collector.ReasonSizeCap || len(a.Files()) != 1 {
		t.Fatalf("limit %d, skipped %+v, files %v", asked, k.skipped, a.Files())
	}
}

func archiveSinkFor(a *evidence.Archive) *archiveSink {
	return &archiveSink{a: a, progress: &Progress{}}
}
