package gateway_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/gateway"
	"github.com/warren-dev/warren/internal/testenv/testcert"
	"github.com/warren-dev/warren/internal/testenv/testlog"
	"github.com/warren-dev/warren/internal/testenv/wait"
)

// writeServerCert writes a certificate for 127.0.0.1 and its key to dir as PEM.
func writeServerCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	c, err := testcert.SelfSigned(testcert.Options{Name: "gateway", Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := c.WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(c.Cert)
	return certFile, keyFile, pool
}

// TestServeOwnsItsServers: Serve loads its files, serves HTTPS and /metrics, and once its context is done returns
// nil with every server and loop it started ended (goleak in TestMain checks), the audit log closed.
func TestServeOwnsItsServers(t *testing.T) {
	dir := t.TempDir()
	issuer, gw := filepath.Join(dir, "issuer"), filepath.Join(dir, "gateway")
	for _, d := range []string{issuer, gw} {
		if _, err := auth.GenerateKeyPair(d); err != nil {
			t.Fatal(err)
		}
	}
	certFile, keyFile, pool := writeServerCert(t, dir)
	var logs testlog.Buffer
	cfg := gateway.DefaultServeConfig()
	cfg.Gateway.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	cfg.Listen, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.TLSCertFile, cfg.TLSKeyFile, cfg.SigningKeyFile = certFile, keyFile, filepath.Join(gw, auth.SigningKeyFile)
	cfg.Callers.KeyFiles = []string{filepath.Join(issuer, auth.PublicKeyFile)}
	cfg.ConnectorKeyFiles = cfg.Callers.KeyFiles
	cfg.AuditLog = filepath.Join(dir, "audit.log")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- gateway.Serve(ctx, cfg) }()

	listening := regexp.MustCompile(`msg="gateway listening" addr=(\S+)`)
	wait.Until(t, 10*time.Second, "gateway listening", func() bool { return listening.MatchString(logs.String()) })
	addr := listening.FindStringSubmatch(logs.String())[1]
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Fatalf("/healthz: %d %q", res.StatusCode, body)
	}
	tr.CloseIdleConnections()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return once its context was done")
	}
	if _, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}).Get("https://" + addr + "/healthz"); err == nil {
		t.Error("the gateway still answers after Serve returned")
	}
}

// TestServeRefusesBadFiles: what Serve cannot load is refused before it listens, naming the flag at fault.
func TestServeRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := auth.GenerateKeyPair(dir); err != nil {
		t.Fatal(err)
	}
	cfg := gateway.DefaultServeConfig()
	cfg.SigningKeyFile = filepath.Join(dir, auth.SigningKeyFile)
	cfg.AuditLog = ""
	if err := gateway.Serve(context.Background(), cfg); err == nil || err.Error() != "--audit-log must not be empty: the gateway audits every request (- for standard output)" {
		t.Errorf("no audit log: %v", err)
	}
	cfg.AuditLog = "-"
	cfg.TLSCertFile, cfg.TLSKeyFile = filepath.Join(dir, "none.crt"), filepath.Join(dir, "none.key")
	if err := gateway.Serve(context.Background(), cfg); err == nil || !regexp.MustCompile(`^cannot load the TLS certificate: .*; check --tls-cert and --tls-key$`).MatchString(err.Error()) {
		t.Errorf("no TLS certificate: %v", err)
	}
}
