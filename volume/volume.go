// Package volume reads a node's disk offline: the containerd root of a mounted node volume or snapshot (an EBS or PD
// snapshot, a disk image, a stopped node's root), and exports one container's file system as evidence, with what
// the container changed against its image (the drift).
//
// It reads, never writes, and mounts nothing: containerd's metadata database (meta.db) and the snapshotter's
// (metadata.db) are copied, checked page by page, and read with go.etcd.io/bbolt from the copy; image layers come
// from the content store (blobs/sha256, gzip and zstd decompressed, every digest checked) and, where a layer's blob
// is gone (EKS discards unpacked layers), from the snapshotter's directories, whose overlayfs whiteouts and opaque
// directories are read as the kernel would. Google's container-explorer does the same job by mounting overlays and
// needs CGO; this does it in pure Go, from the files.
//
// Supported: containerd 1.x and 2.x roots with the overlayfs or native snapshotter, at the usual places (see
// KnownLayouts). Not supported, each with an error naming it: CRI-O and Podman storage, Docker's own storage,
// lazy-pulling snapshotters (stargz, SOCI, GKE image streaming, nydus, overlaybd) and block or dataset snapshotters
// (devmapper, zfs, btrfs, erofs).
package volume

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Errors callers branch on.
var (
	// ErrNotContainerdRoot: the directory holds no containerd root at any known place.
	ErrNotContainerdRoot = errors.New("not a containerd root")
	// ErrUnsupported: a container runtime, snapshotter or layout this package does not read.
	ErrUnsupported = errors.New("unsupported")
	// ErrCorrupt: a database that is not what containerd writes (truncated, random bytes, other buckets).
	ErrCorrupt = errors.New("corrupt database")
	// ErrLocked: a database locked by a running containerd.
	ErrLocked = errors.New("database in use")
	// ErrUnknownContainer: no such container (or a prefix matching several).
	ErrUnknownContainer = errors.New("unknown container")
)

// Layout is a place where a distribution keeps containerd's root, relative to the root of the node's file system.
type Layout struct {
	Name string // "containerd", "k3s", "rke2", "bottlerocket"
	Dir  string // relative to the volume's root
}

// KnownLayouts are the places Open looks for a containerd root when Config.ContainerdRoot is empty, besides the
// volume's root itself (a volume that was mounted at /var/lib/containerd). Bottlerocket keeps /var/lib on its data
// partition (BOTTLEROCKET-DATA, mounted at /local on the node): that partition mounted alone has it at
// var/lib/containerd, the whole system mounted at local/var/lib/containerd.
var KnownLayouts = []Layout{
	{"containerd", "var/lib/containerd"},
	{"k3s", "var/lib/rancher/k3s/agent/containerd"},
	{"rke2", "var/lib/rancher/rke2/agent/containerd"},
	{"bottlerocket", "local/var/lib/containerd"},
}

// Paths inside a containerd root.
const (
	MetaDBPath     = "io.containerd.metadata.v1.bolt/meta.db"
	ContentBlobDir = "io.containerd.content.v1.content/blobs"
	snapshotterDir = "io.containerd.snapshotter.v1." // + snapshotter name
)

// Config configures Open. The zero value of every field but Root works (DefaultConfig's values).
type Config struct {
	// Root is the mounted volume or snapshot (or a containerd root itself). Required.
	Root string
	// ContainerdRoot is containerd's root relative to Root (an absolute path is taken relative to Root too), for a
	// layout KnownLayouts lacks; empty: detect.
	ContainerdRoot string
	// TempDir receives the private copies of the databases while they are read; empty: os.TempDir().
	TempDir string
	// MaxDBBytes bounds each database read (default 1 GiB; containerd's meta.db is typically a few MiB).
	MaxDBBytes int64
	// LockWait is how long a database locked by another process (a running containerd) is waited for before giving
	// up with ErrLocked (default 2 s).
	LockWait time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults of Config.
func DefaultConfig() Config {
	return Config{MaxDBBytes: 1 << 30, LockWait: 2 * time.Second}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxDBBytes <= 0 {
		c.MaxDBBytes = d.MaxDBBytes
	}
	if c.LockWait <= 0 {
		c.LockWait = d.LockWait
	}
	if c.TempDir == "" {
		c.TempDir = os.TempDir()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Volume is an open containerd root. Not safe for concurrent use.
type Volume struct {
	cfg Config
	// Path is the containerd root found (absolute); Layout names which KnownLayouts entry it is ("root" for the
	// volume's root itself, "custom" for Config.ContainerdRoot).
	Path, Layout string
	// MetaDB describes meta.db as read: its size and sha256.
	MetaDB DBInfo
	// SchemaVersion is meta.db's v1/version.
	SchemaVersion int64
	root          *os.Root // Path
	state         *metaState
}

// DBInfo is one database as it was read.
type DBInfo struct {
	Path   string `json:"path"` // relative to the containerd root
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Open finds the containerd root of cfg.Root and reads its meta.db.
func Open(cfg Config) (*Volume, error) {
	cfg = cfg.withDefaults()
	if cfg.Root == "" {
		return nil, errors.New("no volume root given")
	}
	abs, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Root, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory: give the directory where the node's volume is mounted", cfg.Root)
	}
	path, layout, err := findRoot(abs, cfg.ContainerdRoot)
	if err != nil {
		return nil, err
	}
	v := &Volume{cfg: cfg, Path: path, Layout: layout}
	if v.root, err = os.OpenRoot(path); err != nil {
		return nil, err
	}
	db, err := openBolt(filepath.Join(path, MetaDBPath), cfg.TempDir, cfg.MaxDBBytes, cfg.LockWait)
	if err != nil {
		v.root.Close()
		return nil, err
	}
	defer db.close()
	v.MetaDB = DBInfo{Path: MetaDBPath, Size: db.size, SHA256: db.sha256}
	if v.state, err = readMetaDB(db); err != nil {
		v.root.Close()
		return nil, err
	}
	v.SchemaVersion = v.state.SchemaVersion
	cfg.Logger.Info("containerd root", "path", path, "layout", layout, "namespaces", len(v.state.Namespaces), "meta_db_sha256", db.sha256)
	return v, nil
}

// Close releases the volume.
func (v *Volume) Close() error { return v.root.Close() }

// findRoot returns the containerd root under volRoot: explicit (relative to volRoot), or the one known layout that
// holds a meta.db.
func findRoot(volRoot, explicit string) (string, string, error) {
	if explicit != "" {
		rel := filepath.Clean("/" + explicit)[1:] // relative to the volume's root, never above it
		p := filepath.Join(volRoot, rel)
		if err := isContainerdRoot(p); err != nil {
			return "", "", fmt.Errorf("%w: --containerd-root %s (%s): %v", ErrNotContainerdRoot, explicit, p, err)
		}
		return p, "custom", nil
	}
	type found struct{ path, layout string }
	var hits []found
	candidates := append([]Layout{{"root", "."}}, KnownLayouts...)
	for _, l := range candidates {
		p := filepath.Join(volRoot, l.Dir)
		if isContainerdRoot(p) == nil {
			hits = append(hits, found{p, l.Name})
		}
	}
	switch len(hits) {
	case 1:
		return hits[0].path, hits[0].layout, nil
	case 0:
		if what := otherRuntime(volRoot); what != "" {
			return "", "", fmt.Errorf("%w: %s holds %s, not containerd's root: only containerd is supported", ErrUnsupported, volRoot, what)
		}
		var places []string
		for _, l := range candidates {
			places = append(places, filepath.Join(l.Dir, MetaDBPath))
		}
		return "", "", fmt.Errorf("%w: %s has no containerd metadata database at any of %s; give --containerd-root DIR (relative to --root) "+
			"if containerd's root is elsewhere", ErrNotContainerdRoot, volRoot, strings.Join(places, ", "))
	}
	var list []string
	for _, h := range hits {
		rel, _ := filepath.Rel(volRoot, h.path)
		list = append(list, rel+" ("+h.layout+")")
	}
	return "", "", fmt.Errorf("%s holds several containerd roots: %s; choose one with --containerd-root", volRoot, strings.Join(list, ", "))
}

func isContainerdRoot(p string) error {
	fi, err := os.Lstat(filepath.Join(p, MetaDBPath))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if _, derr := os.Stat(filepath.Join(p, ContentBlobDir)); derr == nil {
				return fmt.Errorf("a content store but no %s: the metadata database is missing", MetaDBPath)
			}
			return fmt.Errorf("no %s", MetaDBPath)
		}
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", MetaDBPath)
	}
	return nil
}

// otherRuntime names another container runtime's storage found under volRoot, "" when none.
func otherRuntime(volRoot string) string {
	for _, c := range []struct{ path, what string }{
		{"var/lib/containers/storage/overlay-containers", "CRI-O / Podman storage (var/lib/containers/storage)"},
		{"overlay-containers", "CRI-O / Podman storage (containers/storage)"},
		{"var/lib/docker/image", "Docker's own storage (var/lib/docker)"},
		{"image/overlay2", "Docker's own storage (/var/lib/docker)"},
	} {
		if _, err := os.Stat(filepath.Join(volRoot, c.path)); err == nil {
			return c.what
		}
	}
	return ""
}

// Namespaces returns what meta.db holds, by namespace.
func (v *Volume) Namespaces() []*Namespace { return v.state.Namespaces }

// Find returns the container id in namespace ns (any namespace when ns is empty). id may be a unique prefix of at
// least 4 characters, or the kubelet's "containerd://ID".
func (v *Volume) Find(ns, id string) (*Container, error) {
	id = strings.TrimPrefix(id, "containerd://")
	if id == "" {
		return nil, fmt.Errorf("%w: no container id given", ErrUnknownContainer)
	}
	var exact, prefixed []*Container
	var known []string
	searched := 0
	for _, n := range v.state.Namespaces {
		if ns != "" && n.Name != ns {
			continue
		}
		searched++
		for _, c := range n.Containers {
			known = append(known, n.Name+"/"+c.ID)
			switch {
			case c.ID == id:
				exact = append(exact, c)
			case len(id) >= 4 && strings.HasPrefix(c.ID, id):
				prefixed = append(prefixed, c)
			}
		}
	}
	if ns != "" && searched == 0 {
		var names []string
		for _, n := range v.state.Namespaces {
			names = append(names, n.Name)
		}
		return nil, fmt.Errorf("%w: no namespace %q in %s (its namespaces: %s)", ErrUnknownContainer, ns, v.metaDBPath(), strings.Join(names, ", "))
	}
	matches := exact
	if len(matches) == 0 {
		matches = prefixed
	}
	switch len(matches) {
	case 1:
		return matches[0], nil
	case 0:
		where := "any namespace"
		if ns != "" {
			where = "namespace " + ns
		}
		sort.Strings(known)
		hint := "it has no containers"
		if len(known) > 0 {
			shown := known
			if len(shown) > 10 {
				shown = append(shown[:10:10], fmt.Sprintf("and %d more", len(known)-10))
			}
			hint = "its containers: " + strings.Join(shown, ", ")
		}
		return nil, fmt.Errorf("%w: no container %q in %s of %s (%s; --list shows them all)", ErrUnknownContainer, id, where, v.metaDBPath(), hint)
	}
	var names []string
	for _, c := range matches {
		names = append(names, c.Namespace+"/"+c.ID)
	}
	return nil, fmt.Errorf("%w: %q matches %d containers (%s): give the whole id, or --namespace", ErrUnknownContainer, id, len(matches), strings.Join(names, ", "))
}

func (v *Volume) metaDBPath() string { return filepath.Join(v.Path, MetaDBPath) }

func (v *Volume) namespace(name string) *Namespace {
	for _, n := range v.state.Namespaces {
		if n.Name == name {
			return n
		}
	}
	return nil
}
