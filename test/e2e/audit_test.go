package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/gateway/limit"
)

func readAudit(t *testing.T, path string) []audit.Record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []audit.Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

func findRecord(recs []audit.Record, match func(audit.Record) bool) (audit.Record, bool) {
	for _, r := range recs {
		if match(r) {
			return r, true
		}
	}
	return audit.Record{}, false
}

// TestScopesAndAudit is the README's "Scopes and audit" example, checked: a token for get,list pods and create
// pods/exec in one namespace; kubectl allowed and denied; the audit lines at both points; the hash chain verified
// and a tampered line found.
func TestScopesAndAudit(t *testing.T) {
	dir := t.TempDir()
	gwAuditPath, connAuditPath := filepath.Join(dir, "gateway-audit.jsonl"), filepath.Join(dir, "connector-audit.jsonl")
	gwAudit, err := audit.Open(gwAuditPath)
	if err != nil {
		t.Fatal(err)
	}
	connAudit, err := audit.Open(connAuditPath)
	if err != nil {
		t.Fatal(err)
	}
	gs := startGatewayWith(t, "127.0.0.1:0", gatewayOpts{audit: gwAudit})
	startConnector(t, gs, "prod", connectorOpts{name: "a", audit: connAudit})
	gs.waitConnectors("prod", 1, 10*time.Second)

	ns := fmt.Sprintf("payments%d", time.Now().UnixNano()%1e6)
	token := callerToken(t, []string{"prod"}, "get,list:pods:"+ns, "create:pods/exec:"+ns)
	var claims jwt.RegisteredClaims
	jwt.NewParser().ParseUnverified(token, &claims)
	kc := writeKubeconfig(t, gs, "prod", token)

	if out := kubectl(t, kc, "get", "pods", "-n", ns); out != "" {
		t.Fatalf("kubectl get pods: %q", out)
	}
	_, stderr, err := kubectlResult(kc, "get", "secrets", "-n", ns)
	wantDenied := `Error from server (Forbidden): token of "e2e-caller" cannot list resource "secrets" in API group "" in the namespace "` + ns + `" (it needs --rule list:secrets:` + ns + `)`
	if err == nil || strings.TrimSpace(stderr) != wantDenied {
		t.Fatalf("kubectl get secrets: err=%v\nstderr: %s\nwant:   %s", err, stderr, wantDenied)
	}
	// kubectl exec reads the pod first (404 here, there is none); an exec request itself is allowed by warren and
	// answered by the API server.
	_, stderr, err = kubectlResult(kc, "exec", "-n", ns, "evidence-pod", "-c", "app", "--", "sha256sum", "/etc/passwd")
	if err == nil || !strings.Contains(stderr, `pods "evidence-pod" not found`) {
		t.Fatalf("kubectl exec: err=%v stderr=%s", err, stderr)
	}
	got := send(t, rawClient(t, gs), gs, "POST", "/clusters/prod/api/v1/namespaces/"+ns+"/pods/evidence-pod/exec?command=sha256sum&command=%2Fetc%2Fpasswd&container=app&stdout=true", token, nil)
	if got.code != 404 || got.message != `pods "evidence-pod" not found` {
		t.Fatalf("exec request: %d %q, want the API server's 404", got.code, got.message)
	}

	gs.stop() // flushes nothing: records are written as requests end; this just ends the requests
	connAudit.Close()
	gwAudit.Close()
	gw := readAudit(t, gwAuditPath)

	listed, ok := findRecord(gw, func(r audit.Record) bool { return r.Verb == "list" && r.Resource == "pods" && r.Namespace == ns })
	if !ok {
		t.Fatalf("no gateway record of the pod list in %d records", len(gw))
	}
	if listed.Decision != "allow" || listed.Status != 200 || listed.Subject != "e2e-caller" || listed.TokenID != claims.ID ||
		listed.Issuer != "warren" || listed.Cluster != "prod" || listed.BytesOut == 0 || listed.DurationMS <= 0 ||
		listed.RequestID == "" || listed.Component != "gateway" || !strings.HasPrefix(listed.Path, "/clusters/prod/api/v1/namespaces/"+ns+"/pods") {
		t.Fatalf("pod list record: %+v", listed)
	}
	denied, ok := findRecord(gw, func(r audit.Record) bool { return r.Resource == "secrets" && r.Namespace == ns })
	if !ok || denied.Decision != "deny" || denied.Status != 403 || denied.Verb != "list" ||
		denied.Reason != `token of "e2e-caller" cannot list resource "secrets" in API group "" in the namespace "`+ns+`" (it needs --rule list:secrets:`+ns+`)` {
		t.Fatalf("secrets record: %+v (found %v)", denied, ok)
	}
	execed, ok := findRecord(gw, func(r audit.Record) bool { return r.Subresource == "exec" })
	if !ok || execed.Verb != "create" || execed.Name != "evidence-pod" || execed.Container != "app" ||
		strings.Join(execed.Command, " ") != "sha256sum /etc/passwd" || execed.Decision != "allow" {
		t.Fatalf("exec record: %+v (found %v)", execed, ok)
	}

	// The connector audited the same request under the same id, and never saw the denied one.
	conn := readAudit(t, connAuditPath)
	if r, ok := findRecord(conn, func(r audit.Record) bool { return r.RequestID == listed.RequestID }); !ok || r.Component != "connector" ||
		r.Verb != "list" || r.Status != 200 || r.TokenID != claims.ID || r.Subject != "e2e-caller" || len(r.AssertionID) != 32 {
		t.Fatalf("connector record of request %s: %+v (found %v)", listed.RequestID, r, ok)
	}
	if _, ok := findRecord(conn, func(r audit.Record) bool { return r.Resource == "secrets" }); ok {
		t.Fatal("the connector saw the request the gateway denied")
	}

	// The chain holds; an edited line breaks it, and `warren audit verify` says where.
	f, _ := os.Open(gwAuditPath)
	n, err := audit.Verify(f)
	f.Close()
	if err != nil || n != len(gw) {
		t.Fatalf("Verify: %d records, %v", n, err)
	}
	out, err := exec.Command(warrenBinary(t), "audit", "verify", gwAuditPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("%d records, chain intact", n)) {
		t.Fatalf("warren audit verify: %v %s", err, out)
	}
	data, _ := os.ReadFile(gwAuditPath)
	lines := strings.SplitAfter(string(data), "\n")
	target := 1 // the second line: allow -> deny
	lines[target] = strings.Replace(lines[target], `"decision":"allow"`, `"decision":"deny"`, 1)
	tampered := filepath.Join(dir, "tampered.jsonl")
	os.WriteFile(tampered, []byte(strings.Join(lines, "")), 0o600)
	f, _ = os.Open(tampered)
	_, err = audit.Verify(f)
	f.Close()
	var broken *audit.BrokenLinkError
	if !errors.As(err, &broken) || broken.Line != target+2 {
		t.Fatalf("Verify of a tampered log: %v, want the link after line %d broken", err, target+1)
	}
	out, err = exec.Command(warrenBinary(t), "audit", "verify", tampered).CombinedOutput()
	if err == nil || !strings.Contains(string(out), fmt.Sprintf("chain broken at line %d", target+2)) {
		t.Fatalf("warren audit verify of a tampered log: %v %s", err, out)
	}
}

func TestLimits(t *testing.T) {
	lim := limit.New(limit.Config{TokenRate: 1, TokenBurst: 3, TokenStreams: 1})
	gs := startGatewayWith(t, "127.0.0.1:0", gatewayOpts{limits: lim, maxHeaderBytes: 8 << 10})
	startConnector(t, gs, "prod", connectorOpts{name: "a"})
	gs.waitConnectors("prod", 1, 10*time.Second)
	c := rawClient(t, gs)
	token := callerToken(t, []string{"prod"}, allRules...)

	// One watch holds the token's only stream slot.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", gs.url()+"/clusters/prod/api/v1/namespaces/default/configmaps?watch=true", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first watch: %v %v", resp, err)
	}
	defer resp.Body.Close()
	if got := send(t, c, gs, "GET", "/clusters/prod/api/v1/namespaces/default/pods?watch=true", token, nil); got.code != 429 ||
		got.message != "too many concurrent streams (watch, exec, attach, port-forward, logs, proxy) for this token (at most 1 at once)" {
		t.Fatalf("second watch: %d %q", got.code, got.message)
	}
	// The burst of 3 was spent by the two watches and one more request; the next is refused with Retry-After.
	send(t, c, gs, "GET", "/clusters/prod/version", token, nil)
	req, _ = http.NewRequest("GET", gs.url()+"/clusters/prod/version", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	r2, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != 429 || r2.Header.Get("Retry-After") != "1" {
		t.Fatalf("over the token rate: %d Retry-After %q", r2.StatusCode, r2.Header.Get("Retry-After"))
	}
	// Oversized headers get 431 as a Kubernetes Status.
	big := http.Header{"X-Padding": {strings.Repeat("a", 10<<10)}}
	if got := send(t, c, gs, "GET", "/clusters/prod/version", token, big); got.code != 431 ||
		!strings.HasPrefix(got.message, "request headers are ") || !strings.HasSuffix(got.message, "bytes, more than the 8192 allowed") {
		t.Fatalf("oversized headers: %d %q", got.code, got.message)
	}
}
