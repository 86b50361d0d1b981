package acquire

import (
	"context"
	"sync"

	"github.com/warren-dev/warren/evidence"
)

// shared holds what several targets of a run read alike (a Node, the ClusterRoleBindings, a namespace's
// RoleBindings, a role), read once: fewer requests against the token's rate limit. Each target that uses an entry
// lists the requests that read it in its own statement. Safe for concurrent use.
type shared struct {
	mu      sync.Mutex
	entries map[string]*sharedEntry
}

type sharedEntry struct {
	once sync.Once
	val  any
	err  error
	reqs []evidence.Request // the requests that read it
}

// get returns the value under key, reading it with load (on the first call) into a log of its own; the requests of
// that read are added to the caller's log (ctx's, see withLog).
func (s *shared) get(ctx context.Context, key string, load func(ctx context.Context) (any, error)) (any, error) {
	s.mu.Lock()
	if s.entries == nil {
		s.entries = map[string]*sharedEntry{}
	}
	e, ok := s.entries[key]
	if !ok {
		e = &sharedEntry{}
		s.entries[key] = e
	}
	s.mu.Unlock()
	e.once.Do(func() {
		log := &requestLog{}
		// The read belongs to the run, not to the first target that asked: another's cancel must not spoil it.
		e.val, e.err = load(withLog(context.WithoutCancel(ctx), log))
		e.reqs = log.list()
	})
	if log, ok := ctx.Value(logKey{}).(*requestLog); ok {
		for _, r := range e.reqs {
			log.add(r)
		}
	}
	return e.val, e.err
}
