// Package s3test starts a real S3-compatible object store on loopback (SeaweedFS's `weed server -s3`: master,
// volume server, filer and S3 gateway in one process), so that object-storage code is tested against a store that
// checks signatures and x-amz-checksum-* values itself, never against a fake.
//
// The binary comes from scripts/s3-bin.sh (see [EnvWeedBin]). A test that needs it and does not find it is skipped
// with a message saying how to build it, except under CI (CI set), where it fails: .ci/run builds it.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/warren-dev/warren/internal/testenv/testproc"
)

// WeedVersion is the SeaweedFS module version that internal/testenv/s3/go.mod pins and the cache directory is named after.
const WeedVersion = "v0.0.0-20261109003541-7506e5f91cd6"

// EnvWeedBin names the environment variable that points at a directory holding weed. Without it weed is looked up
// in the cache directory that scripts/s3-bin.sh fills.
const EnvWeedBin = "WARREN_WEED_BIN"

// Region is the region the server is addressed in (SeaweedFS accepts any; SigV4 needs one).
const Region = "us-east-1"

const (
	// readyTimeout bounds the wait for the S3 gateway to take a signed write.
	readyTimeout = 90 * time.Second
	pollInterval = 100 * time.Millisecond
	// portAttempts is how often Start picks new ports when another process took one between our pick and the bind.
	portAttempts = 3
)

// ErrNoBinary is matched by Start's error when weed is not built.
var ErrNoBinary = errors.New("weed not found")

// Options configures Start.
type Options struct {
	// Dir is the work directory: data, metadata and the identities file go there. Required. Stop leaves it.
	Dir string
	// Logger receives weed's output, each line prefixed with "weed: ". Nil discards it; the last lines are kept
	// either way for error messages.
	Logger io.Writer
}

// Server is a running store. Its fields are set by Start and must not be changed. All methods may be called
// concurrently.
type Server struct {
	Endpoint      string // http://127.0.0.1:PORT, the S3 API (path-style addressing)
	AccessKey     string // of the one identity, allowed everything
	SecretKey     string
	StartDuration time.Duration // how long Start took, until a signed write succeeded
	// HTTPClient is the client of AWSConfig and Client; Stop closes its idle connections, so that a test's leak
	// check does not find their goroutines.
	HTTPClient *http.Client

	proc    *testproc.Process
	sockets []string // weed's Unix sockets, removed by Stop
}

// binPath returns where scripts/s3-bin.sh puts weed:
// ${WARREN_WEED_BIN:-${WARREN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/warren}/seaweedfs-VERSION/bin}/weed.
func binPath() (string, error) {
	if d := os.Getenv(EnvWeedBin); d != "" {
		return filepath.Join(d, "weed"), nil
	}
	cache, err := testproc.CacheDir()
	if err != nil {
		return "", fmt.Errorf("%w (or set %s)", err, EnvWeedBin)
	}
	return filepath.Join(cache, "seaweedfs-"+WeedVersion, "bin", "weed"), nil
}

func findBinary() (string, error) {
	p, err := binPath()
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("%w at %s: run scripts/s3-bin.sh (or make kube) to build SeaweedFS %s, or set %s to a directory holding it",
			ErrNoBinary, p, WeedVersion, EnvWeedBin)
	}
	return p, nil
}

// Start starts weed server -s3 on free loopback ports and waits until its S3 API takes a signed write. ctx bounds
// only the start. On error nothing is left running.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.Dir == "" {
		return nil, errors.New("s3test: Options.Dir is required")
	}
	weed, err := findBinary()
	if err != nil {
		return nil, fmt.Errorf("s3test: %w", err)
	}
	begin := time.Now()
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("s3test: %w", err)
	}
	s := &Server{AccessKey: "warren" + randomHex(6), SecretKey: randomHex(20),
		HTTPClient: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}}
	identities := filepath.Join(dir, "s3.json")
	if err := writeIdentities(identities, s.AccessKey, s.SecretKey); err != nil {
		return nil, fmt.Errorf("s3test: %w", err)
	}
	// Read by weed from -config_dir before $HOME/.seaweedfs and /etc/seaweedfs: a new bucket's first write waits
	// for one volume, not seven, and without the deferral meant for a rebuilt master's old volume servers.
	if err := os.WriteFile(filepath.Join(dir, "master.toml"), []byte(masterTOML), 0o600); err != nil {
		return nil, fmt.Errorf("s3test: %w", err)
	}
	log := testproc.NewLog(o.Logger)
	for attempt := 1; ; attempt++ {
		data := filepath.Join(dir, "data")
		if err := os.RemoveAll(data); err != nil { // a failed attempt's master remembers its old ports
			return nil, fmt.Errorf("s3test: %w", err)
		}
		if err := os.MkdirAll(data, 0o700); err != nil {
			return nil, fmt.Errorf("s3test: %w", err)
		}
		ports, err := testproc.FreePorts(8)
		if err != nil {
			return nil, fmt.Errorf("s3test: %w", err)
		}
		port := func(i int) string { return strconv.Itoa(ports[i]) }
		args := []string{"-config_dir=" + dir, "server",
			"-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir=" + data,
			"-master.port=" + port(0), "-master.port.grpc=" + port(1),
			"-volume.port=" + port(2), "-volume.port.grpc=" + port(3),
			"-filer", "-filer.port=" + port(4), "-filer.port.grpc=" + port(5),
			"-filer.localSocket=" + filepath.Join(dir, "filer.sock"),
			"-s3", "-s3.port=" + port(6), "-s3.port.grpc=" + port(7), "-s3.config=" + identities,
			"-s3.localSocket=" + filepath.Join(dir, "s3.sock"),
			// Off: the Iceberg and Lance catalogs (fixed ports), and the telemetry report (nothing leaves loopback).
			"-s3.port.iceberg=0", "-s3.port.lance=0",
			"-master.telemetry=false", "-master.telemetry.url=http://127.0.0.1:1/",
			"-master.electionTimeout=500ms",
			// Small volumes on a test disk; the volume server grows more as objects need them.
			"-master.volumeSizeLimitMB=1024", "-volume.max=0",
			// Stop at once: the default waits 10 s for heartbeats to tell a master that is stopping too.
			"-volume.preStopSeconds=0",
		}
		p, err := testproc.Start("weed", weed, args, dir, log)
		if err != nil {
			return nil, fmt.Errorf("s3test: %w", err)
		}
		s.proc, s.Endpoint = p, "http://127.0.0.1:"+port(6)
		s.sockets = nil
		for i, name := range []string{"master", "volume", "filer", "s3"} {
			// weed serves each gRPC port on a Unix socket too, under /tmp whatever its flags, and may leave it.
			s.sockets = append(s.sockets, fmt.Sprintf("/tmp/seaweedfs-%s-grpc-%d.sock", name, ports[2*i+1]))
		}
		err = testproc.WaitReady(ctx, p, "weed S3 API "+s.Endpoint, readyTimeout, pollInterval, s.ready)
		if err == nil {
			break
		}
		s.removeSockets()
		s.HTTPClient.CloseIdleConnections()
		if attempt < portAttempts && p.PortTaken() {
			continue
		}
		_ = p.Stop()
		return nil, fmt.Errorf("s3test: %w", err)
	}
	s.StartDuration = time.Since(begin)
	log.WriteLine("s3test: ", []byte(fmt.Sprintf("S3 API ready at %s in %s", s.Endpoint, s.StartDuration.Round(time.Millisecond))))
	return s, nil
}

const masterTOML = `[master.volume_growth]
copy_1 = 1
allocation_deferral = "0s"
`

// readyBucket is where ready writes.
const readyBucket = "warren-s3test-ready"

// ready is a signed write: the S3 API answers once its filer is up, but writes wait (for a lock ring) until the
// filer has announced itself to the master, seconds later.
func (s *Server) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c := s.Client()
	if _, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(readyBucket)}); err != nil {
		if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(readyBucket)}); err != nil {
			return err
		}
	}
	_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(readyBucket), Key: aws.String("ready"), Body: strings.NewReader("ready")})
	return err
}

func (s *Server) removeSockets() {
	for _, p := range s.sockets {
		os.Remove(p)
	}
}

// writeIdentities writes weed's -s3.config: one identity with every action, no anonymous access.
func writeIdentities(path, accessKey, secretKey string) error {
	cfg := map[string]any{"identities": []any{map[string]any{
		"name":        "warren-test",
		"credentials": []any{map[string]string{"accessKey": accessKey, "secretKey": secretKey}},
		"actions":     []string{"Admin", "Read", "List", "Tagging", "Write"},
	}}}
	data, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Stop stops weed (SIGTERM, then SIGKILL after 5 s) and waits for it. It returns an error if weed had exited on its
// own before, with its last lines. Safe to call more than once.
func (s *Server) Stop() error {
	err := s.proc.Stop()
	s.removeSockets()
	s.HTTPClient.CloseIdleConnections()
	return err
}

// Done is closed when weed has exited.
func (s *Server) Done() <-chan struct{} { return s.proc.Done() }

// Tail is weed's last lines of output.
func (s *Server) Tail() string { return s.proc.Tail() }

// AWSConfig is an SDK configuration for the server: its static credentials and Region, the endpoint, no retries
// beyond the SDK's standard ones.
func (s *Server) AWSConfig() aws.Config {
	return aws.Config{
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		BaseEndpoint: aws.String(s.Endpoint),
		HTTPClient:   s.HTTPClient,
	}
}

// Client is an S3 client of the server, path-style.
func (s *Server) Client() *s3.Client {
	return s3.NewFromConfig(s.AWSConfig(), func(o *s3.Options) { o.UsePathStyle = true })
}

// CreateBucket creates a bucket of a fresh name starting with prefix and returns the name.
func (s *Server) CreateBucket(ctx context.Context, prefix string) (string, error) {
	name := prefix + "-" + randomHex(4)
	if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		return "", fmt.Errorf("s3test: cannot create bucket %s: %w", name, err)
	}
	return name, nil
}

// SkipOrFail ends a test that cannot have a server: skipped with err's message (how to build weed) when the
// binary is missing outside CI, failed otherwise.
func SkipOrFail(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrNoBinary) && os.Getenv("CI") == "" {
		t.Skipf("%v (skipping the test against a real S3 store)", err)
	}
	t.Fatalf("cannot start an S3 store: %v", err)
}

// ForTest starts a server in t.TempDir() and stops it in t.Cleanup; see SkipOrFail when it cannot start. It logs
// weed's last lines if the test fails.
func ForTest(t testing.TB) *Server {
	t.Helper()
	s, err := Start(t.Context(), Options{Dir: t.TempDir()})
	if err != nil {
		SkipOrFail(t, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("s3test: last output of weed:\n%s", s.Tail())
		}
		if err := s.Stop(); err != nil {
			t.Errorf("s3test: %v", err)
		}
	})
	t.Logf("s3test: S3 API ready at %s in %s", s.Endpoint, s.StartDuration.Round(time.Millisecond))
	return s
}

// Shared is a server started by the first test of a package that asks for it, and stopped by Stop (from TestMain,
// before the leak check): weed takes seconds to start. The zero value is ready to use.
type Shared struct {
	once sync.Once
	srv  *Server
	err  error
	dir  string
}

// Get returns the shared server, starting it if needed; see SkipOrFail when it cannot start.
func (sh *Shared) Get(t testing.TB) *Server {
	t.Helper()
	sh.once.Do(func() {
		if sh.dir, sh.err = os.MkdirTemp("", "warren-s3test-"); sh.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*readyTimeout)
		defer cancel()
		sh.srv, sh.err = Start(ctx, Options{Dir: sh.dir})
	})
	if sh.err != nil {
		SkipOrFail(t, sh.err)
	}
	return sh.srv
}

// Stop stops the server if it was started, and removes its directory.
func (sh *Shared) Stop() error {
	var err error
	if sh.srv != nil {
		err = sh.srv.Stop()
	}
	if sh.dir != "" {
		os.RemoveAll(sh.dir)
	}
	return err
}
