package collector_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warren-dev/warren/collector"
	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/internal/testenv/containerdtest"
	"github.com/warren-dev/warren/volume"
)

// processAttach runs the collector binary with args as a process of this machine, as the runtime would start it
// in a container: its stdin, stdout and stderr are the session's.
func processAttach(bin string, args []string) collector.Attach {
	return func(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) error {
		cmd := exec.CommandContext(ctx, bin, args...)
		in, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		go func() { // ends when the session's stdin does (after the session)
			_, _ = io.Copy(in, stdin)
			in.Close()
		}()
		err = cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil // as pods/attach: the exit status is not the session's
		}
		return err
	}
}

// nodeScenario is containerdtest's drift scenario running (detached) under a real containerd: the container has
// made its changes and waits.
type nodeScenario struct {
	cd      *containerdtest.Containerd
	id      string
	stopped bool
}

// stop ends the container's task and containerd, leaving its root as a node's disk would be.
func (s *nodeScenario) stop(t *testing.T) {
	t.Helper()
	if err := s.cd.StopTask(t.Context(), "k8s.io", s.id); err != nil {
		t.Fatal(err)
	}
	s.stopped = true
	if err := s.cd.Stop(); err != nil {
		t.Fatal(err)
	}
}

func startNodeScenario(t *testing.T, snapshotter string) *nodeScenario {
	t.Helper()
	ctx := t.Context()
	s := &nodeScenario{cd: containerdtest.ForTest(t), id: "node-" + snapshotter}
	img, err := containerdtest.BuildImage(t.TempDir(), containerdtest.DriftImage("docker.io/warren/node-test:1", containerdtest.FSOps(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cd.Import(ctx, "k8s.io", img.Tarball, snapshotter); err != nil {
		t.Fatal(err)
	}
	args := append(append([]string{"/fsops"}, containerdtest.DriftOps...), "wait")
	if err := s.cd.RunDetached(ctx, "k8s.io", containerdtest.RunSpec{ID: s.id, Image: "docker.io/warren/node-test:1",
		Snapshotter: snapshotter, Args: args}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.stopped {
			return
		}
		if err := s.cd.StopTask(context.Background(), "k8s.io", s.id); err != nil {
			t.Errorf("stop task: %v", err)
		}
	})
	s.waitDone(t)
	return s
}

// waitDone waits until the container has made its last change (the socket fsops leaves).
func (s *nodeScenario) waitDone(t *testing.T) {
	t.Helper()
	pid, err := s.cd.TaskPID(t.Context(), "k8s.io", s.id)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Lstat(filepath.Join("/proc", strconv.Itoa(pid), "root", "app.sock")); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the container did not make its changes within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *nodeScenario) args(id string) collector.ModeArgs {
	return collector.ModeArgs{Mode: collector.ModeNode, ContainerID: id, Namespace: "k8s.io",
		RuntimeDir: filepath.Join(s.cd.State, "io.containerd.runtime.v2.task"), ContainerdRoot: s.cd.Root,
		Options: collector.Options{TimeBudget: time.Minute}, Wait: 30 * time.Second}
}

func (s *nodeScenario) collect(t *testing.T, m collector.ModeArgs) (*collector.Result, *memSink, error) {
	t.Helper()
	dir := collectorDir(t)
	bin := filepath.Join(dir, collector.BinaryName(runtime.GOARCH))
	sink := newMemSink()
	res, err := collector.CollectAttached(t.Context(), processAttach(bin, m.Args()), collector.AttachOptions{Mode: collector.ModeNode,
		Arch: runtime.GOARCH, BinaryDir: dir, TimeBudget: time.Minute, Argv: m.Args()}, sink)
	return res, sink, err
}

func changesOf(t *testing.T, data []byte) map[string]collector.DriftChange {
	t.Helper()
	var cs []collector.DriftChange
	if err := json.Unmarshal(data, &cs); err != nil {
		t.Fatalf("drift/changes.json: %v: %s", err, data)
	}
	out := map[string]collector.DriftChange{}
	for _, c := range cs {
		out[c.Path+" "+c.Change] = c
	}
	return out
}

// TestNodeModeContainerd: the node-mode collector, as a process in the host's PID namespace, finds a running
// container of a real containerd by its id, reads its bundle and processes, and its drift from the live overlay's
// upper directory: the file it wrote, the one it deleted, the changed content and mode, the directory it replaced.
// The stream is sealed, and what the collector wrote is what the acquirer received.
func TestNodeModeContainerd(t *testing.T) {
	s := startNodeScenario(t, "overlayfs")
	res, sink, err := s.collect(t, s.args(s.id))
	if err != nil {
		t.Fatalf("collect: %v", err)
	}
	if res.Mode != "collector" || res.CollectorDigest == "" || res.Stdout.Bytes == 0 || len(res.Execs) != 1 {
		t.Fatalf("result: %+v", res)
	}
	var info collector.NodeInfo
	if err := json.Unmarshal(sink.data[collector.NodeBundlePath], &info); err != nil {
		t.Fatal(err)
	}
	if info.Snapshotter != collector.SnapshotterOverlayfs || info.Upper == "" || len(info.Lowers) != 3 || info.ContainerID != s.id ||
		!strings.HasPrefix(info.Upper, s.cd.Root+"/io.containerd.snapshotter.v1.overlayfs/snapshots/") {
		t.Fatalf("node/bundle.json: %+v", info)
	}
	var self collector.SelfInfo
	if err := json.Unmarshal(sink.data[collector.SelfPath], &self); err != nil || self.Target == nil || self.Target.Mode != "node" ||
		self.Target.RootPID != info.InitPID || len(self.Target.PIDs) == 0 {
		t.Fatalf("self.json: %v %s", err, sink.data[collector.SelfPath])
	}
	if got := string(sink.data["container/fs/new.txt"]); got != "planted by the container\n" {
		t.Errorf("container/fs/new.txt: %q (the file system as the container's processes see it)", got)
	}
	if _, ok := sink.data[collector.NodeConfigPath]; !ok {
		t.Error("node/config.json missing")
	}
	ch := changesOf(t, sink.data[collector.DriftChangesPath])
	for _, want := range []struct{ key, what string }{
		{"new.txt added", ""}, {"etc/old.txt deleted", ""}, {"etc/changed.txt changed", "content"}, {"etc/mode.txt changed", "mode"},
		{"opq/a deleted", ""}, {"opq/b deleted", ""}, {"opq/fresh added", ""}, {"app.sock added", ""},
	} {
		c, ok := ch[want.key]
		if !ok {
			t.Errorf("drift: no %s; have %v", want.key, keys(ch))
			continue
		}
		if want.what != "" && !strings.Contains(strings.Join(c.What, ","), want.what) {
			t.Errorf("drift: %s: what %v, want %s", want.key, c.What, want.what)
		}
	}
	if c := ch["new.txt added"]; c.Archived != "drift/fs/new.txt" || string(sink.data["drift/fs/new.txt"]) != "planted by the container\n" {
		t.Errorf("drift/fs/new.txt: %+v %q", c, sink.data["drift/fs/new.txt"])
	}
	if c := ch["etc/old.txt deleted"]; c.ImageSHA256 != sha("old\n") {
		t.Errorf("etc/old.txt deleted: image sha256 %s", c.ImageSHA256)
	}
	for k := range ch {
		if strings.HasPrefix(k, "etc/keep.txt") || strings.HasPrefix(k, "layerdir") || strings.HasPrefix(k, "gone") {
			t.Errorf("drift lists %s, which the container did not touch", k)
		}
	}
	for _, name := range sink.names {
		if strings.Contains(string(sink.data[name]), "WARREN-COLLECTOR") {
			t.Errorf("%s holds the session line", name)
		}
	}

	// The volume mode reads the same container from containerd's root once containerd has stopped: its drift is the
	// same, record for record.
	s.stop(t)
	v, err := volume.Open(volume.Config{Root: s.cd.Root})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	c, err := v.Find("", s.id)
	if err != nil {
		t.Fatal(err)
	}
	store, err := evidence.NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := evidence.NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	vres, err := v.Acquire(t.Context(), c, volume.AcquireOptions{Store: store, Signer: signer, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(vres.Changes) != len(ch) {
		t.Errorf("the volume mode lists %d changes, the node mode %d", len(vres.Changes), len(ch))
	}
	for _, vc := range vres.Changes {
		nc, ok := ch[vc.Path+" "+vc.Change]
		a, _ := json.Marshal(vc)
		b, _ := json.Marshal(nc)
		if !ok || string(a) != string(b) {
			t.Errorf("drift of %s: volume mode %s, node mode %s", vc.Path, a, b)
		}
	}
}

func keys(m map[string]collector.DriftChange) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestNodeModeBadInputs: a container that is not on the node, and one whose root no snapshotter made (given to
// containerd directly), each end with one clear error from the collector, and nothing sealed.
func TestNodeModeBadInputs(t *testing.T) {
	s := startNodeScenario(t, "overlayfs")
	_, _, err := s.collect(t, s.args("no-such-container"))
	want := "the collector sent no evidence: the collector said: warren-collector: no running container no-such-container in containerd namespace k8s.io on this node"
	if !errors.Is(err, collector.ErrNoStream) || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("no such container: %v\nwant: %s...", err, want)
	}

	// A root file system given to containerd directly (ctr run --rootfs): a bind mount no snapshotter made.
	rootfs := t.TempDir()
	fsops := containerdtest.FSOps(t)
	if err := os.WriteFile(filepath.Join(rootfs, "fsops"), fsops, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"proc", "dev", "sys", "tmp"} {
		os.Mkdir(filepath.Join(rootfs, d), 0o755)
	}
	if err := s.cd.RunDetached(t.Context(), "k8s.io", containerdtest.RunSpec{ID: "bare", Rootfs: rootfs, Args: []string{"/fsops", "wait"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.cd.StopTask(context.Background(), "k8s.io", "bare") })
	_, _, err = s.collect(t, s.args("bare"))
	want = "the collector sent no evidence: the collector said: warren-collector: container bare: unsupported snapshotter: its root " +
		"file system is a directory given to containerd directly (" + rootfs + "), which no snapshotter made: " + collector.UnsupportedNote
	if !errors.Is(err, collector.ErrNoStream) || err.Error() != want {
		t.Fatalf("bare rootfs: %v\nwant: %s", err, want)
	}
}

// TestNodeModeNative: the native snapshotter's container is read (its file system, processes and bundle), and its
// statement says why there is no drift.
func TestNodeModeNative(t *testing.T) {
	s := startNodeScenario(t, "native")
	_, sink, err := s.collect(t, s.args(s.id))
	if err != nil {
		t.Fatal(err)
	}
	var info collector.NodeInfo
	if err := json.Unmarshal(sink.data[collector.NodeBundlePath], &info); err != nil {
		t.Fatal(err)
	}
	if info.Snapshotter != collector.SnapshotterNative || !strings.HasPrefix(info.Drift, "none: the native snapshotter keeps a full copy") {
		t.Fatalf("node/bundle.json: %+v", info)
	}
	if _, ok := sink.data[collector.DriftChangesPath]; ok {
		t.Error("a drift for the native snapshotter")
	}
	if got := string(sink.data["container/fs/new.txt"]); got != "planted by the container\n" {
		t.Errorf("container/fs/new.txt: %q", got)
	}
}
