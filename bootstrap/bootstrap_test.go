package bootstrap

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/warren-dev/warren/internal/download"
	"github.com/warren-dev/warren/internal/testenv/awsfake"
)

const testToken = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJjb25uZWN0b3IifQ.c2lnbmF0dXJlLXRoYXQtbXVzdC1uZXZlci1sZWFr"

// testGatewayKeys is a gateway's public key as the connector pins it.
const testGatewayKeys = `-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAvbuLOUAVTPDUUGLWacTKRePJPXbgZRSwpr1EM5y94rc=
-----END PUBLIC KEY-----
`

func validConfig() ScriptConfig {
	return ScriptConfig{Gateway: "https://gateway.example.com:8443", Token: testToken, Kubeconfig: "/etc/warren/kubeconfig", GatewayKeysPEM: []byte(testGatewayKeys)}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*ScriptConfig)
		want string // "" for valid
	}{
		{"valid", func(*ScriptConfig) {}, ""},
		{"eks", func(c *ScriptConfig) { c.Kubeconfig, c.EKSCluster, c.EKSRegion = "", "prod", "eu-west-1" }, ""},
		{"parameter", func(c *ScriptConfig) { c.Token, c.TokenParameter = "", "/warren/prod/token" }, ""},
		{"no gateway", func(c *ScriptConfig) { c.Gateway = "" }, "gateway URL is required"},
		{"http gateway", func(c *ScriptConfig) { c.Gateway = "http://x" }, "must start with https://"},
		{"injection in gateway", func(c *ScriptConfig) { c.Gateway = "https://x/$(reboot)" }, "cannot be passed safely"},
		{"no token", func(c *ScriptConfig) { c.Token = "" }, "exactly one of a connector token"},
		{"both tokens", func(c *ScriptConfig) { c.TokenParameter = "p" }, "exactly one of a connector token"},
		{"token with quote", func(c *ScriptConfig) { c.Token = "a.b'c.d" }, "not a JWT"},
		{"token heredoc end", func(c *ScriptConfig) { c.Token = "WARREN_EOF" }, "not a JWT"},
		{"neither mode", func(c *ScriptConfig) { c.Kubeconfig = "" }, "exactly one of a kubeconfig path"},
		{"both modes", func(c *ScriptConfig) { c.EKSCluster = "prod" }, "exactly one of a kubeconfig path"},
		{"relative kubeconfig", func(c *ScriptConfig) { c.Kubeconfig = "kc" }, "must be absolute"},
		{"kubeconfig with blank", func(c *ScriptConfig) { c.Kubeconfig = "/a b" }, "cannot be passed safely"},
		{"bad pin", func(c *ScriptConfig) { c.Pins = []string{"md5:x"} }, "not sha256:BASE64"},
		{"arg not a flag", func(c *ScriptConfig) { c.ConnectorArgs = []string{"rm"} }, "must be a flag"},
		{"arg with $", func(c *ScriptConfig) { c.ConnectorArgs = []string{"--name=$HOME"} }, "must be a flag"},
		{"arg with %", func(c *ScriptConfig) { c.ConnectorArgs = []string{"--name=%h"} }, "must be a flag"},
		{"bad user", func(c *ScriptConfig) { c.ServiceUser = "Robert'); DROP" }, "not a valid user name"},
		{"bad digest", func(c *ScriptConfig) { c.Digests = map[string]string{"linux-amd64": "abc"} }, "not 64 hex digits"},
		{"bad CA", func(c *ScriptConfig) { c.CAPEM = []byte("hello") }, "not a PEM certificate"},
		{"no gateway keys", func(c *ScriptConfig) { c.GatewayKeysPEM = nil }, `the gateway's public keys are required, as PEM "PUBLIC KEY" blocks`},
		{"a private key as gateway key", func(c *ScriptConfig) {
			c.GatewayKeysPEM = []byte(testGatewayKeys + "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n")
		}, `the gateway's public keys are required, as PEM "PUBLIC KEY" blocks`},
		{"gateway keys ending the heredoc", func(c *ScriptConfig) { c.GatewayKeysPEM = []byte(testGatewayKeys + "WARREN_EOF\nreboot\n") },
			`the gateway's public keys are required`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := validConfig()
			c.mod(&cfg)
			_, err := Script(cfg)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
		})
	}
}

// Every variant of the script is valid shell, and the token is only ever written to its file.
func TestScriptShape(t *testing.T) {
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not really a certificate")})
	variants := map[string]func(*ScriptConfig){
		"kubeconfig": func(*ScriptConfig) {},
		"eks":        func(c *ScriptConfig) { c.Kubeconfig, c.EKSCluster = "", "prod" },
		"everything": func(c *ScriptConfig) {
			c.CAPEM, c.Pins, c.Proxy, c.ServiceUser = ca, []string{"sha256:AAAA+/=="}, "http://u:p@proxy:3128", "warren"
			c.ConnectorArgs = []string{"--policy=/etc/warren/policy.yaml", "--impersonate"}
			c.Digests = map[string]string{"linux-amd64": strings.Repeat("a", 64)}
			c.ConnectWait = 30 * time.Second
		},
		"pins only":      func(c *ScriptConfig) { c.Pins = []string{"sha256:AAAA"} },
		"token in param": func(c *ScriptConfig) { c.Token, c.TokenParameter = "", "/warren/token" },
	}
	for name, mod := range variants {
		t.Run(name, func(t *testing.T) {
			cfg := validConfig()
			mod(&cfg)
			script, err := Script(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("sh", "-n", "-c", script).CombinedOutput(); err != nil {
				t.Fatalf("sh -n: %v: %s\n%s", err, out, script)
			}
			if strings.Contains(script, "set -x") && !strings.Contains(script, "do not add `set -x`") {
				t.Fatal("script traces itself")
			}
			lines := strings.Split(script, "\n")
			n := 0
			for i, l := range lines {
				if strings.Contains(l, testToken) {
					n++
					if l != testToken || !strings.HasPrefix(lines[i-1], `cat >"$etc/connector.token.new" <<'`) {
						t.Fatalf("token on line %d outside its heredoc: %q", i, l)
					}
				}
			}
			if want := map[bool]int{true: 1, false: 0}[cfg.Token != ""]; n != want {
				t.Fatalf("token appears %d times, want %d", n, want)
			}
		})
	}
}

// fakeBinary is a stand-in for the warren binary: `version` prints one, and `connector` logs as the connector does
// once connected (or, with mode "silent", never connects; with "crash", exits at once), then stays up.
func fakeBinary(mode string) []byte {
	return []byte(`#!/bin/sh
case "$1" in
version) echo v-test ;;
connector)
  echo "args: $*"
  echo "env: WARREN_GATEWAY=$WARREN_GATEWAY WARREN_TOKEN_FILE=$WARREN_TOKEN_FILE WARREN_KUBECONFIG=${WARREN_KUBECONFIG:-} WARREN_NAME=$WARREN_NAME WARREN_GATEWAY_KEYS=$WARREN_GATEWAY_KEYS"
  case "` + mode + `" in
  crash) echo 'level=ERROR msg="cannot load --kubeconfig"'; exit 1 ;;
  silent) echo 'level=WARN msg="cannot reach the gateway"' ;;
  *) echo 'level=INFO msg="connected to the gateway" gateway=wss://x/connect' ;;
  esac
  exec sleep 300 ;;
esac
`)
}

type env struct {
	fake    *awsfake.Server
	gateway *httptest.Server
	dir     string // the gateway's download directory
	caPEM   []byte
	client  *ssm.Client
	kc      string
}

// newEnv starts a download server (as the gateway's /download/) serving bin for both platforms, and the fake SSM
// with instances i-1 and i-2 rooted in temporary directories.
func newEnv(t *testing.T, bin []byte, wrap func(http.Handler) http.Handler) *env {
	return newEnvPath(t, bin, wrap, nil)
}

// newEnvPath is newEnv with path first in the instances' PATH (their own tools).
func newEnvPath(t *testing.T, bin []byte, wrap func(http.Handler) http.Handler, path []string) *env {
	t.Helper()
	dir := t.TempDir()
	for _, p := range download.Platforms {
		if err := os.WriteFile(filepath.Join(dir, download.BinaryName(p)), bin, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var h http.Handler = download.New(dir, "")
	if wrap != nil {
		h = wrap(h)
	}
	gw := httptest.NewTLSServer(h)
	t.Cleanup(gw.Close)
	var instances []awsfake.Instance
	for _, id := range []string{"i-1", "i-2"} {
		root := t.TempDir()
		instances = append(instances, awsfake.Instance{ID: id, Root: root, Path: path,
			Env: []string{"WARREN_PREFIX=" + root, "WARREN_SERVICE_USER="}})
	}
	fake, err := awsfake.New(awsfake.Config{Instances: instances, InvocationDelay: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\n"), 0o600)
	return &env{
		fake:    fake,
		gateway: gw,
		dir:     dir,
		caPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: gw.Certificate().Raw}),
		client: ssm.NewFromConfig(aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(fake.URL),
			Credentials: credentials.NewStaticCredentialsProvider(awsfake.TestIdentity.AccessKeyID, awsfake.TestIdentity.SecretAccessKey, "")}),
		kc: kc,
	}
}

func (e *env) config() ScriptConfig {
	return ScriptConfig{Gateway: e.gateway.URL, Token: testToken, CAPEM: e.caPEM, Kubeconfig: e.kc, GatewayKeysPEM: []byte(testGatewayKeys), ConnectWait: 5 * time.Second}
}

func (e *env) run(t *testing.T, cfg ScriptConfig, timeout time.Duration) (string, []Result) {
	t.Helper()
	script, err := Script(cfg)
	if err != nil {
		t.Fatal(err)
	}
	id, results, err := Run(context.Background(), RunConfig{Client: e.client, InstanceIDs: []string{"i-1", "i-2"},
		Script: script, Comment: "warren bootstrap test", Timeout: timeout, PollInitial: 50 * time.Millisecond, PollMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	WriteSummary(&buf, id, results)
	if strings.Contains(buf.String(), testToken) {
		t.Fatal("the summary shows the token")
	}
	for _, r := range results {
		if strings.Contains(r.Stdout+r.Stderr, testToken) {
			t.Fatalf("%s: the command output shows the token", r.InstanceID)
		}
	}
	t.Logf("summary:\n%s", buf.String())
	return buf.String(), results
}

func TestBootstrapInstalls(t *testing.T) {
	e := newEnv(t, fakeBinary("ok"), nil)
	cfg := e.config()
	cfg.ConnectorArgs = []string{"--log-level=debug"}
	summary, results := e.run(t, cfg, time.Minute)
	for _, r := range results {
		if !r.OK() || !strings.Contains(r.Stdout, "is running and connected to "+e.gateway.URL) {
			t.Fatalf("%s: %s\nstdout:\n%s\nstderr:\n%s", r.InstanceID, r.Status, r.Stdout, r.Stderr)
		}
	}
	if !strings.Contains(summary, "2 of 2 instances succeeded") {
		t.Fatalf("summary:\n%s", summary)
	}
	root := e.fake.InstanceRoot("i-1")
	fi, err := os.Stat(filepath.Join(root, "etc/warren/connector.token"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/warren/connector.token")); strings.TrimSpace(string(b)) != testToken {
		t.Fatalf("token file holds %q", b)
	}
	// The connector's key lives in a directory of its own, so that a restarted service keeps its identity.
	if fi, err := os.Stat(filepath.Join(root, "var/lib/warren-connector")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory: %v %v", fi, err)
	}
	if env, _ := os.ReadFile(filepath.Join(root, "etc/warren/connector.env")); !strings.Contains(string(env), "WARREN_STATE_DIR="+root+"/var/lib/warren-connector\n") {
		t.Fatalf("connector.env lacks the state directory:\n%s", env)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/warren/gateway-keys.pem")); string(b) != testGatewayKeys {
		t.Fatalf("gateway keys file holds %q", b)
	}
	unit, _ := os.ReadFile(filepath.Join(root, "etc/systemd/system/warren-connector.service"))
	for _, want := range []string{"ExecStart=" + root + "/usr/local/bin/warren connector --log-level=debug", "Restart=always",
		"EnvironmentFile=" + root + "/etc/warren/connector.env", "NoNewPrivileges=yes"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	log := e.fake.ServiceLog("i-1", ServiceName)
	for _, want := range []string{"args: connector --log-level=debug", "WARREN_GATEWAY=" + e.gateway.URL,
		"WARREN_TOKEN_FILE=" + root + "/etc/warren/connector.token", "WARREN_KUBECONFIG=" + e.kc, "WARREN_NAME=i-1",
		"WARREN_GATEWAY_KEYS=" + root + "/etc/warren/gateway-keys.pem"} {
		if !strings.Contains(log, want) {
			t.Errorf("service log lacks %q:\n%s", want, log)
		}
	}

	// Run again: the running service is restarted with the new binary, not left as it was.
	_, results = e.run(t, cfg, time.Minute)
	if !results[0].OK() || !strings.Contains(results[0].Stdout, "restarted warren-connector") {
		t.Fatalf("second run: %+v", results[0])
	}
}

func TestBootstrapFailures(t *testing.T) {
	binary := fakeBinary("ok")
	sum := sha256.Sum256(binary)
	lying := func(h http.Handler) http.Handler { // publishes the digest of something else
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, ".sha256") {
				w.Write([]byte(strings.Repeat("0", 64) + "  x\n"))
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	cases := []struct {
		name   string
		bin    []byte
		wrap   func(http.Handler) http.Handler
		mod    func(*env, *ScriptConfig)
		want   string
		stderr string
	}{
		{"gateway publishes another digest", binary, lying, nil,
			"exit 1: SHA-256 mismatch for warren-linux-amd64: the download has " + hex.EncodeToString(sum[:]) + ", the gateway publishes 0000", ""},
		{"operator expects another digest", binary, nil, func(_ *env, c *ScriptConfig) {
			c.Digests = map[string]string{"linux-amd64": strings.Repeat("1", 64), "linux-arm64": strings.Repeat("1", 64)}
		}, "warren bootstrap expected 1111", ""},
		{"gateway unreachable", binary, nil, func(_ *env, c *ScriptConfig) { c.Gateway = "https://127.0.0.1:1" },
			"cannot download https://127.0.0.1:1/download/warren-linux-", "curl: (7)"},
		{"wrong CA", binary, nil, func(_ *env, c *ScriptConfig) {
			c.CAPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})
		},
			"cannot download", "curl: "},
		{"connector never connects", fakeBinary("silent"), nil, func(_ *env, c *ScriptConfig) { c.ConnectWait = time.Second },
			"runs but has not connected to", `msg="cannot reach the gateway"`},
		{"connector exits", fakeBinary("crash"), nil, nil, "warren-connector is not running; its last log lines precede", `msg="cannot load --kubeconfig"`},
		{"kubeconfig missing", binary, nil, func(_ *env, c *ScriptConfig) { c.Kubeconfig = "/nonexistent/kubeconfig" },
			"the kubeconfig /nonexistent/kubeconfig is missing on this instance", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, c.bin, c.wrap)
			cfg := e.config()
			if c.mod != nil {
				c.mod(e, &cfg)
			}
			summary, results := e.run(t, cfg, time.Minute)
			for _, r := range results {
				if r.OK() || r.Status != "Failed" || r.ResponseCode != 1 {
					t.Fatalf("%s: %s %d", r.InstanceID, r.Status, r.ResponseCode)
				}
			}
			if !strings.Contains(summary, c.want) || !strings.Contains(summary, "2 of 2 instances failed: i-1, i-2") {
				t.Fatalf("summary lacks %q:\n%s", c.want, summary)
			}
			if c.stderr != "" && !strings.Contains(summary, c.stderr) {
				t.Fatalf("summary lacks stderr %q:\n%s", c.stderr, summary)
			}
		})
	}
}

// When the wait ends first, the instances still running are reported as such, with how to look later.
func TestRunTimeout(t *testing.T) {
	e := newEnv(t, fakeBinary("ok"), nil)
	id, results, err := Run(context.Background(), RunConfig{Client: e.client, InstanceIDs: []string{"i-1"},
		Script: "sleep 20\n", Timeout: time.Second, PollInitial: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r := results[0]
	if r.OK() || r.Err == nil || !strings.Contains(r.Err.Error(), "still InProgress after --timeout 1s") ||
		!strings.Contains(r.Err.Error(), "aws ssm get-command-invocation --command-id "+id+" --instance-id i-1") {
		t.Fatalf("%+v", r)
	}
}

func TestSendErrors(t *testing.T) {
	e := newEnv(t, fakeBinary("ok"), nil)
	_, _, err := Run(context.Background(), RunConfig{Client: e.client, InstanceIDs: []string{"i-nope"}, Script: "true\n"})
	if err == nil || !strings.Contains(err.Error(), "InvalidInstanceId") || !strings.Contains(err.Error(), "SSM agent online") {
		t.Fatalf("%v", err)
	}
}

func TestFetchDigests(t *testing.T) {
	e := newEnv(t, fakeBinary("ok"), nil)
	sum := sha256.Sum256(fakeBinary("ok"))
	d, err := FetchDigests(context.Background(), e.gateway.Client(), e.gateway.URL)
	if err != nil || d["linux-amd64"] != hex.EncodeToString(sum[:]) || d["linux-arm64"] != d["linux-amd64"] {
		t.Fatalf("%v %v", d, err)
	}
	empty := httptest.NewTLSServer(download.New("", ""))
	defer empty.Close()
	if _, err := FetchDigests(context.Background(), empty.Client(), empty.URL); err == nil || !strings.Contains(err.Error(), "serves no connector binary") {
		t.Fatalf("%v", err)
	}
	if _, err := FetchDigests(context.Background(), http.DefaultClient, e.gateway.URL); err == nil || !strings.Contains(err.Error(), "--no-preflight") {
		t.Fatalf("unverified gateway: %v", err)
	}
}

func TestParseElapsed(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"PT0.077S": 77 * time.Millisecond, "PT2M3.5S": 2*time.Minute + 3500*time.Millisecond, "PT1H": time.Hour,
	} {
		if got, ok := parseElapsed(in); !ok || got != want {
			t.Errorf("%s: %v %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "PT", "1s", "PTxS"} {
		if _, ok := parseElapsed(in); ok {
			t.Errorf("%q parsed", in)
		}
	}
}

func TestSummary(t *testing.T) {
	var buf bytes.Buffer
	WriteSummary(&buf, "cmd-1", []Result{
		{InstanceID: "i-1", Status: "Success", Details: "Success", Duration: 2100 * time.Millisecond,
			Stdout: "warren bootstrap: installed\nwarren bootstrap: warren-connector is running and connected to https://gw\n"},
		{InstanceID: "i-22", Status: "Failed", Details: "Failed", ResponseCode: 1, Duration: 900 * time.Millisecond,
			Stderr: "curl: (7) Failed to connect\nwarren bootstrap: FAILED: cannot download https://gw/download/warren-linux-amd64\nfailed to run commands: exit status 1\n"},
		{InstanceID: "i-3", Status: "TimedOut", Details: "ExecutionTimedOut", ResponseCode: -1, Duration: time.Minute},
	})
	want := `INSTANCE  STATUS                        DURATION  RESULT
i-1       Success                       2.1s      warren-connector is running and connected to https://gw
i-22      Failed                        900ms     exit 1: cannot download https://gw/download/warren-linux-amd64
i-3       TimedOut (ExecutionTimedOut)  1m0s      the script ran out of time (ExecutionTimedOut)

i-22 stderr (last lines):
  | curl: (7) Failed to connect
  | warren bootstrap: FAILED: cannot download https://gw/download/warren-linux-amd64
  | failed to run commands: exit status 1

2 of 3 instances failed: i-22, i-3 (SSM command cmd-1; full output: aws ssm get-command-invocation --command-id cmd-1 --instance-id ID)
`
	if buf.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
}
