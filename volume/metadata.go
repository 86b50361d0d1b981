package volume

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// What containerd's metadata plugin keeps in meta.db (github.com/containerd/containerd core/metadata/buckets.go,
// schema v1, the same from containerd 1.0 to 2.x):
//
//	v1/version                                   schema minor version (varint)
//	v1/<ns>/containers/<id>/{image,snapshotter,snapshotKey,spec,sandboxid,createdat,updatedat}, runtime/{name,options},
//	                        labels/*, extensions/*
//	v1/<ns>/images/<name>/{createdat,updatedat}, target/{digest,mediatype,size}, labels/*
//	v1/<ns>/snapshots/<snapshotter>/<key>/{name,parent,createdat,updatedat}, children/*, labels/*
//	v1/<ns>/content/blob/<digest>/{size,createdat,updatedat}, labels/*
//
// Times are time.Time.MarshalBinary, sizes varints, spec and extensions protobuf google.protobuf.Any.

// Container is a container record of meta.db.
type Container struct {
	Namespace   string            `json:"namespace"`
	ID          string            `json:"id"`
	Image       string            `json:"image,omitempty"`
	Snapshotter string            `json:"snapshotter,omitempty"`
	SnapshotKey string            `json:"snapshotKey,omitempty"`
	Runtime     string            `json:"runtime,omitempty"`
	SandboxID   string            `json:"sandboxID,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	CreatedAt   time.Time         `json:"createdAt,omitzero"`
	UpdatedAt   time.Time         `json:"updatedAt,omitzero"`
	// Spec is the OCI runtime spec the container was created with (JSON), when meta.db holds one.
	Spec json.RawMessage `json:"spec,omitempty"`
	// SpecType is the spec's type URL.
	SpecType string `json:"specType,omitempty"`
	// Extensions are the containerd extensions, by name (CRI keeps its container metadata in one).
	Extensions map[string]Any `json:"extensions,omitempty"`
}

// Any is a protobuf Any of meta.db: its JSON value when it holds JSON (typeurl's JSON types), else the raw bytes.
type Any struct {
	TypeURL string          `json:"typeURL"`
	JSON    json.RawMessage `json:"json,omitempty"`
	Bytes   []byte          `json:"bytes,omitempty"`
}

// Image is an image record of meta.db.
type Image struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Target    Descriptor        `json:"target"`
	Labels    map[string]string `json:"labels,omitempty"`
	CreatedAt time.Time         `json:"createdAt,omitzero"`
	UpdatedAt time.Time         `json:"updatedAt,omitzero"`
}

// Descriptor is an OCI content descriptor as meta.db keeps it.
type Descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// SnapshotRef is meta.db's record of a snapshot: the namespace's key and the snapshotter's own name for it.
type SnapshotRef struct {
	Snapshotter string            `json:"snapshotter"`
	Key         string            `json:"key"`
	Name        string            `json:"name"` // the key in the snapshotter's own database
	Parent      string            `json:"parent,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	CreatedAt   time.Time         `json:"createdAt,omitzero"`
}

// Blob is meta.db's record of a blob of the content store.
type Blob struct {
	Digest string            `json:"digest"`
	Size   int64             `json:"size"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Namespace is what one containerd namespace holds.
type Namespace struct {
	Name       string                            `json:"name"`
	Labels     map[string]string                 `json:"labels,omitempty"`
	Containers []*Container                      `json:"containers"`
	Images     []*Image                          `json:"images"`
	Snapshots  map[string]map[string]SnapshotRef `json:"-"` // snapshotter -> key -> ref
	Blobs      map[string]Blob                   `json:"-"`
}

// metaState is everything of meta.db this package reads, read in one transaction.
type metaState struct {
	SchemaVersion int64
	Namespaces    []*Namespace
}

// maxRecords bounds how many records of one kind are read from a bucket, so that a hostile database cannot make
// the reader allocate without end.
const maxRecords = 1 << 20

func readMetaDB(d *boltDB) (*metaState, error) {
	st := &metaState{}
	err := d.view(func(tx *bolt.Tx) error {
		v1 := tx.Bucket([]byte("v1"))
		if v1 == nil {
			var top []string
			_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
				if len(top) < 5 {
					top = append(top, printable(name))
				}
				return nil
			})
			return fmt.Errorf("%w: %s is a bbolt database without containerd's v1 bucket (its buckets: %v): not containerd's meta.db", ErrCorrupt, d.path, top)
		}
		if v := v1.Get([]byte("version")); v != nil {
			n, k := binary.Varint(v)
			if k <= 0 {
				return fmt.Errorf("%w: %s: v1/version is not a varint", ErrCorrupt, d.path)
			}
			st.SchemaVersion = n
		}
		err := forEachBucket(v1, func(name string, b *bolt.Bucket) error {
			ns, err := readNamespace(name, b)
			if err != nil {
				return fmt.Errorf("namespace %q: %v", printable([]byte(name)), err)
			}
			st.Namespaces = append(st.Namespaces, ns)
			return nil
		})
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrCorrupt, d.path, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

func readNamespace(name string, b *bolt.Bucket) (*Namespace, error) {
	ns := &Namespace{Name: name, Labels: readLabels(b.Bucket([]byte("labels"))),
		Snapshots: map[string]map[string]SnapshotRef{}, Blobs: map[string]Blob{}}
	if cb := b.Bucket([]byte("containers")); cb != nil {
		err := forEachBucket(cb, func(id string, c *bolt.Bucket) error {
			ctr, err := readContainer(name, id, c)
			if err != nil {
				return fmt.Errorf("container %q: %v", printable([]byte(id)), err)
			}
			ns.Containers = append(ns.Containers, ctr)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if ib := b.Bucket([]byte("images")); ib != nil {
		err := forEachBucket(ib, func(n string, i *bolt.Bucket) error {
			img := &Image{Namespace: name, Name: n, Labels: readLabels(i.Bucket([]byte("labels")))}
			var err error
			if img.CreatedAt, img.UpdatedAt, err = readTimes(i); err != nil {
				return fmt.Errorf("image %q: %v", printable([]byte(n)), err)
			}
			if t := i.Bucket([]byte("target")); t != nil {
				img.Target = Descriptor{MediaType: string(t.Get([]byte("mediatype"))), Digest: string(t.Get([]byte("digest")))}
				if v := t.Get([]byte("size")); v != nil {
					img.Target.Size, _ = binary.Varint(v)
				}
			}
			ns.Images = append(ns.Images, img)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if sb := b.Bucket([]byte("snapshots")); sb != nil {
		err := forEachBucket(sb, func(snapshotter string, s *bolt.Bucket) error {
			refs := map[string]SnapshotRef{}
			ns.Snapshots[snapshotter] = refs
			return forEachBucket(s, func(key string, k *bolt.Bucket) error {
				ref := SnapshotRef{Snapshotter: snapshotter, Key: key, Name: string(k.Get([]byte("name"))),
					Parent: string(k.Get([]byte("parent"))), Labels: readLabels(k.Bucket([]byte("labels")))}
				ref.CreatedAt, _, _ = readTimes(k)
				refs[key] = ref
				return nil
			})
		})
		if err != nil {
			return nil, err
		}
	}
	if blobs := bucketPath(b, "content", "blob"); blobs != nil {
		err := forEachBucket(blobs, func(dgst string, k *bolt.Bucket) error {
			bl := Blob{Digest: dgst, Labels: readLabels(k.Bucket([]byte("labels")))}
			if v := k.Get([]byte("size")); v != nil {
				bl.Size, _ = binary.Varint(v)
			}
			ns.Blobs[dgst] = bl
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(ns.Containers, func(i, j int) bool { return ns.Containers[i].ID < ns.Containers[j].ID })
	sort.Slice(ns.Images, func(i, j int) bool { return ns.Images[i].Name < ns.Images[j].Name })
	return ns, nil
}

func readContainer(ns, id string, b *bolt.Bucket) (*Container, error) {
	c := &Container{Namespace: ns, ID: id, Image: string(b.Get([]byte("image"))), Snapshotter: string(b.Get([]byte("snapshotter"))),
		SnapshotKey: string(b.Get([]byte("snapshotKey"))), SandboxID: string(b.Get([]byte("sandboxid"))),
		Labels: readLabels(b.Bucket([]byte("labels")))}
	var err error
	if c.CreatedAt, c.UpdatedAt, err = readTimes(b); err != nil {
		return nil, err
	}
	if rb := b.Bucket([]byte("runtime")); rb != nil {
		c.Runtime = string(rb.Get([]byte("name")))
	}
	if v := b.Get([]byte("spec")); v != nil {
		a, err := readAny(v)
		if err != nil {
			return nil, fmt.Errorf("spec: %v", err)
		}
		c.SpecType, c.Spec = a.TypeURL, a.JSON
	}
	if eb := b.Bucket([]byte("extensions")); eb != nil {
		c.Extensions = map[string]Any{}
		err := eb.ForEach(func(k, v []byte) error {
			if v == nil || len(c.Extensions) >= 1024 {
				return nil
			}
			a, err := readAny(v)
			if err != nil {
				return fmt.Errorf("extension %q: %v", printable(k), err)
			}
			c.Extensions[string(k)] = a
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return c, nil
}

// readAny decodes a protobuf Any; its value is kept as JSON when it is JSON (containerd's typeurl marshals the
// OCI spec and CRI's metadata as JSON).
func readAny(v []byte) (Any, error) {
	var a anypb.Any
	if err := proto.Unmarshal(v, &a); err != nil {
		return Any{}, fmt.Errorf("not a protobuf Any: %v", err)
	}
	out := Any{TypeURL: a.TypeUrl}
	if json.Valid(a.Value) {
		out.JSON = json.RawMessage(append([]byte(nil), a.Value...))
	} else {
		out.Bytes = append([]byte(nil), a.Value...)
	}
	return out, nil
}

func readTimes(b *bolt.Bucket) (created, updated time.Time, err error) {
	for _, f := range []struct {
		key string
		t   *time.Time
	}{{"createdat", &created}, {"updatedat", &updated}} {
		if v := b.Get([]byte(f.key)); v != nil {
			if err := f.t.UnmarshalBinary(v); err != nil {
				return time.Time{}, time.Time{}, fmt.Errorf("%s: %v", f.key, err)
			}
		}
	}
	return created, updated, nil
}

func readLabels(b *bolt.Bucket) map[string]string {
	if b == nil {
		return nil
	}
	labels := map[string]string{}
	_ = b.ForEach(func(k, v []byte) error {
		if v != nil && len(labels) < 4096 {
			labels[string(k)] = string(v)
		}
		return nil
	})
	if len(labels) == 0 {
		return nil
	}
	return labels
}

// forEachBucket calls fn for every sub-bucket of b, at most maxRecords of them.
func forEachBucket(b *bolt.Bucket, fn func(name string, b *bolt.Bucket) error) error {
	n := 0
	return b.ForEachBucket(func(k []byte) error {
		if n++; n > maxRecords {
			return fmt.Errorf("more than %d records", maxRecords)
		}
		child := b.Bucket(k)
		if child == nil { // listed but not found: keys out of order in a damaged page
			return fmt.Errorf("bucket %q is listed but cannot be opened", printable(k))
		}
		return fn(string(k), child)
	})
}

func bucketPath(b *bolt.Bucket, names ...string) *bolt.Bucket {
	for _, n := range names {
		if b == nil {
			return nil
		}
		b = b.Bucket([]byte(n))
	}
	return b
}

// printable makes a key from the database fit for a message: valid UTF-8, at most 80 bytes.
func printable(b []byte) string {
	s := string(b)
	if !utf8.ValidString(s) {
		s = fmt.Sprintf("%q", s)
	}
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return s
}
