package volume

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/warren-dev/warren/collector"
	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/internal/bytesize"
)

// Mode is the statement's mode of a volume acquisition.
const Mode = "volume"

// Methods: where the image's files came from.
const (
	MethodContent  = "content"          // every layer from the content store's blobs
	MethodSnapshot = "snapshot"         // every layer from the snapshotter's directories
	MethodMixed    = "content+snapshot" // some of each
)

// AcquireOptions configures Acquire.
type AcquireOptions struct {
	// Store and Signer receive and sign the evidence (required).
	Store  evidence.Store
	Signer *evidence.Signer
	// Case, Examiner, Cluster and Node go into the statement as given (offline, nothing tells the cluster's or the
	// node's name for sure).
	Case, Examiner, Cluster, Node string
	// RedactEnv are more patterns of environment variable names whose values are redacted in the container's
	// record (the runtime spec's environment), besides collector.DefaultRedactEnv.
	RedactEnv []*regexp.Regexp
	// Version is warren's version, for the statement.
	Version string
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Progress, when set, is called with the archive's size as it grows.
	Progress func(written int64)
}

// Result is what Acquire wrote.
type Result struct {
	Dir       string // the target's directory in the store
	Statement *evidence.Statement
	Method    string
	Changes   []Change
	Layers    []LayerInfo
	Chain     []Snapshot
	Skipped   []evidence.Skip
	// Bytes is the size of evidence.tar; FileBytes the file content in it.
	Bytes, FileBytes int64
	Duration         time.Duration
}

// Acquire exports container c's file system, its drift and what containerd knew about it into the store as one
// target (evidence.tar and its signed statement, DESIGN.md's layout), and adds it to the store's acquisition.json.
func (v *Volume) Acquire(ctx context.Context, c *Container, opts AcquireOptions) (*Result, error) {
	if opts.Store == nil || opts.Signer == nil {
		return nil, errors.New("volume: Acquire needs a Store and a Signer")
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	started := now().UTC()
	t0 := time.Now()
	p, err := v.plan(c)
	if err != nil {
		return nil, err
	}
	p.absRoot = v.Path
	ns, pod, name := TargetNames(c)
	dir, err := evidence.TargetDir(ns, pod, name)
	if err != nil {
		return nil, err
	}
	if err := v.checkDir(ctx, opts, dir, c); err != nil {
		return nil, err
	}
	b, err := p.build(ctx)
	if err != nil {
		return nil, err
	}
	res := &Result{Dir: dir, Layers: p.layers, Chain: p.chain, Changes: b.changes, Method: p.method()}
	res.Skipped = p.skips()

	tw, err := evidence.BeginTarget(ctx, opts.Store, dir)
	if err != nil {
		return nil, err
	}
	finished := false
	defer func() {
		if !finished {
			tw.Abandon()
		}
	}()
	w := &writer{a: tw.Archive(), progress: opts.Progress, tempDir: v.cfg.TempDir}
	redactor := collector.NewRedactor(opts.RedactEnv)
	if err := w.meta(p, redactor); err != nil {
		return nil, err
	}
	if err := w.fs(ctx, b); err != nil {
		return nil, err
	}
	if err := w.drift(ctx, b); err != nil {
		return nil, err
	}
	res.Skipped = append(res.Skipped, w.skipped...)
	res.FileBytes = w.fileBytes

	pred := p.predicate(v, opts, res, c)
	pred.StartedOn, pred.FinishedOn = started, now().UTC()
	st, err := tw.Finish(ctx, opts.Signer, pred)
	if err != nil {
		return nil, err
	}
	finished = true
	res.Statement, res.Bytes, res.Duration = st, st.Predicate.Archive.Size, time.Since(t0)
	if err := addToIndex(ctx, opts, res, c, ns, pod, name); err != nil {
		return nil, err
	}
	return res, nil
}

// TargetNames are the namespace, pod and container parts of a container's directory in the evidence layout: the
// Kubernetes names from the labels the CRI plugin sets (io.kubernetes.pod.namespace, io.kubernetes.pod.name,
// io.kubernetes.container.name; a pod's sandbox container is "sandbox"), else containerd.<namespace>/<id>/<id>. A
// "." cannot appear in a Kubernetes namespace, so the second form never meets a pod's directory. A part that is not
// a Kubernetes name (upper case, '_', too long) becomes "id-" and 16 hex digits of its sha256.
func TargetNames(c *Container) (namespace, pod, container string) {
	l := c.Labels
	ns, podName, ctr := l["io.kubernetes.pod.namespace"], l["io.kubernetes.pod.name"], l["io.kubernetes.container.name"]
	if ctr == "" && l["io.cri-containerd.kind"] == "sandbox" {
		ctr = "sandbox"
	}
	if ns != "" && podName != "" && ctr != "" {
		if _, err := evidence.TargetDir(ns, podName, ctr); err == nil {
			return ns, podName, ctr
		}
	}
	id := nameOrHash(c.ID)
	return nameOrHash("containerd." + c.Namespace), id, id
}

var labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)

func nameOrHash(s string) string {
	if labelRE.MatchString(s) && !strings.Contains(s, "..") {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return "id-" + hex.EncodeToString(sum[:8])
}

// checkDir refuses to replace another container's evidence: two containers can share Kubernetes names (a restarted
// container and its predecessor).
func (v *Volume) checkDir(ctx context.Context, opts AcquireOptions, dir string, c *Container) error {
	keys, err := evidence.NewKeys(opts.Signer.Public())
	if err != nil {
		return err
	}
	rep := evidence.VerifyTarget(ctx, opts.Store, dir, keys)
	if rep.Statement == nil {
		return nil
	}
	if id := rep.Statement.Predicate.Target.ContainerID; id != "" && id != "containerd://"+c.ID {
		return fmt.Errorf("%s already holds the evidence of container %s: acquire %s into another --out", opts.Store.Location(dir), id, c.ID)
	}
	return nil
}

func (p *plan) method() string {
	content, snap := 0, 0
	for _, l := range p.layers {
		switch l.Source {
		case "content":
			content++
		case "snapshot":
			snap++
		}
	}
	switch {
	case snap == 0 && content > 0:
		return MethodContent
	case content == 0 && snap > 0:
		return MethodSnapshot
	case content > 0:
		return MethodMixed
	}
	return MethodSnapshot
}

func (p *plan) skips() []evidence.Skip {
	var out []evidence.Skip
	for _, l := range p.layers {
		if l.Source == "missing" {
			name := l.Digest
			if name == "" {
				name = l.ChainID
			}
			out = append(out, evidence.Skip{Path: "layer " + name, Reason: "not-found", Detail: l.Reason})
		}
	}
	for _, n := range p.notes {
		out = append(out, evidence.Skip{Path: MetaPrefix, Reason: "not-found", Detail: n})
	}
	if os.Geteuid() != 0 && p.snapshotter == SnapshotterOverlay {
		out = append(out, evidence.Skip{Path: "trusted.overlay.opaque", Reason: "permission",
			Detail: "not run as root: the trusted.* attributes that mark overlayfs opaque directories cannot be read, so a directory the container replaced may show the image's old entries too"})
	}
	return out
}

func (p *plan) predicate(v *Volume, opts AcquireOptions, res *Result, c *Container) evidence.Predicate {
	ns, pod, name := TargetNames(c)
	pred := evidence.Predicate{
		Case: opts.Case, Examiner: opts.Examiner, AcquisitionID: acquisitionID(v.MetaDB.SHA256, c),
		Target: evidence.Target{Cluster: opts.Cluster, Namespace: ns, Pod: pod, PodUID: c.Labels["io.kubernetes.pod.uid"], Container: name,
			ContainerID: "containerd://" + c.ID, Image: c.Image, Node: opts.Node},
		Profile: "full", Mode: Mode, Method: res.Method,
		Skipped:  res.Skipped,
		Requests: []evidence.Request{},
		Acquirer: evidence.Acquirer{Name: "warren", Version: opts.Version},
	}
	if p.image != nil {
		pred.Target.ImageID = p.image.Target.Digest
	}
	if res.Method != MethodContent {
		var why []string
		for _, l := range p.layers {
			if l.Source != "content" && l.Reason != "" {
				why = append(why, shortDigest(l.Digest)+": "+l.Reason)
			}
		}
		pred.MethodReason = strings.Join(why, "; ")
	}
	rel, _ := filepath.Rel(mustAbs(v.cfg.Root), v.Path)
	vs := &evidence.VolumeSource{Root: mustAbs(v.cfg.Root), ContainerdRoot: rel, Layout: v.Layout, Namespace: c.Namespace,
		Snapshotter: p.snapshotter, SnapshotKey: c.SnapshotKey,
		Databases: []evidence.VolumeDatabase{{Path: v.MetaDB.Path, Size: v.MetaDB.Size, SHA256: v.MetaDB.SHA256}}}
	if p.snapDB.Path != "" {
		vs.Databases = append(vs.Databases, evidence.VolumeDatabase{Path: p.snapDB.Path, Size: p.snapDB.Size, SHA256: p.snapDB.SHA256})
	}
	for _, l := range p.layers {
		vl := evidence.VolumeLayer{Digest: l.Digest, DiffID: l.DiffID, ChainID: l.ChainID, Source: l.Source, Reason: l.Reason}
		if l.Snapshot != nil {
			vl.SnapshotDir = l.Snapshot.Dir
		}
		vs.Layers = append(vs.Layers, vl)
	}
	for _, ch := range res.Changes {
		switch ch.Change {
		case ChangeAdded:
			vs.Drift.Added++
		case ChangeChanged:
			vs.Drift.Changed++
		case ChangeDeleted:
			vs.Drift.Deleted++
		case ChangeCopiedUp:
			vs.Drift.CopiedUp++
		}
	}
	pred.Volume = vs
	return pred
}

// acquisitionID names a volume acquisition after the database state and the container, so a second export of the
// same snapshot of a disk has the same id.
func acquisitionID(metaSHA string, c *Container) string {
	sum := sha256.Sum256([]byte(metaSHA + "\x00" + c.Namespace + "\x00" + c.ID))
	return "vol-" + hex.EncodeToString(sum[:6])
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func mustAbs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// addToIndex adds the target to DIR/acquisition.json, keeping the targets already listed there.
func addToIndex(ctx context.Context, opts AcquireOptions, res *Result, c *Container, ns, pod, name string) error {
	idx, err := evidence.ReadIndex(ctx, opts.Store)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		idx = &evidence.Index{AcquisitionID: res.Statement.Predicate.AcquisitionID, Case: opts.Case, Examiner: opts.Examiner,
			Cluster: opts.Cluster, Profile: "full", StartedOn: res.Statement.Predicate.StartedOn,
			Acquirer: evidence.Acquirer{Name: "warren", Version: opts.Version}}
	case err != nil:
		return fmt.Errorf("%s: %v: acquire into another --out", opts.Store.Location(evidence.IndexName), err)
	}
	p := res.Statement.Predicate
	t := evidence.IndexTarget{Namespace: ns, Pod: pod, Container: name, Dir: res.Dir, Result: evidence.ResultAcquired,
		Mode: Mode, Method: res.Method, Files: p.Archive.Files, Bytes: p.Archive.Size, SHA256: p.Archive.SHA256,
		Skipped: len(p.Skipped), StartedOn: p.StartedOn, FinishedOn: p.FinishedOn, Reason: "containerd://" + c.ID + " from " + p.Volume.Root}
	replaced := false
	for i := range idx.Targets {
		if idx.Targets[i].Dir == res.Dir {
			idx.Targets[i], replaced = t, true
		}
	}
	if !replaced {
		idx.Targets = append(idx.Targets, t)
	}
	idx.FinishedOn = p.FinishedOn
	return evidence.WriteIndex(ctx, opts.Store, idx)
}

// writer writes the archive's entries.
type writer struct {
	a         *evidence.Archive
	progress  func(int64)
	fileBytes int64
	skipped   []evidence.Skip
	dirsDone  map[string]bool
	tempDir   string // hard-link targets kept aside (Config.TempDir)
}

func (w *writer) entry(hdr *tar.Header, body io.Reader) error {
	if body == nil {
		body = bytes.NewReader(nil)
	}
	f, err := w.a.WriteEntry(hdr, body)
	if err != nil {
		return err
	}
	w.fileBytes += f.Size
	if w.progress != nil {
		w.progress(w.a.Written())
	}
	return nil
}

func (w *writer) json(name string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	return w.entry(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0)}, bytes.NewReader(data))
}

func (w *writer) mkdir(name string) error {
	if w.dirsDone == nil {
		w.dirsDone = map[string]bool{}
	}
	if w.dirsDone[name] {
		return nil
	}
	w.dirsDone[name] = true
	return w.entry(&tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}, nil)
}

// meta writes volume/: the container record (environment redacted), the image's blobs as stored, the snapshot
// chain and the layers.
func (w *writer) meta(p *plan, r *collector.Redactor) error {
	if err := w.mkdir(MetaPrefix); err != nil {
		return err
	}
	c := *p.c
	var redacted []string
	if c.Spec != nil {
		c.Spec, redacted = redactJSON(c.Spec, r)
	}
	if len(c.Extensions) > 0 {
		ext := map[string]Any{}
		for k, a := range c.Extensions {
			if a.JSON != nil {
				var names []string
				a.JSON, names = redactJSON(a.JSON, r)
				redacted = append(redacted, names...)
			}
			ext[k] = a
		}
		c.Extensions = ext
	}
	if err := w.json(MetaPrefix+"/container.json", &c); err != nil {
		return err
	}
	if len(redacted) > 0 {
		w.skipped = append(w.skipped, evidence.Skip{Path: MetaPrefix + "/container.json", Reason: "redacted",
			Detail: "environment values of " + strings.Join(dedupe(redacted), ", ")})
	}
	if p.image != nil {
		if err := w.json(MetaPrefix+"/image.json", p.image); err != nil {
			return err
		}
	}
	if len(p.blobs) > 0 {
		if err := w.mkdir(MetaPrefix + "/blobs"); err != nil {
			return err
		}
		var digests []string
		for d := range p.blobs {
			digests = append(digests, d)
		}
		sort.Strings(digests)
		for _, d := range digests {
			data := p.blobs[d]
			name := MetaPrefix + "/blobs/" + strings.ReplaceAll(d, ":", "-") + ".json"
			if err := w.entry(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0)}, bytes.NewReader(data)); err != nil {
				return err
			}
		}
	}
	if err := w.json(MetaPrefix+"/snapshots.json", p.chain); err != nil {
		return err
	}
	return w.json(MetaPrefix+"/layers.json", p.layers)
}

// fs writes container/fs: every directory first, then every other file, source by source in the order the sources
// were layered, each file from the source that has the final version of it.
func (w *writer) fs(ctx context.Context, b *fsBuild) error {
	if err := w.mkdir("container"); err != nil {
		return err
	}
	need := make([]int, len(b.sources))
	links := make([]map[string]bool, len(b.sources)) // per tar layer: hard-link targets to keep aside
	err := b.final.walk("", func(p string, n *fnode) error {
		if n.isDir() {
			h := *nodeHeader(n)
			h.Name = fsName(p) + "/"
			h.Size = 0
			if n.hdr == nil {
				h.ModTime = time.Unix(0, 0)
			}
			return w.entry(&h, nil)
		}
		if n.layer >= 0 && n.layer < len(need) {
			need[n.layer]++
			if n.hdr.Typeflag == tar.TypeLink {
				if links[n.layer] == nil {
					links[n.layer] = map[string]bool{}
				}
				links[n.layer][n.hdr.Linkname] = true
			}
		}
		for _, note := range n.notes {
			w.skipped = append(w.skipped, evidence.Skip{Path: fsName(p), Reason: "note", Detail: note})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i, src := range b.sources {
		if src == nil || need[i] == 0 {
			continue
		}
		if err := w.fsFrom(ctx, b.final, i, src, links[i]); err != nil {
			return fmt.Errorf("%s: %w", src.describe(), err)
		}
	}
	return nil
}

// fsFrom writes the files whose final version is in source i (a second read of it). The targets of the layer's
// hard links are kept aside in temporary files as they pass, so each link can be stored as a copy of its target.
func (w *writer) fsFrom(ctx context.Context, final *fnode, i int, src source, linkTargets map[string]bool) error {
	sp := &spool{files: map[string]*spooled{}, tempDir: w.tempDir}
	defer sp.close()
	return w.walkFrom(ctx, final, i, src, linkTargets, sp)
}

// spool holds copies of hard-link targets, in a temporary directory made on first use.
type spool struct {
	tempDir string // where dir is made
	dir     string
	files   map[string]*spooled
}

func (s *spool) get(p string) (*spooled, error) {
	if f := s.files[p]; f != nil {
		return f, nil
	}
	if s.dir == "" {
		d, err := os.MkdirTemp(s.tempDir, "warren-volume-links-")
		if err != nil {
			return nil, err
		}
		s.dir = d
	}
	f, err := os.CreateTemp(s.dir, "link-")
	if err != nil {
		return nil, err
	}
	s.files[p] = &spooled{f: f}
	return s.files[p], nil
}

func (s *spool) close() {
	for _, f := range s.files {
		f.f.Close()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

type spooled struct {
	f   *os.File
	hdr tar.Header
}

func (w *writer) walkFrom(ctx context.Context, final *fnode, i int, src source, linkTargets map[string]bool, sp *spool) error {
	return src.walk(func(e *entry, open opener) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.kind != entryPut || e.hdr.Typeflag == tar.TypeDir {
			return nil
		}
		n := final.lookup(e.path)
		isFinal := n != nil && n.layer == i && n.ord == e.ord
		keep := e.hdr.Typeflag == tar.TypeReg && linkTargets[e.path]
		if !isFinal && !keep {
			return nil
		}
		h := *e.hdr
		h.Name = fsName(e.path)
		switch h.Typeflag {
		case tar.TypeReg:
			r, err := open()
			if err != nil {
				return err
			}
			defer r.Close()
			var body io.Reader = r
			if keep {
				s, err := sp.get(e.path)
				if err != nil {
					return err
				}
				if _, err := s.f.Seek(0, io.SeekStart); err != nil {
					return err
				}
				if err := s.f.Truncate(0); err != nil {
					return err
				}
				s.hdr = h
				body = io.TeeReader(r, s.f)
			}
			if !isFinal {
				_, err := io.Copy(io.Discard, body)
				return err
			}
			return w.entry(&h, body)
		case tar.TypeLink:
			// A hard link of a layer tar becomes a copy of its target's bytes: the link's own path gets a subject.
			s := sp.files[e.hdr.Linkname]
			if s == nil {
				h.Linkname = fsName(e.hdr.Linkname)
				w.skipped = append(w.skipped, evidence.Skip{Path: h.Name, Reason: "note",
					Detail: "a hard link to " + escapePath(e.hdr.Linkname) + ", which its layer does not hold: stored as a link"})
				return w.entry(&h, nil)
			}
			size, err := s.f.Seek(0, io.SeekEnd)
			if err != nil {
				return err
			}
			if _, err := s.f.Seek(0, io.SeekStart); err != nil {
				return err
			}
			lh := s.hdr
			lh.Name, lh.Size = h.Name, size
			return w.entry(&lh, s.f)
		default:
			if h.Typeflag == tar.TypeSymlink || h.Typeflag == tar.TypeChar || h.Typeflag == tar.TypeBlock || h.Typeflag == tar.TypeFifo {
				h.Size = 0
				return w.entry(&h, nil)
			}
			return nil // a socket: listed in the notes
		}
	})
}

// drift writes drift/changes.json and, for every added or changed regular file, its bytes as the writable layer
// has them under drift/fs.
func (w *writer) drift(ctx context.Context, b *fsBuild) error {
	if err := w.mkdir(DriftPrefix); err != nil {
		return err
	}
	up, _ := b.upper.(*dirLayer)
	if up != nil {
		if err := w.mkdir(DriftPrefix + "/fs"); err != nil {
			return err
		}
		for i := range b.changes {
			c := &b.changes[i]
			if (c.Change != ChangeAdded && c.Change != ChangeChanged) || c.Type != "file" {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			raw, ok := collector.UnescapeName(strings.ReplaceAll(c.Path, "%5C", `\`))
			if !ok {
				continue
			}
			if err := w.driftFile(up, raw, c); err != nil {
				return err
			}
		}
	}
	return w.json(DriftPrefix+"/changes.json", b.changes)
}

func (w *writer) driftFile(up *dirLayer, rel string, c *Change) error {
	name := up.dir + "/" + rel
	fi, err := up.root.Lstat(name)
	if err != nil || !fi.Mode().IsRegular() {
		w.skipped = append(w.skipped, evidence.Skip{Path: DriftPrefix + "/fs/" + c.Path, Reason: "not-found", Detail: fmt.Sprint(err)})
		return nil
	}
	hdr, _, err := up.header(name, rel, fi)
	if err != nil {
		return err
	}
	stripOverlayXattrs(hdr)
	r, err := openRegular(up.root, name, nil)
	if err != nil {
		return err
	}
	defer r.Close()
	hdr.Name = DriftPrefix + "/fs/" + c.Path
	if err := w.entry(hdr, r); err != nil {
		return err
	}
	c.Archived = hdr.Name
	return nil
}

// fsName is a file's archive name under container/fs.
func fsName(p string) string {
	if p == "" {
		return FSPrefix
	}
	return FSPrefix + "/" + escapePath(p)
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// redactJSON redacts environment values in a JSON document: in any object, the arrays named env, Env or envs, of
// "NAME=VALUE" strings (the OCI runtime spec) or {"key","value"} objects (CRI's container config). It returns the
// document and the names redacted.
func redactJSON(raw json.RawMessage, r *collector.Redactor) (json.RawMessage, []string) {
	var doc any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return raw, nil
	}
	var names []string
	var walk func(v any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			for k, val := range t {
				if arr, ok := val.([]any); ok && (k == "env" || k == "Env" || k == "envs") {
					for i, el := range arr {
						switch e := el.(type) {
						case string:
							if n, val, ok := strings.Cut(e, "="); ok && r.Match(n, val) {
								arr[i] = n + "=" + collector.RedactedValue
								names = append(names, n)
							}
						case map[string]any:
							n, _ := e["key"].(string)
							val, _ := e["value"].(string)
							if n != "" && r.Match(n, val) {
								e["value"] = collector.RedactedValue
								names = append(names, n)
							}
						}
					}
					continue
				}
				walk(val)
			}
		case []any:
			for _, el := range t {
				walk(el)
			}
		}
	}
	walk(doc)
	if len(names) == 0 {
		return raw, nil
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return raw, nil
	}
	return out, names
}

// ExportConfig is an export of one container of a node's volume as evidence (`warren acquire volume --container`).
type ExportConfig struct {
	// Volume is the volume to open.
	Volume Config
	// Namespace is the container's containerd namespace; "": the one that has it. Container is its id, a unique
	// prefix of it, or containerd://ID.
	Namespace, Container string
	// Out is the output directory (evidence's layout; created if missing).
	Out string
	// SigningKeyFile is the examiner's key (signing.key of warren keygen), which signs the statement.
	SigningKeyFile string
	// Acquire sets what goes into the statement (Case, Examiner, Cluster, Node, RedactEnv, Version); Export sets its
	// Store, Signer and Progress.
	Acquire AcquireOptions
	// Progress, when not nil, gets a line every ProgressEvery while the archive grows.
	Progress io.Writer
}

// ProgressEvery is how often Export reports the archive's growth on ExportConfig.Progress.
const ProgressEvery = 5 * time.Second

// Export opens the volume, finds the container, and acquires it into cfg.Out (Volume.Acquire), then writes what it
// wrote to w: the archive, its size and digest, where the image layers came from, the drift, what was skipped, and
// how to verify it. An export that ctx ends leaves nothing complete behind, and says so.
func Export(ctx context.Context, cfg ExportConfig, w io.Writer) error {
	v, err := Open(cfg.Volume)
	if err != nil {
		return err
	}
	defer v.Close()
	c, err := v.Find(cfg.Namespace, cfg.Container)
	if err != nil {
		return err
	}
	opts := cfg.Acquire
	if opts.Signer, err = evidence.LoadSigner(cfg.SigningKeyFile); err != nil {
		return err
	}
	store, err := evidence.NewLocalStore(cfg.Out)
	if err != nil {
		return err
	}
	opts.Store = store
	start := time.Now()
	last := start
	if cfg.Progress != nil {
		// The callback runs in the goroutine writing the archive.
		opts.Progress = func(written int64) {
			if now := time.Now(); now.Sub(last) >= ProgressEvery {
				last = now
				fmt.Fprintf(cfg.Progress, "%s: %s written in %s\n", c.ID, bytesize.Format(written), now.Sub(start).Round(time.Second))
			}
		}
	}
	res, err := v.Acquire(ctx, c, opts)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("interrupted: nothing complete was written for %s", c.ID)
		}
		return err
	}
	p := res.Statement.Predicate
	fmt.Fprintf(w, "acquired containerd://%s (%s) from %s\n", c.ID, c.Image, v.Path)
	fmt.Fprintf(w, "  %s: %d files, %s, sha256 %s, in %s\n", store.Location(res.Dir+"/"+evidence.ArchiveName), p.Archive.Files,
		bytesize.Format(p.Archive.Size), p.Archive.SHA256, time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(w, "  image layers from %s; drift: %d added, %d changed, %d deleted (%s)\n", res.Method,
		p.Volume.Drift.Added, p.Volume.Drift.Changed, p.Volume.Drift.Deleted, DriftPrefix+"/changes.json")
	for _, s := range p.Skipped {
		fmt.Fprintf(w, "  skipped %s: %s: %s\n", s.Path, s.Reason, s.Detail)
	}
	fmt.Fprintf(w, "check it with: warren acquire verify %s --key PUB\n", cfg.Out)
	return nil
}
