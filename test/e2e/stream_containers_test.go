package e2e

// The fake kubelet's containers seen through warren and the real API server: what an examiner meets in a container
// with no shell (the runtime's "executable file not found", as kubectl and client-go report it), an ephemeral
// container sharing its target's PID namespace (pods/ephemeralcontainers), and isolation from this machine.

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/warren-dev/warren/internal/testenv/wait"
)

// notFoundStatus is the message of the Status the kubelet returns (from containerd and runc) for an exec of a
// program that is not in the container; the exec ID is 64 hex digits. Over WebSocket the API server's translation
// to the kubelet's SPDY wraps it once more in an InternalError of its own, as on a real cluster.
func notFoundStatus(program string, websocket bool) string {
	prefix := ""
	if websocket {
		prefix = "Internal error occurred: "
	}
	return prefix + `Internal error occurred: error executing command in container: failed to exec in container: failed to ` +
		`start exec "[0-9a-f]{64}": OCI runtime exec failed: exec failed: unable to start container process: exec: "` +
		regexp.QuoteMeta(program) + `": executable file not found in \$PATH: unknown`
}

// distrolessPod runs the distroless image (no shell, no tools), whose application has planted /tmp/evidence.
func distrolessPod(t *testing.T) *corev1.Pod {
	pod := startPod(t, "distroless", corev1.Container{Image: "distroless", Args: []string{"-write", "/tmp/evidence=planted"}})
	planted := containerPath(t, pod, "main", "/tmp/evidence")
	wait.Until(t, 10*time.Second, "the planted file", func() bool {
		b, _ := os.ReadFile(planted)
		return string(b) == "planted"
	})
	return pod
}

// TestStreamExecNoShell: `kubectl exec` of sh in a container without one fails as on a real cluster: kubectl prints
// the runtime's message and exits 1 (not an exit code of the command: none ran); client-go returns the Status
// message as its error, over every protocol.
func TestStreamExecNoShell(t *testing.T) {
	e := newStreamEnv(t)
	pod := distrolessPod(t).Name
	for _, mode := range remoteCommandModes {
		t.Run("kubectl-"+mode.name, func(t *testing.T) {
			out, errOut, err := kubectlEnv(mode.env, e.kc, "exec", pod, "-c", "main", "--", "sh", "-c", "true")
			want := regexp.MustCompile(`^error: ` + notFoundStatus("sh", mode.method == http.MethodGet) + "\n$")
			if exitStatus(err) != 1 || out != "" || !want.MatchString(errOut) {
				t.Fatalf("kubectl exec sh: exit %d, stdout %q, stderr %q; want 1 and %s", exitStatus(err), out, errOut, want)
			}
		})
	}
	for _, kind := range executorKinds {
		t.Run("client-go-"+kind.name, func(t *testing.T) {
			res := e.runExec(context.Background(), t, kind, pod, []string{"sh"}, nil)
			want := regexp.MustCompile(`^` + notFoundStatus("sh", kind.method == http.MethodGet) + `$`)
			if res.err == nil || exitCode(res.err) != -1 || !want.MatchString(res.err.Error()) {
				t.Fatalf("exec sh: %v (exit %d); want %s", res.err, exitCode(res.err), want)
			}
		})
	}
}

// TestStreamEphemeralContainer adds an ephemeral container targeting a distroless container through
// pods/ephemeralcontainers; it sees the target's processes and, through /proc/1/root, its files; it waits for a
// line on stdin before it writes, so nothing is lost to the attach race; its output is in its log.
func TestStreamEphemeralContainer(t *testing.T) {
	e := newStreamEnv(t)
	target := distrolessPod(t)
	cs := adminClient(t)
	ctx := context.Background()
	p, err := cs.CoreV1().Pods(streamNS).Get(ctx, target.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Spec.EphemeralContainers = append(p.Spec.EphemeralContainers, corev1.EphemeralContainer{
		TargetContainerName: "main",
		EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "collector", Image: "busybox", Stdin: true,
			TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			Command:                  []string{"sh", "-c", `read go; tr '\0' ' ' < /proc/1/cmdline; echo; cat /proc/1/root/tmp/evidence`}}})
	if _, err := cs.CoreV1().Pods(streamNS).UpdateEphemeralContainers(ctx, target.Name, p, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("pods/ephemeralcontainers: %v", err)
	}
	wait.Until(t, 30*time.Second, "the ephemeral container running", func() bool {
		p, err = cs.CoreV1().Pods(streamNS).Get(ctx, target.Name, metav1.GetOptions{})
		return err == nil && len(p.Status.EphemeralContainerStatuses) == 1 &&
			p.Status.EphemeralContainerStatuses[0].State.Running != nil
	})

	u := e.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(streamNS).Name(target.Name).SubResource("attach").
		Param("container", "collector").Param("stdin", "true").Param("stdout", "true").Param("stderr", "true").URL()
	ex, err := executorKinds[0].new(e.cfg, u)
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer // one each: client-go copies them in parallel
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader("go\n"), Stdout: &out,
		Stderr: &errOut}); err != nil {
		t.Fatalf("attach: %v (output %q %q)", err, out.String(), errOut.String())
	}
	want := "/app -write /tmp/evidence=planted \nplanted"
	if out.String() != want || errOut.String() != "" {
		t.Fatalf("attach output %q %q, want %q", out.String(), errOut.String(), want)
	}
	wait.Until(t, 30*time.Second, "the ephemeral container terminated", func() bool {
		p, err = cs.CoreV1().Pods(streamNS).Get(ctx, target.Name, metav1.GetOptions{})
		st := p.Status.EphemeralContainerStatuses
		return err == nil && len(st) == 1 && st[0].State.Terminated != nil && st[0].State.Terminated.ExitCode == 0
	})
	logs, err := e.cs.CoreV1().Pods(streamNS).GetLogs(target.Name, &corev1.PodLogOptions{Container: "collector"}).DoRaw(ctx)
	if err != nil || string(logs) != want {
		t.Fatalf("the ephemeral container's log through warren: %q, %v; want %q", logs, err, want)
	}
}

// TestStreamContainerIsolation: a pod's container sees neither this machine's processes, environment nor files,
// and its PID 1 is its own command; what the container writes is reachable here through its /proc/PID/root.
func TestStreamContainerIsolation(t *testing.T) {
	e := newStreamEnv(t)
	pod := sleeper(t)
	self := os.Getpid()
	res := e.runExec(context.Background(), t, executorKinds[0], pod.Name, []string{"sh", "-c",
		fmt.Sprintf(`tr '\0' ' ' < /proc/1/cmdline; echo; tr '\0' '\n' < /proc/1/environ | cut -d= -f1 | sort | tr '\n' ' '; echo; `+
			`test -e /proc/%d || echo no-test-process; test -e %s || echo no-test-binary; echo planted > /tmp/from-the-pod`,
			self, os.Args[0])}, nil)
	want := "sleep infinity \nHOME HOSTNAME PATH \nno-test-process\nno-test-binary\n"
	if res.err != nil || res.stdout != want {
		t.Fatalf("in the container: %q %q %v; want %q", res.stdout, res.stderr, res.err, want)
	}
	if b, err := os.ReadFile(containerPath(t, pod, "main", "/tmp/from-the-pod")); err != nil || string(b) != "planted\n" {
		t.Fatalf("the container's file from this machine: %q, %v", b, err)
	}
}
