package s3store

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"go.uber.org/goleak"

	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/internal/testenv/s3test"
)

// shared is the store every test of the package uses: weed takes seconds to start.
var shared s3test.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	if err := shared.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "s3store: weed:", err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "s3store: leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

const testPartSize = MinPartSize // 5 MiB: multipart uploads with a few MiB of test data

// fixture is a bucket of the shared server and a store in it.
type fixture struct {
	srv    *s3test.Server
	bucket string
	store  *Store
	signer *evidence.Signer
	keys   *evidence.Keys
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := shared.Get(t)
	bucket, err := srv.CreateBucket(t.Context(), "evidence")
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	signer, err := evidence.NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := evidence.NewKeys(signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{srv: srv, bucket: bucket, signer: signer, keys: keys}
	f.store = f.open(t, srv.Endpoint, t.TempDir())
	return f
}

// open returns a store of the fixture's bucket through endpoint, staging in staging.
func (f *fixture) open(t *testing.T, endpoint, staging string) *Store {
	t.Helper()
	cfg := f.config(endpoint, staging)
	s, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *fixture) config(endpoint, staging string) Config {
	return Config{Bucket: f.bucket, Prefix: "cases/ir-42", StagingDir: staging, AWS: f.srv.AWSConfig(), Endpoint: endpoint,
		PathStyle: true, PartSize: testPartSize}
}

// randomBody is n bytes that do not compress and differ each call.
func randomBody(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return string(b)
}

// writeTarget writes one target through the store: files, then the statement signed, then the archive.
func (f *fixture) writeTarget(t *testing.T, store evidence.Store, dir string, files map[string]string) (*evidence.Statement, error) {
	t.Helper()
	return f.writeTargetThen(t, store, dir, files, "abc", nil)
}

// writeTargetThen is writeTarget with an acquisition id, calling beforeFinish (when not nil) once the archive's
// entries are written.
func (f *fixture) writeTargetThen(t *testing.T, store evidence.Store, dir string, files map[string]string, id string, beforeFinish func()) (*evidence.Statement, error) {
	t.Helper()
	ctx := t.Context()
	tw, err := evidence.BeginTarget(ctx, store, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range sortedNames(files) {
		body := files[name]
		if _, err := tw.Archive().WriteEntry(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg},
			strings.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	if beforeFinish != nil {
		beforeFinish()
	}
	parts := strings.SplitN(dir, "/", 3)
	return tw.Finish(ctx, f.signer, evidence.Predicate{Case: "ir-42", Examiner: "alice", AcquisitionID: id,
		Target:  evidence.Target{Cluster: "prod", Namespace: parts[0], Pod: parts[1], Container: parts[2], PodUID: "uid-1"},
		Profile: "triage", Mode: "exec", Method: "collector", StartedOn: time.Now(), FinishedOn: time.Now()})
}

func sortedNames(m map[string]string) []string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	for i := range names {
		for j := i + 1; j < len(names); j++ {
			if names[j] < names[i] {
				names[i], names[j] = names[j], names[i]
			}
		}
	}
	return names
}

// get reads an object of the bucket directly.
func (f *fixture) get(t *testing.T, key string) []byte {
	t.Helper()
	out, err := f.srv.Client().GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("GetObject %s: %v", key, err)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// head asks the store for an object's checksum as the store computed and kept it.
func (f *fixture) head(t *testing.T, key string) *s3.HeadObjectOutput {
	t.Helper()
	out, err := f.srv.Client().HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(key),
		ChecksumMode: types.ChecksumModeEnabled})
	if err != nil {
		t.Fatalf("HeadObject %s: %v", key, err)
	}
	return out
}

func (f *fixture) missing(t *testing.T, key string) {
	t.Helper()
	_, err := f.srv.Client().HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(key)})
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != 404 {
		t.Fatalf("HeadObject %s: %v, want 404: the object must not be in the bucket", key, err)
	}
}

func partSums(data []byte, partSize int) [][]byte {
	var sums [][]byte
	for off := 0; off < len(data); off += partSize {
		s := sha256.Sum256(data[off:min(off+partSize, len(data))])
		sums = append(sums, s[:])
	}
	return sums
}

func b64sha256(data []byte) string {
	s := sha256.Sum256(data)
	return base64.StdEncoding.EncodeToString(s[:])
}

// An archive of three parts and a statement of one: the store computed and kept the SHA-256 checksums warren sent
// (the whole object's for the statement, the composite of the parts' for the archive); the objects are the bytes
// the statement names, verify passes against the bucket, and the staged copies are gone.
func TestUploadVerifiedByTheStore(t *testing.T) {
	f := newFixture(t)
	dir := "payments/api-7f9c/main"
	files := map[string]string{
		"container/fs/var/log/big.log": randomBody(2*testPartSize + testPartSize/2),
		"container/proc/1/cmdline":     "sleep\x00infinity\x00",
	}
	st, err := f.writeTarget(t, f.store, dir, files)
	if err != nil {
		t.Fatal(err)
	}
	archKey, stKey := "cases/ir-42/"+dir+"/evidence.tar", "cases/ir-42/"+dir+"/statement.dsse.json"

	archive := f.get(t, archKey)
	if got := fmt.Sprintf("%x", sha256.Sum256(archive)); got != st.Predicate.Archive.SHA256 {
		t.Fatalf("the bucket's evidence.tar has sha256 %s, the statement says %s", got, st.Predicate.Archive.SHA256)
	}
	h := f.head(t, archKey)
	if want := CompositeSHA256(partSums(archive, testPartSize)); aws.ToString(h.ChecksumSHA256) != want || h.ChecksumType != types.ChecksumTypeComposite {
		t.Errorf("evidence.tar: the store keeps checksum %q (%s), want the composite %q of 3 parts", aws.ToString(h.ChecksumSHA256), h.ChecksumType, want)
	}
	if !strings.HasSuffix(aws.ToString(h.ChecksumSHA256), "-3") {
		t.Errorf("evidence.tar was not uploaded in 3 parts: %q", aws.ToString(h.ChecksumSHA256))
	}
	statement := f.get(t, stKey)
	if got, want := aws.ToString(f.head(t, stKey).ChecksumSHA256), b64sha256(statement); got != want {
		t.Errorf("statement: the store keeps checksum %q, want %q (its SHA-256)", got, want)
	}
	if rep := evidence.VerifyTarget(t.Context(), f.store, dir, f.keys); !rep.OK() {
		t.Fatalf("verify against the bucket: %v", rep.Failures)
	}
	entries, _ := os.ReadDir(filepath.Join(f.store.StagingDir(), filepath.FromSlash(dir)))
	if len(entries) != 0 {
		t.Errorf("staged copies left after the upload: %v", entries)
	}
	if loc := f.store.Location(dir + "/evidence.tar"); loc != "s3://"+f.bucket+"/"+archKey {
		t.Errorf("Location %s", loc)
	}
}

// storeAnswer is what the store answered to a request it refused.
func storeAnswer(err error) string {
	var ae smithy.APIError
	var re *smithyhttp.ResponseError
	if !errors.As(err, &ae) || !errors.As(err, &re) {
		return fmt.Sprintf("not an answer of the store: %v", err)
	}
	return fmt.Sprintf("%d %s: %s", re.HTTPStatusCode(), ae.ErrorCode(), ae.ErrorMessage())
}

// The store itself checks x-amz-checksum-sha256: a value that is not the body's SHA-256 is refused, on a PutObject
// and on a part, and nothing is stored.
func TestWrongChecksumRefusedByTheStore(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	c := f.srv.Client()
	body := []byte("evidence that is not what the checksum says")
	wrong := b64sha256([]byte("other bytes"))
	_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(f.bucket), Key: aws.String("wrong"),
		Body: bytes.NewReader(body), ChecksumAlgorithm: types.ChecksumAlgorithmSha256, ChecksumSHA256: aws.String(wrong)})
	if got := storeAnswer(err); got != badDigest {
		t.Fatalf("PutObject with a wrong x-amz-checksum-sha256: %s, want %s", got, badDigest)
	}
	f.missing(t, "wrong")

	mpu, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(f.bucket), Key: aws.String("wrong-part"),
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(f.bucket), Key: aws.String("wrong-part"), UploadId: mpu.UploadId,
		PartNumber: aws.Int32(1), Body: bytes.NewReader(body), ChecksumAlgorithm: types.ChecksumAlgorithmSha256, ChecksumSHA256: aws.String(wrong)})
	if got := storeAnswer(err); got != badDigest {
		t.Fatalf("UploadPart with a wrong x-amz-checksum-sha256: %s, want %s", got, badDigest)
	}
	if _, err := c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(f.bucket), Key: aws.String("wrong-part"), UploadId: mpu.UploadId}); err != nil {
		t.Fatal(err)
	}
}

// contentSHA256Mismatch is SeaweedFS's answer (AWS's too) to a signed payload whose SHA-256 is not the one signed:
// warren signs the payload with the hash it sends as x-amz-checksum-sha256, and the store checks the signature's
// first.
const contentSHA256Mismatch = "400 XAmzContentSHA256Mismatch: The provided 'x-amz-content-sha256' header does not match what was computed."

// badDigest is SeaweedFS's answer to a checksum that is not the body's (AWS answers 400 BadDigest too, "The sha256
// you specified did not match the calculated checksum.").
const badDigest = "400 BadDigest: The Content-Md5 you specified did not match what we received."

// A staged copy changed on the local disk after warren wrote it (a bad disk, a tamperer) is refused by the store:
// warren sends the checksums of the bytes it wrote (and signs the payload with the same hash, which the store checks
// first). Nothing reaches the bucket; the staged copy is kept and the
// error names it.
func TestChangedStagedCopyRefusedByTheStore(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		size int
		at   int64
	}{
		{"one PutObject", 1000, 10},
		{"a part of a multipart upload", 2*testPartSize + 100, testPartSize + 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "evidence-" + strings.ReplaceAll(tc.name, " ", "-") + ".tar"
			obj, err := f.store.Create(t.Context(), name)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(obj, randomBody(tc.size)); err != nil {
				t.Fatal(err)
			}
			staged := f.store.staging.Location(name) + evidence.PartialSuffix
			flipByte(t, staged, tc.at)
			err = obj.Commit()
			if err == nil {
				t.Fatal("a changed staged copy was uploaded")
			}
			kept := f.store.staging.Location(name)
			for _, want := range []string{"cannot upload " + f.store.Location(name), "the store answered " + contentSHA256Mismatch,
				"the local copy is kept in " + kept} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q\n does not say %q", err, want)
				}
			}
			if _, serr := os.Stat(kept); serr != nil {
				t.Errorf("the staged copy is gone: %v", serr)
			}
			f.missing(t, "cases/ir-42/"+name)
			if tc.size > testPartSize {
				f.noUploads(t, "cases/ir-42/"+name) // the failed multipart upload was aborted
			}
		})
	}
}

func flipByte(t *testing.T, path string, at int64) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	b := make([]byte, 1)
	if _, err := fh.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := fh.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

// noUploads fails if key has an incomplete multipart upload.
func (f *fixture) noUploads(t *testing.T, key string) {
	t.Helper()
	if ups := f.uploads(t, key); len(ups) != 0 {
		t.Errorf("incomplete multipart uploads of %s left: %d", key, len(ups))
	}
}

func (f *fixture) uploads(t *testing.T, key string) []types.MultipartUpload {
	t.Helper()
	out, err := f.srv.Client().ListMultipartUploads(t.Context(), &s3.ListMultipartUploadsInput{Bucket: aws.String(f.bucket), Prefix: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	var ups []types.MultipartUpload
	for _, u := range out.Uploads {
		if aws.ToString(u.Key) == key {
			ups = append(ups, u)
		}
	}
	return ups
}

// The store goes away before the statement is uploaded (first) or in the middle of the archive's parts (second):
// the target fails with an error that says where its local copy is and what to do, the bucket never shows an
// evidence.tar, and the next run (UploadStaged, as `warren acquire` does first) uploads the staged target without
// acquiring it again; verify then passes against the bucket.
func TestUploadFailureKeepsTheLocalCopy(t *testing.T) {
	f := newFixture(t)
	target := strings.TrimPrefix(f.srv.Endpoint, "http://")
	for _, tc := range []struct {
		name   string
		limit  int64 // bytes towards the store before the cut; 0: cut before the target is written
		failed string
	}{
		{"store gone before the statement", 0, "statement.dsse.json"},
		{"store gone mid-archive", 2*testPartSize + testPartSize/2, "evidence.tar"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := "payments/api-" + map[bool]string{true: "a", false: "b"}[tc.limit == 0] + "/main"
			proxy := s3test.StartCutProxy(t, target, tc.limit)
			staging := t.TempDir()
			cfg := f.config(proxy.URL(), staging)
			cfg.AWS.RetryMaxAttempts = 1 // the cut is for good: retries would only take time
			cfg.PartConcurrency = 1
			store, err := New(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.writeTargetThen(t, store, dir, map[string]string{"container/fs/big": randomBody(4 * testPartSize)}, "abc", func() {
				if tc.limit == 0 {
					proxy.Cut()
				}
			})
			if err == nil {
				t.Fatal("the target was written through a store that went away")
			}
			name := dir + "/" + tc.failed
			kept := filepath.Join(staging, filepath.FromSlash(name))
			for _, want := range []string{"cannot upload " + store.Location(name) + ": ", "the local copy is kept in " + kept + ": run the same command again"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q\n does not say %q", err, want)
				}
			}
			for _, n := range []string{evidence.StatementName, evidence.ArchiveName} {
				p := filepath.Join(staging, filepath.FromSlash(dir), n)
				if _, err := os.Stat(p); err != nil && !(n == evidence.ArchiveName && tc.limit == 0) {
					t.Errorf("staged %s: %v", n, err)
				}
			}
			f.missing(t, "cases/ir-42/"+dir+"/evidence.tar")
			if tc.limit > 0 {
				if ups := f.uploads(t, "cases/ir-42/"+dir+"/evidence.tar"); len(ups) != 1 {
					t.Errorf("%d incomplete uploads of the archive, want the one cut (its abort could not reach the store)", len(ups))
				}
				if rep := evidence.VerifyTarget(t.Context(), f.store, dir, f.keys); rep.OK() || rep.Failures[0].Reason != "missing (the statement lists it)" {
					t.Errorf("verify of the bucket mid-upload: %v, want the archive missing", rep.Failures)
				}
			}

			again := f.open(t, f.srv.Endpoint, staging)
			done, err := again.UploadStaged(t.Context(), f.keys)
			if err != nil || len(done) != 1 || !done[0].Uploaded || done[0].Dir != dir {
				t.Fatalf("UploadStaged: %+v, %v", done, err)
			}
			if rep := evidence.VerifyTarget(t.Context(), again, dir, f.keys); !rep.OK() {
				t.Fatalf("verify after UploadStaged: %v", rep.Failures)
			}
			f.noUploads(t, "cases/ir-42/"+dir+"/evidence.tar")
			if entries, _ := os.ReadDir(filepath.Join(staging, filepath.FromSlash(dir))); len(entries) != 0 {
				t.Errorf("staged copies left after UploadStaged: %v", entries)
			}
			// Nothing left to do the next time.
			if done, err := again.UploadStaged(t.Context(), f.keys); err != nil || len(done) != 0 {
				t.Errorf("second UploadStaged: %+v, %v", done, err)
			}
		})
	}
}

// UploadStaged leaves what it must not upload: a target that does not verify in staging (a partial archive, a
// changed one), and one whose directory in the bucket holds another acquisition that verifies.
func TestUploadStagedLeavesWhatItMustNot(t *testing.T) {
	f := newFixture(t)
	staging := t.TempDir()
	dir := "payments/api-c/main"
	// A verified acquisition in the bucket.
	if _, err := f.writeTarget(t, f.store, dir, map[string]string{"container/a": "first"}); err != nil {
		t.Fatal(err)
	}
	// Another, staged whole by a run that could not upload it (written into staging in the same layout).
	local, err := evidence.NewLocalStore(staging)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.writeTargetThen(t, local, dir, map[string]string{"container/a": "second"}, "second", nil); err != nil {
		t.Fatal(err)
	}
	again := f.open(t, f.srv.Endpoint, staging)
	done, err := again.UploadStaged(t.Context(), f.keys)
	if err != nil || len(done) != 1 || done[0].Uploaded || !strings.Contains(done[0].Reason, "holds another acquisition of this target") {
		t.Fatalf("UploadStaged over a verified acquisition: %+v, %v", done, err)
	}
	if st := f.get(t, "cases/ir-42/"+dir+"/evidence.tar"); !bytes.Contains(st, []byte("first")) {
		t.Error("the bucket's acquisition was replaced")
	}

	// A staged target whose archive changed after it was signed.
	flipByte(t, filepath.Join(staging, filepath.FromSlash(dir), evidence.ArchiveName), 600)
	done, err = again.UploadStaged(t.Context(), f.keys)
	if err != nil || len(done) != 1 || done[0].Uploaded || !strings.Contains(done[0].Reason, "it does not verify in staging: ") {
		t.Fatalf("UploadStaged of a changed archive: %+v, %v", done, err)
	}
	// A partial archive whose bytes are not those the statement names stays partial.
	p := filepath.Join(staging, filepath.FromSlash(dir), evidence.ArchiveName)
	if err := os.Rename(p, p+evidence.PartialSuffix); err != nil {
		t.Fatal(err)
	}
	done, err = again.UploadStaged(t.Context(), f.keys)
	if err != nil || len(done) != 1 || done[0].Uploaded || !strings.Contains(done[0].Reason, "its archive is partial") {
		t.Fatalf("UploadStaged of a partial archive: %+v, %v", done, err)
	}
	if _, err := os.Stat(p + evidence.PartialSuffix); err != nil {
		t.Errorf("the partial archive was not left partial: %v", err)
	}
}

// Verify and resume read the bucket: every target verifies; a flipped byte in the bucket's archive is named (the
// archive and the file inside it), as is an archive missing beside its statement; a target that does not verify
// is redone (BeginTarget removes both objects first) and then verifies.
func TestVerifyAndResumeAgainstTheBucket(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	dirs := []string{"payments/api-1/main", "payments/api-2/main", "payments/api-2/sidecar"}
	for _, d := range dirs {
		if _, err := f.writeTarget(t, f.store, d, map[string]string{"container/etc/passwd": "root:x:0:0::/root:/bin/sh\n", "kubernetes/pod.json": `{"kind":"Pod"}`}); err != nil {
			t.Fatal(err)
		}
	}
	idx := &evidence.Index{AcquisitionID: "abc", Cluster: "prod", Profile: "triage", StartedOn: time.Now().UTC()}
	for _, d := range dirs {
		p := strings.Split(d, "/")
		idx.Targets = append(idx.Targets, evidence.IndexTarget{Namespace: p[0], Pod: p[1], Container: p[2], Dir: d, Result: evidence.ResultAcquired})
	}
	if err := evidence.WriteIndex(ctx, f.store, idx); err != nil {
		t.Fatal(err)
	}
	if back, err := evidence.ReadIndex(ctx, f.store); err != nil || len(back.Targets) != 3 {
		t.Fatalf("ReadIndex: %+v, %v", back, err)
	}
	rep, err := evidence.Verify(ctx, f.store, f.keys)
	if err != nil || len(rep.Failures) != 0 || len(rep.Targets) != 3 {
		t.Fatalf("Verify: %+v, %v", rep, err)
	}

	// A flipped byte in the bucket: someone with write access to it re-uploads the archive changed.
	key := "cases/ir-42/" + dirs[0] + "/evidence.tar"
	data := f.get(t, key)
	i := bytes.Index(data, []byte("root:x:0:0"))
	data[i] ^= 0x20
	if _, err := f.srv.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(key), Body: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	// Another target's archive is gone from beside its statement.
	if _, err := f.srv.Client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(f.bucket), Key: aws.String("cases/ir-42/" + dirs[1] + "/evidence.tar")}); err != nil {
		t.Fatal(err)
	}
	rep, err = evidence.Verify(ctx, f.store, f.keys)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, fl := range rep.Failures {
		got = append(got, fl.Path+": "+strings.SplitN(fl.Reason, " ", 2)[0]+"...")
	}
	want := []string{
		dirs[0] + "/evidence.tar: sha256...",
		dirs[0] + "/evidence.tar:container/etc/passwd: sha256...",
		dirs[1] + "/evidence.tar: missing...",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("Verify failures:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if evidence.Verified(ctx, f.store, dirs[0], f.keys) || evidence.Verified(ctx, f.store, dirs[1], f.keys) || !evidence.Verified(ctx, f.store, dirs[2], f.keys) {
		t.Fatal("resume would keep a target that does not verify, or redo one that does")
	}
	// Resume redoes the two.
	for _, d := range dirs[:2] {
		if _, err := f.writeTarget(t, f.store, d, map[string]string{"container/etc/passwd": "again\n"}); err != nil {
			t.Fatal(err)
		}
	}
	if rep, err := evidence.Verify(ctx, f.store, f.keys); err != nil || len(rep.Failures) != 0 {
		t.Fatalf("Verify after the redo: %+v, %v", rep.Failures, err)
	}
	if _, err := f.store.Stat(ctx, dirs[1]+"/nothing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat of a missing object: %v, want fs.ErrNotExist", err)
	}
	if _, err := f.store.Open(ctx, dirs[1]+"/nothing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open of a missing object: %v, want fs.ErrNotExist", err)
	}
}

// A crash mid-upload leaves an incomplete multipart upload (invisible, billed): Remove, which BeginTarget calls
// before a target is redone, aborts it.
func TestRemoveAbortsIncompleteUploads(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	key := "cases/ir-42/payments/api-1/main/evidence.tar"
	for range 2 {
		if _, err := f.srv.Client().CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(f.bucket), Key: aws.String(key)}); err != nil {
			t.Fatal(err)
		}
	}
	// Another object whose key starts the same is not touched.
	other := key + ".other"
	if _, err := f.srv.Client().CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(f.bucket), Key: aws.String(other)}); err != nil {
		t.Fatal(err)
	}
	if err := f.store.Remove(ctx, "payments/api-1/main/evidence.tar"); err != nil {
		t.Fatal(err)
	}
	f.noUploads(t, key)
	if len(f.uploads(t, other)) != 1 {
		t.Error("Remove aborted another object's upload")
	}
}

// An object of more parts than S3 takes is uploaded in larger parts, whose sums come from another pass over the
// staged copy.
func TestMorePartsThanTheStoreTakes(t *testing.T) {
	f := newFixture(t)
	f.store.maxParts = 2
	obj, err := f.store.Create(t.Context(), "big.tar")
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(randomBody(3*testPartSize + 1))
	if _, err := obj.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := obj.Commit(); err != nil {
		t.Fatal(err)
	}
	partSize := 8 << 20 // ceil((15 MiB + 1) / 2) rounded up to a MiB
	h := f.head(t, "cases/ir-42/big.tar")
	if want := CompositeSHA256(partSums(body, partSize)); aws.ToString(h.ChecksumSHA256) != want {
		t.Errorf("checksum %q, want %q (2 parts of 8 MiB)", aws.ToString(h.ChecksumSHA256), want)
	}
	if !bytes.Equal(f.get(t, "cases/ir-42/big.tar"), body) {
		t.Error("the object differs from what was written")
	}

	// The other pass finds a staged copy changed since it was written.
	obj, err = f.store.Create(t.Context(), "changed.tar")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obj.Write(body); err != nil {
		t.Fatal(err)
	}
	flipByte(t, f.store.staging.Location("changed.tar")+evidence.PartialSuffix, 3*testPartSize)
	if err := obj.Commit(); err == nil || !strings.Contains(err.Error(), "changed.tar changed since it was written") {
		t.Fatalf("Commit of a changed staged copy: %v", err)
	}
	f.missing(t, "cases/ir-42/changed.tar")
}

// An empty object is uploaded with the SHA-256 of nothing.
func TestEmptyObject(t *testing.T) {
	f := newFixture(t)
	obj, err := f.store.Create(t.Context(), "empty.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := obj.Commit(); err != nil {
		t.Fatal(err)
	}
	if got, want := aws.ToString(f.head(t, "cases/ir-42/empty.json").ChecksumSHA256), b64sha256(nil); got != want {
		t.Errorf("checksum %q, want %q", got, want)
	}
}

// New says what is wrong before anything is acquired: a bucket that does not exist, credentials the store refuses,
// an endpoint that does not answer.
func TestNewChecksTheBucket(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no such bucket", func(c *Config) { c.Bucket = "no-such-bucket-42" }, "cannot reach s3://no-such-bucket-42 at " + f.srv.Endpoint + ": the store answered 404 NotFound"},
		{"wrong secret", func(c *Config) {
			c.AWS.Credentials = aws.NewCredentialsCache(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
				return aws.Credentials{AccessKeyID: f.srv.AccessKey, SecretAccessKey: "wrong"}, nil
			}))
		}, "the store answered 403"},
		{"no endpoint", func(c *Config) { c.Endpoint = "http://127.0.0.1:1"; c.AWS.RetryMaxAttempts = 1 }, "connection refused"},
		{"no region", func(c *Config) { c.AWS.Region = "" }, "no AWS region: set AWS_REGION or a profile's region, or give --s3-region"},
		{"small parts", func(c *Config) { c.PartSize = 1 << 20 }, "part size 1048576: want 5242880 to 5368709120 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.config(f.srv.Endpoint, t.TempDir())
			tc.edit(&cfg)
			_, err := New(t.Context(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want %q", err, tc.want)
			}
		})
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct{ in, bucket, prefix, err string }{
		{in: "s3://evidence", bucket: "evidence"},
		{in: "s3://evidence/", bucket: "evidence"},
		{in: "s3://evidence/cases/ir-42/", bucket: "evidence", prefix: "cases/ir-42"},
		{in: "s3://my.bucket-1/x", bucket: "my.bucket-1", prefix: "x"},
		{in: "s3://Evidence/x", err: "want lowercase letters"},
		{in: "s3://ev", err: "want 3 to 63 characters"},
		{in: "s3://-evidence", err: "want lowercase letters"},
		{in: "s3://evidence/cases/../x", err: `the prefix "cases/../x" has empty`},
		{in: "s3://evidence/a//b", err: `the prefix "a//b" has empty`},
		{in: `s3://evidence/a\b`, err: "backslash"},
		{in: "https://evidence/x", err: "is not an s3:// URL"},
	} {
		b, p, err := ParseURL(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseURL(%q): %v, want error %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || b != tc.bucket || p != tc.prefix):
			t.Errorf("ParseURL(%q) = %q, %q, %v; want %q, %q", tc.in, b, p, err, tc.bucket, tc.prefix)
		}
	}
}

// The sums taken while writing are those of the bytes, whole and per part, whatever the write sizes.
func TestPartHasher(t *testing.T) {
	body := []byte(randomBody(3*1000 + 17))
	for _, size := range []int{1, 7, 999, 1000, 1001, 5000} {
		h := newPartHasher(1000)
		for off := 0; off < len(body); off += size {
			h.Write(body[off:min(off+size, len(body))])
		}
		parts := h.Sum()
		if want := partSums(body, 1000); fmt.Sprint(parts) != fmt.Sprint(want) || len(parts) != 4 {
			t.Fatalf("writes of %d: %d part sums, want 4 equal to the parts'", size, len(parts))
		}
	}
	h := newPartHasher(1000)
	h.Write(body[:2000])
	if parts := h.Sum(); len(parts) != 2 {
		t.Errorf("a stream ending on a part boundary has %d parts, want 2", len(parts))
	}
	// S3's composite checksum: SHA-256 of the concatenated part SHA-256s, base64, "-N".
	a, b := sha256.Sum256([]byte("a")), sha256.Sum256([]byte("b"))
	both := sha256.Sum256(append(a[:], b[:]...))
	if got, want := CompositeSHA256([][]byte{a[:], b[:]}), base64.StdEncoding.EncodeToString(both[:])+"-2"; got != want {
		t.Errorf("CompositeSHA256 = %s, want %s", got, want)
	}
}

// BenchmarkUpload stages one archive-sized object (WARREN_BENCH_S3_MIB, default 1024 MiB) and commits it: write and
// hash into staging, then the upload in 64 MiB parts, 4 at a time, to the local store. Reports MB/s of the whole.
//
//	go test ./evidence/s3store -run XXX -bench Upload -benchtime 1x
func BenchmarkUpload(b *testing.B) {
	mib := 1024
	if v := os.Getenv("WARREN_BENCH_S3_MIB"); v != "" {
		fmt.Sscan(v, &mib)
	}
	srv := shared.Get(b)
	bucket, err := srv.CreateBucket(b.Context(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Bucket, cfg.StagingDir, cfg.AWS, cfg.Endpoint, cfg.PathStyle = bucket, b.TempDir(), srv.AWSConfig(), srv.Endpoint, true
	store, err := New(b.Context(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	chunk := []byte(randomBody(1 << 20))
	b.SetBytes(int64(mib) << 20)
	for i := 0; b.Loop(); i++ {
		obj, err := store.Create(b.Context(), fmt.Sprintf("t%d/evidence.tar", i))
		if err != nil {
			b.Fatal(err)
		}
		for range mib {
			if _, err := obj.Write(chunk); err != nil {
				b.Fatal(err)
			}
		}
		staged := time.Now()
		if err := obj.Commit(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(mib)/time.Since(staged).Seconds(), "upload-MiB/s")
	}
}
