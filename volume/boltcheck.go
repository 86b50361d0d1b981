package volume

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
)

// checkBolt checks the page structure of a bbolt database image before bbolt reads it: the meta page bbolt will
// use, and every page reachable from its root bucket (in bounds of the file, of the type its parent expects, every
// element, key and value inside its page, no page reached twice, so no cycle). bbolt trusts its file: on a corrupt
// one it can index out of range (a panic, which the caller recovers), fault on a page past the end of the file
// (SIGBUS: a panic only under debug.SetPanicOnFault), or recurse for ever through a page that points at an ancestor
// (a stack overflow, which nothing can recover). This walk is what keeps the last one from happening.
//
// The format (go.etcd.io/bbolt, internal/common): page header {id u64, flags u16, count u16, overflow u32}; meta
// {magic u32, version u32, pageSize u32, flags u32, root {pgid u64, sequence u64}, freelist u64, pgid u64, txid u64,
// checksum u64 (FNV-64a of what precedes it)}; branch element {pos u32, ksize u32, pgid u64}; leaf element
// {flags u32, pos u32, ksize u32, vsize u32}, key and value at pos from the element; a bucket value is
// {root u64, sequence u64}, followed by an inline page when root is 0. Native byte order: little-endian here.
func checkBolt(data []byte) error {
	m, err := pickMeta(data)
	if err != nil {
		return err
	}
	if uint64(len(data))/uint64(m.pageSize) < m.hwm {
		return fmt.Errorf("truncated: the database has %d pages of %d bytes, the file only %d bytes", m.hwm, m.pageSize, len(data))
	}
	c := &boltChecker{data: data, pageSize: int(m.pageSize), hwm: m.hwm, seen: map[uint64]bool{}}
	return c.bucket(m.root, nil, 0)
}

const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	pageHeaderSize   = 16
	branchElemSize   = 16
	leafElemSize     = 16
	bucketHeaderSize = 16
	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	bucketLeafFlag   = 0x01
	metaSize         = 64 // the meta fields, checksum included
	// maxBoltDepth bounds the nesting of pages and buckets: containerd's deepest bucket is 6 levels below the root
	// (v1/ns/snapshots/snapshotter/key/labels), each a B+tree a few pages deep.
	maxBoltDepth = 256
)

type boltMeta struct {
	pageSize  uint32
	root, hwm uint64
	txid      uint64
}

// pickMeta chooses the meta page bbolt would: of the two, the valid one with the higher transaction id.
func pickMeta(data []byte) (boltMeta, error) {
	m0, err0 := readMeta(data, 0)
	if err0 != nil && len(data) < pageHeaderSize+metaSize {
		return boltMeta{}, err0
	}
	// The second meta page is one page further; with the first one broken, bbolt tries the usual page sizes.
	var m1 boltMeta
	var err1 error
	if err0 == nil {
		m1, err1 = readMeta(data, int(m0.pageSize))
	} else {
		err1 = err0
		for size := 1024; size <= 1<<24 && size < len(data); size <<= 1 {
			if m1, err1 = readMeta(data, size); err1 == nil {
				break
			}
		}
	}
	switch {
	case err0 == nil && err1 == nil:
		if m1.txid > m0.txid {
			return m1, nil
		}
		return m0, nil
	case err0 == nil:
		return m0, nil
	case err1 == nil:
		return m1, nil
	}
	return boltMeta{}, err0
}

func readMeta(data []byte, off int) (boltMeta, error) {
	if off < 0 || off+pageHeaderSize+metaSize > len(data) {
		return boltMeta{}, fmt.Errorf("not a bbolt database: %d bytes, too short for its meta pages", len(data))
	}
	p := data[off : off+pageHeaderSize+metaSize]
	meta := p[pageHeaderSize:]
	le := binary.LittleEndian
	if le.Uint32(meta[0:]) != boltMagic {
		return boltMeta{}, fmt.Errorf("not a bbolt database (no bbolt magic number in its meta page)")
	}
	if v := le.Uint32(meta[4:]); v != boltVersion {
		return boltMeta{}, fmt.Errorf("bbolt file format version %d, want %d", v, boltVersion)
	}
	h := fnv.New64a()
	h.Write(meta[:metaSize-8])
	if h.Sum64() != le.Uint64(meta[metaSize-8:]) {
		return boltMeta{}, fmt.Errorf("bbolt meta page checksum mismatch")
	}
	m := boltMeta{pageSize: le.Uint32(meta[8:]), root: le.Uint64(meta[16:]), hwm: le.Uint64(meta[40:]), txid: le.Uint64(meta[48:])}
	if m.pageSize < 512 || m.pageSize > 1<<24 || m.pageSize&(m.pageSize-1) != 0 {
		return boltMeta{}, fmt.Errorf("bbolt meta page: page size %d", m.pageSize)
	}
	if m.root < 2 || m.root >= m.hwm {
		return boltMeta{}, fmt.Errorf("bbolt meta page: root page %d outside the %d pages", m.root, m.hwm)
	}
	return m, nil
}

type boltChecker struct {
	data     []byte
	pageSize int
	hwm      uint64
	seen     map[uint64]bool
}

// page returns the bytes of page id with its overflow pages, checking its place and header.
func (c *boltChecker) page(id uint64, want uint16) ([]byte, error) {
	if id < 2 || id >= c.hwm {
		return nil, fmt.Errorf("page %d: outside the %d pages of the database", id, c.hwm)
	}
	if c.seen[id] {
		return nil, fmt.Errorf("page %d: reached twice (a cycle or a shared page)", id)
	}
	c.seen[id] = true
	off := id * uint64(c.pageSize)
	if off+pageHeaderSize > uint64(len(c.data)) {
		return nil, fmt.Errorf("page %d: past the end of the file", id)
	}
	le := binary.LittleEndian
	hdr := c.data[off:]
	if got := le.Uint64(hdr); got != id {
		return nil, fmt.Errorf("page %d: its header says page %d", id, got)
	}
	if flags := le.Uint16(hdr[8:]); flags != want {
		return nil, fmt.Errorf("page %d: type %#x where a %s page belongs", id, flags, pageKind(want))
	}
	overflow := uint64(le.Uint32(hdr[12:]))
	if id+overflow >= c.hwm {
		return nil, fmt.Errorf("page %d: %d overflow pages run past the %d pages of the database", id, overflow, c.hwm)
	}
	end := off + (overflow+1)*uint64(c.pageSize)
	if end > uint64(len(c.data)) {
		return nil, fmt.Errorf("page %d: past the end of the file", id)
	}
	for i := uint64(1); i <= overflow; i++ {
		if c.seen[id+i] {
			return nil, fmt.Errorf("page %d: overflow page %d reached twice", id, id+i)
		}
		c.seen[id+i] = true
	}
	return c.data[off:end], nil
}

func pageKind(flags uint16) string {
	if flags == branchPageFlag {
		return "branch"
	}
	return "leaf"
}

// bucket checks the B+tree of a bucket: a page tree from root, or the inline page when root is 0.
func (c *boltChecker) bucket(root uint64, inline []byte, depth int) error {
	if depth > maxBoltDepth {
		return fmt.Errorf("buckets nested deeper than %d", maxBoltDepth)
	}
	if root == 0 {
		return c.leaf(inline, "inline bucket", depth)
	}
	return c.tree(root, depth)
}

// tree checks the page tree under id, which may be a branch or a leaf page.
func (c *boltChecker) tree(id uint64, depth int) error {
	if depth > maxBoltDepth {
		return fmt.Errorf("page %d: the tree is deeper than %d", id, maxBoltDepth)
	}
	if id < 2 || id >= c.hwm || id*uint64(c.pageSize)+pageHeaderSize > uint64(len(c.data)) {
		return fmt.Errorf("page %d: outside the %d pages of the database", id, c.hwm)
	}
	flags := binary.LittleEndian.Uint16(c.data[id*uint64(c.pageSize)+8:])
	if flags != branchPageFlag && flags != leafPageFlag {
		return fmt.Errorf("page %d: type %#x where a branch or leaf page belongs", id, flags)
	}
	p, err := c.page(id, flags)
	if err != nil {
		return err
	}
	if flags == leafPageFlag {
		return c.leaf(p, fmt.Sprintf("page %d", id), depth)
	}
	le := binary.LittleEndian
	count := int(le.Uint16(p[10:]))
	if count == 0 {
		return fmt.Errorf("page %d: a branch page without elements", id)
	}
	if pageHeaderSize+count*branchElemSize > len(p) {
		return fmt.Errorf("page %d: %d elements do not fit in it", id, count)
	}
	for i := 0; i < count; i++ {
		e := pageHeaderSize + i*branchElemSize
		pos, ksize := int(le.Uint32(p[e:])), int(le.Uint32(p[e+4:]))
		if e+pos+ksize > len(p) || e+pos < e {
			return fmt.Errorf("page %d: element %d's key is outside the page", id, i)
		}
		if err := c.tree(le.Uint64(p[e+8:]), depth+1); err != nil {
			return err
		}
	}
	return nil
}

// leaf checks a leaf page (or an inline bucket's page): every element inside it, and every sub-bucket.
func (c *boltChecker) leaf(p []byte, what string, depth int) error {
	if len(p) < pageHeaderSize {
		return fmt.Errorf("%s: shorter than a page header", what)
	}
	le := binary.LittleEndian
	if flags := le.Uint16(p[8:]); flags != leafPageFlag {
		return fmt.Errorf("%s: type %#x where a leaf page belongs", what, flags)
	}
	count := int(le.Uint16(p[10:]))
	if pageHeaderSize+count*leafElemSize > len(p) {
		return fmt.Errorf("%s: %d elements do not fit in it", what, count)
	}
	for i := 0; i < count; i++ {
		e := pageHeaderSize + i*leafElemSize
		flags, pos := le.Uint32(p[e:]), int(le.Uint32(p[e+4:]))
		ksize, vsize := int(le.Uint32(p[e+8:])), int(le.Uint32(p[e+12:]))
		start := e + pos
		if pos < 0 || ksize < 0 || vsize < 0 || start < e || start+ksize+vsize > len(p) || start+ksize+vsize < start {
			return fmt.Errorf("%s: element %d is outside the page", what, i)
		}
		if flags&bucketLeafFlag == 0 {
			continue
		}
		v := p[start+ksize : start+ksize+vsize]
		if len(v) < bucketHeaderSize {
			return fmt.Errorf("%s: element %d is a bucket of %d bytes", what, i, len(v))
		}
		root := le.Uint64(v)
		var inline []byte
		if root == 0 {
			inline = v[bucketHeaderSize:]
		}
		if err := c.bucket(root, inline, depth+1); err != nil {
			return err
		}
	}
	return nil
}
