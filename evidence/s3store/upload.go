package s3store

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go/middleware"
	"golang.org/x/sync/errgroup"

	"github.com/warren-dev/warren/evidence"
)

// abortTimeout bounds the AbortMultipartUpload sent after a failed multipart upload (its context may be done).
const abortTimeout = 30 * time.Second

// object is an object being staged; Commit uploads it. Not safe for concurrent use (as an evidence.Object).
type object struct {
	// ctx is Create's: the Object interface's Commit takes none, and the upload must stop when the run does.
	ctx   context.Context
	s     *Store
	name  string
	local evidence.Object
	sums  *partHasher
	err   error // the first write error
	done  bool
}

func (o *object) Write(p []byte) (int, error) {
	if o.err != nil {
		return 0, o.err
	}
	n, err := o.local.Write(p)
	o.sums.Write(p[:n]) // what reached the staged file, whose bytes the store will be asked to check
	if err != nil {
		o.err = err
	}
	return n, err
}

// Commit makes the staged copy whole (synced, renamed), then uploads it. On an upload failure the staged copy is
// kept and the error says where and what to do.
func (o *object) Commit() error {
	if o.done {
		return errors.New("object already closed")
	}
	o.done = true
	if o.err != nil {
		o.local.Close()
		return fmt.Errorf("cannot stage %s: %w", o.s.Location(o.name), o.err)
	}
	if err := o.local.Commit(); err != nil {
		return err
	}
	if err := o.s.upload(o.ctx, o.name, o.sums.n, o.sums.Sum()); err != nil {
		return o.s.keptError(o.name, err)
	}
	o.s.dropStaged(o.ctx, o.name)
	return nil
}

// Close abandons an object not committed: it stays staged as name.partial and is not uploaded.
func (o *object) Close() error {
	if o.done {
		return nil
	}
	o.done = true
	return o.local.Close()
}

// keptError is an upload failure of name, whose staged copy is kept.
func (s *Store) keptError(name string, err error) error {
	return fmt.Errorf("cannot upload %s: %w; the local copy is kept in %s: run the same command again (same --out, --staging-dir) to upload it: a target staged whole is uploaded, not acquired again",
		s.Location(name), err, s.staging.Location(name))
}

// dropStaged removes the staged copy of an uploaded object, but keeps a statement until its archive is uploaded
// too, so that a target whose archive upload fails stays whole in staging (UploadStaged).
func (s *Store) dropStaged(ctx context.Context, name string) {
	var drop []string
	switch path.Base(name) {
	case evidence.StatementName:
		return
	case evidence.ArchiveName:
		drop = []string{name, path.Join(path.Dir(name), evidence.StatementName)}
	default:
		drop = []string{name}
	}
	for _, n := range drop {
		if err := s.staging.Remove(ctx, n); err != nil {
			s.log.Warn("cannot remove an uploaded object's staged copy", "path", s.staging.Location(n), "err", err)
		}
	}
	// The directories left empty go too, so that what stays in staging is what needs a person's attention.
	s.dirs.Lock()
	defer s.dirs.Unlock()
	for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
		if os.Remove(s.staging.Location(dir)) != nil {
			break // not empty (another target's, or an object being staged), or gone
		}
	}
}

// upload sends the staged copy of name (size bytes; parts: the SHA-256 of each part of s.cfg.PartSize, as written)
// with its checksums, in one PutObject or in parts, and checks the checksum the store says it computed.
func (s *Store) upload(ctx context.Context, name string, size int64, parts [][]byte) error {
	f, err := os.Open(s.staging.Location(name))
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() != size {
		return fmt.Errorf("the staged copy %s changed since it was written (%d bytes written, %v now)", f.Name(), size, sizeOf(fi, err))
	}
	start := time.Now()
	partSize := s.cfg.PartSize
	if size <= partSize {
		sum := sha256.Sum256(nil) // of an empty object
		if len(parts) == 1 {
			sum = [sha256.Size]byte(parts[0])
		}
		err = s.put(ctx, name, f, size, sum[:])
	} else {
		if int64(len(parts)) > int64(s.maxParts) {
			// More parts than S3 takes: larger parts, whose sums need another pass over the staged copy, which
			// must still be what was written (its parts' sums at the first size are taken in the same pass).
			larger := max(partSize, (size+int64(s.maxParts)-1)/int64(s.maxParts))
			larger = (larger + 1<<20 - 1) &^ (1<<20 - 1)
			written := parts
			if parts, err = resumFile(f, larger, partSize, written); err != nil {
				return err
			}
			partSize = larger
		}
		err = s.putParts(ctx, name, f, size, partSize, parts)
	}
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	s.log.Info("uploaded", "object", s.Location(name), "bytes", size, "parts", max(1, len(parts)), "duration", elapsed.Round(time.Millisecond),
		"MiB/s", fmt.Sprintf("%.1f", float64(size)/(1<<20)/max(elapsed.Seconds(), 1e-9)))
	return nil
}

func sizeOf(fi os.FileInfo, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d bytes", fi.Size())
}

// put uploads a whole object with one PutObject.
func (s *Store) put(ctx context.Context, name string, f *os.File, size int64, sum []byte) error {
	want := base64.StdEncoding.EncodeToString(sum)
	out, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.key(name)),
		Body: io.NewSectionReader(f, 0, size), ContentLength: aws.Int64(size), ContentType: aws.String(contentType(name)),
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256, ChecksumSHA256: aws.String(want),
	}, withPayloadHash(sum))
	if err != nil {
		return describe(err)
	}
	if got := aws.ToString(out.ChecksumSHA256); got != "" && got != want {
		return fmt.Errorf("the store computed x-amz-checksum-sha256 %s, warren sent %s", got, want)
	}
	return nil
}

// putParts uploads an object in parts of partSize (sums: each part's SHA-256), PartConcurrency at a time, and
// checks the composite checksum the store computed. A failed upload is aborted.
func (s *Store) putParts(ctx context.Context, name string, f *os.File, size, partSize int64, sums [][]byte) (err error) {
	bucket, key := aws.String(s.cfg.Bucket), aws.String(s.key(name))
	mpu, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: bucket, Key: key, ContentType: aws.String(contentType(name)),
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256, ChecksumType: types.ChecksumTypeComposite,
	})
	if err != nil {
		return describe(err)
	}
	defer func() {
		if err == nil {
			return
		}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
		defer cancel()
		if _, aerr := s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: bucket, Key: key, UploadId: mpu.UploadId}); aerr != nil {
			s.log.Warn("cannot abort the failed multipart upload (the next run aborts it)", "object", s.Location(name), "err", aerr)
		}
	}()
	completed := make([]types.CompletedPart, len(sums))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.PartConcurrency)
	for i, sum := range sums {
		off := int64(i) * partSize
		n := min(partSize, size-off)
		g.Go(func() error {
			b64 := base64.StdEncoding.EncodeToString(sum)
			out, err := s.client.UploadPart(gctx, &s3.UploadPartInput{
				Bucket: bucket, Key: key, UploadId: mpu.UploadId, PartNumber: aws.Int32(int32(i + 1)),
				Body: io.NewSectionReader(f, off, n), ContentLength: aws.Int64(n),
				ChecksumAlgorithm: types.ChecksumAlgorithmSha256, ChecksumSHA256: aws.String(b64),
			}, withPayloadHash(sum))
			if err != nil {
				return fmt.Errorf("part %d of %d: %w", i+1, len(sums), describe(err))
			}
			if got := aws.ToString(out.ChecksumSHA256); got != "" && got != b64 {
				return fmt.Errorf("part %d: the store computed x-amz-checksum-sha256 %s, warren sent %s", i+1, got, b64)
			}
			completed[i] = types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: out.ETag, ChecksumSHA256: aws.String(b64)}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	sort.Slice(completed, func(i, j int) bool { return *completed[i].PartNumber < *completed[j].PartNumber })
	out, err := s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: bucket, Key: key, UploadId: mpu.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: completed},
	})
	if err != nil {
		return describe(err)
	}
	want := CompositeSHA256(sums)
	if got := aws.ToString(out.ChecksumSHA256); got != "" && got != want {
		return fmt.Errorf("the store computed the composite x-amz-checksum-sha256 %s, warren expected %s", got, want)
	}
	return nil
}

// CompositeSHA256 is S3's composite checksum of a multipart object: base64 of the SHA-256 of the parts' SHA-256s
// (concatenated, in order), then "-" and the number of parts.
func CompositeSHA256(parts [][]byte) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
	}
	return fmt.Sprintf("%s-%d", base64.StdEncoding.EncodeToString(h.Sum(nil)), len(parts))
}

// withPayloadHash gives SigV4 the request payload's SHA-256, which warren has already computed, so that the payload
// is signed without the SDK reading the body a second time to hash it (over HTTPS the SDK would otherwise send it
// unsigned, with the checksum alone protecting it).
func withPayloadHash(sum []byte) func(*s3.Options) {
	hexSum := hex.EncodeToString(sum)
	return func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
			// First in the finalize step: the signer and the payload-hash middlewares (whichever the SDK picked)
			// all come after it and take a hash already in the context as given.
			return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("warrenPayloadHash",
				func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
					return next.HandleFinalize(v4.SetPayloadHash(ctx, hexSum), in)
				}), middleware.Before)
		})
	}
}

// partHasher hashes a stream in parts of partSize, as it is written: one pass of SHA-256 (the evidence archive
// already takes the whole archive's as it goes). The parts' sums are all an upload needs: a single part's is the
// object's, and S3's composite checksum is made of them.
type partHasher struct {
	partSize int64
	part     hash.Hash
	inPart   int64
	n        int64
	parts    [][]byte
}

func newPartHasher(partSize int64) *partHasher {
	return &partHasher{partSize: partSize, part: sha256.New()}
}

func (h *partHasher) Write(p []byte) (int, error) {
	n := len(p)
	h.n += int64(n)
	for len(p) > 0 {
		k := min(int64(len(p)), h.partSize-h.inPart)
		h.part.Write(p[:k])
		h.inPart += k
		p = p[k:]
		if h.inPart == h.partSize {
			h.parts = append(h.parts, h.part.Sum(nil))
			h.part.Reset()
			h.inPart = 0
		}
	}
	return n, nil
}

// Sum returns every part's SHA-256 (the last part short, unless the stream ended on a part boundary; none for an
// empty stream).
func (h *partHasher) Sum() [][]byte {
	parts := h.parts
	if h.inPart > 0 {
		parts = append(parts[:len(parts):len(parts)], h.part.Sum(nil))
	}
	return parts
}

// sumFile hashes f from its start, whole and in parts of partSize.
func sumFile(f *os.File, partSize int64) (whole []byte, parts [][]byte, err error) {
	h, w := newPartHasher(partSize), sha256.New()
	if _, err := io.Copy(io.MultiWriter(h, w), io.NewSectionReader(f, 0, 1<<62)); err != nil {
		return nil, nil, fmt.Errorf("cannot read the staged copy %s: %w", f.Name(), err)
	}
	return w.Sum(nil), h.Sum(), nil
}

// resumFile hashes f in parts of partSize, and checks in the same pass that its parts of writtenSize still have the
// sums written (taken as it was written).
func resumFile(f *os.File, partSize, writtenSize int64, written [][]byte) ([][]byte, error) {
	h, again := newPartHasher(partSize), newPartHasher(writtenSize)
	if _, err := io.Copy(io.MultiWriter(h, again), io.NewSectionReader(f, 0, 1<<62)); err != nil {
		return nil, fmt.Errorf("cannot read the staged copy %s: %w", f.Name(), err)
	}
	if CompositeSHA256(again.Sum()) != CompositeSHA256(written) {
		return nil, fmt.Errorf("the staged copy %s changed since it was written", f.Name())
	}
	return h.Sum(), nil
}
