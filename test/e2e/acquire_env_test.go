package e2e

// The acquisition suite's environment: the collector binaries (built once for the package), the examiner's key,
// pods in the kubelet stand-in's images (busybox, busybox-notools, debian, distroless), and acquisitions run
// in-process through the streaming suite's gateway and connector.

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/warren-dev/warren/acquire"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/collector/collectortest"
	"github.com/warren-dev/warren/evidence"
)

// acqShared is what the acquisition tests share, made once: the collector binaries and the examiner's key.
var acqShared struct {
	once         sync.Once
	err          error
	dir          string
	collectorDir string
	keyFile      string // signing.key
	pubFile      string // signing.pub
	signer       *evidence.Signer
	keys         *evidence.Keys
}

// needAcquire builds the collector binaries and the examiner's key once for the package.
func needAcquire(t testing.TB) {
	t.Helper()
	acqShared.once.Do(func() {
		a := &acqShared
		if a.dir, a.err = os.MkdirTemp("", "warren-acq-"); a.err != nil {
			return
		}
		a.collectorDir = filepath.Join(a.dir, "collectors")
		if a.err = os.MkdirAll(a.collectorDir, 0o755); a.err != nil {
			return
		}
		if a.err = collectortest.Build(a.collectorDir); a.err != nil {
			return
		}
		if _, a.err = auth.GenerateKeyPair(filepath.Join(a.dir, "examiner")); a.err != nil {
			return
		}
		a.keyFile = filepath.Join(a.dir, "examiner", auth.SigningKeyFile)
		a.pubFile = filepath.Join(a.dir, "examiner", auth.PublicKeyFile)
		if a.signer, a.err = evidence.LoadSigner(a.keyFile); a.err != nil {
			return
		}
		a.keys, a.err = evidence.LoadKeys(a.pubFile)
	})
	if acqShared.err != nil {
		t.Fatalf("acquisition set-up: %v", acqShared.err)
	}
}

// cleanupAcquire removes what needAcquire made; runMain calls it.
func cleanupAcquire() {
	if acqShared.dir != "" {
		os.RemoveAll(acqShared.dir)
	}
}

// Annotations of the kubelet stand-in (internal/testenv/k8s/fakekubelet).
const annotationTmpfs = "fakekubelet.warren.dev/tmpfs" // "/tmp:noexec", "/tmp:ro"

// imagePod is startPodSpec for one container "main" of image (busybox, busybox-notools, debian, distroless)
// running script with sh (or the image's command when script is ""); mutate, when not nil, changes the spec first.
func imagePod(t testing.TB, prefix, image, script string, mutate func(*corev1.PodSpec), annotations ...string) *corev1.Pod {
	t.Helper()
	c := corev1.Container{Name: "main", Image: image}
	if script != "" {
		c.Command = []string{"sh", "-c", script}
	}
	spec := corev1.PodSpec{Containers: []corev1.Container{c}}
	if mutate != nil {
		mutate(&spec)
	}
	return startPodSpec(t, prefix, spec, annotations...)
}

// labelPod sets a label on a running pod, for selectors.
func labelPod(t testing.TB, pod *corev1.Pod, key, value string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, key, value)
	if _, err := adminClient(t).CoreV1().Pods(pod.Namespace).Patch(context.Background(), pod.Name, types.MergePatchType,
		[]byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// acquisition is an in-process acquisition through e's gateway, into a fresh directory.
type acquisition struct {
	cfg   acquire.Config
	store *evidence.LocalStore
	log   *logBuffer
}

// newAcquisition prepares an acquisition of targets (pod names) with e's caller token; the test may change cfg.
func (e *streamEnv) newAcquisition(t testing.TB, pods ...string) *acquisition {
	t.Helper()
	needAcquire(t)
	store, err := evidence.NewLocalStore(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	log, lb := newLogger(t, "acquire")
	a := &acquisition{store: store, log: lb, cfg: acquire.Config{
		REST: e.cfg, Cluster: streamCluster, Store: store, Signer: acqShared.signer, Namespace: streamNS, Pods: pods,
		CollectorDir: acqShared.collectorDir, Case: "ir-42", Examiner: "e2e", Logger: log, Version: "e2e",
		TimeBudget: 2 * time.Minute,
	}}
	return a
}

// presetConfig is a client config for the stream cluster with a token holding exactly the rules of
// `warren token issue --preset acquire --namespace default`.
func (e *streamEnv) presetConfig(t testing.TB) *rest.Config {
	t.Helper()
	cfg := callerConfig(e.gs, streamCluster, presetToken(t))
	cfg.Timeout = 0
	return cfg
}

func (a *acquisition) run(t testing.TB) *acquire.Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sum, err := acquire.Run(ctx, a.cfg)
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	return sum
}

// statement reads and verifies the statement of target dir.
func (a *acquisition) statement(t testing.TB, dir string) *evidence.Statement {
	t.Helper()
	rep := evidence.VerifyTarget(context.Background(), a.store, dir, acqShared.keys)
	if !rep.OK() {
		t.Fatalf("%s does not verify: %v", dir, rep.Failures)
	}
	return rep.Statement
}

// entries reads the regular files of dir's evidence.tar.
func (a *acquisition) entries(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join(a.store.Root(), dir, evidence.ArchiveName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			out[hdr.Name] = b
		}
	}
}

func subjectOf(st *evidence.Statement, name string) (string, bool) {
	for _, s := range st.Subject {
		if s.Name == name {
			return s.Digest["sha256"], true
		}
	}
	return "", false
}

func skipsOf(st *evidence.Statement, reason string) []evidence.Skip {
	var out []evidence.Skip
	for _, s := range st.Predicate.Skipped {
		if s.Reason == reason {
			out = append(out, s)
		}
	}
	return out
}

func sum256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func prettyJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}
