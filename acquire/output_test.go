package acquire

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// Without a staging directory, a rerun of the same command must find what an earlier one staged: the default is a
// function of the destination alone.
func TestDefaultStagingDir(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	for _, tc := range []struct{ dest, want string }{
		{"s3://evidence/cases/ir-42/", filepath.Join(cache, "warren", "staging", "evidence", "cases", "ir-42")},
		{"s3://evidence", filepath.Join(cache, "warren", "staging", "evidence")},
	} {
		got, err := DefaultStagingDir(tc.dest)
		if err != nil || got != tc.want {
			t.Errorf("DefaultStagingDir(%s) = %q, %v; want %q", tc.dest, got, err, tc.want)
		}
	}
	if _, err := DefaultStagingDir("s3://"); !errors.Is(err, ErrUsage) {
		t.Errorf("s3:// without a bucket: %v, want a usage error", err)
	}
}

func TestOutputVerifyArgsAndLocalChecks(t *testing.T) {
	o := Output{Dest: "s3://evidence/x", S3Endpoint: "http://minio:9000", S3PathStyle: true, S3Region: "eu-west-1", StagingDir: "/var/tmp/s"}
	if got, want := o.VerifyArgs(), " --s3-endpoint http://minio:9000 --s3-path-style --s3-region eu-west-1"; got != want {
		t.Errorf("VerifyArgs = %q, want %q", got, want)
	}
	o.Dest = t.TempDir()
	_, _, err := o.OpenForAcquire(t.Context(), nil, nil)
	if !errors.Is(err, ErrUsage) || !strings.HasSuffix(err.Error(), "--s3-endpoint, --s3-path-style, --s3-region and --staging-dir go with --out s3://BUCKET/PREFIX") {
		t.Errorf("object-storage settings with a local directory: %v", err)
	}
	if _, err := o.OpenForVerify(t.Context()); !errors.Is(err, ErrUsage) {
		t.Errorf("verify, object-storage settings with a local directory: %v", err)
	}
}

// One run at a time into a directory: a second is refused with what to do, and the first's unlock lets the next in.
func TestOutputRunLock(t *testing.T) {
	dir := t.TempDir()
	o := Output{Dest: dir}
	_, unlock, err := o.OpenForAcquire(t.Context(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = o.OpenForAcquire(t.Context(), nil, nil)
	if want := "another warren acquire is writing to " + dir + ": wait for it to end, or choose another --out"; err == nil || err.Error() != want {
		t.Fatalf("a second run: %v, want %q", err, want)
	}
	unlock()
	_, unlock, err = o.OpenForAcquire(t.Context(), nil, nil)
	if err != nil {
		t.Fatalf("after the first ended: %v", err)
	}
	unlock()
}
