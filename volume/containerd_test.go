package volume_test

import (
	"archive/tar"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/internal/testenv/containerdtest"
	"github.com/warren-dev/warren/volume"
)

// scenario is a container run by a real containerd on a test image, then containerd stopped: the volume mode
// reads its root as it would a node's disk.
type scenario struct {
	cd          *containerdtest.Containerd
	img         *containerdtest.Built
	snapshotter string
	id          string
}

// The image and what the container does to its writable layer: containerdtest's drift scenario, which the node
// mode's tests run too.
func testImage(fsops []byte) containerdtest.Image {
	return containerdtest.DriftImage("docker.io/warren/volume-test:1", fsops)
}

var fsopsArgs = containerdtest.DriftOps

var k8sLabels = map[string]string{
	"io.kubernetes.pod.namespace":    "payments",
	"io.kubernetes.pod.name":         "api-7f9c",
	"io.kubernetes.container.name":   "main",
	"io.kubernetes.pod.uid":          "0e6c3d2a-uid",
	"io.cri-containerd.kind":         "container",
	"io.kubernetes.container.secret": "not a secret: a label",
}

func startScenario(t *testing.T, snapshotter string) *scenario {
	t.Helper()
	ctx := t.Context()
	s := &scenario{snapshotter: snapshotter, id: "c-" + snapshotter}
	start := time.Now()
	s.cd = containerdtest.ForTest(t)
	fsops := containerdtest.FSOps(t)
	var err error
	s.img, err = containerdtest.BuildImage(t.TempDir(), testImage(fsops))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := s.cd.Import(ctx, "k8s.io", s.img.Tarball, snapshotter); err != nil {
		t.Fatal(err)
	}
	importTook := time.Since(t0)
	t0 = time.Now()
	out, err := s.cd.Run(ctx, "k8s.io", containerdtest.RunSpec{ID: s.id, Image: "docker.io/warren/volume-test:1", Snapshotter: snapshotter,
		Labels: k8sLabels, Args: append([]string{"/fsops"}, fsopsArgs...)})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "fsops: done") {
		t.Fatalf("the container did not finish its writes: %s", out)
	}
	t.Logf("containerd start %s, image import %s, container run %s (total %s)", s.cd.StartDuration.Round(time.Millisecond),
		importTook.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	return s
}

func newSigner(t testing.TB) (*evidence.Signer, *evidence.Keys) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := evidence.NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	k, err := evidence.NewKeys(pub)
	if err != nil {
		t.Fatal(err)
	}
	return s, k
}

// archive reads an evidence.tar: regular files' contents, and every entry's header.
func readArchive(t *testing.T, path string) (map[string][]byte, map[string]*tar.Header) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files, hdrs := map[string][]byte{}, map[string]*tar.Header{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		hdrs[name] = h
		if h.Typeflag == tar.TypeReg {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[name] = data
		}
	}
	return files, hdrs
}

func acquire(t *testing.T, root, out, id string, signer *evidence.Signer) *volume.Result {
	t.Helper()
	v, err := volume.Open(volume.Config{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	c, err := v.Find("", id)
	if err != nil {
		t.Fatal(err)
	}
	store, err := evidence.NewLocalStore(out)
	if err != nil {
		t.Fatal(err)
	}
	res, err := v.Acquire(t.Context(), c, volume.AcquireOptions{Store: store, Signer: signer, Case: "case-7", Examiner: "test", Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestVolumeOverlayfs(t *testing.T) { testVolume(t, volume.SnapshotterOverlay) }

func TestVolumeNative(t *testing.T) { testVolume(t, volume.SnapshotterNative) }

func testVolume(t *testing.T, snapshotter string) {
	s := startScenario(t, snapshotter)
	signer, keys := newSigner(t)

	// While containerd runs, it holds meta.db under an exclusive lock: the volume mode says so and stops.
	_, err := volume.Open(volume.Config{Root: s.cd.Root, LockWait: 200 * time.Millisecond})
	want := "database in use: " + filepath.Join(s.cd.Root, volume.MetaDBPath) + " is locked by another process, most likely a containerd running on this root: " +
		"stop it first, or acquire a snapshot of the volume (for a live node, use the node mode)"
	if !errors.Is(err, volume.ErrLocked) || err.Error() != want {
		t.Fatalf("Open with containerd running: %v\nwant: %s", err, want)
	}
	if err := s.cd.Stop(); err != nil {
		t.Fatal(err)
	}

	out := t.TempDir()
	t0 := time.Now()
	res := acquire(t, s.cd.Root, out, s.id, signer)
	took := time.Since(t0)
	t.Logf("export: %d bytes of files, archive %d bytes, in %s (%.1f MB/s)", res.FileBytes, res.Bytes, took.Round(time.Millisecond),
		float64(res.Bytes)/took.Seconds()/1e6)
	if res.Dir != "payments/api-7f9c/main" {
		t.Fatalf("target dir %q, want payments/api-7f9c/main (from the Kubernetes labels)", res.Dir)
	}
	if res.Method != volume.MethodContent {
		t.Fatalf("method %q, want %q (every blob is in the content store)", res.Method, volume.MethodContent)
	}
	checkExport(t, s, filepath.Join(out, res.Dir))
	checkStatement(t, res, s)

	rep, err := evidence.Verify(t.Context(), mustStore(t, out), keys)
	if err != nil || len(rep.Failures) > 0 {
		t.Fatalf("verify: %v %v", err, rep.Failures)
	}

	// The layers' blobs discarded after unpacking (as EKS does): the image comes from the snapshot directories,
	// and the export is the same.
	for _, l := range s.img.Layers {
		if err := os.Remove(filepath.Join(s.cd.Root, volume.ContentBlobDir, "sha256", l.Digest.Encoded())); err != nil {
			t.Fatal(err)
		}
	}
	out2 := t.TempDir()
	res2 := acquire(t, s.cd.Root, out2, s.id, signer)
	if res2.Method != volume.MethodSnapshot {
		t.Fatalf("method without blobs %q, want %q", res2.Method, volume.MethodSnapshot)
	}
	for _, l := range res2.Layers {
		if l.Source != "snapshot" || l.BlobPresent {
			t.Errorf("layer %s: source %q, blob present %v; want snapshot, false", l.Digest, l.Source, l.BlobPresent)
		}
	}
	checkExport(t, s, filepath.Join(out2, res2.Dir))
	if a, b := changesOf(t, filepath.Join(out, res.Dir)), changesOf(t, filepath.Join(out2, res2.Dir)); !sameChanges(a, b) {
		t.Errorf("drift from snapshots differs from the drift from blobs:\n%v\n%v", a, b)
	}

	// A flipped byte in the archive fails verify, naming the archive and the file.
	arch := filepath.Join(out2, res2.Dir, evidence.ArchiveName)
	data, err := os.ReadFile(arch)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := readArchive(t, arch)
	h := strings.Index(string(data), "container/fs/new.txt")
	i := strings.Index(string(data[h+1:]), "planted by the container") + h + 1
	if h < 0 || i <= h || files["container/fs/new.txt"] == nil {
		t.Fatal("planted file not found in the archive")
	}
	data[i] ^= 0x20
	if err := os.WriteFile(arch, data, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err = evidence.Verify(t.Context(), mustStore(t, out2), keys)
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, f := range rep.Failures {
		reasons = append(reasons, f.String())
	}
	wantFile := "payments/api-7f9c/main/evidence.tar:container/fs/new.txt: sha256 "
	if !slices.ContainsFunc(reasons, func(r string) bool { return strings.HasPrefix(r, wantFile) }) ||
		!slices.ContainsFunc(reasons, func(r string) bool { return strings.HasPrefix(r, "payments/api-7f9c/main/evidence.tar: sha256 ") }) {
		t.Fatalf("verify after a flipped byte: %v", reasons)
	}
	if snapshotter == volume.SnapshotterOverlay {
		layerCache(t, s, res2, signer)
		missingLayer(t, s, res2, signer, keys)
	}
}

// layerCache: a layer's snapshot directory is a symbolic link into the snapshotter's layer cache, by the node's
// absolute path (as GKE lays them out): it is followed on the volume, not on the examiner's machine.
func layerCache(t *testing.T, s *scenario, prev *volume.Result, signer *evidence.Signer) {
	dir := prev.Layers[1].Snapshot.Dir // io.containerd.snapshotter.v1.overlayfs/snapshots/N/fs
	cache := "io.containerd.snapshotter.v1.overlayfs/layers/l1"
	os.MkdirAll(filepath.Join(s.cd.Root, filepath.Dir(cache)), 0o700)
	if err := os.Rename(filepath.Join(s.cd.Root, dir), filepath.Join(s.cd.Root, cache)); err != nil {
		t.Fatal(err)
	}
	link := "/var/lib/containerd/" + cache
	if err := os.Symlink(link, filepath.Join(s.cd.Root, dir)); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	res := acquire(t, s.cd.Root, out, s.id, signer)
	if l := res.Layers[1]; l.Source != "snapshot" || l.Snapshot.Dir != cache || l.Snapshot.Link != link {
		t.Fatalf("layer 1: %+v, snapshot %+v", l, l.Snapshot)
	}
	files, _ := readArchive(t, filepath.Join(out, res.Dir, evidence.ArchiveName))
	if string(files["container/fs/layerdir/new"]) != "upper\n" {
		t.Fatalf("layerdir/new from the layer cache: %q", files["container/fs/layerdir/new"])
	}
}

// missingLayer: the first layer's blob is gone and so is its snapshot directory. The export goes on without that
// layer's files and says so in the statement; the other layers and the container's writes are there.
func missingLayer(t *testing.T, s *scenario, prev *volume.Result, signer *evidence.Signer, keys *evidence.Keys) {
	dir := prev.Layers[0].Snapshot.Dir
	if err := os.Rename(filepath.Join(s.cd.Root, dir), filepath.Join(s.cd.Root, dir+".moved")); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	res := acquire(t, s.cd.Root, out, s.id, signer)
	if res.Method != volume.MethodSnapshot || res.Layers[0].Source != "missing" || res.Layers[1].Source != "snapshot" {
		t.Fatalf("method %s, layers %+v", res.Method, res.Layers)
	}
	want := evidence.Skip{Path: "layer " + string(s.img.Layers[0].Digest), Reason: "not-found",
		Detail: "the content store no longer has the blob (discarded after unpacking?); its snapshot directory " + dir + " is not on the volume"}
	if !slices.Contains(res.Statement.Predicate.Skipped, want) {
		t.Fatalf("skipped %+v, want %+v", res.Statement.Predicate.Skipped, want)
	}
	files, _ := readArchive(t, filepath.Join(out, res.Dir, evidence.ArchiveName))
	for p, present := range map[string]bool{"container/fs/etc/keep.txt": false, "container/fs/fsops": false,
		"container/fs/etc/l3.txt": true, "container/fs/layerdir/new": true, "container/fs/new.txt": true} {
		if _, ok := files[p]; ok != present {
			t.Errorf("%s in the archive: %v, want %v", p, ok, present)
		}
	}
	if rep, err := evidence.Verify(t.Context(), mustStore(t, out), keys); err != nil || len(rep.Failures) > 0 {
		t.Fatalf("verify: %v %v", err, rep.Failures)
	}

	// The writable layer gone too: the image alone, and the statement says so.
	upper := res.Chain[0].Dir
	if err := os.Rename(filepath.Join(s.cd.Root, upper), filepath.Join(s.cd.Root, upper+".moved")); err != nil {
		t.Fatal(err)
	}
	res = acquire(t, s.cd.Root, t.TempDir(), s.id, signer)
	want = evidence.Skip{Path: "volume", Reason: "not-found", Detail: "the container's writable layer " + upper + " is not on the volume: its writes are not in the export"}
	if !slices.Contains(res.Statement.Predicate.Skipped, want) || len(res.Changes) != 0 {
		t.Fatalf("skipped %+v (want %+v), changes %v", res.Statement.Predicate.Skipped, want, res.Changes)
	}
}

func mustStore(t testing.TB, dir string) *evidence.LocalStore {
	s, err := evidence.NewLocalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func checkExport(t *testing.T, s *scenario, dir string) {
	t.Helper()
	files, hdrs := readArchive(t, filepath.Join(dir, evidence.ArchiveName))
	fs := func(p string) string { return "container/fs/" + p }
	// The image's files, with the container's changes, whiteouts honoured.
	wantFiles := map[string]string{
		"etc/keep.txt":     "keep me\n",
		"etc/changed.txt":  "changed by the container\n",
		"etc/mode.txt":     "mode\n",
		"etc/l3.txt":       "three\n",
		"layerdir/new":     "upper\n",
		"bin/tool":         "#!/bin/sh\necho tool\n",
		"bin/tool-link":    "#!/bin/sh\necho tool\n",
		"new.txt":          "planted by the container\n",
		"opq/fresh":        "fresh\n",
		"drift-not-a-file": "",
	}
	delete(wantFiles, "drift-not-a-file")
	for p, content := range wantFiles {
		got, ok := files[fs(p)]
		if !ok {
			t.Errorf("%s: not in the archive", fs(p))
			continue
		}
		if string(got) != content {
			t.Errorf("%s: %q, want %q", fs(p), got, content)
		}
	}
	if h := hdrs[fs("etc/mode.txt")]; h == nil || h.Mode&0o777 != 0o600 {
		t.Errorf("etc/mode.txt: header %+v, want mode 0600", h)
	}
	if h := hdrs[fs("etc/link")]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "keep.txt" {
		t.Errorf("etc/link: header %+v, want a symlink to keep.txt", h)
	}
	if h := hdrs[fs("fsops")]; h == nil || h.Mode&0o111 == 0 {
		t.Errorf("fsops: %+v, want an executable file", h)
	}
	for _, gone := range []string{"etc/old.txt", "opq/a", "opq/b", "gone", "gone/x", "layerdir/old", "etc/removed-in-l3",
		".wh.gone", "layerdir/.wh..wh..opq", "etc/.wh.removed-in-l3"} {
		if _, ok := hdrs[fs(gone)]; ok {
			t.Errorf("%s is in the archive; it was deleted", fs(gone))
		}
	}
	for name, h := range hdrs {
		if h.Typeflag == tar.TypeChar && h.Devmajor == 0 && h.Devminor == 0 {
			t.Errorf("%s: an overlayfs whiteout in the export", name)
		}
	}

	// The drift: what the container changed, and its copies.
	changes := changesOf(t, dir)
	byPath := map[string]volume.Change{}
	for _, c := range changes {
		if _, dup := byPath[c.Path]; dup {
			t.Errorf("%s listed twice in the drift", c.Path)
		}
		byPath[c.Path] = c
	}
	expect := []struct {
		path, change string
		what         []string
	}{
		{"new.txt", volume.ChangeAdded, nil},
		{"etc/old.txt", volume.ChangeDeleted, nil},
		{"etc/changed.txt", volume.ChangeChanged, []string{"content"}},
		{"etc/mode.txt", volume.ChangeChanged, []string{"mode"}},
		{"opq/a", volume.ChangeDeleted, nil},
		{"opq/b", volume.ChangeDeleted, nil},
		{"opq/fresh", volume.ChangeAdded, nil},
		{"app.sock", volume.ChangeAdded, nil},
	}
	for _, e := range expect {
		c, ok := byPath[e.path]
		if !ok {
			t.Errorf("drift: %s missing (drift: %v)", e.path, changes)
			continue
		}
		if c.Change != e.change || !containsAll(c.What, e.what) {
			t.Errorf("drift: %s: %s %v, want %s %v", e.path, c.Change, c.What, e.change, e.what)
		}
	}
	if c := byPath["etc/changed.txt"]; c.SHA256 != containerdtest.SHA256([]byte("changed by the container\n")) || c.ImageSHA256 != containerdtest.SHA256([]byte("original\n")) {
		t.Errorf("etc/changed.txt: sha256 %s (image %s)", c.SHA256, c.ImageSHA256)
	}
	if c := byPath["etc/old.txt"]; c.ImageSHA256 != containerdtest.SHA256([]byte("old\n")) {
		t.Errorf("etc/old.txt deleted: image sha256 %q", c.ImageSHA256)
	}
	if s.snapshotter == volume.SnapshotterOverlay {
		if c := byPath["opq"]; !c.Opaque {
			t.Errorf("opq: %+v, want an opaque directory", c)
		}
	}
	for _, p := range []string{"etc/keep.txt", "etc/l3.txt", "bin/tool", "layerdir/new"} {
		if c, ok := byPath[p]; ok {
			t.Errorf("drift lists %s (%s), which the container did not touch", p, c.Change)
		}
	}
	if c := byPath["app.sock"]; c.Type != "socket" {
		t.Errorf("app.sock: %+v, want a socket", c)
	}
	if _, ok := hdrs[fs("app.sock")]; ok {
		t.Errorf("a socket in the archive")
	}
	if got := files["drift/fs/new.txt"]; string(got) != "planted by the container\n" {
		t.Errorf("drift/fs/new.txt: %q", got)
	}
	if byPath["new.txt"].Archived != "drift/fs/new.txt" {
		t.Errorf("new.txt archived as %q", byPath["new.txt"].Archived)
	}
	// What containerd knew, with the secrets of the environment redacted.
	ctrJSON := string(files["volume/container.json"])
	if !strings.Contains(ctrJSON, `API_TOKEN=\u003credacted\u003e`) && !strings.Contains(ctrJSON, "API_TOKEN=<redacted>") {
		t.Errorf("container.json: API_TOKEN not redacted")
	}
	if strings.Contains(ctrJSON, "s3cr3t-in-the-image") {
		t.Errorf("container.json holds the secret")
	}
	if _, ok := files["volume/blobs/sha256-"+s.img.Manifest.Digest.Encoded()+".json"]; !ok {
		t.Errorf("the manifest is not in volume/blobs")
	}
}

func changesOf(t *testing.T, dir string) []volume.Change {
	t.Helper()
	files, _ := readArchive(t, filepath.Join(dir, evidence.ArchiveName))
	var cs []volume.Change
	if err := json.Unmarshal(files["drift/changes.json"], &cs); err != nil {
		t.Fatalf("drift/changes.json: %v", err)
	}
	return cs
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

func sameChanges(a, b []volume.Change) bool {
	key := func(cs []volume.Change) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Path+" "+c.Change+" "+strings.Join(c.What, ",")+" "+c.SHA256+" "+c.ImageSHA256)
		}
		return out
	}
	return slices.Equal(key(a), key(b))
}

func checkStatement(t *testing.T, res *volume.Result, s *scenario) {
	t.Helper()
	// The statement's subjects name the image's files with their hashes.
	subjects := map[string]string{}
	for _, sub := range res.Statement.Subject {
		subjects[sub.Name] = sub.Digest["sha256"]
	}
	for path, content := range map[string]string{"container/fs/etc/keep.txt": "keep me\n", "container/fs/layerdir/new": "upper\n",
		"container/fs/bin/tool-link": "#!/bin/sh\necho tool\n", "drift/fs/new.txt": "planted by the container\n"} {
		if got := subjects[path]; got != containerdtest.SHA256([]byte(content)) {
			t.Errorf("subject %s: sha256 %q, want that of %q", path, got, content)
		}
	}
	p := res.Statement.Predicate
	if p.Mode != "volume" || p.Target.ContainerID != "containerd://"+s.id || p.Target.Namespace != "payments" || p.Target.Pod != "api-7f9c" ||
		p.Target.Container != "main" || p.Target.PodUID != "0e6c3d2a-uid" || p.Target.Image != "docker.io/warren/volume-test:1" {
		t.Errorf("predicate target %+v, mode %q", p.Target, p.Mode)
	}
	if p.Volume == nil || p.Volume.Snapshotter != s.snapshotter || p.Volume.Namespace != "k8s.io" || len(p.Volume.Layers) != 3 ||
		len(p.Volume.Databases) != 2 || p.Volume.Databases[0].Path != volume.MetaDBPath {
		t.Fatalf("predicate volume %+v", p.Volume)
	}
	if p.Volume.Drift.Added < 3 || p.Volume.Drift.Deleted < 3 || p.Volume.Drift.Changed < 2 {
		t.Errorf("drift counts %+v", p.Volume.Drift)
	}
	for i, l := range p.Volume.Layers {
		if l.Digest != string(s.img.Layers[i].Digest) || l.DiffID != string(s.img.DiffIDs[i]) || l.Source != "content" {
			t.Errorf("layer %d: %+v", i, l)
		}
	}
	if p.Target.ImageID != string(s.img.Manifest.Digest) {
		// ctr import keeps the index as the image's target
		if !strings.HasPrefix(p.Target.ImageID, "sha256:") {
			t.Errorf("image id %q", p.Target.ImageID)
		}
	}
}
