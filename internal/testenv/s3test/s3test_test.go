package s3test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Without weed, Start says how to build it; tests are skipped only outside CI.
func TestMissingBinary(t *testing.T) {
	t.Setenv(EnvWeedBin, t.TempDir())
	_, err := Start(t.Context(), Options{Dir: t.TempDir()})
	if !errors.Is(err, ErrNoBinary) || !strings.Contains(err.Error(), "run scripts/s3-bin.sh (or make kube) to build SeaweedFS "+WeedVersion) {
		t.Fatalf("Start without weed: %v", err)
	}
}

// A weed that dies at start is reported with its exit status and last lines, at once.
func TestEarlyExitReported(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\necho 'weed: cannot bind' >&2\nexit 3\n"
	if err := os.WriteFile(filepath.Join(dir, "weed"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvWeedBin, dir)
	_, err := Start(t.Context(), Options{Dir: t.TempDir()})
	for _, want := range []string{"weed exited unexpectedly (exit status 3)", "weed: weed: cannot bind"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Start with a failing weed: %v, want %q", err, want)
		}
	}
}
