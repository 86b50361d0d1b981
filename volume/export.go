package volume

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/warren-dev/warren/collector"
	"github.com/warren-dev/warren/evidence"
)

// Archive paths of a volume-mode evidence.tar.
const (
	// FSPrefix holds the container's file system as it was on the disk: the image's files with the container's
	// changes applied, whiteouts resolved.
	FSPrefix = "container/fs"
	// DriftPrefix holds the container's own changes: DriftPrefix/changes.json lists every added, changed and deleted
	// path against the image, DriftPrefix/fs the added and changed files as the writable layer has them.
	DriftPrefix = collector.DriftPrefix
	// MetaPrefix holds what containerd knew: the container record (environment redacted), the image's index,
	// manifest and config as stored (named by digest, so their subjects' sha256 are the digests), the snapshot
	// chain and the layers.
	MetaPrefix = "volume"
)

// fsBuild is the container's file system and its drift, ready to be written.
type fsBuild struct {
	final   *fnode
	sources []source // final's layer indexes point into this; for overlayfs the writable layer is last
	changes []Change
	notes   []evidence.Skip
	// upperEvents is the writable layer's walk (overlayfs), kept for the drift's copies.
	upper source
}

// Change is one path the container changed against its image (drift/changes.json): the record the node mode
// writes too (collector.DriftChange).
type Change = collector.DriftChange

// Change kinds.
const (
	ChangeAdded    = collector.ChangeAdded
	ChangeChanged  = collector.ChangeChanged
	ChangeDeleted  = collector.ChangeDeleted
	ChangeCopiedUp = collector.ChangeCopiedUp
)

// build puts the container's file system together.
func (p *plan) build(ctx context.Context) (*fsBuild, error) {
	b := &fsBuild{sources: append([]source(nil), p.sources...)}
	native := p.snapshotter == SnapshotterNative
	var upperEv []*hashedEntry
	needHash := func(string) bool { return native }
	if p.upper != nil && !native {
		var err error
		if upperEv, err = collect(ctx, p.upper, func(string) bool { return true }); err != nil {
			return nil, fmt.Errorf("the container's writable layer %s: %w", p.upper.describe(), err)
		}
		// The image's version of what the container changed or deleted is hashed, for the drift.
		want, gone := map[string]bool{}, map[string]bool{}
		for _, e := range upperEv {
			switch {
			case e.kind == entryPut && e.hdr.Typeflag == tar.TypeReg:
				want[e.path] = true
			case e.kind == entryWhiteout || e.kind == entryOpaque:
				gone[e.path] = true
			}
		}
		needHash = func(p string) bool {
			if want[p] {
				return true
			}
			for a := p; a != ""; a = parentOf(a) {
				if gone[a] {
					return true
				}
			}
			return false
		}
	}
	image, err := p.buildImage(ctx, b, needHash)
	if err != nil {
		return nil, err
	}
	if native {
		final := newRoot()
		if p.upper != nil {
			ev, err := collect(ctx, p.upper, func(string) bool { return true })
			if err != nil {
				return nil, fmt.Errorf("the container's snapshot %s: %w", p.upper.describe(), err)
			}
			for _, e := range ev {
				if e.kind == entryPut {
					n := final.put(e.path, e.hdr, 0, e.ord)
					n.sum, n.notes = e.sum, e.notes
				}
			}
		}
		b.changes = diffTrees(image, final)
		b.final, b.sources, b.upper = final, []source{p.upper}, p.upper
		return b, nil
	}
	layer := len(b.sources)
	b.changes = overlayDrift(image, upperEv)
	for _, e := range upperEv {
		apply(image, e, layer)
	}
	b.final, b.upper = image, p.upper
	if p.upper != nil {
		b.sources = append(b.sources, p.upper)
	}
	return b, nil
}

// hashedEntry is an entry with its content's sha256 when it was hashed.
type hashedEntry struct {
	*entry
	sum string
}

func collect(ctx context.Context, s source, hashIt func(string) bool) ([]*hashedEntry, error) {
	var out []*hashedEntry
	err := s.walk(func(e *entry, open opener) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		h := &hashedEntry{entry: e}
		if e.kind == entryPut && e.hdr.Typeflag == tar.TypeReg && hashIt(e.path) {
			sum, err := hashOpen(open)
			if err != nil {
				return fmt.Errorf("%s: %w", e.path, err)
			}
			h.sum = sum
		}
		out = append(out, h)
		return nil
	})
	return out, err
}

func hashOpen(open opener) (string, error) {
	r, err := open()
	if err != nil {
		return "", err
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// apply applies one entry of layer to t.
func apply(t *fnode, e *hashedEntry, layer int) {
	switch e.kind {
	case entryPut:
		n := t.put(e.path, e.hdr, layer, e.ord)
		n.sum, n.notes = e.sum, e.notes
	case entryWhiteout:
		t.whiteout(e.path, layer)
	case entryOpaque:
		t.opaque(e.path, layer)
	}
}

// buildImage builds the image's file system from the layer sources. A blob whose digest does not match is read
// again from its snapshot directory when there is one (and said so), else the acquisition fails.
func (p *plan) buildImage(ctx context.Context, b *fsBuild, needHash func(string) bool) (*fnode, error) {
	for attempt := 0; ; attempt++ {
		t := newRoot()
		failed := -1
		var ferr error
		for i, src := range b.sources {
			if src == nil {
				continue
			}
			// A hard link of a layer tar is its target's file: it gets the target's header and hash (the target
			// precedes it in the tar). A target that was not hashed is hashed in a second read of the layer, when the
			// link's hash is needed.
			sums := map[string]string{}
			pending := map[string][]*fnode{}
			err := src.walk(func(e *entry, open opener) error {
				if err := ctx.Err(); err != nil {
					return err
				}
				h := &hashedEntry{entry: e}
				if e.kind == entryPut && e.hdr.Typeflag == tar.TypeReg && needHash(e.path) {
					sum, err := hashOpen(open)
					if err != nil {
						return fmt.Errorf("%s: %w", e.path, err)
					}
					h.sum, sums[e.path] = sum, sum
				}
				var target *fnode
				if e.kind == entryPut && e.hdr.Typeflag == tar.TypeLink {
					if target = t.lookup(e.hdr.Linkname); target != nil && target.hdr != nil && target.hdr.Typeflag == tar.TypeReg {
						h.sum = sums[e.hdr.Linkname]
					} else {
						target = nil
					}
				}
				apply(t, h, i)
				if target != nil {
					n := t.lookup(e.path)
					n.linked = target.hdr
					if n.sum == "" && needHash(e.path) {
						pending[e.hdr.Linkname] = append(pending[e.hdr.Linkname], n)
					}
				}
				return nil
			})
			if err == nil && len(pending) > 0 {
				err = src.walk(func(e *entry, open opener) error {
					if links := pending[e.path]; len(links) > 0 && e.kind == entryPut && e.hdr.Typeflag == tar.TypeReg {
						sum, err := hashOpen(open)
						if err != nil {
							return fmt.Errorf("%s: %w", e.path, err)
						}
						for _, n := range links {
							n.sum = sum
						}
					}
					return nil
				})
			}
			if err != nil {
				failed, ferr = i, err
				break
			}
		}
		if ferr == nil {
			return t, nil
		}
		if errors.Is(ferr, context.Canceled) || errors.Is(ferr, context.DeadlineExceeded) {
			return nil, ferr
		}
		// Only an overlayfs layer has a directory of its own to fall back on.
		if failed < len(p.layers) && len(b.sources) == len(p.layers) && p.snapshotter == SnapshotterOverlay {
			li := &p.layers[failed]
			if _, isBlob := b.sources[failed].(*blobLayer); isBlob && li.Snapshot != nil && li.Snapshot.Exists && attempt < len(p.layers) {
				b.sources[failed] = &dirLayer{root: p.rootOf(b.sources[failed]), abs: p.absOf(), dir: li.Snapshot.Dir, overlay: true}
				li.Source, li.Reason = "snapshot", joinReason(li.Reason, "the blob could not be used ("+ferr.Error()+")")
				continue
			}
		}
		return nil, fmt.Errorf("image layer %s: %w", b.sources[failed].describe(), ferr)
	}
}

func (p *plan) rootOf(s source) *os.Root {
	if bl, ok := s.(*blobLayer); ok {
		return bl.root
	}
	return s.(*dirLayer).root
}

func (p *plan) absOf() string { return p.absRoot }

// overlayDrift compares the overlayfs writable layer's entries with the image they sit on.
func overlayDrift(image *fnode, upper []*hashedEntry) []Change {
	var out []Change
	inUpper := map[string]bool{}
	var opaque []string
	for _, e := range upper {
		inUpper[e.path] = true
	}
	for _, e := range upper {
		switch e.kind {
		case entryOpaque:
			opaque = append(opaque, e.path)
		case entryWhiteout:
			old := image.lookup(e.path)
			if old == nil {
				out = append(out, Change{Path: escapePath(e.path), Change: ChangeDeleted, Type: "unknown",
					What: []string{"not in the image as read: a layer may be missing"}})
				continue
			}
			_ = old.walk(e.path, func(p string, n *fnode) error {
				out = append(out, deleted(p, n))
				return nil
			})
		case entryPut:
			if e.path == "" {
				continue // the root directory of the writable layer
			}
			old := image.lookup(e.path)
			if old == nil {
				out = append(out, changeOf(e.path, ChangeAdded, e.hdr, e.sum, nil))
				continue
			}
			what := differences(old, e.hdr, e.sum, true)
			switch {
			case len(what) > 0:
				c := changeOf(e.path, ChangeChanged, e.hdr, e.sum, what)
				c.ImageSize, c.ImageSHA256 = sizeOf(old), old.sum
				out = append(out, c)
			case e.hdr.Typeflag != tar.TypeDir:
				c := changeOf(e.path, ChangeCopiedUp, e.hdr, e.sum, nil)
				c.ImageSHA256 = old.sum
				out = append(out, c)
			}
		}
	}
	for _, d := range opaque {
		marked := false
		for i := range out {
			if out[i].Path == escapePath(d) && out[i].Type == "dir" {
				out[i].Opaque, marked = true, true
			}
		}
		old := image.lookup(d)
		if old == nil {
			continue
		}
		if !marked {
			c := changeOf(d, ChangeChanged, nodeHeader(old), "", []string{"opaque"})
			c.Opaque = true
			out = append(out, c)
		}
		for name, child := range old.children {
			cp := joinPath(d, name)
			_ = child.walk(cp, func(p string, n *fnode) error {
				if !inUpper[p] {
					out = append(out, deleted(p, n))
				}
				return nil
			})
		}
	}
	return sortChanges(out)
}

// diffTrees compares two whole trees (the native snapshotter: the container's snapshot against the image).
func diffTrees(image, final *fnode) []Change {
	var out []Change
	_ = final.walk("", func(p string, n *fnode) error {
		if p == "" {
			return nil
		}
		old := image.lookup(p)
		hdr := nodeHeader(n)
		switch {
		case old == nil:
			out = append(out, changeOf(p, ChangeAdded, hdr, n.sum, nil))
		default:
			if what := differences(old, hdr, n.sum, false); len(what) > 0 {
				c := changeOf(p, ChangeChanged, hdr, n.sum, what)
				c.ImageSize, c.ImageSHA256 = sizeOf(old), old.sum
				out = append(out, c)
			}
		}
		return nil
	})
	_ = image.walk("", func(p string, n *fnode) error {
		if p != "" && final.lookup(p) == nil {
			out = append(out, deleted(p, n))
		}
		return nil
	})
	return sortChanges(out)
}

// differences lists what differs between the image's node and the container's file (collector.DriftDifferences:
// the node mode compares by the same rules).
func differences(old *fnode, hdr *tar.Header, sum string, compareMtime bool) []string {
	return collector.DriftDifferences(nodeHeader(old), hdr, old.sum, sum, compareMtime)
}

func deleted(p string, n *fnode) Change {
	c := collector.DeletedDriftChange(p, nodeHeader(n), n.sum)
	c.ImageSize = sizeOf(n)
	return c
}

func changeOf(p, kind string, h *tar.Header, sum string, what []string) Change {
	return collector.NewDriftChange(p, kind, h, sum, what)
}

func sizeOf(n *fnode) int64 {
	if n.hdr != nil && n.hdr.Typeflag == tar.TypeReg {
		return n.hdr.Size
	}
	return 0
}

// nodeHeader is a node's header as a file system shows it: an implicit directory's is made up, a hard link of a
// layer tar has its target's (they are one file).
func nodeHeader(n *fnode) *tar.Header {
	if n.linked != nil {
		h := *n.linked
		h.Name = n.hdr.Name
		return &h
	}
	if n.hdr != nil {
		return n.hdr
	}
	return &tar.Header{Typeflag: tar.TypeDir, Mode: 0o755}
}

func typeName(h *tar.Header) string { return collector.DriftTypeName(h) }

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func sortChanges(cs []Change) []Change { return collector.SortDriftChanges(cs) }

// escapePath makes a file name an archive and JSON name (collector.EscapePath).
func escapePath(p string) string { return collector.EscapePath(p) }
