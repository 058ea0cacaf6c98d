package stream

import (
	"testing"

	"go.uber.org/goleak"
)

// The hub starts a pump goroutine per feed subscription: every test must
// leave none behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
