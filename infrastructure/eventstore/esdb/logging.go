package esdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// clientLogger routes the client's printf-style logging to log. Messages
// about calls that ended because their context was cancelled (the client
// logs every dropped subscription as an error, cancellation included) are
// downgraded to Info.
func clientLogger(log *slog.Logger) esdb.LoggingFunc {
	return func(level esdb.LogLevel, format string, args ...any) {
		// Configuration.applyLogger passes its arguments un-spread, as one
		// []interface{}.
		if len(args) == 1 {
			if inner, ok := args[0].([]any); ok {
				args = inner
			}
		}
		lvl := clientLevel(level)
		if lvl > slog.LevelInfo && cancelled(args) {
			lvl = slog.LevelInfo
		}
		ctx := context.Background()
		if !log.Enabled(ctx, lvl) {
			return
		}
		msg := format
		if len(args) > 0 {
			msg = fmt.Sprintf(format, args...)
		}
		log.Log(ctx, lvl, "eventstoredb client: "+strings.TrimSpace(msg))
	}
}

func clientLevel(level esdb.LogLevel) slog.Level {
	switch level {
	case esdb.LogDebug:
		return slog.LevelDebug
	case esdb.LogInfo:
		return slog.LevelInfo
	case esdb.LogWarn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// cancelled reports whether an argument is an error caused by a cancelled
// context.
func cancelled(args []any) bool {
	for _, a := range args {
		err, ok := a.(error)
		if !ok {
			continue
		}
		// status.Code also finds a status wrapped in an *esdb.Error.
		if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
			return true
		}
	}
	return false
}
