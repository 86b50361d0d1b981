package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warren-dev/warren/internal/testenv/wait"
	"github.com/warren-dev/warren/tunnel"
)

// TestStreamScaleKubectl is point 5 with the kubectl binary: 200 `kubectl exec -i` processes at once through one
// connector (half WebSocket, half SPDY), all live together, then each answered; and the gateway's and connector's
// goroutines come back to their baseline.
func TestStreamScaleKubectl(t *testing.T) {
	const n = 200
	// 200 kubectl processes on a shared machine can starve the tunnel's keepalive past its default 10 s round
	// trip, which ends the tunnel and every session with it. The keepalive's timing is not what this test is
	// about (tunnel/session_timers_test.go drives it under synctest): give it room, and the sessions are what is
	// asserted.
	e := newStreamEnvWith(t, gatewayOpts{tunnel: tunnel.Config{WriteTimeout: 2 * time.Minute, PingTimeout: 2 * time.Minute}})
	pod := sleeper(t).Name
	// Warm up what is created once (kubectl's discovery cache, the tunnel's idle streams), then take the baseline.
	for _, mode := range remoteCommandModes {
		if _, errOut, err := kubectlWith(mode.env, nil, e.kc, "exec", pod, "-c", "main", "--", "true"); err != nil {
			t.Fatalf("warm-up: %v %s", err, errOut)
		}
	}
	base := settledGoroutines()
	marker := uniqueName("kscale")

	type session struct {
		cmd    *exec.Cmd
		stdin  io.WriteCloser
		out    *watchWriter
		stderr *logBuffer
		done   chan error
	}
	sessions := make([]*session, n)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	begin := time.Now()
	for i := range n {
		mode := remoteCommandModes[i%2]
		// As in TestStreamScale: the shell says it is ready, then echoes its stdin back, and stays the parent of cat
		// so that its command line (with the marker) shows the session is live.
		cmd := kubectlCommand(ctx, e.kc, "exec", "-i", pod, "-c", "main", "--", "sh", "-c", "echo ready; cat; : "+marker)
		cmd.Env = append(cmd.Env, mode.env...)
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGKILL) }
		s := &session{cmd: cmd, out: &watchWriter{want: "ready\n", seen: make(chan struct{})}, stderr: &logBuffer{}, done: make(chan error, 1)}
		cmd.Stdout, cmd.Stderr = s.out, s.stderr
		var err error
		if s.stdin, err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("kubectl %d: %v", i, err)
		}
		go func() { s.done <- cmd.Wait() }()
		sessions[i] = s
	}
	var once sync.Once
	finish := func() {
		once.Do(func() {
			for _, s := range sessions {
				if s != nil {
					s.stdin.Close()
				}
			}
			for _, s := range sessions {
				if s != nil {
					select {
					case <-s.done:
					case <-time.After(time.Minute):
						s.cmd.Process.Kill()
						<-s.done
					}
				}
			}
		})
	}
	defer finish()

	wait.Until(t, 4*time.Minute, fmt.Sprintf("%d kubectl sessions ready at once", n), func() bool {
		for i, s := range sessions {
			select {
			case <-s.out.seen:
			case err := <-s.done:
				s.done <- err
				t.Fatalf("kubectl %d ended before it was ready: %v; stdout %q stderr %q", i, err, s.out.String(), s.stderr.String())
			default:
				return false
			}
		}
		return true
	})
	allUp := time.Since(begin)
	if live := remoteShells(marker); live != n {
		t.Fatalf("%d remote shells alive, want %d", live, n)
	}
	peak := runtime.NumGoroutine()
	for i, s := range sessions {
		fmt.Fprintf(s.stdin, "session %d\n", i)
		s.stdin.Close()
	}
	var failed []string
	for i, s := range sessions {
		var err error
		select {
		case err = <-s.done:
			s.done <- err
		case <-ctx.Done():
			t.Fatalf("kubectl %d still runs", i)
		}
		if want := fmt.Sprintf("ready\nsession %d\n", i); err != nil || s.out.String() != want || s.stderr.String() != "" {
			failed = append(failed, fmt.Sprintf("kubectl %d (%s): stdout %q stderr %q err %v; want %q",
				i, remoteCommandModes[i%2].name, s.out.String(), s.stderr.String(), err, want))
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d sessions failed:\n%s", len(failed), n, strings.Join(failed, "\n"))
	}
	finish()
	t.Logf("%d concurrent kubectl exec sessions: all up after %v, all done after %v; goroutines: %d before, %d with all up",
		n, allUp.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond), base, peak)
	// kubectl, unlike the client-go test, first reads the pod (a plain GET) in every process: the burst leaves up to
	// 64 tunnel streams pooled at the gateway (for 90 s) and connections to the API server at the connector. Close
	// them as a quiet minute would, so that what remains is what the sessions left.
	waitGoroutines(t, base, func() {
		e.gs.g.CloseIdleConnections()
		e.conn.c.CloseIdleConnections()
	})
	// Every session is in the gateway's audit log with its own command line.
	count := 0
	for _, r := range e.gwAudit.records() {
		if isExec(marker)(r) {
			count++
		}
	}
	if count != n {
		t.Fatalf("%d gateway audit records of the sessions, want %d", count, n)
	}
}

// remoteShells counts the pods' processes with marker on their command line: the kubectl processes carry it too.
func remoteShells(marker string) int {
	n := 0
	for _, pid := range procsWith(marker) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && !bytes.HasPrefix(b, []byte(kube.KubectlPath+"\x00")) {
			n++
		}
	}
	return n
}
