package collector

import (
	"archive/tar"
	"fmt"
	"sort"
	"strings"
	"time"
)

// The drift is what a container changed against its image: drift/changes.json lists every path added, changed or
// deleted (DriftChange), drift/fs/ holds the added and changed regular files as the container's writable layer has
// them. The volume mode (package volume, a node's disk offline) and the node mode (the collector on the live node)
// write the same record and compare files by the same rules (DriftDifferences), so one container's drift reads the
// same whichever way it was acquired.

// Archive paths of the drift.
const (
	DriftPrefix      = "drift"
	DriftChangesPath = DriftPrefix + "/changes.json"
	DriftFSPrefix    = DriftPrefix + "/fs"
)

// DriftChange is one path the container changed against its image (drift/changes.json).
type DriftChange struct {
	Path   string `json:"path"`   // escaped like archive names (EscapePath)
	Change string `json:"change"` // added, changed, deleted, copied-up
	Type   string `json:"type"`   // file, dir, symlink, hardlink, char, block, fifo, socket
	// What lists what differs for a change: content, type, mode, owner, target, device, mtime, xattrs, opaque.
	What        []string  `json:"what,omitempty"`
	Opaque      bool      `json:"opaque,omitempty"` // a directory the container removed and made again
	Size        int64     `json:"size,omitempty"`
	SHA256      string    `json:"sha256,omitempty"`
	Mode        string    `json:"mode,omitempty"`
	UID         int       `json:"uid"`
	GID         int       `json:"gid"`
	ModTime     time.Time `json:"mtime,omitzero"`
	Target      string    `json:"target,omitempty"`
	ImageSize   int64     `json:"imageSize,omitempty"`
	ImageSHA256 string    `json:"imageSha256,omitempty"`
	// Archived is where the container's version is in the archive (drift/fs/...), for added and changed regular
	// files.
	Archived string `json:"archived,omitempty"`
}

// Drift change kinds.
const (
	ChangeAdded    = "added"
	ChangeChanged  = "changed"
	ChangeDeleted  = "deleted"
	ChangeCopiedUp = "copied-up" // in the writable layer, identical to the image's file
)

// TypeSocket is the tar type flag warren gives a socket found on a layer (a tar cannot hold one): it is listed
// in the drift, never written.
const TypeSocket byte = 's'

// DriftDifferences lists what differs between the image's version of a file (old, oldSum the hex sha256 of its
// content when known) and the container's (hdr, sum). Directory times are never compared (a directory's mtime moves
// with its entries); file times only with compareMtime (an overlayfs copy-up keeps them, a full copy does not).
func DriftDifferences(old, hdr *tar.Header, oldSum, sum string, compareMtime bool) []string {
	if DriftTypeName(old) != DriftTypeName(hdr) {
		return []string{"type"}
	}
	var what []string
	if hdr.Typeflag == tar.TypeReg {
		switch {
		case old.Size != hdr.Size:
			what = append(what, "content")
		case sum != "" && oldSum != "" && sum != oldSum:
			what = append(what, "content")
		}
	}
	if old.Mode&0o7777 != hdr.Mode&0o7777 {
		what = append(what, "mode")
	}
	if old.Uid != hdr.Uid || old.Gid != hdr.Gid {
		what = append(what, "owner")
	}
	if hdr.Typeflag == tar.TypeSymlink && old.Linkname != hdr.Linkname {
		what = append(what, "target")
	}
	if (hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock) && (old.Devmajor != hdr.Devmajor || old.Devminor != hdr.Devminor) {
		what = append(what, "device")
	}
	if hdr.Typeflag != tar.TypeDir && compareMtime && !old.ModTime.IsZero() && !old.ModTime.Equal(hdr.ModTime) {
		what = append(what, "mtime")
	}
	if driftXattrs(old) != driftXattrs(hdr) {
		what = append(what, "xattrs")
	}
	return what
}

func driftXattrs(h *tar.Header) string {
	var parts []string
	for k, v := range h.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			parts = append(parts, k+"="+v)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "\x00")
}

// NewDriftChange is the record of path p (relative, unescaped) of kind, as the container has it (h, sum).
func NewDriftChange(p, kind string, h *tar.Header, sum string, what []string) DriftChange {
	c := DriftChange{Path: EscapePath(p), Change: kind, Type: DriftTypeName(h), What: what, Mode: driftMode(h), UID: h.Uid,
		GID: h.Gid, ModTime: h.ModTime.UTC(), SHA256: sum}
	if h.Typeflag == tar.TypeReg {
		c.Size = h.Size
	}
	if h.Typeflag == tar.TypeSymlink || h.Typeflag == tar.TypeLink {
		c.Target = EscapePath(h.Linkname)
	}
	return c
}

// DeletedDriftChange is the record of path p the container deleted; h and sum are the image's version.
func DeletedDriftChange(p string, h *tar.Header, sum string) DriftChange {
	c := DriftChange{Path: EscapePath(p), Change: ChangeDeleted, Type: DriftTypeName(h), Mode: driftMode(h), UID: h.Uid, GID: h.Gid,
		ImageSHA256: sum}
	if h.Typeflag == tar.TypeReg {
		c.ImageSize = h.Size
	}
	return c
}

// DriftTypeName names a header's file type as the drift records it.
func DriftTypeName(h *tar.Header) string {
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeRegA:
		return "file"
	case tar.TypeDir:
		return "dir"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hardlink"
	case tar.TypeChar:
		return "char"
	case tar.TypeBlock:
		return "block"
	case tar.TypeFifo:
		return "fifo"
	case TypeSocket:
		return "socket"
	}
	return fmt.Sprintf("type-%c", h.Typeflag)
}

func driftMode(h *tar.Header) string { return fmt.Sprintf("%04o", h.Mode&0o7777) }

// SortDriftChanges orders changes by path, then kind.
func SortDriftChanges(cs []DriftChange) []DriftChange {
	sort.SliceStable(cs, func(i, j int) bool {
		if cs[i].Path != cs[j].Path {
			return cs[i].Path < cs[j].Path
		}
		return cs[i].Change < cs[j].Change
	})
	return cs
}

// EscapePath makes a file name an archive and JSON name: EscapeName (control bytes, '%' and invalid UTF-8 as %XX),
// and '\' as %5C, which the evidence store refuses in names.
func EscapePath(p string) string {
	return strings.ReplaceAll(EscapeName(p), `\`, "%5C")
}
