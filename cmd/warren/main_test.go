package main

import (
	"bytes"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/warren-dev/warren/auth"
)

// runCmd runs the binary's main logic and returns the exit code and what went to stderr.
func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestBadInvocationsAreOneLineWithAnExitCode(t *testing.T) {
	dir := t.TempDir()
	if _, err := auth.GenerateKeyPair(dir); err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, auth.PublicKeyFile)
	gwDir := t.TempDir() // the gateway's own key, not an issuer's
	if _, err := auth.GenerateKeyPair(gwDir); err != nil {
		t.Fatal(err)
	}
	gwKey, gwPub := filepath.Join(gwDir, auth.SigningKeyFile), filepath.Join(gwDir, auth.PublicKeyFile)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	certDir := t.TempDir()
	writeTestCert(t, certDir)
	crt, key := filepath.Join(certDir, "tls.crt"), filepath.Join(certDir, "tls.key")
	garbage := filepath.Join(dir, "garbage.token")
	os.WriteFile(garbage, []byte("not a jwt\n"), 0o600)
	jwtShaped := filepath.Join(dir, "jwt.token")
	os.WriteFile(jwtShaped, []byte("eyJh.eyJz.c2ln\n"), 0o600)

	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown command", []string{"gatway"}, 2, `warren: unknown command "gatway"; run ` + "`warren --help`" + ` for the list`},
		{"unknown flag", []string{"gateway", "--tls-crt", "x"}, 2, "warren gateway: flag provided but not defined: -tls-crt; run `warren gateway --help` for the flags"},
		{"bad duration", []string{"token", "issue", "--ttl", "soon"}, 2, `warren token: invalid value "soon" for flag -ttl`},
		{"gateway without TLS", []string{"gateway", "--issuer-keys", pub, "--connector-keys", pub, "--gateway-key", gwKey}, 1, "warren gateway: missing --tls-cert or --tls-key"},
		{"gateway without its own key", []string{"gateway", "--tls-cert", crt, "--tls-key", key, "--issuer-keys", pub, "--connector-keys", pub}, 1,
			"warren gateway: missing --gateway-key: the gateway's own Ed25519 private key, which signs the assertion each request carries to its connector; make one with `warren keygen --out DIR` (DIR/signing.key here, DIR/signing.pub to the connectors' --gateway-keys)\n"},
		{"gateway key that is a public key", []string{"gateway", "--tls-cert", crt, "--tls-key", key, "--issuer-keys", pub, "--connector-keys", pub, "--gateway-key", gwPub}, 1,
			"warren gateway: --gateway-key: signing key " + gwPub + ` holds a "PUBLIC KEY" block; want a PKCS#8 "PRIVATE KEY" as written by ` + "`warren keygen`"},
		{"gateway key that is an issuer key", []string{"gateway", "--tls-cert", crt, "--tls-key", key, "--issuer-keys", pub, "--connector-keys", pub,
			"--gateway-key", filepath.Join(dir, auth.SigningKeyFile)}, 1,
			"warren gateway: the signing key is also a trusted issuer of caller tokens: a stolen gateway key would then mint caller tokens; give the gateway a key of its own (warren keygen)\n"},
		{"missing key file", []string{"gateway", "--tls-cert", crt, "--tls-key", key, "--issuer-keys", filepath.Join(dir, "nope.pub"), "--connector-keys", pub, "--gateway-key", gwKey}, 1, "warren gateway: --issuer-keys: "},
		{"missing TLS file", []string{"gateway", "--tls-cert", filepath.Join(dir, "nope.crt"), "--tls-key", key, "--issuer-keys", pub, "--connector-keys", pub, "--gateway-key", gwKey}, 1, "warren gateway: cannot load the TLS certificate"},
		{"port in use", []string{"gateway", "--listen", busy.Addr().String(), "--tls-cert", crt, "--tls-key", key, "--issuer-keys", pub, "--connector-keys", pub, "--gateway-key", gwKey}, 1,
			"warren gateway: cannot listen on " + busy.Addr().String() + ": "},
		{"connector without gateway", []string{"connector", "--token-file", garbage}, 1, "warren connector: missing --gateway"},
		{"connector without gateway keys", []string{"connector", "--gateway", "https://gw", "--token-file", garbage}, 1,
			"warren connector: missing --gateway-keys: the gateway's public key(s) (signing.pub of the key given to warren gateway --gateway-key): the connector serves only requests the gateway signed an assertion of\n"},
		{"connector with the removed --issuer-keys", []string{"connector", "--gateway", "https://gw", "--token-file", garbage, "--gateway-keys", gwPub, "--issuer-keys", pub}, 2,
			`warren connector: invalid value "` + pub + `" for flag -issuer-keys: --issuer-keys was removed: the connector no longer sees caller tokens (the gateway keeps them); it verifies the gateway's assertion of each request with --gateway-keys, the gateway's public key(s); run ` + "`warren connector --help`" + " for the flags\n"},
		{"connector with a missing gateway key file", []string{"connector", "--gateway", "https://gw", "--token-file", garbage, "--gateway-keys", filepath.Join(dir, "nope.pub")}, 1,
			"warren connector: --gateway-keys: public key file " + filepath.Join(dir, "nope.pub") + " does not exist"},
		{"connector with a missing token file", []string{"connector", "--gateway", "https://gw", "--token-file", filepath.Join(dir, "none"), "--gateway-keys", gwPub}, 1, "warren connector: cannot read the connector token: "},
		{"connector with a garbage token", []string{"connector", "--gateway", "https://gw", "--token-file", garbage, "--gateway-keys", gwPub, "--kubeconfig", writeKubeconfigFile(t)}, 1,
			"warren connector: connector token is not a JWT"},
		{"connector outside a cluster", []string{"connector", "--gateway", "https://gw", "--token-file", garbage, "--gateway-keys", gwPub}, 1, "warren connector: no in-cluster credentials"},
		{"token for two clusters", []string{"token", "issue", "--key", gwKey, "--subject", "alice", "--cluster", "prod", "--cluster", "staging", "--rule", "get:pods"}, 1,
			"warren token: token issue: 2 clusters given (prod, staging): a token for several clusters works at each of them, so one leak reaches them all; issue one token per cluster, or pass --multi-cluster to mean it (gateways accept such tokens only with --allow-multi-cluster-tokens)\n"},
		{"keygen over an existing key", []string{"keygen", "--out", dir}, 1, "warren keygen: "},
		{"sign without a key", []string{"sign", garbage}, 1, "warren sign: missing --key"},
		{"sign nothing", []string{"sign", "--key", filepath.Join(dir, auth.SigningKeyFile)}, 1, "warren sign: nothing to sign"},
		{"pin of an unknown platform", []string{"bootstrap", "ssm", "--instance-id", "i-1", "--gateway", "https://gw", "--token-file", garbage,
			"--kubeconfig", "/etc/kubeconfig", "--gateway-keys", gwPub, "--connector-sha256", "linux/s390x=abc"}, 1,
			`warren bootstrap: --connector-sha256 "linux/s390x=abc": want PLATFORM=SHA256 with PLATFORM one of linux/amd64, linux/arm64`},
		{"pin that is not a digest", []string{"bootstrap", "ssm", "--instance-id", "i-1", "--gateway", "https://gw", "--token-file", jwtShaped,
			"--kubeconfig", "/etc/kubeconfig", "--gateway-keys", gwPub, "--connector-sha256", "linux/amd64=abc", "--print-script"}, 1,
			`warren bootstrap: the pinned SHA-256 of linux-amd64 "abc" is not 64 lowercase hex digits`},
		{"release key that is not a key", []string{"bootstrap", "ssm", "--instance-id", "i-1", "--gateway", "https://gw", "--token-file", jwtShaped,
			"--kubeconfig", "/etc/kubeconfig", "--gateway-keys", gwPub, "--release-key", garbage}, 1,
			`warren bootstrap: the release key is not one PEM "PUBLIC KEY" block (the signing.pub of warren keygen)`},
		{"JWKS over http", []string{"gateway", "--tls-cert", crt, "--tls-key", key, "--issuer-jwks-url", "http://idp.example.com/jwks.json", "--connector-keys", pub, "--gateway-key", gwKey}, 1,
			`warren gateway: --issuer-jwks-url: JWKS URL "http://idp.example.com/jwks.json" must be https://HOST/...: keys fetched any other way could be replaced on the way`},
		{"missing revocation list", []string{"gateway", "--tls-cert", crt, "--tls-key", key, "--issuer-keys", pub, "--connector-keys", pub, "--gateway-key", gwKey, "--revoked-tokens", filepath.Join(dir, "revoked.txt")}, 1,
			"warren gateway: --revoked-tokens: revocation list " + filepath.Join(dir, "revoked.txt") + " does not exist: create it (empty to revoke nothing)"},
		{"connector strips a bad header name", []string{"connector", "--gateway", "https://gw", "--token-file", garbage, "--gateway-keys", gwPub, "--kubeconfig", writeKubeconfigFile(t), "--strip-headers", "X Remote"}, 1,
			"warren connector: cannot strip header \"X Remote\": want a header name, or a prefix ending in *"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := runCmd(t, c.args...)
			if code != c.code || !strings.HasPrefix(stderr, c.want) || strings.Count(stderr, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q\nwant exit %d and one line starting %q", code, stderr, c.code, c.want)
			}
		})
	}
}

func TestEnvironmentSetsFlags(t *testing.T) {
	dir := t.TempDir()
	if _, err := auth.GenerateKeyPair(dir); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WARREN_KEY", filepath.Join(dir, auth.SigningKeyFile))
	t.Setenv("WARREN_CLUSTER", "prod")
	code, out, stderr := runCmd(t, "token", "connector")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	ks, _ := auth.LoadPublicKeys(filepath.Join(dir, auth.PublicKeyFile))
	v, _ := auth.NewVerifier(auth.VerifierConfig{Keys: ks, Audience: auth.AudienceConnector})
	claims, err := v.Verify(strings.TrimSpace(out))
	if err != nil || claims.Warren.Clusters[0] != "prod" {
		t.Fatalf("token from WARREN_* flags: %v %v", claims, err)
	}
	t.Setenv("WARREN_TTL", "later")
	if code, _, stderr := runCmd(t, "token", "connector"); code != 2 || !strings.Contains(stderr, `environment variable WARREN_TTL: invalid value "later"`) {
		t.Fatalf("bad WARREN_TTL: exit %d %q", code, stderr)
	}
}

// TestRemovedConnectorFlagsFromTheEnvironment: a deployment that still sets WARREN_ISSUER_KEYS (an old chart)
// is told what replaced it instead of starting without the check it asked for.
func TestRemovedConnectorFlagsFromTheEnvironment(t *testing.T) {
	t.Setenv("WARREN_ISSUER_KEYS", "/etc/warren/issuer-keys/key-0.pem")
	code, _, stderr := runCmd(t, "connector", "--gateway", "https://gw", "--token-file", "x")
	const want = `warren connector: environment variable WARREN_ISSUER_KEYS: invalid value "/etc/warren/issuer-keys/key-0.pem": --issuer-keys was removed: the connector no longer sees caller tokens`
	if code != 2 || !strings.HasPrefix(stderr, want) {
		t.Fatalf("exit %d %q\nwant exit 2 and %q...", code, stderr, want)
	}
}

func TestTokenIssueMultiCluster(t *testing.T) {
	dir := t.TempDir()
	if _, err := auth.GenerateKeyPair(dir); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCmd(t, "token", "issue", "--key", filepath.Join(dir, auth.SigningKeyFile), "--subject", "alice",
		"--cluster", "prod,staging", "--multi-cluster", "--rule", "get:pods")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	ks, _ := auth.LoadPublicKeys(filepath.Join(dir, auth.PublicKeyFile))
	strict, _ := auth.NewVerifier(auth.VerifierConfig{Keys: ks, Audience: auth.AudienceCaller})
	if _, err := strict.Verify(strings.TrimSpace(out)); err == nil || !strings.Contains(err.Error(), "--allow-multi-cluster-tokens") {
		t.Fatalf("a default verifier took the multi-cluster token: %v", err)
	}
	lax, _ := auth.NewVerifier(auth.VerifierConfig{Keys: ks, Audience: auth.AudienceCaller, AllowMultiCluster: true})
	if c, err := lax.Verify(strings.TrimSpace(out)); err != nil || !c.HasCluster("prod") || !c.HasCluster("staging") {
		t.Fatalf("multi-cluster token: %+v %v", c, err)
	}
}

func TestHelpListsEveryFlag(t *testing.T) {
	for _, cmd := range []string{"gateway", "connector", "kubeconfig"} {
		code, _, stderr := runCmd(t, cmd, "--help")
		if code != 0 || !strings.Contains(stderr, "usage: warren "+cmd) || !strings.Contains(stderr, "-log-level") && cmd != "kubeconfig" {
			t.Errorf("warren %s --help: exit %d\n%s", cmd, code, stderr)
		}
	}
}

func writeKubeconfigFile(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(path, []byte("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n"), 0o600)
	return path
}

// A short flag and its long form are one setting: a WARREN_* variable of the long one does not override the short
// one given on the command line, and positional arguments may come before or after the flags.
func TestAcquireFlagAliases(t *testing.T) {
	t.Setenv("WARREN_NAMESPACE", "from-env")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var ns string
	fs.StringVar(&ns, "namespace", "default", "")
	fs.StringVar(&ns, "n", "default", "")
	out := fs.String("out", "", "")
	pos, err := parseInterleaved(fs, []string{"pod-a", "-n", "payments", "pod-b/main", "--out", "d", "--", "-odd"}, "n", "namespace")
	if err != nil || ns != "payments" || *out != "d" || strings.Join(pos, " ") != "pod-a pod-b/main -odd" {
		t.Fatalf("ns %q, out %q, positional %q, %v", ns, *out, pos, err)
	}
	fs = flag.NewFlagSet("x", flag.ContinueOnError)
	fs.StringVar(&ns, "namespace", "default", "")
	fs.StringVar(&ns, "n", "default", "")
	if _, err := parseInterleaved(fs, nil, "n", "namespace"); err != nil || ns != "from-env" {
		t.Fatalf("from the environment: %q %v", ns, err)
	}
}

// Two acquisitions into one directory: the second is refused before it starts.
func TestAcquireLocksItsDirectory(t *testing.T) {
	keyDir, out := t.TempDir(), t.TempDir()
	if _, err := auth.GenerateKeyPair(keyDir); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(out, ".warren-acquire.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCmd(t, "acquire", "p", "--out", out, "--gateway", "https://127.0.0.1:1", "--cluster", "c", "--token", "t",
		"--signing-key", filepath.Join(keyDir, auth.SigningKeyFile), "--collector-dir", keyDir)
	if code != 1 || !strings.Contains(stderr, "warren acquire: another warren acquire is writing to "+out+": wait for it to end, or choose another --out") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}
