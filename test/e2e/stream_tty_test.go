package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/internal/testenv/wait"
)

// kubectl exec -it and attach -it as a person runs them: the real kubectl on a terminal of its own (a pty), so it
// puts the terminal in raw mode, sends its size, and follows SIGWINCH when the window is resized. Through gateway
// and connector the remote terminal must see the sizes, echo what is typed, and the session must end with kubectl's
// usual exit status.

// ttyKubectl is kubectl running on a pty that the test types into and reads from, as a terminal emulator would.
type ttyKubectl struct {
	t      *testing.T
	cmd    *exec.Cmd
	ptmx   *os.File // the terminal's controlling side
	cancel context.CancelFunc
	start  time.Time

	mu  sync.Mutex
	out []byte // everything kubectl wrote to the terminal

	readDone chan struct{} // closed when reading the terminal ended (EIO once kubectl has exited, or closed)
	exited   chan struct{} // closed once kubectl has been reaped; waitErr is set then
	waitErr  error
	seq      int // numbers the size queries, so each answer is told apart
}

// startKubectlTTY runs kubectl with args on a new pty of size rows×cols. kubectl is killed and reaped, and the
// terminal closed, at the end of the test whatever happens.
func startKubectlTTY(t *testing.T, env []string, kc string, rows, cols uint16, args ...string) *ttyKubectl {
	t.Helper()
	// A bound on the whole session, for a kubectl that hangs after the test gave up on it.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	cmd := kubectlCommand(ctx, kc, args...)
	cmd.Env = append(cmd.Env, env...)
	// Its own session with the pty as controlling terminal, as a shell starts it: the kernel then sends it SIGWINCH
	// on a resize. Pdeathsig: it does not outlive the test binary.
	attrs := &syscall.SysProcAttr{Setsid: true, Setctty: true, Pdeathsig: syscall.SIGKILL}
	ptmx, err := pty.StartWithAttrs(cmd, &pty.Winsize{Rows: rows, Cols: cols}, attrs)
	if err != nil {
		cancel()
		t.Fatalf("start kubectl on a pty: %v", err)
	}
	k := &ttyKubectl{t: t, cmd: cmd, ptmx: ptmx, cancel: cancel, start: time.Now(),
		readDone: make(chan struct{}), exited: make(chan struct{})}
	go k.read()
	go func() {
		k.waitErr = cmd.Wait() // the pty's files are *os.File: Wait starts no copying goroutines
		close(k.exited)
	}()
	t.Cleanup(k.close)
	return k
}

func (k *ttyKubectl) read() {
	defer close(k.readDone)
	buf := make([]byte, 4096)
	for {
		n, err := k.ptmx.Read(buf)
		if n > 0 {
			k.mu.Lock()
			k.out = append(k.out, buf[:n]...)
			k.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// close kills kubectl if it still runs, reaps it, closes the terminal and waits for the reader.
func (k *ttyKubectl) close() {
	select {
	case <-k.exited:
	default:
		_ = k.cmd.Process.Kill()
		<-k.exited
	}
	k.cancel()
	_ = k.ptmx.Close() // the master is in the poller (os.OpenFile, and never Fd()): Close ends a blocked Read
	select {
	case <-k.readDone:
	case <-time.After(10 * time.Second):
		k.t.Error("reading kubectl's terminal did not end within 10s of closing it")
	}
	if k.t.Failed() {
		k.t.Logf("kubectl's terminal:\n%q", k.output())
	}
}

func (k *ttyKubectl) output() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return string(k.out)
}

// mark is the current end of the output: what comes after it answers what is typed next.
func (k *ttyKubectl) mark() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.out)
}

// send types s (a real terminal sends \r for Enter; the remote terminal's ICRNL makes it \n).
func (k *ttyKubectl) send(s string) {
	k.t.Helper()
	if _, err := k.ptmx.Write([]byte(s)); err != nil {
		k.t.Fatalf("type %q: %v", s, err)
	}
}

// waitFor waits until the output after from matches re and returns the submatches, or nil when within passes or
// kubectl has exited without it.
func (k *ttyKubectl) waitFor(from int, re *regexp.Regexp, within time.Duration) []string {
	deadline := time.Now().Add(within)
	for {
		k.mu.Lock()
		m := re.FindStringSubmatch(string(k.out[from:]))
		k.mu.Unlock()
		if m != nil {
			return m
		}
		select {
		case <-k.readDone:
			// Nothing more will come: one last look at what is there.
			k.mu.Lock()
			m = re.FindStringSubmatch(string(k.out[from:]))
			k.mu.Unlock()
			return m
		default:
		}
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lflag is the local-mode flags of the terminal (TCGETS on the master reports the slave's termios).
func (k *ttyKubectl) lflag() (uint32, error) {
	rc, err := k.ptmx.SyscallConn()
	if err != nil {
		return 0, err
	}
	var tio *unix.Termios
	var ierr error
	if err := rc.Control(func(fd uintptr) { tio, ierr = unix.IoctlGetTermios(int(fd), unix.TCGETS) }); err != nil {
		return 0, err
	}
	if ierr != nil {
		return 0, ierr
	}
	return tio.Lflag, nil
}

// waitRaw waits until kubectl has put its terminal in raw mode (no echo, no line editing). Typing earlier would be
// echoed by the local terminal too, and an echo would no longer prove that the remote terminal got the keys.
func (k *ttyKubectl) waitRaw() {
	k.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		fl, err := k.lflag()
		if err != nil {
			k.t.Fatalf("terminal mode: %v", err)
		}
		if fl&(unix.ECHO|unix.ICANON) == 0 {
			return
		}
		select {
		case <-k.exited:
			k.t.Fatalf("kubectl exited (%v) before it put its terminal in raw mode", k.waitErr)
		default:
		}
		if time.Now().After(deadline) {
			k.t.Fatal("kubectl did not put its terminal in raw mode within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitSize asks the remote shell for its terminal size until it reports want: sizes travel apart from the keys
// (their own stream or channel), so a query typed right after a resize may still see the old size. Each query's
// answer carries its own number, computed by the shell, so the echo of the typed line never matches. It returns
// how many queries it took and the sizes seen.
func (k *ttyKubectl) waitSize(want string) (tries int, seen []string) {
	k.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		k.seq++
		tries++
		n := 1000 + k.seq
		from := k.mark()
		k.send(fmt.Sprintf("echo \"sz$((%d+%d))=$(stty size)\"\r", n-1, 1))
		m := k.waitFor(from, regexp.MustCompile(fmt.Sprintf(`sz%d=(\d+ \d+)\r\n`, n)), 10*time.Second)
		if m != nil {
			seen = append(seen, m[1])
			if m[1] == want {
				return tries, seen
			}
		}
		select {
		case <-k.exited:
			k.t.Fatalf("kubectl exited (%v) while waiting for size %q (seen %q)", k.waitErr, want, seen)
		default:
		}
		time.Sleep(100 * time.Millisecond)
	}
	k.t.Fatalf("the remote terminal did not report size %q within 45s (seen %q)", want, seen)
	return
}

// resize changes the terminal's size as a terminal emulator does when its window changes: the kernel sends
// SIGWINCH to kubectl, which reads the new size and sends it.
func (k *ttyKubectl) resize(rows, cols uint16) {
	k.t.Helper()
	if err := pty.Setsize(k.ptmx, &pty.Winsize{Rows: rows, Cols: cols}); err != nil {
		k.t.Fatalf("resize the terminal: %v", err)
	}
}

// wait waits for kubectl to exit and for the rest of its output, and returns its exit status.
func (k *ttyKubectl) wait(within time.Duration) int {
	k.t.Helper()
	select {
	case <-k.exited:
	case <-time.After(within):
		k.t.Fatalf("kubectl did not exit within %v", within)
	}
	select {
	case <-k.readDone: // EIO: no process has the terminal open any more, and what kubectl wrote has been read
	case <-time.After(5 * time.Second):
		k.t.Fatal("kubectl's terminal still open 5s after it exited")
	}
	return exitStatus(k.waitErr)
}

// checkRestored checks that kubectl put its terminal back in the mode it found it in (echo and line editing on).
func (k *ttyKubectl) checkRestored() {
	k.t.Helper()
	fl, err := k.lflag()
	if err != nil {
		k.t.Fatalf("terminal mode after kubectl: %v", err)
	}
	if fl&(unix.ECHO|unix.ICANON) != unix.ECHO|unix.ICANON {
		k.t.Fatalf("kubectl left its terminal in raw mode: lflag %#x", fl)
	}
}

// TestStreamKubectlExecTTY runs `kubectl exec -it POD -- sh` on a 31×97 terminal, checks the shell sees that size,
// resizes the terminal to 42×123 and checks the shell sees that, then ends the shell with `exit 3`, which must be
// kubectl's exit status.
func TestStreamKubectlExecTTY(t *testing.T) {
	e := newStreamEnv(t)
	for _, mode := range remoteCommandModes {
		t.Run(mode.name, func(t *testing.T) {
			pod := sleeper(t).Name
			k := startKubectlTTY(t, mode.env, e.kc, 31, 97, "exec", "-it", pod, "-c", "main", "--", "sh")
			k.waitRaw()
			raw := time.Since(k.start)

			tries1, seen1 := k.waitSize("31 97")
			first := time.Since(k.start)
			resized := time.Now()
			k.resize(42, 123)
			tries2, seen2 := k.waitSize("42 123")
			afterResize := time.Since(resized)

			k.send("exit 3\r")
			if code := k.wait(30 * time.Second); code != 3 {
				t.Fatalf("kubectl exit status %d (%v), want 3", code, k.waitErr)
			}
			out := k.output()
			// kubectl prints this on its stderr, which is the terminal too.
			if !strings.Contains(out, "command terminated with exit code 3\r\n") {
				t.Fatalf("no 'command terminated with exit code 3' on the terminal: %q", out)
			}
			k.checkRestored()

			rec := e.gwAudit.wait(t, "exec -it", func(r audit.Record) bool { return r.Subresource == "exec" && r.Name == pod })
			checkUpgradeRecord(t, rec, mode.method, "exec")
			if got := strings.Join(rec.Command, " "); got != "sh" || !strings.Contains(rec.Path, "tty=true") {
				t.Fatalf("gateway record: command %q path %s; want sh with tty=true", got, rec.Path)
			}
			t.Logf("%s: raw mode after %v; 31 97 after %v (%d queries, seen %q); 42 123 %v after the resize (%d queries, seen %q); "+
				"session %v; gateway bytes in/out %d/%d",
				mode.name, raw.Round(time.Millisecond), first.Round(time.Millisecond), tries1, seen1,
				afterResize.Round(time.Millisecond), tries2, seen2, time.Since(k.start).Round(time.Millisecond), rec.BytesIn, rec.BytesOut)
			t.Logf("%s: kubectl's terminal:\n%q", mode.name, out)
		})
	}
}

// ttyShell is a pod whose main process is an interactive shell on a terminal, as `kubectl run -it ... -- sh`
// makes: tty and stdin.
func ttyShell(t *testing.T) *corev1.Pod {
	return startPod(t, "ttysh", corev1.Container{Command: []string{"sh"}, Stdin: true, TTY: true})
}

// echoedThrough matches text as a terminal shows it after a line editor's redraws: any CSI control sequences
// (cursor moves, erases) between its characters, and the line repainted from its prompt.
func echoedThrough(text string) *regexp.Regexp {
	const csi = `(?:\x1b\[[0-9;?]*[A-Za-z])*`
	var b strings.Builder
	for _, r := range text {
		b.WriteString(regexp.QuoteMeta(string(r)))
		b.WriteString(csi)
	}
	return regexp.MustCompile(b.String())
}

// attachPrompt is the end of kubectl attach's notice; it writes it before it takes the terminal.
const attachPrompt = "If you don't see a command prompt, try pressing enter.\r\n"

// TestStreamKubectlAttachTTY attaches `kubectl attach -it` on a 31×97 terminal to a pod whose shell runs on a
// terminal: a typed line is echoed by the remote terminal and answered, the shell sees the sizes before and after a
// resize, and `exit 5` ends the shell, so the container, so the session: kubectl exits 0 (attach does not pass on
// the exit code; the pod's status has it).
func TestStreamKubectlAttachTTY(t *testing.T) {
	e := newStreamEnv(t)
	cs := adminClient(t)
	for _, mode := range remoteCommandModes {
		t.Run(mode.name, func(t *testing.T) {
			pod := ttyShell(t).Name
			k := startKubectlTTY(t, mode.env, e.kc, 31, 97, "attach", "-it", pod, "-c", "main")
			k.waitRaw()
			if k.waitFor(0, regexp.MustCompile(regexp.QuoteMeta(attachPrompt)), 10*time.Second) == nil {
				t.Fatalf("no %q on the terminal", attachPrompt)
			}

			// The terminal is raw: the echo of the line comes from the remote terminal, the answer from the shell.
			// busybox's line editor may redraw the line half-way (it asks the terminal for the cursor position and
			// repaints when the answer comes): the echo is matched with any control sequences between its characters.
			from := k.mark()
			begin := time.Now()
			k.send("echo \"hi$((40+2))\"\r")
			echo := echoedThrough("echo \"hi$((40+2))\"\r\nhi42\r\n")
			if k.waitFor(from, echo, 30*time.Second) == nil {
				t.Fatalf("typed line not echoed and answered: %q", k.output()[from:])
			}
			echoed := time.Since(begin)

			// kubectl attach sends the size plus one, then the size, so that a reattached screen is redrawn.
			tries1, seen1 := k.waitSize("31 97")
			resized := time.Now()
			k.resize(42, 123)
			tries2, seen2 := k.waitSize("42 123")
			afterResize := time.Since(resized)

			k.send("exit 5\r")
			if code := k.wait(30 * time.Second); code != 0 {
				t.Fatalf("kubectl exit status %d (%v), want 0", code, k.waitErr)
			}
			out := k.output()
			reattach := fmt.Sprintf("Session ended, resume using 'kubectl attach %s -c main -n %s -i -t' command", pod, streamNS)
			if !strings.Contains(out, reattach) {
				t.Fatalf("no %q on the terminal: %q", reattach, out)
			}
			k.checkRestored()

			wait.Until(t, 30*time.Second, "container main terminated with exit code 5", func() bool {
				p, err := cs.CoreV1().Pods(streamNS).Get(context.Background(), pod, metav1.GetOptions{})
				if err != nil || len(p.Status.ContainerStatuses) != 1 {
					return false
				}
				term := p.Status.ContainerStatuses[0].State.Terminated
				return term != nil && term.ExitCode == 5
			})
			rec := e.gwAudit.wait(t, "attach -it", func(r audit.Record) bool { return r.Subresource == "attach" && r.Name == pod })
			checkUpgradeRecord(t, rec, mode.method, "attach")
			if !strings.Contains(rec.Path, "tty=true") {
				t.Fatalf("gateway record: path %s, want tty=true", rec.Path)
			}
			t.Logf("%s: line echoed and answered in %v; 31 97 after %d queries (seen %q); 42 123 %v after the resize (%d queries, seen %q); "+
				"session %v; gateway bytes in/out %d/%d",
				mode.name, echoed.Round(time.Millisecond), tries1, seen1, afterResize.Round(time.Millisecond), tries2, seen2,
				time.Since(k.start).Round(time.Millisecond), rec.BytesIn, rec.BytesOut)
			t.Logf("%s: kubectl's terminal:\n%q", mode.name, out)
		})
	}
}
