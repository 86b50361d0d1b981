package volume

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// metaLike writes a bbolt database shaped like containerd's meta.db: v1/version, a namespace with containers,
// images and snapshots, labels as nested inline buckets, and enough containers for branch pages.
func metaLike(t testing.TB, containers int) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "meta.db")
	db, err := bolt.Open(p, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		v1, _ := tx.CreateBucket([]byte("v1"))
		v1.Put([]byte("version"), binary.AppendVarint(nil, 3))
		ns, _ := v1.CreateBucket([]byte("k8s.io"))
		cs, _ := ns.CreateBucket([]byte("containers"))
		for i := range containers {
			c, _ := cs.CreateBucket(fmt.Appendf(nil, "container-%04d", i))
			c.Put([]byte("image"), []byte("docker.io/library/busybox:latest"))
			c.Put([]byte("snapshotter"), []byte("overlayfs"))
			c.Put([]byte("snapshotKey"), fmt.Appendf(nil, "container-%04d", i))
			ts, _ := time.Unix(1700000000, 0).MarshalBinary()
			c.Put([]byte("createdat"), ts)
			l, _ := c.CreateBucket([]byte("labels"))
			l.Put([]byte("io.kubernetes.pod.name"), fmt.Appendf(nil, "pod-%d", i))
		}
		img, _ := ns.CreateBucket([]byte("images"))
		b, _ := img.CreateBucket([]byte("docker.io/library/busybox:latest"))
		tg, _ := b.CreateBucket([]byte("target"))
		tg.Put([]byte("digest"), []byte("sha256:"+strings.Repeat("ab", 32)))
		tg.Put([]byte("mediatype"), []byte("application/vnd.oci.image.index.v1+json"))
		tg.Put([]byte("size"), binary.AppendVarint(nil, 1234))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// readBytes runs what Open does with a meta.db: copy, check, open with bbolt, read containerd's buckets.
func readBytes(t testing.TB, data []byte) (*metaState, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "meta.db")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := openBolt(p, t.TempDir(), 1<<30, time.Second)
	if err != nil {
		return nil, err
	}
	defer d.close()
	return readMetaDB(d)
}

func TestBoltMetaLike(t *testing.T) {
	st, err := readBytes(t, metaLike(t, 300))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Namespaces) != 1 || len(st.Namespaces[0].Containers) != 300 || st.SchemaVersion != 3 {
		t.Fatalf("read %d namespaces, schema %d", len(st.Namespaces), st.SchemaVersion)
	}
	c := st.Namespaces[0].Containers[7]
	if c.ID != "container-0007" || c.Labels["io.kubernetes.pod.name"] != "pod-7" || !c.CreatedAt.Equal(time.Unix(1700000000, 0)) {
		t.Fatalf("container %+v", c)
	}
}

// A branch page that points at itself would send bbolt into a loop without end (its cursor and Check recurse
// or iterate through pages without a visited set; a stack overflow cannot be recovered): the page check refuses
// it before bbolt reads the file.
func TestBoltCycleRefused(t *testing.T) {
	data := metaLike(t, 300)
	m, err := pickMeta(data)
	if err != nil {
		t.Fatal(err)
	}
	ps := uint64(m.pageSize)
	le := binary.LittleEndian
	// The root bucket's leaf holds "v1"; its value's root page is v1's tree. Walk down to the containers bucket's
	// branch page through the checker's own view of the file: find any branch page reachable from the root.
	var branch uint64
	for id := uint64(2); id < m.hwm; id++ {
		if le.Uint16(data[id*ps+8:]) == branchPageFlag && le.Uint64(data[id*ps:]) == id {
			branch = id
			break
		}
	}
	if branch == 0 {
		t.Fatal("no branch page in the test database")
	}
	if err := checkBolt(data); err != nil {
		t.Fatalf("the database before the change: %v", err)
	}
	le.PutUint64(data[branch*ps+pageHeaderSize+8:], branch) // element 0 now points at its own page
	err = checkBolt(data)
	want := fmt.Sprintf("page %d: reached twice (a cycle or a shared page)", branch)
	if err == nil || err.Error() != want {
		t.Fatalf("checkBolt: %v, want %s", err, want)
	}
	_, err = readBytes(t, data)
	if !errors.Is(err, ErrCorrupt) || !strings.HasSuffix(err.Error(), want) {
		t.Fatalf("open: %v", err)
	}
}

// An element pointing past the end of its page, a page id past the file, a bucket value too short: each refused.
func TestBoltCorruptPages(t *testing.T) {
	base := metaLike(t, 300)
	m, _ := pickMeta(base)
	ps := uint64(m.pageSize)
	le := binary.LittleEndian
	find := func(data []byte, flag uint16) uint64 {
		for id := uint64(2); id < m.hwm; id++ {
			if le.Uint16(data[id*ps+8:]) == flag && le.Uint64(data[id*ps:]) == id {
				return id
			}
		}
		t.Fatalf("no page of type %#x", flag)
		return 0
	}
	cases := []struct {
		name   string
		change func(data []byte) uint64
		want   string
	}{
		{"branch element to a page past the file", func(d []byte) uint64 {
			id := find(d, branchPageFlag)
			le.PutUint64(d[id*ps+pageHeaderSize+8:], 1<<40)
			return id
		}, "page 1099511627776: outside the"},
		{"leaf element past its page", func(d []byte) uint64 {
			id := m.root
			le.PutUint32(d[id*ps+pageHeaderSize+4:], 1<<20) // pos of element 0
			return id
		}, "element 0 is outside the page"},
		{"element count larger than the page", func(d []byte) uint64 {
			id := find(d, branchPageFlag)
			le.PutUint16(d[id*ps+10:], 60000)
			return id
		}, "60000 elements do not fit in it"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := append([]byte(nil), base...)
			c.change(data)
			_, err := readBytes(t, data)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%v, want an ErrCorrupt containing %q", err, c.want)
			}
		})
	}
}

// FuzzOpenMetaDB: whatever the bytes of meta.db, reading them returns a result or an error, and never gets as far
// as a panic inside bbolt (the page check must have refused what bbolt cannot read).
func FuzzOpenMetaDB(f *testing.F) {
	f.Add(metaLike(f, 3))
	f.Add(metaLike(f, 40))
	f.Add([]byte("not a database"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := readBytes(t, data)
		var pe *panicError
		if errors.As(err, &pe) {
			t.Fatalf("bbolt panicked on a file the page check let through: %v\n%s", err, pe.stack)
		}
	})
}
