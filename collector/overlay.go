package collector

import (
	"archive/tar"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The drift of a running container on containerd's overlayfs snapshotter, read from the live directories (nothing
// is mounted; the overlay is containerd's): the upper directory holds what the container wrote (whiteouts as 0:0
// character devices); a path's image version is found in the lower directories, top first, as overlayfs itself
// finds it; and what the container deleted is what the image has in a directory the container touched but the
// mounted overlay (the bundle's rootfs) no longer shows, which also finds the files an opaque directory hid
// without reading its trusted.overlay.opaque attribute (readable only with CAP_SYS_ADMIN, which the collector
// does not have). The records and the comparison rules are the volume mode's (DriftChange, DriftDifferences).

// maxDriftEntries bounds the changes recorded (a container that deleted /usr lists every file of it).
const maxDriftEntries = 1 << 20

// overlayView is the overlay's directories, opened below containerd's root. Owned by one goroutine.
type overlayView struct {
	root   *os.Root // containerd's root: every layer is read through it, never following a link out of it
	abs    string   // its path, for the attribute calls
	upper  string   // relative to root
	lowers []string // relative to root, top first
	merged *os.Root // the overlay as mounted (the bundle's rootfs)
	notes  []string
}

func writeOverlayDrift(c *run, containerdRoot string, info *NodeInfo) (map[string]int, []string, error) {
	root, err := os.OpenRoot(containerdRoot)
	if err != nil {
		c.e.skip(DriftChangesPath, ReasonError, "containerd's root: "+errDetail(err))
		return nil, nil, nil
	}
	defer root.Close()
	merged, err := os.OpenRoot(filepath.Join(info.Bundle, "rootfs"))
	if err != nil {
		c.e.skip(DriftChangesPath, ReasonError, "the bundle's rootfs: "+errDetail(err))
		return nil, nil, nil
	}
	defer merged.Close()
	rel := func(p string) string { r, _ := filepath.Rel(containerdRoot, p); return r }
	v := &overlayView{root: root, abs: containerdRoot, upper: rel(info.Upper), merged: merged}
	for _, l := range info.Lowers {
		v.lowers = append(v.lowers, rel(l))
	}
	changes, err := v.drift(c)
	if err != nil {
		c.e.skip(DriftChangesPath, ReasonError, err.Error())
		return nil, v.notes, nil
	}
	counts := map[string]int{}
	for i := range changes {
		ch := &changes[i]
		counts[ch.Change]++
		if (ch.Change != ChangeAdded && ch.Change != ChangeChanged) || ch.Type != "file" {
			continue
		}
		p, _ := UnescapeName(strings.ReplaceAll(ch.Path, "%5C", `\`))
		if err := v.copyUpper(c, p, ch); err != nil {
			return nil, nil, err
		}
	}
	if changes == nil {
		changes = []DriftChange{}
	}
	return counts, v.notes, c.e.metaJSON(DriftChangesPath, changes)
}

// copyUpper stores the container's version of p as drift/fs/p.
func (v *overlayView) copyUpper(c *run, p string, ch *DriftChange) error {
	name := path.Join(v.upper, p)
	f, err := v.root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		c.e.skipErr("upper:"+p, err)
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		c.e.skip("upper:"+EscapeName(p), ReasonError, "no longer a regular file")
		return nil
	}
	archived := DriftFSPrefix + "/" + ch.Path
	before := len(c.e.files)
	if err := c.e.file(archived, filepath.Join(v.abs, name), f, fi.Size(), fi.ModTime(), c.opts.MaxExeBytes); err != nil {
		return err
	}
	if len(c.e.files) > before {
		ch.Archived = archived
	}
	return nil
}

// entry reads the header of rel (below root), telling whiteouts apart.
func (v *overlayView) entry(rel string) (hdr *tar.Header, whiteout bool, err error) {
	fi, err := v.root.Lstat(rel)
	if err != nil {
		return nil, false, err
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if fi.Mode()&fs.ModeCharDevice != 0 && st != nil && st.Rdev == 0 {
		return nil, true, nil
	}
	hdr = &tar.Header{Mode: int64(fi.Mode().Perm()), ModTime: fi.ModTime(), Format: tar.FormatPAX}
	for bit, m := range map[fs.FileMode]int64{fs.ModeSetuid: 0o4000, fs.ModeSetgid: 0o2000, fs.ModeSticky: 0o1000} {
		if fi.Mode()&bit != 0 {
			hdr.Mode |= m
		}
	}
	if st != nil {
		hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
	}
	switch m := fi.Mode(); {
	case m.IsRegular():
		hdr.Typeflag, hdr.Size = tar.TypeReg, fi.Size()
	case m.IsDir():
		hdr.Typeflag = tar.TypeDir
	case m&fs.ModeSymlink != 0:
		hdr.Typeflag = tar.TypeSymlink
		if hdr.Linkname, err = v.root.Readlink(rel); err != nil {
			return nil, false, err
		}
	case m&fs.ModeNamedPipe != 0:
		hdr.Typeflag = tar.TypeFifo
	case m&fs.ModeSocket != 0:
		hdr.Typeflag = TypeSocket
	case m&fs.ModeDevice != 0:
		hdr.Typeflag = tar.TypeBlock
		if m&fs.ModeCharDevice != 0 {
			hdr.Typeflag = tar.TypeChar
		}
		if st != nil {
			hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		}
	default:
		return nil, false, fmt.Errorf("%s: unknown file type %v", EscapeName(rel), m)
	}
	v.readXattrs(rel, hdr)
	return hdr, false, nil
}

// readXattrs adds rel's extended attributes but overlayfs's own to hdr (those of the trusted namespace are
// invisible without CAP_SYS_ADMIN).
func (v *overlayView) readXattrs(rel string, hdr *tar.Header) {
	p := filepath.Join(v.abs, rel)
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n <= 0 {
		return
	}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if name == "" || strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.") {
			continue
		}
		val := make([]byte, 4096)
		m, err := unix.Lgetxattr(p, name, val)
		if err != nil {
			continue
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+name] = string(val[:m])
	}
}

// opaque reports whether directory rel carries overlayfs's opaque mark, where the collector can see it.
func (v *overlayView) opaque(rel string) bool {
	p := filepath.Join(v.abs, rel)
	val := make([]byte, 8)
	for _, a := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
		if n, err := unix.Lgetxattr(p, a, val); err == nil && n == 1 && val[0] == 'y' {
			return true
		}
	}
	return false
}

// found is an image file: its header and the layer it is in.
type found struct {
	hdr   *tar.Header
	layer string
}

// lookup finds the image's version of p (clean, relative) in the lower layers, top first: a whiteout or a file
// standing on an ancestor hides it, an opaque ancestor hides the layers below.
func (v *overlayView) lookup(p string) (*found, error) {
	parts := strings.Split(p, "/")
	for _, l := range v.lowers {
		hidden, stop, absent := false, false, false
		for i := 1; i < len(parts) && !absent; i++ {
			a := path.Join(l, strings.Join(parts[:i], "/"))
			h, wo, err := v.entry(a)
			switch {
			case isNotExist(err):
				absent = true
			case err != nil:
				return nil, err
			case wo || h.Typeflag != tar.TypeDir:
				hidden = true
			case v.opaque(a):
				stop = true
			}
			if hidden {
				break
			}
		}
		if hidden {
			return nil, nil
		}
		if !absent {
			h, wo, err := v.entry(path.Join(l, p))
			switch {
			case err == nil && wo:
				return nil, nil
			case err == nil:
				return &found{h, l}, nil
			case !isNotExist(err):
				return nil, err
			}
		}
		if stop {
			return nil, nil
		}
	}
	return nil, nil
}

// children are the names the image has in directory p, with their versions.
func (v *overlayView) children(p string) (map[string]*found, error) {
	out, whited := map[string]*found{}, map[string]bool{}
	for _, l := range v.lowers {
		top, err := v.lookupIn(l, p)
		if err != nil {
			return nil, err
		}
		if top.hidden {
			break
		}
		if top.dir {
			dir := path.Join(l, p)
			f, err := v.root.Open(dir)
			if err != nil {
				return nil, err
			}
			names, err := f.Readdirnames(-1)
			f.Close()
			if err != nil {
				return nil, err
			}
			for _, n := range names {
				if out[n] != nil || whited[n] {
					continue
				}
				h, wo, err := v.entry(path.Join(dir, n))
				if err != nil {
					if isNotExist(err) {
						continue
					}
					return nil, err
				}
				if wo {
					whited[n] = true
					continue
				}
				out[n] = &found{h, l}
			}
			if v.opaque(dir) {
				break
			}
		}
		if top.stop || top.nondir {
			break
		}
	}
	return out, nil
}

type layerState struct{ hidden, stop, dir, nondir bool }

// lookupIn says how layer l stands on directory p: hidden (a whiteout or a file on it or an ancestor), a
// directory there, something else there (which hides the layers below), and whether an opaque ancestor stops
// the layers below.
func (v *overlayView) lookupIn(l, p string) (layerState, error) {
	var s layerState
	parts := []string{}
	if p != "" {
		parts = strings.Split(p, "/")
	}
	for i := 1; i <= len(parts); i++ {
		a := path.Join(l, strings.Join(parts[:i], "/"))
		h, wo, err := v.entry(a)
		switch {
		case isNotExist(err):
			return s, nil
		case err != nil:
			return s, err
		case wo:
			s.hidden = true
			return s, nil
		case h.Typeflag != tar.TypeDir:
			if i < len(parts) {
				s.hidden = true
			} else {
				s.nondir = true
			}
			return s, nil
		}
		if i < len(parts) && v.opaque(a) {
			s.stop = true
		}
	}
	s.dir = true
	return s, nil
}

// hashLayer is the sha256 of regular file p of layer l.
func (v *overlayView) hashLayer(l, p string) string {
	f, err := v.root.OpenFile(path.Join(l, p), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return hexSum(h)
}

// drift walks the upper directory and classifies every entry against the image.
func (v *overlayView) drift(c *run) ([]DriftChange, error) {
	var out []DriftChange
	full := false
	add := func(ch DriftChange) {
		if len(out) >= maxDriftEntries {
			if !full {
				v.notes = append(v.notes, fmt.Sprintf("more than %d changes: the rest are not listed", maxDriftEntries))
				full = true
			}
			return
		}
		out = append(out, ch)
	}
	var deletedTree func(p string, f *found) error
	deletedTree = func(p string, f *found) error {
		sum := ""
		if f.hdr.Typeflag == tar.TypeReg {
			sum = v.hashLayer(f.layer, p)
		}
		add(DeletedDriftChange(p, f.hdr, sum))
		if f.hdr.Typeflag != tar.TypeDir || full {
			return nil
		}
		kids, err := v.children(p)
		if err != nil {
			return err
		}
		for _, n := range sortedNames(kids) {
			if err := deletedTree(path.Join(p, n), kids[n]); err != nil {
				return err
			}
		}
		return nil
	}
	var walk func(p string) error
	walk = func(p string) error {
		if c.e.outOfTime() {
			v.notes = append(v.notes, "the time budget ran out during the drift: it is incomplete")
			return errTimeUp
		}
		dir := v.upper
		if p != "" {
			dir = path.Join(v.upper, p)
		}
		f, err := v.root.Open(dir)
		if err != nil {
			return err
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return err
		}
		sort.Strings(names)
		whiteouts := map[string]bool{}
		var dirs []string
		for _, n := range names {
			cp := path.Join(p, n)
			h, wo, err := v.entry(path.Join(dir, n))
			if isNotExist(err) {
				continue
			}
			if err != nil {
				return err
			}
			if wo {
				whiteouts[n] = true
				img, err := v.lookup(cp)
				if err != nil {
					return err
				}
				if img == nil {
					add(DriftChange{Path: EscapePath(cp), Change: ChangeDeleted, Type: "unknown",
						What: []string{"not in the image as read: a layer may be missing"}})
				} else if err := deletedTree(cp, img); err != nil {
					return err
				}
				continue
			}
			if err := v.classify(cp, h, path.Join(dir, n), add); err != nil {
				return err
			}
			if h.Typeflag == tar.TypeDir {
				dirs = append(dirs, n)
			}
		}
		// What the image has here that the mounted overlay no longer shows, without a whiteout: hidden by an
		// opaque directory.
		if img, err := v.lookupDir(p); err != nil {
			return err
		} else if img {
			lower, err := v.children(p)
			if err != nil {
				return err
			}
			shown, err := v.mergedNames(p)
			if err != nil {
				v.notes = append(v.notes, fmt.Sprintf("%s: the mounted overlay could not be listed (%v): deletions there not checked", EscapePath("/"+p), err))
			} else {
				opaque := false
				for _, n := range sortedNames(lower) {
					if shown[n] || whiteouts[n] {
						continue
					}
					opaque = true
					if err := deletedTree(path.Join(p, n), lower[n]); err != nil {
						return err
					}
				}
				if opaque && p != "" {
					if err := v.markOpaque(&out, p); err != nil {
						return err
					}
				}
			}
		}
		for _, n := range dirs {
			if err := walk(path.Join(p, n)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(""); err != nil && !errors.Is(err, errTimeUp) {
		return nil, err
	}
	return SortDriftChanges(out), nil
}

var errTimeUp = errors.New("time budget")

// lookupDir reports whether the image has a directory at p ("" is the root).
func (v *overlayView) lookupDir(p string) (bool, error) {
	if p == "" {
		return len(v.lowers) > 0, nil
	}
	f, err := v.lookup(p)
	return f != nil && f.hdr.Typeflag == tar.TypeDir, err
}

// markOpaque marks directory p's change as opaque, adding one (the image's directory, "opaque") when the directory
// itself is unchanged.
func (v *overlayView) markOpaque(out *[]DriftChange, p string) error {
	esc := EscapePath(p)
	for i := range *out {
		if (*out)[i].Path == esc && (*out)[i].Type == "dir" && (*out)[i].Change != ChangeDeleted {
			(*out)[i].Opaque = true
			return nil
		}
	}
	img, err := v.lookup(p)
	if err != nil || img == nil {
		return err
	}
	ch := NewDriftChange(p, ChangeChanged, img.hdr, "", []string{"opaque"})
	ch.Opaque = true
	*out = append(*out, ch)
	return nil
}

// classify records the upper entry p (header h, at rel below root) against the image's version.
func (v *overlayView) classify(p string, h *tar.Header, rel string, add func(DriftChange)) error {
	sum := ""
	if h.Typeflag == tar.TypeReg {
		sum = v.hashRel(rel)
	}
	img, err := v.lookup(p)
	if err != nil {
		return err
	}
	if img == nil {
		add(NewDriftChange(p, ChangeAdded, h, sum, nil))
		return nil
	}
	imgSum := ""
	if img.hdr.Typeflag == tar.TypeReg {
		imgSum = v.hashLayer(img.layer, p)
	}
	what := DriftDifferences(img.hdr, h, imgSum, sum, true)
	switch {
	case len(what) > 0:
		ch := NewDriftChange(p, ChangeChanged, h, sum, what)
		if img.hdr.Typeflag == tar.TypeReg {
			ch.ImageSize = img.hdr.Size
		}
		ch.ImageSHA256 = imgSum
		add(ch)
	case h.Typeflag != tar.TypeDir:
		ch := NewDriftChange(p, ChangeCopiedUp, h, sum, nil)
		ch.ImageSHA256 = imgSum
		add(ch)
	}
	return nil
}

func (v *overlayView) hashRel(rel string) string {
	f, err := v.root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return hexSum(h)
}

// mergedNames lists directory p of the mounted overlay.
func (v *overlayView) mergedNames(p string) (map[string]bool, error) {
	dir := "."
	if p != "" {
		dir = p
	}
	f, err := v.merged.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, n := range names {
		out[n] = true
	}
	return out, nil
}

func sortedNames(m map[string]*found) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
