package connector

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/warren-dev/warren/tunnel"
)

func restConfigForTest() *rest.Config { return &rest.Config{Host: "https://127.0.0.1:1"} }

func TestLoadOrCreateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	k1, created, err := LoadOrCreateKey(dir)
	if err != nil || !created {
		t.Fatalf("first start: created=%v err=%v", created, err)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Fatalf("state directory mode %v, want 0700", di.Mode().Perm())
	}
	k2, created, err := LoadOrCreateKey(dir)
	if err != nil || created || !k1.Equal(k2) {
		t.Fatalf("restart: same key %v, created=%v err=%v", k1.Equal(k2), created, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("state directory holds %d files, want only %s", len(entries), KeyFile)
	}
	// A damaged key is an error that says what to do, never silently a new identity.
	os.WriteFile(filepath.Join(dir, KeyFile), []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), 0o600)
	_, _, err = LoadOrCreateKey(dir)
	if want := `connector key ` + filepath.Join(dir, KeyFile) + `: not a PEM "PRIVATE KEY"; delete it to make a new identity`; err == nil || err.Error() != want {
		t.Fatalf("damaged key: %v, want %q", err, want)
	}
}

func TestDescribeJoinAndTunnelRefusals(t *testing.T) {
	join := func(code int, msg string) error {
		return &JoinError{tunnel.HandshakeError{StatusCode: code, Message: msg}}
	}
	cases := []struct {
		err  error
		want string
	}{
		{join(401, "invalid connector token: token expired at 2026-11-25T10:00:00Z"),
			"gateway refused the connector token: issue a new one with `warren token connector` and update --token-file"},
		{join(401, `invalid proof of possession: proof of possession was issued at 2026-11-25T10:00:00Z, more than 1m0s from the gateway's time`),
			"gateway refused the connector's proof of possession: check the connector's clock"},
		{join(403, `connector identity "x" has been revoked`),
			"gateway revoked this connector's identity: once the cause is dealt with, delete connector.key in --state-dir to make a new one"},
		{join(429, `cluster "prod" already has 8 connector identities`), "gateway refused the join"},
		{join(404, `no such path "/connect/join"`), "the gateway has no /connect/join: it predates connector identities; upgrade the gateway to this connector's version"},
		{&tunnel.HandshakeError{StatusCode: 401, Message: "invalid connector credential: expired"}, "gateway refused the connector credential: joining again"},
		{&tunnel.HandshakeError{StatusCode: 429, Message: "too many tunnels"}, "gateway refused the tunnel"},
	}
	for _, c := range cases {
		if got := describe(c.err); got != c.want {
			t.Errorf("describe(%v) = %q, want %q", c.err, got, c.want)
		}
	}
	if got := join(401, "invalid connector token: x").Error(); got != "gateway refused the join: 401 Unauthorized: invalid connector token: x" {
		t.Errorf("JoinError text %q", got)
	}
	var je *JoinError
	if !errors.As(error(join(429, "x")), &je) {
		t.Fatal("JoinError does not match itself")
	}
}

func TestLearnClock(t *testing.T) {
	c := &Connector{}
	sent := time.Now()
	resp := &http.Response{Header: http.Header{"Date": {sent.Add(-3 * time.Minute).UTC().Format(http.TimeFormat)}}}
	moved := c.learnClock(resp, sent)
	if moved > -2*time.Minute-58*time.Second || moved < -3*time.Minute-time.Second {
		t.Fatalf("moved %v, want about -3m", moved)
	}
	if d := time.Until(c.gatewayNow()); d > -2*time.Minute-58*time.Second || d < -3*time.Minute-time.Second {
		t.Fatalf("gateway time %v from ours, want about -3m", d)
	}
	// No Date, no change.
	if moved := c.learnClock(&http.Response{Header: http.Header{}}, time.Now()); moved != 0 {
		t.Fatalf("without Date the clock moved %v", moved)
	}
}

func TestJoinURLs(t *testing.T) {
	c, err := New(Config{GatewayURL: "https://gw.example.com:8443/warren/", Token: func() (string, error) { return "", nil },
		Cluster: "prod", Kube: restConfigForTest(), GatewayKeys: newBenchKeys(t)})
	if err != nil {
		t.Fatal(err)
	}
	if c.connectURL != "https://gw.example.com:8443/warren/connect" || c.joinURL != "https://gw.example.com:8443/warren/connect/join" {
		t.Fatalf("connect %q join %q", c.connectURL, c.joinURL)
	}
	if len(c.Identity()) != 43 || strings.ContainsAny(c.Identity(), "+/=") {
		t.Fatalf("identity %q is not a thumbprint", c.Identity())
	}
}
