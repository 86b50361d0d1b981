package acquire

import (
	"sync/atomic"
	"time"

	"github.com/warren-dev/warren/evidence"
)

// Observer is told how a run goes, from the run's goroutines (several at once): it must be safe for concurrent
// use and return quickly.
type Observer interface {
	// Planned is called once the targets are known, before any is acquired.
	Planned(targets []TargetInfo)
	// Started is called when a target's acquisition starts; p counts its archive's bytes as they are written.
	Started(t TargetInfo, p *Progress)
	// Finished is called with a target's outcome (acquired, kept from an earlier run, or failed).
	Finished(t TargetInfo, r evidence.IndexTarget)
	// Warn is something the person running the acquisition should know now (e.g. a token about to expire).
	Warn(message string)
}

// TargetInfo names a target.
type TargetInfo struct {
	Namespace, Pod, Container string
}

func (t TargetInfo) String() string { return t.Namespace + "/" + t.Pod + "/" + t.Container }

// Progress is one target's progress. Its methods may be called from any goroutine.
type Progress struct {
	bytes   atomic.Int64
	started time.Time
	// Budget is the target's time budget: the collection ends by then.
	Budget time.Duration
	// MaxBytes bounds the file content collected (the archive is a little larger).
	MaxBytes int64
}

// Bytes is the number of archive bytes written so far.
func (p *Progress) Bytes() int64 { return p.bytes.Load() }

// Started is when the target started.
func (p *Progress) Started() time.Time { return p.started }

type nopObserver struct{}

func (nopObserver) Planned([]TargetInfo)                      {}
func (nopObserver) Started(TargetInfo, *Progress)             {}
func (nopObserver) Finished(TargetInfo, evidence.IndexTarget) {}
func (nopObserver) Warn(string)                               {}
