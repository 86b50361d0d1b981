package connector

import (
	"testing"

	"go.uber.org/goleak"
)

// Every connector, tunnel and transport a test starts is ended by its cleanup.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
