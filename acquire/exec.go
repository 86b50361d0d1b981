package acquire

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	streamhttp "k8s.io/streaming/pkg/httpstream"

	"github.com/warren-dev/warren/collector"
	"github.com/warren-dev/warren/evidence"
)

// execer runs commands in one target container over pods/exec through the gateway: one exec request per command,
// each with its own Audit-ID, each recorded with the digests of what it sent and received.
type execer struct {
	rest      *rest.Config
	cs        kubernetes.Interface
	namespace string
	pod       string
	container string
	protocol  string
	retryFor  time.Duration
	log       *requestLog
	now       func() time.Time

	mu    sync.Mutex
	execs []evidence.Exec
}

// exec is a collector.Exec.
func (e *execer) exec(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer) error {
	rec := evidence.Exec{Argv: shortArgv(argv), Started: e.now().UTC()}
	in := &digester{h: sha256.New()}
	if stdin != nil {
		stdin = io.TeeReader(stdin, in)
	}
	out := &digester{h: sha256.New()}
	c, err := e.execRetrying(ctx, argv, stdin, io.MultiWriter(stdout, out), stderr)
	rec.AuditID, rec.GatewayRequestID = c.auditID, c.gatewayID
	rec.Ended = e.now().UTC()
	rec.StdoutBytes, rec.StdoutSHA256 = out.n, out.sum()
	if stdin != nil {
		rec.StdinBytes, rec.StdinSHA256 = in.n, in.sum()
	}
	if err != nil {
		rec.Error = err.Error()
	}
	e.mu.Lock()
	e.execs = append(e.execs, rec)
	e.mu.Unlock()
	return err
}

// execRetrying runs one exec, and again while the gateway answers the upgrade with 429 (a rate or stream limit)
// or 503 (no connector right now), waiting as long as it says (Retry-After), for at most retryFor. Nothing has been
// sent or received when an upgrade is refused, so trying again is safe.
func (e *execer) execRetrying(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer) (call, error) {
	deadline := time.Now().Add(e.retryFor)
	backoff := time.Second
	for {
		var c call
		err := e.execOnce(withCall(withLog(ctx, e.log), &c), argv, stdin, stdout, stderr)
		wait, retry := retryAfter(err, backoff)
		if !retry || ctx.Err() != nil || time.Now().Add(wait).After(deadline) {
			return c, err
		}
		backoff = min(backoff*2, 30*time.Second)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return c, err
		case <-t.C:
		}
	}
}

func (e *execer) execOnce(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer) error {
	u := e.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(e.namespace).Name(e.pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: e.container, Command: argv, Stdin: stdin != nil, Stdout: true, Stderr: true},
			scheme.ParameterCodec).URL()
	ex, err := newExecutor(e.rest, e.protocol, u)
	if err != nil {
		return err
	}
	return ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

// newExecutor is client-go's executor for protocol. ProtocolAuto falls back from WebSocket to SPDY only when the
// WebSocket upgrade is not understood: a refusal with a status (403, 429) is the answer, not a protocol problem.
func newExecutor(cfg *rest.Config, protocol string, u *url.URL) (remotecommand.Executor, error) {
	switch protocol {
	case ProtocolSPDY:
		return remotecommand.NewSPDYExecutor(cfg, http.MethodPost, u)
	case ProtocolWebSocket:
		return remotecommand.NewWebSocketExecutor(cfg, http.MethodGet, u.String())
	}
	ws, err := remotecommand.NewWebSocketExecutor(cfg, http.MethodGet, u.String())
	if err != nil {
		return nil, err
	}
	sp, err := remotecommand.NewSPDYExecutor(cfg, http.MethodPost, u)
	if err != nil {
		return nil, err
	}
	return remotecommand.NewFallbackExecutor(ws, sp, func(err error) bool {
		var se *apierrors.StatusError
		return (streamhttp.IsUpgradeFailure(err) || streamhttp.IsHTTPSProxyError(err)) && !errors.As(err, &se)
	})
}

// retryAfter says whether an exec error is a refused upgrade worth trying again, and after how long: the
// Status's retryAfterSeconds (the gateway writes it with Retry-After), else backoff.
func retryAfter(err error, backoff time.Duration) (time.Duration, bool) {
	var se *apierrors.StatusError
	if err == nil || !errors.As(err, &se) {
		return 0, false
	}
	switch se.ErrStatus.Code {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
	default:
		return 0, false
	}
	if d := se.ErrStatus.Details; d != nil && d.RetryAfterSeconds > 0 {
		return time.Duration(d.RetryAfterSeconds) * time.Second, true
	}
	return backoff, true
}

// records are the execs so far.
func (e *execer) records() []evidence.Exec {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]evidence.Exec(nil), e.execs...)
}

// shortArgv keeps statements small: the collector's constant scripts are long; their first line is enough to tell
// them (the collector's own ExecRecords name them exactly).
func shortArgv(argv []string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if len(a) > 200 {
			a = a[:200] + fmt.Sprintf("... (%d bytes)", len(a))
		}
		out[i] = a
	}
	return out
}

// digester counts and hashes what passes.
type digester struct {
	h hash.Hash
	n int64
}

func (d *digester) Write(p []byte) (int, error) {
	d.h.Write(p)
	d.n += int64(len(p))
	return len(p), nil
}

func (d *digester) sum() string { return hex.EncodeToString(d.h.Sum(nil)) }

// describeExecError turns what a first exec failed with into what to do.
func describeExecError(err error, t *target) string {
	var se *apierrors.StatusError
	switch {
	case errors.Is(err, collector.ErrNoShell):
		return fmt.Sprintf("container %s has no /bin/sh (a distroless image?): exec mode cannot collect it; "+
			"acquire its node's disk instead (warren acquire volume)", t.container)
	case errors.As(err, &se) && se.ErrStatus.Code == http.StatusForbidden:
		return "exec refused: " + se.ErrStatus.Message
	case errors.As(err, &se) && se.ErrStatus.Code == http.StatusTooManyRequests:
		return "the gateway kept refusing the exec with 429 (" + se.ErrStatus.Message + "): lower --parallel, or ask the gateway's operator for higher --token-streams"
	case strings.Contains(err.Error(), "container not found") || strings.Contains(err.Error(), "is not running"):
		return fmt.Sprintf("container %s is not running: %v", t.container, err)
	}
	return err.Error()
}
