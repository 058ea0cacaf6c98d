package esdb

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	api "github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// apiOptions are the options of a read request, as the server receives them.
type apiOptions = api.ReadReq_Options

// recordingHandler keeps "LEVEL message" of every record, at every level.
type recordingHandler struct {
	mu       sync.Mutex
	recorded []string
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recorded = append(h.recorded, r.Level.String()+" "+r.Message)
	return nil
}

func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) lines() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.recorded...)
}

func slogNew(h slog.Handler) *slog.Logger { return slog.New(h) }

// statusError returns a gRPC status error of the named code, as the client
// sees a failed call.
func statusError(t *testing.T, code string) error {
	t.Helper()
	switch code {
	case "canceled":
		return status.Error(codes.Canceled, "context canceled")
	case "unavailable":
		return status.Error(codes.Unavailable, "error reading from server: EOF")
	}
	t.Fatalf("unknown code %q", code)
	return nil
}
