package main

import (
	"context"
	"flag"
	"fmt"
	"github.com/warren-dev/warren/connector/eks"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/evidence/s3store"
)

// storeFlags are the flags of an acquisition's output: a local directory, or s3://BUCKET/PREFIX with the flags of
// object storage.
type storeFlags struct {
	endpoint, region, staging string
	pathStyle                 bool
}

// addStoreFlags defines the object-storage flags; staging only for a command that writes.
func addStoreFlags(fs *flag.FlagSet, writes bool) *storeFlags {
	f := &storeFlags{}
	fs.StringVar(&f.endpoint, "s3-endpoint", "", "with s3://: the S3 API's URL of an S3-compatible store (MinIO, Ceph, SeaweedFS...); default: AWS")
	fs.BoolVar(&f.pathStyle, "s3-path-style", false, "with s3://: address the bucket in the URL's path (ENDPOINT/BUCKET/KEY), as most S3-compatible stores need")
	fs.StringVar(&f.region, "s3-region", "", "with s3://: the bucket's region; default: the AWS chain's (AWS_REGION, the profile's), else us-east-1 with --s3-endpoint")
	if writes {
		fs.StringVar(&f.staging, "staging-dir", "", "with s3://: where objects are written before they are uploaded, and kept when an upload fails; default: "+
			filepath.Join("$XDG_CACHE_HOME", "warren", "staging", "BUCKET", "PREFIX"))
	}
	return f
}

func isS3(out string) bool { return strings.HasPrefix(out, "s3://") }

// openS3 opens s3://BUCKET/PREFIX with the standard AWS chain for credentials and region. staging may be ""
// (read only).
func (f *storeFlags) openS3(ctx context.Context, out, staging string, log *slog.Logger) (*s3store.Store, error) {
	bucket, prefix, err := s3store.ParseURL(out)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	awsCfg, err := eks.LoadAWSConfig(ctx, f.region, "")
	if err != nil {
		return nil, err
	}
	if awsCfg.Region == "" && f.endpoint != "" {
		awsCfg.Region = "us-east-1" // S3-compatible stores take any region; SigV4 needs one
	}
	cfg := s3store.DefaultConfig()
	cfg.Bucket, cfg.Prefix, cfg.StagingDir, cfg.AWS, cfg.Endpoint, cfg.PathStyle, cfg.Logger =
		bucket, prefix, staging, awsCfg, f.endpoint, f.pathStyle, log
	return s3store.New(ctx, cfg)
}

// stagingDir is --staging-dir, or the default for s3://BUCKET/PREFIX: a rerun of the same command finds what an
// earlier run could not upload.
func (f *storeFlags) stagingDir(out string) (string, error) {
	if f.staging != "" {
		return f.staging, nil
	}
	bucket, prefix, err := s3store.ParseURL(out)
	if err != nil {
		return "", usageErr("%v", err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", usageErr("no cache directory for the staging copies (%v): give --staging-dir", err)
	}
	return filepath.Join(cache, "warren", "staging", bucket, filepath.FromSlash(prefix)), nil
}

// verifyArgs are the flags `warren acquire verify` needs to read the same store.
func (f *storeFlags) verifyArgs() string {
	var s string
	if f.endpoint != "" {
		s += " --s3-endpoint " + f.endpoint
	}
	if f.pathStyle {
		s += " --s3-path-style"
	}
	if f.region != "" {
		s += " --s3-region " + f.region
	}
	return s
}

// checkLocalFlags refuses object-storage flags given with a local --out: they would be ignored.
func (f *storeFlags) checkLocalFlags() error {
	if f.endpoint != "" || f.pathStyle || f.region != "" || f.staging != "" {
		return usageErr("--s3-endpoint, --s3-path-style, --s3-region and --staging-dir go with --out s3://BUCKET/PREFIX")
	}
	return nil
}

// openForAcquire opens --out for an acquisition. For s3:// it first uploads what an earlier run staged whole but
// could not upload, so that resume finds those targets in the bucket and keeps them, and says so on w.
func (f *storeFlags) openForAcquire(ctx context.Context, out string, signer *evidence.Signer, w io.Writer, log *slog.Logger) (evidence.Store, func(), error) {
	if !isS3(out) {
		if err := f.checkLocalFlags(); err != nil {
			return nil, nil, err
		}
		store, err := evidence.NewLocalStore(out)
		if err != nil {
			return nil, nil, err
		}
		unlock, err := lockRunDir(store.Root(), "choose another --out")
		if err != nil {
			return nil, nil, err
		}
		return store, unlock, nil
	}
	staging, err := f.stagingDir(out)
	if err != nil {
		return nil, nil, err
	}
	store, err := f.openS3(ctx, out, staging, log)
	if err != nil {
		return nil, nil, err
	}
	// The staging directory is the run's local state: two runs sharing it would upload each other's targets.
	unlock, err := lockRunDir(store.StagingDir(), "choose another --staging-dir")
	if err != nil {
		return nil, nil, err
	}
	keys, err := evidence.NewKeys(signer.Public())
	if err != nil {
		unlock()
		return nil, nil, err
	}
	staged, err := store.UploadStaged(ctx, keys)
	if err != nil {
		unlock()
		return nil, nil, err
	}
	for _, st := range staged {
		if st.Uploaded {
			fmt.Fprintf(w, "uploaded %s, staged by an earlier run (%s)\n", store.Location(st.Dir), filepath.Join(store.StagingDir(), st.Dir))
		} else {
			fmt.Fprintf(w, "left staged in %s: %s\n", filepath.Join(store.StagingDir(), st.Dir), st.Reason)
		}
	}
	return store, unlock, nil
}

// lockRunDir takes dir's run lock (flock on dir/.warren-acquire.lock): one run at a time writes into a directory,
// since two would redo each other's targets. The lock goes with the process, however it ends.
func lockRunDir(dir, hint string) (func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".warren-acquire.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cannot lock %s: %v", dir, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("another warren acquire is writing to %s: wait for it to end, or %s", dir, hint)
	}
	return func() { lock.Close() }, nil
}

// openForVerify opens the DIR or s3://BUCKET/PREFIX of `warren acquire verify`, read only.
func (f *storeFlags) openForVerify(ctx context.Context, out string, log *slog.Logger) (evidence.Store, error) {
	if isS3(out) {
		return f.openS3(ctx, out, "", log)
	}
	if err := f.checkLocalFlags(); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(out); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", out)
	}
	return evidence.NewLocalStore(out)
}
