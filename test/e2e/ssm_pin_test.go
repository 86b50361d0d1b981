package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/download"
)

// TestSSMBootstrapPinnedRelease: the operator pins what runs as root independently of the gateway. A gateway that
// serves another binary with its true digest is caught before anything is sent (and by the instances, without
// the preflight); the release the operator signed with `warren sign` and pinned installs and connects.
func TestSSMBootstrapPinnedRelease(t *testing.T) {
	awsEnv(t)
	const cluster = "prod-pinned"
	genuine, err := os.ReadFile(warrenBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(genuine)
	pin := "linux/amd64=" + hex.EncodeToString(sum[:])

	// The release key and its signature of the genuine binary.
	releaseDir := filepath.Join(t.TempDir(), "release")
	if _, err := auth.GenerateKeyPair(releaseDir); err != nil {
		t.Fatal(err)
	}
	dist := t.TempDir()
	bin := filepath.Join(dist, download.BinaryName("linux-amd64"))
	if err := os.WriteFile(bin, genuine, 0o755); err != nil {
		t.Fatal(err)
	}
	sign := startProcess(t, "warren sign", "sign", "--key", filepath.Join(releaseDir, auth.SigningKeyFile), bin)
	<-sign.done
	if sign.err != nil || !strings.HasPrefix(sign.log.String(), bin+".sig (key ") {
		t.Fatalf("warren sign: %v\n%s", sign.err, sign.log.String())
	}

	// A gateway serving another binary, with that binary's true .sha256.
	evil := t.TempDir()
	if err := os.WriteFile(filepath.Join(evil, download.BinaryName("linux-amd64")), []byte("#!/bin/sh\necho pwned\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	bad := startGatewayWith(t, "127.0.0.1:0", gatewayOpts{downloads: download.New(evil, "")})
	fake := ssmInstances(t, "i-1", "i-2")
	tokenFile := writeFile(t, "connector.token", connectorToken(t, cluster))
	common := []string{"--endpoint-url", fake.URL, "--region", "us-east-1", "--instance-id", "i-1,i-2", "--token-file", tokenFile, "--gateway-keys", gatewayPubFile(),
		"--kubeconfig", kube.ConnectorKubeconfig, "--timeout", "2m", "--connect-wait", "20s", "--connector-sha256", pin}
	out, code := runBootstrap(t, append(common, "--gateway", bad.url(), "--ca-file", bad.caFile)...)
	if code != 1 || !strings.Contains(out, "warren bootstrap: the gateway serves warren-linux-amd64 with SHA-256 ") ||
		!strings.Contains(out, ", not the "+hex.EncodeToString(sum[:])+" of --connector-sha256: it serves another build than the release you pinned; nothing was sent") {
		t.Fatalf("preflight against a gateway serving another binary: exit %d\n%s", code, out)
	}
	out, code = runBootstrap(t, append(common, "--gateway", bad.url(), "--ca-file", bad.caFile, "--no-preflight")...)
	if code != 1 || !strings.Contains(out, "the operator pinned "+hex.EncodeToString(sum[:])+" (--connector-sha256)") ||
		!strings.Contains(out, "2 of 2 instances failed: i-1, i-2") {
		t.Fatalf("instances against a gateway serving another binary: exit %d\n%s", code, out)
	}
	for _, id := range []string{"i-1", "i-2"} {
		if _, err := os.Stat(filepath.Join(fake.InstanceRoot(id), "usr/local/bin/warren")); err == nil {
			t.Fatalf("%s: a binary was installed", id)
		}
	}

	// The genuine release, pinned and signed.
	gs := startGatewayWith(t, "127.0.0.1:0", gatewayOpts{downloads: download.New(dist, "")})
	start := time.Now()
	out, code = runBootstrap(t, append(common, "--gateway", gs.url(), "--ca-file", gs.caFile,
		"--release-key", filepath.Join(releaseDir, auth.PublicKeyFile))...)
	t.Logf("warren bootstrap ssm, %v, exit %d:\n%s", time.Since(start).Round(time.Millisecond), code, out)
	if code != 0 || !strings.Contains(out, "2 of 2 instances succeeded") {
		t.Fatalf("exit %d", code)
	}
	for _, id := range []string{"i-1", "i-2"} {
		if line := lineWith(out, id+"  "); !strings.Contains(line, "warren-connector is running and connected to "+gs.url()) {
			t.Errorf("summary row of %s: %q", id, line)
		}
	}
	gs.waitConnectors(cluster, 2, 20*time.Second)
}
