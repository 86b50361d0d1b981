package volume_test

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/warren-dev/warren/internal/testenv/containerdtest"
	"github.com/warren-dev/warren/volume"
)

// BenchmarkVolumeExport exports a container of a 256 MiB image (two layers of 64 files of 2 MiB, zstd and plain)
// from a real containerd's root, with the layer blobs and then from the snapshot directories alone. MB/s is of
// evidence.tar written. go test ./volume -run '^$' -bench VolumeExport -benchtime 3x
func BenchmarkVolumeExport(b *testing.B) {
	cd := containerdtest.ForTest(b)
	var layers []containerdtest.Layer
	for l, comp := range []string{"zstd", ""} {
		var files []containerdtest.File
		for i := range 64 {
			data := make([]byte, 2<<20)
			rand.Read(data)
			files = append(files, containerdtest.File{Path: fmt.Sprintf("data/l%d/f%02d", l, i), Content: data})
		}
		layers = append(layers, containerdtest.Layer{Compression: comp, Files: files})
	}
	layers[0].Files = append(layers[0].Files, containerdtest.File{Path: "fsops", Mode: 0o755, Content: containerdtest.FSOps(b)})
	img, err := containerdtest.BuildImage(b.TempDir(), containerdtest.Image{Name: "docker.io/warren/bench:1", Layers: layers})
	if err != nil {
		b.Fatal(err)
	}
	if err := cd.Import(b.Context(), "k8s.io", img.Tarball, "overlayfs"); err != nil {
		b.Fatal(err)
	}
	if _, err := cd.Run(b.Context(), "k8s.io", containerdtest.RunSpec{ID: "bench", Image: "docker.io/warren/bench:1", Snapshotter: "overlayfs",
		Args: []string{"/fsops", "write", "/x", "y"}}); err != nil {
		b.Fatal(err)
	}
	if err := cd.Stop(); err != nil {
		b.Fatal(err)
	}
	signer, _ := newSigner(b)
	run := func(b *testing.B, want string) {
		var bytes int64
		for b.Loop() {
			out := b.TempDir()
			v, err := volume.Open(volume.Config{Root: cd.Root})
			if err != nil {
				b.Fatal(err)
			}
			c, err := v.Find("", "bench")
			if err != nil {
				b.Fatal(err)
			}
			res, err := v.Acquire(b.Context(), c, volume.AcquireOptions{Store: mustStore(b, out), Signer: signer})
			v.Close()
			if err != nil {
				b.Fatal(err)
			}
			if res.Method != want {
				b.Fatalf("method %s, want %s", res.Method, want)
			}
			bytes = res.Bytes
			os.RemoveAll(out)
		}
		b.SetBytes(bytes)
	}
	b.Run("content", func(b *testing.B) { run(b, volume.MethodContent) })
	for _, l := range img.Layers {
		os.Remove(filepath.Join(cd.Root, volume.ContentBlobDir, "sha256", l.Digest.Encoded()))
	}
	b.Run("snapshots", func(b *testing.B) { run(b, volume.MethodSnapshot) })
}
