package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/internal/testenv/wait"
)

// Streams under stress: a reader that stops, a client that leaves, many sessions at once, the audit of a session,
// the maximum stream length and a connector that goes away.

// heapInuse returns the bytes in in-use heap spans, after a collection when gc is set (then it is the live heap,
// give or take fragmentation).
func heapInuse(gc bool) uint64 {
	if gc {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

const mib = 1 << 20

// heapProfile writes a heap profile to $WARREN_E2E_HEAPPROFILE/heap-NAME.pprof when that variable is set.
func heapProfile(t *testing.T, name string) {
	dir := os.Getenv("WARREN_E2E_HEAPPROFILE")
	if dir == "" {
		return
	}
	f, err := os.Create(filepath.Join(dir, "heap-"+name+".pprof"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Fatal(err)
	}
}

// TestStreamSlowReaderBoundedMemory runs an exec that writes far more than its client reads: kubectl (a separate
// process, so that this process's heap is the gateway's and the connector's, plus the test) writes its stdout into
// a pipe the test stops reading. The producer on the fake kubelet must stall, and the gateway and connector must not
// buffer what it would have written. WARREN_E2E_HEAPPROFILE=DIR writes heap profiles before and during the stall.
//
// Why the bound holds: neither hop buffers a stream beyond yamux's window. httputil.ReverseProxy copies an upgraded
// connection through one fixed buffer each way and writes before it reads again; yamux lets the connector send a
// stream no more than its receive window (tunnel.Config.StreamWindow) ahead of the gateway's reads, and the gateway
// reads only as fast as it can write to the caller's TCP connection. Once kubectl stops reading, its socket buffer
// fills, the gateway's write blocks, the window closes, the connector's write blocks, and the rest of the backlog
// waits in kernel socket buffers (API server, kubelet) until the producer's pipe is full. So a stalled stream costs
// the gateway at most one window of unread data (yamux keeps it in a bytes.Buffer, whose backing array may grow to
// about twice that) and the connector a few copy buffers. With the 16 MiB default window that is < 40 MiB; it was
// < 1 MiB with a 256 KiB window.
func TestStreamSlowReaderBoundedMemory(t *testing.T) {
	for _, mode := range remoteCommandModes {
		t.Run(mode.name, func(t *testing.T) {
			// A gateway and connector of its own: the previous case's are closed, with whatever they held.
			e := newStreamEnv(t)
			pod := sleeper(t).Name
			marker := uniqueName("flood")
			// yes's command line carries the marker, so the test finds it and reads how much it has written.
			script := "yes " + marker + " | head -c 4000000000"
			base := heapInuse(true)
			heapProfile(t, mode.name+"-base")

			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer pr.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cmd := kubectlCommand(ctx, e.kc, "exec", pod, "-c", "main", "--", "sh", "-c", script)
			cmd.Env = append(cmd.Env, mode.env...)
			var errOut logBuffer
			cmd.Stdout, cmd.Stderr = pw, &errOut
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pw.Close()
			waited := make(chan error, 1)
			go func() { waited <- cmd.Wait() }()
			defer func() {
				cancel()
				<-waited
			}()

			// The stream flows: read the first MiB, and check it is the producer's output.
			first := make([]byte, mib)
			if _, err := io.ReadFull(pr, first); err != nil {
				t.Fatalf("reading the first MiB: %v (kubectl stderr %q)", err, errOut.String())
			}
			if want := marker + "\n"; !strings.HasPrefix(string(first), want+want) {
				t.Fatalf("output starts %q", first[:64])
			}

			// Stop reading. The producer must stall: its written bytes stop growing for a second.
			peak := base
			yesPid, last := waitProducerStalled(t, marker, func() {
				if h := heapInuse(false); h > peak {
					peak = h
				}
			})
			live := heapInuse(true)
			heapProfile(t, mode.name+"-stalled")
			if live > peak {
				peak = live
			}
			t.Logf("%s: producer stalled after writing %.1f MiB (the client read 1 MiB); heap in use: %.1f MiB before, "+
				"peak %.1f MiB (+%.1f), live while stalled %.1f MiB (%+.1f)", mode.name, float64(last)/mib,
				float64(base)/mib, float64(peak)/mib, (float64(peak)-float64(base))/mib, float64(live)/mib,
				(float64(live)-float64(base))/mib)
			if last >= 4000000000 {
				t.Fatal("the producer wrote everything: nothing stalled it")
			}
			if growth := int64(live) - int64(base); growth > 64*mib {
				t.Fatalf("live heap grew by %.1f MiB while the stream was stalled, want < 64 MiB", float64(growth)/mib)
			}
			if growth := int64(peak) - int64(base); growth > 128*mib {
				t.Fatalf("heap in use peaked %.1f MiB above the baseline, want < 128 MiB", float64(growth)/mib)
			}

			// A stalled stream does not hold up the tunnel: other requests on the same connector go through.
			start := time.Now()
			if _, err := e.cs.CoreV1().Pods(streamNS).Get(context.Background(), pod, metav1.GetOptions{}); err != nil {
				t.Fatalf("get pod while a stream is stalled: %v", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("get pod took %v while a stream was stalled", d)
			}

			// Reading again resumes the stream: flow control, not a broken stream.
			if n, err := io.CopyN(io.Discard, pr, 32*mib); err != nil {
				t.Fatalf("resuming: read %d bytes: %v", n, err)
			}
			if w := procWchar(yesPid); w <= last {
				t.Fatalf("the producer did not resume (wrote %d, was %d)", w, last)
			}

			// Leaving (stalled again: the pipe is full) ends the producer within seconds. The gateway drops the
			// stream; the connector, blocked writing into it with its window spent, is released when the tunnel
			// resets the stream its peer does not close within Config.CloseTimeout (5 s), and the unread window the
			// gateway held is freed. (Before the tunnel's stream Close became a full close, both lasted until
			// yamux's own 5-minute timeout, and the connector's audit record of the session came only then.)
			waitProducerStalled(t, marker, nil)
			cmd.Process.Kill()
			left := time.Now()
			wait.Until(t, 15*time.Second, "the producer ends after kubectl is killed", func() bool { return len(procsWith(marker)) == 0 })
			rec := e.gwAudit.wait(t, "flood exec", isExec(marker))
			checkUpgradeRecord(t, rec, mode.method, "exec")
			wait.Until(t, 15*time.Second, "the connector's handler ends (its audit record)", func() bool {
				_, ok := e.connAudit.find(isExec(marker))
				return ok
			})
			connectorDone := time.Since(left)
			wait.Until(t, 15*time.Second, "the stalled stream's memory is freed", func() bool { return heapInuse(true) < base+8*mib })
			t.Logf("%s: after the client left: connector done in %v, heap back to %+.1f MiB after %v", mode.name,
				connectorDone.Round(time.Millisecond), (float64(heapInuse(true))-float64(base))/mib, time.Since(left).Round(time.Millisecond))
		})
	}
}

// waitProducerStalled finds the `yes MARKER` process on the fake kubelet's side and waits until it has written
// nothing more for a second; each runs on every check. It returns the pid and the bytes written.
func waitProducerStalled(t *testing.T, marker string, each func()) (pid int, written int64) {
	t.Helper()
	wait.Until(t, 10*time.Second, "the producer on the fake kubelet", func() bool {
		for _, p := range procsWith(marker) {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p)); strings.HasPrefix(string(b), "yes\x00") {
				pid = p
				return true
			}
		}
		return false
	})
	written = -1
	lastChange := time.Now()
	wait.Until(t, 90*time.Second, "the producer stalls", func() bool {
		if each != nil {
			each()
		}
		w := procWchar(pid)
		if w != written {
			written, lastChange = w, time.Now()
			return false
		}
		return time.Since(lastChange) > time.Second
	})
	return pid, written
}

// TestStreamClientDisconnect cancels an exec mid-session (client-go) and kills kubectl mid-session: the process on
// the fake kubelet's side ends within seconds, and so do the gateway's, the connector's and the API server's view
// of the request.
func TestStreamClientDisconnect(t *testing.T) {
	e := newStreamEnv(t)
	pod := sleeper(t).Name
	// The shell stays the parent of sleep (not its last command), so the marker stays in a live command line.
	script := func(marker string) []string {
		return []string{"sh", "-c", "echo started; sleep 3600; echo unreachable # " + marker}
	}
	check := func(t *testing.T, marker, method string, left time.Time) {
		t.Helper()
		wait.Until(t, 10*time.Second, "the remote process ends", func() bool { return len(procsWith(marker)) == 0 })
		gone := time.Since(left)
		checkUpgradeRecord(t, e.gwAudit.wait(t, "gateway record", isExec(marker)), method, "exec")
		e.connAudit.wait(t, "connector record", isExec(marker))
		waitKubeAudit(t, "the API server's exec request completes", func(ev kubeAuditEvent) bool {
			return ev.Stage == "ResponseComplete" && strings.Contains(ev.RequestURI, marker)
		})
		t.Logf("remote process gone %v after the client left; API server done %v after", gone.Round(time.Millisecond), time.Since(left).Round(time.Millisecond))
	}

	for _, kind := range executorKinds[:2] {
		t.Run(kind.name, func(t *testing.T) {
			marker := uniqueName("leave")
			u := execURL(e.cs, pod, &corev1.PodExecOptions{Command: script(marker), Stdin: true, Stdout: true, Stderr: true})
			ex, err := kind.new(e.cfg, u)
			if err != nil {
				t.Fatal(err)
			}
			stdin, stdinW := io.Pipe()
			defer stdinW.Close()
			out := &watchWriter{want: "started\n", seen: make(chan struct{})}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: out, Stderr: io.Discard})
			}()
			select {
			case <-out.seen:
			case err := <-done:
				t.Fatalf("exec ended early: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatal("no output within 30s")
			}
			if len(procsWith(marker)) == 0 {
				t.Fatal("the remote process is not running")
			}
			left := time.Now()
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Logf("StreamWithContext returned %v after cancel", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("StreamWithContext did not return within 10s of cancel")
			}
			check(t, marker, kind.method, left)
		})
	}

	t.Run("kubectl-killed", func(t *testing.T) {
		marker := uniqueName("leave")
		cmd := kubectlCommand(context.Background(), e.kc, append([]string{"exec", "-i", pod, "-c", "main", "--"}, script(marker)...)...)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		defer stdin.Close()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		defer cmd.Process.Kill()
		if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "started\n" {
			t.Fatalf("kubectl exec: %q %v", line, err)
		}
		left := time.Now()
		cmd.Process.Signal(syscall.SIGKILL)
		check(t, marker, http.MethodGet, left)
	})
}

// kubeAuditEvent is the part of the API server's audit events these tests read.
type kubeAuditEvent = struct {
	RequestURI, Stage string
}

// waitKubeAudit waits until the API server's audit log has an event that matches (it writes ResponseComplete once
// the handler has returned: for exec, once the stream is over).
func waitKubeAudit(t *testing.T, what string, match func(kubeAuditEvent) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs, err := kube.AuditEvents()
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if match(kubeAuditEvent{ev.RequestURI, ev.Stage}) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(200 * time.Millisecond) // the log is long: parse it less often than eventually would
	}
}

// TestStreamAuditExec checks the gateway's and the connector's records of an exec session: the command, the
// container, the bytes each way (across the upgrade) and the duration.
func TestStreamAuditExec(t *testing.T) {
	e := newStreamEnv(t)
	pod := sleeper(t).Name
	const in, out = 1 << 20, 2000000
	for _, kind := range executorKinds[:2] {
		t.Run(kind.name, func(t *testing.T) {
			marker := uniqueName("audit")
			script := fmt.Sprintf("cat >/dev/null; head -c %d /dev/zero; sleep 0.3 # %s", out, marker)
			start := time.Now()
			res := e.runExec(context.Background(), t, kind, pod, []string{"sh", "-c", script}, strings.NewReader(strings.Repeat("x", in)))
			took := time.Since(start)
			if res.err != nil || len(res.stdout) != out {
				t.Fatalf("exec: %d bytes out, err %v", len(res.stdout), res.err)
			}
			for _, a := range []struct {
				name string
				log  *memAudit
			}{{"gateway", e.gwAudit}, {"connector", e.connAudit}} {
				rec := a.log.wait(t, a.name+" record", isExec(marker))
				if want := []string{"sh", "-c", script}; strings.Join(rec.Command, "\x00") != strings.Join(want, "\x00") || rec.Container != "main" {
					t.Fatalf("%s record: command %q container %q", a.name, rec.Command, rec.Container)
				}
				if rec.Subject != "e2e-caller" || rec.Namespace != streamNS || rec.Name != pod || rec.Verb != "create" ||
					rec.Method != kind.method || rec.Status != http.StatusSwitchingProtocols || rec.Decision != audit.DecisionAllow {
					t.Fatalf("%s record: %+v", a.name, rec)
				}
				// Framing (SPDY frames, WebSocket headers and channel bytes) adds a little to the payload.
				const slack = 64 << 10
				if rec.BytesIn < in || rec.BytesIn > in+slack || rec.BytesOut < out || rec.BytesOut > out+slack {
					t.Fatalf("%s record: bytes in %d out %d, want payloads %d and %d plus framing", a.name, rec.BytesIn, rec.BytesOut, in, out)
				}
				if rec.DurationMS < 300 || rec.DurationMS > float64(took.Milliseconds())+1000 {
					t.Fatalf("%s record: duration %.1f ms, the client saw %v", a.name, rec.DurationMS, took)
				}
				t.Logf("%s %s record: bytesIn %d bytesOut %d durationMs %.1f (client %v)", kind.name, a.name, rec.BytesIn, rec.BytesOut, rec.DurationMS, took.Round(time.Millisecond))
			}
			g, _ := e.gwAudit.find(isExec(marker))
			c, _ := e.connAudit.find(isExec(marker))
			if g.RequestID == "" || g.RequestID != c.RequestID {
				t.Fatalf("request ids: gateway %q connector %q", g.RequestID, c.RequestID)
			}
		})
	}
}

// TestStreamMaxDuration: a gateway whose maximum stream length is 2 s ends exec and port-forward sessions after it;
// the client sees the session end (not a hang), the remote process ends, and the audit record says why.
//
// What the client is told: over WebSocket the gateway's closing frame, 1008 with the reason, so kubectl exits 1 and
// says why. (It once was a clean exit: the tunnel stream's Close was a half-close, and the API server's orderly
// closure, 1000, still reached the client.) Over SPDY a failure Status on the session's error stream (client-go
// takes a connection that ends without one for success: kubectl used to exit 0 here). Port-forward clients see
// "lost connection to pod", and over SPDY each forwarded connection still open also gets the reason.
func TestStreamMaxDuration(t *testing.T) {
	const max = 2 * time.Second
	e := newStreamEnvWith(t, gatewayOpts{maxStreamDuration: max})
	pod := sleeper(t).Name
	ended := func(rec audit.Record) bool { return rec.Reason == "ended after the maximum stream length of 2s" }

	for _, kind := range executorKinds[:2] {
		t.Run("exec-"+kind.name, func(t *testing.T) {
			marker := uniqueName("max")
			start := time.Now()
			res := e.runExec(context.Background(), t, kind, pod, []string{"sh", "-c", "sleep 3600; echo unreachable # " + marker}, nil)
			took := time.Since(start)
			if took < max || took > max+10*time.Second {
				t.Fatalf("the session ended after %v, want just after %v", took, max)
			}
			t.Logf("%s: session ended after %v; client error: %v", kind.name, took.Round(time.Millisecond), res.err)
			want := map[string]string{
				"websocket": "error reading from error stream: next reader: websocket: close 1008 (policy violation): warren: the session reached the maximum stream length of 2s",
				"spdy":      "warren: the session reached the maximum stream length of 2s",
			}[kind.name]
			if res.err == nil || res.err.Error() != want {
				t.Fatalf("the client was not told why the gateway cut the session: %v; want %q", res.err, want)
			}
			wait.Until(t, 10*time.Second, "the remote process ends", func() bool { return len(procsWith(marker)) == 0 })
			rec := e.gwAudit.wait(t, "exec", isExec(marker))
			if !ended(rec) {
				t.Fatalf("gateway record reason %q", rec.Reason)
			}
		})
	}

	for _, mode := range remoteCommandModes {
		t.Run("kubectl-exec-"+mode.name, func(t *testing.T) {
			marker := uniqueName("max")
			start := time.Now()
			out, errOut, err := kubectlEnv(mode.env, e.kc, "exec", pod, "-c", "main", "--", "sh", "-c", "sleep 3600; echo unreachable # "+marker)
			took := time.Since(start)
			t.Logf("kubectl exec: ended after %v, exit %d, stdout %q, stderr %q", took.Round(time.Millisecond), exitStatus(err), out, errOut)
			want := map[string]string{
				"websocket": "error: error reading from error stream: next reader: websocket: close 1008 (policy violation): warren: the session reached the maximum stream length of 2s\n",
				"spdy":      "error: warren: the session reached the maximum stream length of 2s\n",
			}[mode.name]
			if took < max || took > max+10*time.Second || exitStatus(err) != 1 || !strings.HasSuffix(errOut, want) {
				t.Fatalf("kubectl exec: ended after %v with exit %d, stderr %q; want exit 1 and %q", took, exitStatus(err), errOut, want)
			}
			if !ended(e.gwAudit.wait(t, "kubectl exec", isExec(marker))) {
				t.Fatal("no max-length note in the audit record")
			}
		})
	}

	for _, mode := range portForwardModes {
		t.Run("kubectl-portforward-"+mode.name, func(t *testing.T) {
			ps := startPodServer(t)
			p := sleeper(t).Name
			kf := startKubectlForward(t, mode.env, e.kc, p, ps.port)
			// A connection held open through the forward when the session is cut.
			held, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", kf.local))
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			fmt.Fprintf(held, "GET /hello?n=1 HTTP/1.1\r\nHost: pod\r\n\r\n")
			if line, err := bufio.NewReader(held).ReadString('\n'); err != nil || line != "HTTP/1.1 200 OK\r\n" {
				t.Fatalf("through the forward: %q %v", line, err)
			}
			select {
			case <-kf.done:
			case <-time.After(max + 15*time.Second):
				t.Fatal("kubectl port-forward is still up 15s after the maximum stream length")
			}
			errOut := kf.stderr.String()
			t.Logf("kubectl port-forward %s: exit %d, stderr %q", mode.name, kf.cmd.ProcessState.ExitCode(), errOut)
			// Over SPDY the held connection's error stream also carries the reason, but kubectl logs it ("An error
			// occurred forwarding" err="warren: …") only if that goroutine wins the race with its exit on the lost
			// connection, so only the exit is asserted here; TestSPDYFarewellText covers the frames.
			if !strings.Contains(errOut, "error: lost connection to pod\n") {
				t.Fatalf("kubectl port-forward stderr: %s", errOut)
			}
			if kf.cmd.ProcessState.ExitCode() != 1 {
				t.Fatalf("kubectl port-forward exit %d, want 1", kf.cmd.ProcessState.ExitCode())
			}
		})
	}

	for _, kind := range dialerKinds[:2] {
		t.Run("portforward-"+kind.name, func(t *testing.T) {
			ps := startPodServer(t)
			p := sleeper(t).Name
			start := time.Now()
			f := forward(t, kind.new(t, e.cfg, portForwardURL(e.cs, p)), ps.port)
			if got := httpGet(t, &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
				fmt.Sprintf("http://127.0.0.1:%d/hello?n=1", f.local)); got != "hello 1" {
				t.Fatalf("through the forward: %q", got)
			}
			select {
			case <-f.done:
			case <-time.After(max + 15*time.Second):
				t.Fatalf("the port-forward is still up %v after the maximum stream length", time.Since(start))
			}
			t.Logf("%s: ForwardPorts returned after %v: %v", kind.name, time.Since(start).Round(time.Millisecond), f.err)
			if !errors.Is(f.err, portforward.ErrLostConnectionToPod) {
				t.Fatalf("ForwardPorts returned %v, want %v", f.err, portforward.ErrLostConnectionToPod)
			}
			rec := e.gwAudit.wait(t, "port-forward", func(r audit.Record) bool { return r.Subresource == "portforward" && r.Name == p })
			if !ended(rec) {
				t.Fatalf("gateway record reason %q", rec.Reason)
			}
		})
	}
}

// TestStreamConnectorLost stops the connector in the middle of an exec: the client's session ends within seconds
// instead of hanging, and the remote process ends.
func TestStreamConnectorLost(t *testing.T) {
	for _, kind := range executorKinds[:2] {
		t.Run(kind.name, func(t *testing.T) {
			e := newStreamEnv(t)
			pod := sleeper(t).Name
			marker := uniqueName("lost")
			u := execURL(e.cs, pod, &corev1.PodExecOptions{Command: []string{"sh", "-c", "echo started; sleep 3600; echo unreachable # " + marker}, Stdout: true, Stderr: true})
			ex, err := kind.new(e.cfg, u)
			if err != nil {
				t.Fatal(err)
			}
			out := &watchWriter{want: "started\n", seen: make(chan struct{})}
			done := make(chan error, 1)
			go func() {
				done <- ex.StreamWithContext(context.Background(), remotecommand.StreamOptions{Stdout: out, Stderr: io.Discard})
			}()
			select {
			case <-out.seen:
			case err := <-done:
				t.Fatalf("exec ended early: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatal("no output within 30s")
			}
			lost := time.Now()
			e.conn.stop()
			select {
			case err := <-done:
				// As in TestStreamMaxDuration: over WebSocket the gateway's closing frame (1011, the cluster was lost);
				// over SPDY a Status on the error stream.
				t.Logf("%s: the client's session ended %v after the connector stopped: %v", kind.name, time.Since(lost).Round(time.Millisecond), err)
				want := map[string]string{
					"websocket": `error reading from error stream: next reader: websocket: close 1011 (internal server error): warren: the connection to cluster "stream" was lost`,
					"spdy":      `warren: the connection to cluster "stream" was lost`,
				}[kind.name]
				if err == nil || err.Error() != want {
					t.Fatalf("the client was not told its connector went away: %v; want %q", err, want)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the client's session still hangs 30s after the connector stopped")
			}
			wait.Until(t, 15*time.Second, "the remote process ends", func() bool { return len(procsWith(marker)) == 0 })
		})
	}
}

// TestStreamConnectorLostKubectl: the same with the kubectl binary, both protocols: it exits 1 and says why.
func TestStreamConnectorLostKubectl(t *testing.T) {
	for _, mode := range remoteCommandModes {
		t.Run(mode.name, func(t *testing.T) {
			e := newStreamEnv(t)
			pod := sleeper(t).Name
			marker := uniqueName("lost")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := kubectlCommand(ctx, e.kc, "exec", pod, "-c", "main", "--", "sh", "-c", "echo started; sleep 3600; echo unreachable # "+marker)
			cmd.Env = append(cmd.Env, mode.env...)
			out, errOut := &watchWriter{want: "started\n", seen: make(chan struct{})}, &logBuffer{}
			cmd.Stdout, cmd.Stderr = out, errOut
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			defer func() { cancel(); <-done }()
			select {
			case <-out.seen:
			case err := <-done:
				done <- err
				t.Fatalf("kubectl ended early: %v; stderr %q", err, errOut.String())
			case <-time.After(30 * time.Second):
				t.Fatal("no output within 30s")
			}
			lost := time.Now()
			e.conn.stop()
			var err error
			select {
			case err = <-done:
				done <- err
			case <-time.After(30 * time.Second):
				t.Fatal("kubectl still hangs 30s after the connector stopped")
			}
			t.Logf("kubectl %s: exit %d %v after the connector stopped; stderr %q", mode.name, exitStatus(err), time.Since(lost).Round(time.Millisecond), errOut.String())
			want := map[string]string{
				"websocket": `error: error reading from error stream: next reader: websocket: close 1011 (internal server error): warren: the connection to cluster "stream" was lost` + "\n",
				"spdy":      `error: warren: the connection to cluster "stream" was lost` + "\n",
			}[mode.name]
			if exitStatus(err) != 1 || !strings.HasSuffix(errOut.String(), want) {
				t.Fatalf("kubectl exit %d, stderr %q; want exit 1 and %q", exitStatus(err), errOut.String(), want)
			}
			wait.Until(t, 15*time.Second, "the remote process ends", func() bool { return remoteShells(marker) == 0 })
		})
	}
}

// TestStreamScale runs 200 exec sessions at once, then 500 watches at once, through one connector, and checks that
// the goroutine count comes back to where it was.
func TestStreamScale(t *testing.T) {
	e := newStreamEnv(t)
	pod := sleeper(t).Name

	t.Run("exec200", func(t *testing.T) {
		const n = 200
		// Warm up what is created once (transports, client-go's background loops), then take the baseline.
		for _, kind := range executorKinds[:2] {
			if res := e.runExec(context.Background(), t, kind, pod, []string{"true"}, nil); res.err != nil {
				t.Fatal(res.err)
			}
		}
		base := settledGoroutines()
		marker := uniqueName("scale")
		type session struct {
			stdin *io.PipeWriter
			out   *watchWriter
			err   error
		}
		sessions := make([]*session, n)
		var wg sync.WaitGroup
		var started atomic.Int64
		begin := time.Now()
		for i := range n {
			s := &session{out: &watchWriter{want: "ready\n", seen: make(chan struct{})}}
			sessions[i] = s
			kind := executorKinds[i%2] // half SPDY, half WebSocket
			// Each session: the shell says it is ready, then echoes its stdin back; it stays the parent of cat, so
			// its command line (with the marker) shows that the session is live.
			u := execURL(e.cs, pod, &corev1.PodExecOptions{Command: []string{"sh", "-c", "echo ready; cat; : " + marker}, Stdin: true, Stdout: true, Stderr: true})
			ex, err := kind.new(e.cfg, u)
			if err != nil {
				t.Fatal(err)
			}
			var stdin io.Reader
			stdin, s.stdin = io.Pipe()
			wg.Go(func() {
				started.Add(1)
				s.err = ex.StreamWithContext(context.Background(), remotecommand.StreamOptions{Stdin: stdin, Stdout: s.out, Stderr: s.out})
			})
		}
		defer func() {
			for _, s := range sessions {
				s.stdin.Close()
			}
			wg.Wait()
		}()
		wait.Until(t, 3*time.Minute, fmt.Sprintf("%d sessions ready at once", n), func() bool {
			for _, s := range sessions {
				select {
				case <-s.out.seen:
				default:
					return false
				}
			}
			return true
		})
		allUp := time.Since(begin)
		if live := len(shellsWith(marker)); live != n {
			t.Fatalf("%d remote shells alive, want %d", live, n)
		}
		peak := runtime.NumGoroutine()
		for i, s := range sessions {
			fmt.Fprintf(s.stdin, "session %d\n", i)
			s.stdin.Close()
		}
		wg.Wait()
		for i, s := range sessions {
			if want := fmt.Sprintf("ready\nsession %d\n", i); s.err != nil || s.out.String() != want {
				t.Fatalf("session %d: output %q, err %v; want %q", i, s.out.String(), s.err, want)
			}
		}
		t.Logf("%d concurrent exec sessions: all up after %v, all done after %v; goroutines: %d before, %d with all up",
			n, allUp.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond), base, peak)
		waitGoroutines(t, base, nil)
	})

	t.Run("watch500", func(t *testing.T) {
		const n = 500
		marker := uniqueName("watch")
		token := callerToken(t, []string{streamCluster}, append([]string{"list,watch:configmaps:" + streamNS}, streamRules...)...)
		cfg := callerConfig(e.gs, streamCluster, token)
		cfg.Timeout = 0
		cs := clientset(t, cfg)
		opts := metav1.ListOptions{LabelSelector: "scale=" + marker}
		w, err := cs.CoreV1().ConfigMaps(streamNS).Watch(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		w.Stop()
		base := settledGoroutines()

		watches := make([]watch.Interface, n)
		begin := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		next := atomic.Int64{}
		for range 20 {
			wg.Go(func() {
				for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
					w, err := cs.CoreV1().ConfigMaps(streamNS).Watch(context.Background(), opts)
					if err != nil {
						errs <- fmt.Errorf("watch %d: %w", i, err)
						return
					}
					watches[i] = w
				}
			})
		}
		wg.Wait()
		close(errs)
		defer func() {
			for _, w := range watches {
				if w != nil {
					w.Stop()
				}
			}
		}()
		for err := range errs {
			t.Fatal(err)
		}
		opened := time.Since(begin)
		peak := runtime.NumGoroutine()

		admin := adminClient(t)
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: marker, Namespace: streamNS, Labels: map[string]string{"scale": marker}}}
		if _, err := admin.CoreV1().ConfigMaps(streamNS).Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer admin.CoreV1().ConfigMaps(streamNS).Delete(context.Background(), marker, metav1.DeleteOptions{})
		created := time.Now()
		for i, w := range watches {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok || ev.Type != watch.Added || ev.Object.(*corev1.ConfigMap).Name != marker {
					t.Fatalf("watch %d: %v %v", i, ev.Type, ok)
				}
			case <-time.After(time.Until(created.Add(time.Minute))):
				t.Fatalf("watch %d: no event within a minute", i)
			}
		}
		t.Logf("%d concurrent watches: opened in %v, all saw the event %v after it was created; goroutines: %d before, %d with all open",
			n, opened.Round(time.Millisecond), time.Since(created).Round(time.Millisecond), base, peak)
		for _, w := range watches {
			w.Stop()
		}
		// The watches' HTTP/2 connections to the gateway become idle, as they would in any client; close them as
		// they do (500 streams needed two: Go's server allows 250 per connection), so that what remains is what
		// warren holds.
		waitGoroutines(t, base, func() { closeIdle(t, cfg) })
	})
}

// settledGoroutines returns the goroutine count once it has stopped falling (finished work winding down).
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for range 40 {
		time.Sleep(50 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m >= n {
			return m
		}
		n = m
	}
	return n
}

// waitGoroutines waits until the goroutine count is back to base, and dumps the goroutines if it is not. each, if
// not nil, runs on every check.
func waitGoroutines(t *testing.T, base int, each func()) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if each != nil {
			each()
		}
		if runtime.NumGoroutine() <= base {
			break
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			pprof.Lookup("goroutine").WriteTo(&b, 1)
			t.Fatalf("%d goroutines 30s after the sessions ended, baseline %d:\n%s", runtime.NumGoroutine(), base, b.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("goroutines back to %d (baseline %d)", runtime.NumGoroutine(), base)
}

// closeIdle closes the idle connections of client-go's cached transport for cfg.
func closeIdle(t *testing.T, cfg *rest.Config) {
	t.Helper()
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	utilnet.CloseIdleConnectionsFor(rt) // unwraps client-go's round trippers down to the *http.Transport
}
