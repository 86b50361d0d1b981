package volume

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"runtime"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Snapshot is one snapshot of a container's chain, from its writable layer down to the image's first layer.
type Snapshot struct {
	Key    string `json:"key"`            // meta.db's key: the container's snapshot key, or a layer's chain id
	Name   string `json:"name"`           // the snapshotter's key (namespace/N/key)
	ID     uint64 `json:"id,omitempty"`   // the snapshotter's id: its directory is snapshots/<id>
	Kind   string `json:"kind,omitempty"` // active, committed, view
	Dir    string `json:"dir,omitempty"`  // relative to the containerd root
	Exists bool   `json:"exists"`         // whether Dir is on the volume
	// Link is the target of a snapshot directory that is a symbolic link (GKE keeps unpacked layers in a layer
	// cache and links them); Dir is then where it points on the volume.
	Link string `json:"link,omitempty"`
}

// LayerInfo is one image layer and where its files were read from.
type LayerInfo struct {
	Digest    string `json:"digest,omitempty"`
	DiffID    string `json:"diffID,omitempty"`
	ChainID   string `json:"chainID,omitempty"`
	MediaType string `json:"mediaType,omitempty"`
	Size      int64  `json:"size,omitempty"`
	// BlobPresent says whether the content store still has the layer's blob.
	BlobPresent bool `json:"blobPresent"`
	// Snapshot is the committed snapshot of the layer, when known.
	Snapshot *Snapshot `json:"snapshot,omitempty"`
	// Source is what the files were read from: "content" (the blob, digests checked), "snapshot" (the snapshot
	// directory), or "missing" (neither: the layer's files are not in the export).
	Source string `json:"source"`
	// Reason says why the source is not the blob, or what went wrong with it.
	Reason string `json:"reason,omitempty"`
}

// plan is how one container's file system is put together.
type plan struct {
	c           *Container
	ns          *Namespace
	snapshotter string
	snapDir     string // io.containerd.snapshotter.v1.<name>
	snapDB      DBInfo
	chain       []Snapshot // [0] is the container's writable snapshot
	image       *Image
	blobs       map[string][]byte // the image's index, manifest and config as read, by digest
	manifest    *ocispec.Manifest
	config      *ocispec.Image
	layers      []LayerInfo
	sources     []source // one per layer, nil where missing; for native, at most one (a whole tree)
	upper       source   // the container's writable layer (overlayfs) or whole tree (native); nil if missing
	notes       []string // what could not be read, for the statement
	absRoot     string   // the containerd root's path
}

// maxBlobBytes bounds an index, manifest or config read from the content store.
const maxBlobBytes = 16 << 20

func (v *Volume) plan(c *Container) (*plan, error) {
	p := &plan{c: c, ns: v.namespace(c.Namespace), snapshotter: c.Snapshotter, blobs: map[string][]byte{}}
	if p.snapshotter == "" {
		p.snapshotter = p.findSnapshotter()
	}
	switch p.snapshotter {
	case SnapshotterOverlay, SnapshotterNative:
	case "":
		return nil, fmt.Errorf("container %s has no snapshotter in meta.db and no snapshot under its key %q: nothing to export", c.ID, c.SnapshotKey)
	default:
		why, known := unsupportedSnapshotters[p.snapshotter]
		if !known {
			why = fmt.Sprintf("%q", p.snapshotter)
		}
		return nil, fmt.Errorf("%w: container %s uses the %s snapshotter; this reads the overlayfs and native snapshotters only", ErrUnsupported, c.ID, why)
	}
	p.snapDir = snapshotterDir + p.snapshotter
	infos, err := v.readSnapshotter(p)
	if err != nil {
		return nil, err
	}
	p.chainOf(infos, v)
	p.resolveImage(v)
	p.layerSources(v)
	return p, nil
}

// findSnapshotter finds which snapshotter holds the container's snapshot key (older records may lack the name).
func (p *plan) findSnapshotter() string {
	if p.ns == nil {
		return ""
	}
	for name, refs := range p.ns.Snapshots {
		if _, ok := refs[p.c.SnapshotKey]; ok {
			return name
		}
	}
	return ""
}

func (v *Volume) readSnapshotter(p *plan) (map[string]snapshotInfo, error) {
	dbPath := p.snapDir + "/metadata.db"
	if _, err := v.root.Stat(p.snapDir); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("container %s uses the %s snapshotter, but %s is not on the volume", p.c.ID, p.snapshotter, filepath.Join(v.Path, p.snapDir))
	}
	db, err := openBolt(filepath.Join(v.Path, dbPath), v.cfg.TempDir, v.cfg.MaxDBBytes, v.cfg.LockWait)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			p.notes = append(p.notes, dbPath+" is missing: snapshot directories found by meta.db's names alone are not known")
			return map[string]snapshotInfo{}, nil
		}
		return nil, err
	}
	defer db.close()
	p.snapDB = DBInfo{Path: dbPath, Size: db.size, SHA256: db.sha256}
	return readSnapshotterDB(db)
}

// chainOf follows the container's snapshot key to the image's first layer through meta.db (keys and parents),
// with the snapshotter's database giving each snapshot's directory.
func (p *plan) chainOf(infos map[string]snapshotInfo, v *Volume) {
	var refs map[string]SnapshotRef
	if p.ns != nil {
		refs = p.ns.Snapshots[p.snapshotter]
	}
	key := p.c.SnapshotKey
	seen := map[string]bool{}
	for key != "" && !seen[key] && len(p.chain) < 1024 {
		seen[key] = true
		ref, ok := refs[key]
		if !ok {
			p.notes = append(p.notes, fmt.Sprintf("snapshot %q is not in meta.db", key))
			break
		}
		s := Snapshot{Key: key, Name: ref.Name}
		if info, ok := infos[ref.Name]; ok {
			s.ID, s.Kind = info.ID, kindName(info.Kind)
			s.Dir = p.snapDir + "/" + info.dir()
			if p.snapshotter == SnapshotterOverlay {
				s.Dir += "/fs"
			}
			s.Dir, s.Link = v.resolveSnapshotDir(p.snapDir, s.Dir)
			if fi, err := v.root.Lstat(s.Dir); err == nil && fi.IsDir() {
				s.Exists = true
			}
		} else if len(infos) > 0 {
			p.notes = append(p.notes, fmt.Sprintf("snapshot %q (%s) is not in %s/metadata.db", key, ref.Name, p.snapDir))
		}
		p.chain = append(p.chain, s)
		key = ref.Parent
	}
}

// resolveSnapshotDir follows a snapshot directory that is a symbolic link, on the volume: a target naming the
// snapshotter's directory (an absolute path of the node, such as /var/lib/containerd/io.containerd.snapshotter.v1.
// overlayfs/layers/X) is taken from there, a relative one from the link's directory; the os.Root of the containerd
// root keeps either inside it.
func (v *Volume) resolveSnapshotDir(snapDir, dir string) (string, string) {
	fi, err := v.root.Lstat(dir)
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return dir, ""
	}
	target, err := v.root.Readlink(dir)
	if err != nil {
		return dir, ""
	}
	if i := strings.Index(target, snapDir+"/"); i >= 0 {
		return target[i:], target
	}
	if !filepath.IsAbs(target) {
		return filepath.ToSlash(filepath.Join(filepath.Dir(dir), target)), target
	}
	return dir, target // an absolute path elsewhere on the node: not followed
}

// resolveImage reads the container's image: its record, and from the content store the manifest for this
// container (of an index, the one whose layers make the container's snapshot chain) and its config.
func (p *plan) resolveImage(v *Volume) {
	if p.ns != nil {
		for _, img := range p.ns.Images {
			if img.Name == p.c.Image {
				p.image = img
			}
		}
	}
	if p.image == nil {
		if p.c.Image != "" {
			p.notes = append(p.notes, fmt.Sprintf("image %q is not in meta.db (removed after the container was created?): layers come from the snapshot chain alone", p.c.Image))
		}
		return
	}
	var parentKey string
	if len(p.chain) > 1 {
		parentKey = p.chain[1].Key
	}
	desc := p.image.Target
	for depth := 0; depth < 4; depth++ {
		data, err := v.readBlob(desc.Digest)
		if err != nil {
			p.notes = append(p.notes, fmt.Sprintf("image %s: %s %s: %v", p.image.Name, desc.MediaType, desc.Digest, err))
			return
		}
		p.blobs[desc.Digest] = data
		switch desc.MediaType {
		case ocispec.MediaTypeImageIndex, "application/vnd.docker.distribution.manifest.list.v2+json":
			var idx ocispec.Index
			if err := json.Unmarshal(data, &idx); err != nil {
				p.notes = append(p.notes, fmt.Sprintf("image index %s: %v", desc.Digest, err))
				return
			}
			next, why := p.pickManifest(v, idx, parentKey)
			if next == nil {
				p.notes = append(p.notes, fmt.Sprintf("image index %s: %s", desc.Digest, why))
				return
			}
			desc = Descriptor{MediaType: next.MediaType, Digest: string(next.Digest), Size: next.Size}
		case ocispec.MediaTypeImageManifest, "application/vnd.docker.distribution.manifest.v2+json":
			var m ocispec.Manifest
			if err := json.Unmarshal(data, &m); err != nil {
				p.notes = append(p.notes, fmt.Sprintf("image manifest %s: %v", desc.Digest, err))
				return
			}
			p.manifest = &m
			cfg, err := v.readBlob(string(m.Config.Digest))
			if err != nil {
				p.notes = append(p.notes, fmt.Sprintf("image config %s: %v", m.Config.Digest, err))
				return
			}
			p.blobs[string(m.Config.Digest)] = cfg
			var ic ocispec.Image
			if err := json.Unmarshal(cfg, &ic); err != nil {
				p.notes = append(p.notes, fmt.Sprintf("image config %s: %v", m.Config.Digest, err))
				return
			}
			p.config = &ic
			return
		default:
			p.notes = append(p.notes, fmt.Sprintf("image %s: unknown media type %q", p.image.Name, desc.MediaType))
			return
		}
	}
}

// pickManifest chooses an index's manifest: the one whose top layer's chain id is the container's parent snapshot,
// else the one for this machine's platform.
func (p *plan) pickManifest(v *Volume, idx ocispec.Index, parentKey string) (*ocispec.Descriptor, string) {
	var platform *ocispec.Descriptor
	for i := range idx.Manifests {
		d := &idx.Manifests[i]
		if d.Platform != nil && d.Platform.OS == "linux" && d.Platform.Architecture == runtime.GOARCH && platform == nil {
			platform = d
		}
		if parentKey == "" {
			continue
		}
		data, err := v.readBlob(string(d.Digest))
		if err != nil {
			continue
		}
		var m ocispec.Manifest
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		cfg, err := v.readBlob(string(m.Config.Digest))
		if err != nil {
			continue
		}
		var ic ocispec.Image
		if json.Unmarshal(cfg, &ic) != nil {
			continue
		}
		if ids := chainIDs(ic.RootFS.DiffIDs); len(ids) > 0 && ids[len(ids)-1] == parentKey {
			return d, ""
		}
	}
	if platform != nil {
		return platform, ""
	}
	return nil, "no manifest matches the container's snapshots or linux/" + runtime.GOARCH
}

// chainIDs are the OCI chain ids of a layer stack: ChainID(L0) = DiffID(L0), ChainID(Ln) = sha256(ChainID(Ln-1) +
// " " + DiffID(Ln)); containerd names each unpacked layer's committed snapshot by it.
func chainIDs[D ~string](diffIDs []D) []string {
	var out []string
	for i, d := range diffIDs {
		if i == 0 {
			out = append(out, string(d))
			continue
		}
		sum := sha256.Sum256([]byte(out[i-1] + " " + string(d)))
		out = append(out, "sha256:"+hex.EncodeToString(sum[:]))
	}
	return out
}

// readBlob reads a small blob (index, manifest, config) of the content store and checks its digest.
func (v *Volume) readBlob(dgst string) ([]byte, error) {
	p, err := blobPath(dgst)
	if err != nil {
		return nil, err
	}
	f, err := v.root.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("not in the content store (%s)", p)
		}
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxBlobBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxBlobBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxBlobBytes)
	}
	if !strings.HasPrefix(dgst, "sha256:") {
		return nil, fmt.Errorf("%w: digest algorithm of %s", ErrUnsupported, dgst)
	}
	sum := sha256.Sum256(data)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != dgst {
		return nil, fmt.Errorf("%w: the content store's copy has sha256 %s", errDigest, got)
	}
	return data, nil
}

// layerSources decides where each layer's files come from: the blob when the content store has it, else the
// layer's snapshot directory; and the container's own layer.
func (p *plan) layerSources(v *Volume) {
	bySnapKey := map[string]*Snapshot{}
	for i := range p.chain[min(1, len(p.chain)):] {
		s := &p.chain[1+i]
		bySnapKey[s.Key] = s
	}
	if len(p.chain) > 0 {
		top := p.chain[0]
		switch {
		case !top.Exists && top.Dir == "":
			p.notes = append(p.notes, fmt.Sprintf("the container's snapshot %q has no directory in the snapshotter's database: its writes are not in the export", top.Key))
		case !top.Exists:
			p.notes = append(p.notes, fmt.Sprintf("the container's writable layer %s is not on the volume: its writes are not in the export", top.Dir))
		default:
			p.upper = &dirLayer{root: v.root, abs: v.Path, dir: top.Dir, overlay: p.snapshotter == SnapshotterOverlay}
		}
	}
	if p.manifest != nil && p.config != nil && len(p.manifest.Layers) == len(p.config.RootFS.DiffIDs) {
		ids := chainIDs(p.config.RootFS.DiffIDs)
		for i, l := range p.manifest.Layers {
			li := LayerInfo{Digest: string(l.Digest), DiffID: string(p.config.RootFS.DiffIDs[i]), ChainID: ids[i], MediaType: l.MediaType, Size: l.Size}
			li.Snapshot = bySnapKey[ids[i]]
			if bp, err := blobPath(li.Digest); err == nil {
				if fi, err := v.root.Stat(bp); err == nil && fi.Mode().IsRegular() {
					li.BlobPresent = true
				}
			}
			p.layers = append(p.layers, li)
		}
	} else {
		if p.manifest != nil {
			p.notes = append(p.notes, "the image's manifest and config disagree on the number of layers: layers come from the snapshot chain alone")
		}
		// No image to go by: the committed snapshots of the chain, lowest first.
		for i := len(p.chain) - 1; i >= 1; i-- {
			s := p.chain[i]
			p.layers = append(p.layers, LayerInfo{ChainID: s.Key, Snapshot: &p.chain[i]})
		}
	}
	if p.snapshotter == SnapshotterNative {
		p.nativeSources(v)
		return
	}
	for i := range p.layers {
		li := &p.layers[i]
		var src source
		if li.BlobPresent {
			comp, err := compressionOf(li.MediaType)
			if err == nil {
				src = &blobLayer{root: v.root, digest: li.Digest, diffID: li.DiffID, compression: comp}
				li.Source = "content"
			} else {
				li.Reason = err.Error()
			}
		} else if li.Digest != "" {
			li.Reason = "the content store no longer has the blob (discarded after unpacking?)"
		}
		if src == nil {
			switch {
			case li.Snapshot != nil && li.Snapshot.Exists:
				src = &dirLayer{root: v.root, abs: v.Path, dir: li.Snapshot.Dir, overlay: true}
				li.Source = "snapshot"
			case li.Snapshot != nil && li.Snapshot.Dir != "":
				li.Source = "missing"
				li.Reason = joinReason(li.Reason, "its snapshot directory "+li.Snapshot.Dir+" is not on the volume")
			default:
				li.Source = "missing"
				li.Reason = joinReason(li.Reason, "no snapshot of it is known")
			}
		}
		p.sources = append(p.sources, src)
	}
}

// nativeSources: the native snapshotter keeps every snapshot as a whole tree, so the image is either every layer
// blob, or the tree of the container's parent snapshot.
func (p *plan) nativeSources(v *Volume) {
	all := len(p.layers) > 0
	for _, li := range p.layers {
		if _, err := compressionOf(li.MediaType); !li.BlobPresent || err != nil {
			all = false
		}
	}
	if all {
		for i := range p.layers {
			li := &p.layers[i]
			comp, _ := compressionOf(li.MediaType)
			p.sources = append(p.sources, &blobLayer{root: v.root, digest: li.Digest, diffID: li.DiffID, compression: comp})
			li.Source = "content"
		}
		return
	}
	var parent *Snapshot
	if len(p.chain) > 1 {
		parent = &p.chain[1]
	}
	for i := range p.layers {
		li := &p.layers[i]
		li.Source, li.Reason = "missing", joinReason(li.Reason, "not every layer blob is in the content store")
		if parent != nil && parent.Exists {
			li.Source, li.Reason = "snapshot", joinReason(li.Reason, "the image is read from the parent snapshot's whole tree "+parent.Dir)
		}
	}
	if parent != nil && parent.Exists {
		p.sources = []source{&dirLayer{root: v.root, abs: v.Path, dir: parent.Dir}}
	} else if len(p.layers) > 0 {
		p.notes = append(p.notes, "the image's files cannot be read: neither every layer blob nor the parent snapshot's tree is on the volume; the drift lists every file as added")
	}
}

func joinReason(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
