package acquire

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/warren-dev/warren/evidence"
)

// overlapStore is a LocalStore that records whether an object was created under a name while another object of the
// same name was still open. Its first Create waits (up to a second) for a second one to arrive, so that writers
// that are not serialised do overlap.
type overlapStore struct {
	*evidence.LocalStore
	mu      sync.Mutex
	open    map[string]int
	overlap bool
	arrived chan struct{}
	once    sync.Once
}

func (s *overlapStore) Create(ctx context.Context, name string) (evidence.Object, error) {
	s.mu.Lock()
	s.open[name]++
	if s.open[name] > 1 {
		s.overlap = true
	}
	first := s.open[name] == 1
	s.mu.Unlock()
	if first {
		select {
		case <-s.arrived:
		case <-time.After(time.Second):
		}
	} else {
		s.once.Do(func() { close(s.arrived) })
	}
	obj, err := s.LocalStore.Create(ctx, name)
	if err != nil {
		return nil, err
	}
	return &overlapObject{Object: obj, done: func() { s.mu.Lock(); s.open[name]--; s.mu.Unlock() }}, nil
}

type overlapObject struct {
	evidence.Object
	done func()
	once sync.Once
}

func (o *overlapObject) Commit() error { defer o.once.Do(o.done); return o.Object.Commit() }
func (o *overlapObject) Close() error  { defer o.once.Do(o.done); return o.Object.Close() }

// Targets finish concurrently and each rewrites the index: the writes must not overlap (a store takes one writer
// per name; LocalStore's two writers would share name.partial) and each must succeed.
func TestIndexWritesDoNotOverlap(t *testing.T) {
	local, err := evidence.NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := &overlapStore{LocalStore: local, open: map[string]int{}, arrived: make(chan struct{})}
	r := &run{cfg: Config{Store: st}, index: &evidence.Index{AcquisitionID: "abc", Cluster: "prod", Profile: "triage"}}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { errs[i] = r.writeIndex(t.Context()) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Errorf("writeIndex: %v", err)
		}
	}
	if st.overlap {
		t.Fatal("two index writes were open at once under acquisition.json")
	}
	if _, err := evidence.ReadIndex(t.Context(), local); err != nil {
		t.Fatalf("the index does not read back: %v", err)
	}
}
