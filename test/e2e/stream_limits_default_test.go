package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warren-dev/warren/gateway/limit"
)

// TestStreamDefaultLimitsFitAnAcquisition: under the default limits, one token runs 50 `kubectl exec` at once (half
// WebSocket, half SPDY), each kubectl with a cold discovery cache, so that each sends its discovery GETs and the GET
// of the pod before its exec, as an acquisition of 50 pods does; every one succeeds, and another token's requests
// are served all along. With the old defaults (20/s, burst 40, 32 streams per token) 19 of the 50 got 429.
func TestStreamDefaultLimitsFitAnAcquisition(t *testing.T) {
	const n = 50
	e := newStreamEnvWith(t, gatewayOpts{limits: limit.New(limit.DefaultConfig())})
	tok, id := tokenFor(t, time.Hour, streamRules...)
	e.useToken(t, tok)
	pod := sleeper(t).Name
	other := callerConfig(e.gs, streamCluster, callerToken(t, []string{streamCluster}, streamRules...))
	otherCS := clientset(t, other)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var otherMu sync.Mutex
	var otherErrs []string
	otherServed := 0
	otherDone := make(chan struct{})
	go func() {
		defer close(otherDone)
		for ctx.Err() == nil {
			_, err := otherCS.CoreV1().Pods(streamNS).Get(ctx, pod, metav1.GetOptions{})
			otherMu.Lock()
			if err != nil && ctx.Err() == nil {
				otherErrs = append(otherErrs, err.Error())
			} else if err == nil {
				otherServed++
			}
			otherMu.Unlock()
			time.Sleep(50 * time.Millisecond) // another caller's pace, not a load test
		}
	}()

	type result struct {
		stdout, stderr string
		err            error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	begin := time.Now()
	for i := range n {
		mode := remoteCommandModes[i%2]
		cache := filepath.Join(t.TempDir(), "kubecache") // cold: discovery GETs first
		wg.Go(func() {
			env := append([]string{"KUBECACHEDIR=" + cache}, mode.env...)
			out, errOut, err := kubectlEnv(env, e.kc, "exec", pod, "-c", "main", "--", "sh", "-c", fmt.Sprintf("sleep 2; echo target %d", i))
			results[i] = result{out, errOut, err}
		})
	}
	wg.Wait()
	took := time.Since(begin)
	cancel()
	<-otherDone
	var failed []string
	for i, r := range results {
		if r.err != nil || r.stdout != fmt.Sprintf("target %d\n", i) {
			failed = append(failed, fmt.Sprintf("kubectl %d: %v; stdout %q stderr %q", i, r.err, r.stdout, r.stderr))
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d concurrent kubectl exec failed under the default limits:\n%s", len(failed), n, strings.Join(failed, "\n"))
	}
	requests, refused := 0, 0
	for _, r := range e.gwAudit.records() {
		if r.TokenID == id {
			requests++
			if r.Status == 429 {
				refused++
			}
		}
	}
	otherMu.Lock()
	defer otherMu.Unlock()
	t.Logf("%d concurrent kubectl exec with one token: all done in %v; that token sent %d requests (%d refused with 429); the other token was served %d times meanwhile",
		n, took.Round(time.Millisecond), requests, refused, otherServed)
	if len(otherErrs) > 0 || otherServed == 0 {
		t.Fatalf("another token's requests during the burst: %d served, errors %q", otherServed, otherErrs)
	}
}
