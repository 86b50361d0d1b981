// Package containerdtest runs a real containerd (Debian's containerd and runc, as scripts/containerd-bin.sh
// installs them) for tests: its own root, state directory and sockets, no CRI plugin, containers created with the
// real ctr and run by runc, so a test gets a containerd root exactly as containerd writes one: meta.db, the
// content store, the overlayfs and native snapshotters' directories and databases.
//
// It needs root (the overlayfs snapshotter mounts, runc creates namespaces and cgroups). A missing binary or a
// machine where containerd cannot run fails the test with a message saying why; tests never skip for lack of it.
//
// What it shares with the machine: the runtime v2 shims listen on sockets under /run/containerd/s (a path
// containerd 1.6 fixes), named after a hash that includes this containerd's own socket, so they never meet another
// containerd's; Stop ends every shim started for this containerd and unmounts whatever is left mounted under its
// root, and reports either as a leak.
package containerdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	readyTimeout = 30 * time.Second
	stopGrace    = 10 * time.Second
	pollInterval = 50 * time.Millisecond
	// tailBytes bounds the output kept for error messages.
	tailBytes = 16 << 10
)

// Options configures Start.
type Options struct {
	// Dir is the work directory: root/, state/ and config.toml go there. Required. It must not be on overlayfs
	// (an overlayfs upper directory cannot be on overlayfs).
	Dir string
	// Logger receives containerd's output, line by line; nil discards it (the last lines are kept for errors).
	Logger io.Writer
}

// Containerd is a running containerd. Its fields are set by Start; all methods may be called concurrently.
type Containerd struct {
	Root, State string // containerd's root and state directories
	Address     string // its gRPC socket
	Config      string // the config.toml it runs with
	// StartDuration is how long Start took, from the binaries found to containerd answering.
	StartDuration time.Duration

	ctr, containerd, runc string
	cmd                   *exec.Cmd
	out                   *tail
	done                  chan struct{}
	waitErr               error
	sockDir               string
	stopOnce              sync.Once
	stopErr               error
}

// binaries finds containerd, ctr, runc and the runc v2 shim on PATH and in Debian's sbin directories.
func binaries() (containerd, ctr, runc string, err error) {
	find := func(name string) (string, error) {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		for _, d := range []string{"/usr/sbin", "/usr/bin", "/sbin"} {
			p := filepath.Join(d, name)
			if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
				return p, nil
			}
		}
		return "", fmt.Errorf("%s not found on PATH nor in /usr/sbin: run scripts/containerd-bin.sh (it installs Debian's containerd and runc)", name)
	}
	var errs []error
	for _, b := range []struct {
		name string
		dst  *string
	}{{"containerd", &containerd}, {"ctr", &ctr}, {"runc", &runc}} {
		p, err := find(b.name)
		errs = append(errs, err)
		*b.dst = p
	}
	if _, err := find("containerd-shim-runc-v2"); err != nil {
		errs = append(errs, err)
	}
	return containerd, ctr, runc, errors.Join(errs...)
}

// ForTest starts a containerd in t.TempDir() and stops it in t.Cleanup, failing the test on a leak.
func ForTest(t testing.TB) *Containerd {
	t.Helper()
	c, err := Start(t.Context(), Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("failed to start containerd: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("containerdtest: %v", err)
		}
	})
	t.Logf("containerdtest: containerd ready at %s in %s", c.Address, c.StartDuration.Round(time.Millisecond))
	return c
}

// configTemplate keeps containerd to what a containerd root needs: the content store, the metadata store, the
// overlayfs and native snapshotters, and the tasks service (which in containerd 1.6 needs the v1 linux runtime
// loaded beside v2, though only v2 runs containers here); the CRI plugin, the other snapshotters, tracing and the opt
// plugin (which would write to /opt/containerd) are off, and nothing listens on TCP.
const configTemplate = `version = 2
root = %q
state = %q
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
  "io.containerd.internal.v1.opt",
]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""
`

// Start starts containerd and waits until it answers (at most 30 s). ctx bounds only the start. On error nothing is
// left running.
func Start(ctx context.Context, o Options) (*Containerd, error) {
	if o.Dir == "" {
		return nil, errors.New("containerdtest: Options.Dir is required")
	}
	begin := time.Now()
	containerd, ctr, runc, err := binaries()
	if err != nil {
		return nil, fmt.Errorf("containerdtest: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("containerdtest: containerd must run as root here (the overlayfs snapshotter mounts, runc makes namespaces): run the tests as root")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	c := &Containerd{Root: filepath.Join(dir, "root"), State: filepath.Join(dir, "state"), Config: filepath.Join(dir, "config.toml"),
		ctr: ctr, containerd: containerd, runc: runc, out: &tail{log: o.Logger}, done: make(chan struct{})}
	for _, d := range []string{c.Root, c.State} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("containerdtest: %w", err)
		}
	}
	if onOverlay(c.Root) {
		return nil, fmt.Errorf("containerdtest: %s is on overlayfs, where the overlayfs snapshotter cannot put its upper directories: use a directory on ext4, xfs or tmpfs (TMPDIR)", c.Root)
	}
	// A unix socket path is limited to 108 bytes: the sockets go to a short directory of their own.
	if c.sockDir, err = os.MkdirTemp("", "ctrd-"); err != nil {
		return nil, fmt.Errorf("containerdtest: %w", err)
	}
	c.Address = filepath.Join(c.sockDir, "c.sock")
	cfg := fmt.Sprintf(configTemplate, c.Root, c.State, c.Address, c.Address+".ttrpc")
	if err := os.WriteFile(c.Config, []byte(cfg), 0o600); err != nil {
		os.RemoveAll(c.sockDir)
		return nil, fmt.Errorf("containerdtest: %w", err)
	}
	c.cmd = exec.Command(containerd, "--config", c.Config)
	c.cmd.Dir = dir
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	// The shims containerd starts find runc on PATH.
	c.cmd.Env = append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.cmd.WaitDelay = time.Second
	if err := c.cmd.Start(); err != nil {
		os.RemoveAll(c.sockDir)
		return nil, fmt.Errorf("containerdtest: failed to start containerd: %w", err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.done)
	}()
	if err := c.waitReady(ctx); err != nil {
		_ = c.Stop()
		return nil, fmt.Errorf("containerdtest: %w; last output:\n%s", err, c.out.String())
	}
	c.StartDuration = time.Since(begin)
	return c, nil
}

func (c *Containerd) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	var last error
	for {
		select {
		case <-c.done:
			return fmt.Errorf("containerd exited before it was ready (%v)", c.waitErr)
		default:
		}
		if _, err := os.Stat(c.Address); err == nil {
			if _, err := c.Ctr(ctx, "", "version"); err == nil {
				return nil
			} else {
				last = err
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("containerd did not answer within %s (%v)", readyTimeout, last)
		case <-c.done:
		case <-t.C:
		}
	}
}

// Ctr runs the real ctr against this containerd in namespace ns ("" for ctr's default), returning its output; a
// failure is an error with the output.
func (c *Containerd) Ctr(ctx context.Context, ns string, args ...string) ([]byte, error) {
	full := []string{"--address", c.Address}
	if ns != "" {
		full = append(full, "--namespace", ns)
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, c.ctr, full...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

// Import imports an image tarball (an OCI image layout or docker save tar) into namespace ns and unpacks it into
// snapshotter.
func (c *Containerd) Import(ctx context.Context, ns, tarball, snapshotter string) error {
	_, err := c.Ctr(ctx, ns, "images", "import", "--snapshotter", snapshotter, tarball)
	return err
}

// RunSpec is a container for Run.
type RunSpec struct {
	ID, Image, Snapshotter string
	// Rootfs, when set, is a directory given to containerd as the container's root file system (ctr run --rootfs):
	// no snapshotter, no image (Image and Snapshotter are not used).
	Rootfs string
	Labels map[string]string
	// Args is the command; empty: the image's entrypoint.
	Args []string
}

// Run creates the container, starts its task and waits for it to exit (ctr run, attached), leaving the stopped
// container and its snapshot in place; its output is returned. runc's state and the I/O FIFOs go under State.
func (c *Containerd) Run(ctx context.Context, ns string, s RunSpec) ([]byte, error) {
	args := []string{"run", "--snapshotter", s.Snapshotter, "--runc-root", filepath.Join(c.State, "runc"),
		"--fifo-dir", filepath.Join(c.State, "fifo"), "--null-io=false"}
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "--label", k+"="+s.Labels[k])
	}
	args = append(args, s.Image, s.ID)
	args = append(args, s.Args...)
	return c.Ctr(ctx, ns, args...)
}

// RunDetached creates the container and starts its task without waiting (ctr run --detach): the task runs until
// StopTask. Its rootfs stays mounted (overlayfs: under State) while it runs.
func (c *Containerd) RunDetached(ctx context.Context, ns string, s RunSpec) error {
	args := []string{"run", "--detach", "--null-io", "--runc-root", filepath.Join(c.State, "runc"), "--fifo-dir", filepath.Join(c.State, "fifo")}
	image := s.Image
	if s.Rootfs != "" {
		args, image = append(args, "--rootfs"), s.Rootfs
	} else {
		args = append(args, "--snapshotter", s.Snapshotter)
	}
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "--label", k+"="+s.Labels[k])
	}
	args = append(append(args, image, s.ID), s.Args...)
	_, err := c.Ctr(ctx, ns, args...)
	return err
}

// TaskPID returns the pid of a running task's init process.
func (c *Containerd) TaskPID(ctx context.Context, ns, id string) (int, error) {
	out, err := c.Ctr(ctx, ns, "tasks", "ls")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == id {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("no task %s in namespace %s: %s", id, ns, strings.TrimSpace(string(out)))
}

// StopTask ends a running task (SIGTERM, then SIGKILL after 10 s) and deletes it, leaving the container and its
// snapshot; its shim exits and its rootfs is unmounted.
func (c *Containerd) StopTask(ctx context.Context, ns, id string) error {
	if _, err := c.Ctr(ctx, ns, "tasks", "kill", "--signal", "SIGTERM", id); err != nil {
		return err
	}
	deadline := time.Now().Add(stopGrace)
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		out, err := c.Ctr(ctx, ns, "tasks", "ls")
		if err != nil {
			return err
		}
		running := false
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == id && f[2] == "RUNNING" {
				running = true
			}
		}
		if !running {
			break
		}
		if time.Now().After(deadline) {
			if _, err := c.Ctr(ctx, ns, "tasks", "kill", "--signal", "SIGKILL", id); err != nil {
				return err
			}
			deadline = time.Now().Add(stopGrace)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	_, err := c.Ctr(ctx, ns, "tasks", "delete", id)
	return err
}

// Stop stops containerd (SIGTERM, SIGKILL after 10 s) and waits for it, then ends any shim it left and unmounts
// anything left mounted under its root: either is reported as an error (a leak). Safe to call more than once.
func (c *Containerd) Stop() error {
	c.stopOnce.Do(func() {
		var errs []error
		select {
		case <-c.done:
			errs = append(errs, fmt.Errorf("containerd had exited before Stop (%v); last output:\n%s", c.waitErr, c.out.String()))
		default:
			_ = c.cmd.Process.Signal(syscall.SIGTERM)
			t := time.NewTimer(stopGrace)
			select {
			case <-c.done:
			case <-t.C:
				_ = c.cmd.Process.Kill()
				<-c.done
				errs = append(errs, fmt.Errorf("containerd did not stop within %s of SIGTERM", stopGrace))
			}
			t.Stop()
		}
		if pids := c.shims(); len(pids) > 0 {
			// A shim is its containers' subreaper: their processes are its children. They go first, or they would
			// outlive it.
			var procs []int
			for _, pid := range pids {
				procs = append(procs, childrenOf(pid)...)
			}
			var sockets []string
			for _, pid := range pids {
				sockets = append(sockets, shimSockets(pid)...)
			}
			for _, pid := range append(procs, pids...) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			for _, p := range sockets { // a killed shim leaves its socket file behind
				_ = os.Remove(p)
			}
			errs = append(errs, fmt.Errorf("leak: shims %v of this containerd were still running, with container processes %v (killed)", pids, procs))
		}
		for _, dir := range []string{c.Root, c.State} {
			if mounts := mountsUnder(dir); len(mounts) > 0 {
				for i := len(mounts) - 1; i >= 0; i-- {
					_ = syscall.Unmount(mounts[i], syscall.MNT_DETACH)
				}
				errs = append(errs, fmt.Errorf("leak: %d mounts were left under %s (unmounted): %v", len(mounts), dir, mounts))
			}
		}
		os.RemoveAll(c.sockDir)
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// Stopped reports whether containerd has exited.
func (c *Containerd) Stopped() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// shims are the pids of the runtime shims started for this containerd: their command line names its socket.
func (c *Containerd) shims() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) == 0 || !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == c.Address {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// shimSockets are the unix sockets a shim holds under /run/containerd/s (the path containerd 1.6 gives them).
func shimSockets(pid int) []string {
	data, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return nil
	}
	byInode := map[string]string{}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		if f := strings.Fields(line); len(f) >= 8 && strings.HasPrefix(f[7], "/run/containerd/s/") {
			byInode[f[6]] = f[7]
		}
	}
	fds, _ := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
	var out []string
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "fd", fd.Name()))
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		if p, ok := byInode[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")]; ok {
			out = append(out, p)
		}
	}
	return out
}

// childrenOf lists the processes whose parent is pid, and theirs.
func childrenOf(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses, so read after the last ')'.
		if i := strings.LastIndexByte(string(stat), ')'); i >= 0 {
			if f := strings.Fields(string(stat[i+1:])); len(f) >= 2 {
				if pp, err := strconv.Atoi(f[1]); err == nil {
					parent[p] = pp
				}
			}
		}
	}
	var out []int
	var walk func(int)
	walk = func(pp int) {
		for p, q := range parent {
			if q == pp {
				out = append(out, p)
				walk(p)
			}
		}
	}
	walk(pid)
	return out
}

// mountsUnder lists the mount points under dir, in mount order.
func mountsUnder(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

// onOverlay reports whether dir is on an overlayfs file system.
func onOverlay(dir string) bool {
	var st syscall.Statfs_t
	return syscall.Statfs(dir, &st) == nil && st.Type == 0x794c7630 // OVERLAYFS_SUPER_MAGIC
}

// tail keeps the last tailBytes of containerd's output and copies it to log.
type tail struct {
	mu  sync.Mutex
	buf []byte
	log io.Writer
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailBytes {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailBytes:]...)
	}
	if t.log != nil {
		_, _ = t.log.Write(p)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.buf) == 0 {
		return "    (containerd printed nothing)"
	}
	return string(t.buf)
}
