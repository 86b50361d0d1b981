package collector

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// TargetView is how a collector started beside its target (ephemeral, node) found it; collector/self.json holds it.
type TargetView struct {
	Mode string `json:"mode"` // ephemeral or node
	// Root is where the file system was read from (/proc/PID/root of the target's process).
	Root    string `json:"root"`
	RootPID int    `json:"rootPID"` // the process whose view (mounts, network) stands for the container's
	PIDs    []int  `json:"pids"`    // the target's processes, as the collector's /proc numbers them
	How     string `json:"how"`     // how they were told apart from the others
	// User is whose rights the collector read with, and where they came from.
	User string `json:"user"`
	// ContainerID is the runtime's id of the target, when the collector was given it.
	ContainerID string `json:"containerID,omitempty"`
}

// attachedTarget is what a started collector found: the options that point the collection at the target, its
// view for self.json, and the mode's own entries (written before skipped.json and the manifest).
type attachedTarget struct {
	opts  Options
	view  TargetView
	extra func(c *run) error
}

// mainAttached is `warren-collector ephemeral|node ...`: the container's entrypoint. It hashes its executable,
// waits for the acquirer's session line on stdin (writing nothing before), finds its target, and writes the
// sealed stream to stdout. Exit codes: 0 done; 1 the target could not be found or the collection failed (stderr
// says why; nothing or a partial sealed stream on stdout); 2 bad arguments; 3 no session began (nothing written);
// 4 the acquirer went away midway.
func mainAttached(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	started := time.Now().UTC()
	selfSum, err := hashFile("/proc/self/exe")
	if err != nil {
		fmt.Fprintf(stderr, "warren-collector: failed to hash its own executable: %v\n", err)
		return 1
	}
	m, err := parseModeArgs(args, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "warren-collector: %v\n", err)
		return 2
	}
	key, err := waitSession(stdin, m.Wait)
	if err != nil {
		fmt.Fprintf(stderr, "warren-collector: %v; nothing was written\n", err)
		return 3
	}
	// From here on stdin stays open for as long as the acquirer is attached; its end stops the collection, so a
	// stream nobody reads any more does not go on into the node's log.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		cancel(errAcquirerGone)
	}()

	var t *attachedTarget
	switch m.Mode {
	case ModeEphemeral:
		t, err = findEphemeralTarget(m, "/proc")
	case ModeNode:
		t, err = findNodeTarget(m, "/proc")
	}
	if err != nil {
		fmt.Fprintf(stderr, "warren-collector: %v\n", err)
		return 1
	}
	exe, _ := os.Readlink("/proc/self/exe")
	self := SelfInfo{Mode: "collector", Version: Version(), SHA256: selfSum, Exe: EscapeName(exe), PID: os.Getpid(),
		UID: os.Getuid(), GID: os.Getgid(), Arch: runtime.GOARCH, Args: args, Started: started, Target: &t.view}
	out := &cancelWriter{w: stdout, ctx: ctx}
	sw, err := newSealWriter(out, key)
	if err == nil {
		bw := bufio.NewWriterSize(sw, 256<<10)
		if err = runPhases(ctx, t.opts, self, bw, t.extra); err == nil {
			if err = bw.Flush(); err == nil {
				err = sw.Close()
			}
		}
	}
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errAcquirerGone) {
			fmt.Fprintf(stderr, "warren-collector: %v: stopped\n", cause)
			return 4
		}
		fmt.Fprintf(stderr, "warren-collector: %v\n", err)
		return 1
	}
	return 0
}

var errAcquirerGone = errors.New("the acquirer went away (stdin closed)")

// cancelWriter fails every write once ctx is done.
type cancelWriter struct {
	w   io.Writer
	ctx context.Context
}

func (c *cancelWriter) Write(p []byte) (int, error) {
	if err := context.Cause(c.ctx); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// waitSession reads the session line, for at most wait.
func waitSession(stdin io.Reader, wait time.Duration) ([]byte, error) {
	type result struct {
		key []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		k, err := readHandshake(stdin)
		ch <- result{k, err}
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case r := <-ch:
		if r.err == io.EOF {
			return nil, errors.New("stdin closed before the acquirer's session line")
		}
		return r.key, r.err
	case <-t.C:
		// The reading goroutine stays blocked on stdin; the process exits next.
		return nil, fmt.Errorf("no acquirer attached within %v", wait)
	}
}

// findEphemeralTarget finds the target's processes in the PID namespace the collector shares with them.
func findEphemeralTarget(m ModeArgs, proc string) (*attachedTarget, error) {
	self := os.Getpid()
	selfMnt, _ := os.Readlink(filepath.Join(proc, "self", "ns", "mnt"))
	pids, err := listProc(proc)
	if err != nil {
		return nil, err
	}
	view := TargetView{Mode: ModeEphemeral, ContainerID: m.TargetContainerID}
	var matched []int
	if m.TargetContainerID != "" {
		for _, pid := range pids {
			if pid == self {
				continue
			}
			if cg, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "cgroup")); err == nil && strings.Contains(string(cg), m.TargetContainerID) {
				matched = append(matched, pid)
			}
		}
	}
	rootPID := 0
	if len(matched) > 0 {
		rootPID = matched[0]
		view.How = "the processes whose cgroup names container " + m.TargetContainerID
	} else {
		for _, pid := range pids {
			if pid == self {
				continue
			}
			if mnt, err := os.Readlink(filepath.Join(proc, strconv.Itoa(pid), "ns", "mnt")); err != nil || mnt != selfMnt {
				rootPID = pid
				break
			}
		}
		view.How = "the lowest process outside the collector's mount namespace, and those sharing its mount namespace"
		if m.TargetContainerID != "" {
			view.How += " (no cgroup names container " + m.TargetContainerID + ")"
		}
	}
	if rootPID == 0 {
		return nil, fmt.Errorf("no process of the target is visible (the collector sees only itself in %s): "+
			"is the ephemeral container in the target container's PID namespace (targetContainerName)?", proc)
	}
	user, err := takeTargetUser(m.AsTargetUser, proc, rootPID)
	if err != nil {
		return nil, err
	}
	view.User = user
	rootMnt, err := os.Readlink(filepath.Join(proc, strconv.Itoa(rootPID), "ns", "mnt"))
	if err != nil {
		return nil, fmt.Errorf("cannot read the namespaces of the target's process %d (%v) as uid %d: the collector needs the target's user, "+
			"or capabilities that cover the target's (its container's runAsUser, or a capability set at least the target's)",
			rootPID, errDetail(err), os.Geteuid())
	}
	for _, pid := range pids {
		if pid == self {
			continue
		}
		if mnt, err := os.Readlink(filepath.Join(proc, strconv.Itoa(pid), "ns", "mnt")); err == nil && mnt == rootMnt {
			view.PIDs = append(view.PIDs, pid)
		}
	}
	view.RootPID, view.Root = rootPID, filepath.Join(proc, strconv.Itoa(rootPID), "root")
	if err := checkRoot(view.Root); err != nil {
		return nil, err
	}
	opts := m.Options
	opts.Root, opts.Proc, opts.RootPID, opts.PIDs = view.Root, proc, rootPID, view.PIDs
	return &attachedTarget{opts: opts, view: view}, nil
}

// checkRoot opens the target's root the way the collection will.
func checkRoot(root string) error {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cannot open the target's root %s as uid %d (%v): reading another process's root needs its user, "+
			"or the capabilities it has", root, os.Geteuid(), err)
	}
	return unix.Close(fd)
}

// takeTargetUser switches a collector started as root to the user of process pid, when asked and when that user is
// not root: /proc/PID/root of a process of another user needs CAP_SYS_PTRACE, and its own user needs none. The
// groups come from the process's status (Uid, Gid, Groups), which anyone may read.
func takeTargetUser(ask bool, proc string, pid int) (string, error) {
	uid, gid := os.Geteuid(), os.Getegid()
	cur := fmt.Sprintf("uid %d gid %d", uid, gid)
	if !ask {
		return cur + " (the ephemeral container's securityContext, the target's)", nil
	}
	if uid != 0 {
		return cur + " (not root: kept)", nil
	}
	st, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "status"))
	if err != nil {
		return "", fmt.Errorf("cannot read the target's user from %s/%d/status: %v", proc, pid, err)
	}
	tu, tg, groups, err := statusIDs(string(st))
	if err != nil {
		return "", fmt.Errorf("%s/%d/status: %v", proc, pid, err)
	}
	if tu == 0 {
		return cur + " (the target runs as root too: kept)", nil
	}
	// Go applies these to every thread (Linux, since Go 1.16). Groups first, then the group, then the user: the
	// user change drops every capability.
	if err := syscall.Setgroups(groups); err != nil {
		return "", fmt.Errorf("cannot take the target's groups %v: %v", groups, err)
	}
	if err := syscall.Setgid(tg); err != nil {
		return "", fmt.Errorf("cannot take the target's group %d: %v", tg, err)
	}
	if err := syscall.Setuid(tu); err != nil {
		return "", fmt.Errorf("cannot take the target's user %d: %v", tu, err)
	}
	return fmt.Sprintf("uid %d gid %d groups %v (taken from process %d; started as %s)", tu, tg, groups, pid, cur), nil
}

// statusIDs reads the real user and group and the supplementary groups of a /proc/PID/status.
func statusIDs(status string) (uid, gid int, groups []int, err error) {
	found := 0
	for _, line := range strings.Split(status, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		switch k {
		case "Uid", "Gid":
			if len(f) == 0 {
				return 0, 0, nil, fmt.Errorf("empty %s line", k)
			}
			n, err := strconv.Atoi(f[0])
			if err != nil {
				return 0, 0, nil, fmt.Errorf("%s %q: %v", k, f[0], err)
			}
			if k == "Uid" {
				uid = n
			} else {
				gid = n
			}
			found++
		case "Groups":
			for _, g := range f {
				n, err := strconv.Atoi(g)
				if err != nil {
					return 0, 0, nil, fmt.Errorf("Groups %q: %v", g, err)
				}
				groups = append(groups, n)
			}
		}
	}
	if found != 2 {
		return 0, 0, nil, errors.New("no Uid and Gid lines")
	}
	if groups == nil {
		groups = []int{}
	}
	return uid, gid, groups, nil
}

// listProc lists the process ids of a procfs, in order.
func listProc(proc string) ([]int, error) {
	ents, err := os.ReadDir(proc)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, d := range ents {
		if n, err := strconv.Atoi(d.Name()); err == nil && n > 0 {
			pids = append(pids, n)
		}
	}
	sort.Ints(pids)
	return pids, nil
}
