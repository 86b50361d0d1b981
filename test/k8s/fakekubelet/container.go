package fakekubelet

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// drainTimeout bounds the wait for a process's output after it exited, in case something escaped its process group
// and holds the pipe or terminal open.
const drainTimeout = time.Second

// container is the local stand-in for one container: its main process (command and args, run in the container's
// working directory, in its own process group), the log of that process's output, and the attach sessions.
//
// The main process gets a stdin pipe when the container has stdin: true, and a terminal when it has tty: true. When
// it exits the rest of its process group is killed, as a container's processes die with its PID 1.
type container struct {
	spec corev1.Container
	id   string   // the containerID reported in the status
	dir  string   // working directory of the main process and of execs
	env  []string // environment of the main process and of execs
	logs *logFile
	log  *slog.Logger

	cmd       *exec.Cmd      // nil if the process did not start
	stdin     io.WriteCloser // the process's stdin (pipe, or the terminal when tty); nil unless spec.Stdin
	pty       *os.File       // the terminal's controlling side when spec.TTY
	startedAt time.Time
	done      chan struct{} // closed once the process has exited and its output is in the log

	mu          sync.Mutex // guards the exit state below
	exited      bool
	exitCode    int32
	reason      string // Completed, Error or StartError
	message     string
	finishedAt  time.Time
	stdinClosed bool

	subsMu sync.Mutex               // held while output is copied to the sessions, so an order is kept
	subs   map[*subscriber]struct{} // attach sessions; nil once the output has ended
}

// subscriber is one attach session's view of the main process's output.
type subscriber struct {
	stdout, stderr io.Writer     // either may be nil
	gone           chan struct{} // closed when a write to the session failed
	goneOnce       sync.Once
}

func (s *subscriber) fail() { s.goneOnce.Do(func() { close(s.gone) }) }

// startContainer starts spec's main process for pod. A process that cannot start makes a container that is terminated
// at once with reason StartError; the error return is for local failures (directories, log file, pipes). onExit is
// called once the process has exited, from another goroutine.
func startContainer(pod *corev1.Pod, spec corev1.Container, podDir string, log *slog.Logger,
	onExit func()) (*container, error) {
	c := &container{
		spec:      spec,
		id:        "fakekubelet://" + string(pod.UID) + "/" + spec.Name,
		dir:       spec.WorkingDir,
		env:       containerEnv(pod, spec),
		log:       log,
		startedAt: time.Now(),
		done:      make(chan struct{}),
		subs:      map[*subscriber]struct{}{},
	}
	if c.dir == "" {
		c.dir = filepath.Join(podDir, spec.Name)
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return nil, fmt.Errorf("failed to create the working directory of container %s: %w", spec.Name, err)
	}
	logs, err := newLogFile(filepath.Join(podDir, spec.Name+".log"))
	if err != nil {
		return nil, err
	}
	c.logs = logs

	argv := append(append([]string{}, spec.Command...), spec.Args...)
	if len(argv) == 0 {
		argv = []string{"sleep", "infinity"} // no image to take an entrypoint from: a container that just runs
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = c.dir, c.env
	var pumps []io.ReadCloser
	var pumpStreams []string
	if spec.TTY {
		c.pty, err = pty.StartWithAttrs(cmd, nil, ttyProcAttr())
		if err == nil {
			pumps, pumpStreams = []io.ReadCloser{c.pty}, []string{streamStdout}
			if spec.Stdin {
				c.stdin = c.pty
			}
		}
	} else {
		err = c.startPiped(cmd, &pumps, &pumpStreams)
	}
	if err != nil {
		if !isStartError(err) {
			return nil, fmt.Errorf("failed to start container %s: %w", spec.Name, err)
		}
		log.Warn("container failed to start", "err", err)
		c.setExited(128, "StartError", err.Error())
		c.closeOutput()
		close(c.done)
		return c, nil
	}
	c.cmd = cmd
	log.Info("started container", "pid", cmd.Process.Pid, "argv", argv)

	var pumpWG sync.WaitGroup
	for i, r := range pumps {
		pumpWG.Go(func() { c.pump(r, pumpStreams[i]) })
	}
	go func() {
		waitErr := cmd.Wait()
		// A container's processes die with its main process.
		_ = killGroup(cmd.Process.Pid, syscall.SIGKILL)
		drained := make(chan struct{})
		go func() { pumpWG.Wait(); close(drained) }()
		select {
		case <-drained:
		case <-time.After(drainTimeout):
			// Something outside the group holds the output open. Closing unblocks a pipe's read; a terminal in
			// blocking mode may stay blocked, and then its pump is abandoned (later output is dropped).
			for _, r := range pumps {
				_ = r.Close()
			}
			select {
			case <-drained:
			case <-time.After(drainTimeout):
				log.Warn("container output still open after its process exited; abandoning it")
			}
		}
		for _, r := range pumps {
			_ = r.Close()
		}
		code := exitCode(cmd.ProcessState)
		reason := "Completed"
		if code != 0 {
			reason = "Error"
		}
		c.setExited(code, reason, "")
		c.closeOutput()
		log.Info("container exited", "exit_code", code, "wait", waitErr)
		close(c.done)
		onExit()
	}()
	return c, nil
}

// startPiped starts cmd with its stdout and stderr on pipes that the pumps read, and a stdin pipe if the container
// has stdin. Passing *os.File pipes keeps exec.Cmd from starting copy goroutines of its own.
func (c *container) startPiped(cmd *exec.Cmd, pumps *[]io.ReadCloser, streams *[]string) error {
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return err
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.SysProcAttr = groupProcAttr()
	if c.spec.Stdin {
		if c.stdin, err = cmd.StdinPipe(); err != nil {
			return err
		}
	}
	err = cmd.Start()
	outW.Close() // the child has its copies
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return err
	}
	*pumps = []io.ReadCloser{outR, errR}
	*streams = []string{streamStdout, streamStderr}
	return nil
}

// isStartError reports whether err comes from starting the program (not found, not executable, bad directory)
// rather than from setting up its pipes or terminal.
func isStartError(err error) bool {
	var pathErr *os.PathError
	return errors.Is(err, exec.ErrNotFound) || errors.As(err, &pathErr) || errors.Is(err, syscall.EACCES) ||
		errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOEXEC)
}

// pump copies one output stream of the main process to the log and to the attach sessions.
func (c *container) pump(r io.Reader, stream string) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if werr := c.logs.append(stream, buf[:n]); werr != nil {
				c.log.Warn("failed to write the container log", "err", werr)
			}
			c.broadcast(stream, buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func (c *container) broadcast(stream string, p []byte) {
	c.subsMu.Lock()
	defer c.subsMu.Unlock()
	for s := range c.subs {
		w := s.stdout
		if stream == streamStderr {
			w = s.stderr
		}
		if w == nil {
			continue
		}
		if _, err := w.Write(p); err != nil {
			s.fail()
			delete(c.subs, s)
		}
	}
}

// subscribe adds an attach session. It returns nil if the output has already ended.
func (c *container) subscribe(stdout, stderr io.Writer) *subscriber {
	c.subsMu.Lock()
	defer c.subsMu.Unlock()
	if c.subs == nil {
		return nil
	}
	s := &subscriber{stdout: stdout, stderr: stderr, gone: make(chan struct{})}
	c.subs[s] = struct{}{}
	return s
}

func (c *container) unsubscribe(s *subscriber) {
	c.subsMu.Lock()
	defer c.subsMu.Unlock()
	delete(c.subs, s)
}

// closeOutput ends the log and refuses new attach sessions; called once the output is drained.
func (c *container) closeOutput() {
	c.subsMu.Lock()
	c.subs = nil
	c.subsMu.Unlock()
	c.logs.finish()
}

func (c *container) setExited(code int32, reason, message string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exited, c.exitCode, c.reason, c.message, c.finishedAt = true, code, reason, message, time.Now()
}

// closeStdin closes the main process's stdin pipe, for stdinOnce after the first attach session's stdin ended.
// A terminal is left open: closing it would also end the output.
func (c *container) closeStdin() {
	if c.stdin == nil || c.pty != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stdinClosed {
		c.stdinClosed = true
		_ = c.stdin.Close()
	}
}

// stop sends SIGTERM to the main process's group, SIGKILL after grace, and waits until the container is done.
func (c *container) stop(grace time.Duration) {
	if c.cmd == nil {
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	_ = killGroup(c.cmd.Process.Pid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
		return
	case <-t.C:
	}
	_ = killGroup(c.cmd.Process.Pid, syscall.SIGKILL)
	<-c.done
}

// status is the container's status for the pod: Running until the main process exits, then Terminated.
func (c *container) status() corev1.ContainerStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	started := metav1.NewTime(c.startedAt.Truncate(time.Second))
	cs := corev1.ContainerStatus{
		Name:        c.spec.Name,
		Image:       c.spec.Image,
		ImageID:     c.spec.Image,
		ContainerID: c.id,
		Started:     new(bool),
	}
	if c.exited {
		cs.State.Terminated = &corev1.ContainerStateTerminated{
			ExitCode:    c.exitCode,
			Reason:      c.reason,
			Message:     c.message,
			StartedAt:   started,
			FinishedAt:  metav1.NewTime(c.finishedAt.Truncate(time.Second)),
			ContainerID: c.id,
		}
		return cs
	}
	cs.State.Running = &corev1.ContainerStateRunning{StartedAt: started}
	cs.Ready = true
	*cs.Started = true
	return cs
}

// exitCode is the exit status as a container runtime reports it: 128+N for a process killed by signal N.
func exitCode(ps *os.ProcessState) int32 {
	if ps == nil {
		return 128
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int32(ws.Signal())
	}
	return int32(ps.ExitCode())
}

// killGroup signals the process group led by pid. Every process we start leads its own group.
func killGroup(pid int, sig syscall.Signal) error {
	return syscall.Kill(-pid, sig)
}

// containerEnv is our own environment (PATH and the like: the container is this machine) plus HOSTNAME and the
// container's env. Values from fieldRef are filled for the common pod fields; other valueFrom sources are empty.
func containerEnv(pod *corev1.Pod, spec corev1.Container) []string {
	env := append(os.Environ(), "HOSTNAME="+pod.Name)
	for _, e := range spec.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				v = pod.Name
			case "metadata.namespace":
				v = pod.Namespace
			case "metadata.uid":
				v = string(pod.UID)
			case "spec.nodeName":
				v = pod.Spec.NodeName
			case "spec.serviceAccountName":
				v = pod.Spec.ServiceAccountName
			case "status.podIP", "status.hostIP":
				v = "127.0.0.1"
			}
		}
		env = append(env, e.Name+"="+v)
	}
	return env
}
