package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/connector"
	"github.com/warren-dev/warren/gateway"
	"github.com/warren-dev/warren/internal/testenv/testlog"
	"github.com/warren-dev/warren/internal/testenv/wait"
	"github.com/warren-dev/warren/tunnel"
)

// env is a gateway served on loopback, or in memory for a synctest bubble (plain HTTP: TLS is not what these tests
// are about), with a real issuer key, connector keys read from a file that tests may rewrite, a revocation list file,
// and an audit log in memory.
type env struct {
	t        *testing.T
	dir      string
	issuer   *auth.SigningKey
	gwKey    *auth.SigningKey // the gateway's own key (--gateway-key): signs credentials and assertions
	gwPub    *auth.StaticKeys // its public half, as connectors pin it (--gateway-keys)
	keysFile string           // the connector keys (--connector-keys)
	revoked  string           // the revocation list (--revoked-connectors)
	// isRevoked is that list as the gateway reads it (every 20 ms): tests wait on it rather than sleep.
	isRevoked func(id string) bool
	audit     *memAudit
	logs      *testlog.Buffer
	g         *gateway.Gateway
	srv       *httptest.Server
	net       *testNet // where srv listens and connectors and callers dial
}

func newEnv(t *testing.T, mod func(*gateway.Config, *auth.VerifierConfig)) *env {
	t.Helper()
	return newEnvOn(t, loopback, mod)
}

// newEnvOn is newEnv on network n: memoryNet(t) for a test in a synctest bubble.
func newEnvOn(t *testing.T, n *testNet, mod func(*gateway.Config, *auth.VerifierConfig)) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), audit: &memAudit{}, logs: &testlog.Buffer{}, net: n}
	if _, err := auth.GenerateKeyPair(e.dir); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.issuer, err = auth.LoadSigningKey(filepath.Join(e.dir, auth.SigningKeyFile)); err != nil {
		t.Fatal(err)
	}
	gwDir := filepath.Join(e.dir, "gateway-key")
	if _, err := auth.GenerateKeyPair(gwDir); err != nil {
		t.Fatal(err)
	}
	if e.gwKey, err = auth.LoadSigningKey(filepath.Join(gwDir, auth.SigningKeyFile)); err != nil {
		t.Fatal(err)
	}
	if e.gwPub, err = auth.LoadPublicKeys(filepath.Join(gwDir, auth.PublicKeyFile)); err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(e.dir, auth.PublicKeyFile)
	e.keysFile = filepath.Join(e.dir, "connector-keys.pem")
	copyFile(t, pub, e.keysFile)
	e.revoked = filepath.Join(e.dir, "revoked-connectors")
	if err := os.WriteFile(e.revoked, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	callerKeys, err := auth.LoadPublicKeys(pub)
	if err != nil {
		t.Fatal(err)
	}
	callers, err := auth.NewVerifier(auth.VerifierConfig{Keys: callerKeys, Audience: auth.AudienceCaller})
	if err != nil {
		t.Fatal(err)
	}
	// Key files and the revocation list are looked at every 20 ms, not 5 s: the gateway's re-check is the subject.
	connKeys, err := auth.NewKeyFiles(20*time.Millisecond, e.keysFile)
	if err != nil {
		t.Fatal(err)
	}
	list, err := auth.NewRevocationList(e.revoked, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	e.isRevoked = list.Revoked
	vc := auth.VerifierConfig{Keys: connKeys, Audience: auth.AudienceConnector, Revoked: list.Revoked}
	cfg := gateway.Config{CallerVerifier: callers, SigningKey: e.gwKey, Audit: e.audit, Clusters: []string{"prod"},
		Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if mod != nil {
		mod(&cfg, &vc)
	}
	if cfg.ConnectorVerifier, err = auth.NewVerifier(vc); err != nil {
		t.Fatal(err)
	}
	if e.g, err = gateway.New(cfg); err != nil {
		t.Fatal(err)
	}
	e.srv = n.server(t, "gateway.test:80", e.g)
	t.Cleanup(func() {
		e.srv.Close() // closes client connections; hijacked tunnels are the gateway's
		e.g.Close()
		if t.Failed() {
			t.Logf("gateway logs:\n%s", e.logs.String())
		}
	})
	return e
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// connectorToken issues a join token (`warren token connector`) for cluster, valid for ttl from now.
func (e *env) connectorToken(cluster string, ttl time.Duration) string {
	e.t.Helper()
	tok, err := e.issuer.IssueConnector(cluster, ttl, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func tokenID(t *testing.T, tok string) string {
	t.Helper()
	var c auth.Claims
	parseUnverified(t, tok, &c)
	return c.ID
}

// revoke appends ids to the revocation list file.
func (e *env) revoke(ids ...string) {
	e.t.Helper()
	f, err := os.OpenFile(e.revoked, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintln(f, strings.Join(ids, "\n"))
}

// running is an in-process connector whose API server stand-in answers every request with its name.
type running struct {
	c      *connector.Connector
	name   string
	logs   *testlog.Buffer
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *running) stop() {
	r.cancel()
	<-r.done
}

// startConnector runs a real connector for cluster prod whose join token comes from token (called at every join).
func (e *env) startConnector(name string, token func() (string, error), mod func(*connector.Config)) *running {
	e.t.Helper()
	api := e.net.server(e.t, name+".api.test:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[],"servedBy":%q}`, name)
	}))
	e.t.Cleanup(api.Close)
	logs := &testlog.Buffer{}
	cfg := connector.Config{
		GatewayURL:  e.srv.URL,
		DialContext: e.net.dialer(name),
		Token:       token,
		Kube:        &rest.Config{Host: api.URL, Dial: e.net.dialer(name + "-kube")},
		GatewayKeys: e.gwPub,
		Cluster:     "prod",
		Name:        name,
		Version:     "test",
		Backoff:     connector.Backoff{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond},
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("connector", name),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := connector.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, name: name, logs: logs, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		c.Run(ctx)
	}()
	e.t.Cleanup(func() {
		r.stop()
		if e.t.Failed() {
			e.t.Logf("connector %s logs:\n%s", name, logs.String())
		}
	})
	return r
}

func staticToken(tok string) func() (string, error) {
	return func() (string, error) { return tok, nil }
}

// callerToken may list pods of cluster prod.
func (e *env) callerToken() string {
	e.t.Helper()
	tok, err := e.issuer.IssueCaller(auth.IssueOptions{Subject: "alice", Clusters: []string{"prod"}, TTL: time.Hour,
		Rules: []auth.Rule{{Verbs: []string{"get", "list"}, Resources: []string{"pods"}}}})
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// listPods asks the gateway for the pods of prod and returns the status and who served them.
func (e *env) listPods(token string) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.srv.URL+"/clusters/prod/api/v1/namespaces/default/pods", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.net.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if i := bytes.Index(b, []byte(`"servedBy":"`)); i >= 0 {
		rest := b[i+len(`"servedBy":"`):]
		return resp.StatusCode, string(rest[:bytes.IndexByte(rest, '"')])
	}
	return resp.StatusCode, string(b)
}

// waitConnectors waits until cluster prod has n live tunnels.
func (e *env) waitConnectors(n int, within time.Duration) {
	e.t.Helper()
	wait.Until(e.t, within, fmt.Sprintf("%d tunnels (have %d)", n, e.g.Connectors("prod")), func() bool { return e.g.Connectors("prod") == n })
}

// rogue dials a tunnel the way any WebSocket client can, with the headers given, and answers every request over it
// with a forged PodList. It returns nil and the refusal when the gateway refuses.
func (e *env) rogue(header http.Header) (*tunnel.Session, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := tunnel.Dial(ctx, "ws"+strings.TrimPrefix(e.srv.URL, "http")+"/connect", tunnel.DialOptions{Header: header})
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[{"metadata":{"name":"forged"}}],"servedBy":"rogue"}`)
	})}
	go srv.Serve(s)
	e.t.Cleanup(func() {
		s.Close()
		srv.Close()
	})
	return s, nil
}

// memAudit keeps audit records in memory.
type memAudit struct {
	mu   sync.Mutex
	recs []audit.Record
}

func (m *memAudit) Write(r audit.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, r)
	return nil
}

func (m *memAudit) records() []audit.Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]audit.Record(nil), m.recs...)
}
