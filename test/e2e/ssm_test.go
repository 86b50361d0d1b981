package e2e

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-dev/warren/internal/download"
	"github.com/warren-dev/warren/internal/testenv/awsfake"
	"github.com/warren-dev/warren/internal/testenv/kubetest"
	"github.com/warren-dev/warren/internal/testenv/wait"
)

// The tests in this file run `warren bootstrap ssm` and `warren connector --eks-cluster` against internal/testenv/awsfake,
// a local stand-in for SSM, EKS and STS that speaks their wire protocols and runs the SSM commands for real: the
// bootstrap script downloads the warren binary from the gateway and starts it as a "systemd service" (a stand-in
// systemctl), and that connector serves kubectl.

// awsEnv points the AWS SDK of the processes the test starts at the stand-in's test identity, and nothing else of
// this machine (no shared config, no instance metadata).
func awsEnv(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           awsfake.TestIdentity.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY":       awsfake.TestIdentity.SecretAccessKey,
		"AWS_SESSION_TOKEN":           "",
		"AWS_PROFILE":                 "",
		"AWS_REGION":                  "",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED":   "true",
	} {
		t.Setenv(k, v)
	}
}

// ssmInstances starts the stand-in with instances whose installation goes under their own root directory and whose
// service runs as the test's user.
func ssmInstances(t *testing.T, ids ...string) *awsfake.Server {
	t.Helper()
	var instances []awsfake.Instance
	for _, id := range ids {
		root := t.TempDir()
		instances = append(instances, awsfake.Instance{ID: id, Root: root,
			Env: []string{"WARREN_PREFIX=" + root, "WARREN_SERVICE_USER="}})
	}
	fake, err := awsfake.New(awsfake.Config{Instances: instances, InvocationDelay: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, id := range ids {
				t.Logf("%s warren-connector.service output:\n%s", id, fake.ServiceLog(id, "warren-connector"))
			}
		}
		fake.Close() // stops the connectors the bootstrap started
	})
	return fake
}

// runBootstrap runs `warren bootstrap ssm` to its end and returns its output and exit code.
func runBootstrap(t *testing.T, args ...string) (string, int) {
	t.Helper()
	p := startProcess(t, "warren bootstrap ssm", append([]string{"bootstrap", "ssm"}, args...)...)
	select {
	case <-p.done:
	case <-time.After(3 * time.Minute):
		t.Fatal("warren bootstrap ssm did not end within 3 minutes")
	}
	code := 0
	var exitErr *exec.ExitError
	if errors.As(p.err, &exitErr) {
		code = exitErr.ExitCode()
	} else if p.err != nil {
		t.Fatal(p.err)
	}
	return p.log.String(), code
}

// TestSSMBootstrap installs the connector on two instances through SSM: both report Success, both connectors (the
// gateway's own build, downloaded and checked by the script) connect, and kubectl works through them.
func TestSSMBootstrap(t *testing.T) {
	awsEnv(t)
	const cluster = "prod-ssm"
	// The gateway serves its own build (linux-amd64 here) from its executable, as a gateway started without
	// --download-dir does; there is no arm64 build.
	gs := startGatewayWith(t, "127.0.0.1:0", gatewayOpts{downloads: download.New("", warrenBinary(t))})
	fake := ssmInstances(t, "i-1", "i-2")
	token := connectorToken(t, cluster)
	tokenFile := writeFile(t, "connector.token", token+"\n")

	start := time.Now()
	out, code := runBootstrap(t, "--endpoint-url", fake.URL, "--region", "us-east-1",
		"--instance-id", "i-1", "--instance-id", "i-2", "--gateway", gs.url(), "--token-file", tokenFile, "--gateway-keys", gatewayPubFile(),
		"--ca-file", gs.caFile, "--kubeconfig", kube.ConnectorKubeconfig, "--cluster-name", cluster,
		"--timeout", "2m", "--connect-wait", "20s")
	t.Logf("warren bootstrap ssm, %v, exit %d:\n%s", time.Since(start).Round(time.Millisecond), code, out)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{
		"gateway serves warren-linux-amd64, SHA-256 ",
		"INSTANCE  STATUS   DURATION  RESULT",
		"2 of 2 instances succeeded",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, id := range []string{"i-1", "i-2"} {
		line := lineWith(out, id+"  ")
		if !strings.Contains(line, "Success") || !strings.Contains(line, "warren-connector is running and connected to "+gs.url()) {
			t.Errorf("summary row of %s: %q", id, line)
		}
	}
	if strings.Contains(out, token) {
		t.Fatal("the bootstrap output shows the connector token")
	}

	gs.waitConnectors(cluster, 2, 20*time.Second)
	kc := writeKubeconfig(t, gs, cluster, callerToken(t, []string{cluster}, allRules...))
	if got := kubectl(t, kc, "get", "namespace", "default", "-o", "name"); strings.TrimSpace(got) != "namespace/default" {
		t.Fatalf("kubectl get namespace default: %q", got)
	}
	for _, id := range []string{"i-1", "i-2"} {
		if log := fake.ServiceLog(id, "warren-connector"); !strings.Contains(log, `msg="connected to the gateway"`) {
			t.Errorf("%s connector log:\n%s", id, log)
		}
		if log := fake.ServiceLog(id, "warren-connector"); strings.Contains(log, token) {
			t.Errorf("%s: the connector log shows the token", id)
		}
	}
}

// TestSSMBootstrapFailures: a binary that does not match its digest, and a gateway the instances cannot reach,
// are each reported per instance with the reason, and the command exits 1.
func TestSSMBootstrapFailures(t *testing.T) {
	awsEnv(t)
	binary := warrenBinary(t)
	// tampered serves another file in place of the binary, but the true digest.
	tampered := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/warren-linux-amd64") || strings.HasSuffix(r.URL.Path, "/warren-linux-arm64") {
				w.Write([]byte("#!/bin/sh\necho pwned\n"))
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	cases := []struct {
		name    string
		handler http.Handler
		args    func(gs *gatewayServer) []string
		want    []string
	}{
		{"tampered binary", tampered(download.New("", binary)), func(gs *gatewayServer) []string {
			return []string{"--gateway", gs.url()}
		}, []string{"exit 1: SHA-256 mismatch for warren-linux-", "nothing was installed"}},
		{"gateway unreachable", download.New("", binary), func(gs *gatewayServer) []string {
			return []string{"--gateway", "https://" + freePort(t), "--no-preflight"}
		}, []string{"exit 1: cannot download https://127.0.0.1:", "curl: (7)"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			gs := startGatewayWith(t, "127.0.0.1:0", gatewayOpts{downloads: c.handler})
			fake := ssmInstances(t, "i-1", "i-2")
			tokenFile := writeFile(t, "connector.token", connectorToken(t, "prod-ssm"))
			args := append([]string{"--endpoint-url", fake.URL, "--region", "us-east-1", "--instance-id", "i-1,i-2",
				"--token-file", tokenFile, "--gateway-keys", gatewayPubFile(), "--ca-file", gs.caFile, "--kubeconfig", kube.ConnectorKubeconfig,
				"--timeout", "1m", "--connect-wait", "5s"}, c.args(gs)...)
			out, code := runBootstrap(t, args...)
			t.Logf("exit %d:\n%s", code, out)
			if code != 1 {
				t.Fatalf("exit %d, want 1", code)
			}
			for _, id := range []string{"i-1", "i-2"} {
				if line := lineWith(out, id+"  "); !strings.Contains(line, "Failed") || !strings.Contains(line, c.want[0]) {
					t.Errorf("summary row of %s: %q", id, line)
				}
				if fake.ServiceRunning(id, "warren-connector") {
					t.Errorf("%s: a connector was started", id)
				}
				if _, err := os.Stat(filepath.Join(fake.InstanceRoot(id), "usr/local/bin/warren")); err == nil {
					t.Errorf("%s: a binary was installed", id)
				}
			}
			for _, want := range append(c.want[1:], "2 of 2 instances failed: i-1, i-2",
				"warren bootstrap: 2 of 2 instances failed: i-1, i-2") {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q", want)
				}
			}
			if gs.g.Connectors("prod-ssm") != 0 {
				t.Fatal("a connector connected")
			}
		})
	}
}

// TestSSMEKSConnector runs `warren connector --eks-cluster` against the stand-in's EKS and STS: DescribeCluster gives
// it the endpoint and CA of a real kube-apiserver, which authenticates the connector's k8s-aws-v1 tokens through the
// stand-in's token webhook (as aws-iam-authenticator does on EKS), so kubectl through the gateway works, as the
// caller ARN mapped to system:masters.
func TestSSMEKSConnector(t *testing.T) {
	awsEnv(t)
	const cluster = "prod-eks"
	fake, err := awsfake.New(awsfake.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	webhook := writeFile(t, "webhook.kubeconfig", string(fake.WebhookKubeconfig(cluster)))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	eksKube, err := kubetest.Start(ctx, kubetest.Options{Dir: t.TempDir(), ExtraArgs: []string{
		"--authentication-token-webhook-config-file=" + webhook,
		"--authentication-token-webhook-version=v1",
	}})
	if err != nil {
		t.Fatalf("cannot start the EKS stand-in's kube-apiserver: %v", err)
	}
	t.Cleanup(func() { eksKube.Stop() })
	ca, err := os.ReadFile(eksKube.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	fake.SetCluster(awsfake.Cluster{Name: cluster, Endpoint: eksKube.URL, CAPEM: ca})

	gs := startGateway(t, "127.0.0.1:0")
	tokenFile := writeFile(t, "connector.token", connectorToken(t, cluster))
	conn := startProcess(t, "connector --eks-cluster", "connector", "--gateway", gs.url(), "--token-file", tokenFile, "--gateway-keys", gatewayPubFile(),
		"--ca-file", gs.caFile, "--eks-cluster", cluster, "--region", "us-east-1", "--endpoint-url", fake.URL, "--name", "eks")
	gs.waitConnectors(cluster, 1, 30*time.Second)
	if log := conn.log.String(); !strings.Contains(log, "api_server="+eksKube.URL) {
		t.Fatalf("the connector does not use the endpoint from DescribeCluster:\n%s", log)
	}
	kc := writeKubeconfig(t, gs, cluster, callerToken(t, []string{cluster}, allRules...))
	if got := kubectl(t, kc, "get", "namespace", "default", "-o", "name"); strings.TrimSpace(got) != "namespace/default" {
		t.Fatalf("kubectl get namespace default: %q", got)
	}
	// The API server saw the AWS identity, authenticated by the webhook, not a static token.
	wait.Until(t, 10*time.Second, "an audit event of the AWS identity", func() bool {
		events, _ := eksKube.AuditEvents()
		for _, e := range events {
			if e.User == awsfake.TestIdentity.ARN && e.RequestURI == "/api/v1/namespaces/default" && e.Code == 200 {
				return true
			}
		}
		return false
	})
}

// lineWith returns the first line of s containing sub.
func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
