package fakekubelet

// A container's init: this binary, re-executed by startInit in the container's new namespaces (mount, and PID unless
// the container shares another's), sets up its root filesystem and mounts, takes the container's user and
// capabilities, and executes the container's command, which so becomes PID 1 of its PID namespace as in a real
// container. It is a separate process because procfs shows the PID namespace of the process that mounts it, and only
// a process inside the new namespace can mount the container's /proc.
//
// Protocol: the spec arrives as JSON on fd 3. With a terminal, the init writes "T" on fd 4 once /dev/pts is mounted
// and reads the number of the pty the kubelet opened there as JSON on fd 3. Fd 4 is close-on-exec: end of file on it
// means the command was executed; an error is written there as text before the init exits 1.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// initArg0 is argv[0] of a container's init; RunContainerInit recognises it.
	initArg0     = "fakekubelet-init"
	initConfigFD = 3
	initStatusFD = 4
)

// mount kinds of mountSpec.
const (
	mountBind  = "bind"  // a node directory or file (volume, /etc/hosts), bound at Target
	mountCopy  = "copy"  // a fresh tmpfs holding a copy of the node directory Source (Secret, ConfigMap, projected)
	mountTmpfs = "tmpfs" // an empty tmpfs (the tmpfs annotation)
)

// initSpec is what a container's init needs to know; the kubelet writes it on the init's fd 3.
type initSpec struct {
	// Rootfs is an empty directory on the node where the container's root is mounted: an overlay of Lower (the image's
	// tree, shared and never written) under Upper (this container's writes), with Work as overlay's scratch directory.
	Rootfs, Lower, Upper, Work string
	ReadOnlyRoot               bool // securityContext.readOnlyRootFilesystem
	Privileged                 bool // no masked or read-only paths in /proc and /sys
	Mounts                     []mountSpec
	TTY                        bool // the command gets a terminal of the container's own /dev/pts
	Process                    processSpec
}

// mountSpec is one mount in a container.
type mountSpec struct {
	Target string // path in the container
	Kind   string // mountBind, mountCopy or mountTmpfs
	Source string // bind: what is bound; copy: the directory copied
	Stage  string // copy: an empty node directory where the tmpfs is filled before it moves into the container
	Data   string // tmpfs: mount data (size=, mode=)
	File   bool   // bind: Source is a file, so is Target

	ReadOnly, NoExec, NoSuid, NoDev bool
	Recursive                       bool   // bind: with the mounts below Source (hostPath), read-only ones included
	Propagation                     string // "" (private), "rslave" (HostToContainer) or "rshared" (Bidirectional)
}

// processSpec is the process of a container, or of an exec in it.
type processSpec struct {
	Args       []string
	Env        []string
	Cwd        string
	UID, GID   uint32
	Groups     []uint32
	Caps       uint64 // capabilities kept, as a bit set (bit N is capability N)
	NoNewPrivs bool
}

// RunContainerInit runs a container's init when this process was started as one (argv[0] is fakekubelet-init) and
// never returns then; otherwise it returns at once. Programs that run a Kubelet call it first thing in main, and test
// binaries in TestMain: the kubelet starts each container's init by re-executing its own binary (/proc/self/exe).
func RunContainerInit() {
	if len(os.Args) == 0 || os.Args[0] != initArg0 {
		return
	}
	err := containerInit()
	status := os.NewFile(initStatusFD, "status")
	_, _ = io.WriteString(status, err.Error())
	os.Exit(1)
}

// containerInit sets the container up and executes its command; it returns only on failure.
func containerInit() error {
	// Credentials and capabilities are changed for this thread only, the one that calls execve.
	runtime.LockOSThread()
	syscall.CloseOnExec(initStatusFD)
	cfg := os.NewFile(initConfigFD, "config")
	dec := json.NewDecoder(cfg)
	var spec initSpec
	if err := dec.Decode(&spec); err != nil {
		return fmt.Errorf("failed to read the container's spec: %w", err)
	}
	if len(spec.Process.Args) == 0 {
		return errors.New("no command given")
	}
	if err := setupRootfs(&spec); err != nil {
		return err
	}
	if spec.TTY {
		if err := setupConsole(dec); err != nil {
			return err
		}
	}
	_ = cfg.Close()
	return execProcess(&spec.Process)
}

// setupRootfs mounts the container's root and everything in it, and makes it this process's root.
func setupRootfs(s *initSpec) error {
	// Slave, as runc does: mounts made here never reach the node, and the node's still reach HostToContainer mounts.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("failed to make the mounts private: %w", err)
	}
	// The node's trees are detached now (open_tree): after pivot_root they are out of reach.
	trees := make([]int, len(s.Mounts))
	defer func() {
		for _, fd := range trees {
			if fd > 0 {
				_ = unix.Close(fd)
			}
		}
	}()
	for i, m := range s.Mounts {
		fd, err := detachTree(m)
		if err != nil {
			return fmt.Errorf("failed to prepare the mount at %s: %w", m.Target, err)
		}
		trees[i] = fd
	}

	for _, p := range []string{s.Lower, s.Upper, s.Work} {
		if strings.ContainsAny(p, ",:") {
			return fmt.Errorf("overlay directory %q contains a comma or colon", p)
		}
	}
	opts := "lowerdir=" + s.Lower + ",upperdir=" + s.Upper + ",workdir=" + s.Work
	if err := unix.Mount("overlay", s.Rootfs, "overlay", 0, opts); err != nil {
		return fmt.Errorf("failed to mount the root filesystem (overlay %s): %w", opts, err)
	}
	// pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only the container's tree.
	if err := unix.Chdir(s.Rootfs); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("failed to detach the node's root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	// From here on every path is resolved in the container's root, symbolic links included.

	if err := mountSystem(s.Privileged); err != nil {
		return err
	}
	order := make([]int, len(s.Mounts))
	for i := range order {
		order[i] = i
	}
	// Parents before children, as runtimes sort mounts.
	slices.SortStableFunc(order, func(a, b int) int {
		return strings.Count(filepath.Clean(s.Mounts[a].Target), "/") - strings.Count(filepath.Clean(s.Mounts[b].Target), "/")
	})
	for _, i := range order {
		if err := attachMount(s.Mounts[i], trees[i]); err != nil {
			return fmt.Errorf("failed to mount %s: %w", s.Mounts[i].Target, err)
		}
		trees[i] = -1 // moved into the container: closed by attachMount
	}
	if !s.Privileged {
		maskPaths()
	}
	if s.Process.Cwd != "" {
		_ = os.MkdirAll(s.Process.Cwd, 0o755) // as runc creates a missing working directory
	}
	if s.ReadOnlyRoot {
		if err := unix.MountSetattr(unix.AT_FDCWD, "/", 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
			return fmt.Errorf("failed to make the root filesystem read-only: %w", err)
		}
	}
	return nil
}

// detachTree returns a detached copy (open_tree) of what m mounts from the node, or -1 for a tmpfs.
func detachTree(m mountSpec) (int, error) {
	var src string
	switch m.Kind {
	case mountTmpfs:
		return -1, nil
	case mountBind:
		src = m.Source
	case mountCopy:
		// A tmpfs, as the kubelet gives Secret and projected volumes, filled on the node side.
		if err := unix.Mount("tmpfs", m.Stage, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
			return -1, err
		}
		defer func() { _ = unix.Unmount(m.Stage, unix.MNT_DETACH) }()
		if err := copyTree(m.Source, m.Stage); err != nil {
			return -1, err
		}
		src = m.Stage
	default:
		return -1, fmt.Errorf("unknown mount kind %q", m.Kind)
	}
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	if m.Recursive {
		flags |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, flags)
	if err != nil {
		return -1, fmt.Errorf("open_tree %s: %w", src, err)
	}
	if attr := mountAttrs(m); attr != 0 {
		err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: attr})
		if err != nil {
			_ = unix.Close(fd)
			return -1, fmt.Errorf("mount_setattr %s: %w", src, err)
		}
	}
	return fd, nil
}

func mountAttrs(m mountSpec) uint64 {
	var attr uint64
	if m.ReadOnly {
		attr |= unix.MOUNT_ATTR_RDONLY
	}
	if m.NoExec {
		attr |= unix.MOUNT_ATTR_NOEXEC
	}
	if m.NoSuid {
		attr |= unix.MOUNT_ATTR_NOSUID
	}
	if m.NoDev {
		attr |= unix.MOUNT_ATTR_NODEV
	}
	return attr
}

// attachMount puts m at its target in the container (tree is its detached copy, or -1) and closes tree.
func attachMount(m mountSpec, tree int) error {
	if m.File {
		// As runc, the file's directories are made when the image has none (a FROM scratch image has no /etc).
		if err := os.MkdirAll(filepath.Dir(m.Target), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(m.Target, os.O_CREATE|os.O_RDONLY, 0o644)
		if err != nil {
			return err
		}
		_ = f.Close()
	} else if err := os.MkdirAll(m.Target, 0o755); err != nil {
		return err
	}
	if tree < 0 {
		var flags uintptr
		for _, f := range []struct {
			on   bool
			flag uintptr
		}{{m.ReadOnly, unix.MS_RDONLY}, {m.NoExec, unix.MS_NOEXEC}, {m.NoSuid, unix.MS_NOSUID}, {m.NoDev, unix.MS_NODEV}} {
			if f.on {
				flags |= f.flag
			}
		}
		return unix.Mount("tmpfs", m.Target, "tmpfs", flags, m.Data)
	}
	err := unix.MoveMount(tree, "", unix.AT_FDCWD, m.Target, unix.MOVE_MOUNT_F_EMPTY_PATH)
	_ = unix.Close(tree)
	if err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	prop := map[string]uintptr{"": unix.MS_PRIVATE, "rslave": unix.MS_SLAVE, "rshared": unix.MS_SHARED}[m.Propagation]
	if prop == 0 {
		return fmt.Errorf("unknown propagation %q", m.Propagation)
	}
	return unix.Mount("", m.Target, "", prop|unix.MS_REC, "")
}

// mountSystem mounts /proc (of this PID namespace), /dev with the usual nodes, its own /dev/pts, /dev/shm,
// /dev/mqueue and a read-only /sys, with the options runc gives them.
func mountSystem(privileged bool) error {
	const nse = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	sysFlags := uintptr(nse | unix.MS_RDONLY)
	if privileged {
		sysFlags = nse
	}
	for _, m := range []struct {
		target, fstype string
		flags          uintptr
		data           string
		mode           os.FileMode
	}{
		{"/proc", "proc", nse, "", 0o555},
		{"/dev", "tmpfs", unix.MS_NOSUID | unix.MS_STRICTATIME, "mode=755,size=65536k", 0o755},
		{"/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5", 0o755},
		{"/dev/shm", "tmpfs", nse, "mode=1777,size=65536k", 0o1777},
		{"/dev/mqueue", "mqueue", nse, "", 0o755},
		{"/sys", "sysfs", sysFlags, "", 0o555},
	} {
		if err := os.MkdirAll(m.target, m.mode); err != nil {
			return err
		}
		if err := unix.Mount(m.fstype, m.target, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("failed to mount %s on %s: %w", m.fstype, m.target, err)
		}
		if m.target != "/dev" {
			continue
		}
		for _, d := range []struct {
			name         string
			major, minor uint32
		}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}} {
			if err := unix.Mknod("/dev/"+d.name, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil {
				return fmt.Errorf("mknod /dev/%s: %w", d.name, err)
			}
			_ = os.Chmod("/dev/"+d.name, 0o666) // past the umask
		}
		for link, target := range map[string]string{"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
			"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "core": "/proc/kcore"} {
			if err := os.Symlink(target, "/dev/"+link); err != nil {
				return err
			}
		}
	}
	return nil
}

// maskPaths hides and write-protects what containerd's default spec does, for an unprivileged container.
func maskPaths() {
	for _, p := range []string{"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list", "/proc/timer_stats",
		"/sys/devices/virtual/powercap", "/sys/firmware"} {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if fi.IsDir() {
			_ = unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY, "size=0")
		} else {
			_ = unix.Mount("/dev/null", p, "", unix.MS_BIND, "")
		}
	}
	for _, p := range []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"} {
		if unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, "") == nil {
			_ = unix.MountSetattr(unix.AT_FDCWD, p, unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
		}
	}
}

// setupConsole asks the kubelet for a terminal of this container's /dev/pts and makes it the controlling terminal
// and the standard streams. The init leads its own session (the kubelet starts it with Setsid).
func setupConsole(dec *json.Decoder) error {
	status := os.NewFile(initStatusFD, "status")
	if _, err := io.WriteString(status, "T"); err != nil {
		return err
	}
	var n int
	if err := dec.Decode(&n); err != nil {
		return fmt.Errorf("failed to read the terminal's number: %w", err)
	}
	fd, err := unix.Open("/dev/pts/"+strconv.Itoa(n), unix.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("failed to open the terminal: %w", err)
	}
	if err := unix.IoctlSetInt(fd, unix.TIOCSCTTY, 0); err != nil {
		return fmt.Errorf("failed to make the terminal the controlling one: %w", err)
	}
	for i := range 3 {
		if err := unix.Dup2(fd, i); err != nil {
			return err
		}
	}
	if fd > 2 {
		_ = unix.Close(fd)
	}
	return nil
}

// execProcess changes to the process's working directory, user and capabilities, finds its program and executes it.
func execProcess(p *processSpec) error {
	if err := dropPrivileges(p); err != nil {
		return err
	}
	if p.Cwd != "" {
		if err := unix.Chdir(p.Cwd); err != nil {
			return fmt.Errorf("chdir to cwd (%q) set in config.json failed: %w", p.Cwd, err)
		}
	}
	path, err := lookPath(p.Args[0], p.Env)
	if err != nil {
		return err
	}
	if err := unix.Exec(path, p.Args, p.Env); err != nil {
		return &os.PathError{Op: "exec", Path: path, Err: err}
	}
	return nil
}

// dropPrivileges gives the calling thread (and so what it executes) the process's user, groups and capabilities:
// the capability bounding set is cut to p.Caps, the inheritable and ambient sets are emptied (as containerd does
// since CVE-2022-24769), and no_new_privs is set when asked. Only this thread changes: the caller has locked it.
func dropPrivileges(p *processSpec) error {
	for c := 0; c <= 63; c++ {
		if p.Caps&(1<<c) != 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			if errors.Is(err, unix.EINVAL) {
				break // past the last capability of this kernel
			}
			return fmt.Errorf("failed to drop capability %d: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("failed to clear the ambient capabilities: %w", err)
	}
	// Raw syscalls: the libc-like wrappers change every thread of the process.
	groups := p.Groups
	var gp uintptr
	if len(groups) > 0 {
		gp = uintptr(unsafe.Pointer(&groups[0]))
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), gp, 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(p.GID), uintptr(p.GID), uintptr(p.GID)); e != 0 {
		return fmt.Errorf("setresgid %d: %w", p.GID, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(p.UID), uintptr(p.UID), uintptr(p.UID)); e != 0 {
		return fmt.Errorf("setresuid %d: %w", p.UID, e)
	}
	// Root keeps p.Caps; for another user setresuid has emptied the permitted and effective sets already.
	caps := p.Caps
	if p.UID != 0 {
		caps = 0
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{
		{Effective: uint32(caps), Permitted: uint32(caps)},
		{Effective: uint32(caps >> 32), Permitted: uint32(caps >> 32)},
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	if p.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("failed to set no_new_privs: %w", err)
		}
	}
	return nil
}

// lookPath finds file as runc does (Go's exec.LookPath, run inside the container as its user) but with PATH from
// env, so that its errors read exactly as the runtime's: `exec: "sh": executable file not found in $PATH`.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		if err := findExecutable(file); err != nil {
			return "", &exec.Error{Name: file, Err: err}
		}
		return file, nil
	}
	var pathEnv string
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathEnv = v
		}
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		path := filepath.Join(dir, file)
		if findExecutable(path) == nil {
			return path, nil
		}
	}
	return "", &exec.Error{Name: file, Err: exec.ErrNotFound}
}

// findExecutable is os/exec's: a file the caller may execute (faccessat with AT_EACCESS, which also refuses a file
// on a noexec mount), falling back to the mode bits where that call is not available.
func findExecutable(file string) error {
	fi, err := os.Stat(file)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return syscall.EISDIR
	}
	err = unix.Faccessat(unix.AT_FDCWD, file, unix.X_OK, unix.AT_EACCESS)
	if err == nil || (err != syscall.ENOSYS && err != syscall.EPERM) {
		return err
	}
	if fi.Mode()&0o111 != 0 {
		return nil
	}
	return fs.ErrPermission
}

// copyTree copies the directory src into the existing directory dst: directories, regular files and symbolic links
// with their modes (the layout the kubelet's atomic writer makes: ..data and the timestamped directory).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil || rel == "." {
			return err
		}
		to := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		case d.IsDir():
			if err := os.Mkdir(to, fi.Mode().Perm()); err != nil {
				return err
			}
			return os.Chmod(to, fi.Mode().Perm())
		case d.Type().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if err := os.WriteFile(to, b, fi.Mode().Perm()); err != nil {
				return err
			}
			return os.Chmod(to, fi.Mode().Perm())
		}
		return nil
	})
}
