package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimachineryhttpstream "k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	clientexec "k8s.io/client-go/util/exec"
	streamhttp "k8s.io/streaming/pkg/httpstream"

	"github.com/warren-dev/warren/audit"
)

// The client-go side of the streaming matrix: exec and attach with the SPDY, WebSocket and Fallback executors, and
// logs -f, through gateway and connector to the real apiserver and the fake kubelet.

// isExec matches the gateway's or connector's record of an exec whose command contains marker.
func isExec(marker string) func(audit.Record) bool {
	return func(r audit.Record) bool {
		return r.Subresource == "exec" && strings.Contains(strings.Join(r.Command, " "), marker)
	}
}

// checkUpgradeRecord checks the gateway's record of a streaming session: allowed, 101, with the method that names the
// protocol (POST: SPDY, GET: WebSocket), and a create verb as Kubernetes authorizes both.
func checkUpgradeRecord(t *testing.T, rec audit.Record, method, subresource string) {
	t.Helper()
	if rec.Decision != audit.DecisionAllow || rec.Status != http.StatusSwitchingProtocols || rec.Method != method ||
		rec.Verb != "create" || rec.Subresource != subresource || rec.Container != containerOf(subresource) {
		t.Fatalf("gateway record: decision %s status %d method %s verb %s subresource %s container %q; want allow 101 %s create %s",
			rec.Decision, rec.Status, rec.Method, rec.Verb, rec.Subresource, rec.Container, method, subresource)
	}
}

func containerOf(subresource string) string {
	if subresource == "portforward" {
		return ""
	}
	return "main"
}

func TestStreamExecClientGo(t *testing.T) {
	e := newStreamEnv(t)
	pod := sleeper(t).Name
	ctx := context.Background()
	stdin := payload(10 << 20)
	stdinSum := sha256hex(stdin)

	for _, kind := range executorKinds {
		t.Run(kind.name, func(t *testing.T) {
			for _, tc := range []struct {
				name             string
				script           string
				stdin            []byte
				wantOut, wantErr string
				wantCode         int
				wantBytesIn      int // at least this many bytes from the client through the gateway
			}{
				{name: "exit0", script: "printf 'out\\n'; printf 'err\\n' >&2", wantOut: "out\n", wantErr: "err\n"},
				{name: "exit7", script: "printf 'out\\n'; printf 'err\\n' >&2; exit 7", wantOut: "out\n", wantErr: "err\n", wantCode: 7},
				{name: "stdin10MB", script: "sha256sum", stdin: stdin, wantOut: stdinSum + "  -\n", wantBytesIn: len(stdin)},
			} {
				t.Run(tc.name, func(t *testing.T) {
					marker := uniqueName("m")
					cmd := []string{"sh", "-c", tc.script + " # " + marker}
					var in io.Reader
					if tc.stdin != nil {
						in = bytes.NewReader(tc.stdin)
					}
					start := time.Now()
					res := e.runExec(ctx, t, kind, pod, cmd, in)
					took := time.Since(start)
					if res.stdout != tc.wantOut || res.stderr != tc.wantErr || exitCode(res.err) != tc.wantCode {
						t.Fatalf("stdout %q stderr %q exit %d (err %v); want %q %q %d",
							res.stdout, res.stderr, exitCode(res.err), res.err, tc.wantOut, tc.wantErr, tc.wantCode)
					}
					if tc.wantCode != 0 {
						var ce clientexec.CodeExitError
						if !errors.As(res.err, &ce) || ce.Code != tc.wantCode {
							t.Fatalf("error %T %v, want a CodeExitError with code %d", res.err, res.err, tc.wantCode)
						}
					}
					rec := e.gwAudit.wait(t, "exec "+marker, isExec(marker))
					checkUpgradeRecord(t, rec, kind.method, "exec")
					if rec.BytesIn < int64(tc.wantBytesIn) {
						t.Fatalf("gateway counted %d bytes in, want at least %d", rec.BytesIn, tc.wantBytesIn)
					}
					t.Logf("%s %s: %v, gateway bytes in/out %d/%d", kind.name, tc.name, took.Round(time.Millisecond), rec.BytesIn, rec.BytesOut)
				})
			}

			t.Run("tty-resize", func(t *testing.T) {
				marker := uniqueName("m")
				// The shell waits for each size to reach the terminal: sizes travel on their own stream, so their
				// order with the output is not fixed, and the test must not sleep.
				script := `until [ "$(stty size)" = "24 80" ]; do sleep 0.02; done; echo ready; ` +
					`until [ "$(stty size)" = "30 100" ]; do sleep 0.02; done; stty size # ` + marker
				u := execURL(e.cs, pod, &corev1.PodExecOptions{Command: []string{"sh", "-c", script}, Stdout: true, TTY: true})
				ex, err := kind.new(e.cfg, u)
				if err != nil {
					t.Fatal(err)
				}
				sizes := make(sizeQueue, 2)
				defer close(sizes)
				sizes <- remotecommand.TerminalSize{Width: 80, Height: 24}
				out := &watchWriter{want: "ready\r\n", seen: make(chan struct{})}
				go func() {
					select {
					case <-out.seen:
						sizes <- remotecommand.TerminalSize{Width: 100, Height: 30}
					case <-time.After(30 * time.Second):
					}
				}()
				err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: out, Tty: true, TerminalSizeQueue: sizes})
				if got := out.String(); err != nil || got != "ready\r\n30 100\r\n" {
					t.Fatalf("tty output %q, err %v; want %q", got, err, "ready\r\n30 100\r\n")
				}
				checkUpgradeRecord(t, e.gwAudit.wait(t, "tty exec", isExec(marker)), kind.method, "exec")
			})

			t.Run("attach-stdin", func(t *testing.T) {
				p := attachable(t)
				u := attachURL(e.cs, p.Name, &corev1.PodAttachOptions{Stdin: true, Stdout: true, Stderr: true})
				ex, err := kind.new(e.cfg, u)
				if err != nil {
					t.Fatal(err)
				}
				var out, errOut bytes.Buffer
				err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader("hello\nworld\n"), Stdout: &out, Stderr: &errOut})
				if err != nil || out.String() != "got:hello\ngot:world\n" || errOut.String() != "bye\n" {
					t.Fatalf("attach: stdout %q stderr %q err %v", out.String(), errOut.String(), err)
				}
				rec := e.gwAudit.wait(t, "attach", func(r audit.Record) bool { return r.Subresource == "attach" && r.Name == p.Name })
				checkUpgradeRecord(t, rec, kind.method, "attach")
			})
		})
	}
}

// attachable is a pod whose main process reads its stdin (stdinOnce: the first attach session's stdin is the
// process's): it echoes each line as "got:LINE", then "bye" on stderr at EOF, and exits 0.
func attachable(t *testing.T) *corev1.Pod {
	return startPod(t, "attach", corev1.Container{
		Command:   []string{"sh", "-c", `while read l; do echo "got:$l"; done; echo bye >&2`},
		Stdin:     true,
		StdinOnce: true,
	})
}

// watchWriter collects output and closes seen once it contains want.
type watchWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// followPod is a pod that logs "start", waits for /tmp/go to exist in its container, logs "after" and exits 0: a
// follower sees "after" only if it kept the stream open. trigger is that file as seen from this machine.
func followPod(t *testing.T) (pod *corev1.Pod, trigger string) {
	pod = startPod(t, "follow", corev1.Container{Command: []string{"sh", "-c",
		`echo start; until [ -e /tmp/go ]; do sleep 0.02; done; echo after`}})
	return pod, containerPath(t, pod, "main", "/tmp/go")
}

func TestStreamLogsFollowClientGo(t *testing.T) {
	e := newStreamEnv(t)
	pod, trigger := followPod(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rc, err := e.cs.CoreV1().Pods(streamNS).GetLogs(pod.Name, &corev1.PodLogOptions{Container: "main", Follow: true}).Stream(ctx)
	if err != nil {
		t.Fatalf("logs -f: %v", err)
	}
	defer rc.Close()
	br := bufio.NewReader(rc)
	if line, err := br.ReadString('\n'); line != "start\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	if err := os.WriteFile(trigger, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br) // ends when the container exits
	if err != nil || string(rest) != "after\n" {
		t.Fatalf("rest of the log %q, %v; want %q", rest, err, "after\n")
	}
	rec := e.gwAudit.wait(t, "logs -f", func(r audit.Record) bool { return r.Subresource == "log" && r.Name == pod.Name })
	if rec.Status != http.StatusOK || rec.Method != http.MethodGet || rec.Verb != "get" || !strings.Contains(rec.Path, "follow=true") {
		t.Fatalf("gateway record %+v", rec)
	}
}

// TestStreamFallbackPredicate puts a proxy that refuses WebSocket upgrades (as some corporate proxies do) in front
// of the gateway. kubectl's Fallback executor then speaks SPDY and works, but only with the predicate from
// k8s.io/streaming: client-go's WebSocket round tripper returns that module's UpgradeFailureError, which
// apimachinery's same-named IsUpgradeFailure does not recognise, so a fallback built on it never falls back.
func TestStreamFallbackPredicate(t *testing.T) {
	e := newStreamEnv(t)
	pod := sleeper(t).Name
	cfg := webSocketBlocker(t, e)
	cs := clientset(t, cfg) // builds the URLs: through the blocker
	ctx := context.Background()

	t.Run("streaming-predicate", func(t *testing.T) {
		marker := uniqueName("m")
		u := execURL(cs, pod, &corev1.PodExecOptions{Command: []string{"sh", "-c", "printf via-fallback # " + marker}, Stdout: true, Stderr: true})
		ex, err := newFallbackExecutor(cfg, u, shouldFallback)
		if err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut}); err != nil || out.String() != "via-fallback" {
			t.Fatalf("fallback exec: %q %q %v", out.String(), errOut.String(), err)
		}
		checkUpgradeRecord(t, e.gwAudit.wait(t, "fallback exec", isExec(marker)), http.MethodPost, "exec")
	})

	t.Run("apimachinery-predicate", func(t *testing.T) {
		marker := uniqueName("m")
		u := execURL(cs, pod, &corev1.PodExecOptions{Command: []string{"sh", "-c", "printf never # " + marker}, Stdout: true})
		ex, err := newFallbackExecutor(cfg, u, func(err error) bool {
			return apimachineryhttpstream.IsUpgradeFailure(err) || apimachineryhttpstream.IsHTTPSProxyError(err)
		})
		if err != nil {
			t.Fatal(err)
		}
		err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: io.Discard})
		if !streamhttp.IsUpgradeFailure(err) || apimachineryhttpstream.IsUpgradeFailure(err) {
			t.Fatalf("error %T %v: want a k8s.io/streaming upgrade failure that apimachinery does not recognise", err, err)
		}
		t.Logf("with apimachinery's predicate the executor gives up: %v", err)
		if _, ok := e.gwAudit.find(isExec(marker)); ok {
			t.Fatal("the exec reached the gateway: it fell back after all")
		}
	})

	t.Run("port-forward", func(t *testing.T) {
		ps := startPodServer(t)
		p := sleeper(t).Name
		u := portForwardURL(cs, p)
		f := forward(t, dialerKinds[2].new(t, cfg, u), ps.port)
		checkForwardedHTTP(t, f.local, ps)
		f.stop()
		rec := e.gwAudit.wait(t, "port-forward", func(r audit.Record) bool { return r.Subresource == "portforward" && r.Name == p })
		checkUpgradeRecord(t, rec, http.MethodPost, "portforward")
	})

	t.Run("kubectl", func(t *testing.T) {
		marker := uniqueName("m")
		kc := writeKubeconfigAt(t, cfg.Host, cfg.CAData, e.token)
		out, errOut, err := kubectlEnv(nil, kc, "exec", pod, "-c", "main", "--", "sh", "-c", "printf via-kubectl # "+marker)
		if err != nil || out != "via-kubectl" {
			t.Fatalf("kubectl exec through a WebSocket-refusing proxy: %q %q %v", out, errOut, err)
		}
		checkUpgradeRecord(t, e.gwAudit.wait(t, "kubectl exec", isExec(marker)), http.MethodPost, "exec")
	})
}

// webSocketBlocker starts a TLS reverse proxy in front of e's gateway that answers 400 to WebSocket upgrades and
// passes everything else (SPDY upgrades too), and returns a caller config through it.
func webSocketBlocker(t *testing.T, e *streamEnv) *rest.Config {
	t.Helper()
	target, _ := url.Parse(e.gs.url())
	gwTLS, err := rest.TLSConfigFor(&rest.Config{TLSClientConfig: rest.TLSClientConfig{CAFile: e.gs.caFile}})
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: gwTLS}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: tr,
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "this proxy does not pass WebSocket", http.StatusBadRequest)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	srv.StartTLS()
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		tr.CloseIdleConnections()
	})
	cfg := rest.CopyConfig(e.cfg)
	cfg.Host = srv.URL + "/clusters/" + streamCluster
	cfg.TLSClientConfig = rest.TLSClientConfig{CAData: pemCert(srv.Certificate().Raw)}
	return cfg
}
