package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/warren-dev/warren/auth"
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
		"--issuer-keys", issuerFile, "--connector-keys", filepath.Join(keysDir, auth.PublicKeyFile),
		"--revoked-tokens", revoked, "--audit-log", filepath.Join(dir, "audit.jsonl"))
	url := "https://" + addr
	waitHealthy(t, url, lender.caFile, 20*time.Second)
	lender.addr = addr
	tokenFile := writeFile(t, "connector.token", connectorToken(t, "prod"))
	startProcess(t, "connector", "connector", "--gateway", url, "--token-file", tokenFile, "--ca-file", lender.caFile,
		"--kubeconfig", kube.ConnectorKubeconfig)

	old := callerToken(t, []string{"prod"}, allRules...)
	eventually(t, 20*time.Second, "old key accepted", func() bool {
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
	eventually(t, 10*time.Second, "new key accepted after SIGHUP", func() bool {
		code, _ := status(t, lender, "/clusters/prod/version", rotated)
		return code == http.StatusOK
	})

	// Revoke the old token by id: refused once the file is re-read (checked every 5 s).
	var claims jwt.RegisteredClaims
	jwt.NewParser().ParseUnverified(old, &claims)
	os.WriteFile(revoked, []byte("# revoked token ids\n"+claims.ID+"\n"), 0o600)
	eventually(t, 15*time.Second, "revoked token refused", func() bool {
		code, st := status(t, lender, "/clusters/prod/version", old)
		return code == 401 && st.Message == `invalid caller token: token "`+claims.ID+`" has been revoked`
	})
	if code, _ := status(t, lender, "/clusters/prod/version", rotated); code != 200 {
		t.Fatalf("a token not revoked is refused: %d", code)
	}
}
