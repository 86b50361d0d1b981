// Package s3store is an evidence.Store in an S3 bucket (AWS S3 or an S3-compatible store such as MinIO, Ceph or
// SeaweedFS): `warren acquire --out s3://BUCKET/PREFIX` writes the same layout as a local directory, under keys
// PREFIX/<namespace>/<pod>/<container>/{evidence.tar,statement.dsse.json} and PREFIX/acquisition.json, and
// `warren acquire verify s3://BUCKET/PREFIX` and resume read it back.
//
// Objects are staged first: written to a local staging directory (name.partial, synced, renamed to name, as
// evidence.LocalStore does) and uploaded by Commit. Every upload carries x-amz-checksum-sha256 with the SHA-256 of
// the bytes warren wrote, computed as they were written (per part for a multipart upload, where the store then
// keeps the composite checksum: the SHA-256 of the parts' SHA-256s, "-N"), so the store itself verifies that it
// holds exactly those bytes and refuses the object otherwise (BadDigest); the payload of every request is signed
// with the same hash (SigV4). A staged copy whose bytes changed on the local disk before the upload is refused
// the same way.
//
// What a reader of the bucket sees: an object appears whole or not at all (PutObject and CompleteMultipartUpload
// are atomic). evidence.TargetWriter commits the statement before the archive, so a target's evidence.tar never
// stands without the statement made for it; between the two uploads (or after a crash between them) the
// statement stands alone and `warren acquire verify` reports its archive missing. A partial archive (a target that
// failed or was interrupted while collecting) stays in the staging directory and is not uploaded.
//
// On an upload failure the staged copy is kept and the error says where. A target's staged statement is kept until
// its archive is uploaded, so a target whose upload failed is whole in staging; UploadStaged (the next run of the
// same command) uploads such targets instead of acquiring them again.
package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/warren-dev/warren/evidence"
)

// Bounds of S3 multipart uploads.
const (
	MinPartSize = 5 << 20 // every part but the last
	MaxPartSize = 5 << 30
	MaxParts    = 10000
)

// Config configures a Store. DefaultConfig gives the defaults; New applies them to zero fields.
type Config struct {
	// Bucket and Prefix are where the layout goes: s3://Bucket/Prefix/... (ParseURL reads them). Bucket is
	// required; Prefix may be empty (the bucket's root) and has no leading or trailing slash.
	Bucket, Prefix string
	// StagingDir is the local directory objects are written to before they are uploaded (created 0700). It needs
	// room for the archives being acquired at once, and keeps what could not be uploaded. Empty: the store is read
	// only (verify), Create and UploadStaged fail.
	StagingDir string
	// AWS is the SDK configuration: credentials, region, retries, HTTP client (warren's internal/awsconfig loads the
	// standard chain). Its Region must be set.
	AWS aws.Config
	// Endpoint is the S3 API's URL of an S3-compatible store (https://minio.example:9000); empty: AWS's endpoint
	// for the region.
	Endpoint string
	// PathStyle addresses the bucket in the path (ENDPOINT/BUCKET/KEY) rather than in the host name
	// (BUCKET.ENDPOINT/KEY); most S3-compatible stores need it.
	PathStyle bool
	// PartSize is the size of the parts of a multipart upload; objects larger than one part are uploaded in parts,
	// smaller ones with one PutObject. Default 64 MiB, at least MinPartSize: 10,000 parts (S3's limit) of 64 MiB
	// hold 625 GiB; a larger object is uploaded in larger parts.
	PartSize int64
	// PartConcurrency is how many parts of one object are uploaded at once. Default 4.
	PartConcurrency int
	// Logger receives the store's logs (uploads, what UploadStaged found). Default: discard.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults, for flags and documentation.
func DefaultConfig() Config {
	return Config{PartSize: 64 << 20, PartConcurrency: 4}
}

// Store is an evidence.Store in a bucket, staged in a local directory. Safe for concurrent use on different names.
type Store struct {
	cfg     Config
	client  *s3.Client
	staging *evidence.LocalStore
	log     *slog.Logger
	// maxParts is MaxParts; tests lower it to reach the re-chunking path with small objects.
	maxParts int
	// dirs is held for reading while an object's staged file is created (its directories made, then the file),
	// and for writing while dropStaged removes the directories an upload left empty.
	dirs sync.RWMutex
}

// ParseURL reads s3://BUCKET[/PREFIX] into a bucket and a prefix without slashes at its ends.
func ParseURL(s string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(s, "s3://")
	if !ok {
		return "", "", fmt.Errorf("%q is not an s3:// URL", s)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	prefix = strings.Trim(prefix, "/")
	if err := checkBucket(bucket); err != nil {
		return "", "", fmt.Errorf("%s: %v", s, err)
	}
	if prefix != "" {
		if err := evidence.CheckName(prefix); err != nil {
			return "", "", fmt.Errorf("%s: the prefix %q has empty, \".\" or \"..\" segments or a backslash", s, prefix)
		}
	}
	return bucket, prefix, nil
}

// checkBucket accepts S3's bucket names: 3-63 lowercase letters, digits, '.' and '-', starting and ending with a
// letter or digit.
func checkBucket(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket name %q: want 3 to 63 characters", b)
	}
	for i, c := range []byte(b) {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || (c == '.' || c == '-') && i > 0 && i < len(b)-1
		if !ok {
			return fmt.Errorf("bucket name %q: want lowercase letters, digits, '.' and '-'", b)
		}
	}
	return nil
}

// New returns a store of cfg after checking that the bucket exists and can be reached with the credentials
// (HeadBucket), so that a wrong bucket, endpoint or key is said before anything is acquired.
func New(ctx context.Context, cfg Config) (*Store, error) {
	d := DefaultConfig()
	if cfg.PartSize == 0 {
		cfg.PartSize = d.PartSize
	}
	if cfg.PartConcurrency <= 0 {
		cfg.PartConcurrency = d.PartConcurrency
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case checkBucket(cfg.Bucket) != nil:
		return nil, fmt.Errorf("s3store: %v", checkBucket(cfg.Bucket))
	case cfg.Prefix != "" && evidence.CheckName(cfg.Prefix) != nil:
		return nil, fmt.Errorf("s3store: invalid prefix %q", cfg.Prefix)
	case cfg.PartSize < MinPartSize || cfg.PartSize > MaxPartSize:
		return nil, fmt.Errorf("s3store: part size %d: want %d to %d bytes", cfg.PartSize, MinPartSize, MaxPartSize)
	case cfg.AWS.Region == "":
		return nil, errors.New("s3store: no AWS region: set AWS_REGION or a profile's region, or give --s3-region")
	}
	var staging *evidence.LocalStore
	if cfg.StagingDir != "" {
		var err error
		if staging, err = evidence.NewLocalStore(cfg.StagingDir); err != nil {
			return nil, fmt.Errorf("cannot create the staging directory: %w", err)
		}
	}
	client := s3.NewFromConfig(cfg.AWS, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
	})
	s := &Store{cfg: cfg, client: client, staging: staging, log: cfg.Logger, maxParts: MaxParts}
	if _, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(cfg.Bucket)}); err != nil {
		return nil, fmt.Errorf("cannot reach s3://%s%s: %w", cfg.Bucket, s.endpointNote(), describe(err))
	}
	return s, nil
}

func (s *Store) endpointNote() string {
	if s.cfg.Endpoint == "" {
		return " (AWS, region " + s.cfg.AWS.Region + ")"
	}
	return " at " + s.cfg.Endpoint
}

// StagingDir is the staging directory (absolute), or "" for a read-only store.
func (s *Store) StagingDir() string {
	if s.staging == nil {
		return ""
	}
	return s.staging.Root()
}

// errReadOnly is the error of a write to a store without a staging directory.
var errReadOnly = errors.New("s3store: read-only store (no staging directory)")

// Client is the S3 client the store uses.
func (s *Store) Client() *s3.Client { return s.client }

func (s *Store) key(name string) string {
	if s.cfg.Prefix == "" {
		return name
	}
	return s.cfg.Prefix + "/" + name
}

// Location implements evidence.Store: s3://BUCKET/PREFIX/NAME; for a partial object (NAME.partial), which is never
// uploaded, its path in the staging directory.
func (s *Store) Location(name string) string {
	if strings.HasSuffix(name, evidence.PartialSuffix) && s.staging != nil {
		return s.staging.Location(name)
	}
	if name == "" {
		return strings.TrimSuffix("s3://"+s.cfg.Bucket+"/"+s.cfg.Prefix, "/")
	}
	return "s3://" + s.cfg.Bucket + "/" + s.key(name)
}

// Create implements evidence.Store: the object is staged as STAGING/name.partial and uploaded by Commit. ctx
// bounds the upload too (the Object's Commit takes none).
func (s *Store) Create(ctx context.Context, name string) (evidence.Object, error) {
	if err := evidence.CheckName(name); err != nil {
		return nil, err
	}
	if s.staging == nil {
		return nil, errReadOnly
	}
	s.dirs.RLock()
	local, err := s.staging.Create(ctx, name)
	s.dirs.RUnlock()
	if err != nil {
		return nil, err
	}
	return &object{ctx: ctx, s: s, name: name, local: local, sums: newPartHasher(s.cfg.PartSize)}, nil
}

// Open implements evidence.Store: a GetObject, streamed.
func (s *Store) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := evidence.CheckName(name); err != nil {
		return nil, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.key(name))})
	if err != nil {
		return nil, s.objectError("cannot read", name, err)
	}
	return out.Body, nil
}

// Stat implements evidence.Store: a HeadObject.
func (s *Store) Stat(ctx context.Context, name string) (int64, error) {
	if err := evidence.CheckName(name); err != nil {
		return 0, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.key(name))})
	if err != nil {
		return 0, s.objectError("cannot read", name, err)
	}
	return aws.ToInt64(out.ContentLength), nil
}

// Remove implements evidence.Store: the object, the incomplete multipart uploads of its key (a crash mid-upload
// leaves one, invisible but billed), and its staged copies.
func (s *Store) Remove(ctx context.Context, name string) error {
	if err := evidence.CheckName(name); err != nil {
		return err
	}
	key := s.key(name)
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key)}); err != nil {
		return s.objectError("cannot delete", name, err)
	}
	s.abortIncomplete(ctx, key)
	if s.staging == nil {
		return nil
	}
	return s.staging.Remove(ctx, name)
}

// abortIncomplete aborts the incomplete multipart uploads of key. A store that does not let us list them
// (s3:ListBucketMultipartUploads not granted, not implemented) is only logged: those uploads are invisible, and a
// bucket lifecycle rule (AbortIncompleteMultipartUpload) ends them too.
func (s *Store) abortIncomplete(ctx context.Context, key string) {
	p := s3.NewListMultipartUploadsPaginator(s.client, &s3.ListMultipartUploadsInput{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(key)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			s.log.Debug("cannot list incomplete multipart uploads", "key", key, "err", err)
			return
		}
		for _, u := range page.Uploads {
			if aws.ToString(u.Key) != key {
				continue
			}
			if _, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(s.cfg.Bucket),
				Key: u.Key, UploadId: u.UploadId}); err != nil {
				s.log.Warn("cannot abort an incomplete multipart upload", "key", key, "upload", aws.ToString(u.UploadId), "err", err)
			}
		}
	}
}

// List implements evidence.Store: the keys under the prefix (ListObjectsV2) whose name ends with suffix and is a
// valid object name.
func (s *Store) List(ctx context.Context, suffix string) ([]string, error) {
	prefix := ""
	if s.cfg.Prefix != "" {
		prefix = s.cfg.Prefix + "/"
	}
	var names []string
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("cannot list %s: %w", s.Location(""), describe(err))
		}
		for _, o := range page.Contents {
			name := strings.TrimPrefix(aws.ToString(o.Key), prefix)
			if strings.HasSuffix(name, suffix) && evidence.CheckName(name) == nil {
				names = append(names, name)
			}
		}
	}
	sort.Strings(names)
	return names, nil
}

// objectError wraps an error about name: a missing object matches fs.ErrNotExist.
func (s *Store) objectError(what, name string, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("%s: %w", s.Location(name), fs.ErrNotExist)
	}
	return fmt.Errorf("%s %s: %w", what, s.Location(name), describe(err))
}

func isNotFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	var ae smithy.APIError
	if errors.As(err, &ae) && (ae.ErrorCode() == "NoSuchKey" || ae.ErrorCode() == "NotFound") {
		return true
	}
	// A HEAD has no body to name the error: a 404 on an object is its absence (New checked the bucket).
	var re *smithyhttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound && !isCode(err, "NoSuchBucket")
}

func isCode(err error, code string) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == code
}

// describe keeps the SDK's error (errors.As still finds the API error) but says first what the store answered:
// the status, the code and the message, which is what a person needs.
func describe(err error) error {
	var ae smithy.APIError
	var re *smithyhttp.ResponseError
	if errors.As(err, &ae) && errors.As(err, &re) {
		return &storeError{status: re.HTTPStatusCode(), code: ae.ErrorCode(), msg: ae.ErrorMessage(), err: err}
	}
	return err
}

// storeError is an answer of the store: HTTP status, S3 error code and message.
type storeError struct {
	status    int
	code, msg string
	err       error
}

func (e *storeError) Error() string {
	s := fmt.Sprintf("the store answered %d %s", e.status, e.code)
	if e.msg != "" {
		s += ": " + e.msg
	}
	return s
}

func (e *storeError) Unwrap() error { return e.err }

// contentType names what an object is, for people browsing the bucket.
func contentType(name string) string {
	switch path.Ext(name) {
	case ".tar":
		return "application/x-tar"
	case ".json":
		return "application/json"
	}
	return "application/octet-stream"
}
