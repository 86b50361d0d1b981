// Package collectortest helps test collector.Collect without a cluster: it builds the collector binary with make
// build's flags, and runs exec commands in a small container of the test machine's own binaries (a root directory
// with sh, cat and the tools asked for, its own mount namespace, /tmp mounted noexec or read-only when asked), so
// the driver's upload, exec, fallback and hashing paths run against real processes.
package collectortest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	utilexec "k8s.io/client-go/util/exec"
)

// LDFlags are make build's collector flags with the version "test".
const LDFlags = "-s -w -buildid= -X github.com/warren-dev/warren/collector.version=test"

// Build builds warren-collector-linux-<arch> for the test machine's architecture into dir.
func Build(dir string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", LDFlags, "-o",
		filepath.Join(dir, "warren-collector-linux-"+runtime.GOARCH), "./cmd/warren-collector")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building the collector: %v: %s", err, out)
	}
	return nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the warren module")
	}
	return filepath.Dir(mod), nil
}

// Container is a fake container: a root directory and how its /tmp is mounted.
type Container struct {
	// Root is the container's root filesystem (see MakeRoot).
	Root string
	// TmpOptions are the mount options of a fresh tmpfs on /tmp ("noexec", "ro"); nil: /tmp is the root's own
	// directory.
	TmpOptions []string
	// Env is the environment of every exec (default PATH=/bin and HOME=/root).
	Env []string
}

// containerEnv carries the Container to the re-executed test binary.
const containerEnv = "WARREN_COLLECTORTEST_CONTAINER"

// Exec is a collector.Exec running argv inside c: the test binary re-executes itself (see Main), enters a new
// mount namespace, mounts /proc and /tmp, chroots into Root and executes argv. A non-zero exit is a client-go
// CodeExitError, as through a real exec stream.
func (c *Container) Exec(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer) error {
	spec, err := json.Marshal(c)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, self, argv...)
	cmd.Env = append(os.Environ(), containerEnv+"="+string(spec))
	cmd.Stdin, cmd.Stdout = stdin, stdout
	var errBuf bytes.Buffer
	cmd.Stderr = io.MultiWriter(stderr, &errBuf)
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		msg := strings.TrimSpace(errBuf.String())
		if ee.ExitCode() == 127 && strings.Contains(msg, "executable file not found") {
			return fmt.Errorf("%s: %w", msg, exec.ErrNotFound)
		}
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", ee.ExitCode()), Code: ee.ExitCode()}
	}
	return err
}

// Main runs the container side when the test binary was re-executed by Exec; call it first in TestMain.
func Main() {
	spec := os.Getenv(containerEnv)
	if spec == "" {
		return
	}
	var c Container
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		fail(126, "bad container spec: %v", err)
	}
	runtime.LockOSThread() // unshare and chroot act on this thread, which then becomes the command
	if err := syscall.Unshare(syscall.CLONE_NEWNS); err != nil {
		fail(126, "unshare: %v", err)
	}
	must := func(err error, what string) {
		if err != nil {
			fail(126, "%s: %v", what, err)
		}
	}
	must(syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""), "make mounts private")
	must(os.MkdirAll(filepath.Join(c.Root, "proc"), 0o755), "mkdir proc")
	must(syscall.Mount("/proc", filepath.Join(c.Root, "proc"), "", syscall.MS_BIND|syscall.MS_REC, ""), "mount proc")
	if c.TmpOptions != nil {
		tmp := filepath.Join(c.Root, "tmp")
		must(os.MkdirAll(tmp, 0o1777), "mkdir tmp")
		var flags uintptr
		for _, o := range c.TmpOptions {
			switch o {
			case "noexec":
				flags |= syscall.MS_NOEXEC
			case "ro":
				flags |= syscall.MS_RDONLY
			}
		}
		must(syscall.Mount("tmpfs", tmp, "tmpfs", flags, "size=64m,mode=1777"), "mount tmp")
	}
	must(syscall.Chroot(c.Root), "chroot")
	must(os.Chdir("/"), "chdir")
	env := c.Env
	if env == nil {
		env = []string{"PATH=/bin", "HOME=/root"}
	}
	argv := os.Args[1:]
	if len(argv) == 0 {
		fail(126, "no command")
	}
	exe := argv[0]
	if !strings.Contains(exe, "/") {
		exe = ""
		for _, dir := range []string{"/bin", "/usr/bin"} {
			if st, err := os.Stat(filepath.Join(dir, argv[0])); err == nil && !st.IsDir() {
				exe = filepath.Join(dir, argv[0])
				break
			}
		}
		if exe == "" {
			fail(127, "exec: %q: executable file not found in $PATH", argv[0])
		}
	}
	err := syscall.Exec(exe, argv, env)
	if errors.Is(err, syscall.ENOENT) {
		fail(127, "exec: %q: executable file not found in $PATH", argv[0])
	}
	fail(126, "exec %s: %v", argv[0], err) // EACCES on a noexec mount or a file without x
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(code)
}

// MakeRoot builds a root filesystem in dir from the test machine's binaries: /bin/sh (the machine's sh) and each
// of tools (e.g. "cat", "chmod", "readlink", "stat", "rm") with the shared libraries they need, plus /etc, /root
// and /tmp directories. It reports false when a tool is missing on the machine.
func MakeRoot(dir string, tools ...string) error {
	for _, d := range []string{"bin", "etc", "root", "tmp", "var/tmp", "proc", "dev/shm"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return err
	}
	for _, t := range append([]string{"sh"}, tools...) {
		src, err := exec.LookPath(t)
		if err != nil {
			return fmt.Errorf("%s is not on this machine: %w", t, err)
		}
		real, err := filepath.EvalSymlinks(src)
		if err != nil {
			return err
		}
		if err := copyFile(real, filepath.Join(dir, "bin", t), 0o755); err != nil {
			return err
		}
		out, err := exec.Command("ldd", real).Output()
		if err != nil {
			continue // static
		}
		for _, line := range strings.Split(string(out), "\n") {
			for _, f := range strings.Fields(line) {
				if strings.HasPrefix(f, "/") {
					lib, err := filepath.EvalSymlinks(f)
					if err != nil {
						continue
					}
					if err := copyFile(lib, filepath.Join(dir, f), 0o755); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, data, mode)
}
