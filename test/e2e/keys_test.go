package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/testenv/wait"
)

// TestBinaryReloadsKeysAndRevocations runs `warren gateway` and changes its key and revocation files while it runs:
// a rotated-in issuer key is accepted after SIGHUP, and a revoked token id is refused within the file check period.
func TestBinaryReloadsKeysAndRevocations(t *testing.T) {
	lender := startGateway(t, "127.0.0.1:0")
	lender.stop()
	certFile, keyFile := gatewayFiles(t, lender)
	dir := t.TempDir()
	newKeyDir := filepath.Join(dir, "new")
	if _, err := auth.GenerateKeyPair(newKeyDir); err != nil {
		t.Fatal(err)
	}
	newKey, err := auth.LoadSigningKey(filepath.Join(newKeyDir, auth.SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	// The issuer key file starts with the test key only; the new key is added later.
	oldPub, _ := os.ReadFile(filepath.Join(keysDir, auth.PublicKeyFile))
	newPub, _ := os.ReadFile(filepath.Join(newKeyDir, auth.PublicKeyFile))
	issuerFile := writeFile(t, "issuers.pem", string(oldPub))
	revoked := writeFile(t, "revoked.txt", "# revoked token ids\n")

	addr := freePort(t)
	gw := startProcess(t, "gateway", "gateway", "--listen", addr, "--tls-cert", certFile, "--tls-key", keyFile,
		"--issuer-keys", issuerFile, "--connector-keys", filepath.Join(keysDir, auth.PublicKeyFile), "--gateway-key", gatewayKeyFile(),
		"--revoked-tokens", revoked, "--audit-log", filepath.Join(dir, "audit.jsonl"))
	url := "https://" + addr
	waitHealthy(t, url, lender.caFile, 20*time.Second)
	lender.addr = addr
	tokenFile := writeFile(t, "connector.token", connectorToken(t, "prod"))
	startProcess(t, "connector", "connector", "--gateway", url, "--token-file", tokenFile, "--ca-file", lender.caFile, "--gateway-keys", gatewayPubFile(),
		"--kubeconfig", kube.ConnectorKubeconfig)

	old := callerToken(t, []string{"prod"}, allRules...)
	wait.Until(t, 20*time.Second, "old key accepted", func() bool {
		code, _ := status(t, lender, "/clusters/prod/version", old)
		return code == http.StatusOK
	})
	rotated, err := newKey.IssueCaller(auth.IssueOptions{Subject: "rotated", Clusters: []string{"prod"}, TTL: time.Hour,
		Rules: []auth.Rule{{Verbs: []string{"get"}, Resources: []string{"*"}, APIGroups: []string{"*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if code, st := status(t, lender, "/clusters/prod/version", rotated); code != 401 || !strings.Contains(st.Message, "unknown key id") {
		t.Fatalf("new key before rotation: %d %q", code, st.Message)
	}

	// Rotate: both keys in the file, then SIGHUP.
	if err := os.WriteFile(issuerFile, append(append([]byte{}, oldPub...), newPub...), 0o600); err != nil {
		t.Fatal(err)
	}
	gw.signal(syscall.SIGHUP)
	wait.Until(t, 10*time.Second, "new key accepted after SIGHUP", func() bool {
		code, _ := status(t, lender, "/clusters/prod/version", rotated)
		return code == http.StatusOK
	})

	// Revoke the old token by id: refused once the file is re-read (checked every 5 s).
	var claims jwt.RegisteredClaims
	jwt.NewParser().ParseUnverified(old, &claims)
	os.WriteFile(revoked, []byte("# revoked token ids\n"+claims.ID+"\n"), 0o600)
	wait.Until(t, 15*time.Second, "revoked token refused", func() bool {
		code, st := status(t, lender, "/clusters/prod/version", old)
		return code == 401 && st.Message == `invalid caller token: token "`+claims.ID+`" has been revoked`
	})
	if code, _ := status(t, lender, "/clusters/prod/version", rotated); code != 200 {
		t.Fatalf("a token not revoked is refused: %d", code)
	}

	// The revocation list disappears (a ConfigMap unmounted, a bad deploy): the revoked token stays refused, and
	// /readyz says why until the file is back.
	if code, body := readyz(t, url, lender.caFile); code != 200 {
		t.Fatalf("/readyz before: %d %q", code, body)
	}
	if err := os.Remove(revoked); err != nil {
		t.Fatal(err)
	}
	wantReady := `gateway not ready: --revoked-tokens: revocation list ` + revoked + ` is gone; still refusing the 1 token ids read before: put the file back (empty to revoke nothing)`
	wait.Until(t, 15*time.Second, "/readyz reports the missing revocation list", func() bool {
		code, body := readyz(t, url, lender.caFile)
		return code == 503 && body == wantReady
	})
	if code, st := status(t, lender, "/clusters/prod/version", old); code != 401 || st.Message != `invalid caller token: token "`+claims.ID+`" has been revoked` {
		t.Fatalf("revoked token after the list went: %d %q", code, st.Message)
	}
	if !strings.Contains(gw.log.String(), `level=ERROR msg="reload failed; still using what was read before" source=--revoked-tokens`) {
		t.Errorf("the gateway did not log the failure:\n%s", gw.log.String())
	}
	os.WriteFile(revoked, []byte(claims.ID+"\n"), 0o600)
	wait.Until(t, 15*time.Second, "/readyz once the list is back", func() bool {
		code, _ := readyz(t, url, lender.caFile)
		return code == 200
	})
}

// readyz GETs /readyz of the gateway at url and returns the status and the Status message (or body).
func readyz(t *testing.T, url, caFile string) (int, string) {
	t.Helper()
	pemBytes, _ := os.ReadFile(caFile)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var st metav1.Status
	if json.Unmarshal(b, &st) == nil && st.Message != "" {
		return resp.StatusCode, st.Message
	}
	return resp.StatusCode, strings.TrimSpace(string(b))
}
