package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/gatewaytls"
	"github.com/warren-dev/warren/internal/testenv/testcert"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func signingKey(t *testing.T) *auth.SigningKey {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	k, err := auth.NewSigningKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func token(t *testing.T, k *auth.SigningKey, subject string, ttl time.Duration) string {
	t.Helper()
	r, _ := auth.ParseRule("get:pods")
	tok, err := k.IssueCaller(auth.IssueOptions{Subject: subject, Clusters: []string{"prod"}, Rules: []auth.Rule{r}, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		c    Config
		want string // "" for valid
	}{
		{"gateway and static token", Config{Gateway: "https://gw:8443", Cluster: "prod", Token: "t"}, ""},
		{"kubeconfig", Config{Kubeconfig: "kc", Context: "x"}, ""},
		{"kubeconfig and gateway", Config{Kubeconfig: "kc", Gateway: "https://gw"}, "give either --kubeconfig (with --context) or --gateway, --cluster and a token, not both"},
		{"context alone", Config{Context: "x", Gateway: "https://gw", Cluster: "c", Token: "t"}, "--context needs --kubeconfig"},
		{"nothing", Config{}, "missing --gateway: the gateway's URL"},
		{"no cluster", Config{Gateway: "https://gw"}, "missing --cluster"},
		{"two tokens", Config{Gateway: "https://gw", Cluster: "c", Token: "t", TokenCommand: "x"}, "give exactly one of --token"},
		{"no token", Config{Gateway: "https://gw", Cluster: "c"}, "give exactly one of --token"},
		{"gateway not a URL", Config{Gateway: "gw:8443", Cluster: "c", Token: "t"}, `--gateway "gw:8443" is not of the form https://HOST[:PORT]`},
		{"gateway with a query", Config{Gateway: "https://gw/?x=1", Cluster: "c", Token: "t"}, "is not of the form"},
		{"cluster with a slash", Config{Gateway: "https://gw", Cluster: "a/b", Token: "t"}, `--cluster "a/b" is not a cluster name`},
		{"cluster with an encoded slash", Config{Gateway: "https://gw", Cluster: "a%2Fb", Token: "t"}, "is not a cluster name"},
		{"bad pin", Config{Gateway: "https://gw", Cluster: "c", Token: "t", Pins: []string{"sha256:nope"}}, `--pin: pin "sha256:nope" is not sha256:BASE64`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.c.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("Validate = %v, want %q", err, c.want)
			}
		})
	}
}

// serve starts a TLS server that records the bearer token of each request.
func serve(t *testing.T) (*httptest.Server, *atomic.Value, string) {
	t.Helper()
	var seen atomic.Value
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("Authorization") + " " + r.URL.Path)
		if r.Header.Get("Authorization") == "Bearer refused" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		io.WriteString(w, `{"major":"1","minor":"37"}`)
	}))
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	return srv, &seen, ca
}

func get(t *testing.T, cfg *rest.Config, path string) (int, error) {
	t.Helper()
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if c, ok := tr.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	}()
	req, _ := http.NewRequest("GET", cfg.Host+path, nil)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func TestRESTConfigTokenSources(t *testing.T) {
	srv, seen, ca := serve(t)
	k := signingKey(t)
	static := token(t, k, "alice", time.Hour)
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(static+"\n"), 0o600)
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"static", Config{Token: static}},
		{"file", Config{TokenFile: tokenFile}},
		{"command", Config{TokenCommand: "cat " + tokenFile}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cc := c.cfg
			cc.Gateway, cc.Cluster, cc.CAFile = srv.URL, "prod", ca
			cfg, err := cc.RESTConfig(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Host != srv.URL+"/clusters/prod" {
				t.Fatalf("Host = %q", cfg.Host)
			}
			if code, err := get(t, cfg, "/version"); err != nil || code != 200 {
				t.Fatalf("GET: %d %v", code, err)
			}
			if got := seen.Load().(string); got != "Bearer "+static+" /clusters/prod/version" {
				t.Fatalf("server saw %q", got)
			}
		})
	}
}

func TestTokenCommandSourceRefreshesBeforeExpiryAndAfterReset(t *testing.T) {
	k := signingKey(t)
	dir := t.TempDir()
	counter := filepath.Join(dir, "runs")
	// Run N prints file N and counts itself.
	tok1, tok2 := token(t, k, "a", 2*time.Minute), token(t, k, "b", time.Hour)
	os.WriteFile(filepath.Join(dir, "1"), []byte(tok1), 0o600)
	os.WriteFile(filepath.Join(dir, "2"), []byte(tok2), 0o600)
	cmd := "echo x >> " + counter + "; cat " + dir + "/$(wc -l < " + counter + ")"
	s := NewTokenCommandSource(cmd)
	now := time.Now()
	s.now = func() time.Time { return now }
	a, err := s.Token()
	if err != nil || a.AccessToken != tok1 {
		t.Fatalf("first token: %v %v", a, err)
	}
	if b, _ := s.Token(); b.AccessToken != tok1 {
		t.Fatal("a valid token was not reused")
	}
	now = now.Add(2*time.Minute - tokenRefreshBefore + time.Second) // within tokenRefreshBefore of exp
	if b, err := s.Token(); err != nil || b.AccessToken != tok2 {
		t.Fatalf("token near its expiry was not replaced: %v", err)
	}
	s.ResetTokenOlderThan(now.Add(-time.Second)) // fetched after: kept
	if b, _ := s.Token(); b.AccessToken != tok2 {
		t.Fatal("a reset older than the token dropped it")
	}
	os.WriteFile(filepath.Join(dir, "3"), []byte(tok1), 0o600)
	s.ResetTokenOlderThan(now.Add(time.Second))
	if b, err := s.Token(); err != nil || b.AccessToken != tok1 {
		t.Fatalf("a reset did not make the source run the command again: %v", err)
	}
}

func TestRunTokenCommandErrors(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct{ cmd, want string }{
		{"exit 3", `token command "exit 3" failed: exit status 3`},
		{"echo oops >&2; exit 1", `token command "echo oops >&2; exit 1" failed: exit status 1: oops`},
		{"true", `token command "true" printed nothing`},
		{"head -c 100000 /dev/zero", "printed more than"},
	} {
		if _, err := RunTokenCommand(ctx, c.cmd); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.cmd, err, c.want)
		}
	}
}

func TestPins(t *testing.T) {
	srv, _, ca := serve(t)
	leafPin := gatewaytls.SPKIPin(srv.Certificate())
	other := "sha256:" + strings.Repeat("A", 43) + "="
	for _, c := range []struct {
		name   string
		pins   []string
		caFile string
		want   string
	}{
		{"leaf pin alone", []string{leafPin}, "", ""},
		{"rotation: one of two", []string{other, leafPin}, "", ""},
		{"pin and CA", []string{leafPin}, ca, ""},
		{"wrong pin", []string{other}, "", "gateway certificate matches no --pin: the gateway presented " + leafPin},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Config{Gateway: srv.URL, Cluster: "prod", Token: "t", Pins: c.pins, CAFile: c.caFile}.RESTConfig(context.Background())
			if c.want != "" {
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("RESTConfig = %v, want %q", err, c.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if code, err := get(t, cfg, "/version"); err != nil || code != 200 {
				t.Fatalf("GET with the pinned anchor: %d %v", code, err)
			}
		})
	}
	// An impostor with another certificate is refused once the anchor is set.
	cfg, err := Config{Gateway: srv.URL, Cluster: "prod", Token: "t", Pins: []string{leafPin}}.RESTConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	impostor := httptest.NewUnstartedServer(http.NotFoundHandler())
	impostor.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	impostor.StartTLS()
	defer impostor.Close()
	cfg.Host = impostor.URL
	if _, err := get(t, cfg, "/version"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("impostor accepted: %v", err)
	}
}

// selfSigned is a certificate for 127.0.0.1 other than httptest's (which every httptest server shares).
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	c, err := testcert.SelfSigned(testcert.Options{Name: "impostor", Hosts: []string{"127.0.0.1"}, Valid: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return c.TLS()
}

func TestKubeconfigFor(t *testing.T) {
	_, _, ca := serve(t)
	cfg, err := Config{Gateway: "https://gw:8443/", Cluster: "prod", CAFile: ca, TokenCommand: "get-token prod"}.KubeconfigFor("/usr/bin/warren")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := clientcmd.Write(*cfg)
	for _, want := range []string{"server: https://gw:8443/clusters/prod", "certificate-authority-data:", "command: /usr/bin/warren",
		"- credential", "- --token-command", "- get-token prod", "current-context: warren-prod"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("kubeconfig lacks %q:\n%s", want, data)
		}
	}
	if _, err := (Config{Gateway: "https://gw", Cluster: "prod", Token: "t", Pins: []string{"sha256:" + strings.Repeat("A", 43) + "="}}).KubeconfigFor(""); err == nil ||
		!strings.Contains(err.Error(), "a kubeconfig cannot hold pins") {
		t.Fatalf("pins in a kubeconfig: %v", err)
	}
}

// A kubeconfig written by KubeconfigFor reads back into the same server, CA and token.
func TestRESTConfigFromKubeconfig(t *testing.T) {
	srv, seen, ca := serve(t)
	cfg, err := Config{Gateway: srv.URL, Cluster: "prod", CAFile: ca, Token: "tok"}.KubeconfigFor("")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	rc, err := Config{Kubeconfig: path, Context: "warren-prod", UserAgent: "ua"}.RESTConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if code, err := get(t, rc, "/version"); err != nil || code != 200 || seen.Load().(string) != "Bearer tok /clusters/prod/version" || rc.UserAgent != "ua" {
		t.Fatalf("GET: %d %v, server saw %q", code, err, seen.Load())
	}
	if _, err := (Config{Kubeconfig: path, Context: "nope"}).RESTConfig(context.Background()); err == nil || !strings.Contains(err.Error(), `context "nope" does not exist`) {
		t.Fatalf("unknown context: %v", err)
	}
}

// TestExecCredential: the token command's token reaches kubectl as an ExecCredential with the token's expiry (so that
// kubectl asks again only then); a token that is no JWT goes without one; a failing command is an error naming it.
func TestExecCredential(t *testing.T) {
	k := signingKey(t)
	tok := token(t, k, "alice", time.Hour)
	info, _ := ParseToken(tok)
	out, err := ExecCredential(t.Context(), "echo "+tok)
	want := `{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false},"status":{"expirationTimestamp":"` +
		info.Expiry.UTC().Format(time.RFC3339) + `","token":"` + tok + `"}}` + "\n"
	if err != nil || string(out) != want {
		t.Fatalf("ExecCredential = %s, %v\nwant %s", out, err, want)
	}
	if out, err := ExecCredential(t.Context(), "echo opaque"); err != nil || !strings.Contains(string(out), `"status":{"token":"opaque"}`) {
		t.Fatalf("opaque token: %s, %v", out, err)
	}
	if _, err := ExecCredential(t.Context(), "exit 3"); err == nil || err.Error() != `token command "exit 3" failed: exit status 3` {
		t.Fatalf("failing command: %v", err)
	}
}

// KubeconfigYAML is KubeconfigFor as kubectl reads it back.
func TestKubeconfigYAML(t *testing.T) {
	data, err := Config{Gateway: "https://gw:8443", Cluster: "prod", TokenFile: "/run/token"}.KubeconfigYAML("")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(data)
	if err != nil || cfg.CurrentContext != "warren-prod" || cfg.Clusters["warren-prod"].Server != "https://gw:8443/clusters/prod" ||
		cfg.AuthInfos["warren-prod"].TokenFile != "/run/token" {
		t.Fatalf("read back: %+v %v", cfg, err)
	}
	if _, err := (Config{Gateway: "https://gw"}).KubeconfigYAML(""); err == nil || err.Error() != "missing --cluster: the name of the cluster to reach" {
		t.Fatalf("no cluster: %v", err)
	}
}
