package collector

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Process is one entry of container/processes.json. Strings from the target are escaped (EscapeName).
type Process struct {
	PID        int       `json:"pid"`
	PPID       int       `json:"ppid"`
	UID        string    `json:"uid,omitempty"` // real, effective, saved, filesystem (status Uid:)
	GID        string    `json:"gid,omitempty"`
	State      string    `json:"state,omitempty"`
	Comm       string    `json:"comm,omitempty"`
	Cmdline    []string  `json:"cmdline,omitempty"`
	Exe        string    `json:"exe,omitempty"`
	ExeDeleted bool      `json:"exe_deleted,omitempty"`
	ExeSHA256  string    `json:"exe_sha256,omitempty"`
	ExeSize    int64     `json:"exe_size,omitempty"`
	ExeCopy    string    `json:"exe_copy,omitempty"` // archive path of the deleted executable's copy
	Cwd        string    `json:"cwd,omitempty"`
	Root       string    `json:"root,omitempty"`
	Started    time.Time `json:"started,omitzero"`
	// Namespaces maps a namespace type (net, pid, mnt, ...) to its inode ("net:[4026531840]").
	Namespaces map[string]string `json:"namespaces,omitempty"`
	// FDs maps a descriptor number to its target (a path, socket:[inode], pipe:[inode], anon_inode:...).
	FDs map[string]string `json:"fds,omitempty"`
}

// procFiles are copied per process; maps and environ may be large (bounded by procFileMax).
var procFiles = []string{"cmdline", "comm", "environ", "status", "stat", "maps", "cgroup", "limits", "loginuid", "mountinfo"}

// netFiles are copied for the container's view and for each other network namespace a process is in.
var netFiles = []string{"tcp", "tcp6", "udp", "udp6", "unix", "raw", "raw6", "icmp", "icmp6", "packet", "route", "arp", "dev", "if_inet6"}

var nsTypes = []string{"net", "pid", "mnt", "uts", "ipc", "user", "cgroup", "time"}

// procFileMax bounds one /proc file read whole (maps of a large process).
const procFileMax = 16 << 20

type procState struct {
	pids  []int
	procs map[int]*Process
}

// listPIDs returns the numeric entries of the proc directory, or opts.PIDs.
func (c *run) listPIDs() []int {
	if c.opts.PIDs != nil {
		return append([]int(nil), c.opts.PIDs...)
	}
	ents, err := os.ReadDir(c.opts.Proc)
	if err != nil {
		c.e.skipErr(c.opts.Proc, err)
		return nil
	}
	var pids []int
	for _, d := range ents {
		if n, err := strconv.Atoi(d.Name()); err == nil && n > 0 {
			pids = append(pids, n)
		}
	}
	sort.Ints(pids)
	return pids
}

func (c *run) procPath(pid int, name string) string {
	return filepath.Join(c.opts.Proc, strconv.Itoa(pid), name)
}

// viewPath is a path in the view process's /proc directory (RootPID or self).
func (c *run) viewPath(name string) string {
	if c.opts.RootPID > 0 {
		return c.procPath(c.opts.RootPID, name)
	}
	return filepath.Join(c.opts.Proc, "self", name)
}

// collectProcesses is the first, most volatile phase: per process its /proc files and links, then the network
// (the container's view and each other namespace), then copies of deleted executables, then processes.json with
// every executable's hash.
func (c *run) collectProcesses() error {
	self := os.Getpid()
	st := &procState{procs: map[int]*Process{}}
	for _, pid := range c.listPIDs() {
		if pid == self && c.realProc {
			c.e.skip(c.procPath(pid, ""), ReasonSelf, "the collector's own process")
			continue
		}
		if c.e.outOfTime() {
			c.e.skip(c.procPath(pid, ""), ReasonTimeBudget, "")
			continue
		}
		p, err := c.collectProcess(pid)
		if err != nil {
			return err
		}
		if p != nil {
			st.pids = append(st.pids, pid)
			st.procs[pid] = p
		}
	}
	if err := c.collectNetwork(st); err != nil {
		return err
	}
	if err := c.copyDeletedExes(st); err != nil {
		return err
	}
	c.hashExes(st)
	list := make([]*Process, 0, len(st.pids))
	for _, pid := range st.pids {
		list = append(list, st.procs[pid])
	}
	c.oldestStart = oldestStart(list)
	if err := c.e.metaJSON("container/processes.json", list); err != nil {
		return err
	}
	return c.e.meta("container/pstree.txt", []byte(pstree(list)))
}

func (c *run) collectProcess(pid int) (*Process, error) {
	dir := c.procPath(pid, "")
	if _, err := os.Stat(dir); err != nil {
		c.e.skipErr(dir, err)
		return nil, nil
	}
	p := &Process{PID: pid, Namespaces: map[string]string{}, FDs: map[string]string{}}
	base := "container/proc/" + strconv.Itoa(pid) + "/"
	for _, name := range procFiles {
		src := c.procPath(pid, name)
		data, err := readProcFile(src)
		if err != nil {
			if name == "mountinfo" || name == "loginuid" {
				continue // optional; mountinfo is copied only where it differs from the container's, below
			}
			c.e.skipErr(src, err)
			continue
		}
		var rec File
		switch name {
		case "cmdline":
			for _, a := range strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00") {
				p.Cmdline = append(p.Cmdline, EscapeName(a))
			}
		case "comm":
			p.Comm = EscapeName(strings.TrimSuffix(string(data), "\n"))
		case "status":
			p.UID, p.GID, p.State, p.PPID = parseStatus(data)
		case "stat":
			p.Started = c.startTime(data)
		case "mountinfo":
			if bytes.Equal(data, c.viewMountinfo) {
				continue
			}
		case "environ":
			red, names := c.redactor.RedactEnviron(data)
			if names != nil {
				rec.OrigSize, rec.Note = int64(len(data)), "redacted: "+strings.Join(escapeAll(names), ",")
				if c.opts.HashRedactedOriginals {
					rec.OrigSHA256 = sum(data)
				}
				data = red
			}
		}
		if err := c.e.content(base+name, src, data, time.Time{}, rec); err != nil {
			return nil, err
		}
	}
	for _, l := range []struct {
		name string
		dst  *string
	}{{"exe", &p.Exe}, {"cwd", &p.Cwd}, {"root", &p.Root}} {
		t, err := os.Readlink(c.procPath(pid, l.name))
		if err != nil {
			c.e.skipErr(c.procPath(pid, l.name), err)
			continue
		}
		if l.name == "exe" && strings.HasSuffix(t, " (deleted)") {
			p.ExeDeleted = true
		}
		*l.dst = EscapeName(t)
	}
	for _, ns := range nsTypes {
		if t, err := os.Readlink(c.procPath(pid, "ns/"+ns)); err == nil {
			p.Namespaces[ns] = t
		}
	}
	fdDir := c.procPath(pid, "fd")
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		c.e.skipErr(fdDir, err)
	}
	for _, d := range ents {
		if t, err := os.Readlink(filepath.Join(fdDir, d.Name())); err == nil {
			p.FDs[d.Name()] = EscapeName(t)
		}
	}
	return p, nil
}

func escapeAll(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = EscapeName(v)
	}
	return out
}

// readProcFile reads a /proc file whole (their stat size is 0), within procFileMax.
func readProcFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, capped, _, _, err := readSmall(f, procFileMax)
	if err != nil {
		return nil, err
	}
	if capped {
		return data, nil // maps of a huge process: the first procFileMax bytes
	}
	return data, nil
}

func parseStatus(data []byte) (uid, gid, state string, ppid int) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.Join(strings.Fields(v), " ")
		switch k {
		case "Uid":
			uid = v
		case "Gid":
			gid = v
		case "State":
			state = v
		case "PPid":
			ppid, _ = strconv.Atoi(v)
		}
	}
	return
}

// startTime reads field 22 (starttime, clock ticks since boot) of /proc/PID/stat; comm (field 2) may hold spaces
// and parentheses, so fields are counted after its last ')'.
func (c *run) startTime(stat []byte) time.Time {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || c.bootTime.IsZero() {
		return time.Time{}
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return time.Time{}
	}
	ticks, err := strconv.ParseInt(f[19], 10, 64)
	if err != nil {
		return time.Time{}
	}
	const hz = 100 // USER_HZ is 100 on every Linux architecture Kubernetes runs on
	return c.bootTime.Add(time.Duration(ticks) * (time.Second / hz)).UTC()
}

func readBootTime(proc string) time.Time {
	data, err := os.ReadFile(filepath.Join(proc, "stat"))
	if err != nil {
		return time.Time{}
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return time.Unix(n, 0)
			}
		}
	}
	return time.Time{}
}

func oldestStart(list []*Process) time.Time {
	var t time.Time
	for _, p := range list {
		if !p.Started.IsZero() && (t.IsZero() || p.Started.Before(t)) {
			t = p.Started
		}
	}
	return t
}

// collectNetwork copies the container's socket tables and those of each other network namespace (once per
// namespace, from its first process), and writes container/namespaces.json.
func (c *run) collectNetwork(st *procState) error {
	for _, name := range netFiles {
		src := c.viewPath("net/" + name)
		data, err := readProcFile(src)
		if err != nil {
			c.e.skipErr(src, err)
			continue
		}
		if err := c.e.content("container/proc/net/"+name, src, data, time.Time{}, File{}); err != nil {
			return err
		}
	}
	viewNet, _ := os.Readlink(c.viewPath("ns/net"))
	seen := map[string]bool{viewNet: true}
	byNS := map[string]map[string][]int{}
	for _, pid := range st.pids {
		p := st.procs[pid]
		for typ, ns := range p.Namespaces {
			if byNS[typ] == nil {
				byNS[typ] = map[string][]int{}
			}
			byNS[typ][ns] = append(byNS[typ][ns], pid)
		}
		ns := p.Namespaces["net"]
		if ns == "" || seen[ns] {
			continue
		}
		seen[ns] = true
		for _, name := range []string{"tcp", "tcp6", "udp", "udp6", "unix", "raw", "raw6", "packet"} {
			src := c.procPath(pid, "net/"+name)
			data, err := readProcFile(src)
			if err != nil {
				c.e.skipErr(src, err)
				continue
			}
			dst := fmt.Sprintf("container/proc/%d/net/%s", pid, name)
			if err := c.e.content(dst, src, data, time.Time{}, File{}); err != nil {
				return err
			}
		}
	}
	return c.e.metaJSON("container/namespaces.json", map[string]any{"view_net": viewNet, "by_type": byNS})
}

type exeKey struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

func exeStat(p string) (exeKey, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return exeKey{}, err
	}
	return exeKey{uint64(st.Dev), st.Ino, st.Size, st.Mtim.Nano()}, nil
}

// copyDeletedExes stores the executable of each process whose exe link says "(deleted)": read through
// /proc/PID/exe, the only copy left. One copy per file; other processes of it name that copy.
func (c *run) copyDeletedExes(st *procState) error {
	copies := map[exeKey]string{}
	for _, pid := range st.pids {
		p := st.procs[pid]
		if !p.ExeDeleted {
			continue
		}
		src := c.procPath(pid, "exe")
		key, err := exeStat(src)
		if err != nil {
			c.e.skipErr(src, err)
			continue
		}
		if prev, ok := copies[key]; ok {
			p.ExeCopy = prev
			c.e.skip(src, ReasonDuplicate, "same executable as "+prev)
			continue
		}
		f, err := os.Open(src)
		if err != nil {
			c.e.skipErr(src, err)
			continue
		}
		name := fmt.Sprintf("container/proc/%d/exe.deleted", pid)
		n := len(c.e.files)
		err = c.e.file(name, src, f, key.size, time.Unix(0, key.mtime), c.opts.MaxExeBytes)
		f.Close()
		if err != nil {
			return err
		}
		if len(c.e.files) > n {
			copies[key] = name
			p.ExeCopy = name
			rec := c.e.files[n]
			p.ExeSize = key.size
			if rec.Note == "" {
				p.ExeSHA256 = rec.SHA256
			} else if rec.OrigSHA256 != "" {
				p.ExeSHA256 = rec.OrigSHA256
			}
		}
	}
	return nil
}

// hashExes hashes every process's executable (not stored; the image has it), once per file.
func (c *run) hashExes(st *procState) {
	hashes := map[exeKey]string{}
	for _, pid := range st.pids {
		p := st.procs[pid]
		if p.ExeSHA256 != "" || p.Exe == "" {
			continue
		}
		src := c.procPath(pid, "exe")
		if c.e.outOfTime() {
			c.e.skip(src, ReasonTimeBudget, "executable not hashed")
			continue
		}
		key, err := exeStat(src)
		if err != nil {
			c.e.skipErr(src, err)
			continue
		}
		p.ExeSize = key.size
		if h, ok := hashes[key]; ok {
			p.ExeSHA256 = h
			continue
		}
		f, err := os.Open(src)
		if err != nil {
			c.e.skipErr(src, err)
			continue
		}
		h, _, ok, err := hashReader(f, c.opts.MaxExeBytes)
		f.Close()
		switch {
		case err != nil:
			c.e.skipErr(src, err)
		case !ok:
			c.e.skip(src, ReasonSizeCap, "executable larger than the hashing bound, not hashed")
		default:
			hashes[key] = h
			p.ExeSHA256 = h
		}
	}
}

// pstree renders the process tree, children indented under parents; processes whose parent is outside the
// container (PPID 0 or not collected) are roots.
func pstree(list []*Process) string {
	byPID := map[int]*Process{}
	children := map[int][]int{}
	for _, p := range list {
		byPID[p.PID] = p
	}
	var roots []int
	for _, p := range list {
		if _, ok := byPID[p.PPID]; ok && p.PPID != p.PID {
			children[p.PPID] = append(children[p.PPID], p.PID)
		} else {
			roots = append(roots, p.PID)
		}
	}
	var b strings.Builder
	var walk func(pid, depth int)
	walk = func(pid, depth int) {
		if depth > 64 {
			return
		}
		p := byPID[pid]
		fmt.Fprintf(&b, "%s%d %s %s\n", strings.Repeat("  ", depth), pid, p.Comm, strings.Join(p.Cmdline, " "))
		for _, ch := range children[pid] {
			walk(ch, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return b.String()
}
