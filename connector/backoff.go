package connector

import (
	"math/rand/v2"
	"time"
)

// Backoff spaces reconnections: exponential, with full jitter so that many connectors cut off at once do not come
// back in lockstep.
type Backoff struct {
	// Initial bounds the first wait (so the first retry comes within it). Default 1 s.
	Initial time.Duration
	// Max caps every wait. Default 30 s.
	Max time.Duration
	// StableAfter is how long a tunnel must have lived for the next failure to start from Initial again.
	// Default 30 s.
	StableAfter time.Duration
	// Rand returns a number in [0, 1); default math/rand/v2. Tests inject their own.
	Rand func() float64
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = time.Second
	}
	if b.Max <= 0 {
		b.Max = 30 * time.Second
	}
	if b.StableAfter <= 0 {
		b.StableAfter = 30 * time.Second
	}
	if b.Rand == nil {
		b.Rand = rand.Float64
	}
	return b
}

// delay returns the wait before retry number attempt (0 for the first): uniform in [0, min(Max, Initial·2^attempt)).
func (b Backoff) delay(attempt int) time.Duration {
	ceiling := b.Max
	if attempt < 32 {
		if d := b.Initial << attempt; d > 0 && d < b.Max {
			ceiling = d
		}
	}
	return time.Duration(b.Rand() * float64(ceiling))
}
