package acquire

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/evidence/s3store"
	"github.com/warren-dev/warren/internal/awsconfig"
)

// Output is where an acquisition's evidence goes (`warren acquire --out`): a local directory, or s3://BUCKET/PREFIX
// with object storage's settings. Its errors for settings that cannot go together match ErrUsage.
type Output struct {
	// Dest is DIR or s3://BUCKET/PREFIX.
	Dest string
	// S3Endpoint is the S3 API's URL of an S3-compatible store; empty: AWS.
	S3Endpoint string
	// S3PathStyle addresses the bucket in the URL's path, as most S3-compatible stores need.
	S3PathStyle bool
	// S3Region is the bucket's region; empty: the AWS chain's, else us-east-1 with S3Endpoint.
	S3Region string
	// StagingDir is where objects are written before they are uploaded, and kept when an upload fails (s3:// only).
	// Empty: DefaultStagingDir(Dest), so that a rerun of the same command finds what an earlier run left.
	StagingDir string
	// Logger receives the store's logs. Default: discard.
	Logger *slog.Logger
}

// IsS3 reports whether dest names object storage.
func IsS3(dest string) bool { return strings.HasPrefix(dest, "s3://") }

// DefaultStagingDir is $XDG_CACHE_HOME/warren/staging/BUCKET/PREFIX (~/.cache/... without it) for s3://BUCKET/PREFIX:
// a function of the destination alone.
func DefaultStagingDir(dest string) (string, error) {
	bucket, prefix, err := s3store.ParseURL(dest)
	if err != nil {
		return "", usage("%v", err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", usage("no cache directory for the staging copies (%v): give --staging-dir", err)
	}
	return filepath.Join(cache, "warren", "staging", bucket, filepath.FromSlash(prefix)), nil
}

// VerifyArgs are the flags `warren acquire verify` needs to read the same store.
func (o Output) VerifyArgs() string {
	var s string
	if o.S3Endpoint != "" {
		s += " --s3-endpoint " + o.S3Endpoint
	}
	if o.S3PathStyle {
		s += " --s3-path-style"
	}
	if o.S3Region != "" {
		s += " --s3-region " + o.S3Region
	}
	return s
}

// checkLocal refuses object-storage settings with a local directory: they would be ignored.
func (o Output) checkLocal() error {
	if o.S3Endpoint != "" || o.S3PathStyle || o.S3Region != "" || o.StagingDir != "" {
		return usage("--s3-endpoint, --s3-path-style, --s3-region and --staging-dir go with --out s3://BUCKET/PREFIX")
	}
	return nil
}

func (o Output) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// openS3 opens s3://BUCKET/PREFIX with the standard AWS chain for credentials and region; staging "" is read only.
func (o Output) openS3(ctx context.Context, staging string) (*s3store.Store, error) {
	bucket, prefix, err := s3store.ParseURL(o.Dest)
	if err != nil {
		return nil, usage("%v", err)
	}
	awsCfg, err := awsconfig.Load(ctx, o.S3Region, "")
	if err != nil {
		return nil, err
	}
	if awsCfg.Region == "" && o.S3Endpoint != "" {
		awsCfg.Region = "us-east-1" // S3-compatible stores take any region; SigV4 needs one
	}
	cfg := s3store.DefaultConfig()
	cfg.Bucket, cfg.Prefix, cfg.StagingDir, cfg.AWS, cfg.Endpoint, cfg.PathStyle, cfg.Logger =
		bucket, prefix, staging, awsCfg, o.S3Endpoint, o.S3PathStyle, o.logger()
	return s3store.New(ctx, cfg)
}

// OpenForAcquire opens the output for an acquisition and takes its run lock; unlock gives it back. For s3:// it
// first uploads what an earlier run staged whole but could not upload (statement and archive verifying with
// signer's key), so that resume finds those targets in the bucket and keeps them, and says so on report.
func (o Output) OpenForAcquire(ctx context.Context, signer *evidence.Signer, report io.Writer) (_ evidence.Store, unlock func(), _ error) {
	if !IsS3(o.Dest) {
		if err := o.checkLocal(); err != nil {
			return nil, nil, err
		}
		store, err := evidence.NewLocalStore(o.Dest)
		if err != nil {
			return nil, nil, err
		}
		unlock, err := lockRunDir(store.Root(), "choose another --out")
		if err != nil {
			return nil, nil, err
		}
		return store, unlock, nil
	}
	staging := o.StagingDir
	if staging == "" {
		var err error
		if staging, err = DefaultStagingDir(o.Dest); err != nil {
			return nil, nil, err
		}
	}
	store, err := o.openS3(ctx, staging)
	if err != nil {
		return nil, nil, err
	}
	// The staging directory is the run's local state: two runs sharing it would upload each other's targets.
	unlock, err = lockRunDir(store.StagingDir(), "choose another --staging-dir")
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
			fmt.Fprintf(report, "uploaded %s, staged by an earlier run (%s)\n", store.Location(st.Dir), filepath.Join(store.StagingDir(), st.Dir))
		} else {
			fmt.Fprintf(report, "left staged in %s: %s\n", filepath.Join(store.StagingDir(), st.Dir), st.Reason)
		}
	}
	return store, unlock, nil
}

// OpenForVerify opens the output read only, for `warren acquire verify`.
func (o Output) OpenForVerify(ctx context.Context) (evidence.Store, error) {
	if IsS3(o.Dest) {
		return o.openS3(ctx, "")
	}
	if err := o.checkLocal(); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(o.Dest); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", o.Dest)
	}
	return evidence.NewLocalStore(o.Dest)
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
