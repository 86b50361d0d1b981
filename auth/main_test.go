package auth

import (
	"testing"

	"go.uber.org/goleak"
)

// The package starts no goroutines; make sure it stays that way (RemoteJWKS fetches run in the caller).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
