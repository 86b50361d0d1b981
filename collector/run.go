package collector

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// run is one collection inside the container. Owned by Run's goroutine.
type run struct {
	opts          Options
	e             *emitter
	fs            *rootFS
	redactor      *Redactor
	realProc      bool // Proc is this kernel's procfs, where the collector's own PID is
	bootTime      time.Time
	oldestStart   time.Time
	viewMountinfo []byte
	mounts        mountTable
	secretDevs    map[uint64]mount
	stored        map[string]bool // target paths already copied
	excludedSeen  map[string]bool
	selfDev       uint64 // the collector's own file, never copied
	selfIno       uint64
}

// Run collects what opts asks from the filesystem at opts.Root and the processes in opts.Proc and writes one tar
// stream to w: SelfPath first, then the evidence in order of volatility, SkippedPath, and ManifestPath last.
// self is the collector's SelfInfo (its own hash, taken before Run). Run fails only when w fails or opts is
// invalid; everything the target refuses is a recorded skip.
func Run(ctx context.Context, opts Options, self SelfInfo, w io.Writer) error {
	return runPhases(ctx, opts, self, w, nil)
}

// runPhases is Run with the entries of a mode (extra, when not nil) written after the evidence and before
// SkippedPath.
func runPhases(ctx context.Context, opts Options, self SelfInfo, w io.Writer, extra func(c *run) error) error {
	opts = opts.withDefaults()
	fsys, err := openRootFS(opts.Root)
	if err != nil {
		return fmt.Errorf("failed to open the target's root filesystem: %w", err)
	}
	defer fsys.Close()
	tw := tar.NewWriter(w)
	e := &emitter{tw: tw, maxBytes: opts.MaxBytes, now: time.Now, names: map[string]bool{}}
	if opts.TimeBudget > 0 {
		e.deadline = time.Now().Add(opts.TimeBudget)
	}
	if dl, ok := ctx.Deadline(); ok && (e.deadline.IsZero() || dl.Before(e.deadline)) {
		e.deadline = dl
	}
	c := &run{opts: opts, e: e, fs: fsys, redactor: NewRedactor(opts.RedactEnv), stored: map[string]bool{},
		excludedSeen: map[string]bool{}, secretDevs: map[uint64]mount{}, bootTime: readBootTime(opts.Proc)}
	c.realProc = isProcfs(opts.Proc)
	if st, err := os.Stat("/proc/self/exe"); err == nil {
		if s, ok := st.Sys().(*syscall.Stat_t); ok {
			c.selfDev, c.selfIno = uint64(s.Dev), s.Ino
		}
	}
	if self.Removed != "" {
		c.selfDev, c.selfIno = 0, 0 // unlinked: nothing to avoid, and the dev/ino may be reused
	}
	if err := e.metaJSON(SelfPath, self); err != nil {
		return err
	}
	c.readMounts()
	for _, phase := range []func() error{c.collectProcesses, c.collectMounts, c.collectConfig} {
		if err := phase(); err != nil {
			return err
		}
	}
	ws, err := c.collectBodyfile()
	if err != nil {
		return err
	}
	if err := c.copyRecent(ws); err != nil {
		return err
	}
	if extra != nil {
		if err := extra(c); err != nil {
			return err
		}
	}
	if e.skips == nil {
		e.skips = []Skip{}
	}
	if err := e.metaJSON(SkippedPath, e.skips); err != nil {
		return err
	}
	m := Manifest{Files: e.files, Ended: time.Now().UTC()}
	if err := e.metaJSON(ManifestPath, m); err != nil {
		return err
	}
	return tw.Close()
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.Profile == "" {
		o.Profile = d.Profile
	}
	if o.Method == "" {
		o.Method = d.Method
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = d.MaxBytes
	}
	if o.MaxFileBytes == 0 {
		o.MaxFileBytes = d.MaxFileBytes
	}
	if o.MaxTmpFileBytes == 0 {
		o.MaxTmpFileBytes = d.MaxTmpFileBytes
	}
	if o.MaxExeBytes == 0 {
		o.MaxExeBytes = d.MaxExeBytes
	}
	if o.TimeBudget == 0 {
		o.TimeBudget = d.TimeBudget
	}
	if o.BodyfileRoots == nil {
		o.BodyfileRoots = d.BodyfileRoots
	}
	if o.Exclude == nil {
		o.Exclude = d.Exclude
	}
	if o.TempDirs == nil {
		o.TempDirs = d.TempDirs
	}
	if o.Root == "" {
		o.Root = d.Root
	}
	if o.Proc == "" {
		o.Proc = d.Proc
	}
	if o.Arch == "" {
		o.Arch = runtime.GOARCH
	}
	return o
}

func isProcfs(p string) bool {
	var st unix.Statfs_t
	return unix.Statfs(p, &st) == nil && st.Type == unix.PROC_SUPER_MAGIC
}

// readMounts reads the container's mount table (the view process's mountinfo) and finds the secret mounts.
func (c *run) readMounts() {
	data, err := readProcFile(c.viewPath("mountinfo"))
	if err != nil {
		c.e.skipErr(c.viewPath("mountinfo"), err)
		return
	}
	c.viewMountinfo = data
	c.mounts = parseMountinfo(data)
	// A secret mount's device marks its files wherever a link leads, but only if it is a device of its own: a
	// mount point that is just a directory of the root filesystem (a test tree, a mount table that lies) would
	// otherwise mark the whole root.
	var rootDev uint64
	if f, err := c.fs.open("/", unix.O_PATH, false); err == nil {
		var st unix.Stat_t
		if unix.Fstat(int(f.Fd()), &st) == nil {
			rootDev = uint64(st.Dev)
		}
		f.Close()
	}
	for i := range c.mounts {
		m := &c.mounts[i]
		m.Secret = secretReason(*m, func(dir string) bool {
			f, err := c.fs.open(filepath.Join(dir, "..data"), unix.O_PATH, true)
			if err != nil {
				return false
			}
			f.Close()
			return true
		})
		if m.Secret == "" {
			continue
		}
		if f, err := c.fs.open(m.Point, unix.O_PATH, false); err == nil {
			var st unix.Stat_t
			if unix.Fstat(int(f.Fd()), &st) == nil && uint64(st.Dev) != rootDev {
				c.secretDevs[uint64(st.Dev)] = *m
			}
			f.Close()
		}
	}
}

// collectMounts stores the container's mount table, cgroup, namespaces and the secret mounts found.
func (c *run) collectMounts() error {
	if c.viewMountinfo != nil {
		if err := c.e.content("container/proc/mountinfo", c.viewPath("mountinfo"), c.viewMountinfo, time.Time{}, File{}); err != nil {
			return err
		}
	}
	for _, name := range []string{"cgroup", "mounts"} {
		src := c.viewPath(name)
		data, err := readProcFile(src)
		if err != nil {
			c.e.skipErr(src, err)
			continue
		}
		if err := c.e.content("container/proc/"+name, src, data, time.Time{}, File{}); err != nil {
			return err
		}
	}
	type secretMount struct {
		Point  string `json:"mount_point"`
		FSType string `json:"fstype"`
		Why    string `json:"why"`
	}
	secrets := []secretMount{}
	for _, m := range c.mounts {
		if m.Secret != "" {
			secrets = append(secrets, secretMount{EscapeName(m.Point), m.FSType, m.Secret})
			if !c.opts.CopySecrets {
				c.e.skip(m.Point, ReasonSecret, m.Secret+"; listed in the bodyfile, files not copied")
			}
		}
	}
	return c.e.metaJSON("container/secret-mounts.json", secrets)
}

// Main is warren-collector's main: "collect [flags]" writes the stream to stdout (exec mode: the binary was
// uploaded and runs in the target), "ephemeral [flags]" and "node [flags]" wait for the acquirer on stdin and write
// the sealed stream (the runtime started the collector beside its target: see ModeArgs and session.go),
// "version" prints the version. It returns the exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: warren-collector collect [flags] | ephemeral [flags] | node [flags] | version")
		return 2
	}
	switch args[0] {
	case "version", "--version":
		fmt.Fprintln(stdout, Version())
		return 0
	case ModeEphemeral, ModeNode:
		return mainAttached(args, stdin, stdout, stderr)
	case "collect":
	default:
		fmt.Fprintf(stderr, "warren-collector: unknown command %q (want collect, ephemeral, node or version)\n", args[0])
		return 2
	}
	started := time.Now().UTC()
	// The self-hash comes first, before any option is acted on: the acquirer trusts nothing else until it matches.
	selfSum, err := hashFile("/proc/self/exe")
	if err != nil {
		fmt.Fprintf(stderr, "warren-collector: failed to hash its own executable: %v\n", err)
		return 1
	}
	opts, removeSelf, err := parseCollectorArgs(args[1:], stderr)
	if err != nil {
		fmt.Fprintf(stderr, "warren-collector: %v\n", err)
		return 2
	}
	exe, _ := os.Readlink("/proc/self/exe")
	self := SelfInfo{Mode: "collector", Version: Version(), SHA256: selfSum, Exe: EscapeName(exe), PID: os.Getpid(),
		UID: os.Getuid(), GID: os.Getgid(), Arch: runtime.GOARCH, Args: args[1:], Started: started}
	if removeSelf {
		// Unlinked at once, not at the end: a collection killed midway leaves no binary behind, and the file is
		// not collected as a /tmp file.
		if err := os.Remove(exe); err != nil {
			self.Removed = "failed: " + err.Error()
		} else {
			self.Removed = "removed " + EscapeName(exe) + " at start"
		}
	}
	bw := bufio.NewWriterSize(stdout, 256<<10)
	err = Run(context.Background(), opts, self, bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		fmt.Fprintf(stderr, "warren-collector: %v\n", err)
		return 1
	}
	return 0
}

func hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hexSum(h), nil
}
