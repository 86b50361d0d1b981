package fakekubelet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/creack/pty"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// dialTimeout bounds a port-forward's connection to 127.0.0.1.
const dialTimeout = 10 * time.Second

// streamRuntime is the runtime side of the cri-streaming handlers: remotecommand.Executor and Attacher, and
// portforward.PortForwarder, for the pods of one namespace. The handlers pass the pod's name.
type streamRuntime struct {
	k         *Kubelet
	namespace string
}

// ExecInContainer runs cmd in the container (container.exec).
func (s streamRuntime) ExecInContainer(ctx context.Context, name, uid, containerName string, cmd []string,
	in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize,
	_ time.Duration) error {
	c, err := s.k.lookupContainer(s.namespace, name, uid, containerName)
	if err != nil {
		go resizeLoop(resize, nil)
		return err
	}
	stdin, stdout, stderr := requestedStreams(ctx, in, out, errOut)
	// The request's context ends with the kubelet too (BaseContext), which kills the process.
	return c.exec(ctx, cmd, stdin, stdout, stderr, tty, resize)
}

// AttachContainer copies the main process's output to out and errOut and in to its stdin, until the client goes or
// the process exits.
func (s streamRuntime) AttachContainer(ctx context.Context, name, uid, containerName string, in io.Reader,
	out, errOut io.WriteCloser, _ bool, resize <-chan remotecommand.TerminalSize) error {
	c, err := s.k.lookupContainer(s.namespace, name, uid, containerName)
	if err != nil {
		go resizeLoop(resize, nil)
		return err
	}
	stdin, stdout, stderr := requestedStreams(ctx, in, out, errOut)
	return c.attach(ctx, stdin, stdout, stderr, resize)
}

// PortForward connects stream to 127.0.0.1:port: the containers share the node's network namespace.
func (s streamRuntime) PortForward(_ context.Context, name, _ string, port int32, stream io.ReadWriteCloser) error {
	// The handlers pass context.Background(); the kubelet's context ends the forward when it stops.
	ctx := s.k.ctx
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return fmt.Errorf("failed to connect to port %d of pod %s/%s: %w", port, s.namespace, name, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	go func() {
		// Client to pod. A clean end is a half-close: the pod may still answer. Otherwise drop the connection.
		if _, err := io.Copy(conn, stream); err != nil {
			_ = conn.Close()
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	// Pod to client; when the pod closes, the handler closes the stream.
	if _, err := io.Copy(stream, conn); err != nil && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("port %d of pod %s/%s: %w", port, s.namespace, name, err)
	}
	return nil
}

// requestedStreams drops the streams the client did not ask for. Over SPDY they are nil already; over WebSocket
// (a client talking to us directly) they exist but are dead ends, and a stdin that is never closed would keep a
// process like cat waiting.
func requestedStreams(ctx context.Context, in io.Reader, out, errOut io.WriteCloser) (io.Reader, io.Writer,
	io.Writer) {
	var stdin io.Reader
	var stdout, stderr io.Writer
	if in != nil {
		stdin = in
	}
	if out != nil {
		stdout = out
	}
	if errOut != nil {
		stderr = errOut
	}
	if o, ok := ctx.Value(streamOptionsKey{}).(*remotecommand.Options); ok {
		if !o.Stdin {
			stdin = nil
		}
		if !o.Stdout {
			stdout = nil
		}
		if !o.Stderr {
			stderr = nil
		}
	}
	return stdin, stdout, stderr
}

// resizeLoop applies terminal size changes to tty (when not nil) until the channel closes. It must always run: the
// sender blocks until each size is taken.
func resizeLoop(resize <-chan remotecommand.TerminalSize, tty *os.File) {
	if resize == nil {
		return
	}
	for size := range resize {
		if tty != nil && size.Width > 0 && size.Height > 0 {
			_ = pty.Setsize(tty, &pty.Winsize{Rows: size.Height, Cols: size.Width})
		}
	}
}

// firstSizeWait is how long an exec with a terminal waits for the client's terminal size before it starts.
const firstSizeWait = 500 * time.Millisecond

// firstSize returns the first terminal size from resize, waiting at most firstSizeWait, or nil. Clients send it right
// after the streams are up; starting the process with it spares a program like stty from seeing 0x0 first (container
// runtimes have that race).
func firstSize(resize <-chan remotecommand.TerminalSize) *pty.Winsize {
	if resize == nil {
		return nil
	}
	t := time.NewTimer(firstSizeWait)
	defer t.Stop()
	select {
	case size, ok := <-resize:
		if ok && size.Width > 0 && size.Height > 0 {
			return &pty.Winsize{Rows: size.Height, Cols: size.Width}
		}
	case <-t.C:
	}
	return nil
}

// exec runs argv in the container, as runc exec does: in its namespaces and root, as its user, with its
// environment (TERM=xterm added for a terminal), in its working directory, with a terminal of its own /dev/pts when
// tty is set. It returns a utilexec.CodeExitError for a non-zero exit, so the client gets the code, and containerd's
// error (through the kubelet) when the process cannot start, such as a program not found. Cancelling ctx kills the
// process's group.
func (c *container) exec(ctx context.Context, argv []string, in io.Reader, out, errOut io.Writer, tty bool,
	resize <-chan remotecommand.TerminalSize) error {
	if len(argv) == 0 {
		go resizeLoop(resize, nil)
		return errors.New("no command given")
	}
	req := &execRequest{pod: c.pod, proc: c.proc, tty: tty, stdin: in != nil && !tty, stdout: out, stderr: errOut}
	req.proc.Args = argv
	req.proc.Env = append([]string(nil), c.proc.Env...)
	if tty {
		req.proc.Env = setEnv(req.proc.Env, "TERM", "xterm")
		if size := firstSize(resize); size != nil {
			req.size = &ptySize{rows: size.Rows, cols: size.Cols}
		}
	}
	c.nsMu.RLock()
	req.mnt, req.pid = c.mnt, c.pid
	var p *execProc
	err := errNotRunning
	if req.mnt != nil {
		p, err = startExec(req)
	}
	c.nsMu.RUnlock()
	if err != nil {
		go resizeLoop(resize, nil)
		if errors.Is(err, errNotRunning) {
			return err
		}
		return fmt.Errorf("failed to exec in container: failed to start exec %q: OCI runtime exec failed: exec failed: "+
			"unable to start container process: %v: unknown", newID(), err)
	}
	pid := p.cmd.Process.Pid
	stop := context.AfterFunc(ctx, func() { _ = killGroup(pid, syscall.SIGKILL) })
	defer stop()

	var waitErr error
	if tty {
		defer p.pty.Close()
		go resizeLoop(resize, p.pty)
		if in != nil {
			go func() { _, _ = io.Copy(p.pty, in) }()
		}
		if out == nil {
			out = io.Discard
		}
		copied := make(chan struct{})
		go func() {
			defer close(copied)
			_, _ = io.Copy(out, p.pty) // ends with EIO once no process has the terminal open
		}()
		waitErr = <-p.done
		select {
		case <-copied:
		case <-time.After(drainTimeout):
		}
	} else {
		go resizeLoop(resize, nil)
		if p.stdin != nil {
			// Not waited for: it ends when the client closes stdin or the connection.
			go func() {
				_, _ = io.Copy(p.stdin, in)
				_ = p.stdin.Close()
			}()
		}
		waitErr = <-p.done
	}
	if p.cmd.ProcessState == nil {
		return fmt.Errorf("failed to wait for %q: %w", argv[0], waitErr)
	}
	if code := exitCode(p.cmd.ProcessState); code != 0 {
		return utilexec.CodeExitError{
			Err:  fmt.Errorf("command %q exited with code %d", argv[0], code),
			Code: int(code),
		}
	}
	return nil
}

// errNotRunning is containerd's answer to an exec in a container whose process has ended.
var errNotRunning = errors.New("failed to exec in container: container is in CONTAINER_EXITED state")

// attach joins an attach session to the main process: its output goes to out and errOut (only out with a
// terminal), in goes to its stdin if the container has one. It returns when ctx ends (the client went), the process
// exited and its output was delivered, or a write to the client failed. With stdinOnce, the process's stdin is
// closed once the first session's stdin has ended.
func (c *container) attach(ctx context.Context, in io.Reader, out, errOut io.Writer,
	resize <-chan remotecommand.TerminalSize) error {
	go resizeLoop(resize, c.pty)
	sub := c.subscribe(out, errOut)
	if sub == nil {
		return fmt.Errorf("container %s is not running", c.spec.Name)
	}
	defer c.unsubscribe(sub)
	if in != nil && c.stdin != nil {
		go func() {
			_, _ = io.Copy(c.stdin, in)
			if c.spec.StdinOnce {
				c.closeStdin()
			}
		}()
	}
	select {
	case <-ctx.Done():
	case <-c.done:
	case <-sub.gone:
	}
	return nil
}
