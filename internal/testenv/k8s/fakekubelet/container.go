package fakekubelet

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// drainTimeout bounds the wait for a process's output after it exited, in case something escaped its PID namespace
// (a hostPID container) and holds the pipe or terminal open.
const drainTimeout = time.Second

// container is one container of a pod: its init, later its command, running in the container's namespaces and
// root (startInit), the log of that process's output, and the attach sessions. A container whose image or
// configuration is not usable never starts and stays waiting, with the reason the kubelet would give.
//
// The process gets a stdin pipe when the container has stdin: true, and a terminal of the container's own
// /dev/pts when it has tty: true. When it exits, its PID namespace and every process in it end (the kernel kills
// them); in the node's PID namespace (hostPID) its process group is killed instead.
type container struct {
	spec      corev1.Container
	ephemeral bool   // an ephemeral container (pods/ephemeralcontainers)
	id        string // the containerID reported in the status, without the fakekubelet:// scheme
	// external is the containerID (with its scheme) of a container the stand-in does not run itself but reports as
	// running (AnnotationExternalPrefix); "" for its own.
	external string
	dir      string // RootDir/pods/POD/containers/NAME: rootfs, upper, work, termination-log, pid
	img      *image // nil if the container is waiting for want of one
	proc     processSpec
	pod      *podNamespaces
	hostPID  bool
	logs     *logFile
	log      *slog.Logger

	// Set once started, then not changed.
	cmd       *os.Process    // nil if the process did not start
	stdin     io.WriteCloser // the process's stdin (pipe, or the terminal when tty); nil unless spec.Stdin
	pty       *os.File       // the terminal's controlling side when spec.TTY
	startedAt time.Time
	done      chan struct{} // closed once the process has exited (or never started) and its output is in the log

	// nsMu is held for reading while an exec enters the container's namespaces, for writing to release them.
	nsMu     sync.RWMutex
	mnt, pid *os.File // the container's namespaces; nil once it has exited

	mu          sync.Mutex // guards the state below
	waiting     bool       // never started: reason and message say why
	exited      bool
	exitCode    int32
	reason      string // waiting: ErrImagePull, CreateContainerConfigError, ...; terminated: Completed, Error, StartError
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

// containerParams is what startContainer needs besides the spec.
type containerParams struct {
	pod       *corev1.Pod
	state     *podState
	ephemeral bool
	target    *container // the container whose PID namespace an ephemeral container joins, or nil
	log       *slog.Logger
	onExit    func() // called once the process has exited, from another goroutine
}

// startContainer starts spec's process for a pod. A container whose image cannot be found or whose configuration
// cannot be applied is returned waiting; one whose process cannot start is terminated at once with reason
// StartError and the runtime's message, exit code 128. The error return is for local failures (directories, log).
func (k *Kubelet) startContainer(spec corev1.Container, cp containerParams) (*container, error) {
	p := cp.state
	c := &container{
		spec:      spec,
		ephemeral: cp.ephemeral,
		id:        newID(),
		dir:       filepath.Join(p.dir, "containers", spec.Name),
		pod:       p.ns,
		hostPID:   cp.pod.Spec.HostPID,
		log:       cp.log,
		startedAt: time.Now(),
		done:      make(chan struct{}),
		subs:      map[*subscriber]struct{}{},
	}
	for _, d := range []string{"rootfs", "upper", "work"} {
		if err := os.MkdirAll(filepath.Join(c.dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("failed to create the directories of container %s: %w", spec.Name, err)
		}
	}
	if err := os.WriteFile(filepath.Join(c.dir, "termination-log"), nil, 0o666); err != nil {
		return nil, fmt.Errorf("failed to create the termination message file of container %s: %w", spec.Name, err)
	}
	logs, err := newLogFile(filepath.Join(p.dir, spec.Name+".log"))
	if err != nil {
		return nil, err
	}
	c.logs = logs

	img, err := k.images.resolve(spec.Image)
	if err != nil {
		ie, _ := err.(*imageError)
		return c.wait(ie.reason, ie.message), nil
	}
	c.img = img
	initSpec, err := k.containerSpec(cp.pod, p, c)
	if err != nil {
		return c.wait("CreateContainerConfigError", err.Error()), nil
	}
	c.proc = initSpec.Process

	var pumpWG sync.WaitGroup
	var pumps []io.ReadCloser
	startedCh := make(chan error, 1)
	opts := initOptions{pod: p.ns, hostPID: c.hostPID, stdin: spec.Stdin && !spec.TTY,
		// Runs in the init's goroutine before it waits for the process, so finish sees what it set.
		onStarted: func(ip *initProcess, err error) {
			if err == nil {
				pumps = c.begin(ip, &pumpWG)
			}
			startedCh <- err
		}}
	if cp.target != nil {
		cp.target.nsMu.RLock()
		opts.sharePID = cp.target.pid
		if opts.sharePID == nil {
			cp.target.nsMu.RUnlock()
			return c.wait("CreateContainerError", fmt.Sprintf("target container %q is not running",
				cp.target.spec.Name)), nil
		}
	}
	startInit(initSpec, opts, func(ip *initProcess) { c.finish(ip, pumps, &pumpWG, cp.onExit) })
	err = <-startedCh
	if cp.target != nil {
		cp.target.nsMu.RUnlock()
	}
	if err != nil {
		msg := "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create " +
			"failed: unable to start container process: error during container init: " + err.Error() + ": unknown"
		c.log.Warn("container failed to start", "err", err)
		c.setExited(128, "StartError", msg)
		c.closeOutput()
		close(c.done)
		return c, nil
	}
	c.log.Info("started container", "pid", c.cmd.Pid, "image", img.ref, "argv", c.proc.Args)
	return c, nil
}

// AnnotationExternalPrefix, followed by a container's name, is a pod annotation whose value is a container id
// with its runtime's scheme (containerd://4f1c...): the stand-in then does not run that container itself but
// reports it running under that id. It emulates a kubelet whose runtime runs the container: a test runs it in a
// real containerd (internal/testenv/containerdtest) on this machine, and what reads the node's runtime state (warren
// acquire's node mode) finds it by the id the pod's status names. The container has no process of the stand-in's:
// exec and attach fail as for a container that is not running, its log is empty, and it stays running until the
// pod goes.
const AnnotationExternalPrefix = "external.fakekubelet.warren.dev/"

// externalContainer is spec reported as the running container id (AnnotationExternalPrefix).
func (k *Kubelet) externalContainer(spec corev1.Container, cp containerParams, id string) (*container, error) {
	c := &container{spec: spec, id: newID(), external: id, dir: filepath.Join(cp.state.dir, "containers", spec.Name), log: cp.log,
		startedAt: time.Now(), done: make(chan struct{}), subs: map[*subscriber]struct{}{}}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return nil, err
	}
	logs, err := newLogFile(filepath.Join(cp.state.dir, spec.Name+".log"))
	if err != nil {
		return nil, err
	}
	c.logs = logs
	c.closeOutput()
	if img, err := k.images.resolve(spec.Image); err == nil {
		c.img = img
	}
	c.log.Info("reporting an external container", "container_id", id)
	return c, nil
}

// begin takes over the started process ip and starts copying its output; it returns the streams copied.
func (c *container) begin(ip *initProcess, pumpWG *sync.WaitGroup) []io.ReadCloser {
	c.cmd, c.mnt, c.pid, c.pty = ip.cmd.Process, ip.mnt, ip.pid, ip.pty
	if c.spec.Stdin {
		c.stdin = ip.stdin
	}
	_ = os.WriteFile(filepath.Join(c.dir, "pid"), []byte(strconv.Itoa(c.cmd.Pid)+"\n"), 0o644)
	if c.spec.TTY {
		pumpWG.Go(func() { c.pump(ip.pty, streamStdout) })
		return []io.ReadCloser{ip.pty}
	}
	pumpWG.Go(func() { c.pump(ip.stdout, streamStdout) })
	pumpWG.Go(func() { c.pump(ip.stderr, streamStderr) })
	return []io.ReadCloser{ip.stdout, ip.stderr}
}

// finish is called once the container's process has exited: it ends what is left of the container, waits (bounded)
// for its output, releases its namespaces and records the exit.
func (c *container) finish(ip *initProcess, pumps []io.ReadCloser, pumpWG *sync.WaitGroup, onExit func()) {
	if c.hostPID {
		_ = killGroup(ip.cmd.Process.Pid, syscall.SIGKILL) // nothing else ends its children
	}
	drained := make(chan struct{})
	go func() { pumpWG.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drainTimeout):
		// Something outside the namespace holds the output open. Closing unblocks a pipe's read; a terminal in
		// blocking mode may stay blocked, and then its pump is abandoned (later output is dropped).
		for _, r := range pumps {
			_ = r.Close()
		}
		select {
		case <-drained:
		case <-time.After(drainTimeout):
			c.log.Warn("container output still open after its process exited; abandoning it")
		}
	}
	ip.closeStreams()
	c.nsMu.Lock()
	ip.closeNS()
	c.mnt, c.pid = nil, nil
	c.nsMu.Unlock()
	code := exitCode(ip.cmd.ProcessState)
	reason := "Completed"
	if code != 0 {
		reason = "Error"
	}
	msg := ""
	if b, err := os.ReadFile(filepath.Join(c.dir, "termination-log")); err == nil && len(b) > 0 {
		msg = string(b[:min(len(b), 4096)])
	}
	c.setExited(code, reason, msg)
	c.closeOutput()
	c.log.Info("container exited", "exit_code", code, "wait", ip.waitErr)
	close(c.done)
	onExit()
}

// wait marks a container that will not start, and returns it.
func (c *container) wait(reason, message string) *container {
	c.log.Warn("container not started", "reason", reason, "message", message)
	c.mu.Lock()
	c.waiting, c.reason, c.message = true, reason, message
	c.mu.Unlock()
	c.closeOutput()
	close(c.done)
	return c
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
			c.log.Debug("attach session dropped: a write to it failed", "stream", stream, "err", err)
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

// stop sends SIGTERM to the container's process, SIGKILL after grace, and waits until the container is done. As
// PID 1 of its namespace the process ignores SIGTERM unless it handles it, as in a real container.
func (c *container) stop(grace time.Duration) {
	if c.external != "" {
		c.mu.Lock()
		if !c.exited {
			c.exited, c.exitCode, c.reason, c.finishedAt = true, 0, "Completed", time.Now()
			close(c.done)
		}
		c.mu.Unlock()
		return
	}
	if c.cmd == nil {
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
		return
	case <-t.C:
	}
	_ = c.cmd.Kill()
	<-c.done
}

// status is the container's status for the pod: Waiting if it never started, Running until its process exits,
// then Terminated.
func (c *container) status() corev1.ContainerStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	started := metav1.NewTime(c.startedAt.Truncate(time.Second))
	cs := corev1.ContainerStatus{
		Name:    c.spec.Name,
		Image:   c.spec.Image,
		Started: new(bool),
	}
	if c.img != nil {
		cs.Image, cs.ImageID = c.img.ref, c.img.id
	}
	if c.waiting {
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: c.reason, Message: c.message}
		return cs
	}
	cs.ContainerID = "fakekubelet://" + c.id
	if c.external != "" {
		cs.ContainerID = c.external
	}
	if c.exited {
		cs.State.Terminated = &corev1.ContainerStateTerminated{
			ExitCode:    c.exitCode,
			Reason:      c.reason,
			Message:     c.message,
			StartedAt:   started,
			FinishedAt:  metav1.NewTime(c.finishedAt.Truncate(time.Second)),
			ContainerID: cs.ContainerID,
		}
		return cs
	}
	cs.State.Running = &corev1.ContainerStateRunning{StartedAt: started}
	cs.Ready = !c.ephemeral // ephemeral containers are never ready
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

// killGroup signals the process group led by pid.
func killGroup(pid int, sig syscall.Signal) error {
	return syscall.Kill(-pid, sig)
}
