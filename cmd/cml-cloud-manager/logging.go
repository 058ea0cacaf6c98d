package main

import (
	"fmt"
	"io"
	"log/slog"
)

// newLogger builds the process logger from LOG_LEVEL and LOG_FORMAT. Every
// record carries the service name, so logs stay attributable when several
// services share a collector.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	switch format {
	case "json":
		h = slog.NewJSONHandler(w, opts)
	case "text":
		h = slog.NewTextHandler(w, opts)
	default:
		return nil, fmt.Errorf("log format %q is not text or json", format)
	}
	return slog.New(h).With(slog.String("service", "cml-cloud-manager")), nil
}
