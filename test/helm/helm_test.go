// Package helm tests the Helm charts in deploy/helm with the real helm binary and a real kube-apiserver: helm lint,
// helm template against golden files, the connector's default RBAC, values.schema.json, and the rendered manifests
// applied with kubectl --dry-run=server (and their pods admitted under Pod Security "restricted").
//
// helm comes from scripts/helm-bin.sh (see helmPath); a missing helm fails the tests, never skips them.
// go test ./test/helm -update rewrites the golden files in testdata.
package helm

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/warren-dev/warren/acquire"
	"github.com/warren-dev/warren/auth"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata from the current charts")

// HelmVersion is the helm release that scripts/helm-bin.sh installs and that the cache directory is named after.
const HelmVersion = "v3.22.0"

// EnvHelm names the environment variable that points at a helm binary, overriding the cache.
const EnvHelm = "WARREN_HELM"

// chartsDir holds the charts, relative to this package's directory (where go test runs).
const chartsDir = "../../deploy/helm"

// renderCase is a values file testdata/NAME.values.yaml for chart, rendered to testdata/NAME.golden.yaml.
type renderCase struct {
	name  string
	chart string
}

var cases = []renderCase{
	{"connector-minimal", "warren-connector"},
	{"connector-full", "warren-connector"},
	{"connector-existing-secret", "warren-connector"},
	{"connector-acquisition", "warren-connector"},
	{"connector-audit", "warren-connector"},
	{"gateway-minimal", "warren-gateway"},
	{"gateway-ingress", "warren-gateway"},
	{"gateway-audit", "warren-gateway"},
}

func (c renderCase) valuesFile() string { return filepath.Join("testdata", c.name+".values.yaml") }
func (c renderCase) goldenFile() string { return filepath.Join("testdata", c.name+".golden.yaml") }
func (c renderCase) chartDir() string   { return filepath.Join(chartsDir, c.chart) }

// helmPath returns the helm binary: $WARREN_HELM, else
// ${WARREN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/warren}/helm-VERSION/helm, where scripts/helm-bin.sh installs it.
func helmPath(t testing.TB) string {
	t.Helper()
	path := os.Getenv(EnvHelm)
	if path == "" {
		cache := os.Getenv("WARREN_CACHE")
		if cache == "" {
			userCache, err := os.UserCacheDir()
			if err != nil {
				t.Fatalf("cannot find the binary cache (set %s or WARREN_CACHE): %v", EnvHelm, err)
			}
			cache = filepath.Join(userCache, "warren")
		}
		path = filepath.Join(cache, "helm-"+HelmVersion, "helm")
	}
	fi, err := os.Stat(path)
	if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		t.Fatalf("helm %s not found at %s: run scripts/helm-bin.sh, or set %s to a helm binary", HelmVersion, path, EnvHelm)
	}
	return path
}

// helm runs the helm binary with its config, cache and data directories in a temporary directory, so that the
// user's repositories and plugins play no part. It returns stdout, and an error carrying stderr.
func helm(t testing.TB, args ...string) (string, error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.CommandContext(t.Context(), helmPath(t), args...)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// render runs helm template for c as release in namespace, plus extra arguments.
func render(t testing.TB, c renderCase, release, namespace string, extra ...string) string {
	t.Helper()
	args := append([]string{"template", release, c.chartDir(), "--namespace", namespace, "-f", c.valuesFile()}, extra...)
	out, err := helm(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// object is one rendered manifest, decoded.
type object map[string]any

func (o object) kind() string { s, _ := o["kind"].(string); return s }
func (o object) name() string { s, _ := dig(o, "metadata", "name").(string); return s }

// dig walks nested maps by keys; nil when a key is missing.
func dig(v any, keys ...string) any {
	if o, ok := v.(object); ok {
		v = map[string]any(o)
	}
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// decode splits a multi-document manifest and decodes each non-empty document.
func decode(t testing.TB, manifest string) []object {
	t.Helper()
	var objs []object
	for _, doc := range docSeparator.Split(manifest, -1) {
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("rendered manifest is not valid YAML: %v\n%s", err, doc)
		}
		if len(o) > 0 {
			objs = append(objs, o)
		}
	}
	return objs
}

// only returns the single object of kind in objs, failing the test unless there is exactly one.
func only(t testing.TB, objs []object, kind string) object {
	t.Helper()
	var found []object
	for _, o := range objs {
		if o.kind() == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s in the rendered manifests, got %d", kind, len(found))
	}
	return found[0]
}

func TestLint(t *testing.T) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := helm(t, "lint", "--strict", c.chartDir(), "-f", c.valuesFile())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, "0 chart(s) failed") {
				t.Fatalf("helm lint did not report success:\n%s", out)
			}
		})
	}
}

func TestGolden(t *testing.T) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := render(t, c, c.chart, "warren")
			if *update {
				if err := os.WriteFile(c.goldenFile(), []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(c.goldenFile())
			if err != nil {
				t.Fatalf("%v: run go test ./test/helm -run TestGolden -update to create it", err)
			}
			if got != string(want) {
				t.Errorf("helm template differs from %s (if the change is intended: go test ./test/helm -run TestGolden -update):\n%s",
					c.goldenFile(), lineDiff(string(want), got))
			}
		})
	}
}

// lineDiff shows the first lines that differ between want and got, with a little context.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	i := 0
	for i < len(w) && i < len(g) && w[i] == g[i] {
		i++
	}
	from := max(0, i-3)
	var b strings.Builder
	for j := from; j < i; j++ {
		fmt.Fprintf(&b, "  %4d   %s\n", j+1, w[j])
	}
	for j := i; j < min(len(w), i+8); j++ {
		fmt.Fprintf(&b, "  %4d - %s\n", j+1, w[j])
	}
	for j := i; j < min(len(g), i+8); j++ {
		fmt.Fprintf(&b, "  %4d + %s\n", j+1, g[j])
	}
	return b.String()
}

// grant is one (API group, resource, verb) that a ClusterRole allows, with resourceNames if it is limited to them.
type grant struct{ group, resource, verb, names string }

// grants flattens a rendered ClusterRole's rules. nonResourceURLs fail the test: the connector needs none.
func grants(t testing.TB, role object) map[grant]bool {
	t.Helper()
	rules, _ := role["rules"].([]any)
	out := map[grant]bool{}
	for _, r := range rules {
		if dig(r, "nonResourceURLs") != nil {
			t.Errorf("ClusterRole %s has nonResourceURLs: %v", role.name(), r)
		}
		var names []string
		for _, n := range list(dig(r, "resourceNames")) {
			names = append(names, n)
		}
		for _, g := range list(dig(r, "apiGroups")) {
			for _, res := range list(dig(r, "resources")) {
				for _, v := range list(dig(r, "verbs")) {
					out[grant{g, res, v, strings.Join(names, ",")}] = true
				}
			}
		}
	}
	return out
}

func list(v any) []string {
	var out []string
	items, _ := v.([]any)
	for _, x := range items {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

func set(gs ...grant) map[grant]bool {
	m := map[grant]bool{}
	for _, g := range gs {
		m[g] = true
	}
	return m
}

// forensic is exactly what the connector's service account may do by default: what warren acquire asks for
// (acquire.Preset), plus get on pods/exec, which RBAC wants for a WebSocket exec (warren's rules only create).
var forensic = []grant{
	{"", "pods", "get", ""},
	{"", "pods", "list", ""},
	{"", "pods/log", "get", ""},
	{"", "pods/exec", "get", ""},
	{"", "pods/exec", "create", ""},
	{"", "events", "list", ""},
	{"", "serviceaccounts", "get", ""},
	{"", "nodes", "get", ""},
	{"", "replicationcontrollers", "get", ""},
	{"rbac.authorization.k8s.io", "rolebindings", "list", ""},
	{"rbac.authorization.k8s.io", "clusterrolebindings", "list", ""},
	{"rbac.authorization.k8s.io", "roles", "get", ""},
	{"rbac.authorization.k8s.io", "clusterroles", "get", ""},
	{"apps", "replicasets", "get", ""},
	{"apps", "deployments", "get", ""},
	{"apps", "statefulsets", "get", ""},
	{"apps", "daemonsets", "get", ""},
	{"batch", "jobs", "get", ""},
	{"batch", "cronjobs", "get", ""},
}

// TestChartRBACCoversTheAcquirePreset: every rule of warren acquire's token preset is in the chart's default RBAC,
// so an acquisition with exactly that token meets no refusal from the cluster either.
func TestChartRBACCoversTheAcquirePreset(t *testing.T) {
	rules, err := acquire.Preset([]string{"payments"})
	if err != nil {
		t.Fatal(err)
	}
	have := set(forensic...)
	for _, pr := range rules {
		r, err := auth.ParseRule(pr.Rule)
		if err != nil {
			t.Fatal(err)
		}
		for _, res := range r.Resources {
			for _, v := range r.Verbs {
				if g := (grant{r.APIGroups[0], res, v, ""}); !have[g] {
					t.Errorf("the preset's %s needs %+v, which the chart's default RBAC lacks", pr.Rule, g)
				}
			}
		}
	}
}

func TestConnectorRBAC(t *testing.T) {
	for _, tc := range []struct {
		caseName string
		want     map[grant]bool
	}{
		{"connector-minimal", set(forensic...)},
		// Impersonation adds impersonate, limited to the configured names, and nothing else.
		{"connector-full", set(append(forensic[:len(forensic):len(forensic)],
			grant{"", "users", "impersonate", "alice,bob"},
			grant{"", "groups", "impersonate", "warren:forensics"},
			grant{"authentication.k8s.io", "userextras/warren-token-id", "impersonate", ""},
		)...)},
	} {
		t.Run(tc.caseName, func(t *testing.T) {
			c := caseByName(t, tc.caseName)
			objs := decode(t, render(t, c, c.chart, "warren"))
			role := only(t, objs, "ClusterRole")
			got := grants(t, role)
			for g := range got {
				if !tc.want[g] {
					t.Errorf("ClusterRole %s grants %+v, which it must not", role.name(), g)
				}
			}
			for g := range tc.want {
				if !got[g] {
					t.Errorf("ClusterRole %s lacks %+v", role.name(), g)
				}
			}
			for g := range got {
				if g.resource == "secrets" || g.group == "*" || g.resource == "*" || g.verb == "*" {
					t.Errorf("ClusterRole %s grants %+v: never secrets, never '*'", role.name(), g)
				}
			}

			// The binding gives that role, and only it, to the connector's service account.
			binding := only(t, objs, "ClusterRoleBinding")
			sa := only(t, objs, "ServiceAccount")
			if ref := dig(binding, "roleRef", "name"); ref != role.name() || dig(binding, "roleRef", "kind") != "ClusterRole" {
				t.Errorf("ClusterRoleBinding refers to %v, want ClusterRole %s", dig(binding, "roleRef"), role.name())
			}
			subjects, _ := binding["subjects"].([]any)
			if len(subjects) != 1 || dig(subjects[0], "kind") != "ServiceAccount" ||
				dig(subjects[0], "name") != sa.name() || dig(subjects[0], "namespace") != "warren" {
				t.Errorf("ClusterRoleBinding subjects = %v, want only ServiceAccount warren/%s", subjects, sa.name())
			}
			deploy := only(t, objs, "Deployment")
			if got := dig(deploy, "spec", "template", "spec", "serviceAccountName"); got != sa.name() {
				t.Errorf("Deployment runs as service account %v, want %s", got, sa.name())
			}
		})
	}
}

func caseByName(t testing.TB, name string) renderCase {
	for _, c := range cases {
		if c.name == name {
			return c
		}
	}
	t.Fatalf("no render case %q", name)
	return renderCase{}
}

// TestHardening checks what every rendered pod must have, whatever the values: the restricted pod security
// settings, resource requests and limits, and probes on the health endpoints.
func TestHardening(t *testing.T) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			deploy := only(t, decode(t, render(t, c, c.chart, "warren")), "Deployment")
			pod := dig(deploy, "spec", "template", "spec")
			for path, want := range map[string]any{
				"securityContext.runAsNonRoot":        true,
				"securityContext.runAsUser":           float64(65532),
				"securityContext.seccompProfile.type": "RuntimeDefault",
			} {
				if got := dig(pod, strings.Split(path, ".")...); got != want {
					t.Errorf("pod %s = %v, want %v", path, got, want)
				}
			}
			containers, _ := dig(pod, "containers").([]any)
			if len(containers) != 1 {
				t.Fatalf("want one container, got %d", len(containers))
			}
			ctr := containers[0]
			for path, want := range map[string]any{
				"securityContext.runAsNonRoot":             true,
				"securityContext.runAsUser":                float64(65532),
				"securityContext.readOnlyRootFilesystem":   true,
				"securityContext.allowPrivilegeEscalation": false,
				"securityContext.privileged":               false,
				"securityContext.seccompProfile.type":      "RuntimeDefault",
				"livenessProbe.httpGet.path":               "/healthz",
				"readinessProbe.httpGet.path":              "/readyz",
			} {
				if got := dig(ctr, strings.Split(path, ".")...); got != want {
					t.Errorf("container %s = %v, want %v", path, got, want)
				}
			}
			if drop := list(dig(ctr, "securityContext", "capabilities", "drop")); len(drop) != 1 || drop[0] != "ALL" {
				t.Errorf("container capabilities.drop = %v, want [ALL]", drop)
			}
			if dig(ctr, "securityContext", "capabilities", "add") != nil {
				t.Errorf("container adds capabilities: %v", dig(ctr, "securityContext", "capabilities", "add"))
			}
			for _, kind := range []string{"requests", "limits"} {
				if m, _ := dig(ctr, "resources", kind).(map[string]any); len(m) == 0 {
					t.Errorf("container has no resources.%s", kind)
				}
			}
		})
	}
}

// TestConnectorState: the connector keeps its key (its identity at the gateway) in a memory-backed emptyDir that
// WARREN_STATE_DIR names, the only writable place of a read-only root filesystem.
func TestConnectorState(t *testing.T) {
	for _, c := range cases {
		if c.chart != "warren-connector" {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			deploy := only(t, decode(t, render(t, c, c.chart, "warren")), "Deployment")
			pod := dig(deploy, "spec", "template", "spec")
			ctrs, _ := dig(pod, "containers").([]any)
			ctr := ctrs[0]
			env := map[string]any{}
			for _, e := range items(dig(ctr, "env")) {
				env[fmt.Sprint(dig(e, "name"))] = dig(e, "value")
			}
			if env["WARREN_STATE_DIR"] != "/var/lib/warren" {
				t.Fatalf("WARREN_STATE_DIR = %v", env["WARREN_STATE_DIR"])
			}
			mounted := false
			for _, m := range items(dig(ctr, "volumeMounts")) {
				if dig(m, "mountPath") == "/var/lib/warren" && dig(m, "name") == "state" && dig(m, "readOnly") == nil {
					mounted = true
				}
			}
			found := false
			for _, v := range items(dig(pod, "volumes")) {
				if dig(v, "name") == "state" && dig(v, "emptyDir", "medium") == "Memory" {
					found = true
				}
			}
			if !mounted || !found {
				t.Fatalf("state volume mounted %v, memory emptyDir %v", mounted, found)
			}
		})
	}
}

func items(v any) []any {
	l, _ := v.([]any)
	return l
}

// TestSchema checks that values.schema.json rejects wrong types, unknown keys and malformed values before anything
// is rendered, and that missing required values fail with a message saying what to set.
func TestSchema(t *testing.T) {
	const schemaErr = "values don't meet the specifications of the schema"
	for _, tc := range []struct {
		name, caseName string
		args           []string
		want           []string // substrings of helm's error output
	}{
		{"replicaCount not an integer", "connector-minimal", []string{"--set-string", "replicaCount=two"},
			[]string{schemaErr, "replicaCount"}},
		{"unknown top-level key", "connector-minimal", []string{"--set", "replicas=3"},
			[]string{schemaErr, "replicas"}},
		{"unknown nested key", "connector-minimal", []string{"--set", "gateway.uri=https://x"},
			[]string{schemaErr, "uri"}},
		{"gateway over plain http", "connector-minimal", []string{"--set", "gateway.url=http://gateway.example.com"},
			[]string{schemaErr, "url"}},
		{"malformed pin", "connector-minimal", []string{"--set", "gateway.pin[0]=md5:abc"},
			[]string{schemaErr, "pin"}},
		{"unknown log format", "connector-minimal", []string{"--set", "logFormat=xml"},
			[]string{schemaErr, "logFormat"}},
		{"policy rule with unknown field", "connector-minimal", []string{"--set", "policy.rules[0].verbs[0]=get",
			"--set", "policy.rules[0].resources[0]=pods", "--set", "policy.rules[0].namespace=x"},
			[]string{schemaErr, "namespace"}},
		{"RBAC rule without apiGroups", "connector-minimal", []string{"--set", "rbac.rules[0].resources[0]=pods",
			"--set", "rbac.rules[0].verbs[0]=get"},
			[]string{schemaErr, "apiGroups"}},
		{"NetworkPolicy CIDR not a CIDR", "connector-minimal", []string{"--set", "networkPolicy.gateway.cidrs[0]=gateway.example.com"},
			[]string{schemaErr, "cidrs"}},
		{"gateway replicaCount not an integer", "gateway-minimal", []string{"--set-string", "replicaCount=two"},
			[]string{schemaErr, "replicaCount"}},
		{"gateway unknown key", "gateway-minimal", []string{"--set", "ingress.hosts[0]=x"},
			[]string{schemaErr, "hosts"}},
		{"gateway service type", "gateway-minimal", []string{"--set", "service.type=ExternalName"},
			[]string{schemaErr, "type"}},
		{"revoked connector id with a newline", "gateway-minimal", []string{"--set-json", `connectors.revoked=["a\nb"]`},
			[]string{schemaErr, "revoked"}},
		{"credential lifetime not a duration", "gateway-minimal", []string{"--set", "connectors.credentialTTL=one hour"},
			[]string{schemaErr, "credentialTTL"}},
		{"no connector identity at all", "gateway-minimal", []string{"--set", "connectors.maxIdentities=0"},
			[]string{schemaErr, "maxIdentities"}},
		{"trusted proxy not an address", "gateway-minimal", []string{"--set", "trustedProxies[0]=ingress.example.com"},
			[]string{schemaErr, "trustedProxies"}},
		{"strip headers as a string", "connector-minimal", []string{"--set", "stripHeaders=X-Auth-User"},
			[]string{schemaErr, "at '/stripHeaders': got string, want array"}},
		{"strip header with a space", "connector-minimal", []string{"--set", "stripHeaders[0]=X-Auth User"},
			[]string{schemaErr, "at '/stripHeaders/0': 'X-Auth User' does not match pattern"}},
		// The binary splits WARREN_STRIP_HEADERS at commas: one entry must not turn into two.
		{"strip header with a comma", "connector-minimal", []string{"--set-json", `stripHeaders=["X-Auth-User,X-Auth-Group"]`},
			[]string{schemaErr, "at '/stripHeaders/0': 'X-Auth-User,X-Auth-Group' does not match pattern"}},
		{"strip header prefix of everything", "connector-minimal", []string{"--set", "stripHeaders[0]=*"},
			[]string{schemaErr, "at '/stripHeaders/0': '*' does not match pattern"}},
		{"strip header with * inside", "connector-minimal", []string{"--set", "stripHeaders[0]=X-*-User"},
			[]string{schemaErr, "at '/stripHeaders/0': 'X-*-User' does not match pattern"}},
		{"strip header with a trailing newline", "connector-minimal", []string{"--set-json", `stripHeaders=["X-Auth-User\n"]`},
			[]string{schemaErr, "at '/stripHeaders/0'", "does not match pattern"}},
		{"empty strip header", "connector-minimal", []string{"--set-json", `stripHeaders=[""]`},
			[]string{schemaErr, "at '/stripHeaders/0': '' does not match pattern"}},
		{"a public key as the connector's audit key", "connector-full", []string{"--set", "auditSigningKey.value=-----BEGIN PUBLIC KEY-----"},
			[]string{schemaErr, "at '/auditSigningKey/value'"}},
		{"audit key Secret not a name", "connector-full", []string{"--set", "auditSigningKey.value=", "--set", "auditSigningKey.existingSecret=Audit_Key"},
			[]string{schemaErr, "at '/auditSigningKey/existingSecret'"}},
		{"unknown audit key field", "gateway-minimal", []string{"--set", "auditSigningKey.file=/keys/signing.key"},
			[]string{schemaErr, "at '/auditSigningKey': additional properties 'file' not allowed"}},
		{"a public key as the gateway's audit key", "gateway-minimal", []string{"--set", "auditSigningKey.value=-----BEGIN PUBLIC KEY-----"},
			[]string{schemaErr, "at '/auditSigningKey/value'"}},

		// Required values: rendered templates fail with a message that says what to do.
		{"no gateway url", "connector-minimal", []string{"--set", "gateway.url="},
			[]string{"gateway.url is required"}},
		{"no token", "connector-minimal", []string{"--set", "token.value="},
			[]string{"token.value or token.existingSecret is required"}},
		{"two tokens", "connector-minimal", []string{"--set", "token.existingSecret=mine"},
			[]string{"set only one of token.value and token.existingSecret"}},
		{"proxy secret hides the port", "connector-existing-secret", []string{"--set", "networkPolicy.enabled=true"},
			[]string{"set networkPolicy.gateway.port"}},
		{"no TLS", "gateway-minimal", []string{"--set", "tls.cert=", "--set", "tls.key="},
			[]string{"the gateway serves HTTPS only"}},
		{"no issuer keys", "gateway-minimal", []string{"--set", "issuerKeys=null"},
			[]string{"issuerKeys is required"}},
		{"no gateway key", "gateway-minimal", []string{"--set", "gatewayKey.value="},
			[]string{"gatewayKey.value or gatewayKey.existingSecret is required: the gateway's own Ed25519 key"}},
		{"two gateway keys", "gateway-minimal", []string{"--set", "gatewayKey.existingSecret=mine"},
			[]string{"set only one of gatewayKey.value and gatewayKey.existingSecret"}},
		{"a public key as the gateway key", "gateway-minimal", []string{"--set", "gatewayKey.value=-----BEGIN PUBLIC KEY-----"},
			[]string{schemaErr, "gatewayKey"}},
		{"no pinned gateway keys", "connector-minimal", []string{"--set", "gatewayKeys=null"},
			[]string{"gatewayKeys is required: the gateway's public key(s)"}},
		{"the removed issuerKeys", "connector-minimal", []string{"--set", "issuerKeys[0]=x"},
			[]string{"issuerKeys was removed: the connector no longer sees caller tokens (the gateway keeps them); set gatewayKeys"}},
		{"ingress without host", "gateway-minimal", []string{"--set", "ingress.enabled=true"},
			[]string{"ingress.host is required"}},
		{"PROXY protocol without trusted proxies", "gateway-minimal", []string{"--set", "proxyProtocol=true"},
			[]string{"proxyProtocol needs trustedProxies"}},
		// The connector refuses --audit-signing-key without --audit-log (and keeps no audit log by default): the chart
		// refuses first, at install, in a template (a schema if/then could only say "minLength: got 0, want 1").
		{"connector audit key from a Secret without auditLog", "connector-audit", []string{"--set", "auditLog="},
			[]string{"auditSigningKey needs auditLog: the key signs checkpoints of the audit log, and without auditLog the connector keeps none; set auditLog (e.g. /dev/stdout) or leave auditSigningKey empty"}},
		{"connector audit key in values without auditLog", "connector-full", []string{"--set", "auditLog="},
			[]string{"auditSigningKey needs auditLog: the key signs checkpoints of the audit log, and without auditLog the connector keeps none; set auditLog (e.g. /dev/stdout) or leave auditSigningKey empty"}},
		{"two connector audit keys", "connector-full", []string{"--set", "auditSigningKey.existingSecret=mine"},
			[]string{"set only one of auditSigningKey.value and auditSigningKey.existingSecret"}},
		{"two gateway audit keys", "gateway-audit", []string{"--set", "auditSigningKey.existingSecret=mine"},
			[]string{"set only one of auditSigningKey.value and auditSigningKey.existingSecret"}},
		{"the gateway key as the audit key", "gateway-minimal", []string{"--set", "gatewayKey.value=-----BEGIN PRIVATE KEY-----k",
			"--set-json", `auditSigningKey.value="\n-----BEGIN PRIVATE KEY-----k\n"`},
			[]string{"auditSigningKey is the gatewayKey: give the audit log a key pair of its own (`warren keygen --out DIR`, DIR/signing.key)"}},
		{"the gateway key's Secret as the audit key", "gateway-ingress", []string{"--set", "auditSigningKey.existingSecret=warren-gateway-key",
			"--set", "auditSigningKey.existingSecretKey=ed25519.key"},
			[]string{"auditSigningKey is the gatewayKey: give the audit log a key pair of its own (`warren keygen --out DIR`, DIR/signing.key)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := caseByName(t, tc.caseName)
			args := append([]string{"template", "warren", c.chartDir(), "-f", c.valuesFile()}, tc.args...)
			_, err := helm(t, args...)
			if err == nil {
				t.Fatalf("helm %s succeeded, want an error containing %q", strings.Join(args, " "), tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestChartAcquisitionModes: acquisition.ephemeral.enabled adds exactly the ephemeral mode's rights; acquisition.node
// .enabled a Role in the collector namespace only, and a policy whose podSpec rule keeps pod creation there to
// warren's collector pod (the connector parses it, and it restricts as the connector will); both cover their
// presets' rules; the node mode without images does not render.
func TestChartAcquisitionModes(t *testing.T) {
	c := caseByName(t, "connector-acquisition")
	objs := decode(t, render(t, c, c.chart, "warren"))
	got := grants(t, only(t, objs, "ClusterRole"))
	want := set(append(forensic[:len(forensic):len(forensic)], grant{"", "pods/ephemeralcontainers", "patch", ""},
		grant{"", "pods/attach", "get", ""}, grant{"", "pods/attach", "create", ""})...)
	for g := range got {
		if !want[g] {
			t.Errorf("ClusterRole grants %+v, which it must not", g)
		}
	}
	for g := range want {
		if !got[g] {
			t.Errorf("ClusterRole lacks %+v", g)
		}
	}
	role := only(t, objs, "Role")
	if dig(role, "metadata", "namespace") != "connector-acquisition" {
		t.Fatalf("Role in %v", dig(role, "metadata", "namespace"))
	}
	roleGot := grants(t, role)
	roleWant := set(grant{"", "pods", "create", ""}, grant{"", "pods", "get", ""}, grant{"", "pods", "delete", ""},
		grant{"", "pods/attach", "get", ""}, grant{"", "pods/attach", "create", ""})
	if len(roleGot) != len(roleWant) {
		t.Errorf("Role grants %v, want %v", roleGot, roleWant)
	}
	for g := range roleWant {
		if !roleGot[g] {
			t.Errorf("Role lacks %+v", g)
		}
	}
	binding := only(t, objs, "RoleBinding")
	if dig(binding, "roleRef", "name") != role.name() || dig(binding, "metadata", "namespace") != "connector-acquisition" {
		t.Errorf("RoleBinding: %v", binding)
	}
	// Each preset's rules are in the chart's grants (cluster-wide or, for the node mode, the collector namespace's).
	for _, preset := range []string{"acquire-ephemeral", "acquire-node"} {
		rules, err := acquire.PresetRules([]string{preset}, []string{"payments"}, "connector-acquisition")
		if err != nil {
			t.Fatal(err)
		}
		for _, pr := range rules {
			r, _ := auth.ParseRule(pr.Rule)
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					g := grant{r.APIGroups[0], res, v, ""}
					inNS := len(r.Namespaces) == 1 && r.Namespaces[0] == "connector-acquisition"
					if !got[g] && !(inNS && roleGot[g]) {
						t.Errorf("preset %s's %s needs %+v, which the chart does not grant", preset, pr.Rule, g)
					}
				}
			}
		}
	}
	// The policy the connector reads.
	var policyYAML string
	for _, o := range objs {
		if o.kind() == "ConfigMap" && strings.HasSuffix(o.name(), "-policy") {
			policyYAML, _ = dig(o, "data", "policy.yaml").(string)
		}
	}
	policy, err := auth.ParsePolicy([]byte(policyYAML))
	if err != nil {
		t.Fatalf("the chart's policy does not parse: %v\n%s", err, policyYAML)
	}
	attrs := func(verb, res, sub, ns string) auth.Attributes {
		return auth.Attributes{ResourceRequest: true, Verb: verb, Resource: res, Subresource: sub, Namespace: ns}
	}
	if d := policy.PodSpecFor(attrs("create", "pods", "", "connector-acquisition")); len(d.Check) != 1 ||
		d.Check[0].Images[0] != "ghcr.io/warren-dev/warren-collector@sha256:"+strings.Repeat("1", 64) {
		t.Errorf("create pods in the collector namespace: %+v", d)
	}
	for _, a := range []struct {
		a  auth.Attributes
		ok bool
	}{
		{attrs("get", "pods", "", "payments"), true},
		{attrs("create", "pods", "exec", "payments"), true},
		{attrs("patch", "pods", "ephemeralcontainers", "payments"), true},
		{attrs("create", "pods", "attach", "connector-acquisition"), true},
		{attrs("delete", "pods", "", "connector-acquisition"), true},
		{attrs("patch", "pods", "", "connector-acquisition"), false},
		{attrs("create", "pods", "exec", "connector-acquisition"), false},
		{attrs("create", "pods", "", "connector-acquisition"), false}, // only through the body check
		{attrs("get", "nodes", "proxy", ""), false},
	} {
		if ok, why := policy.Authorize(a.a); ok != a.ok {
			t.Errorf("%s %s/%s in %q: %v (%s), want %v", a.a.Verb, a.a.Resource, a.a.Subresource, a.a.Namespace, ok, why, a.ok)
		}
	}
	// The node mode needs its images.
	if _, err := helm(t, "template", "x", c.chartDir(), "--namespace", "warren", "--set", "gateway.url=https://g", "--set", "token.value=t",
		"--set", "gatewayKeys[0]=k", "--set", "acquisition.node.enabled=true"); err == nil || !strings.Contains(err.Error(), "acquisition.node.images: list warren's collector image(s), each pinned by digest (NAME@sha256:...)") {
		t.Errorf("node mode without images: %v", err)
	}
	if _, err := helm(t, "template", "x", c.chartDir(), "--namespace", "warren", "--set", "gateway.url=https://g", "--set", "token.value=t",
		"--set", "gatewayKeys[0]=k", "--set", "acquisition.node.enabled=true", "--set", "acquisition.node.images[0]=ghcr.io/warren-dev/warren-collector:latest"); err == nil ||
		!strings.Contains(err.Error(), "values don't meet the specifications of the schema") {
		t.Errorf("an image by tag: %v", err)
	}
}

// TestAuditKeyBesideTheGatewayKey: the refusal of the gateway key as the audit key is of that key only; another key
// of the same Secret is the audit key, mounted on its own.
func TestAuditKeyBesideTheGatewayKey(t *testing.T) {
	c := caseByName(t, "gateway-ingress")
	deploy := only(t, decode(t, render(t, c, c.chart, "warren", "--set", "auditSigningKey.existingSecret=warren-gateway-key",
		"--set", "auditSigningKey.existingSecretKey=audit.key")), "Deployment")
	pod := dig(deploy, "spec", "template", "spec")
	env := map[string]any{}
	for _, e := range items(dig(items(dig(pod, "containers"))[0], "env")) {
		env[fmt.Sprint(dig(e, "name"))] = dig(e, "value")
	}
	if got := env["WARREN_AUDIT_SIGNING_KEY"]; got != "/etc/warren/audit-key/audit.key" {
		t.Errorf("WARREN_AUDIT_SIGNING_KEY = %v", got)
	}
	for _, v := range items(dig(pod, "volumes")) {
		if dig(v, "name") == "audit-key" {
			if dig(v, "secret", "secretName") != "warren-gateway-key" || fmt.Sprint(dig(v, "secret", "items")) != "[map[key:audit.key path:audit.key]]" {
				t.Errorf("audit-key volume: %v", v)
			}
			return
		}
	}
	t.Error("no audit-key volume")
}
