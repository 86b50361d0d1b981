package volume

import (
	"archive/tar"
	"sort"
	"strings"
)

// fnode is a file of a merged file system: which layer put it there and how.
type fnode struct {
	hdr *tar.Header // nil for an implicit directory (a parent no layer declared)
	// layer is the index of the source that put the node (the upper layer is the last); ord its place in that
	// source's walk. Whiteouts and opaque directories of a layer hide only what lower layers put.
	layer, ord int
	sum        string // sha256 (hex) of a regular file's content, when it was hashed
	// linked is, for a hard link of a layer tar, its target's header: the file the link is (same inode).
	linked   *tar.Header
	children map[string]*fnode
	notes    []string
}

func newRoot() *fnode { return &fnode{layer: -1, children: map[string]*fnode{}} }

func (n *fnode) isDir() bool { return n.hdr == nil || n.hdr.Typeflag == tar.TypeDir }

func (n *fnode) lookup(p string) *fnode {
	if p == "" {
		return n
	}
	cur := n
	for _, part := range strings.Split(p, "/") {
		if cur.children == nil {
			return nil
		}
		if cur = cur.children[part]; cur == nil {
			return nil
		}
	}
	return cur
}

// dirFor returns the directory that holds p, creating implicit directories (and replacing a non-directory that
// stands where a directory must, as extraction would).
func (n *fnode) dirFor(p string, layer int) (*fnode, string) {
	parts := strings.Split(p, "/")
	cur := n
	for _, part := range parts[:len(parts)-1] {
		next := cur.children[part]
		if next == nil || !next.isDir() {
			next = &fnode{layer: layer, ord: -1, children: map[string]*fnode{}}
			cur.children[part] = next
		}
		cur = next
	}
	return cur, parts[len(parts)-1]
}

// put adds or replaces p. A directory put over a directory keeps its children (layers merge); anything else
// replaces what was there.
func (n *fnode) put(p string, hdr *tar.Header, layer, ord int) *fnode {
	if p == "" {
		if hdr.Typeflag == tar.TypeDir {
			n.hdr, n.layer, n.ord = hdr, layer, ord
		}
		return n
	}
	dir, name := n.dirFor(p, layer)
	old := dir.children[name]
	nn := &fnode{hdr: hdr, layer: layer, ord: ord}
	if hdr.Typeflag == tar.TypeDir {
		if old != nil && old.isDir() {
			nn.children = old.children
		} else {
			nn.children = map[string]*fnode{}
		}
	}
	dir.children[name] = nn
	return nn
}

// whiteout removes p when a lower layer put it; it returns what was removed.
func (n *fnode) whiteout(p string, layer int) *fnode {
	if p == "" {
		return nil
	}
	parent := n.lookup(parentOf(p))
	if parent == nil || parent.children == nil {
		return nil
	}
	name := p[strings.LastIndexByte(p, '/')+1:]
	old := parent.children[name]
	if old == nil || old.layer >= layer {
		return nil
	}
	delete(parent.children, name)
	return old
}

// opaque removes from directory p everything lower layers put (at any depth), keeping what layer itself put.
func (n *fnode) opaque(p string, layer int) {
	d := n.lookup(p)
	if d == nil || !d.isDir() {
		return
	}
	var prune func(d *fnode)
	prune = func(d *fnode) {
		for name, c := range d.children {
			if c.layer < layer {
				delete(d.children, name)
			} else if c.isDir() {
				prune(c)
			}
		}
	}
	prune(d)
}

// walk visits every node under n in path order, parents first; p is "" for n.
func (n *fnode) walk(p string, fn func(p string, n *fnode) error) error {
	if err := fn(p, n); err != nil {
		return err
	}
	names := make([]string, 0, len(n.children))
	for name := range n.children {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		cp := name
		if p != "" {
			cp = p + "/" + name
		}
		if err := n.children[name].walk(cp, fn); err != nil {
			return err
		}
	}
	return nil
}

func parentOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}
