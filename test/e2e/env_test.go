// Package e2e runs warren end to end against a real kube-apiserver and etcd (internal/testenv/kubetest), with client-go and
// the real kubectl binary as callers. Gateway and connector run in-process here, and as `warren` processes in
// process_test.go.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/client"
	"github.com/warren-dev/warren/connector"
	"github.com/warren-dev/warren/gateway"
	"github.com/warren-dev/warren/gateway/limit"
	"github.com/warren-dev/warren/internal/testenv/kubetest"
	"github.com/warren-dev/warren/tunnel"
)

// kube is the control plane shared by every test of the package: it takes seconds to start.
var kube *kubetest.Cluster

// keys signs caller and connector tokens; keysDir holds signing.key and signing.pub. gatewayKey is the gateway's
// own key, which signs assertions; gatewayKeyDir holds it and the public half connectors pin.
var (
	keys          *auth.SigningKey
	keysDir       string
	gatewayKey    *auth.SigningKey
	gatewayKeyDir string
	// kubeCacheDir keeps kubectl's discovery cache out of the home directory.
	kubeCacheDir string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "warren-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kube, err = kubetest.Start(ctx, kubetest.Options{Dir: filepath.Join(dir, "kube")})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cannot start kube-apiserver:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: etcd + kube-apiserver ready in %v\n", kube.StartDuration.Round(time.Millisecond))
	kubeCacheDir = filepath.Join(dir, "kubecache")
	keysDir = filepath.Join(dir, "keys")
	if _, err := auth.GenerateKeyPair(keysDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if keys, err = auth.LoadSigningKey(filepath.Join(keysDir, auth.SigningKeyFile)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	gatewayKeyDir = filepath.Join(dir, "gateway-key")
	if _, err := auth.GenerateKeyPair(gatewayKeyDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if gatewayKey, err = auth.LoadSigningKey(filepath.Join(gatewayKeyDir, auth.SigningKeyFile)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Goroutines alive now (the cluster's process waiters) are not the tests' to end.
	baseline := goleak.IgnoreCurrent()
	code := m.Run()
	code = stopFakeKubelet(code) // stream_env_test.go: the kubelet stand-in, if a test started it
	cleanupAcquire()             // acquire_env_test.go: the collector binaries and the examiner's key
	code = stopS3(code)          // acquire_s3_test.go: the S3 store, if a test started it
	if err := kube.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: kube-apiserver:", err)
		code = 1
	}
	if code == 0 {
		// Every gateway, connector, tunnel and client of the tests has been closed by now.
		if err := goleak.Find(baseline); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: leaked goroutines:", err)
			code = 1
		}
	}
	return code
}

// logBuffer collects a component's logs for assertions, and shows them when the test fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLogger(t testing.TB, name string) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, lb.String())
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})).With("component", name), lb
}

// gatewayServer is an in-process gateway serving real TLS on loopback.
type gatewayServer struct {
	t      testing.TB
	addr   string
	caFile string
	cert   tls.Certificate
	log    *logBuffer

	opts gatewayOpts

	g   *gateway.Gateway
	srv *http.Server
}

// startGateway starts a gateway on addr ("127.0.0.1:0" for a fresh port).
func startGateway(t testing.TB, addr string) *gatewayServer {
	t.Helper()
	return startGatewayWith(t, addr, gatewayOpts{})
}

type gatewayOpts struct {
	extraCallerKeys   *auth.StaticKeys // trusted for caller tokens besides the test key
	audit             audit.Sink
	limits            *limit.Limiter
	maxHeaderBytes    int
	cert              *tls.Certificate // default: httptest's certificate for 127.0.0.1
	downloads         http.Handler     // serves GET /download/ (ssm_test.go)
	maxStreamDuration time.Duration    // gateway.Config.MaxStreamDuration (stream_limits_test.go); 0: the default
	signingKey        *auth.SigningKey // signs the assertions; default gatewayKey
	allowMultiCluster bool             // accept caller tokens for several clusters
	// tunnel tunes the gateway's tunnels, and the connector's of a streamEnv (stream_scale_kubectl_test.go gives
	// the keepalive more time under load).
	tunnel tunnel.Config
	// The token re-checks of open streams (stream_revoke_test.go): a revocation list file (also the connector's,
	// with connectorOpts.revoked), expiry ending streams, the re-check interval (0: the default, 5 s), and the
	// verifier's clock leeway (0: the default 30 s; negative: none).
	revoked           string
	disconnectExpired bool
	streamCheck       time.Duration
	leeway            time.Duration
}

// startGatewayWith starts a gateway with options.
func startGatewayWith(t testing.TB, addr string, o gatewayOpts) *gatewayServer {
	t.Helper()
	cert, caFile := serverCert(t)
	if o.cert != nil {
		cert = *o.cert
	}
	gs := &gatewayServer{t: t, cert: cert, caFile: caFile, opts: o}
	gs.start(addr)
	t.Cleanup(gs.stop)
	return gs
}

func (gs *gatewayServer) start(addr string) {
	t := gs.t
	t.Helper()
	pub := filepath.Join(keysDir, auth.PublicKeyFile)
	ks, err := auth.LoadPublicKeys(pub)
	if err != nil {
		t.Fatal(err)
	}
	callerKeys := auth.KeySets{ks}
	if gs.opts.extraCallerKeys != nil {
		callerKeys = append(callerKeys, gs.opts.extraCallerKeys)
	}
	callers := callerVerifier(t, callerKeys, gs.opts.revoked, gs.opts.leeway, gs.opts.allowMultiCluster)
	connectors, err := auth.NewVerifier(auth.VerifierConfig{Keys: ks, Audience: auth.AudienceConnector})
	if err != nil {
		t.Fatal(err)
	}
	log, lb := newLogger(t, "gateway")
	gs.log = lb
	signing := gs.opts.signingKey
	if signing == nil {
		signing = gatewayKey
	}
	gs.g, err = gateway.New(gateway.Config{CallerVerifier: callers, ConnectorVerifier: connectors, SigningKey: signing, Logger: log,
		Audit: gs.opts.audit, Limits: gs.opts.limits, MaxHeaderBytes: gs.opts.maxHeaderBytes,
		Downloads: gs.opts.downloads, MaxStreamDuration: gs.opts.maxStreamDuration,
		DisconnectExpiredTokens: gs.opts.disconnectExpired, StreamCheckInterval: gs.opts.streamCheck, Tunnel: gs.opts.tunnel})
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the previous gateway's port is being released
	}
	if err != nil {
		t.Fatal(err)
	}
	gs.addr = ln.Addr().String()
	// As `warren gateway` serves it: the front door's listener and server.
	gs.srv = gs.g.Server(&tls.Config{Certificates: []tls.Certificate{gs.cert}})
	go gs.srv.ServeTLS(gs.g.Listener(ln), "", "")
}

func (gs *gatewayServer) stop() {
	if gs.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	gs.srv.Shutdown(ctx)
	gs.g.Close()
	gs.srv = nil
}

func (gs *gatewayServer) url() string { return "https://" + gs.addr }

// waitConnectors waits until the gateway has n live sessions for cluster.
func (gs *gatewayServer) waitConnectors(cluster string, n int, within time.Duration) {
	gs.t.Helper()
	deadline := time.Now().Add(within)
	for gs.g.Connectors(cluster) != n {
		if time.Now().After(deadline) {
			gs.t.Fatalf("cluster %s has %d connectors after %v, want %d", cluster, gs.g.Connectors(cluster), within, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serverCert makes a CA and a serving certificate for 127.0.0.1 and writes the CA to a file for kubectl.
func serverCert(t testing.TB) (tls.Certificate, string) {
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS() // borrow httptest's certificate for 127.0.0.1 / example.com
	cert := srv.TLS.Certificates[0]
	leaf := srv.Certificate()
	srv.Close()
	caFile := filepath.Join(t.TempDir(), "gateway-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return cert, caFile
}

// runningConnector is an in-process connector; stop ends it as a crash would end the tunnel.
type runningConnector struct {
	c      *connector.Connector
	log    *logBuffer
	cancel context.CancelFunc
	done   chan struct{}
}

func (rc *runningConnector) stop() {
	rc.cancel()
	<-rc.done
}

type connectorOpts struct {
	token  string // default: a valid connector token for the cluster
	caFile string // default: the gateway's
	name   string

	gatewayKeys auth.KeySet // the gateway keys the connector pins; default: gatewayKey's public half
	now         func() time.Time
	tlsConfig   *tls.Config // default: trust caFile
	proxy       func(*http.Request) (*url.URL, error)
	ceiling     *auth.Policy // the customer's ceiling
	impersonate bool
	audit       audit.Sink
	kube        *rest.Config // default: kube.RestConfig(kubetest.UserConnector)
	// The connector's own re-checks of open streams, as gatewayOpts' (stream_revoke_test.go): its revocation list
	// file, expiry ending streams, the re-check interval, and its leeway on assertions' times.
	revoked           string
	disconnectExpired bool
	streamCheck       time.Duration
	leeway            time.Duration
	tunnel            tunnel.Config
}

func startConnector(t testing.TB, gs *gatewayServer, cluster string, o connectorOpts) *runningConnector {
	t.Helper()
	if o.token == "" {
		o.token = connectorToken(t, cluster)
	}
	if o.caFile == "" {
		o.caFile = gs.caFile
	}
	pemBytes, err := os.ReadFile(o.caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)
	tlsCfg := &tls.Config{RootCAs: roots}
	if o.tlsConfig != nil {
		tlsCfg = o.tlsConfig
	}
	pinned := o.gatewayKeys
	if pinned == nil {
		ks, err := auth.LoadPublicKeys(filepath.Join(gatewayKeyDir, auth.PublicKeyFile))
		if err != nil {
			t.Fatal(err)
		}
		pinned = ks
	}
	var revoked func(string) bool
	var refreshRevoked func() error
	if o.revoked != "" {
		rl, err := auth.NewRevocationList(o.revoked, auth.DefaultCheckInterval)
		if err != nil {
			t.Fatal(err)
		}
		revoked, refreshRevoked = rl.Revoked, rl.Refresh
	}
	log, lb := newLogger(t, "connector "+o.name)
	if o.kube == nil {
		o.kube = kube.RestConfig(kubetest.UserConnector)
	}
	c, err := connector.New(connector.Config{
		GatewayURL:              gs.url(),
		Token:                   func() (string, error) { return o.token, nil },
		TLSConfig:               tlsCfg,
		Proxy:                   o.proxy,
		Kube:                    o.kube,
		Cluster:                 cluster, // so that bad tokens reach the gateway, which is what the tests check
		GatewayKeys:             pinned,
		Now:                     o.now,
		Ceiling:                 o.ceiling,
		Impersonate:             o.impersonate,
		Audit:                   o.audit,
		Revoked:                 revoked,
		RefreshRevoked:          refreshRevoked,
		DisconnectExpiredTokens: o.disconnectExpired,
		StreamCheckInterval:     o.streamCheck,
		Tunnel:                  o.tunnel,
		Leeway:                  o.leeway,
		Name:                    o.name,
		Version:                 "e2e",
		Backoff:                 connector.Backoff{Initial: 100 * time.Millisecond, Max: time.Second},
		Logger:                  log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc := &runningConnector{c: c, log: lb, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(rc.done)
		c.Run(ctx)
	}()
	t.Cleanup(rc.stop)
	return rc
}

// callerVerifier verifies caller tokens with keys, as both binaries do: a 24 h maximum lifetime, and, with revoked
// set, that file as the revocation list (reloading, and looked at afresh by the re-checks of open streams).
func callerVerifier(t testing.TB, keys auth.KeySet, revoked string, leeway time.Duration, allowMultiCluster bool) *auth.Verifier {
	t.Helper()
	cfg := auth.VerifierConfig{Keys: keys, Audience: auth.AudienceCaller, MaxLifetime: 24 * time.Hour, Leeway: leeway,
		AllowMultiCluster: allowMultiCluster}
	if revoked != "" {
		rl, err := auth.NewRevocationList(revoked, auth.DefaultCheckInterval)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Revoked = rl.Revoked
		cfg.Sources = []auth.Refresher{rl}
	}
	v, err := auth.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func connectorToken(t testing.TB, cluster string) string {
	tok, err := keys.IssueConnector(cluster, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// callerToken issues a caller token for the clusters with rules in the `warren token issue --rule` form.
func callerToken(t testing.TB, clusters []string, rules ...string) string {
	t.Helper()
	return callerTokenFor(t, clusters, time.Hour, rules...)
}

// callerTokenFor is callerToken valid for ttl.
func callerTokenFor(t testing.TB, clusters []string, ttl time.Duration, rules ...string) string {
	t.Helper()
	var parsed []auth.Rule
	for _, r := range rules {
		pr, err := auth.ParseRule(r)
		if err != nil {
			t.Fatal(err)
		}
		parsed = append(parsed, pr)
	}
	tok, err := keys.IssueCaller(auth.IssueOptions{Subject: "e2e-caller", Clusters: clusters, Rules: parsed, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// allRules grants everything: in the spine's tests warren's scope checks are not the subject.
var allRules = []string{"*:*:*"}

// callerConfig is a client-go config for a cluster through the gateway, built as warren's own clients build it.
func callerConfig(gs *gatewayServer, cluster, token string) *rest.Config {
	cfg, err := client.Config{Gateway: gs.url(), Cluster: cluster, Token: token, CAFile: gs.caFile}.RESTConfig(context.Background())
	if err != nil {
		panic(fmt.Sprintf("callerConfig: %v", err)) // only a missing CA file of the test's own gateway
	}
	cfg.Timeout = 30 * time.Second
	cfg.QPS = -1 // no client-side throttling: the tests measure warren, not client-go's limiter
	return cfg
}

// writeKubeconfig writes a kubeconfig for kubectl pointing at a cluster through the gateway, as `warren kubeconfig`
// writes it.
func writeKubeconfig(t testing.TB, gs *gatewayServer, cluster, token string) string {
	t.Helper()
	cfg, err := client.Config{Gateway: gs.url(), Cluster: cluster, Token: token, CAFile: gs.caFile}.KubeconfigFor("")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubectl runs the real kubectl binary and returns its stdout; it fails the test on a non-zero exit.
func kubectl(t *testing.T, kubeconfig string, args ...string) string {
	t.Helper()
	out, errOut, err := kubectlResult(kubeconfig, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\nstderr: %s", strings.Join(args, " "), err, errOut)
	}
	return out
}

func kubectlResult(kubeconfig string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := kubectlCommand(ctx, kubeconfig, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func kubectlCommand(ctx context.Context, kubeconfig string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, kube.KubectlPath, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECACHEDIR="+kubeCacheDir)
	return cmd
}

// gatewayKeyFile and gatewayPubFile are the gateway's key, for the binary's --gateway-key, and its public half, for
// connectors' --gateway-keys.
func gatewayKeyFile() string { return filepath.Join(gatewayKeyDir, auth.SigningKeyFile) }
func gatewayPubFile() string { return filepath.Join(gatewayKeyDir, auth.PublicKeyFile) }

// newSigningKey makes a key pair as `warren keygen` does and returns the key and its public key file.
func newSigningKey(t *testing.T) (*auth.SigningKey, string) {
	t.Helper()
	dir := t.TempDir()
	if _, err := auth.GenerateKeyPair(dir); err != nil {
		t.Fatal(err)
	}
	k, err := auth.LoadSigningKey(filepath.Join(dir, auth.SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return k, filepath.Join(dir, auth.PublicKeyFile)
}
