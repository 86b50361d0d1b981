// Package kubetest starts a real Kubernetes control plane (etcd and kube-apiserver, no kubelet, no controllers) on
// loopback, so tests talk to the real authentication, RBAC, admission and audit code rather than to a fake.
//
// The binaries come from scripts/kube-bin.sh (see [EnvKubeBin]); when they are missing, Start fails with a message
// saying how to build them. Tests never skip for lack of a cluster.
//
// A cluster has two token-authenticated users: [UserAdmin] in group system:masters, and [UserConnector], bound to
// cluster-admin by a ClusterRoleBinding, so that in security tests warren is the only barrier between a caller and
// the cluster. Every request is audited at level Metadata to [Cluster.AuditLog].
//
// Like a kubeadm cluster, the apiserver trusts a front proxy (request-header authentication): a client presenting
// [Cluster.FrontProxyCertFile] is taken to be whoever its X-Remote-User, X-Remote-Group, X-Remote-Uid and
// X-Remote-Extra-* headers say, and without those headers it is authenticated by its other credentials.
package kubetest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/warren-dev/warren/internal/testenv/testproc"
)

// The users of every cluster, for RestConfig.
const (
	UserAdmin     = "admin"            // in system:masters: bypasses RBAC
	UserConnector = "warren-connector" // bound to cluster-admin by ClusterRoleBinding ConnectorBinding
)

// ConnectorBinding is the name of the ClusterRoleBinding that Start creates for UserConnector.
const ConnectorBinding = "warren-connector-cluster-admin"

const (
	// readyTimeout bounds the wait for etcd to be healthy and, separately, for the apiserver's /readyz.
	readyTimeout = 60 * time.Second
	// portAttempts is how often Start picks new ports when another process took one between our pick and the bind.
	portAttempts = 3
	// pollInterval is how often readiness is checked.
	pollInterval = 100 * time.Millisecond
	// serviceCIDR is the --service-cluster-ip-range. It is only an allocation range: no traffic goes there.
	serviceCIDR = "10.96.0.0/24"
)

// Options configures Start.
type Options struct {
	// Dir is the work directory: certificates, kubeconfigs, etcd data and the audit log go there. Required.
	// Stop leaves it in place.
	Dir string
	// Logger receives the output of etcd and kube-apiserver, each line prefixed with the program name.
	// Nil discards it; the last lines are kept either way for error messages.
	Logger io.Writer
	// ExtraArgs are more kube-apiserver flags, e.g. --authentication-token-webhook-config-file=F.
	ExtraArgs []string
}

// Cluster is a running control plane. Its fields are set by Start and must not be changed.
// All methods may be called concurrently.
type Cluster struct {
	URL                 string        // https://127.0.0.1:PORT
	CAFile              string        // PEM CA that signed the apiserver's serving certificate
	AdminKubeconfig     string        // kubeconfig path for UserAdmin
	ConnectorKubeconfig string        // kubeconfig path for UserConnector
	AuditLog            string        // kube-apiserver audit log: JSON lines, level Metadata for every request
	KubectlPath         string        // kubectl KubeVersion, from the same directory as kube-apiserver
	StartDuration       time.Duration // how long Start took, binaries found to bootstrap objects created

	// FrontProxyCertFile and FrontProxyKeyFile are a client certificate (CN FrontProxyClientName) signed by the
	// CA of --requestheader-client-ca-file.
	FrontProxyCertFile, FrontProxyKeyFile string

	tokens    map[string]string          // user name -> bearer token
	pickPorts func(n int) ([]int, error) // testproc.FreePorts; tests force a port race through it

	etcd, apiserver *testproc.Process // nil until started
	done            chan struct{}
	doneOnce        sync.Once
	stopOnce        sync.Once
	stopErr         error
}

// RestConfig returns a new client-go config for user, UserAdmin or UserConnector. It panics on any other name.
func (c *Cluster) RestConfig(user string) *rest.Config {
	token, ok := c.tokens[user]
	if !ok {
		panic(fmt.Sprintf("kubetest: unknown user %q (want %q or %q)", user, UserAdmin, UserConnector))
	}
	return &rest.Config{
		Host:            c.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: c.CAFile},
		UserAgent:       "warren-kubetest",
		QPS:             -1, // a test cluster has no reason to be rate limited on the client
	}
}

// Done is closed when etcd or kube-apiserver has exited, whether Stop was called or a process died.
func (c *Cluster) Done() <-chan struct{} { return c.done }

// Stop stops kube-apiserver, then etcd: SIGTERM, then SIGKILL after 5 s, and waits for both. It returns an error if
// either had exited on its own before Stop, with the last lines of its output. Safe to call more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		var errs []error
		for _, p := range []*testproc.Process{c.apiserver, c.etcd} {
			if p != nil {
				errs = append(errs, p.Stop())
			}
		}
		c.closeDone()
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

func (c *Cluster) closeDone() { c.doneOnce.Do(func() { close(c.done) }) }

// outputTail returns the last lines of both processes' output, for a failing test's log.
func (c *Cluster) outputTail() string {
	var parts []string
	for _, p := range []*testproc.Process{c.etcd, c.apiserver} {
		if p != nil {
			parts = append(parts, p.Tail())
		}
	}
	return strings.Join(parts, "\n")
}

// ForTest starts a cluster in t.TempDir() and stops it in t.Cleanup. It fails the test at once if the cluster does
// not start, and logs the processes' last output lines if the test fails.
func ForTest(t testing.TB) *Cluster {
	t.Helper()
	c, err := Start(t.Context(), Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("failed to start a Kubernetes control plane: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kubetest: last output of the control plane:\n%s", c.outputTail())
		}
		if err := c.Stop(); err != nil {
			t.Errorf("kubetest: %v", err)
		}
	})
	t.Logf("kubetest: control plane ready at %s in %s", c.URL, c.StartDuration.Round(time.Millisecond))
	return c
}

// Start starts etcd and kube-apiserver on free loopback ports, waits until the apiserver is ready (at most 60 s),
// then creates ConnectorBinding and the ServiceAccount default/default (there is no controller-manager to do it).
// ctx bounds only the start: once Start has returned, the cluster runs until Stop. On error nothing is left running.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if o.Dir == "" {
		return nil, errors.New("kubetest: Options.Dir is required")
	}
	bins, err := findBinaries()
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	begin := time.Now()
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("kubetest: failed to resolve %s: %w", o.Dir, err)
	}
	for _, d := range []string{"pki", "apiserver"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("kubetest: failed to create the work directory: %w", err)
		}
	}
	certs, err := writePKI(filepath.Join(dir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}

	c := &Cluster{
		CAFile:              certs.caFile,
		AdminKubeconfig:     filepath.Join(dir, "admin.kubeconfig"),
		ConnectorKubeconfig: filepath.Join(dir, "connector.kubeconfig"),
		AuditLog:            filepath.Join(dir, "audit.log"),
		KubectlPath:         bins.kubectl,
		FrontProxyCertFile:  certs.frontProxyCertFile,
		FrontProxyKeyFile:   certs.frontProxyKeyFile,
		tokens:              map[string]string{UserAdmin: randomToken(), UserConnector: randomToken()},
		pickPorts:           testproc.FreePorts,
		done:                make(chan struct{}),
	}
	tokenFile := filepath.Join(dir, "tokens.csv")
	// Format: token,user,uid,"group1,group2".
	tokens := fmt.Sprintf("%s,%s,%s,\"system:masters\"\n%s,%s,%s\n",
		c.tokens[UserAdmin], UserAdmin, UserAdmin, c.tokens[UserConnector], UserConnector, UserConnector)
	policyFile := filepath.Join(dir, "audit-policy.yaml")
	for _, f := range []struct{ path, data string }{{tokenFile, tokens}, {policyFile, auditPolicy}} {
		if err := os.WriteFile(f.path, []byte(f.data), 0o600); err != nil {
			return nil, fmt.Errorf("kubetest: failed to write %s: %w", f.path, err)
		}
	}

	log := testproc.NewLog(o.Logger)
	fail := func(err error) (*Cluster, error) {
		_ = c.Stop() // the cause is err; an early exit is already part of it
		return nil, fmt.Errorf("kubetest: %w", err)
	}

	etcdURL, err := c.startEtcd(ctx, bins.etcd, dir, log)
	if err != nil {
		return fail(err)
	}
	apiArgs := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--cert-dir=" + filepath.Join(dir, "apiserver"),
		"--tls-cert-file=" + certs.certFile,
		"--tls-private-key-file=" + certs.keyFile,
		"--token-auth-file=" + tokenFile,
		"--requestheader-client-ca-file=" + certs.frontProxyCAFile,
		"--requestheader-allowed-names=" + FrontProxyClientName,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--requestheader-uid-headers=X-Remote-Uid",
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + certs.saKeyFile,
		"--service-account-signing-key-file=" + certs.saKeyFile,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--audit-log-path=" + c.AuditLog,
		"--audit-policy-file=" + policyFile,
		// Without a kubelet the apiserver would dial a node's hostname, which does not resolve here.
		"--kubelet-preferred-address-types=InternalIP",
		// Fewer start-up hooks and background loops: faster to ready on 2 cores.
		"--enable-priority-and-fairness=false",
		// The reconciler would write 127.0.0.1 into Endpoints default/kubernetes, which validation rejects as
		// loopback, and log the failure every 10 s. Nothing in a test cluster reads that object.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	}
	apiArgs = append(apiArgs, o.ExtraArgs...)
	if err := c.startAPIServer(ctx, bins.apiserver, apiArgs, dir, certs.caFile, log); err != nil {
		return fail(err)
	}

	for _, k := range []struct{ path, user string }{
		{c.AdminKubeconfig, UserAdmin}, {c.ConnectorKubeconfig, UserConnector},
	} {
		if err := c.writeKubeconfig(k.path, k.user); err != nil {
			return fail(err)
		}
	}
	if err := c.bootstrap(ctx); err != nil {
		return fail(err)
	}
	c.StartDuration = time.Since(begin)
	c.etcd.AfterExit(c.closeDone)
	c.apiserver.AfterExit(c.closeDone)
	log.WriteLine("kubetest: ", []byte(fmt.Sprintf("control plane ready at %s in %s", c.URL,
		c.StartDuration.Round(time.Millisecond))))
	return c, nil
}

// startEtcd starts etcd on two free loopback ports with its own data directory and waits until it is healthy.
// It returns the client URL.
func (c *Cluster) startEtcd(ctx context.Context, path, dir string, log *testproc.Log) (string, error) {
	dataDir := filepath.Join(dir, "etcd")
	for attempt := 1; ; attempt++ {
		ports, err := c.pickPorts(2)
		if err != nil {
			return "", err
		}
		clientURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
		peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
		// A data dir left by a failed attempt remembers the old peer URL: start afresh.
		if err := os.RemoveAll(dataDir); err != nil {
			return "", fmt.Errorf("failed to clear the etcd data directory: %w", err)
		}
		args := []string{
			"--name=kubetest",
			"--data-dir=" + dataDir,
			"--listen-client-urls=" + clientURL,
			"--advertise-client-urls=" + clientURL,
			"--listen-peer-urls=" + peerURL,
			"--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=kubetest=" + peerURL,
			"--initial-cluster-state=new",
			"--logger=zap", // etcd 3.4's default logger (capnslog) prints a deprecation warning
			"--log-outputs=stderr",
			"--quota-backend-bytes=" + strconv.Itoa(1<<30),
			// A single member elects itself after an election timeout (default 1 s); shorter ticks make start
			// faster, and with no peers there is no spurious election to fear.
			"--heartbeat-interval=50",
			"--election-timeout=250",
			// The apiserver's watch cache of a resource nobody writes only advances on etcd's progress
			// notifications (10 min by default in 3.4); without them a watch on a fresh cluster can fail with
			// "Too large resource version".
			"--experimental-watch-progress-notify-interval=1s",
		}
		p, err := testproc.Start("etcd", path, args, dir, log)
		if err != nil {
			return "", err
		}
		c.etcd = p
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
		err = testproc.WaitReady(ctx, p, "etcd "+clientURL+"/health", readyTimeout, pollInterval, func(ctx context.Context) error {
			return httpCheck(ctx, client, clientURL+"/health", "", `"health":"true"`)
		})
		if err == nil {
			return clientURL, nil
		}
		if attempt < portAttempts && p.PortTaken() {
			c.etcd = nil
			continue
		}
		return "", err
	}
}

// startAPIServer starts kube-apiserver on a free loopback port and waits until /readyz answers ok.
func (c *Cluster) startAPIServer(ctx context.Context, path string, args []string, dir, caFile string,
	log *testproc.Log) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("failed to read the CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true},
		Timeout:   5 * time.Second,
	}
	for attempt := 1; ; attempt++ {
		ports, err := c.pickPorts(1)
		if err != nil {
			return err
		}
		url := "https://127.0.0.1:" + strconv.Itoa(ports[0])
		argv := append(slices.Clip(args), "--secure-port="+strconv.Itoa(ports[0]))
		p, err := testproc.Start("kube-apiserver", path, argv, dir, log)
		if err != nil {
			return err
		}
		c.apiserver = p
		err = testproc.WaitReady(ctx, p, "kube-apiserver "+url+"/readyz", readyTimeout, pollInterval, func(ctx context.Context) error {
			return httpCheck(ctx, client, url+"/readyz", c.tokens[UserAdmin], "ok")
		})
		if err == nil {
			c.URL = url
			return nil
		}
		if attempt < portAttempts && p.PortTaken() {
			c.apiserver = nil
			continue
		}
		return err
	}
}

// bootstrap creates what a controller-manager or an installer would: ConnectorBinding, and the default
// ServiceAccount of namespace default (pods cannot be admitted without it). The default namespace itself is
// created by the apiserver shortly after it starts, so a NotFound is retried.
func (c *Cluster) bootstrap(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(c.RestConfig(UserAdmin))
	if err != nil {
		return fmt.Errorf("failed to create a client: %w", err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: ConnectorBinding},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: UserConnector}},
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: metav1.NamespaceDefault}}
	return testproc.WaitReady(ctx, c.apiserver, "bootstrap objects", readyTimeout, pollInterval, func(ctx context.Context) error {
		_, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("failed to create ClusterRoleBinding %s: %w", ConnectorBinding, err)
		}
		_, err = cs.CoreV1().ServiceAccounts(sa.Namespace).Create(ctx, sa, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("failed to create ServiceAccount default/default: %w", err)
		}
		return nil
	})
}

// writeKubeconfig writes a kubeconfig for user with the CA by path and the token inline.
func (c *Cluster) writeKubeconfig(path, user string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: c.URL, CertificateAuthority: c.CAFile}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: c.tokens[user]}
	cfg.Contexts[user] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: user, Namespace: "default"}
	cfg.CurrentContext = user
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("failed to write the kubeconfig for %s: %w", user, err)
	}
	return nil
}

// httpCheck GETs url and wants status 200 with a body containing want.
func httpCheck(ctx context.Context, client *http.Client, url, token, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
