package gateway

import (
	"testing"

	"go.uber.org/goleak"
)

// Every connection, tunnel and timer a test starts is ended by it: no goroutine outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
