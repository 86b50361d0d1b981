// Package testproc runs the real servers that tests start (etcd and kube-apiserver for internal/testenv/kubetest, SeaweedFS
// for internal/testenv/s3test) as child processes: each in its own process group and killed with the test binary, its
// output kept as a bounded tail for error messages and forwarded line by line to a shared log, a readiness wait
// that gives up at once when the child exits, and loopback ports to give it.
package testproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// StopGrace is how long a process has to exit after SIGTERM before it gets SIGKILL.
	StopGrace = 5 * time.Second
	// tailLines and tailLineBytes bound the output kept for error messages.
	tailLines     = 40
	tailLineBytes = 1024
)

// Process is one child (etcd, kube-apiserver, weed). Its output goes to a tail kept for error messages and, line by
// line with a name prefix, to the shared Log. The goroutine started by Start owns cmd.Wait; Stop waits for it. All
// methods may be called concurrently.
type Process struct {
	name string
	cmd  *exec.Cmd
	out  *tailWriter
	done chan struct{} // closed when the process has exited and its output is drained
	// exitCtx is cancelled when the process exits, so a readiness check in flight stops at once.
	exitCtx    context.Context
	exitCancel context.CancelFunc

	mu        sync.Mutex
	stopping  bool     // set by stop before signalling: an exit after it is expected
	early     bool     // the process exited before stop was called
	waitErr   error    // the result of cmd.Wait; valid once done is closed
	exitFuncs []func() // run once after the process exits; nil once they ran
	hasExited bool
	stopOnce  sync.Once
	stopError error
}

// Start starts path with args in dir. Children get SIGKILL when this process dies (see sysProcAttr), so a test that
// crashes leaves nothing running. log may be nil.
func Start(name, path string, args []string, dir string, log *Log) (*Process, error) {
	p := &Process{
		name: name,
		out:  &tailWriter{prefix: name + ": ", log: log},
		done: make(chan struct{}),
	}
	p.exitCtx, p.exitCancel = context.WithCancel(context.Background())
	p.cmd = exec.Command(path, args...)
	p.cmd.Dir = dir
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	p.cmd.SysProcAttr = sysProcAttr()
	// Our children start no grandchildren, but if one ever held the pipe open Wait must still return.
	p.cmd.WaitDelay = time.Second
	if err := p.cmd.Start(); err != nil {
		p.exitCancel()
		return nil, fmt.Errorf("failed to start %s: %w", name, err)
	}
	go func() {
		err := p.cmd.Wait()
		p.out.flush()
		p.mu.Lock()
		p.waitErr = err
		p.early = !p.stopping
		p.hasExited = true
		funcs := p.exitFuncs
		p.exitFuncs = nil
		p.mu.Unlock()
		close(p.done)
		p.exitCancel()
		for _, f := range funcs {
			f()
		}
	}()
	return p, nil
}

// PID is the child's process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited and its output is drained.
func (p *Process) Done() <-chan struct{} { return p.done }

// Tail returns the last lines of its output, each prefixed with the process name, or a note that there was none.
func (p *Process) Tail() string { return p.out.tail() }

// AfterExit runs f once the process has exited: at once if it already has, else from the goroutine that waited.
func (p *Process) AfterExit(f func()) {
	p.mu.Lock()
	if p.hasExited {
		p.mu.Unlock()
		f()
		return
	}
	p.exitFuncs = append(p.exitFuncs, f)
	p.mu.Unlock()
}

// Exited reports whether the process has exited, without blocking.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitError describes how the process ended, with the last lines of its output.
func (p *Process) ExitError() error {
	p.mu.Lock()
	err := p.waitErr
	p.mu.Unlock()
	if err == nil {
		err = errors.New("exit status 0")
	}
	return fmt.Errorf("%s exited unexpectedly (%w); last output:\n%s", p.name, err, p.out.tail())
}

// Stop sends SIGTERM, then SIGKILL after StopGrace, and waits for the process. It returns an error only if the
// process had already exited on its own before Stop was called. Safe to call more than once.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() {
		p.mu.Lock()
		p.stopping = true
		p.mu.Unlock()
		if !p.Exited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM) // fails only if it just exited: Wait tells
			t := time.NewTimer(StopGrace)
			select {
			case <-p.done:
			case <-t.C:
				_ = p.cmd.Process.Kill()
				<-p.done
			}
			t.Stop()
		}
		p.mu.Lock()
		early := p.early
		p.mu.Unlock()
		if early {
			p.stopError = p.ExitError()
		}
	})
	return p.stopError
}

// Log serialises the output lines of several processes (and the harness's own) to one io.Writer. A nil *Log, or
// one without a writer, discards.
type Log struct {
	mu sync.Mutex
	w  io.Writer
}

// NewLog returns a Log writing to w (nil: discard).
func NewLog(w io.Writer) *Log { return &Log{w: w} }

// WriteLine writes prefix, line and a newline as one write.
func (l *Log) WriteLine(prefix string, line []byte) {
	if l == nil || l.w == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	buf := make([]byte, 0, len(prefix)+len(line)+1)
	buf = append(append(append(buf, prefix...), line...), '\n')
	_, _ = l.w.Write(buf) // a failing log sink must not stop the process
}

// tailWriter splits a process's output into lines, keeps the last tailLines of them (each cut to tailLineBytes) and
// forwards each line to log. exec.Cmd writes to it from one goroutine; tail may be called from any.
type tailWriter struct {
	prefix string
	log    *Log

	mu      sync.Mutex
	partial []byte   // an incomplete last line, bounded by tailLineBytes
	lines   []string // ring of the last lines, oldest first
}

func (w *tailWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			w.partial = appendBounded(w.partial, b)
			break
		}
		w.partial = appendBounded(w.partial, b[:i])
		w.emitLocked()
		b = b[i+1:]
	}
	return n, nil
}

func (w *tailWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.emitLocked()
	}
}

func (w *tailWriter) emitLocked() {
	line := string(w.partial)
	w.partial = w.partial[:0]
	w.log.WriteLine(w.prefix, []byte(line))
	if len(w.lines) == tailLines {
		copy(w.lines, w.lines[1:])
		w.lines = w.lines[:tailLines-1]
	}
	w.lines = append(w.lines, line)
}

// tail returns the last lines of output, each prefixed with the process name, or a note that there was none.
func (w *tailWriter) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	lines := append([]string(nil), w.lines...)
	if len(w.partial) > 0 {
		lines = append(lines, string(w.partial))
	}
	if len(lines) == 0 {
		return "    (" + strings.TrimSuffix(w.prefix, ": ") + " printed nothing)"
	}
	var sb strings.Builder
	for _, l := range lines {
		sb.WriteString("    ")
		sb.WriteString(w.prefix)
		sb.WriteString(l)
		sb.WriteByte('\n')
	}
	return strings.TrimSuffix(sb.String(), "\n")
}

func appendBounded(dst, src []byte) []byte {
	if room := tailLineBytes - len(dst); room < len(src) {
		src = src[:max(room, 0)]
	}
	return append(dst, src...)
}

// WaitReady calls check every interval until it succeeds, p exits, or timeout (or ctx) ends. Errors carry the last
// check error and the last lines of p's output.
func WaitReady(ctx context.Context, p *Process, what string, timeout, interval time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer context.AfterFunc(p.exitCtx, cancel)() // abort a check in flight when p exits
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		if p.Exited() { // checked first: the exit also cancels ctx
			return fmt.Errorf("waiting for %s: %w", what, p.ExitError())
		}
		select {
		case <-p.done:
			return fmt.Errorf("waiting for %s: %w", what, p.ExitError())
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s (%w; last check: %v); last output:\n%s",
				what, timeout, context.Cause(ctx), err, p.Tail())
		case <-tick.C:
		}
	}
}

// FreePorts returns n distinct loopback ports that were free a moment ago. Another process may take one before our
// child binds it: callers retry with new ports when the child says "address already in use" (PortTaken).
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("failed to find a free loopback port: %w", err)
		}
		// Held open until all are picked, so the n ports differ.
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// PortTaken reports whether p exited because a port it was given was taken meanwhile.
func (p *Process) PortTaken() bool {
	return p.Exited() && strings.Contains(p.Tail(), "address already in use")
}

// CacheDir is where the project's scripts cache the test servers they build (scripts/kube-bin.sh, s3-bin.sh):
// ${WARREN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/warren}.
func CacheDir() (string, error) {
	if c := os.Getenv("WARREN_CACHE"); c != "" {
		return c, nil
	}
	userCache, err := os.UserCacheDir() // $XDG_CACHE_HOME or $HOME/.cache
	if err != nil {
		return "", fmt.Errorf("failed to find the binary cache (set WARREN_CACHE): %w", err)
	}
	return filepath.Join(userCache, "warren"), nil
}
