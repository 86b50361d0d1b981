package connector

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/testenv/testlog"
)

// TestServeOwnsItsServers: Serve loads its files and answers probes on --health-listen (not ready while no tunnel
// is up: the gateway here does not exist); once its context is done it returns nil with the probe server, the
// connector and its loops ended (goleak in TestMain checks), and the key kept in the state directory.
func TestServeOwnsItsServers(t *testing.T) {
	dir := t.TempDir()
	if _, err := auth.GenerateKeyPair(dir); err != nil {
		t.Fatal(err)
	}
	key, err := auth.LoadSigningKey(filepath.Join(dir, auth.SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := key.IssueConnector("prod", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tokenFile, kubeconfig := filepath.Join(dir, "token"), filepath.Join(dir, "kubeconfig")
	os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600)
	os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n"), 0o600)
	logs := &testlog.Buffer{}
	cfg := DefaultServeConfig()
	cfg.Connector.GatewayURL = "https://127.0.0.1:1"
	cfg.Connector.Logger = slog.New(slog.NewTextHandler(logs, nil))
	cfg.TokenFile, cfg.Kubeconfig, cfg.StateDir = tokenFile, kubeconfig, filepath.Join(dir, "state")
	cfg.GatewayKeyFiles = []string{filepath.Join(dir, auth.PublicKeyFile)}
	cfg.HealthListen = "127.0.0.1:0"
	cfg.AuditLog = filepath.Join(dir, "audit.log")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, cfg) }()

	listening := regexp.MustCompile(`msg="health probes listening" addr=(\S+)`)
	deadline := time.Now().Add(10 * time.Second)
	for !listening.MatchString(logs.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no probe listener within 10s: %s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	addr := listening.FindStringSubmatch(logs.String())[1]
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	for path, want := range map[string]string{"/healthz": "200 ok\n", "/readyz": "503 not connected to the gateway\n"} {
		res, err := (&http.Client{Transport: tr}).Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if got := res.Status[:3] + " " + string(body); got != want {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
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
	if _, err := os.Stat(filepath.Join(dir, "state", KeyFile)); err != nil {
		t.Errorf("state dir: %v", err)
	}
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("the probe listener still answers after Serve returned")
	}
}
