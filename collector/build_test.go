package collector_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/warren-dev/warren/collector"
	"github.com/warren-dev/warren/collector/collectortest"
)

// make build's collector and the test helper's build (same source, same VERSION, other directories, other
// invocations) must be byte-identical: the digest an acquisition records is reproducible from the source.
func TestCollectorBuildIsReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the collector")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	repo := filepath.Dir(strings.TrimSpace(string(out)))
	dir := t.TempDir()
	cmd := exec.Command("make", "-s", "collectors", "COLLECTOR_DIR="+dir, "COLLECTOR_ARCHES="+runtime.GOARCH, "VERSION=test")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make collectors: %v\n%s", err, out)
	}
	made, err := os.ReadFile(filepath.Join(dir, collector.BinaryName(runtime.GOARCH)))
	if err != nil {
		t.Fatal(err)
	}
	built, err := os.ReadFile(filepath.Join(collectorDir(t), collector.BinaryName(runtime.GOARCH)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(made, built) {
		t.Fatalf("make collectors and collectortest.Build differ (%d and %d bytes): the build is not reproducible, or their flags differ (collectortest.LDFlags %q)",
			len(made), len(built), collectortest.LDFlags)
	}
	v, err := exec.Command(filepath.Join(dir, collector.BinaryName(runtime.GOARCH)), "version").Output()
	if err != nil || strings.TrimSpace(string(v)) != "test" {
		t.Errorf("version %q %v", v, err)
	}
}
