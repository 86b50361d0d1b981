package main

import (
	"archive/tar"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/testenv/containerdtest"
)

// TestAcquireVolumeCommand runs `warren acquire volume` --list and --container against the root of a real
// containerd (stopped), then `warren acquire verify` on what it wrote.
func TestAcquireVolumeCommand(t *testing.T) {
	keys := t.TempDir()
	if _, err := auth.GenerateKeyPair(keys); err != nil {
		t.Fatal(err)
	}
	priv, pub := filepath.Join(keys, auth.SigningKeyFile), filepath.Join(keys, auth.PublicKeyFile)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"acquire", "volume", "--list"}, "warren acquire: missing --root: the directory where the node's volume is mounted, e.g. --root /mnt/node"},
		{[]string{"acquire", "volume", "--root", keys}, "warren acquire: missing --container ID (or --list to see the containers)"},
		{[]string{"acquire", "volume", "--root", keys, "--container", "x"}, "warren acquire: missing --out: the output directory, e.g. --out ./case-42"},
		{[]string{"acquire", "volume", "--root", keys, "--list", "--container", "x"}, "warren acquire: give --list or --container, not both"},
		{[]string{"acquire", "volume", "--root", keys, "--list", "-o", "yaml"}, `warren acquire: -o "yaml": want table or json`},
	} {
		code, _, stderr := runCmd(t, c.args...)
		if code != 2 || !strings.HasPrefix(stderr, c.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", c.args, code, stderr, c.want)
		}
	}
	code, _, stderr := runCmd(t, "acquire", "volume", "--root", keys, "--list")
	if code != 1 || !strings.HasPrefix(stderr, "warren acquire: not a containerd root: "+keys+" has no containerd metadata database") {
		t.Errorf("--root without containerd: exit %d, %q", code, stderr)
	}

	cd := containerdtest.ForTest(t)
	img, err := containerdtest.BuildImage(t.TempDir(), containerdtest.Image{Name: "docker.io/warren/cli:1", Layers: []containerdtest.Layer{
		{Compression: "gzip", Files: []containerdtest.File{{Path: "fsops", Mode: 0o755, Content: containerdtest.FSOps(t)}, {Path: "etc/motd", Content: []byte("hello\n")}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cd.Import(t.Context(), "default", img.Tarball, "overlayfs"); err != nil {
		t.Fatal(err)
	}
	if _, err := cd.Run(t.Context(), "default", containerdtest.RunSpec{ID: "web", Image: "docker.io/warren/cli:1", Snapshotter: "overlayfs",
		Args: []string{"/fsops", "write", "/tmp-dropper", "payload", "rm", "/etc/motd"}}); err != nil {
		t.Fatal(err)
	}
	if err := cd.Stop(); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := runCmd(t, "acquire", "volume", "--root", cd.Root, "--list")
	if code != 0 || !strings.Contains(stdout, "default    web ") || !strings.Contains(stdout, "containerd.default/web/web") ||
		!strings.Contains(stdout, "docker.io/warren/cli:1") {
		t.Fatalf("--list: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, _ = runCmd(t, "acquire", "volume", "--root", cd.Root, "--list", "-o", "json")
	var listing struct {
		Namespaces []struct {
			Containers []struct {
				ID        string `json:"id"`
				Snapshots []struct {
					Exists bool `json:"exists"`
				} `json:"snapshots"`
			} `json:"containers"`
		} `json:"namespaces"`
	}
	if err := json.Unmarshal([]byte(stdout), &listing); code != 0 || err != nil || listing.Namespaces[0].Containers[0].ID != "web" ||
		len(listing.Namespaces[0].Containers[0].Snapshots) != 2 {
		t.Fatalf("--list -o json: exit %d, %v\n%s", code, err, stdout)
	}

	out := t.TempDir()
	code, stdout, stderr = runCmd(t, "acquire", "volume", "--root", cd.Root, "--container", "web", "--out", out, "--signing-key", priv,
		"--case", "c-1", "--node", "ip-10-0-0-1")
	if code != 0 || !strings.Contains(stdout, "drift: 5 added, 0 changed, 1 deleted") {
		t.Fatalf("export: exit %d\n%s%s", code, stdout, stderr)
	}
	f, err := os.Open(filepath.Join(out, "containerd.default/web/web/evidence.tar"))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(f)
	found := false
	for h, err := tr.Next(); err == nil; h, err = tr.Next() {
		found = found || h.Name == "drift/fs/tmp-dropper"
	}
	f.Close()
	if !found {
		t.Errorf("drift/fs/tmp-dropper not in the archive")
	}
	code, stdout, stderr = runCmd(t, "acquire", "verify", out, "--key", pub)
	if code != 0 || !strings.Contains(stdout, "OK    containerd.default/web/web") {
		t.Fatalf("verify: exit %d\n%s%s", code, stdout, stderr)
	}
	code, _, stderr = runCmd(t, "acquire", "volume", "--root", cd.Root, "--container", "nope", "--out", out, "--signing-key", priv)
	if code != 1 || !strings.Contains(stderr, `unknown container: no container "nope" in any namespace of `) {
		t.Fatalf("unknown container: exit %d, %q", code, stderr)
	}
}
