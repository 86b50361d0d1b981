package fakekubelet

// The kubelet's side of the container runtime: pod namespaces, starting a container's init, and exec.
//
// Namespaces are joined per OS thread (setns), so each of these runs in a goroutine locked to its thread and never
// unlocked: the Go runtime then ends the thread with the goroutine instead of reusing it in foreign namespaces. The
// same goroutine also waits for the process it started: Pdeathsig (a container's init has it) fires when the parent
// *thread* exits.

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// podNamespaces are the namespaces the containers of a pod share, as a pod sandbox's: UTS (the pod's hostname) and
// IPC (unless hostIPC). They live as long as the files are open. The network namespace is the node's.
type podNamespaces struct {
	uts, ipc *os.File // ipc is nil with hostIPC
}

// newPodNamespaces creates a pod's UTS namespace with hostname, and an IPC namespace unless hostIPC.
func newPodNamespaces(hostname string, hostIPC bool) (*podNamespaces, error) {
	type result struct {
		ns  *podNamespaces
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: this thread leaves the node's namespaces
		flags := unix.CLONE_NEWUTS
		if !hostIPC {
			flags |= unix.CLONE_NEWIPC
		}
		if err := unix.Unshare(flags); err != nil {
			ch <- result{err: fmt.Errorf("failed to create the pod's namespaces (fakekubelet must run as root): %w", err)}
			return
		}
		if err := unix.Sethostname([]byte(hostname)); err != nil {
			ch <- result{err: fmt.Errorf("failed to set the pod's hostname: %w", err)}
			return
		}
		ns := &podNamespaces{}
		var err error
		if ns.uts, err = os.Open("/proc/thread-self/ns/uts"); err == nil && !hostIPC {
			ns.ipc, err = os.Open("/proc/thread-self/ns/ipc")
		}
		if err != nil {
			ns.close()
			ch <- result{err: err}
			return
		}
		ch <- result{ns: ns}
	}()
	r := <-ch
	return r.ns, r.err
}

func (ns *podNamespaces) close() {
	for _, f := range []*os.File{ns.uts, ns.ipc} {
		if f != nil {
			_ = f.Close()
		}
	}
}

// join moves the calling (locked) thread into the pod's namespaces.
func (ns *podNamespaces) join() error {
	if err := setns(ns.uts, unix.CLONE_NEWUTS); err != nil {
		return err
	}
	return setns(ns.ipc, unix.CLONE_NEWIPC)
}

// setns joins the namespace f (nil: stay) with the calling thread.
func setns(f *os.File, nstype int) error {
	if f == nil {
		return nil
	}
	if err := unix.Setns(int(f.Fd()), nstype); err != nil {
		return fmt.Errorf("setns %s: %w", f.Name(), err)
	}
	return nil
}

// initOptions say how to start a container's init.
type initOptions struct {
	pod       *podNamespaces
	sharePID  *os.File // the PID namespace to start in (an ephemeral container's target), or nil
	hostPID   bool     // start in the node's PID namespace
	stdin     bool     // give the process a stdin pipe (spec.stdin), when not TTY
	onStarted func(*initProcess, error)
}

// initProcess is a running container init, later the container's command.
type initProcess struct {
	cmd      *exec.Cmd
	mnt, pid *os.File       // the container's mount and PID namespaces, for exec and for ephemeral containers
	stdin    io.WriteCloser // nil unless asked for; the terminal when TTY
	stdout   io.ReadCloser  // the terminal when TTY
	stderr   io.ReadCloser  // nil when TTY
	pty      *os.File       // the terminal's controlling side, when TTY
	waitErr  error          // cmd.Wait's, set before exited is called
}

// startInit starts a container's init with spec in a goroutine locked to its thread and calls o.onStarted from it
// once the container's command runs or failed to start (error: the runtime's message). Then the goroutine waits for
// the process, calls exited and returns.
func startInit(spec *initSpec, o initOptions, exited func(*initProcess)) {
	go func() {
		// Never unlocked: the thread joins the pod's namespaces, and it is the parent thread that Pdeathsig watches,
		// so it lives until the init has exited.
		runtime.LockOSThread()
		p, err := runInit(spec, o)
		o.onStarted(p, err)
		if p == nil {
			return
		}
		p.waitErr = p.cmd.Wait()
		exited(p)
	}()
}

func runInit(spec *initSpec, o initOptions) (*initProcess, error) {
	if err := o.pod.join(); err != nil {
		return nil, err
	}
	cloneflags := uintptr(unix.CLONE_NEWNS)
	switch {
	case o.sharePID != nil:
		if err := setns(o.sharePID, unix.CLONE_NEWPID); err != nil {
			return nil, err
		}
	case !o.hostPID:
		cloneflags |= unix.CLONE_NEWPID
	}
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer cfgW.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		return nil, err
	}
	defer statusR.Close()

	p := &initProcess{}
	cmd := &exec.Cmd{Path: "/proc/self/exe", Args: []string{initArg0}, Env: []string{},
		ExtraFiles: []*os.File{cfgR, statusW}}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: cloneflags, Setsid: true}
	if o.sharePID == nil {
		// Not in a target's namespace: there the child sees no parent and Go's Pdeathsig check would kill it. The
		// target's init has it, and its end ends the namespace.
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	var childEnds []*os.File // closed once the child has its copies
	if !spec.TTY {
		outR, outW, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			outR.Close()
			outW.Close()
			return nil, err
		}
		cmd.Stdout, cmd.Stderr, p.stdout, p.stderr = outW, errW, outR, errR
		childEnds = append(childEnds, outW, errW)
		if o.stdin {
			inR, inW, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			cmd.Stdin, p.stdin = inR, inW
			childEnds = append(childEnds, inR)
		}
	}
	err = cmd.Start()
	cfgR.Close()
	statusW.Close()
	for _, f := range childEnds {
		f.Close()
	}
	if err != nil {
		p.closeStreams()
		return nil, fmt.Errorf("failed to start the container's init: %w", err)
	}
	p.cmd = cmd
	fail := func(err error) (*initProcess, error) {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		p.closeStreams()
		p.closeNS()
		return nil, err
	}
	pid := cmd.Process.Pid
	// Opened now, while the init surely runs: a command that exits at once would take /proc/PID/ns with it.
	if p.mnt, err = os.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil {
		p.pid, err = os.Open(fmt.Sprintf("/proc/%d/ns/pid", pid))
	}
	if err != nil {
		return fail(fmt.Errorf("failed to open the container's namespaces: %w", err))
	}
	if err := json.NewEncoder(cfgW).Encode(spec); err != nil {
		return fail(fmt.Errorf("failed to send the container's spec: %w", err))
	}
	if spec.TTY {
		var b [1]byte
		n, _ := io.ReadFull(statusR, b[:])
		if n == 1 && b[0] == 'T' {
			if err := p.openConsole(pid, cfgW); err != nil {
				return fail(err)
			}
		} else {
			msg, _ := io.ReadAll(statusR)
			return fail(errors.New(string(b[:n]) + string(msg)))
		}
	}
	cfgW.Close()
	msg, err := io.ReadAll(statusR) // end of file: the init has executed the command
	if err == nil && len(msg) > 0 {
		err = errors.New(string(msg))
	}
	if err != nil {
		return fail(err)
	}
	return p, nil
}

// openConsole opens a terminal in the container's own /dev/pts (the init has mounted it) and tells the init its
// number. The kubelet keeps the controlling side.
func (p *initProcess) openConsole(pid int, cfgW io.Writer) error {
	ptmx, n, err := openPty(fmt.Sprintf("/proc/%d/root/dev/pts/ptmx", pid))
	if err != nil {
		return err
	}
	p.pty, p.stdout = ptmx, ptmx
	p.stdin = ptmx
	return json.NewEncoder(cfgW).Encode(n)
}

// openPty opens the multiplexer path and returns the controlling side of a new, unlocked terminal and its number.
func openPty(path string) (*os.File, int, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("failed to open a terminal (%s): %w", path, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		_ = unix.Close(fd)
		return nil, 0, fmt.Errorf("failed to unlock the terminal: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		_ = unix.Close(fd)
		return nil, 0, fmt.Errorf("failed to get the terminal's number: %w", err)
	}
	return os.NewFile(uintptr(fd), "/dev/pts/ptmx"), n, nil
}

func (p *initProcess) closeStreams() {
	for _, c := range []io.Closer{p.stdin, p.stdout, p.stderr} {
		if c != nil {
			_ = c.Close()
		}
	}
}

// closeNS releases the namespace files; the namespaces go once no process is in them. The caller makes sure no exec
// is entering them.
func (p *initProcess) closeNS() {
	for _, f := range []*os.File{p.mnt, p.pid} {
		if f != nil {
			_ = f.Close()
		}
	}
	p.mnt, p.pid = nil, nil
}

// execRequest is one exec in a running container.
type execRequest struct {
	pod      *podNamespaces
	mnt, pid *os.File // the container's namespaces (not closed before the exec has started)
	proc     processSpec
	tty      bool
	size     *ptySize // the terminal's first size, or nil
	stdin    bool     // give the process a stdin pipe (not TTY)
	stdout   io.Writer
	stderr   io.Writer
}

type ptySize struct{ rows, cols uint16 }

// execProc is a started exec.
type execProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser // the pipe, or nil
	pty   *os.File       // the terminal's controlling side when TTY
	done  chan error     // receives cmd.Wait's error once the process has exited
}

// startExec starts r's process in the container: a goroutine locked to its thread joins the container's
// namespaces, opens the terminal there (the container's own /dev/pts), takes the process's user and capabilities,
// finds the program as runc would, starts it and waits for it. The error is what runc reports.
func startExec(r *execRequest) (*execProc, error) {
	type started struct {
		p   *execProc
		err error
	}
	ch := make(chan started, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread joins the container's namespaces and drops privileges
		p, err := enterAndStart(r)
		ch <- started{p, err}
		if err != nil {
			return
		}
		p.done <- p.cmd.Wait()
	}()
	s := <-ch
	return s.p, s.err
}

func enterAndStart(r *execRequest) (*execProc, error) {
	// A thread that shares its filesystem attributes with others may not change its mount namespace.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return nil, fmt.Errorf("unshare: %w", err)
	}
	if err := r.pod.join(); err != nil {
		return nil, err
	}
	if err := setns(r.pid, unix.CLONE_NEWPID); err != nil {
		return nil, err
	}
	if err := setns(r.mnt, unix.CLONE_NEWNS); err != nil { // also moves this thread's root into the container
		return nil, err
	}
	p := &execProc{done: make(chan error, 1)}
	cmd := &exec.Cmd{Env: r.proc.Env, Args: r.proc.Args}
	// No Pdeathsig: the child, in another PID namespace, sees no parent, and Go's check would kill it at once. If
	// the kubelet dies, the container's init dies (it has Pdeathsig) and the kernel ends the namespace's processes.
	attr := &syscall.SysProcAttr{Setpgid: true}
	var tty *os.File
	if r.tty {
		ptmx, n, err := openPty("/dev/ptmx")
		if err != nil {
			return nil, err
		}
		tty, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
		if err != nil {
			ptmx.Close()
			return nil, fmt.Errorf("failed to open the terminal: %w", err)
		}
		defer tty.Close()
		_ = tty.Chown(int(r.proc.UID), int(r.proc.GID))
		if r.size != nil {
			_ = unix.IoctlSetWinsize(int(ptmx.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: r.size.rows, Col: r.size.cols})
		}
		p.pty = ptmx
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		attr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	} else {
		cmd.Stdout, cmd.Stderr = r.stdout, r.stderr
		if r.stdin {
			w, err := cmd.StdinPipe()
			if err != nil {
				return nil, err
			}
			p.stdin = w
		}
	}
	cmd.SysProcAttr = attr
	cmd.WaitDelay = drainTimeout // output held open by a background child must not hang the session
	fail := func(err error) (*execProc, error) {
		if p.pty != nil {
			p.pty.Close()
		}
		if p.stdin != nil {
			p.stdin.Close()
		}
		return nil, err
	}
	if err := dropPrivileges(&r.proc); err != nil {
		return fail(err)
	}
	if r.proc.Cwd != "" {
		if err := unix.Chdir(r.proc.Cwd); err != nil {
			return fail(fmt.Errorf("chdir to cwd (%q) set in config.json failed: %w", r.proc.Cwd, err))
		}
	}
	path, err := lookPath(r.proc.Args[0], r.proc.Env)
	if err != nil {
		return fail(err)
	}
	cmd.Path = path
	if err := cmd.Start(); err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = &os.PathError{Op: "exec", Path: path, Err: pe.Err} // as runc words an execve failure
		}
		return fail(err)
	}
	p.cmd = cmd
	return p, nil
}

// newID returns 64 hex digits, the shape of containerd's container and exec IDs.
func newID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
