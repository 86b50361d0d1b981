package gateway

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/warren-dev/warren/audit"
)

// recordSink keeps what a refusalAudit passes on.
type recordSink struct {
	mu   sync.Mutex
	recs []audit.Record
}

func (s *recordSink) Write(r audit.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, r)
	return nil
}

func (s *recordSink) records() []audit.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]audit.Record(nil), s.recs...)
}

// TestRefusalSummariesFlushOnTheirTimer: under testing/synctest, the summary of a source's counted refusals is
// written at FlushInterval, not before; a source whose budget has refilled is then forgotten, and with nothing left
// to count the timer is not armed again (the refusal audit holds no goroutine and, idle, no timer).
func TestRefusalSummariesFlushOnTheirTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &recordSink{}
		a := newRefusalAudit(sink, RefusalAuditConfig{Rate: 1, Burst: 1, AuthenticatedRate: 1, AuthenticatedBurst: 1, FlushInterval: time.Minute})
		deny := audit.Record{Component: audit.ComponentGateway, Decision: audit.DecisionDeny, Status: 401, SourceIP: "10.0.0.1"}
		for range 3 {
			a.Write(deny)
		}
		if n := len(sink.records()); n != 1 {
			t.Fatalf("%d records written one by one, want the burst of 1", n)
		}
		time.Sleep(time.Minute - time.Millisecond)
		synctest.Wait()
		if n := len(sink.records()); n != 1 {
			t.Fatalf("%d records before the flush interval, want 1", n)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		recs := sink.records()
		if len(recs) != 2 || recs[1].Suppressed == nil || recs[1].Suppressed.Count != 2 ||
			recs[1].Reason != "2 refusals from 10.0.0.1 not recorded one by one (over 1 a second): 401 ×2" {
			t.Fatalf("after the flush interval: %+v, want the summary of 2 refusals", recs)
		}
		a.mu.Lock()
		idle := a.timer == nil && len(a.sources) == 0
		a.mu.Unlock()
		if !idle {
			t.Fatal("the refusal audit keeps a timer or a source with nothing to count")
		}
		// A new refusal arms the timer again; its flush has nothing to summarise.
		a.Write(deny)
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := len(sink.records()); n != 3 {
			t.Fatalf("%d records, want 3 (no empty summary)", n)
		}
		a.Close()
	})
}
