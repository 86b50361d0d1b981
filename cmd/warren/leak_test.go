package main

import (
	"testing"

	"go.uber.org/goleak"
)

// Every server and process a command's test starts is ended by it: no goroutine outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
