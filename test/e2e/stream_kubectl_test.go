package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warren-dev/warren/audit"
)

// The kubectl side of the streaming matrix: the real kubectl v1.37.2 binary through gateway and connector, with its
// defaults (WebSocket, falling back to SPDY) and with SPDY forced.

// kubectlMode is how kubectl is told to speak: env is added to its environment, method is what the gateway sees.
type kubectlMode struct {
	name   string
	env    []string
	method string
}

// remoteCommandModes are for exec, attach and cp; portForwardModes for port-forward.
var (
	remoteCommandModes = []kubectlMode{
		{"websocket", nil, http.MethodGet},
		{"spdy", []string{"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false"}, http.MethodPost},
	}
	portForwardModes = []kubectlMode{
		{"websocket", nil, http.MethodGet},
		{"spdy", []string{"KUBECTL_PORT_FORWARD_WEBSOCKETS=false"}, http.MethodPost},
	}
)

func exitStatus(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

func TestStreamKubectlExec(t *testing.T) {
	e := newStreamEnv(t)
	pod := sleeper(t).Name
	stdin := payload(10 << 20)
	for _, mode := range remoteCommandModes {
		t.Run(mode.name, func(t *testing.T) {
			for _, tc := range []struct {
				name             string
				script           string
				stdin            []byte
				wantOut, wantErr string
				wantCode         int
			}{
				{name: "exit0", script: "printf 'out\\n'; printf 'err\\n' >&2", wantOut: "out\n", wantErr: "err\n"},
				{name: "exit7", script: "printf 'out\\n'; printf 'err\\n' >&2; exit 7", wantOut: "out\n",
					wantErr: "err\ncommand terminated with exit code 7\n", wantCode: 7},
				{name: "stdin10MB", script: "sha256sum", stdin: stdin, wantOut: sha256hex(stdin) + "  -\n"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					marker := uniqueName("m")
					args := []string{"exec", pod, "-c", "main"}
					var in io.Reader
					if tc.stdin != nil {
						args = append(args, "-i")
						in = bytes.NewReader(tc.stdin)
					}
					args = append(args, "--", "sh", "-c", tc.script+" # "+marker)
					start := time.Now()
					out, errOut, err := kubectlWith(mode.env, in, e.kc, args...)
					if out != tc.wantOut || errOut != tc.wantErr || exitStatus(err) != tc.wantCode {
						t.Fatalf("kubectl exec: stdout %q stderr %q exit %d (%v); want %q %q %d",
							out, errOut, exitStatus(err), err, tc.wantOut, tc.wantErr, tc.wantCode)
					}
					checkUpgradeRecord(t, e.gwAudit.wait(t, "kubectl exec", isExec(marker)), mode.method, "exec")
					t.Logf("kubectl %s %s: %v", mode.name, tc.name, time.Since(start).Round(time.Millisecond))
				})
			}
		})
	}
}

// attachNotice is what kubectl attach -i prints on stderr before the session.
const attachNotice = "All commands and output from this session will be recorded in container logs, including " +
	"credentials and sensitive information passed through the command prompt.\n" +
	"If you don't see a command prompt, try pressing enter.\n"

func TestStreamKubectlAttach(t *testing.T) {
	e := newStreamEnv(t)
	for _, mode := range remoteCommandModes {
		t.Run(mode.name, func(t *testing.T) {
			p := attachable(t)
			out, errOut, err := kubectlWith(mode.env, strings.NewReader("hello\nworld\n"), e.kc, "attach", "-i", p.Name, "-c", "main")
			if err != nil || out != "got:hello\ngot:world\n" || errOut != attachNotice+"bye\n" {
				t.Fatalf("kubectl attach -i: stdout %q stderr %q err %v", out, errOut, err)
			}
			rec := e.gwAudit.wait(t, "attach", func(r audit.Record) bool { return r.Subresource == "attach" && r.Name == p.Name })
			checkUpgradeRecord(t, rec, mode.method, "attach")
		})
	}
}

func TestStreamKubectlLogsFollow(t *testing.T) {
	e := newStreamEnv(t)
	pod, trigger := followPod(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := kubectlCommand(ctx, e.kc, "logs", "-f", pod.Name, "-c", "main")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errOut logBuffer
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(stdout)
	if line, err := br.ReadString('\n'); line != "start\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("first line %q, %v (stderr %q)", line, err, errOut.String())
	}
	if err := os.WriteFile(trigger, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(br)
	err = cmd.Wait() // kubectl logs -f returns once the container has exited
	if err != nil || string(rest) != "after\n" || errOut.String() != "" {
		t.Fatalf("kubectl logs -f: rest %q, stderr %q, err %v", rest, errOut.String(), err)
	}
	rec := e.gwAudit.wait(t, "logs -f", func(r audit.Record) bool { return r.Subresource == "log" && r.Name == pod.Name })
	if rec.Status != http.StatusOK || rec.Method != http.MethodGet || !strings.Contains(rec.Path, "follow=true") {
		t.Fatalf("gateway record %+v", rec)
	}
}

// kubectlForward is a running `kubectl port-forward`.
type kubectlForward struct {
	cmd    *exec.Cmd
	local  int
	stderr *logBuffer
	done   chan struct{}
}

var forwardingLine = regexp.MustCompile(`^Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)$`)

// startKubectlForward runs `kubectl port-forward pod/NAME :remote` and waits for its "Forwarding from" line.
func startKubectlForward(t *testing.T, env []string, kc, pod string, remote int) *kubectlForward {
	t.Helper()
	cmd := kubectlCommand(context.Background(), kc, "port-forward", "--address", "127.0.0.1", "pod/"+pod, ":"+strconv.Itoa(remote))
	cmd.Env = append(cmd.Env, env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	kf := &kubectlForward{cmd: cmd, stderr: &logBuffer{}, done: make(chan struct{})}
	cmd.Stderr = kf.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	go func() {
		defer close(kf.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		cmd.Wait()
	}()
	t.Cleanup(func() { kf.stop() })
	timeout := time.After(30 * time.Second)
	for kf.local == 0 {
		select {
		case line := <-lines:
			if m := forwardingLine.FindStringSubmatch(line); m != nil && m[2] == strconv.Itoa(remote) {
				kf.local, _ = strconv.Atoi(m[1])
			}
		case <-kf.done:
			t.Fatalf("kubectl port-forward exited: %v\nstderr: %s", cmd.ProcessState, kf.stderr.String())
		case <-timeout:
			t.Fatalf("kubectl port-forward: no 'Forwarding from' line within 30s; stderr: %s", kf.stderr.String())
		}
	}
	return kf
}

// stop interrupts kubectl as Ctrl-C would and waits for it.
func (kf *kubectlForward) stop() {
	select {
	case <-kf.done:
		return
	default:
	}
	kf.cmd.Process.Signal(os.Interrupt)
	select {
	case <-kf.done:
	case <-time.After(10 * time.Second):
		kf.cmd.Process.Kill()
		<-kf.done
	}
}

func TestStreamKubectlPortForward(t *testing.T) {
	e := newStreamEnv(t)
	ps := startPodServer(t)
	for _, mode := range portForwardModes {
		t.Run(mode.name, func(t *testing.T) {
			pod := sleeper(t).Name
			kf := startKubectlForward(t, mode.env, e.kc, pod, ps.port)
			checkForwardedHTTP(t, uint16(kf.local), ps)
			kf.stop()
			if s := kf.stderr.String(); s != "" {
				t.Fatalf("kubectl port-forward stderr: %s", s)
			}
			rec := e.gwAudit.wait(t, "port-forward", func(r audit.Record) bool { return r.Subresource == "portforward" && r.Name == pod })
			checkUpgradeRecord(t, rec, mode.method, "portforward")
		})
	}
}

// TestStreamKubectlCp copies 20 MB into a pod and out of it (kubectl cp is tar over exec). The test checks the
// pod's side of the copy from this machine too, through the container's root (/proc/PID/root).
func TestStreamKubectlCp(t *testing.T) {
	e := newStreamEnv(t)
	p := sleeper(t)
	pod := p.Name
	data := payload(20 << 20)
	want := sha256hex(data)
	src := filepath.Join(t.TempDir(), "evidence.bin")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mode := range remoteCommandModes {
		t.Run(mode.name, func(t *testing.T) {
			inPod := "/tmp/evidence-" + mode.name + ".bin"
			start := time.Now()
			if out, errOut, err := kubectlEnv(mode.env, e.kc, "cp", "-c", "main", src, pod+":"+inPod); err != nil {
				t.Fatalf("kubectl cp to the pod: %v\n%s%s", err, out, errOut)
			}
			toPod := time.Since(start)
			if got := fileSHA256(t, containerPath(t, p, "main", inPod)); got != want {
				t.Fatalf("in the pod: sha256 %s, want %s", got, want)
			}
			out, errOut, err := kubectlEnv(mode.env, e.kc, "exec", pod, "-c", "main", "--", "sha256sum", inPod)
			if err != nil || out != fmt.Sprintf("%s  %s\n", want, inPod) {
				t.Fatalf("sha256sum in the pod: %q %q %v", out, errOut, err)
			}

			back := filepath.Join(t.TempDir(), "back.bin")
			start = time.Now()
			if out, errOut, err := kubectlEnv(mode.env, e.kc, "cp", "-c", "main", pod+":"+inPod, back); err != nil {
				t.Fatalf("kubectl cp from the pod: %v\n%s%s", err, out, errOut)
			}
			fromPod := time.Since(start)
			if got := fileSHA256(t, back); got != want {
				t.Fatalf("copied back: sha256 %s, want %s", got, want)
			}
			// cp is exec of tar: the gateway saw it with the protocol of the mode.
			rec := e.gwAudit.wait(t, "cp (tar)", func(r audit.Record) bool {
				return r.Subresource == "exec" && r.Name == pod && len(r.Command) > 0 && r.Command[0] == "tar" && r.Method == mode.method
			})
			checkUpgradeRecord(t, rec, mode.method, "exec")
			t.Logf("kubectl cp 20 MB (%s): to the pod %v, from the pod %v", mode.name, toPod.Round(time.Millisecond), fromPod.Round(time.Millisecond))
		})
	}
}
