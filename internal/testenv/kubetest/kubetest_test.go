package kubetest

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/warren-dev/warren/internal/testenv/testproc"
)

// TestMain fails the run if any goroutine outlives the tests. No client-go or klog goroutine needs ignoring: by then
// every cluster is stopped, so the server has closed client-go's connections and their read loops have returned;
// client-go's transport cache and rate limiter start no goroutines; klog starts its flush daemon only when it writes
// log files, which it does not here.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestCluster(t *testing.T) {
	c := ForTest(t)
	ctx := t.Context()

	admin := clientset(t, c, UserAdmin)
	connector := clientset(t, c, UserConnector)

	// Both users can write and read: admin as system:masters, the connector through ConnectorBinding.
	for _, tc := range []struct {
		user string
		cs   *kubernetes.Clientset
	}{{UserAdmin, admin}, {UserConnector, connector}} {
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "from-" + tc.user, Namespace: "default"},
			Data:       map[string]string{"user": tc.user},
		}
		if _, err := tc.cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatalf("%s: create ConfigMap: %v", tc.user, err)
		}
		list, err := tc.cs.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("%s: list ConfigMaps: %v", tc.user, err)
		}
		if !slices.ContainsFunc(list.Items, func(x corev1.ConfigMap) bool { return x.Name == cm.Name }) {
			t.Errorf("%s: ConfigMap %s missing from the list", tc.user, cm.Name)
		}
	}

	// Start made the default ServiceAccount, which pods need without a controller-manager.
	if _, err := admin.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Errorf("ServiceAccount default/default: %v", err)
	}

	// Authentication is real: a wrong token is refused.
	bad := c.RestConfig(UserAdmin)
	bad.BearerToken = "not-a-token"
	badCS, err := kubernetes.NewForConfig(bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := badCS.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Errorf("list with a wrong token: got %v, want 401 Unauthorized", err)
	}

	// The real kubectl, with the admin kubeconfig; its discovery cache goes to a temporary directory, not ~/.kube.
	out, err := exec.CommandContext(ctx, c.KubectlPath, "--kubeconfig", c.AdminKubeconfig,
		"--cache-dir", t.TempDir(), "get", "ns").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl get ns: %v\n%s", err, out)
	}
	for _, ns := range []string{"default", "kube-system"} {
		if !strings.Contains(string(out), ns) {
			t.Errorf("kubectl get ns: %q missing from:\n%s", ns, out)
		}
	}

	// The audit log records each request once it has been answered, so wait for them.
	want := []AuditEvent{
		{RequestURI: "/api/v1/namespaces/default/configmaps", Verb: "create", User: UserConnector,
			Stage: "ResponseComplete", Code: 201},
		{RequestURI: "/api/v1/namespaces/default/configmaps", Verb: "list", User: UserAdmin,
			Stage: "ResponseComplete", Code: 200},
		{RequestURI: "/api/v1/namespaces?limit=500", Verb: "list", User: UserAdmin, // kubectl get ns
			Stage: "ResponseComplete", Code: 200},
	}
	var events []AuditEvent
	waitFor(t, 10*time.Second, "audit events", func() bool {
		events, err = c.AuditEvents()
		if err != nil {
			t.Fatalf("AuditEvents: %v", err)
		}
		return !slices.ContainsFunc(want, func(w AuditEvent) bool {
			return !slices.ContainsFunc(events, func(e AuditEvent) bool {
				if e.AuditID == "" {
					return false // every event has one (the apiserver's own when the client sent none)
				}
				e.AuditID = ""
				return reflect.DeepEqual(e, w)
			})
		})
	}, func() string { return formatEvents(events) })

	// Stop ends both processes; a second Stop is a no-op.
	etcdPID, apiPID := c.etcd.PID(), c.apiserver.PID()
	start := time.Now()
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("Stop took %s", time.Since(start).Round(time.Millisecond))
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	select {
	case <-c.Done():
	default:
		t.Error("Done not closed after Stop")
	}
	for _, pid := range []int{etcdPID, apiPID} {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d still exists after Stop (kill 0: %v)", pid, err)
		}
	}
}

func TestMissingBinaries(t *testing.T) {
	t.Setenv(EnvKubeBin, t.TempDir())
	_, err := Start(context.Background(), Options{Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "run scripts/kube-bin.sh") {
		t.Fatalf("Start without binaries: got %v, want an error saying to run scripts/kube-bin.sh", err)
	}
}

func TestEarlyExitReported(t *testing.T) {
	// A fake "etcd" that prints and fails shows how a crashing process is reported: with its last lines.
	dir := t.TempDir()
	script := "#!/bin/sh\necho starting\necho 'listen tcp 127.0.0.1:1: bind: permission denied' >&2\nexit 3\n"
	for _, name := range []string{"etcd", "kube-apiserver", "kubectl"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(EnvKubeBin, dir)
	_, err := Start(t.Context(), Options{Dir: t.TempDir()})
	if err == nil {
		t.Fatal("Start with a failing etcd succeeded")
	}
	for _, want := range []string{"etcd exited unexpectedly", "exit status 3", "etcd: starting", "permission denied"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestEtcdPortRace(t *testing.T) {
	// Another process takes the client port between our pick and etcd's bind: etcd fails with "address already in
	// use" and startEtcd tries again with new ports.
	bins, err := findBinaries()
	if err != nil {
		t.Fatal(err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	calls := 0
	c := &Cluster{done: make(chan struct{}), pickPorts: func(n int) ([]int, error) {
		calls++
		ports, err := testproc.FreePorts(n)
		if calls == 1 {
			ports[0] = taken.Addr().(*net.TCPAddr).Port
		}
		return ports, err
	}}
	var out strings.Builder
	url, err := c.startEtcd(t.Context(), bins.etcd, t.TempDir(), testproc.NewLog(&out))
	if err != nil {
		t.Fatalf("startEtcd: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if calls != 2 || url == "http://"+taken.Addr().String() {
		t.Errorf("etcd at %s after %d port picks, want a new port on the second pick", url, calls)
	}
	if !strings.Contains(out.String(), "address already in use") {
		t.Errorf("first etcd did not report the port race; output:\n%s", out.String())
	}
}

func TestParseAuditLog(t *testing.T) {
	for _, tc := range []struct {
		name string
		log  string
		want []AuditEvent
		err  bool
	}{
		{name: "empty"},
		{
			name: "stages",
			log: `{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","stage":"RequestReceived","requestURI":"/api","verb":"get","user":{"username":"admin","groups":["system:masters"]}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","stage":"ResponseComplete","requestURI":"/api","verb":"get","user":{"username":"admin"},"responseStatus":{"metadata":{},"code":200}}
`,
			want: []AuditEvent{
				{RequestURI: "/api", Verb: "get", User: "admin", Stage: "RequestReceived"},
				{RequestURI: "/api", Verb: "get", User: "admin", Stage: "ResponseComplete", Code: 200},
			},
		},
		{
			name: "partial last line is ignored",
			log:  "{\"stage\":\"ResponseComplete\",\"verb\":\"list\"}\n{\"stage\":\"Resp",
			want: []AuditEvent{{Verb: "list", Stage: "ResponseComplete"}},
		},
		{name: "garbage", log: "not json\n", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseAuditLog(strings.NewReader(tc.log))
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error: %v", err, tc.err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func clientset(t *testing.T, c *Cluster, user string) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.RestConfig(user))
	if err != nil {
		t.Fatalf("client for %s: %v", user, err)
	}
	return cs
}

// waitFor polls cond until it holds or timeout passes; describe says what was seen, for the failure message.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("no %s after %s; saw:\n%s", what, timeout, describe())
		case <-tick.C:
		}
	}
}

func formatEvents(events []AuditEvent) string {
	var sb strings.Builder
	for _, e := range events {
		if e.Stage == "ResponseComplete" && !strings.HasPrefix(e.User, "system:") {
			sb.WriteString(strings.Join([]string{e.User, e.Verb, e.RequestURI, e.Stage}, " "))
			sb.WriteByte('\n')
		}
	}
	return sb.String()
}
