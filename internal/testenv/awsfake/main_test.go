package awsfake

import (
	"testing"

	"go.uber.org/goleak"
)

// Every server, connection and process a test starts is ended by it: no goroutine outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
