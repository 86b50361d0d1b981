// Package bubble runs a test in a testing/synctest bubble that is safe for yamux.
package bubble

import (
	"runtime"
	"testing"
	"testing/synctest"
)

// Test runs f in a synctest bubble. yamux keeps a package-wide sync.Pool of timers (timerPool in its session.go): a
// timer made in one bubble and taken again in another, or outside any, is fatal ("select on synctest channel from
// outside bubble"), and one made outside never fires on the bubble's clock. Two garbage collections empty a
// sync.Pool (its victim cache goes on the second), so Test empties the pool before f, whose timers are then made in
// the bubble, and after, so that none leaks out. The tests that use it must not run in parallel with others that
// use yamux: nothing else may take from the pool meanwhile.
func Test(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	emptyPools()
	defer emptyPools()
	synctest.Test(t, f)
}

func emptyPools() {
	runtime.GC()
	runtime.GC()
}
