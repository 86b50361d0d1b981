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
		got.ClusterBurst != want.ClusterBurst || got.TokenStreams != want.TokenStreams || got.MaxKeys != want.MaxKeys ||
		got.TokenInflight != want.TokenInflight || got.TokenTunnelShare != want.TokenTunnelShare || got.Now == nil {
		t.Errorf("defaults: got %+v, want %+v", got, want)
	}
	if want.TokenRate != 50 || want.TokenBurst != 250 || want.ClusterRate != 200 || want.ClusterBurst != 500 ||
		want.TokenStreams != 64 || want.TokenInflight != 128 || want.TokenTunnelShare != 0.25 || want.MaxKeys != 10000 {
		t.Errorf("DefaultConfig = %+v, not the documented defaults", want)
	}
	if got := New(Config{TokenTunnelShare: 2}).cfg.TokenTunnelShare; got != want.TokenTunnelShare {
		t.Errorf("a share above 1 is not a share: got %v, want the default", got)
	}
	// The default token burst is available at once, the next request is refused.
	l := New(Config{})
	for i := range 250 {
		if ok, _, _ := l.Allow("jti", "c"); !ok {
			t.Fatalf("request %d refused within the default burst", i+1)
		}
	}
	if ok, retry, which := l.Allow("jti", "c"); ok || which != LimitToken || retry != time.Second {
		t.Errorf("251st request: %v %v %q; want refused by token, retry 1s", ok, retry, which)
	}
}

// TestDefaultsFitAnAcquisitionAndNoStarvation: under the defaults, one token runs 50 exec sessions at once, each after
// four GETs, all at the same instant, while a second token's requests on the same cluster still pass; and the first
// token, however hard it tries, can take neither the cluster's whole rate nor a whole tunnel.
func TestDefaultsFitAnAcquisitionAndNoStarvation(t *testing.T) {
	clk := newClock()
	l := New(Config{Now: clk.Now})
	const tunnelStreams = 1024 // tunnel.Config's default MaxStreams
	var held []func()
	defer func() {
		for _, r := range held {
			r()
		}
	}()
	take := func(r func(), ok bool) bool {
		held = append(held, r)
		return ok
	}
	for i := range 50 {
		for range 4 { // the GETs before the exec: in flight together with the other targets' sessions
			if ok, _, which := l.Allow("acquire", "prod"); !ok {
				t.Fatalf("target %d: GET refused by the %s limit", i, which)
			}
		}
		if ok, _, which := l.Allow("acquire", "prod"); !ok {
			t.Fatalf("target %d: exec refused by the %s limit", i, which)
		}
		if !take(l.AcquireRequest("acquire")) || !take(l.AcquireStream("acquire")) || !take(l.AcquireTunnel("t1", "acquire", tunnelStreams)) {
			t.Fatalf("target %d: exec session refused (in flight, streams or tunnel share)", i)
		}
	}
	// 50 more short requests in flight at once (the next targets' GETs) still fit.
	for i := range 50 {
		if !take(l.AcquireRequest("acquire")) || !take(l.AcquireTunnel("t1", "acquire", tunnelStreams)) {
			t.Fatalf("GET %d in flight beside the 50 sessions refused", i)
		}
	}
	// Another caller of the cluster is served meanwhile.
	for i := range 20 {
		if ok, _, which := l.Allow("other", "prod"); !ok {
			t.Fatalf("other token's request %d refused by the %s limit", i, which)
		}
	}
	// The first token cannot take the cluster: its sustained rate is a quarter of the cluster's.
	clk.Advance(time.Minute)
	passed := 0
	for range 60 * 10 { // ten seconds at 60 attempts a second... of the hungry token
		clk.Advance(time.Second / 60)
		if ok, _, _ := l.Allow("acquire", "prod"); ok {
			passed++
		}
	}
	if rate := float64(passed-250) / 10; rate > 51 {
		t.Fatalf("the token sustained %.1f requests/s, want at most its 50", rate)
	}
	if ok, _, which := l.Allow("other", "prod"); !ok {
		t.Fatalf("another token starved by the %s limit while one token pushed", which)
	}
	// Nor a tunnel: a quarter of its streams at most, whatever its in-flight cap allows.
	big := New(Config{TokenInflight: 5000, TokenStreams: 5000})
	n := 0
	for {
		r, ok := big.AcquireTunnel("t1", "hog", tunnelStreams)
		if !ok {
			break
		}
		held = append(held, r)
		n++
	}
	if n != tunnelStreams/4 {
		t.Fatalf("one token held %d of a tunnel's %d streams, want %d", n, tunnelStreams, tunnelStreams/4)
	}
	if !take(big.AcquireTunnel("t1", "other", tunnelStreams)) {
		t.Fatal("another token refused on a tunnel one token has filled its share of")
	}
	if !take(big.AcquireTunnel("t2", "hog", tunnelStreams)) {
		t.Fatal("the share is per tunnel: another tunnel refused the token")
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
		for _, acquire := range []func() (func(), bool){
			func() (func(), bool) { return l.AcquireStream(fmt.Sprint("tok-", i)) },
			func() (func(), bool) { return l.AcquireRequest(fmt.Sprint("tok-", i)) },
			func() (func(), bool) { return l.AcquireTunnel(fmt.Sprint("tunnel-", i%7), fmt.Sprint("tok-", i), 16) },
		} {
			r, ok := acquire()
			if !ok {
				t.Fatal("refused")
			}
			releases = append(releases, r)
		}
	}
	for _, r := range releases {
		r()
	}
	if n := len(l.streams) + len(l.inflight) + len(l.tunnels); n != 0 {
		t.Errorf("%d counts still tracked after everything was released", n)
	}
}

// TestInflightAndTunnelShare: the in-flight cap counts every request of a token; the tunnel share is a fraction
// of the tunnel's streams, at least one, per tunnel and per token.
func TestInflightAndTunnelShare(t *testing.T) {
	l := New(Config{TokenInflight: 3, TokenTunnelShare: 0.5})
	var rs []func()
	for i := range 3 {
		r, ok := l.AcquireRequest("a")
		if !ok {
			t.Fatalf("request %d of 3 refused", i+1)
		}
		rs = append(rs, r)
	}
	if _, ok := l.AcquireRequest("a"); ok {
		t.Fatal("4th request in flight allowed, cap 3")
	}
	rs[0]()
	if r, ok := l.AcquireRequest("a"); !ok {
		t.Fatal("released slot not reusable")
	} else {
		r()
	}
	for _, c := range []struct{ streams, share int }{{10, 5}, {3, 1}, {1, 1}, {0, 1}, {1024, 512}} {
		if got := l.TunnelShare(c.streams); got != c.share {
			t.Errorf("TunnelShare(%d) = %d, want %d", c.streams, got, c.share)
		}
	}
	r1, ok1 := l.AcquireTunnel("t", "a", 4)
	r2, ok2 := l.AcquireTunnel("t", "a", 4)
	_, ok3 := l.AcquireTunnel("t", "a", 4)
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("share of 4 streams at 0.5: %v %v %v, want two", ok1, ok2, ok3)
	}
	r1()
	r2()
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
