package limit

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The package starts no goroutines; make sure it stays that way.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestDefaults(t *testing.T) {
	got := New(Config{TokenRate: -1, ClusterBurst: -5}).cfg
	want := DefaultConfig()
	if got.TokenRate != want.TokenRate || got.TokenBurst != want.TokenBurst || got.ClusterRate != want.ClusterRate ||
		got.ClusterBurst != want.ClusterBurst || got.TokenStreams != want.TokenStreams || got.MaxKeys != want.MaxKeys || got.Now == nil {
		t.Errorf("defaults: got %+v, want %+v", got, want)
	}
	if want.TokenRate != 20 || want.TokenBurst != 40 || want.ClusterRate != 200 || want.ClusterBurst != 400 || want.TokenStreams != 32 || want.MaxKeys != 10000 {
		t.Errorf("DefaultConfig = %+v, not the documented defaults", want)
	}
	// The default token burst is available at once, the next request is refused.
	l := New(Config{})
	for i := range 40 {
		if ok, _, _ := l.Allow("jti", "c"); !ok {
			t.Fatalf("request %d refused within the default burst", i+1)
		}
	}
	if ok, retry, which := l.Allow("jti", "c"); ok || which != LimitToken || retry != time.Second {
		t.Errorf("41st request: %v %v %q; want refused by token, retry 1s", ok, retry, which)
	}
}

// step is one Allow call of a scenario, after advancing the clock.
type step struct {
	advance time.Duration
	token   string
	cluster string
	ok      bool
	which   string
	retry   time.Duration
}

func TestAllow(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{
			name: "token burst then refill",
			cfg:  Config{TokenRate: 1, TokenBurst: 2, ClusterRate: 100, ClusterBurst: 100},
			steps: []step{
				{token: "a", cluster: "c", ok: true},
				{token: "a", cluster: "c", ok: true},
				{token: "a", cluster: "c", which: LimitToken, retry: time.Second},
				{advance: 500 * time.Millisecond, token: "a", cluster: "c", which: LimitToken, retry: time.Second}, // 0.5 s to go, rounded up
				{advance: 500 * time.Millisecond, token: "a", cluster: "c", ok: true},
				{token: "a", cluster: "c", which: LimitToken, retry: time.Second},
				{advance: 10 * time.Second, token: "a", cluster: "c", ok: true}, // refilled to the burst, not beyond
				{token: "a", cluster: "c", ok: true},
				{token: "a", cluster: "c", which: LimitToken, retry: time.Second},
			},
		},
		{
			name: "tokens have separate buckets",
			cfg:  Config{TokenRate: 1, TokenBurst: 1, ClusterRate: 100, ClusterBurst: 100},
			steps: []step{
				{token: "a", cluster: "c", ok: true},
				{token: "a", cluster: "c", which: LimitToken, retry: time.Second},
				{token: "b", cluster: "c", ok: true},
				{token: "b", cluster: "d", which: LimitToken, retry: time.Second},
			},
		},
		{
			name: "retry-after rounds up to whole seconds",
			cfg:  Config{TokenRate: 0.4, TokenBurst: 1, ClusterRate: 100, ClusterBurst: 100},
			steps: []step{
				{token: "a", cluster: "c", ok: true},
				{token: "a", cluster: "c", which: LimitToken, retry: 3 * time.Second}, // 2.5 s
				{advance: 2 * time.Second, token: "a", cluster: "c", which: LimitToken, retry: time.Second},
				{advance: 500 * time.Millisecond, token: "a", cluster: "c", ok: true},
			},
		},
		{
			name: "slow rate: retry-after is the whole wait",
			cfg:  Config{TokenRate: 0.25, TokenBurst: 1, ClusterRate: 100, ClusterBurst: 100},
			steps: []step{
				{token: "a", cluster: "c", ok: true},
				{token: "a", cluster: "c", which: LimitToken, retry: 4 * time.Second},
				{advance: time.Second, token: "a", cluster: "c", which: LimitToken, retry: 3 * time.Second},
			},
		},
		{
			name: "refusals are free: they do not push the bucket into debt",
			cfg:  Config{TokenRate: 1, TokenBurst: 1, ClusterRate: 100, ClusterBurst: 100},
			steps: []step{
				{token: "a", cluster: "c", ok: true},
				{token: "a", cluster: "c", which: LimitToken, retry: time.Second},
				{token: "a", cluster: "c", which: LimitToken, retry: time.Second},
				{token: "a", cluster: "c", which: LimitToken, retry: time.Second},
				{advance: time.Second, token: "a", cluster: "c", ok: true},
			},
		},
		{
			name: "cluster bucket shared by tokens",
			cfg:  Config{TokenRate: 100, TokenBurst: 100, ClusterRate: 2, ClusterBurst: 3},
			steps: []step{
				{token: "a", cluster: "c", ok: true},
				{token: "b", cluster: "c", ok: true},
				{token: "c", cluster: "c", ok: true},
				{token: "d", cluster: "c", which: LimitCluster, retry: time.Second},
				{token: "d", cluster: "other", ok: true},
				{advance: 500 * time.Millisecond, token: "d", cluster: "c", ok: true},
			},
		},
		{
			name: "token refusal does not spend the cluster bucket",
			cfg:  Config{TokenRate: 1, TokenBurst: 1, ClusterRate: 1, ClusterBurst: 2},
			steps: []step{
				{token: "a", cluster: "c", ok: true},
				{token: "a", cluster: "c", which: LimitToken, retry: time.Second},
				{token: "a", cluster: "c", which: LimitToken, retry: time.Second},
				{token: "b", cluster: "c", ok: true}, // the cluster's second token is still there
				{token: "z", cluster: "c", which: LimitCluster, retry: time.Second},
			},
		},
		{
			name: "cluster refusal gives the token its token back",
			cfg:  Config{TokenRate: 1, TokenBurst: 1, ClusterRate: 1, ClusterBurst: 1},
			steps: []step{
				{token: "a", cluster: "c", ok: true},
				{token: "b", cluster: "c", which: LimitCluster, retry: time.Second},
				{token: "b", cluster: "c", which: LimitCluster, retry: time.Second},
				{token: "b", cluster: "d", ok: true}, // b's token was refunded twice, not lost
				{token: "b", cluster: "e", which: LimitToken, retry: time.Second},
			},
		},
		{
			name: "infinite rate disables a bucket",
			cfg:  Config{TokenRate: 1, TokenBurst: 1, ClusterRate: math.Inf(1)},
			steps: []step{
				{token: "a", cluster: "c", ok: true},
				{token: "b", cluster: "c", ok: true},
				{token: "c", cluster: "c", ok: true},
				{token: "a", cluster: "c", which: LimitToken, retry: time.Second},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			tc.cfg.Now = clk.Now
			l := New(tc.cfg)
			for i, s := range tc.steps {
				clk.Advance(s.advance)
				ok, retry, which := l.Allow(s.token, s.cluster)
				if ok != s.ok || which != s.which || retry != s.retry {
					t.Errorf("step %d: Allow(%q, %q) = %v, %v, %q; want %v, %v, %q", i, s.token, s.cluster, ok, retry, which, s.ok, s.retry, s.which)
				}
			}
		})
	}
}

func TestRoundUpSeconds(t *testing.T) {
	for _, tc := range []struct{ in, want time.Duration }{
		{time.Nanosecond, time.Second},
		{time.Second, time.Second},
		{time.Second + time.Nanosecond, 2 * time.Second},
		{90 * time.Second, 90 * time.Second},
		{time.Duration(1<<63 - 1), 24 * time.Hour},
	} {
		if got := roundUpSeconds(tc.in); got != tc.want {
			t.Errorf("roundUpSeconds(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	// A very slow rate: the wait is capped rather than overflowing.
	l := New(Config{TokenRate: 1e-12, TokenBurst: 1})
	l.Allow("a", "c")
	if ok, retry, _ := l.Allow("a", "c"); ok || retry != 24*time.Hour {
		t.Errorf("slow rate: %v, %v; want refused, 24h", ok, retry)
	}
}

func TestStreams(t *testing.T) {
	l := New(Config{TokenStreams: 2})
	r1, ok1 := l.AcquireStream("a")
	r2, ok2 := l.AcquireStream("a")
	r3, ok3 := l.AcquireStream("a")
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("acquire 3 of 2: %v %v %v", ok1, ok2, ok3)
	}
	r3() // the refused slot's release is a no-op
	if _, ok := l.AcquireStream("a"); ok {
		t.Fatal("releasing a refused slot freed one")
	}
	if rb, ok := l.AcquireStream("b"); !ok {
		t.Fatal("another token's slots are separate")
	} else {
		rb()
	}
	r1()
	r1() // twice: frees only one slot
	if _, ok := l.AcquireStream("a"); !ok {
		t.Fatal("slot not freed by release")
	}
	if _, ok := l.AcquireStream("a"); ok {
		t.Fatal("double release freed two slots")
	}
	if got := l.streams["a"]; got != 2 {
		t.Errorf("open streams of a = %d, want 2", got)
	}
	r2()
	if got := l.streams["a"]; got != 1 {
		t.Errorf("open streams of a after a release = %d, want 1", got)
	}
}

func TestStreamCountsAreForgotten(t *testing.T) {
	l := New(Config{})
	var releases []func()
	for i := range 1000 {
		r, ok := l.AcquireStream(fmt.Sprint("tok-", i))
		if !ok {
			t.Fatal("refused")
		}
		releases = append(releases, r)
	}
	for _, r := range releases {
		r()
	}
	if n := len(l.streams); n != 0 {
		t.Errorf("%d tokens still tracked after every stream was released", n)
	}
}

func TestEviction(t *testing.T) {
	clk := newClock()
	l := New(Config{TokenRate: 1, TokenBurst: 1, ClusterRate: 1000, ClusterBurst: 1000, MaxKeys: 3, Now: clk.Now})
	for i := range 100 {
		l.Allow(fmt.Sprint("tok-", i), fmt.Sprint("cluster-", i))
		if l.tokens.len() > 3 || l.clusters.len() > 3 || len(l.tokens.byKey) != l.tokens.len() {
			t.Fatalf("after %d keys: %d tokens, %d clusters tracked; want at most 3", i+1, l.tokens.len(), l.clusters.len())
		}
	}
	// Least recently used goes first: keep using "hot" while others come and go; its drained bucket stays.
	if ok, _, _ := l.Allow("hot", "c"); !ok {
		t.Fatal("first request of hot refused")
	}
	for i := range 10 {
		if ok, _, _ := l.Allow("hot", "c"); ok {
			t.Fatalf("round %d: hot's drained bucket was evicted and refilled", i)
		}
		l.Allow(fmt.Sprint("cold-", i), "c")
	}
	// Once three others were used after it, hot is evicted and starts with a full bucket.
	for i := range 3 {
		l.Allow(fmt.Sprint("other-", i), "c")
	}
	if ok, _, _ := l.Allow("hot", "c"); !ok {
		t.Error("hot not evicted after 3 other tokens")
	}
}

func TestConcurrent(t *testing.T) {
	// A frozen clock: exactly the bursts are granted, however the goroutines interleave.
	clk := newClock()
	l := New(Config{TokenRate: 1, TokenBurst: 40, ClusterRate: 1, ClusterBurst: 100, TokenStreams: 5, MaxKeys: 4, Now: clk.Now})
	var granted, tokenRefused, clusterRefused atomic.Int64
	var open, maxOpen atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				ok, retry, which := l.Allow(fmt.Sprint("tok-", g%4), "c")
				switch {
				case ok:
					granted.Add(1)
				case which == LimitToken && retry >= time.Second:
					tokenRefused.Add(1)
				case which == LimitCluster && retry >= time.Second:
					clusterRefused.Add(1)
				default:
					t.Errorf("refused with %v %q", retry, which)
				}
				if release, ok := l.AcquireStream("shared"); ok {
					n := open.Add(1)
					for m := maxOpen.Load(); n > m && !maxOpen.CompareAndSwap(m, n); m = maxOpen.Load() {
					}
					if i%3 == 0 {
						release() // concurrently with other releases, twice
					}
					open.Add(-1)
					release()
				}
			}
		})
	}
	wg.Wait()
	// 4 tokens x 40 = 160 wanted, the cluster allows 100: the first 100 requests pass, whichever token they carry.
	if granted.Load() != 100 {
		t.Errorf("granted %d, want the cluster burst 100 (token refused %d, cluster refused %d)", granted.Load(), tokenRefused.Load(), clusterRefused.Load())
	}
	if maxOpen.Load() > 5 {
		t.Errorf("%d streams open at once, limit 5", maxOpen.Load())
	}
	if len(l.streams) != 0 {
		t.Errorf("streams left: %v", l.streams)
	}
	if l.tokens.len() > 4 {
		t.Errorf("%d tokens tracked, MaxKeys 4", l.tokens.len())
	}
}

func BenchmarkAllow(b *testing.B) {
	l := New(Config{TokenRate: 1e9, TokenBurst: 1 << 30, ClusterRate: 1e9, ClusterBurst: 1 << 30})
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Allow(fmt.Sprint("tok-", i%100), "c")
			i++
		}
	})
}
