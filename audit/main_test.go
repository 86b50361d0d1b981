package audit

import (
	"testing"

	"go.uber.org/goleak"
)

// The package starts no goroutines; make sure it stays that way.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
