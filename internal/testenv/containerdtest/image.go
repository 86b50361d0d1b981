package containerdtest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// File is one entry of a layer.
type File struct {
	Path     string // relative, e.g. "etc/passwd"
	Type     byte   // tar.TypeReg (default), TypeDir, TypeSymlink, TypeLink
	Mode     int64  // default 0644 for files, 0755 for directories
	Content  []byte
	Linkname string // for symlinks and hard links
	UID, GID int
}

// Whiteout is the OCI whiteout that deletes p in the layers below.
func Whiteout(p string) File {
	return File{Path: path.Join(path.Dir(p), ".wh."+path.Base(p))}
}

// Opaque is the OCI marker that hides what the layers below have in directory dir.
func Opaque(dir string) File { return File{Path: path.Join(dir, ".wh..wh..opq")} }

// Layer is one image layer.
type Layer struct {
	Files       []File
	Compression string // "" (plain tar), "gzip" or "zstd"
}

// Image describes an image to build.
type Image struct {
	Name       string // e.g. docker.io/warren/test:1
	Layers     []Layer
	Entrypoint []string
}

// Built is an image built by BuildImage.
type Built struct {
	Tarball  string // the OCI image layout, as a tar, for ctr images import
	Manifest ocispec.Descriptor
	Config   ocispec.Descriptor
	Layers   []ocispec.Descriptor
	DiffIDs  []digest.Digest
}

var layerTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// BuildImage builds img as an OCI image layout tar in dir: one blob per layer (compressed as asked), the config,
// the manifest (linux on this machine's architecture) and index.json naming the image.
func BuildImage(dir string, img Image) (*Built, error) {
	b := &Built{}
	blobs := map[digest.Digest][]byte{}
	add := func(mt string, data []byte) ocispec.Descriptor {
		d := digest.FromBytes(data)
		blobs[d] = data
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(data))}
	}
	for i, l := range img.Layers {
		raw, err := layerTar(l.Files)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		b.DiffIDs = append(b.DiffIDs, digest.FromBytes(raw))
		data, mt := raw, ocispec.MediaTypeImageLayer
		switch l.Compression {
		case "gzip":
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			zw.Write(raw)
			zw.Close()
			data, mt = buf.Bytes(), ocispec.MediaTypeImageLayerGzip
		case "zstd":
			zw, err := zstd.NewWriter(nil)
			if err != nil {
				return nil, err
			}
			data, mt = zw.EncodeAll(raw, nil), ocispec.MediaTypeImageLayerZstd
			zw.Close()
		case "":
		default:
			return nil, fmt.Errorf("layer %d: unknown compression %q", i, l.Compression)
		}
		b.Layers = append(b.Layers, add(mt, data))
	}
	cfg := ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Config:   ocispec.ImageConfig{Entrypoint: img.Entrypoint, Env: []string{"PATH=/", "API_TOKEN=s3cr3t-in-the-image"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: b.DiffIDs},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	b.Config = add(ocispec.MediaTypeImageConfig, cfgJSON)
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: b.Config, Layers: b.Layers}
	mJSON, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	b.Manifest = add(ocispec.MediaTypeImageManifest, mJSON)
	named := b.Manifest
	named.Annotations = map[string]string{"io.containerd.image.name": img.Name, ocispec.AnnotationRefName: "latest"}
	named.Platform = &cfg.Platform
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{named}}
	idxJSON, err := json.Marshal(idx)
	if err != nil {
		return nil, err
	}

	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	put := func(name string, data []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: layerTime})
		tw.Write(data)
	}
	put(ocispec.ImageLayoutFile, []byte(`{"imageLayoutVersion":"1.0.0"}`))
	put(ocispec.ImageIndexFile, idxJSON)
	for d, data := range blobs {
		put("blobs/"+d.Algorithm().String()+"/"+d.Encoded(), data)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b.Tarball = filepath.Join(dir, "image-"+b.Manifest.Digest.Encoded()[:12]+".tar")
	return b, os.WriteFile(b.Tarball, out.Bytes(), 0o600)
}

// layerTar writes a layer's files as a tar; parent directories a file needs and no entry declares come first.
func layerTar(files []File) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	declared := map[string]bool{}
	for _, f := range files {
		if f.Type == tar.TypeDir {
			declared[path.Clean(f.Path)] = true
		}
	}
	made := map[string]bool{}
	for _, f := range files {
		for d := path.Dir(path.Clean(f.Path)); d != "." && d != "/"; d = path.Dir(d) {
			if !declared[d] {
				made[d] = true
			}
		}
	}
	var parents []string
	for d := range made {
		parents = append(parents, d)
	}
	sort.Strings(parents) // a parent sorts before its children
	for _, d := range parents {
		if err := tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: layerTime}); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		h := &tar.Header{Name: f.Path, Typeflag: f.Type, Mode: f.Mode, Uid: f.UID, Gid: f.GID, ModTime: layerTime, Linkname: f.Linkname}
		switch f.Type {
		case 0, tar.TypeReg:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Content))
			if h.Mode == 0 {
				h.Mode = 0o644
			}
		case tar.TypeDir:
			h.Name = f.Path + "/"
			if h.Mode == 0 {
				h.Mode = 0o755
			}
		case tar.TypeLink:
			if h.Mode == 0 {
				h.Mode = 0o644 // the target's, as tar writers give it: extraction applies it to the shared inode
			}
		default:
			if h.Mode == 0 {
				h.Mode = 0o777
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Content); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// SHA256 is the hex sha256 of data, as the statement lists it.
func SHA256(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// FSOps builds the fsops program (static, CGO_ENABLED=0) and returns its bytes, to be planted in an image: a
// container runs it to write into its writable layer. See fsops/main.go for its operations.
func FSOps(t testing.TB) []byte {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(t.TempDir(), "fsops")
	_, self, _, _ := runtime.Caller(0)
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./fsops")
	cmd.Dir = filepath.Dir(self)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("containerdtest: building fsops: %v\n%s", err, msg)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// DriftImage is an image of three layers (gzip, zstd, plain) with a whiteout of a directory, an opaque directory, a
// whiteout of a file, a symlink and a hard link, fsops as /fsops and its entrypoint: with DriftOps, the scenario
// whose drift the volume mode and the node mode read.
func DriftImage(name string, fsops []byte) Image {
	return Image{
		Name:       name,
		Entrypoint: []string{"/fsops"},
		Layers: []Layer{
			{Compression: "gzip", Files: []File{
				{Path: "fsops", Mode: 0o755, Content: fsops},
				{Path: "etc", Type: tar.TypeDir},
				{Path: "etc/keep.txt", Content: []byte("keep me\n")},
				{Path: "etc/old.txt", Content: []byte("old\n")},
				{Path: "etc/changed.txt", Content: []byte("original\n")},
				{Path: "etc/mode.txt", Content: []byte("mode\n")},
				{Path: "etc/removed-in-l3", Content: []byte("gone in layer 3\n")},
				{Path: "etc/link", Type: tar.TypeSymlink, Linkname: "keep.txt"},
				{Path: "opq/a", Content: []byte("a\n")},
				{Path: "opq/b", Content: []byte("b\n")},
				{Path: "gone/x", Content: []byte("x\n")},
				{Path: "layerdir/old", Content: []byte("lower\n")},
			}},
			{Compression: "zstd", Files: []File{
				Whiteout("gone"),
				Opaque("layerdir"),
				{Path: "layerdir/new", Content: []byte("upper\n")},
				{Path: "bin/tool", Mode: 0o755, Content: []byte("#!/bin/sh\necho tool\n")},
				{Path: "bin/tool-link", Type: tar.TypeLink, Linkname: "bin/tool", Mode: 0o755},
			}},
			{Files: []File{
				Whiteout("etc/removed-in-l3"),
				{Path: "etc/l3.txt", Content: []byte("three\n")},
			}},
		},
	}
}

// DriftOps is what the DriftImage's container does to its writable layer (fsops arguments): a file written, one
// deleted, one's content and another's mode changed, a directory replaced, a socket left behind.
var DriftOps = []string{
	"write", "/new.txt", "planted by the container\n",
	"rm", "/etc/old.txt",
	"write", "/etc/changed.txt", "changed by the container\n",
	"chmod", "600", "/etc/mode.txt",
	"rmrf", "/opq", "mkdir", "/opq", "write", "/opq/fresh", "fresh\n",
	"socket", "/app.sock",
}
