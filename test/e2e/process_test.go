package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warren-dev/warren/internal/testenv/wait"
)

// The tests in this file run the `warren` binary itself, as a user would, and kill it for real.

var (
	buildOnce sync.Once
	warrenBin string
	buildErr  error
)

func warrenBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "warren-bin-")
		if err != nil {
			buildErr = err
			return
		}
		warrenBin = filepath.Join(dir, "warren")
		out, err := exec.Command("go", "build", "-o", warrenBin, "github.com/warren-dev/warren/cmd/warren").CombinedOutput()
		if err != nil {
			buildErr = &buildError{err, string(out)}
		}
	})
	if buildErr != nil {
		t.Fatalf("building warren: %v", buildErr)
	}
	return warrenBin
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

// process is a running warren command whose stderr (its log) is kept for assertions.
type process struct {
	cmd  *exec.Cmd
	log  *logBuffer
	done chan struct{}
	err  error
}

func startProcess(t testing.TB, name string, args ...string) *process {
	t.Helper()
	return startProcessEnv(t, name, nil, args...)
}

// startProcessEnv starts warren with env added to this process's environment.
func startProcessEnv(t testing.TB, name string, env []string, args ...string) *process {
	t.Helper()
	p := &process{log: &logBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(warrenBinary(t), args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = p.log
	p.cmd.Stdout = p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.log.String())
		}
	})
	return p
}

func (p *process) signal(s os.Signal) {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(s)
	}
}

// stop sends SIGTERM and returns the exit error, failing the test if the process takes more than 15 s.
func (p *process) stop(t *testing.T) error {
	t.Helper()
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(15 * time.Second):
		t.Fatal("process did not stop within 15s of SIGTERM")
		return nil
	}
}

func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// gatewayFiles writes the gateway's TLS certificate and key for the binary.
func gatewayFiles(t testing.TB, gs *gatewayServer) (certFile, keyFile string) {
	t.Helper()
	var certPEM []byte
	for _, der := range gs.cert.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(gs.cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "gateway.crt", string(certPEM)),
		writeFile(t, "gateway.key", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
}

func waitHealthy(t testing.TB, url, caFile string, within time.Duration) {
	t.Helper()
	pemBytes, _ := os.ReadFile(caFile)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: time.Second}
	defer client.CloseIdleConnections()
	wait.Until(t, within, "gateway /healthz", func() bool {
		resp, err := client.Get(url + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// TestBinariesKilledAndRestarted runs `warren gateway` and `warren connector` as processes: kubectl works through
// them; SIGKILL of the connector gives 503 within seconds; a restarted gateway gets its connector back within 30 s
// with the default backoff.
func TestBinariesKilledAndRestarted(t *testing.T) {
	// An in-process gateway only lends its certificate; the binary serves on a port of its own.
	lender := startGateway(t, "127.0.0.1:0")
	lender.stop()
	certFile, keyFile := gatewayFiles(t, lender)
	pub := filepath.Join(keysDir, "signing.pub")
	addr, metricsAddr := freePort(t), freePort(t)
	url := "https://" + addr
	// The gateway's own key signs assertions and connector credentials: with it, connectors keep theirs across its
	// restart.
	gatewayArgs := []string{"gateway", "--listen", addr, "--tls-cert", certFile, "--tls-key", keyFile,
		"--issuer-keys", pub, "--connector-keys", pub, "--metrics-listen", metricsAddr, "--gateway-key", gatewayKeyFile()}
	gw := startProcess(t, "gateway", gatewayArgs...)
	waitHealthy(t, url, lender.caFile, 20*time.Second)

	tokenFile := writeFile(t, "connector.token", connectorToken(t, "prod")+"\n")
	stateDir := filepath.Join(t.TempDir(), "state") // the connector's key: its identity across restarts
	connectorArgs := []string{"connector", "--gateway", url, "--token-file", tokenFile, "--ca-file", lender.caFile, "--gateway-keys", gatewayPubFile(),
		"--kubeconfig", kube.ConnectorKubeconfig, "--name", "proc", "--state-dir", stateDir}
	conn := startProcess(t, "connector", connectorArgs...)

	lender.addr = addr // the kubeconfig and status helpers talk to the binary
	token := callerToken(t, []string{"prod"}, allRules...)
	kc := writeKubeconfig(t, lender, "prod", token)
	wait.Until(t, 20*time.Second, "kubectl through the binaries", func() bool {
		out, _, err := kubectlResult(kc, "get", "namespace", "default", "-o", "name")
		return err == nil && strings.TrimSpace(out) == "namespace/default"
	})

	metrics := func() string {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	m := metrics()
	for _, want := range []string{`warren_gateway_connectors{cluster="prod"} 1`, `warren_gateway_requests_total{cluster="prod",code="200",decision="allow"}`,
		`warren_gateway_tunnel_handshakes_total{result="accepted"} 1`, `warren_gateway_connector_identities{cluster="prod"} 1`,
		`warren_gateway_connector_joins_total{cluster="prod",result="new"} 1`} {
		if !strings.Contains(m, want) {
			t.Fatalf("/metrics lacks %s:\n%s", want, m)
		}
	}
	if !strings.Contains(conn.log.String(), `msg="made a new connector key"`) {
		t.Fatalf("the connector did not say it made its key:\n%s", conn.log.String())
	}

	// SIGKILL the connector: no goodbye on the wire, the gateway learns it from the dropped connection.
	conn.signal(syscall.SIGKILL)
	<-conn.done
	killed := time.Now()
	wait.Until(t, 5*time.Second, "503 after SIGKILL of the connector", func() bool {
		code, _ := status(t, lender, "/clusters/prod/api/v1/namespaces/default", token)
		return code == http.StatusServiceUnavailable
	})
	t.Logf("503 %v after SIGKILL of the connector", time.Since(killed).Round(time.Millisecond))
	_, stderr, err := kubectlResult(kc, "get", "namespace", "default")
	if err == nil || !strings.Contains(stderr, `Error from server (ServiceUnavailable): no connector is connected for cluster "prod"`) {
		t.Fatalf("kubectl without connector: err=%v stderr=%q", err, stderr)
	}

	// Restart the connector: the key in --state-dir makes it the same identity, which renews rather than joins anew.
	conn = startProcess(t, "connector", connectorArgs...)
	wait.Until(t, 20*time.Second, "kubectl after the connector restarted", func() bool {
		_, _, err := kubectlResult(kc, "get", "namespace", "default")
		return err == nil
	})
	m = metrics()
	for _, want := range []string{`warren_gateway_connector_identities{cluster="prod"} 1`, `warren_gateway_connector_joins_total{cluster="prod",result="new"} 1`,
		`warren_gateway_connector_joins_total{cluster="prod",result="renewed"} 1`} {
		if !strings.Contains(m, want) {
			t.Fatalf("after the connector restart, /metrics lacks %s:\n%s", want, m)
		}
	}
	if strings.Contains(conn.log.String(), "made a new connector key") {
		t.Fatal("the restarted connector made a new key despite --state-dir")
	}
	if err := gw.stop(t); err != nil {
		t.Fatalf("gateway exit after SIGTERM: %v", err)
	}
	wait.Until(t, 30*time.Second, "connector noticed the gateway left", func() bool {
		return strings.Contains(conn.log.String(), "tunnel to the gateway lost")
	})
	restarted := time.Now()
	startProcess(t, "gateway", gatewayArgs...)
	waitHealthy(t, url, lender.caFile, 20*time.Second)
	wait.Until(t, 30*time.Second, "connector back after the gateway restart", func() bool {
		code, _ := status(t, lender, "/clusters/prod/api/v1/namespaces/default", token)
		return code == http.StatusOK
	})
	t.Logf("connector back %v after the gateway restarted", time.Since(restarted).Round(time.Millisecond))
	// Its credential, signed with --gateway-key, still held: the new gateway took the identity up without a join.
	if m := metrics(); !strings.Contains(m, `warren_gateway_connector_identities{cluster="prod"} 1`) || strings.Contains(m, "warren_gateway_connector_joins_total{") {
		t.Fatalf("after the gateway restart, /metrics:\n%s", m)
	}
	if err := conn.stop(t); err != nil {
		t.Fatalf("connector exit after SIGTERM: %v", err)
	}
	if !strings.Contains(conn.log.String(), "connector stopped") {
		t.Fatalf("connector did not log a clean stop:\n%s", conn.log.String())
	}
}

// TestBinaryTwoConnectorsOneKilled: with two connector processes for a cluster, SIGKILL of one costs at most the
// requests it had in flight; every request after the gateway noticed succeeds.
func TestBinaryTwoConnectorsOneKilled(t *testing.T) {
	gs := startGateway(t, "127.0.0.1:0")
	tokenFile := writeFile(t, "connector.token", connectorToken(t, "prod"))
	args := func(name string) []string {
		return []string{"connector", "--gateway", gs.url(), "--token-file", tokenFile, "--ca-file", gs.caFile, "--gateway-keys", gatewayPubFile(),
			"--kubeconfig", kube.ConnectorKubeconfig, "--name", name}
	}
	a := startProcess(t, "connector a", args("a")...)
	startProcess(t, "connector b", args("b")...)
	gs.waitConnectors("prod", 2, 20*time.Second)
	cs := clientset(t, callerConfig(gs, "prod", callerToken(t, []string{"prod"}, allRules...)))
	get := func() error {
		_, err := cs.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{})
		return err
	}
	for range 20 {
		if err := get(); err != nil {
			t.Fatal(err)
		}
	}
	a.signal(syscall.SIGKILL)
	<-a.done
	gs.waitConnectors("prod", 1, 5*time.Second)
	for i := range 100 {
		if err := get(); err != nil {
			t.Fatalf("request %d after connector a was SIGKILLed: %v", i, err)
		}
	}
}

// TestConnectorBadInput: each misconfiguration is one clear log line and a retry, not a crash or a hang.
func TestConnectorBadInput(t *testing.T) {
	gs := startGateway(t, "127.0.0.1:0")
	expired, err := keys.IssueConnector("prod", time.Hour, time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	closed := freePort(t)

	cases := []struct {
		name string
		url  string
		opts connectorOpts
		want []string
	}{
		{"unreachable gateway", "https://" + closed, connectorOpts{}, []string{
			`msg="cannot reach the gateway"`, "connection refused"}},
		{"expired token", "", connectorOpts{token: expired}, []string{
			`msg="gateway refused the connector token: issue a new one with ` + "`warren token connector`" + ` and update --token-file"`,
			"401 Unauthorized: invalid connector token: token expired at"}},
		{"malformed token", "", connectorOpts{token: "garbage"}, []string{
			`msg="gateway refused the connector token`, "401 Unauthorized: invalid connector token: malformed token"}},
		{"caller token", "", connectorOpts{token: callerToken(t, []string{"prod"}, allRules...)}, []string{
			`msg="gateway refused the connector token`, `does not include \"warren-connector\"`}},
		// The apiserver's CA did not sign the gateway's certificate.
		{"wrong CA", "", connectorOpts{caFile: kube.CAFile}, []string{
			`msg="cannot verify the gateway's certificate: pass the CA that signed it with --ca-file"`,
			"certificate signed by unknown authority"}},
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			target := gs
			if c.url != "" {
				target = &gatewayServer{t: t, addr: strings.TrimPrefix(c.url, "https://"), caFile: gs.caFile}
			}
			rc := startConnector(t, target, "prod", c.opts)
			wait.Until(t, 5*time.Second, "two failed attempts logged", func() bool {
				return strings.Count(rc.log.String(), "retry_in=") >= 2
			})
			logs := rc.log.String()
			for _, w := range c.want {
				if !strings.Contains(logs, w) {
					t.Errorf("connector log lacks %q:\n%s", w, logs)
				}
			}
			if rc.c.Connected() {
				t.Fatal("connector reports connected")
			}
			if gs.g.Connectors("prod") != 0 {
				t.Fatal("gateway registered a refused connector")
			}
		})
	}
}
