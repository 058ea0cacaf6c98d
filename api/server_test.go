package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newTestServer(t *testing.T, opts Options) (*Server, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return New(opts), logs
}

func do(t *testing.T, h http.Handler, method, target string, header http.Header) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// decodeProblem checks the media type and returns the problem's members.
func decodeProblem(t *testing.T, rec *httptest.ResponseRecorder, wantStatus int, wantCode string) map[string]any {
	t.Helper()
	if got := rec.Code; got != wantStatus {
		t.Fatalf("status=%d, want %d; body %s", got, wantStatus, rec.Body)
	}
	if got, want := rec.Header().Get("Content-Type"), ProblemContentType; got != want {
		t.Fatalf("Content-Type=%q, want %q", got, want)
	}
	var p map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatalf("decode problem %s: %v", rec.Body, err)
	}
	if got := p["code"]; got != wantCode {
		t.Fatalf("code=%v, want %q; body %s", got, wantCode, rec.Body)
	}
	if got := p["status"]; got != float64(wantStatus) {
		t.Fatalf("status member=%v, want %d", got, wantStatus)
	}
	for _, k := range []string{"type", "title", "detail", "request_id"} {
		if s, _ := p[k].(string); s == "" {
			t.Fatalf("problem member %q missing in %s", k, rec.Body)
		}
	}
	if got, want := p["request_id"], rec.Header().Get(echo.HeaderXRequestID); got != want {
		t.Fatalf("request_id=%v, want the X-Request-ID header %q", got, want)
	}
	return p
}

func TestHealthz(t *testing.T) {
	s, _ := newTestServer(t, Options{Readiness: []Check{{Name: "database", Func: func(context.Context) error {
		t.Error("liveness must not run readiness checks")
		return nil
	}}}})
	rec := do(t, s.Handler(), http.MethodGet, "/healthz", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("status=%d, want 200", rec.Code)
	}
	if got, want := strings.TrimSpace(rec.Body.String()), `{"status":"ok"}`; got != want {
		t.Fatalf("body=%s, want %s", got, want)
	}
	if rec.Header().Get(echo.HeaderXRequestID) == "" {
		t.Fatal("no X-Request-ID in the response")
	}
}

func TestRequestID(t *testing.T) {
	s, _ := newTestServer(t, Options{})
	t.Run("KeepsSaneIncoming", func(t *testing.T) {
		rec := do(t, s.Handler(), http.MethodGet, "/healthz", http.Header{"X-Request-Id": {"abc-123.x_y:z"}})
		if got, want := rec.Header().Get(echo.HeaderXRequestID), "abc-123.x_y:z"; got != want {
			t.Fatalf("X-Request-ID=%q, want %q", got, want)
		}
	})
	t.Run("ReplacesInsane", func(t *testing.T) {
		for _, bad := range []string{"a b", "x\"y", strings.Repeat("a", maxRequestIDLen+1), "é"} {
			rec := do(t, s.Handler(), http.MethodGet, "/healthz", http.Header{"X-Request-Id": {bad}})
			got := rec.Header().Get(echo.HeaderXRequestID)
			if got == bad || !validRequestID(got) {
				t.Fatalf("incoming %q: X-Request-ID=%q, want a fresh id", bad, got)
			}
		}
	})
	t.Run("InContext", func(t *testing.T) {
		var seen string
		s.echo.GET("/test/request-id", func(c echo.Context) error {
			seen = RequestID(c.Request().Context())
			return c.NoContent(http.StatusNoContent)
		})
		rec := do(t, s.Handler(), http.MethodGet, "/test/request-id", nil)
		if seen == "" || seen != rec.Header().Get(echo.HeaderXRequestID) {
			t.Fatalf("RequestID(ctx)=%q, header %q", seen, rec.Header().Get(echo.HeaderXRequestID))
		}
	})
}

func TestReadyz(t *testing.T) {
	ok := func(context.Context) error { return nil }
	t.Run("Ready", func(t *testing.T) {
		s, _ := newTestServer(t, Options{Readiness: []Check{{Name: "database", Func: ok}, {Name: "migrations", Func: ok}}})
		rec := do(t, s.Handler(), http.MethodGet, "/readyz", nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("status=%d, want 200; body %s", rec.Code, rec.Body)
		}
		var body struct {
			Status string            `json:"status"`
			Checks map[string]string `json:"checks"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		if body.Status != "ready" || body.Checks["database"] != "ok" || body.Checks["migrations"] != "ok" || len(body.Checks) != 2 {
			t.Fatalf("body=%s", rec.Body)
		}
	})
	t.Run("NoChecks", func(t *testing.T) {
		s, _ := newTestServer(t, Options{})
		rec := do(t, s.Handler(), http.MethodGet, "/readyz", nil)
		if got, want := strings.TrimSpace(rec.Body.String()), `{"checks":{},"status":"ready"}`; rec.Code != http.StatusOK || got != want {
			t.Fatalf("status=%d body=%s, want 200 %s", rec.Code, got, want)
		}
	})
	t.Run("NotReady", func(t *testing.T) {
		s, logs := newTestServer(t, Options{
			ReadinessTimeout: 50 * time.Millisecond,
			Readiness: []Check{
				{Name: "database", Func: ok},
				{Name: "migrations", Func: func(context.Context) error { return errors.New("schema at 3, want 4 on db-host-internal") }},
				{Name: "projections", Func: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
			},
		})
		rec := do(t, s.Handler(), http.MethodGet, "/readyz", nil)
		p := decodeProblem(t, rec, http.StatusServiceUnavailable, CodeNotReady)
		checks, _ := p["checks"].(map[string]any)
		if checks["database"] != "ok" || checks["migrations"] != "failed" || checks["projections"] != "timeout" {
			t.Fatalf("checks=%v", p["checks"])
		}
		detail := p["detail"].(string)
		if !strings.Contains(detail, "migrations") || !strings.Contains(detail, "projections") || strings.Contains(detail, "database") {
			t.Fatalf("detail=%q, want the failing checks by name", detail)
		}
		if strings.Contains(rec.Body.String(), "db-host-internal") {
			t.Fatalf("check error text leaked to the client: %s", rec.Body)
		}
		if !strings.Contains(logs.String(), "db-host-internal") {
			t.Fatalf("check error not logged: %s", logs)
		}
	})
	t.Run("CheckIgnoringContext", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		s, _ := newTestServer(t, Options{
			ReadinessTimeout: 20 * time.Millisecond,
			Readiness:        []Check{{Name: "stuck", Func: func(context.Context) error { <-release; return nil }}},
		})
		start := time.Now()
		rec := do(t, s.Handler(), http.MethodGet, "/readyz", nil)
		p := decodeProblem(t, rec, http.StatusServiceUnavailable, CodeNotReady)
		if p["checks"].(map[string]any)["stuck"] != "timeout" {
			t.Fatalf("checks=%v", p["checks"])
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("readyz took %v despite the timeout", d)
		}
	})
}

func TestNewRejectsBadChecks(t *testing.T) {
	for name, checks := range map[string][]Check{
		"NoName":    {{Func: func(context.Context) error { return nil }}},
		"NoFunc":    {{Name: "database"}},
		"Duplicate": {{Name: "a", Func: func(context.Context) error { return nil }}, {Name: "a", Func: func(context.Context) error { return nil }}},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("New did not panic")
				}
			}()
			New(Options{Readiness: checks})
		})
	}
}

func TestErrors(t *testing.T) {
	s, logs := newTestServer(t, Options{})
	s.echo.GET("/test/panic", func(echo.Context) error { panic("boom") })
	s.echo.GET("/test/plain-error", func(echo.Context) error { return errors.New("secret internal detail") })
	s.echo.GET("/test/problem", func(echo.Context) error {
		return NewProblem(http.StatusConflict, CodeConflict, "Worker is stopped.")
	})
	s.echo.GET("/test/wrapped-problem", func(echo.Context) error {
		return fmt.Errorf("handler: %w", NewProblem(http.StatusForbidden, CodeForbidden, "Admins only."))
	})

	t.Run("NotFound", func(t *testing.T) {
		rec := do(t, s.Handler(), http.MethodGet, "/no/such/route", nil)
		p := decodeProblem(t, rec, http.StatusNotFound, CodeNotFound)
		if p["type"] != "about:blank" || p["title"] != "Not Found" {
			t.Fatalf("problem=%v", p)
		}
	})
	t.Run("MethodNotAllowed", func(t *testing.T) {
		rec := do(t, s.Handler(), http.MethodPost, "/healthz", nil)
		decodeProblem(t, rec, http.StatusMethodNotAllowed, CodeMethodNotAllowed)
		if allow := rec.Header().Get("Allow"); !strings.Contains(allow, http.MethodGet) {
			t.Fatalf("Allow=%q, want GET listed", allow)
		}
	})
	t.Run("Panic", func(t *testing.T) {
		rec := do(t, s.Handler(), http.MethodGet, "/test/panic", nil)
		p := decodeProblem(t, rec, http.StatusInternalServerError, CodeInternal)
		if strings.Contains(rec.Body.String(), "boom") {
			t.Fatalf("panic value leaked: %v", p)
		}
		if !strings.Contains(logs.String(), "panic in handler") || !strings.Contains(logs.String(), "boom") {
			t.Fatalf("panic not logged: %s", logs)
		}
	})
	t.Run("PlainError", func(t *testing.T) {
		rec := do(t, s.Handler(), http.MethodGet, "/test/plain-error", nil)
		decodeProblem(t, rec, http.StatusInternalServerError, CodeInternal)
		if strings.Contains(rec.Body.String(), "secret internal detail") {
			t.Fatalf("error text leaked: %s", rec.Body)
		}
		if !strings.Contains(logs.String(), "secret internal detail") {
			t.Fatalf("internal error not logged: %s", logs)
		}
	})
	t.Run("Problem", func(t *testing.T) {
		rec := do(t, s.Handler(), http.MethodGet, "/test/problem", nil)
		p := decodeProblem(t, rec, http.StatusConflict, CodeConflict)
		if p["detail"] != "Worker is stopped." || p["title"] != "Conflict" {
			t.Fatalf("problem=%v", p)
		}
	})
	t.Run("WrappedProblem", func(t *testing.T) {
		rec := do(t, s.Handler(), http.MethodGet, "/test/wrapped-problem", nil)
		decodeProblem(t, rec, http.StatusForbidden, CodeForbidden)
	})
	t.Run("Head", func(t *testing.T) {
		rec := do(t, s.Handler(), http.MethodHead, "/no/such/route", nil)
		if rec.Code != http.StatusNotFound || rec.Body.Len() != 0 {
			t.Fatalf("HEAD: status=%d body=%q", rec.Code, rec.Body)
		}
	})
}

func TestAccessLog(t *testing.T) {
	s, logs := newTestServer(t, Options{})
	do(t, s.Handler(), http.MethodGet, "/api/auth/callback?code=s3cr3t-code&state=xyz", http.Header{
		"Authorization": {"Bearer s3cr3t-token"},
		"Cookie":        {"session=s3cr3t-cookie"},
		"X-Request-Id":  {"req-42"},
	})
	var entry map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == "http request" {
			entry = m
		}
	}
	if entry == nil {
		t.Fatalf("no access log line in %s", logs)
	}
	if entry["method"] != "GET" || entry["path"] != "/api/auth/callback" || entry["status"] != float64(404) ||
		entry["request_id"] != "req-42" || entry["duration"] == nil {
		t.Fatalf("access log entry=%v", entry)
	}
	if strings.Contains(logs.String(), "s3cr3t") {
		t.Fatalf("a secret reached the log: %s", logs)
	}
}

func TestServeAndShutdown(t *testing.T) {
	s, _ := newTestServer(t, Options{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	res, err := client.Get("http://" + l.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status=%d, want 200", res.StatusCode)
	}
	if s.server.ReadHeaderTimeout != 10*time.Second || s.server.IdleTimeout != 120*time.Second || s.server.WriteTimeout != 0 {
		t.Fatalf("timeouts: header %v idle %v write %v", s.server.ReadHeaderTimeout, s.server.IdleTimeout, s.server.WriteTimeout)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after Shutdown = %v, want nil", err)
	}
}
