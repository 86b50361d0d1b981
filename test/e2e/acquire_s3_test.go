package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/warren-dev/warren/acquire"
	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/evidence/s3store"
	"github.com/warren-dev/warren/internal/testenv/s3test"
)

// s3Shared is the S3 store (SeaweedFS) of the acquisition tests that write to object storage, started by the first
// of them; runMain stops it.
var s3Shared s3test.Shared

func stopS3(code int) int {
	if err := s3Shared.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: weed:", err)
		return 1
	}
	return code
}

// newS3Env is the streaming suite's environment, the acquisition's, and a fresh bucket of the shared store, which
// the AWS chain of the warren processes the test starts points at (s3Env).
func newS3Env(t *testing.T) (*streamEnv, *s3test.Server, string) {
	t.Helper()
	e := newStreamEnv(t)
	needAcquire(t)
	srv := s3Shared.Get(t)
	s3Env(t, srv)
	bucket, err := srv.CreateBucket(t.Context(), "evidence")
	if err != nil {
		t.Fatal(err)
	}
	return e, srv, bucket
}

// s3Env points the AWS chain of the warren processes the test starts at srv (static keys in the environment, no
// shared files, no instance metadata) and leaves the region unset: --s3-endpoint makes it us-east-1.
func s3Env(t *testing.T, srv *s3test.Server) {
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// TestAcquireToS3: warren acquire --out s3://BUCKET/PREFIX writes the layout to a real S3 store, which verified
// each object's x-amz-checksum-sha256 as it took it: for each evidence.tar (one PutObject) the store keeps exactly
// the SHA-256 the signed statement names. verify and resume read the bucket; a byte flipped in the bucket is named
// by verify.
func TestAcquireToS3(t *testing.T) {
	e, srv, bucket := newS3Env(t)
	a := imagePod(t, "s3-a", "busybox", "echo one > /tmp/one; exec sleep 3600", nil)
	b := imagePod(t, "s3-b", "busybox", "echo two > /tmp/two; exec sleep 3600", nil)
	out := "s3://" + bucket + "/cases/ir-7"
	staging := filepath.Join(t.TempDir(), "staging")
	s3Flags := []string{"--s3-endpoint", srv.Endpoint, "--s3-path-style"}
	args := append(e.acquireArgs(presetToken(t), out), append(s3Flags, "--staging-dir", staging)...)

	stdout, stderr, code := warrenAcquire(t, append(args, a.Name, b.Name)...)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"2 acquired, 0 kept from an earlier run, 0 failed; index " + out + "/acquisition.json\n",
		"verify: warren acquire verify " + out + " --s3-endpoint " + srv.Endpoint + " --s3-path-style --key signing.pub\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}

	c := srv.Client()
	store, err := s3store.New(t.Context(), s3store.Config{Bucket: bucket, Prefix: "cases/ir-7", AWS: srv.AWSConfig(), Endpoint: srv.Endpoint, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, pod := range []string{a.Name, b.Name} {
		dir := streamNS + "/" + pod + "/main"
		rep := evidence.VerifyTarget(t.Context(), store, dir, acqShared.keys)
		if !rep.OK() {
			t.Fatalf("%s: %v", dir, rep.Failures)
		}
		head, err := c.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("cases/ir-7/" + dir + "/evidence.tar"),
			ChecksumMode: types.ChecksumModeEnabled})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := hex.DecodeString(rep.Statement.Predicate.Archive.SHA256)
		if got, want := aws.ToString(head.ChecksumSHA256), base64.StdEncoding.EncodeToString(raw); got != want {
			t.Errorf("%s: the store verified and keeps x-amz-checksum-sha256 %q; the statement names %q", dir, got, want)
		}
	}
	// The run's lock stays (an empty file, flock'd while a run writes there); nothing else may.
	if entries, _ := os.ReadDir(staging); len(entries) != 1 || entries[0].Name() != ".warren-acquire.lock" {
		t.Errorf("staged copies left after a good run: %v", entries)
	}

	verify := append([]string{"acquire", "verify", out, "--key", acqShared.pubFile}, s3Flags...)
	vout, verr, code := warrenAcquire(t, verify...)
	if code != 0 || !strings.Contains(vout, "2 target(s) verify with key ") {
		t.Fatalf("verify: exit %d\n%s%s", code, vout, verr)
	}
	// Resume: both kept.
	stdout, stderr, code = warrenAcquire(t, append(args, a.Name, b.Name)...)
	if code != 0 || !strings.Contains(stdout, "0 acquired, 2 kept from an earlier run, 0 failed") {
		t.Fatalf("rerun: exit %d\n%s%s", code, stdout, stderr)
	}

	// A byte flipped in the bucket by someone who may write there (the store takes it: it comes with its own
	// checksum) is found by verify.
	aDir := streamNS + "/" + a.Name + "/main"
	key := "cases/ir-7/" + aDir + "/evidence.tar"
	got, err := c.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(got.Body)
	got.Body.Close()
	i := bytes.Index(raw, []byte("one\n"))
	if i < 0 {
		t.Fatal("the planted file is not in the archive")
	}
	raw[i] ^= 1
	if _, err := c.PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(raw)}); err != nil {
		t.Fatal(err)
	}
	vout, verr, code = warrenAcquire(t, verify...)
	for _, want := range []string{
		"FAIL  " + aDir + "/evidence.tar: sha256 ",
		"FAIL  " + aDir + "/evidence.tar:container/fs/tmp/one: sha256 ",
		"warren acquire: 2 failure(s); 1 of 2 target(s) verify",
	} {
		if !strings.Contains(vout+verr, want) {
			t.Errorf("verify output lacks %q:\n%s", want, vout)
		}
	}
	if code != 1 {
		t.Errorf("verify of a changed bucket: exit %d", code)
	}
	// Usage: object-storage flags with a local directory, a bad bucket name.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"acquire", "verify", t.TempDir(), "--key", acqShared.pubFile, "--s3-path-style"},
			"warren acquire: --s3-endpoint, --s3-path-style, --s3-region and --staging-dir go with --out s3://BUCKET/PREFIX; run `warren acquire --help` for the flags\n"},
		{[]string{"acquire", "verify", "s3://EV/x", "--key", acqShared.pubFile},
			"warren acquire: s3://EV/x: bucket name \"EV\": want 3 to 63 characters; run `warren acquire --help` for the flags\n"},
	} {
		_, stderr, code := warrenAcquire(t, tc.args...)
		if code != 2 || stderr != tc.want {
			t.Errorf("%v: exit %d %q\nwant %q", tc.args, code, stderr, tc.want)
		}
	}
}

// TestAcquireToS3StoreGoneMidRun: the store goes away once the collection has started (here: a proxy in front of
// it stops forwarding). The target fails with the error saying where its local copy is; nothing of it is in the
// bucket. The same command run again against the store uploads the staged target, without acquiring it again, and
// keeps it; verify passes.
func TestAcquireToS3StoreGoneMidRun(t *testing.T) {
	e, srv, bucket := newS3Env(t)
	pod := imagePod(t, "s3-gone", "busybox", "echo gone > /tmp/gone; exec sleep 3600", nil)
	dir := streamNS + "/" + pod.Name + "/main"
	staging := filepath.Join(t.TempDir(), "staging")
	proxy := s3test.StartCutProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"), 0)
	cfg := s3store.DefaultConfig()
	cfg.Bucket, cfg.Prefix, cfg.StagingDir, cfg.AWS, cfg.Endpoint, cfg.PathStyle = bucket, "cases/ir-8", staging, srv.AWSConfig(), proxy.URL(), true
	cfg.AWS.RetryMaxAttempts = 1
	store, err := s3store.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	acq := e.newAcquisition(t, pod.Name)
	acq.cfg.Store = store
	acq.cfg.Observer = cutOnStart{proxy}
	_, err = acquire.Run(context.Background(), acq.cfg)
	// The index cannot be written either: Run says so, naming where its local copy is.
	if err == nil || !strings.Contains(err.Error(), "cannot write s3://"+bucket+"/cases/ir-8/acquisition.json: cannot upload ") ||
		!strings.Contains(err.Error(), "the local copy is kept in "+filepath.Join(staging, "acquisition.json")) {
		t.Fatalf("acquire with the store gone: %v", err)
	}
	if !regexp.MustCompile(`target failed.*cannot upload s3://` + bucket + `/cases/ir-8/` + dir + `/statement\.dsse\.json: .*the local copy is kept in ` +
		regexp.QuoteMeta(filepath.Join(staging, dir, "statement.dsse.json"))).MatchString(acq.log.String()) {
		t.Errorf("the target's failure does not say where its copy is:\n%s", acq.log.String())
	}
	for _, n := range []string{evidence.StatementName, evidence.ArchiveName + evidence.PartialSuffix} {
		if _, err := os.Stat(filepath.Join(staging, dir, n)); err != nil {
			t.Errorf("staged %s: %v", n, err)
		}
	}
	// The bucket holds the index written before the targets started (the target pending), nothing of the target.
	objs, err := srv.Client().ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	if err != nil || len(objs.Contents) != 1 || aws.ToString(objs.Contents[0].Key) != "cases/ir-8/acquisition.json" {
		t.Fatalf("the bucket holds %d objects (%v), want only the index", len(objs.Contents), err)
	}

	out := "s3://" + bucket + "/cases/ir-8"
	args := append(e.acquireArgs(presetToken(t), out), "--s3-endpoint", srv.Endpoint, "--s3-path-style", "--staging-dir", staging, pod.Name)
	stdout, stderr, code := warrenAcquire(t, args...)
	if code != 0 {
		t.Fatalf("rerun: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"uploaded " + out + "/" + dir + ", staged by an earlier run (" + filepath.Join(staging, dir) + ")\n",
		"0 acquired, 1 kept from an earlier run, 0 failed",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("rerun stdout lacks %q:\n%s", want, stdout)
		}
	}
	vout, verr, code := warrenAcquire(t, "acquire", "verify", out, "--key", acqShared.pubFile, "--s3-endpoint", srv.Endpoint, "--s3-path-style")
	if code != 0 || !strings.Contains(vout, "1 target(s) verify") {
		t.Fatalf("verify: exit %d\n%s%s", code, vout, verr)
	}
	if _, err := os.Stat(filepath.Join(staging, streamNS)); !os.IsNotExist(err) {
		t.Errorf("staged copies left after the upload (%v)", err)
	}
}

// cutOnStart cuts the proxy in front of the store when a target's collection starts.
type cutOnStart struct{ p *s3test.CutProxy }

func (c cutOnStart) Planned([]acquire.TargetInfo)                      {}
func (c cutOnStart) Started(acquire.TargetInfo, *acquire.Progress)     { c.p.Cut() }
func (c cutOnStart) Finished(acquire.TargetInfo, evidence.IndexTarget) {}
func (c cutOnStart) Warn(string)                                       {}
