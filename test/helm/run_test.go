package helm

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/wire"
)

// runTimeout bounds each wait of TestRenderedEnvironmentRuns: for the process to be up, to stop, to verify.
const runTimeout = 60 * time.Second

// TestRenderedEnvironmentRuns runs warren as a rendered Deployment's container would: its args, its environment and
// the files of its volumes (the chart's Secrets and ConfigMaps, and the test's stand-ins for the Secrets a customer
// makes, each file with the mode the volume gives it), all under a temporary root. The binary must start (so it
// accepts every value the chart set: the audit signing key, the stripped headers), write its audit log with signed
// checkpoints, and shut down cleanly on SIGTERM, after which `warren audit verify --key` attests the whole log.
func TestRenderedEnvironmentRuns(t *testing.T) {
	bin := buildWarren(t)
	keys := t.TempDir()
	warren(t, bin, "keygen", "--out", filepath.Join(keys, "issuer"))
	warren(t, bin, "keygen", "--out", filepath.Join(keys, "audit"))
	token := warren(t, bin, "token", "connector", "--key", filepath.Join(keys, "issuer", "signing.key"), "--cluster", "prod")
	auditKey := readFile(t, filepath.Join(keys, "audit", "signing.key"))
	// The gateway case's key is in its values; verify is given that key's public half, not one derived from the file
	// the rendered environment names (which would check nothing).
	var gatewayValues struct{ AuditSigningKey struct{ Value string } }
	if err := yaml.Unmarshal([]byte(readFile(t, caseByName(t, "gateway-audit").valuesFile())), &gatewayValues); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(keys, "gateway-audit.key"), gatewayValues.AuditSigningKey.Value, 0o600)

	for _, tc := range []struct {
		caseName string
		// existing are the Secrets the case names but the chart does not make: name -> key -> content.
		existing map[string]map[string]string
		// ready is the log message of a process that has started serving.
		ready string
		// key is the private key the audit log must be signed with.
		key string
	}{
		{"connector-audit", map[string]map[string]string{
			"warren-connector-token":     {"token": token},
			"warren-connector-audit-key": {"audit.key": auditKey},
		}, "connector starting", filepath.Join(keys, "audit", "signing.key")},
		{"gateway-audit", nil, "gateway listening", filepath.Join(keys, "gateway-audit.key")},
	} {
		t.Run(tc.caseName, func(t *testing.T) {
			c := caseByName(t, tc.caseName)
			objs := decode(t, render(t, c, c.chart, "warren"))
			root := t.TempDir()
			ctr := materialize(t, objs, root, tc.existing)
			if ctr.env["WARREN_AUDIT_SIGNING_KEY"] == "" {
				t.Fatalf("the %s Deployment sets no WARREN_AUDIT_SIGNING_KEY", c.name)
			}
			keyFile := ctr.env["WARREN_AUDIT_SIGNING_KEY"]
			if fi, err := os.Stat(keyFile); err != nil {
				t.Fatal(err)
			} else if fi.Mode().Perm() != 0o440 {
				t.Fatalf("audit signing key %s has mode %v, want the volume's 0440", keyFile, fi.Mode().Perm())
			}

			// What a test process cannot share with a pod: the pod has a network namespace of its own (fixed ports
			// could collide here), and the connector's in-cluster credentials come from the kubelet.
			listen := map[string]string{"warren-gateway": "WARREN_LISTEN", "warren-connector": "WARREN_HEALTH_LISTEN"}[c.chart]
			if _, ok := ctr.env[listen]; !ok {
				t.Fatalf("the %s Deployment sets no %s", c.name, listen)
			}
			ctr.env[listen] = "127.0.0.1:0"
			if c.chart == "warren-connector" {
				if _, ok := ctr.env["WARREN_KUBECONFIG"]; ok {
					t.Fatal("the chart sets WARREN_KUBECONFIG; the test's stand-in for in-cluster credentials would hide it")
				}
				ctr.env["WARREN_KUBECONFIG"] = filepath.Join(root, "kubeconfig")
				writeFile(t, ctr.env["WARREN_KUBECONFIG"], kubeconfigYAML, 0o600)
			}

			// Standard output is the audit log (the gateway's default, the connector's auditLog /dev/stdout), as in
			// a pod whose log is collected; the logs go to standard error.
			auditFile, logFile := filepath.Join(root, "audit.log"), filepath.Join(root, "stderr.log")
			p := start(t, bin, ctr, auditFile, logFile)
			started := p.waitFor(t, func() bool {
				return strings.Contains(readFile(t, logFile), `"msg":"`+tc.ready+`"`) &&
					strings.Contains(readFile(t, auditFile), `"reason":"start"`)
			})
			if !started {
				t.Fatalf("warren %s exited before it was up:\n%s", ctr.args[0], readFile(t, logFile))
			}
			if c.chart == "warren-gateway" {
				// A refused request: a record between the checkpoints.
				status := getUnauthenticated(t, gatewayAddr(t, readFile(t, logFile)))
				if status != http.StatusUnauthorized {
					t.Errorf("GET without a token: %d, want 401", status)
				}
				if !p.waitFor(t, func() bool { return strings.Contains(readFile(t, auditFile), `"status":401`) }) {
					t.Fatalf("the gateway exited before it audited the request:\n%s", readFile(t, logFile))
				}
			}
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := p.wait(t); err != nil {
				t.Fatalf("warren %s after SIGTERM: %v\n%s", ctr.args[0], err, readFile(t, logFile))
			}
			logs := readFile(t, logFile)
			if strings.Contains(logs, "warren: ignoring") {
				t.Errorf("warren ignored variables the chart set:\n%s", logs)
			}

			pub := filepath.Join(root, "signing.pub")
			writeFile(t, pub, publicKeyPEM(t, tc.key), 0o644)
			out, err := exec.Command(bin, "audit", "verify", auditFile, "--key", pub).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "chain intact and attested to a clean shutdown") {
				t.Fatalf("warren audit verify --key: %v\n%s\naudit log:\n%s", err, out, readFile(t, auditFile))
			}
			t.Logf("warren audit verify: %s", strings.TrimSpace(string(out)))
		})
	}
}

// container is what a rendered Deployment's first container runs: its args and environment, with the paths of its
// volume mounts moved under the test's root.
type container struct {
	args []string
	env  map[string]string
}

// materialize writes the files of every volume the container mounts under root (root + mountPath) and returns the
// container's args and environment. Secrets come from the rendered manifests or existing, ConfigMaps from the
// rendered manifests; each file gets its item's mode, else the volume's defaultMode, else Kubernetes' 0644.
func materialize(t *testing.T, objs []object, root string, existing map[string]map[string]string) container {
	t.Helper()
	data := map[string]map[string]string{} // "Secret/NAME" or "ConfigMap/NAME" -> key -> content
	for name, d := range existing {
		data["Secret/"+name] = d
	}
	for _, o := range objs {
		switch o.kind() {
		case "Secret":
			d := map[string]string{}
			for k, v := range dig(o, "data").(map[string]any) {
				b, err := base64.StdEncoding.DecodeString(v.(string))
				if err != nil {
					t.Fatalf("Secret %s key %s: %v", o.name(), k, err)
				}
				d[k] = string(b)
			}
			data["Secret/"+o.name()] = d
		case "ConfigMap":
			d := map[string]string{}
			for k, v := range dig(o, "data").(map[string]any) {
				d[k] = v.(string)
			}
			data["ConfigMap/"+o.name()] = d
		}
	}

	pod := dig(only(t, objs, "Deployment"), "spec", "template", "spec")
	volumes := map[string]any{}
	for _, v := range items(dig(pod, "volumes")) {
		volumes[dig(v, "name").(string)] = v
	}
	ctr := items(dig(pod, "containers"))[0]
	var mounts []string
	for _, m := range items(dig(ctr, "volumeMounts")) {
		path := dig(m, "mountPath").(string)
		mounts = append(mounts, path)
		v := volumes[dig(m, "name").(string)]
		dir := filepath.Join(root, path)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var source map[string]string
		var spec any
		switch {
		case dig(v, "secret") != nil:
			spec = dig(v, "secret")
			source = data["Secret/"+dig(spec, "secretName").(string)]
		case dig(v, "configMap") != nil:
			spec = dig(v, "configMap")
			source = data["ConfigMap/"+dig(spec, "name").(string)]
		case dig(v, "emptyDir") != nil:
			continue
		default:
			t.Fatalf("volume %v: the test materializes only secret, configMap and emptyDir volumes", v)
		}
		if source == nil {
			t.Fatalf("volume %v: its Secret or ConfigMap is neither rendered nor given by the test", v)
		}
		mode := fs.FileMode(0o644)
		if m, ok := dig(spec, "defaultMode").(float64); ok {
			mode = fs.FileMode(m)
		}
		keyPaths := map[string]string{}
		itemModes := map[string]fs.FileMode{}
		if its := items(dig(spec, "items")); its != nil {
			for _, it := range its {
				k := dig(it, "key").(string)
				keyPaths[k] = dig(it, "path").(string)
				if m, ok := dig(it, "mode").(float64); ok {
					itemModes[k] = fs.FileMode(m)
				}
			}
		} else {
			for k := range source {
				keyPaths[k] = k
			}
		}
		for k, p := range keyPaths {
			content, ok := source[k]
			if !ok {
				t.Fatalf("volume %v: no key %q in its Secret or ConfigMap", v, k)
			}
			m, ok := itemModes[k]
			if !ok {
				m = mode
			}
			writeFile(t, filepath.Join(dir, p), content, m)
		}
	}

	c := container{args: list(dig(ctr, "args")), env: map[string]string{}}
	for _, e := range items(dig(ctr, "env")) {
		name := dig(e, "name").(string)
		switch {
		case dig(e, "value") != nil:
			c.env[name] = underRoot(root, mounts, dig(e, "value").(string))
		case dig(e, "valueFrom", "fieldRef", "fieldPath") == "metadata.name":
			c.env[name] = "warren-test-pod"
		case dig(e, "valueFrom", "resourceFieldRef") != nil:
			// GOMEMLIMIT from the container's limit: the Go runtime's, nothing of warren's.
		case dig(e, "valueFrom", "secretKeyRef") != nil:
			ref := dig(e, "valueFrom", "secretKeyRef")
			v, ok := data["Secret/"+dig(ref, "name").(string)][dig(ref, "key").(string)]
			if !ok {
				t.Fatalf("env %s: its Secret key is neither rendered nor given by the test", name)
			}
			c.env[name] = v
		default:
			t.Fatalf("env %s: the test does not know how to set %v", name, e)
		}
	}
	return c
}

// underRoot moves each comma-separated path of value that lies in one of the mounts under root.
func underRoot(root string, mounts []string, value string) string {
	parts := strings.Split(value, ",")
	for i, p := range parts {
		for _, m := range mounts {
			if p == m || strings.HasPrefix(p, m+"/") {
				parts[i] = root + p
				break
			}
		}
	}
	return strings.Join(parts, ",")
}

// process is a started warren; exited is closed when it has exited, with err its Wait's result.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// start runs bin as ctr, with only ctr's environment, standard output to stdout and standard error to stderr. The
// process is killed at the end of the test if it is still running.
func start(t *testing.T, bin string, ctr container, stdout, stderr string) *process {
	t.Helper()
	out, err := os.Create(stdout)
	if err != nil {
		t.Fatal(err)
	}
	errOut, err := os.Create(stderr)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, ctr.args...)
	cmd.Stdout, cmd.Stderr = out, errOut
	for k, v := range ctr.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	slices.Sort(cmd.Env)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		errOut.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// waitFor polls cond until it holds (true) or the process exits (false); past runTimeout it fails the test.
func (p *process) waitFor(t *testing.T, cond func() bool) bool {
	t.Helper()
	deadline := time.After(runTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-p.exited:
			return cond()
		case <-deadline:
			t.Fatalf("still waiting after %v", runTimeout)
		case <-tick.C:
		}
	}
	return true
}

// wait waits for the process to exit and returns its Wait's result; past runTimeout it fails the test.
func (p *process) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(runTimeout):
		t.Fatalf("warren did not exit within %v", runTimeout)
		return nil
	}
}

// gatewayAddr is the address the gateway's JSON log says it listens on.
func gatewayAddr(t *testing.T, logs string) string {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		var rec struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "gateway listening" {
			return rec.Addr
		}
	}
	t.Fatalf("no \"gateway listening\" line in the gateway's logs:\n%s", logs)
	return ""
}

// getUnauthenticated asks the gateway at addr for a cluster's API without a token and returns the status.
func getUnauthenticated(t *testing.T, addr string) int {
	t.Helper()
	// The test's certificate names gateway.example.com; what is checked here is the audit record, not TLS.
	client := &http.Client{Timeout: runTimeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + addr + "/clusters/prod/api")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// publicKeyPEM is the PKIX PEM public key of the signing key in file, as `warren keygen` writes signing.pub.
func publicKeyPEM(t *testing.T, file string) string {
	t.Helper()
	k, err := auth.LoadSigningKey(file)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(k.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// warren runs bin with args and returns its standard output, failing the test if it fails.
func warren(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		t.Fatalf("warren %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // the umask may have narrowed it
		t.Fatal(err)
	}
}

// kubeconfigYAML stands in for the connector's in-cluster credentials: an API server that is never reached (the
// connector calls it only for requests from its tunnel).
const kubeconfigYAML = `apiVersion: v1
kind: Config
clusters:
  - name: c
    cluster:
      server: https://127.0.0.1:1
contexts:
  - name: c
    context: {cluster: c, user: u}
current-context: c
users:
  - name: u
    user: {token: unused}
`

// TestStripHeadersSchemaMatchesTheConnector: the connector chart's schema accepts exactly the header patterns the
// connector does (wire.ValidHeaderPattern), so that a value the schema lets through never stops the connector at
// start, and one it refuses would have stopped it.
func TestStripHeadersSchemaMatchesTheConnector(t *testing.T) {
	var schema struct {
		Definitions struct {
			HeaderPatterns struct {
				Items struct{ Pattern string }
			}
		}
	}
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(chartsDir, "warren-connector", "values.schema.json"))), &schema); err != nil {
		t.Fatal(err)
	}
	pattern := schema.Definitions.HeaderPatterns.Items.Pattern
	if pattern == "" {
		t.Fatal("the connector chart's values.schema.json has no definitions.headerPatterns.items.pattern")
	}
	// helm's JSON Schema validator compiles patterns with Go's regexp, as here.
	re := regexp.MustCompile(pattern)
	candidates := []string{"", "*", "**", "X-Auth-User", "X-Auth-Extra-*", "X-Auth-Extra-**", "X-*-User", "*X", "x-legacy-user",
		"X-Auth User", " X", "X ", "X,Y", "X;Y", "X:", "X\n", "\nX", "X\r\n", "Ä", "X-Ä", "X\x00", "!#$%&'+-.^_`|~09azAZ*"}
	for b := 0; b < 256; b++ {
		candidates = append(candidates, string([]byte{byte(b)}), "X"+string([]byte{byte(b)}), string([]byte{byte(b)})+"*")
	}
	accepted := 0
	for _, c := range candidates {
		schemaOK, binaryOK := re.MatchString(c), wire.ValidHeaderPattern(c)
		if schemaOK != binaryOK {
			t.Errorf("stripHeaders entry %q: the schema accepts it %v, the connector %v", c, schemaOK, binaryOK)
		}
		if binaryOK {
			accepted++
		}
	}
	if accepted < 100 || accepted > len(candidates)-100 {
		t.Fatalf("%d of %d candidates accepted: the candidates do not test both sides", accepted, len(candidates))
	}
}
