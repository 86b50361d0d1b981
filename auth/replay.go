package auth

import (
	"container/heap"
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultReplayCacheSize bounds a ReplayCache when its size is not given. An id is kept until its assertion's exp
// plus the leeway: 90 s after it was signed by default (120 s with a gateway clock a leeway ahead). A full cache of
// 65536 ids holds 4 MiB (64 bytes an id, measured) and lasts for 700 requests a second through one connector, three
// times the gateway's default rate for a whole cluster.
const DefaultReplayCacheSize = 1 << 16

// ErrReplayed is returned by ReplayCache.Add for an id it holds: the assertion was used before.
var ErrReplayed = errors.New("assertion already used")

// ReplayCacheFullError is returned by ReplayCache.Add when the cache holds as many ids as it may. The cache
// refuses rather than forgets: a forgotten id could be used again.
type ReplayCacheFullError struct {
	Size int
	// RetryAfter is when the oldest id expires and makes room.
	RetryAfter time.Duration
}

func (e *ReplayCacheFullError) Error() string {
	return fmt.Sprintf("the replay cache holds %d assertion ids, as many as it may, until the oldest expires in %v", e.Size, e.RetryAfter.Round(time.Second))
}

// ReplayCache remembers assertion ids until they expire, so that each assertion serves one request. It is
// bounded: when full, Add refuses new ids until old ones expire. Safe for concurrent use; starts no goroutines
// (expired ids go when Add is called).
type ReplayCache struct {
	max int

	mu     sync.Mutex // guards the fields below
	ids    map[[16]byte]struct{}
	expiry expiryHeap // the ids in ids, soonest expiry first
}

// NewReplayCache returns a cache of at most size ids; size <= 0 means DefaultReplayCacheSize.
func NewReplayCache(size int) *ReplayCache {
	if size <= 0 {
		size = DefaultReplayCacheSize
	}
	return &ReplayCache{max: size, ids: make(map[[16]byte]struct{})}
}

// Size is the most ids the cache holds.
func (c *ReplayCache) Size() int { return c.max }

// Len is the number of ids held now (expired ones included until the next Add).
func (c *ReplayCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ids)
}

// Add records id until until. It returns ErrReplayed when id is held already, *ReplayCacheFullError when the
// cache is full of ids that have not expired at now.
func (c *ReplayCache) Add(id [16]byte, until, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.expiry) > 0 && c.expiry[0].until <= now.UnixNano() {
		delete(c.ids, heap.Pop(&c.expiry).(replayEntry).id)
	}
	if _, ok := c.ids[id]; ok {
		return ErrReplayed
	}
	if len(c.ids) >= c.max {
		return &ReplayCacheFullError{Size: c.max, RetryAfter: time.Duration(c.expiry[0].until - now.UnixNano())}
	}
	c.ids[id] = struct{}{}
	heap.Push(&c.expiry, replayEntry{id: id, until: until.UnixNano()})
	return nil
}

// Remember records a verified assertion's id for as long as the verifier av would accept it.
func (c *ReplayCache) Remember(av *AssertionVerifier, a *Assertion) error {
	id, err := a.replayKey()
	if err != nil {
		return invalid(nil, "malformed assertion: "+err.Error())
	}
	return c.Add(id, a.ExpiresAt.Add(av.Leeway()), av.v.now())
}

type replayEntry struct {
	id    [16]byte
	until int64 // Unix nanoseconds
}

type expiryHeap []replayEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].until < h[j].until }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(replayEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
