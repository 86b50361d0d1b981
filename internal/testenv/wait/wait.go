// Package wait polls a condition for tests that cannot be told when it holds.
package wait

import (
	"testing"
	"time"
)

// Until polls cond until it holds, and fails t if within passes first. The polls start 5 ms apart and slow to
// 100 ms: a quick condition is seen at once, and an expensive one (reading a server's audit log) is not read
// hundreds of times a second. In a synctest bubble the polls move the bubble's clock; where the code can be waited
// on (synctest.Wait, a channel), that is better.
func Until(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for pause := 5 * time.Millisecond; !cond(); pause = min(2*pause, 100*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(pause)
	}
}
