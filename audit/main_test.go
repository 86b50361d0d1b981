package audit

import (
	"testing"

	"go.uber.org/goleak"
)

// The package starts no goroutines but the brief ones of a checkpoint timer; make sure none outlives a test.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
