package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/remotecommand"
)

// The long suite (`make test-long`): streams that stay idle for minutes. It runs only with WARREN_E2E_LONG=1;
// WARREN_E2E_IDLE sets the idle time (default 5m).

func longIdle(t *testing.T) time.Duration {
	t.Helper()
	if os.Getenv("WARREN_E2E_LONG") != "1" {
		t.Skip("long suite: run with WARREN_E2E_LONG=1 (make test-long)")
	}
	idle := 5 * time.Minute
	if v := os.Getenv("WARREN_E2E_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("WARREN_E2E_IDLE=%q: %v", v, err)
		}
		idle = d
	}
	return idle
}

// idleFor waits out the idle period, failing at once if the session ends meanwhile.
func idleFor(t *testing.T, idle time.Duration, ended <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ended:
		t.Fatalf("%s ended while idle", what)
	case <-time.After(idle):
	}
}

// TestStreamLongIdle keeps exec sessions (client-go SPDY and WebSocket, kubectl) and port-forwards (client-go SPDY
// and WebSocket, kubectl) open with no traffic for the idle time, all at once, then checks each still works. Every
// hop has to keep them: WebSocket pings and yamux keepalives on the tunnel, no idle timeout on upgraded connections.
func TestStreamLongIdle(t *testing.T) {
	idle := longIdle(t)
	e := newStreamEnv(t)
	pod := sleeper(t).Name
	t.Logf("idle for %v", idle)

	for _, kind := range executorKinds[:2] {
		t.Run("exec-"+kind.name, func(t *testing.T) {
			t.Parallel()
			u := execURL(e.cs, pod, &corev1.PodExecOptions{Command: []string{"cat"}, Stdin: true, Stdout: true, Stderr: true})
			ex, err := kind.new(e.cfg, u)
			if err != nil {
				t.Fatal(err)
			}
			stdin, stdinW := io.Pipe()
			defer stdinW.Close()
			out := &watchWriter{want: "before\n", seen: make(chan struct{})}
			done := make(chan error, 1)
			ended := make(chan struct{})
			go func() {
				done <- ex.StreamWithContext(context.Background(), remotecommand.StreamOptions{Stdin: stdin, Stdout: out, Stderr: out})
				close(ended)
			}()
			fmt.Fprint(stdinW, "before\n")
			select {
			case <-out.seen:
			case <-ended:
				t.Fatalf("exec ended: %v", <-done)
			case <-time.After(30 * time.Second):
				t.Fatal("no echo within 30s")
			}
			idleFor(t, idle, ended, "the exec session")
			fmt.Fprint(stdinW, "after\n")
			stdinW.Close()
			select {
			case err := <-done:
				if err != nil || out.String() != "before\nafter\n" {
					t.Fatalf("after %v idle: output %q, err %v", idle, out.String(), err)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("after %v idle: no end within 30s; output %q", idle, out.String())
			}
		})
	}

	t.Run("exec-kubectl", func(t *testing.T) {
		t.Parallel()
		cmd := kubectlCommand(context.Background(), e.kc, "exec", "-i", pod, "-c", "main", "--", "cat")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var errOut logBuffer
		cmd.Stderr = &errOut
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ended := make(chan struct{})
		br := bufio.NewReader(stdout)
		fmt.Fprint(stdin, "before\n")
		if line, err := br.ReadString('\n'); line != "before\n" {
			t.Fatalf("kubectl exec: %q %v (stderr %q)", line, err, errOut.String())
		}
		var rest []byte
		go func() {
			rest, _ = io.ReadAll(br) // returns when kubectl exits: it must not during the idle time
			close(ended)
		}()
		idleFor(t, idle, ended, "kubectl exec")
		fmt.Fprint(stdin, "after\n")
		stdin.Close()
		<-ended
		if err := cmd.Wait(); err != nil || string(rest) != "after\n" {
			t.Fatalf("after %v idle: %q, %v (stderr %q)", idle, rest, err, errOut.String())
		}
	})

	for _, kind := range dialerKinds[:2] {
		t.Run("portforward-"+kind.name, func(t *testing.T) {
			t.Parallel()
			p, ps := sleeper(t).Name, startPodServer(t)
			f := forward(t, kind.new(t, e.cfg, portForwardURL(e.cs, p)), ps.port)
			idleForwardCheck(t, idle, int(f.local), f.done)
			checkForwardedHTTP(t, f.local, ps)
		})
	}

	t.Run("portforward-kubectl", func(t *testing.T) {
		t.Parallel()
		p, ps := sleeper(t).Name, startPodServer(t)
		kf := startKubectlForward(t, nil, e.kc, p, ps.port)
		idleForwardCheck(t, idle, kf.local, kf.done)
		checkForwardedHTTP(t, uint16(kf.local), ps)
	})
}

// idleForwardCheck sends a request through a forwarded port, leaves the forward and its TCP connection idle, and
// sends another on the same connection: both the session and the connection inside it must have survived.
func idleForwardCheck(t *testing.T, idle time.Duration, local int, ended <-chan struct{}) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: 0}}
	defer c.CloseIdleConnections()
	get := func(n string) (reused bool) {
		t.Helper()
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet,
			fmt.Sprintf("http://127.0.0.1:%d/hello?n=%s", local, n), nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", n, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "hello "+n {
			t.Fatalf("GET %s: %q", n, b)
		}
		return reused
	}
	get("before")
	idleFor(t, idle, ended, "the port-forward")
	if !get("after") {
		t.Fatalf("after %v idle the forwarded TCP connection was gone: the request needed a new one", idle)
	}
	t.Logf("after %v idle: the same forwarded connection still works", idle)
}
