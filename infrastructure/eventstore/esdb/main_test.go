package esdb

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks for leaked goroutines, except those of idle gRPC
// connections: the client leaks one when a call starts on it while it
// reconnects after a failed call (it replaces its connection without closing
// the old one; ADR 8). What the store owns, its clients, is checked exactly
// instead: every test's store must close every client it made
// (requireClientsClosed).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"))
}
