package kubetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// stopGrace is how long a process has to exit after SIGTERM before it gets SIGKILL.
	stopGrace = 5 * time.Second
	// tailLines and tailLineBytes bound the output kept for error messages.
	tailLines     = 40
	tailLineBytes = 1024
)

// process is one child (etcd or kube-apiserver). Its output goes to a tail kept for error messages and, line by line
// with a name prefix, to the shared logger. The goroutine started by start owns cmd.Wait; stop waits for it.
type process struct {
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

// startProcess starts path with args. Children get SIGKILL when this process dies (see sysProcAttr), so a test that
// crashes leaves nothing running.
func startProcess(name, path string, args []string, dir string, logger *lockedWriter) (*process, error) {
	p := &process{
		name: name,
		out:  &tailWriter{prefix: name + ": ", log: logger},
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

// afterExit runs f once the process has exited: at once if it already has, else from the goroutine that waited.
func (p *process) afterExit(f func()) {
	p.mu.Lock()
	if p.hasExited {
		p.mu.Unlock()
		f()
		return
	}
	p.exitFuncs = append(p.exitFuncs, f)
	p.mu.Unlock()
}

// exited reports whether the process has exited, without blocking.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes how the process ended, with the last lines of its output.
func (p *process) exitError() error {
	p.mu.Lock()
	err := p.waitErr
	p.mu.Unlock()
	if err == nil {
		err = errors.New("exit status 0")
	}
	return fmt.Errorf("%s exited unexpectedly (%w); last output:\n%s", p.name, err, p.out.tail())
}

// stop sends SIGTERM, then SIGKILL after stopGrace, and waits for the process. It returns an error only if the process
// had already exited on its own before stop was called. Safe to call more than once.
func (p *process) stop() error {
	p.stopOnce.Do(func() {
		p.mu.Lock()
		p.stopping = true
		p.mu.Unlock()
		if !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM) // fails only if it just exited: Wait tells
			t := time.NewTimer(stopGrace)
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
			p.stopError = p.exitError()
		}
	})
	return p.stopError
}

// lockedWriter serialises writes from the output copiers of several processes to one io.Writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) writeLine(prefix string, line []byte) {
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
	log    *lockedWriter

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
	w.log.writeLine(w.prefix, []byte(line))
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
