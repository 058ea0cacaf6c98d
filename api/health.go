package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// Readiness check outcomes as reported by /readyz. The errors themselves are
// logged, not returned: the probe is unauthenticated and error texts can
// name internal hosts.
const (
	checkOK      = "ok"
	checkFailed  = "failed"
	checkTimeout = "timeout"
)

// checkReadiness panics on a readiness check without a name or func, or two
// with the same name: wiring mistakes.
func (s *Server) checkReadiness() {
	seen := make(map[string]bool, len(s.readiness))
	for i, c := range s.readiness {
		if c.Name == "" || c.Func == nil {
			panic(fmt.Sprintf("api: readiness check %d needs a name and a func", i))
		}
		if seen[c.Name] {
			panic(fmt.Sprintf("api: readiness check %q registered twice", c.Name))
		}
		seen[c.Name] = true
	}
}

// healthz is the liveness probe: the process serves HTTP. It does no I/O, so
// a slow database never gets the process restarted.
func (s *Server) healthz(c echo.Context) error {
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz is the readiness probe: every registered check must pass within the
// readiness timeout. It answers 200 {"status":"ready","checks":{...}} or a
// 503 not_ready problem whose "checks" member names each check's outcome.
func (s *Server) readyz(c echo.Context) error {
	ctx := c.Request().Context()
	results := s.runChecks(ctx)
	var failing []string
	checks := make(map[string]string, len(results))
	for _, r := range results {
		checks[r.name] = r.outcome
		if r.outcome != checkOK {
			failing = append(failing, r.name)
			s.logger.WarnContext(ctx, "readiness check failed",
				slog.String("check", r.name),
				slog.String("outcome", r.outcome),
				slog.Any("error", r.err),
				slog.String("request_id", RequestID(ctx)))
		}
	}
	if len(failing) > 0 {
		slices.Sort(failing)
		return &Problem{
			Status:     http.StatusServiceUnavailable,
			Code:       CodeNotReady,
			Detail:     "Failing readiness checks: " + strings.Join(failing, ", ") + ".",
			Extensions: map[string]any{"checks": checks},
		}
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, map[string]any{"status": "ready", "checks": checks})
}

type checkResult struct {
	name    string
	outcome string
	err     error
}

// runChecks runs every check concurrently, each under its own timeout. A
// check that ignores its context is reported as timed out and left to
// finish on its own; the buffered channel keeps it from blocking.
func (s *Server) runChecks(ctx context.Context) []checkResult {
	ch := make(chan checkResult, len(s.readiness))
	for _, c := range s.readiness {
		go func() {
			cctx, cancel := context.WithTimeout(ctx, s.readinessTimeout)
			defer cancel()
			err := c.Func(cctx)
			switch {
			case err == nil:
				ch <- checkResult{name: c.Name, outcome: checkOK}
			case errors.Is(err, context.DeadlineExceeded):
				ch <- checkResult{name: c.Name, outcome: checkTimeout, err: err}
			default:
				ch <- checkResult{name: c.Name, outcome: checkFailed, err: err}
			}
		}()
	}
	timer := time.NewTimer(s.readinessTimeout + 100*time.Millisecond)
	defer timer.Stop()
	done := make(map[string]checkResult, len(s.readiness))
	for len(done) < len(s.readiness) {
		select {
		case r := <-ch:
			done[r.name] = r
		case <-timer.C:
			for _, c := range s.readiness {
				if _, ok := done[c.Name]; !ok {
					done[c.Name] = checkResult{name: c.Name, outcome: checkTimeout, err: errors.New("check did not return in time")}
				}
			}
		}
	}
	out := make([]checkResult, 0, len(s.readiness))
	for _, c := range s.readiness {
		out = append(out, done[c.Name])
	}
	return out
}
