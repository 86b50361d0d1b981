package acquire

import (
	"context"
	"errors"
	"fmt"
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
	"k8s.io/client-go/util/flowcontrol"
	streamhttp "k8s.io/streaming/pkg/httpstream"

	"github.com/warren-dev/warren/collector"
	"github.com/warren-dev/warren/evidence"
)

// execer runs commands in one target container over pods/exec through the gateway: one exec request per command,
// each with its own Audit-ID, each recorded with the digests of what it sent and received.
type execer struct {
	rest      *rest.Config
	cs        kubernetes.Interface
	limiter   flowcontrol.RateLimiter // shared by the run's requests
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

// exec is a collector.Exec. The collector records each exec's stdin and stdout digests itself (collector.ExecRecord);
// the execer adds which request carried it.
func (e *execer) exec(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer) error {
	rec := evidence.Exec{Argv: shortArgv(argv), Started: e.now().UTC()}
	var inGate *gate
	if stdin != nil {
		inGate = newGate(stdin, nil)
		stdin = inGate
	}
	outGate, errGate := newGate(nil, stdout), newGate(nil, stderr)
	c, err := e.streamRetrying(ctx, e.execURL(argv, stdin != nil), stdin, outGate, errGate)
	// Nothing touches the caller's streams once Exec has returned (see gate).
	outGate.close()
	errGate.close()
	if inGate != nil {
		inGate.close()
	}
	rec.AuditID, rec.GatewayRequestID = c.auditID, c.gatewayID
	rec.Ended = e.now().UTC()
	if err != nil {
		rec.Error = err.Error()
	}
	e.mu.Lock()
	e.execs = append(e.execs, rec)
	e.mu.Unlock()
	return err
}

// attach is a collector.Attach to container of pod namespace/name over pods/attach (an ephemeral collector
// container, the node mode's pod), recorded as the execs are. Its stdin is the collector's session (it holds nothing
// of the caller's and ends by itself once the session has), so only stdout and stderr are gated.
func (e *execer) attach(namespace, pod, container string) collector.Attach {
	return func(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) error {
		rec := evidence.Exec{Argv: []string{"attach", namespace + "/" + pod + "/" + container}, Started: e.now().UTC()}
		outGate, errGate := newGate(nil, stdout), newGate(nil, stderr)
		u := e.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("attach").
			VersionedParams(&corev1.PodAttachOptions{Container: container, Stdin: true, Stdout: true, Stderr: true},
				scheme.ParameterCodec).URL()
		c, err := e.streamRetrying(ctx, u, stdin, outGate, errGate)
		outGate.close()
		errGate.close()
		rec.AuditID, rec.GatewayRequestID = c.auditID, c.gatewayID
		rec.Ended = e.now().UTC()
		if err != nil {
			rec.Error = err.Error()
		}
		e.mu.Lock()
		e.execs = append(e.execs, rec)
		e.mu.Unlock()
		return err
	}
}

func (e *execer) execURL(argv []string, stdin bool) *url.URL {
	return e.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(e.namespace).Name(e.pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: e.container, Command: argv, Stdin: stdin, Stdout: true, Stderr: true},
			scheme.ParameterCodec).URL()
}

// streamRetrying runs one exec or attach, and again while the gateway answers the upgrade with 429 (a rate or stream
// limit) or 503 (no connector right now), waiting as long as it says (Retry-After), for at most retryFor. Nothing
// has been sent or received when an upgrade is refused, so trying again is safe.
func (e *execer) streamRetrying(ctx context.Context, u *url.URL, stdin io.Reader, stdout, stderr io.Writer) (call, error) {
	deadline := time.Now().Add(e.retryFor)
	backoff := time.Second
	for {
		if err := e.limiter.Wait(ctx); err != nil {
			return call{}, err
		}
		var c call
		err := e.streamOnce(withCall(withLog(ctx, e.log), &c), u, stdin, stdout, stderr)
		wait, retry := retryAfter(err, c, backoff)
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

func (e *execer) streamOnce(ctx context.Context, u *url.URL, stdin io.Reader, stdout, stderr io.Writer) error {
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
		return (streamhttp.IsUpgradeFailure(err) || streamhttp.IsHTTPSProxyError(err)) && statusOf(err) == nil
	})
}

// statusOf is the Kubernetes Status an exec error carries, if any. client-go's WebSocket executor wraps it in an
// UpgradeFailureError, which does not unwrap; its SPDY executor keeps only the message (the recorder saw the status
// and Retry-After of that one: see retryAfter).
func statusOf(err error) *apierrors.StatusError {
	var ufe *streamhttp.UpgradeFailureError
	if errors.As(err, &ufe) {
		err = ufe.Cause
	}
	var se *apierrors.StatusError
	if errors.As(err, &se) {
		return se
	}
	return nil
}

// retryAfter says whether an exec was refused at its upgrade in a way worth trying again (429: a rate or stream
// limit; 503: no connector right now), and after how long: the Status's retryAfterSeconds or the response's
// Retry-After (the gateway writes both), else backoff.
func retryAfter(err error, c call, backoff time.Duration) (time.Duration, bool) {
	if err == nil {
		return 0, false
	}
	code, wait := c.status, c.retryAfter
	if se := statusOf(err); se != nil {
		code = int(se.ErrStatus.Code)
		if d := se.ErrStatus.Details; d != nil && d.RetryAfterSeconds > 0 {
			wait = time.Duration(d.RetryAfterSeconds) * time.Second
		}
	}
	if code != http.StatusTooManyRequests && code != http.StatusServiceUnavailable {
		return 0, false
	}
	if wait <= 0 {
		wait = backoff
	}
	return wait, true
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

// describeExecError turns what a first exec failed with into what to do.
func describeExecError(err error, t *target) string {
	switch {
	case errors.Is(err, collector.ErrNoShell):
		return fmt.Sprintf("container %s has no /bin/sh (a distroless image?): exec mode cannot collect it; use the ephemeral or node mode "+
			"(--allow-modes exec,ephemeral, or --mode ephemeral), or acquire its node's disk (warren acquire volume)", t.container)
	case statusOf(err) != nil && statusOf(err).ErrStatus.Code == http.StatusForbidden:
		return "exec refused: " + statusOf(err).ErrStatus.Message
	case strings.Contains(err.Error(), "too many"):
		return err.Error() + ": the gateway kept refusing the exec with 429 for --retry-for; lower --parallel, or ask the gateway's operator for higher limits (--token-rate, --token-streams)"
	case strings.Contains(err.Error(), "container not found") || strings.Contains(err.Error(), "is not running"):
		return fmt.Sprintf("container %s is not running: %v", t.container, err)
	}
	return err.Error()
}
