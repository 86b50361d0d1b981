package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/testenv/wait"
)

// Streams that outlive their token's validity: a token revoked (or, with --disconnect-expired-tokens, expired)
// while its exec, port-forward, watch and logs -f are open loses them within the re-check interval, at the gateway
// and at the connector, and the clients are told why where their protocol can say it.

// revokeRules are streamRules plus watching config maps.
var revokeRules = append([]string{"list,watch:configmaps:" + streamNS}, streamRules...)

// useToken makes the environment's client-go config, clientset and kubeconfig use token.
func (e *streamEnv) useToken(t *testing.T, token string) {
	t.Helper()
	e.token = token
	e.cfg = callerConfig(e.gs, streamCluster, token)
	e.cfg.Timeout = 0
	e.cs = clientset(t, e.cfg)
	e.kc = writeKubeconfig(t, e.gs, streamCluster, token)
}

// tokenFor issues a caller token for the stream cluster with rules, valid for ttl, and returns it with its id.
func tokenFor(t *testing.T, ttl time.Duration, rules ...string) (token, id string) {
	t.Helper()
	tok := callerTokenFor(t, []string{streamCluster}, ttl, rules...)
	ks, err := auth.LoadPublicKeys(filepath.Join(keysDir, auth.PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err := callerVerifier(t, ks, "", 0, false).Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	return tok, c.ID
}

// ended is how one stream of a test ended.
type ended struct {
	what string
	err  error
	at   time.Time
}

// TestStreamRevocationEndsStreams: one token holds a `kubectl logs -f`, a watch, a client-go exec over SPDY and one
// over WebSocket, and a port-forward over each; its id is written to the revocation list (the gateway's and the
// connector's, as deployed, with the default 5 s re-check). Each stream ends within the interval: the execs with
// the reason, the port-forwards as lost, the watch and logs -f cleanly; the remote processes end; the audit says
// why; and the token is refused from then on. On the old code all of them ran on (until the 12 h maximum).
func TestStreamRevocationEndsStreams(t *testing.T) {
	revoked := filepath.Join(t.TempDir(), "revoked-tokens")
	if err := os.WriteFile(revoked, nil, 0o644); err != nil { // it must exist; empty revokes nothing
		t.Fatal(err)
	}
	e := newStreamEnvWith(t, gatewayOpts{revoked: revoked})
	tok, id := tokenFor(t, time.Hour, revokeRules...)
	e.useToken(t, tok)
	pod := sleeper(t).Name
	ticker := startPod(t, "ticker", corev1.Container{Command: []string{"sh", "-c", "echo start; while true; do sleep 1; echo tick; done"}})
	results := make(chan ended, 8)
	var markers []string

	// Two execs that would run for an hour.
	for _, kind := range executorKinds[:2] {
		marker := uniqueName("revoke")
		markers = append(markers, marker)
		u := execURL(e.cs, pod, &corev1.PodExecOptions{Command: []string{"sh", "-c", "echo started; sleep 3600; echo unreachable # " + marker}, Stdout: true, Stderr: true})
		ex, err := kind.new(e.cfg, u)
		if err != nil {
			t.Fatal(err)
		}
		out := &watchWriter{want: "started\n", seen: make(chan struct{})}
		go func() {
			err := ex.StreamWithContext(context.Background(), remotecommand.StreamOptions{Stdout: out, Stderr: io.Discard})
			results <- ended{"exec " + kind.name, err, time.Now()}
		}()
		select {
		case <-out.seen:
		case <-time.After(30 * time.Second):
			t.Fatalf("exec %s: no output within 30s", kind.name)
		}
	}
	// Two port-forwards.
	ps := startPodServer(t)
	for _, kind := range dialerKinds[:2] {
		f := forward(t, kind.new(t, e.cfg, portForwardURL(e.cs, pod)), ps.port)
		if got := httpGet(t, &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, fmt.Sprintf("http://127.0.0.1:%d/hello?n=1", f.local)); got != "hello 1" {
			t.Fatalf("port-forward %s: %q", kind.name, got)
		}
		go func() {
			<-f.done
			results <- ended{"port-forward " + kind.name, f.err, time.Now()}
		}()
	}
	// A watch.
	w, err := e.cs.CoreV1().ConfigMaps(streamNS).Watch(context.Background(), metav1.ListOptions{LabelSelector: "revoke=" + id})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	go func() {
		var err error
		for ev := range w.ResultChan() {
			if ev.Type == "ERROR" {
				err = apierrors.FromObject(ev.Object)
			}
		}
		results <- ended{"watch", err, time.Now()}
	}()
	// kubectl logs -f.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logs := kubectlCommand(ctx, e.kc, "logs", "-f", ticker.Name, "-c", "main")
	stdout, err := logs.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var logsErr logBuffer
	logs.Stderr = &logsErr
	if err := logs.Start(); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(stdout)
	if line, err := br.ReadString('\n'); line != "start\n" {
		t.Fatalf("kubectl logs -f: %q %v (stderr %q)", line, err, logsErr.String())
	}
	go func() {
		io.Copy(io.Discard, br)
		results <- ended{"kubectl logs -f", logs.Wait(), time.Now()}
	}()

	old, _ := os.ReadFile(revoked)
	if err := os.WriteFile(revoked, append(old, []byte(id+"\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	reason := `warren: token "` + id + `" has been revoked`
	want := map[string]func(error) bool{
		"exec spdy": func(err error) bool { return err != nil && err.Error() == reason },
		"exec websocket": func(err error) bool {
			return err != nil && err.Error() == "error reading from error stream: next reader: websocket: close 1008 (policy violation): "+reason
		},
		"port-forward spdy":      func(err error) bool { return errors.Is(err, portforward.ErrLostConnectionToPod) },
		"port-forward websocket": func(err error) bool { return errors.Is(err, portforward.ErrLostConnectionToPod) },
		"watch":                  func(err error) bool { return err == nil }, // the result channel closes cleanly
		"kubectl logs -f":        func(err error) bool { return err == nil && logsErr.String() == "" },
	}
	var slowest time.Duration
	for range len(want) {
		select {
		case r := <-results:
			took := r.at.Sub(revokedAt)
			slowest = max(slowest, took)
			t.Logf("%s ended %v after the revocation: %v", r.what, took.Round(time.Millisecond), r.err)
			if !want[r.what](r.err) {
				t.Errorf("%s ended with %v (stderr %q)", r.what, r.err, logsErr.String())
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("streams still open 20s after the revocation (re-check every %v)", auth.DefaultCheckInterval)
		}
	}
	t.Logf("all six streams ended within %v of the revocation (re-check interval %v)", slowest.Round(time.Millisecond), auth.DefaultCheckInterval)
	for _, m := range markers {
		wait.Until(t, 10*time.Second, "the remote process ends", func() bool { return len(procsWith(m)) == 0 })
	}
	// Each stream's record at the gateway or the connector (whichever noticed first) says why it ended.
	// The connector says it in its own words (it re-checks the token id the assertion named).
	note := "ended: " + strings.TrimPrefix(reason, "warren: ")
	connNote := fmt.Sprintf("ended: the caller's token %q has been revoked", id)
	for _, sub := range []string{"exec", "portforward", "log"} {
		match := func(r audit.Record) bool { return r.Subresource == sub && (r.Reason == note || r.Reason == connNote) }
		wait.Until(t, 15*time.Second, "an audit record of "+sub+" with the reason", func() bool {
			_, g := e.gwAudit.find(match)
			_, c := e.connAudit.find(match)
			return g || c
		})
	}
	// From now on the token is refused.
	_, err = e.cs.CoreV1().Pods(streamNS).Get(context.Background(), pod, metav1.GetOptions{})
	if !apierrors.IsUnauthorized(err) || !strings.Contains(err.Error(), `token "`+id+`" has been revoked`) {
		t.Fatalf("a new request with the revoked token: %v", err)
	}
}

// TestStreamExpiredTokens: with --disconnect-expired-tokens an exec ends when its token expires, and the client is
// told so; without it (the default) an exec outlives its token and keeps working, while new requests with the
// token are refused.
func TestStreamExpiredTokens(t *testing.T) {
	t.Run("disconnect", func(t *testing.T) {
		e := newStreamEnvWith(t, gatewayOpts{disconnectExpired: true, streamCheck: time.Second, leeway: -1})
		pod := sleeper(t).Name
		for _, kind := range executorKinds[:2] {
			t.Run(kind.name, func(t *testing.T) {
				tok, _ := tokenFor(t, 8*time.Second, streamRules...)
				e.useToken(t, tok)
				start := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // the token is long expired by then
				defer cancel()
				res := e.runExec(ctx, t, kind, pod, []string{"sleep", "3600"}, nil)
				t.Logf("%s: the exec ended %v after it started (token valid for 8s from before): %v", kind.name, time.Since(start).Round(time.Millisecond), res.err)
				prefix := map[string]string{
					"spdy":      "warren: token expired at ",
					"websocket": "error reading from error stream: next reader: websocket: close 1008 (policy violation): warren: token expired at ",
				}[kind.name]
				if res.err == nil || !strings.HasPrefix(res.err.Error(), prefix) {
					t.Fatalf("exec ended with %v, want %q…", res.err, prefix)
				}
			})
		}
	})
	t.Run("default", func(t *testing.T) {
		e := newStreamEnvWith(t, gatewayOpts{streamCheck: time.Second, leeway: -1})
		pod := sleeper(t).Name // before the token: on a loaded machine a pod's start may take longer than its ttl
		const ttl = 4 * time.Second
		tok, _ := tokenFor(t, ttl, streamRules...)
		e.useToken(t, tok)
		u := execURL(e.cs, pod, &corev1.PodExecOptions{Command: []string{"cat"}, Stdin: true, Stdout: true, Stderr: true})
		ex, err := executorKinds[1].new(e.cfg, u)
		if err != nil {
			t.Fatal(err)
		}
		stdin, stdinW := io.Pipe()
		defer stdinW.Close() // also ends a write of the goroutines below that nobody read
		out := &watchWriter{want: "after expiry\n", seen: make(chan struct{})}
		done := make(chan error, 1)
		go func() {
			done <- ex.StreamWithContext(context.Background(), remotecommand.StreamOptions{Stdin: stdin, Stdout: out, Stderr: io.Discard})
		}()
		issued := time.Now()
		go fmt.Fprintln(stdinW, "before expiry") // returns once the session read it
		wait.Until(t, 30*time.Second, "the exec echoes", func() bool { return strings.Contains(out.String(), "before expiry\n") })
		time.Sleep(time.Until(issued.Add(ttl + 3*time.Second))) // past the expiry and several re-checks: nothing must happen
		select {
		case err := <-done:
			t.Fatalf("the exec of an expired token ended without --disconnect-expired-tokens: %v", err)
		default:
		}
		go fmt.Fprintln(stdinW, "after expiry")
		select {
		case <-out.seen:
		case err := <-done:
			t.Fatalf("exec ended: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("the exec stopped answering after its token expired")
		}
		_, err = e.cs.CoreV1().Pods(streamNS).Get(context.Background(), pod, metav1.GetOptions{})
		if !apierrors.IsUnauthorized(err) || !strings.Contains(err.Error(), "invalid caller token: token expired at ") {
			t.Fatalf("a new request with the expired token: %v", err)
		}
		stdinW.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("exec after stdin closed: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the exec did not end within 30s of its stdin closing")
		}
	})
}
