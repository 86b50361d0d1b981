package containerdtest

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDetachedTaskAndLeaks: a running task keeps its rootfs mounted and its shim up; StopTask ends both. A task
// still running when containerd is stopped is a leak that Stop cleans up (container process, shim, mount) and
// reports.
func TestDetachedTaskAndLeaks(t *testing.T) {
	ctx := t.Context()
	c, err := Start(ctx, Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	img, err := BuildImage(t.TempDir(), Image{Name: "docker.io/warren/wait:1", Layers: []Layer{{Files: []File{{Path: "fsops", Mode: 0o755, Content: FSOps(t)}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Import(ctx, "default", img.Tarball, "overlayfs"); err != nil {
		t.Fatal(err)
	}
	run := func(id string) int {
		if err := c.RunDetached(ctx, "default", RunSpec{ID: id, Image: "docker.io/warren/wait:1", Snapshotter: "overlayfs", Args: []string{"/fsops", "wait"}}); err != nil {
			t.Fatal(err)
		}
		pid, err := c.TaskPID(ctx, "default", id)
		if err != nil || pid <= 0 {
			t.Fatalf("TaskPID: %d, %v", pid, err)
		}
		if len(mountsUnder(c.State)) == 0 {
			t.Fatalf("no rootfs mounted under %s while %s runs", c.State, id)
		}
		return pid
	}
	pid := run("one")
	if err := c.StopTask(ctx, "default", "one"); err != nil {
		t.Fatal(err)
	}
	if m := mountsUnder(c.State); len(m) != 0 {
		t.Fatalf("mounts after StopTask: %v", m)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Fatalf("the task's process %d still runs", pid)
	}

	pid = run("two")
	sockets := shimSockets(c.shims()[0])
	if len(sockets) == 0 {
		t.Fatal("the shim holds no socket under /run/containerd/s")
	}
	err = c.Stop()
	if err == nil || !strings.Contains(err.Error(), "leak: shims") || !strings.Contains(err.Error(), "leak: 1 mounts were left under "+c.State) {
		t.Fatalf("Stop with a task running: %v", err)
	}
	if len(c.shims()) != 0 || len(mountsUnder(c.State)) != 0 {
		t.Fatalf("after Stop: shims %v, mounts %v", c.shims(), mountsUnder(c.State))
	}
	for _, p := range sockets {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("the killed shim's socket %s is left", p)
		}
	}
	// The container process was the shim's child: killed with it (its zombie is reaped by init).
	if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil && !strings.Contains(string(st), ") Z ") {
		t.Fatalf("container process %d outlived Stop: %s", pid, st)
	}
}
