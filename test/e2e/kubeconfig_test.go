package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestKubeconfigWithTokenCommand: `warren kubeconfig --token-command` writes an exec credential plugin that kubectl
// runs for its token; the plugin hands over the token's expiry so kubectl asks again when it expires.
func TestKubeconfigWithTokenCommand(t *testing.T) {
	gs := startGateway(t, "127.0.0.1:0")
	startConnector(t, gs, "prod", connectorOpts{name: "a"})
	gs.waitConnectors("prod", 1, 10*time.Second)
	tokenFile := writeFile(t, "caller.token", callerToken(t, []string{"prod"}, "get,list:namespaces"))
	command := "cat " + tokenFile
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	out, err := exec.Command(warrenBinary(t), "kubeconfig", "--gateway", gs.url(), "--cluster", "prod", "--ca-file", gs.caFile,
		"--token-command", command, "--out", kc).CombinedOutput()
	if err != nil {
		t.Fatalf("warren kubeconfig: %v %s", err, out)
	}
	if got := kubectl(t, kc, "get", "namespace", "default", "-o", "name"); strings.TrimSpace(got) != "namespace/default" {
		t.Fatalf("kubectl with the exec plugin: %q", got)
	}
	if _, stderr, err := kubectlResult(kc, "get", "pods", "-A"); err == nil || !strings.Contains(stderr, "cannot list resource \"pods\"") {
		t.Fatalf("the plugin's token keeps its scope: err=%v %s", err, stderr)
	}

	// What kubectl receives from the plugin.
	cred, err := exec.Command(warrenBinary(t), "credential", "--token-command", command).Output()
	if err != nil {
		t.Fatal(err)
	}
	var ec struct {
		APIVersion, Kind string
		Status           struct {
			Token               string
			ExpirationTimestamp time.Time
		}
	}
	if err := json.Unmarshal(cred, &ec); err != nil {
		t.Fatalf("ExecCredential %s: %v", cred, err)
	}
	var claims jwt.RegisteredClaims
	jwt.NewParser().ParseUnverified(ec.Status.Token, &claims)
	if ec.APIVersion != "client.authentication.k8s.io/v1" || ec.Kind != "ExecCredential" || ec.Status.Token == "" ||
		!ec.Status.ExpirationTimestamp.Equal(claims.ExpiresAt.Time) {
		t.Fatalf("ExecCredential: %+v (token exp %v)", ec, claims.ExpiresAt)
	}
	// A failing command is a clear error for kubectl to show.
	if out, err := exec.Command(warrenBinary(t), "credential", "--token-command", "exit 3").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), `warren credential: token command "exit 3" failed: exit status 3`) {
		t.Fatalf("failing token command: %v %s", err, out)
	}
}
