package volume

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/warren-dev/warren/collector"
)

// typeSocket marks a socket of a snapshot directory in the tree: it is listed (drift, notes), never written.
const typeSocket = collector.TypeSocket

// An entry is one event of a layer, whiteouts already told apart from files, in the layer's order.
type entry struct {
	kind entryKind
	// path is clean and relative to the layer's root, without a leading slash; "" is the root directory.
	path string
	hdr  *tar.Header // for entryPut; Name is not used
	ord  int         // position in the layer's walk
	// notes are what the reader noticed about the entry (an overlay attribute it does not apply, ...).
	notes []string
}

type entryKind int

const (
	entryPut      entryKind = iota // a file, directory, link or device
	entryWhiteout                  // path is deleted from the layers below
	entryOpaque                    // the directory path hides what the layers below have in it
)

// opener opens a regular file's content: for a layer tar, the entry's bytes (only while the callback runs).
type opener func() (io.ReadCloser, error)

// source is one layer (or a snapshot's full tree) the file system is built from.
type source interface {
	// describe names the source for people: "blob sha256:... (tar+gzip)", "snapshots/3/fs".
	describe() string
	// walk calls fn for every entry, in order.
	walk(fn func(e *entry, open opener) error) error
}

// Layer media types (OCI and Docker) and how each is compressed.
func compressionOf(mediaType string) (string, error) {
	switch mediaType {
	case "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.nondistributable.v1.tar",
		"application/vnd.docker.image.rootfs.diff.tar":
		return "", nil
	case "application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
		"application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
		return "gzip", nil
	case "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd":
		return "zstd", nil
	}
	if strings.Contains(mediaType, "encrypted") {
		return "", fmt.Errorf("%w: encrypted layer (%s)", ErrUnsupported, mediaType)
	}
	return "", fmt.Errorf("%w: layer media type %q", ErrUnsupported, mediaType)
}

// blobLayer is a layer tar from the content store, checked against its digest (compressed) and diff id
// (uncompressed) as it is read.
type blobLayer struct {
	root        *os.Root // the containerd root
	digest      string
	diffID      string // "" when the image config is not known
	compression string
}

func (b *blobLayer) describe() string {
	c := "tar"
	if b.compression != "" {
		c += "+" + b.compression
	}
	return "blob " + b.digest + " (" + c + ")"
}

func blobPath(dgst string) (string, error) {
	algo, hexpart, ok := strings.Cut(dgst, ":")
	want := map[string]int{"sha256": 64, "sha512": 128}[algo]
	if !ok || want == 0 || len(hexpart) != want || strings.Trim(hexpart, "0123456789abcdef") != "" {
		return "", fmt.Errorf("invalid digest %q", printable([]byte(dgst)))
	}
	return ContentBlobDir + "/" + algo + "/" + hexpart, nil
}

// digestWriter hashes what passes with the digest's algorithm.
func newDigester(dgst string) (hash.Hash, error) {
	if strings.HasPrefix(dgst, "sha256:") {
		return sha256.New(), nil
	}
	return nil, fmt.Errorf("%w: digest algorithm of %q (sha256 only)", ErrUnsupported, printable([]byte(dgst)))
}

func (b *blobLayer) walk(fn func(e *entry, open opener) error) error {
	p, err := blobPath(b.digest)
	if err != nil {
		return err
	}
	f, err := b.root.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	outer, err := newDigester(b.digest)
	if err != nil {
		return err
	}
	var r io.Reader = io.TeeReader(bufio.NewReaderSize(f, 1<<20), outer)
	switch b.compression {
	case "gzip":
		zr, err := gzip.NewReader(r)
		if err != nil {
			return fmt.Errorf("%s: not gzip: %v", b.describe(), err)
		}
		defer zr.Close()
		r = zr
	case "zstd":
		// One goroutine, a bounded window: a hostile frame cannot ask for gigabytes.
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<27), zstd.WithDecoderMaxMemory(1<<30))
		if err != nil {
			return err
		}
		defer zr.Close()
		r = zr
	}
	inner := sha256.New()
	tr := tar.NewReader(io.TeeReader(r, inner))
	for ord := 0; ; ord++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: not a valid tar after %d entries: %v", b.describe(), ord, err)
		}
		e := tarEntry(hdr, ord)
		if e == nil {
			continue
		}
		open := func() (io.ReadCloser, error) { return io.NopCloser(tr), nil }
		if err := fn(e, open); err != nil {
			return err
		}
	}
	// The rest of the stream (tar padding, compression trailer) is part of both digests.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("%s: %v", b.describe(), err)
	}
	if b.compression != "" {
		if _, err := io.Copy(io.Discard, io.TeeReader(f, outer)); err != nil {
			return err
		}
	}
	if got := "sha256:" + hex.EncodeToString(outer.Sum(nil)); got != b.digest {
		return fmt.Errorf("%w: %s: the blob's sha256 is %s: the content store's copy is damaged or was changed", errDigest, b.describe(), got)
	}
	if got := "sha256:" + hex.EncodeToString(inner.Sum(nil)); b.diffID != "" && got != b.diffID {
		return fmt.Errorf("%w: %s: the uncompressed layer's sha256 is %s, the image config says %s", errDigest, b.describe(), got, b.diffID)
	}
	return nil
}

var errDigest = errors.New("digest mismatch")

// tarEntry turns a layer's tar header into an entry (OCI whiteouts: .wh.NAME deletes NAME below, .wh..wh..opq
// makes its directory opaque); nil for entries that carry nothing (aufs bookkeeping).
func tarEntry(hdr *tar.Header, ord int) *entry {
	p := cleanPath(hdr.Name)
	dir, base := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	if strings.HasPrefix(base, ".wh.") {
		switch {
		case base == ".wh..wh..opq":
			return &entry{kind: entryOpaque, path: dir, ord: ord}
		case strings.HasPrefix(base, ".wh..wh."):
			return nil // aufs hard-link and metadata directories
		}
		return &entry{kind: entryWhiteout, path: path.Join(dir, base[len(".wh."):]), ord: ord}
	}
	h := *hdr
	if h.Typeflag == tar.TypeRegA {
		h.Typeflag = tar.TypeReg
	}
	if h.Typeflag == tar.TypeLink {
		h.Linkname = cleanPath(h.Linkname)
	}
	return &entry{kind: entryPut, path: p, hdr: &h, ord: ord}
}

// cleanPath makes a layer's name relative and clean: "./a/../b/" is "b", "/" and "." are "".
func cleanPath(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// dirLayer is a snapshot directory: an overlayfs layer (whiteouts as 0:0 character devices, opaque directories by
// the trusted.overlay.opaque or user.overlay.opaque attribute "y") or, for the native snapshotter, a whole tree.
type dirLayer struct {
	root    *os.Root // the containerd root
	abs     string   // the containerd root's path, for the attribute calls
	dir     string   // relative to root: io.containerd.snapshotter.v1.overlayfs/snapshots/3/fs
	overlay bool
}

func (d *dirLayer) describe() string { return d.dir }

func (d *dirLayer) walk(fn func(e *entry, open opener) error) error {
	fi, err := d.root.Lstat(d.dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", d.dir)
	}
	// The attribute calls take paths: the directory must be where it says, with no link on the way out of the root.
	if real, err := filepath.EvalSymlinks(filepath.Join(d.abs, d.dir)); err != nil || real != filepath.Join(d.abs, d.dir) {
		if rabs, aerr := filepath.EvalSymlinks(d.abs); aerr != nil || err != nil || !strings.HasPrefix(real, rabs+"/") {
			return fmt.Errorf("%s leads outside the containerd root (%s)", d.dir, real)
		}
	}
	ord := 0
	var visit func(rel string, fi fs.FileInfo) error
	visit = func(rel string, fi fs.FileInfo) error {
		full := d.dir
		if rel != "" {
			full += "/" + rel
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		if d.overlay && fi.Mode()&fs.ModeCharDevice != 0 && st != nil && st.Rdev == 0 {
			ord++
			return fn(&entry{kind: entryWhiteout, path: rel, ord: ord}, nil)
		}
		hdr, notes, err := d.header(full, rel, fi)
		if err != nil {
			return err
		}
		if d.overlay && fi.Mode().IsRegular() && hdr.PAXRecords["SCHILY.xattr.trusted.overlay.whiteout"] != "" {
			ord++ // an overlayfs "xwhiteout" (Linux 6.7): a regular file with the whiteout attribute
			return fn(&entry{kind: entryWhiteout, path: rel, ord: ord}, nil)
		}
		opaque := false
		for _, a := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
			if v, ok := hdr.PAXRecords["SCHILY.xattr."+a]; ok {
				opaque = opaque || v == "y"
			}
		}
		if d.overlay {
			for _, a := range []string{"redirect", "metacopy"} {
				if _, ok := hdr.PAXRecords["SCHILY.xattr.trusted.overlay."+a]; ok {
					notes = append(notes, "overlayfs "+a+" attribute: not followed (containerd does not enable "+a+"; its data or directory is elsewhere in the lower layers)")
				}
			}
		}
		stripOverlayXattrs(hdr)
		ord++
		e := &entry{kind: entryPut, path: rel, hdr: hdr, ord: ord, notes: notes}
		var open opener
		if fi.Mode().IsRegular() {
			open = func() (io.ReadCloser, error) { return openRegular(d.root, full, st) }
		}
		if err := fn(e, open); err != nil {
			return err
		}
		if !fi.IsDir() {
			return nil
		}
		if opaque && d.overlay {
			ord++
			if err := fn(&entry{kind: entryOpaque, path: rel, ord: ord}, nil); err != nil {
				return err
			}
		}
		f, err := d.root.Open(full)
		if err != nil {
			return err
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return fmt.Errorf("cannot list %s: %v", full, err)
		}
		sort.Strings(names)
		for _, n := range names {
			child := n
			if rel != "" {
				child = rel + "/" + n
			}
			cfi, err := d.root.Lstat(d.dir + "/" + child)
			if err != nil {
				return err
			}
			if err := visit(child, cfi); err != nil {
				return err
			}
		}
		return nil
	}
	return visit("", fi)
}

// header is the tar header of a file of a snapshot directory: type, permissions, owner, size, the three times,
// link target, device numbers, and extended attributes (PAX SCHILY.xattr.*).
func (d *dirLayer) header(full, rel string, fi fs.FileInfo) (*tar.Header, []string, error) {
	st, _ := fi.Sys().(*syscall.Stat_t)
	hdr := &tar.Header{Name: rel, Mode: int64(fi.Mode().Perm()), ModTime: fi.ModTime(), Format: tar.FormatPAX}
	if fi.Mode()&fs.ModeSetuid != 0 {
		hdr.Mode |= 0o4000
	}
	if fi.Mode()&fs.ModeSetgid != 0 {
		hdr.Mode |= 0o2000
	}
	if fi.Mode()&fs.ModeSticky != 0 {
		hdr.Mode |= 0o1000
	}
	if st != nil {
		hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
		hdr.AccessTime = time.Unix(st.Atim.Sec, st.Atim.Nsec)
		hdr.ChangeTime = time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
	}
	switch m := fi.Mode(); {
	case m.IsRegular():
		hdr.Typeflag, hdr.Size = tar.TypeReg, fi.Size()
	case m.IsDir():
		hdr.Typeflag = tar.TypeDir
	case m&fs.ModeSymlink != 0:
		hdr.Typeflag = tar.TypeSymlink
		target, err := d.root.Readlink(full)
		if err != nil {
			return nil, nil, err
		}
		hdr.Linkname = target
	case m&fs.ModeNamedPipe != 0:
		hdr.Typeflag = tar.TypeFifo
	case m&fs.ModeDevice != 0:
		hdr.Typeflag = tar.TypeBlock
		if m&fs.ModeCharDevice != 0 {
			hdr.Typeflag = tar.TypeChar
		}
		if st != nil {
			hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		}
	case m&fs.ModeSocket != 0:
		hdr.Typeflag = typeSocket
		return hdr, []string{"a socket: a tar cannot hold one; listed here, not in the archive"}, nil
	default:
		return nil, nil, fmt.Errorf("%s: unknown file type %v", full, m)
	}
	notes, err := readXattrs(filepath.Join(d.abs, full), hdr)
	return hdr, notes, err
}

// readXattrs adds a file's extended attributes to hdr (PAX SCHILY.xattr.NAME). The path is walked from real
// directories only, and the l* calls do not follow a symlink at its end.
func readXattrs(p string, hdr *tar.Header) ([]string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ERANGE) {
		if sz, serr := unix.Llistxattr(p, nil); serr == nil && sz <= 1<<16 {
			buf = make([]byte, sz)
			n, err = unix.Llistxattr(p, buf)
		}
	}
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.ENODATA) {
		return nil, nil
	}
	if err != nil {
		return []string{"extended attributes not read: " + err.Error()}, nil
	}
	var notes []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		val := make([]byte, 256)
		m, err := unix.Lgetxattr(p, name, val)
		if errors.Is(err, unix.ERANGE) {
			if sz, serr := unix.Lgetxattr(p, name, nil); serr == nil && sz <= 1<<16 {
				val = make([]byte, sz)
				m, err = unix.Lgetxattr(p, name, val)
			}
		}
		if err != nil {
			notes = append(notes, "extended attribute "+name+" not read: "+err.Error())
			continue
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+name] = string(val[:m])
	}
	return notes, nil
}

// overlayXattrs are overlayfs's own attributes: they describe the layering and are not part of the file.
func stripOverlayXattrs(hdr *tar.Header) {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.trusted.overlay.") || strings.HasPrefix(k, "SCHILY.xattr.user.overlay.") {
			delete(hdr.PAXRecords, k)
		}
	}
	if len(hdr.PAXRecords) == 0 {
		hdr.PAXRecords = nil
	}
}

// openRegular opens a regular file of the containerd root and checks it is the file that was listed.
func openRegular(root *os.Root, name string, want *syscall.Stat_t) (io.ReadCloser, error) {
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is no longer a regular file", name)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); err == nil && ok && want != nil && (st.Ino != want.Ino || st.Dev != want.Dev) {
		err = fmt.Errorf("%s changed while it was read", name)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
