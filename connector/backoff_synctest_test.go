package connector

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"k8s.io/client-go/rest"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/testenv/testlog"
)

// TestRunBacksOffUnderSynctest: Run's reconnections, timed by the bubble's clock rather than real sleeps. Every
// attempt fails before any network (the token cannot be read), so the times between attempts are Run's waits
// alone: exponential from Backoff.Initial, capped at Backoff.Max (the jitter pinned at one half), each logged with
// its retry_in; and a stop during a wait returns at once.
func TestRunBacksOffUnderSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var attempts []time.Duration
		start := time.Now()
		logs := &testlog.Buffer{}
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		gatewayKeys, err := auth.NewStaticKeys(pub)
		if err != nil {
			t.Fatal(err)
		}
		c, err := New(Config{
			GatewayURL: "https://gateway.invalid",
			Cluster:    "prod",
			Kube:       &rest.Config{Host: "https://api.invalid"},
			Token: func() (string, error) {
				mu.Lock()
				defer mu.Unlock()
				attempts = append(attempts, time.Since(start))
				return "", errors.New("token file unreadable")
			},
			GatewayKeys: gatewayKeys,
			Backoff:     Backoff{Initial: time.Second, Max: 8 * time.Second, Rand: func() float64 { return 0.5 }},
			Logger:      slog.New(slog.NewTextHandler(logs, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()

		// Waits of 0.5 s, 1 s, 2 s, then 4 s each: half of 1, 2, 4, 8, 8... seconds.
		want := []time.Duration{0, 500 * time.Millisecond, 1500 * time.Millisecond, 3500 * time.Millisecond,
			7500 * time.Millisecond, 11500 * time.Millisecond, 15500 * time.Millisecond}
		time.Sleep(want[len(want)-1] + time.Second) // the bubble's clock: it moves as soon as everything waits
		synctest.Wait()
		mu.Lock()
		got := append([]time.Duration(nil), attempts...)
		mu.Unlock()
		if len(got) != len(want) {
			t.Fatalf("attempts at %v, want %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("attempts at %v, want %v", got, want)
			}
		}
		for _, wait := range []string{"retry_in=500ms", "retry_in=1s", "retry_in=2s", "retry_in=4s"} {
			if !strings.Contains(logs.String(), `msg="cannot reach the gateway" err="failed to read the connector token: token file unreadable" `+wait) {
				t.Fatalf("no log line with %s:\n%s", wait, logs.String())
			}
		}

		// Stopped in the middle of a 4 s wait, Run returns at once.
		stopped := time.Now()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if d := time.Since(stopped); d != 0 {
			t.Fatalf("Run returned %v after its context ended, want at once", d)
		}
	})
}
