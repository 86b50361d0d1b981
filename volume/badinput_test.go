package volume_test

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/warren-dev/warren/volume"
)

// fakeRoot is a directory holding only a meta.db (with the given bytes): what Open reads first.
func fakeRoot(t *testing.T, meta []byte) string {
	t.Helper()
	root := t.TempDir()
	p := filepath.Join(root, volume.MetaDBPath)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, meta, 0o600); err != nil {
		t.Fatal(err)
	}
	return root
}

// TestVolumeBadInputs gives each bad input its one clear error, starting from a meta.db a real containerd wrote.
func TestVolumeBadInputs(t *testing.T) {
	s := startScenario(t, volume.SnapshotterOverlay)
	if err := s.cd.Stop(); err != nil {
		t.Fatal(err)
	}
	realMeta, err := os.ReadFile(filepath.Join(s.cd.Root, volume.MetaDBPath))
	if err != nil {
		t.Fatal(err)
	}
	noise := make([]byte, 64<<10)
	rand.Read(noise)
	otherBolt := filepath.Join(t.TempDir(), "other.db")
	db, err := bolt.Open(otherBolt, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("settings"))
		if err != nil {
			return err
		}
		return b.Put([]byte("k"), []byte("v"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	otherBytes, err := os.ReadFile(otherBolt)
	if err != nil {
		t.Fatal(err)
	}

	empty := t.TempDir()
	crio := t.TempDir()
	os.MkdirAll(filepath.Join(crio, "var/lib/containers/storage/overlay-containers"), 0o700)
	metaIn := func(root string) string { return filepath.Join(root, volume.MetaDBPath) }

	pages := pagesOf(t, realMeta)
	n, _ := strconv.Atoi(pages)
	cut := n * 4096 / 2 // half of the pages in use: bbolt grows the file ahead, so half the file may hold them all
	truncated := fakeRoot(t, realMeta[:cut])
	random := fakeRoot(t, noise)
	wrongBuckets := fakeRoot(t, otherBytes)
	cases := []struct {
		name, root string
		is         error
		want       string
	}{
		{"not a containerd root", empty, volume.ErrNotContainerdRoot,
			"not a containerd root: " + empty + " has no containerd metadata database at any of " +
				"io.containerd.metadata.v1.bolt/meta.db, var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db, " +
				"var/lib/rancher/k3s/agent/containerd/io.containerd.metadata.v1.bolt/meta.db, " +
				"var/lib/rancher/rke2/agent/containerd/io.containerd.metadata.v1.bolt/meta.db, " +
				"local/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db; give --containerd-root DIR (relative to --root) if containerd's root is elsewhere"},
		{"CRI-O", crio, volume.ErrUnsupported,
			"unsupported: " + crio + " holds CRI-O / Podman storage (var/lib/containers/storage), not containerd's root: only containerd is supported"},
		{"truncated meta.db", truncated, volume.ErrCorrupt,
			"corrupt database: " + metaIn(truncated) + ": truncated: the database has " + pages + " pages of 4096 bytes, the file only " +
				strconv.Itoa(cut) + " bytes"},
		{"random bytes", random, volume.ErrCorrupt,
			"corrupt database: " + metaIn(random) + ": not a bbolt database (no bbolt magic number in its meta page)"},
		{"bbolt with other buckets", wrongBuckets, volume.ErrCorrupt,
			"corrupt database: " + metaIn(wrongBuckets) + " is a bbolt database without containerd's v1 bucket (its buckets: [settings]): not containerd's meta.db"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := volume.Open(volume.Config{Root: c.root})
			if !errors.Is(err, c.is) || err.Error() != c.want {
				t.Fatalf("Open: %v\nwant: %s", err, c.want)
			}
		})
	}

	t.Run("unknown container", func(t *testing.T) {
		v, err := volume.Open(volume.Config{Root: s.cd.Root})
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		_, err = v.Find("", "nope")
		want := `unknown container: no container "nope" in any namespace of ` + metaIn(s.cd.Root) +
			` (its containers: k8s.io/c-overlayfs; --list shows them all)`
		if !errors.Is(err, volume.ErrUnknownContainer) || err.Error() != want {
			t.Fatalf("Find: %v\nwant: %s", err, want)
		}
		_, err = v.Find("default", "c-overlayfs")
		want = `unknown container: no namespace "default" in ` + metaIn(s.cd.Root) + ` (its namespaces: k8s.io)`
		if !errors.Is(err, volume.ErrUnknownContainer) || err.Error() != want {
			t.Fatalf("Find in another namespace: %v\nwant: %s", err, want)
		}
		// A prefix and the kubelet's form find it.
		for _, id := range []string{"c-ov", "containerd://c-overlayfs"} {
			if c, err := v.Find("", id); err != nil || c.ID != "c-overlayfs" {
				t.Errorf("Find(%q): %v, %v", id, c, err)
			}
		}
	})

	t.Run("layouts", func(t *testing.T) {
		// A node's root file system with containerd where k3s keeps it.
		node := t.TempDir()
		k3s := filepath.Join(node, "var/lib/rancher/k3s/agent")
		os.MkdirAll(k3s, 0o700)
		if err := os.Symlink(s.cd.Root, filepath.Join(k3s, "containerd")); err != nil {
			t.Fatal(err)
		}
		v, err := volume.Open(volume.Config{Root: node})
		if err != nil {
			t.Fatal(err)
		}
		if v.Layout != "k3s" {
			t.Errorf("layout %q, want k3s", v.Layout)
		}
		v.Close()
		// And RKE2's too: two roots, the examiner chooses.
		rke2 := filepath.Join(node, "var/lib/rancher/rke2/agent")
		os.MkdirAll(rke2, 0o700)
		os.Symlink(s.cd.Root, filepath.Join(rke2, "containerd"))
		_, err = volume.Open(volume.Config{Root: node})
		want := node + " holds several containerd roots: var/lib/rancher/k3s/agent/containerd (k3s), var/lib/rancher/rke2/agent/containerd (rke2); choose one with --containerd-root"
		if err == nil || err.Error() != want {
			t.Fatalf("two roots: %v\nwant: %s", err, want)
		}
		v, err = volume.Open(volume.Config{Root: node, ContainerdRoot: "/var/lib/rancher/rke2/agent/containerd"})
		if err != nil || v.Layout != "custom" {
			t.Fatalf("--containerd-root: %v", err)
		}
		v.Close()
		_, err = volume.Open(volume.Config{Root: node, ContainerdRoot: "../../etc"})
		if !errors.Is(err, volume.ErrNotContainerdRoot) || !strings.HasSuffix(err.Error(), "--containerd-root ../../etc ("+filepath.Join(node, "etc")+"): no io.containerd.metadata.v1.bolt/meta.db") {
			t.Fatalf("--containerd-root above --root: %v", err)
		}
	})

	t.Run("locked", func(t *testing.T) {
		// Another process holding meta.db (as a running containerd does) for longer than LockWait.
		db, err := bolt.Open(metaIn(s.cd.Root), 0o600, &bolt.Options{ReadOnly: false, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		_, err = volume.Open(volume.Config{Root: s.cd.Root, LockWait: 100 * time.Millisecond})
		if !errors.Is(err, volume.ErrLocked) {
			t.Fatalf("Open of a locked meta.db: %v", err)
		}
	})
}

// pagesOf is the page count meta.db's meta page gives (bbolt's Tx.Size is pages × page size).
func pagesOf(t *testing.T, meta []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "meta.db")
	if err := os.WriteFile(p, meta, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(p, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var size int64
	db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil })
	return strconv.FormatInt(size/4096, 10)
}

// TestVolumeUnsupportedSnapshotter: a container of a lazy-pulling snapshotter is refused with its name. (No such
// snapshotter runs here: the record is written with bbolt in containerd's schema.)
func TestVolumeUnsupportedSnapshotter(t *testing.T) {
	for _, c := range []struct{ snapshotter, want string }{
		{"stargz", "stargz (lazy-pulled eStargz layers live in a FUSE file system of the node, not on its disk)"},
		{"soci", "SOCI (lazy-loaded layers are fetched from the registry on demand, not kept on the disk)"},
		{"gcfs", "GKE image streaming (gcfs: the image is read from Google's remote store, not the node's disk)"},
		{"devmapper", "devmapper (each snapshot is a thin block device, not a directory)"},
		{"something", `"something"`},
	} {
		t.Run(c.snapshotter, func(t *testing.T) {
			root := t.TempDir()
			p := filepath.Join(root, volume.MetaDBPath)
			os.MkdirAll(filepath.Dir(p), 0o700)
			db, err := bolt.Open(p, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *bolt.Tx) error {
				v1, _ := tx.CreateBucket([]byte("v1"))
				ns, _ := v1.CreateBucket([]byte("default"))
				cs, _ := ns.CreateBucket([]byte("containers"))
				ctr, _ := cs.CreateBucket([]byte("web"))
				ctr.Put([]byte("snapshotter"), []byte(c.snapshotter))
				ctr.Put([]byte("snapshotKey"), []byte("web"))
				return ctr.Put([]byte("image"), []byte("docker.io/library/nginx:1"))
			})
			db.Close()
			if err != nil {
				t.Fatal(err)
			}
			v, err := volume.Open(volume.Config{Root: root})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			ctr, err := v.Find("", "web")
			if err != nil {
				t.Fatal(err)
			}
			signer, _ := newSigner(t)
			_, err = v.Acquire(t.Context(), ctr, volume.AcquireOptions{Store: mustStore(t, t.TempDir()), Signer: signer})
			want := "unsupported: container web uses the " + c.want + " snapshotter; this reads the overlayfs and native snapshotters only"
			if !errors.Is(err, volume.ErrUnsupported) || err.Error() != want {
				t.Fatalf("Acquire: %v\nwant: %s", err, want)
			}
			if l := v.List(); l.Namespaces[0].Containers[0].Unsupported == "" {
				t.Errorf("--list does not say it is unsupported")
			}
		})
	}
}
