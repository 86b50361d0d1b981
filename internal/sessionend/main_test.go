package sessionend

import (
	"testing"

	"go.uber.org/goleak"
)

// Every connection a test starts is ended by it: no goroutine outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
