package collector

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The node mode: a collector pod on the target's node (host PID namespace; containerd's runtime directory and root
// mounted read-only at the node's paths) finds the container by containerd's id, reads its bundle (config.json,
// init.pid), its processes through the host's /proc, its file system as its processes see it (/proc/<init>/root),
// and, for the overlayfs snapshotter, the container's own writes (the overlay's upper directory, from the
// container's mount table: a running containerd holds meta.db locked) as the drift.

// Archive paths of the node mode.
const (
	NodePrefix     = "node"
	NodeBundlePath = NodePrefix + "/bundle.json" // NodeInfo
	NodeConfigPath = NodePrefix + "/config.json" // the bundle's OCI runtime spec, environment values redacted
)

// Snapshotters the node mode reads.
const (
	SnapshotterOverlayfs = "overlayfs"
	SnapshotterNative    = "native"
)

// ErrUnsupportedSnapshotter is matched by the node mode's refusal of a container whose root it cannot read as
// containerd's overlayfs or native snapshotter left it.
var ErrUnsupportedSnapshotter = errors.New("unsupported snapshotter")

// UnsupportedNote says what the node mode reads and what it does not.
const UnsupportedNote = "the node mode reads containerd's overlayfs snapshotter (and native, without drift); not supported: " +
	"CRI-O and other runtimes, the stargz, SOCI, GKE image streaming (gcfs), nydus, overlaybd, devmapper, zfs, btrfs and " +
	"fuse-overlayfs snapshotters, and a root file system given to containerd directly"

// NodeInfo is node/bundle.json: where the container was found and how its file system is made.
type NodeInfo struct {
	ContainerID string `json:"containerID"`
	Namespace   string `json:"namespace"`
	Bundle      string `json:"bundle"`  // RuntimeDir/<namespace>/<id>
	InitPID     int    `json:"initPID"` // init.pid, checked: its root is the bundle's rootfs
	Snapshotter string `json:"snapshotter"`
	// RootMount is the container's root as its own mount table shows it.
	RootMount RootMount `json:"rootMount"`
	// Upper is the writable layer (overlayfs), Lowers the image's layers, top first; node paths.
	Upper  string   `json:"upper,omitempty"`
	Lowers []string `json:"lowers,omitempty"`
	// Drift says what drift/ holds, or why there is none.
	Drift string `json:"drift"`
	// DriftCounts count the changes by kind.
	DriftCounts map[string]int `json:"driftCounts,omitempty"`
	Notes       []string       `json:"notes,omitempty"`
}

// RootMount is one mountinfo line's file system.
type RootMount struct {
	FSType  string `json:"fstype"`
	Source  string `json:"source"`
	Options string `json:"options"`
}

// maxBundleFile bounds config.json and init.pid.
const maxBundleFile = 4 << 20

func findNodeTarget(m ModeArgs, proc string) (*attachedTarget, error) {
	if fi, err := os.Stat(m.RuntimeDir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("no containerd runtime directory %s on this node (%v): is containerd the node's runtime, and is "+
			"its state where the node mode was told (k3s and RKE2: /run/k3s/containerd/io.containerd.runtime.v2.task)? %s",
			m.RuntimeDir, errOr(err, "not a directory"), UnsupportedNote)
	}
	bundle := filepath.Join(m.RuntimeDir, m.Namespace, m.ContainerID)
	if _, err := os.Lstat(bundle); err != nil {
		return nil, fmt.Errorf("no running container %s in containerd namespace %s on this node (%s: %v): "+
			"the node mode reads running containers; for one that stopped, acquire the node's disk (warren acquire volume)",
			m.ContainerID, m.Namespace, bundle, errDetail(err))
	}
	pidData, err := readBounded(filepath.Join(bundle, "init.pid"), maxBundleFile)
	if err != nil {
		return nil, fmt.Errorf("container %s has no init.pid in its bundle (%v): is it running?", m.ContainerID, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidData)))
	if err != nil || pid <= 0 {
		return nil, fmt.Errorf("container %s: init.pid %q is not a process id", m.ContainerID, EscapeName(string(pidData)))
	}
	// The runtime spec names the root: containerd's snapshots are mounted at the bundle's rootfs.
	cfg, err := readBounded(filepath.Join(bundle, "config.json"), maxBundleFile)
	if err != nil {
		return nil, fmt.Errorf("container %s has no readable config.json in its bundle: %v", m.ContainerID, err)
	}
	var spec struct {
		Root *struct {
			Path string `json:"path"`
		} `json:"root"`
	}
	if err := json.Unmarshal(cfg, &spec); err != nil || spec.Root == nil {
		return nil, fmt.Errorf("container %s: its bundle's config.json is not a runtime spec with a root (%v)", m.ContainerID, err)
	}
	if p := spec.Root.Path; p != "rootfs" && filepath.Clean(p) != filepath.Join(bundle, "rootfs") {
		return nil, fmt.Errorf("container %s: %w: its root file system is a directory given to containerd directly (%s), which no snapshotter made: %s",
			m.ContainerID, ErrUnsupportedSnapshotter, EscapeName(p), UnsupportedNote)
	}
	procRoot := filepath.Join(proc, strconv.Itoa(pid), "root")
	var bst, pst unix.Stat_t
	if err := unix.Stat(filepath.Join(bundle, "rootfs"), &bst); err != nil {
		return nil, fmt.Errorf("container %s: its bundle's rootfs: %v", m.ContainerID, err)
	}
	if err := unix.Stat(procRoot, &pst); err != nil {
		return nil, fmt.Errorf("container %s: init.pid names process %d, whose root cannot be read (%v): has it exited, or is the "+
			"collector not in the host's PID namespace (hostPID) with CAP_SYS_PTRACE?", m.ContainerID, pid, errDetail(err))
	}
	if bst.Dev != pst.Dev || bst.Ino != pst.Ino {
		return nil, fmt.Errorf("container %s: init.pid names process %d, whose root is not the bundle's rootfs: the container "+
			"has exited and its process id was reused", m.ContainerID, pid)
	}
	mi, err := readProcFile(filepath.Join(proc, strconv.Itoa(pid), "mountinfo"))
	if err != nil {
		return nil, fmt.Errorf("container %s: its mount table (process %d): %v", m.ContainerID, pid, err)
	}
	var rootMount *mount
	for _, mt := range parseMountinfo(mi) {
		if mt.Point == "/" {
			rootMount = &mt // the last one wins, as the kernel's lookup does
		}
	}
	if rootMount == nil {
		return nil, fmt.Errorf("container %s: its mount table has no root mount", m.ContainerID)
	}
	info := &NodeInfo{ContainerID: m.ContainerID, Namespace: m.Namespace, Bundle: bundle, InitPID: pid,
		RootMount: RootMount{FSType: rootMount.FSType, Source: rootMount.Source, Options: rootMount.SuperOptions}}
	if err := detectSnapshot(info, *rootMount, m.ContainerdRoot, pst); err != nil {
		return nil, fmt.Errorf("container %s: %w", m.ContainerID, err)
	}

	pids, err := listProc(proc)
	if err != nil {
		return nil, err
	}
	view := TargetView{Mode: ModeNode, Root: procRoot, RootPID: pid, ContainerID: m.ContainerID,
		User: fmt.Sprintf("uid %d gid %d on the node", os.Geteuid(), os.Getegid())}
	self := os.Getpid()
	nsOf := func(p int, kind string) string {
		s, _ := os.Readlink(filepath.Join(proc, strconv.Itoa(p), "ns", kind))
		return s
	}
	kind := "pid"
	initNS := nsOf(pid, kind)
	if initNS == "" || initNS == nsOf(self, kind) {
		kind, initNS = "mnt", nsOf(pid, "mnt") // a hostPID container shares the node's: its mount namespace tells
	}
	if initNS == "" {
		return nil, fmt.Errorf("container %s: cannot read the namespaces of its process %d: the collector needs CAP_SYS_PTRACE", m.ContainerID, pid)
	}
	for _, p := range pids {
		if p != self && nsOf(p, kind) == initNS {
			view.PIDs = append(view.PIDs, p)
		}
	}
	view.How = "init.pid of the bundle (its root checked to be the bundle's rootfs), and the processes in its " + kind + " namespace"
	opts := m.Options
	opts.Root, opts.Proc, opts.RootPID, opts.PIDs = procRoot, proc, pid, view.PIDs
	t := &attachedTarget{opts: opts, view: view}
	t.extra = func(c *run) error { return writeNodeEntries(c, m, info) }
	return t, nil
}

func errOr(err error, s string) string {
	if err != nil {
		return errDetail(err)
	}
	return s
}

var snapshotterDir = regexp.MustCompile(`/io\.containerd\.snapshotter\.v1\.([A-Za-z0-9_.-]+)/`)

// detectSnapshot tells from the container's root mount which snapshotter made it, and for overlayfs where its
// layers are. Anything but containerd's overlayfs and native snapshotters under root is ErrUnsupportedSnapshotter.
func detectSnapshot(info *NodeInfo, m mount, root string, rootStat unix.Stat_t) error {
	unsupported := func(what string) error {
		return fmt.Errorf("%w: %s: %s", ErrUnsupportedSnapshotter, what, UnsupportedNote)
	}
	switch {
	case m.FSType == "overlay":
	case strings.HasPrefix(m.FSType, "fuse."):
		return unsupported(fmt.Sprintf("its root is a FUSE file system (%s, from %s): fuse-overlayfs, or a lazily pulled image",
			EscapeName(m.FSType), EscapeName(m.Source)))
	default:
		// The native snapshotter binds a snapshot directory: the container's root is that directory.
		dir := filepath.Join(root, "io.containerd.snapshotter.v1.native", "snapshots")
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			var st unix.Stat_t
			if unix.Stat(filepath.Join(dir, e.Name()), &st) == nil && st.Dev == rootStat.Dev && st.Ino == rootStat.Ino {
				info.Snapshotter = SnapshotterNative
				info.Upper = filepath.Join(dir, e.Name())
				info.Drift = "none: the native snapshotter keeps a full copy of the image per container, so the container's own " +
					"writes cannot be told from the image's files without containerd's metadata (meta.db, locked while containerd " +
					"runs); acquire a snapshot of the node's disk for the drift (warren acquire volume)"
				return nil
			}
		}
		return unsupported(fmt.Sprintf("its root is a %s mount of %s that is no snapshot of containerd's overlayfs or native snapshotter under %s "+
			"(devmapper, zfs, btrfs, or a root file system given to containerd directly)", EscapeName(m.FSType), EscapeName(m.Source), root))
	}
	var upper, work string
	var lowers []string
	for _, o := range strings.Split(m.SuperOptions, ",") {
		k, v, _ := strings.Cut(o, "=")
		v = unoctal(v)
		switch k {
		case "upperdir":
			upper = v
		case "workdir":
			work = v
		case "lowerdir":
			lowers = strings.Split(v, ":")
		}
	}
	_ = work
	name := ""
	if s := snapshotterDir.FindStringSubmatch(upper + "/"); s != nil {
		name = s[1]
	} else if len(lowers) > 0 {
		if s := snapshotterDir.FindStringSubmatch(lowers[0] + "/"); s != nil {
			name = s[1]
		}
	}
	all := strings.Join(append([]string{upper}, lowers...), ":")
	switch {
	case strings.Contains(all, "containerd-stargz-grpc"):
		return unsupported("the stargz snapshotter (lazily pulled: its layers are FUSE mounts fetched on demand, and what was never read is not on the node)")
	case strings.Contains(all, "soci-snapshotter-grpc"):
		return unsupported("the SOCI snapshotter (lazily pulled: its layers are FUSE mounts fetched on demand)")
	case name == "gcfs" || strings.Contains(all, "gcfs"):
		return unsupported("GKE image streaming (gcfs: the image's layers are a network file system)")
	case name != "" && name != SnapshotterOverlayfs:
		return unsupported(fmt.Sprintf("the %s snapshotter", EscapeName(name)))
	case name == "":
		return unsupported(fmt.Sprintf("an overlay mount whose layers are not containerd's overlayfs snapshots under %s (upperdir %s)",
			root, EscapeName(upper)))
	}
	snapshots := filepath.Join(root, "io.containerd.snapshotter.v1.overlayfs", "snapshots")
	inside := func(p string) bool { return strings.HasPrefix(p, snapshots+"/") && filepath.Clean(p) == p }
	for i, l := range lowers {
		// containerd mounts with lowerdirs relative to the snapshots directory when the option would not fit a page.
		if !filepath.IsAbs(l) {
			lowers[i] = filepath.Join(snapshots, l)
		}
		if !inside(lowers[i]) {
			return unsupported(fmt.Sprintf("an image layer outside %s (%s)", snapshots, EscapeName(l)))
		}
	}
	info.Snapshotter = SnapshotterOverlayfs
	info.Lowers = lowers
	switch {
	case upper == "":
		info.Drift = "none: the container's root has no writable layer (a read-only view of its image)"
	case !inside(upper):
		return unsupported(fmt.Sprintf("a writable layer outside %s (%s)", snapshots, EscapeName(upper)))
	default:
		info.Upper = upper
		info.Drift = "the overlay's upper directory, against the image's layers below it"
	}
	return nil
}

// writeNodeEntries writes the bundle's config, the drift and node/bundle.json.
func writeNodeEntries(c *run, m ModeArgs, info *NodeInfo) error {
	cfgPath := filepath.Join(info.Bundle, "config.json")
	if raw, err := readBounded(cfgPath, maxBundleFile); err != nil {
		c.e.skipErr(cfgPath, err)
	} else {
		red, names, err := redactSpec(raw, c.redactor)
		f := File{}
		switch {
		case err != nil:
			c.e.skip(cfgPath, ReasonError, "not a runtime spec, not stored: "+err.Error())
		default:
			if len(names) > 0 {
				f.Note, f.OrigSize = "redacted: "+strings.Join(names, ","), int64(len(raw))
			}
			if err := c.e.content(NodeConfigPath, cfgPath, red, time.Time{}, f); err != nil {
				return err
			}
		}
	}
	if info.Snapshotter == SnapshotterOverlayfs && info.Upper != "" {
		counts, notes, err := writeOverlayDrift(c, m.ContainerdRoot, info)
		if err != nil {
			return err
		}
		info.DriftCounts, info.Notes = counts, append(info.Notes, notes...)
	}
	return c.e.metaJSON(NodeBundlePath, info)
}

// redactSpec re-encodes an OCI runtime spec with its process environment's values redacted as the collector
// redacts environ blocks.
func redactSpec(raw []byte, r *Redactor) ([]byte, []string, error) {
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, nil, err
	}
	var names []string
	if p, ok := spec["process"]; ok {
		var proc map[string]json.RawMessage
		if err := json.Unmarshal(p, &proc); err != nil {
			return nil, nil, fmt.Errorf("process: %v", err)
		}
		if e, ok := proc["env"]; ok {
			var env []string
			if err := json.Unmarshal(e, &env); err != nil {
				return nil, nil, fmt.Errorf("process.env: %v", err)
			}
			for i, kv := range env {
				if k, v, ok := strings.Cut(kv, "="); ok && r.Match(k, v) {
					env[i], names = k+"="+RedactedValue, append(names, k)
				}
			}
			var err error
			if proc["env"], err = json.Marshal(env); err != nil {
				return nil, nil, err
			}
			if spec["process"], err = json.Marshal(proc); err != nil {
				return nil, nil, err
			}
		}
	}
	out, err := json.MarshalIndent(spec, "", " ")
	if err != nil {
		return nil, nil, err
	}
	return append(out, '\n'), names, nil
}

func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}
