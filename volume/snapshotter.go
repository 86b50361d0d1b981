package volume

import (
	"encoding/binary"
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// Snapshotters this package reads, and the directory of each under the containerd root.
const (
	SnapshotterOverlay = "overlayfs"
	SnapshotterNative  = "native"
)

// unsupportedSnapshotters says, for the snapshotters this package does not read, why.
var unsupportedSnapshotters = map[string]string{
	"stargz":         "stargz (lazy-pulled eStargz layers live in a FUSE file system of the node, not on its disk)",
	"soci":           "SOCI (lazy-loaded layers are fetched from the registry on demand, not kept on the disk)",
	"gcfs":           "GKE image streaming (gcfs: the image is read from Google's remote store, not the node's disk)",
	"nydus":          "nydus (lazy-loaded RAFS images served by a FUSE or EROFS daemon)",
	"overlaybd":      "overlaybd (block-device images served by a user-space daemon)",
	"devmapper":      "devmapper (each snapshot is a thin block device, not a directory)",
	"zfs":            "zfs (snapshots are ZFS datasets: mount them with ZFS tools)",
	"btrfs":          "btrfs (snapshots are btrfs subvolumes: read them from the mounted btrfs volume with btrfs tools)",
	"aufs":           "aufs",
	"erofs":          "erofs (each layer is an EROFS image file, not a directory)",
	"fuse-overlayfs": "fuse-overlayfs (its whiteouts and opaque markers differ from the kernel's overlayfs)",
	"blockfile":      "blockfile (each snapshot is a file-system image)",
}

// Snapshot kinds, as containerd's snapshots.Kind numbers them.
const (
	kindView      = 1
	kindActive    = 2
	kindCommitted = 3
)

func kindName(k byte) string {
	switch k {
	case kindView:
		return "view"
	case kindActive:
		return "active"
	case kindCommitted:
		return "committed"
	}
	return "unknown"
}

// snapshotInfo is a snapshot of a snapshotter's own database (metadata.db): v1/snapshots/<name>/{id (uvarint),
// kind (one byte), parent (the parent's name)}; its directory is snapshots/<id>.
type snapshotInfo struct {
	Name   string
	ID     uint64
	Kind   byte
	Parent string
}

func (s snapshotInfo) dir() string { return "snapshots/" + strconv.FormatUint(s.ID, 10) }

func readSnapshotterDB(d *boltDB) (map[string]snapshotInfo, error) {
	out := map[string]snapshotInfo{}
	err := d.view(func(tx *bolt.Tx) error {
		v1 := tx.Bucket([]byte("v1"))
		if v1 == nil {
			return fmt.Errorf("%w: %s has no v1 bucket: not a containerd snapshotter's metadata.db", ErrCorrupt, d.path)
		}
		sb := v1.Bucket([]byte("snapshots"))
		if sb == nil {
			return nil // no snapshot yet
		}
		return forEachBucket(sb, func(name string, b *bolt.Bucket) error {
			s := snapshotInfo{Name: name, Parent: string(b.Get([]byte("parent")))}
			id, n := binary.Uvarint(b.Get([]byte("id")))
			if n <= 0 {
				return fmt.Errorf("%w: %s: snapshot %q has no id", ErrCorrupt, d.path, printable([]byte(name)))
			}
			s.ID = id
			if k := b.Get([]byte("kind")); len(k) == 1 {
				s.Kind = k[0]
			}
			out[name] = s
			return nil
		})
	})
	return out, err
}
