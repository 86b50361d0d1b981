package main

import (
	"flag"
	"io"
	"path/filepath"
	"testing"
)

// Without --staging-dir, a rerun of the same command must find what an earlier one staged: the default is a
// function of the destination alone.
func TestStagingDirDefault(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	sf := addStoreFlags(fs, true)
	for _, tc := range []struct{ out, want string }{
		{"s3://evidence/cases/ir-42/", filepath.Join(cache, "warren", "staging", "evidence", "cases", "ir-42")},
		{"s3://evidence", filepath.Join(cache, "warren", "staging", "evidence")},
	} {
		got, err := sf.stagingDir(tc.out)
		if err != nil || got != tc.want {
			t.Errorf("stagingDir(%s) = %q, %v; want %q", tc.out, got, err, tc.want)
		}
	}
	if err := fs.Parse([]string{"--staging-dir", "/var/tmp/s", "--s3-endpoint", "http://minio:9000", "--s3-path-style", "--s3-region", "eu-west-1"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := sf.stagingDir("s3://evidence/x"); got != "/var/tmp/s" {
		t.Errorf("--staging-dir ignored: %q", got)
	}
	if got, want := sf.verifyArgs(), " --s3-endpoint http://minio:9000 --s3-path-style --s3-region eu-west-1"; got != want {
		t.Errorf("verifyArgs = %q, want %q", got, want)
	}
	if err := sf.checkLocalFlags(); err == nil {
		t.Error("object-storage flags accepted with a local directory")
	}
}
