// Package api is the HTTP interface of CML Cloud Manager: an Echo server
// with request ids, access logging, panic recovery and RFC 9457 problem+json
// errors, the liveness and readiness probes, and (in later files) one handler
// file per resource under /api.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
)

// Server timeouts. WriteTimeout is deliberately 0 (none): the server-sent
// event routes (/api/events/...) hold responses open for hours and would be
// cut off by a write deadline. Handlers that need a bound set their own with
// context.WithTimeout or http.ResponseController.SetWriteDeadline.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 120 * time.Second

	// DefaultReadinessTimeout bounds each readiness check.
	DefaultReadinessTimeout = 2 * time.Second
)

// Options configure a Server.
type Options struct {
	// Logger receives the access log and error reports. Nil discards them.
	Logger *slog.Logger
	// Readiness are the checks /readyz runs; all must pass for 200.
	Readiness []Check
	// ReadinessTimeout bounds each check; zero means DefaultReadinessTimeout.
	ReadinessTimeout time.Duration
}

// Check is one readiness check. Func must return promptly once ctx is done.
type Check struct {
	// Name identifies the check in /readyz responses ("database").
	Name string
	// Func returns nil when the dependency is ready.
	Func func(ctx context.Context) error
}

// Server is the HTTP server. Create it with New.
type Server struct {
	logger           *slog.Logger
	echo             *echo.Echo
	server           *http.Server
	readiness        []Check
	readinessTimeout time.Duration
}

// New builds a Server with its middleware and routes. It panics when a
// readiness check has no name or no func, or two share a name: those are
// wiring mistakes, not runtime conditions.
func New(opts Options) *Server {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		logger:           logger,
		echo:             echo.New(),
		readiness:        opts.Readiness,
		readinessTimeout: opts.ReadinessTimeout,
	}
	if s.readinessTimeout <= 0 {
		s.readinessTimeout = DefaultReadinessTimeout
	}

	e := s.echo
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.handleError
	// Take the peer address as is. X-Forwarded-For is only trustworthy
	// behind a known proxy; that is a deployment setting for later.
	e.IPExtractor = echo.ExtractIPDirect()
	e.Use(requestIDMiddleware, s.accessLogMiddleware, s.recoverMiddleware)

	s.registerHealthRoutes()

	s.server = &http.Server{
		Handler:           e,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		// WriteTimeout: 0 on purpose, see readHeaderTimeout's comment.
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return s
}

// Handler returns the server's handler, for tests and for embedding.
func (s *Server) Handler() http.Handler { return s.echo }

// Start listens on addr and serves until Shutdown. It returns nil after a
// Shutdown and an error if listening or serving fails.
func (s *Server) Start(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	return s.Serve(l)
}

// Serve serves connections from l until Shutdown; it closes l. It returns
// nil after a Shutdown.
func (s *Server) Serve(l net.Listener) error {
	if err := s.server.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", err)
	}
	return nil
}

// Shutdown stops accepting connections and waits, until ctx is done, for
// requests in flight to finish. Long-lived responses (server-sent events)
// must end themselves: register a function with RegisterOnShutdown.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.server.Shutdown(ctx); err != nil {
		return fmt.Errorf("shut down http server: %w", err)
	}
	return nil
}

// RegisterOnShutdown registers f to run when Shutdown starts, for example to
// close server-sent event streams, which Shutdown does not wait for.
func (s *Server) RegisterOnShutdown(f func()) { s.server.RegisterOnShutdown(f) }

type requestIDKey struct{}

// RequestID returns the request id of the HTTP request that ctx belongs to,
// or "" outside a request. Command handlers use it as correlation id.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// maxRequestIDLen bounds an incoming X-Request-ID we are willing to reuse.
const maxRequestIDLen = 128

// validRequestID accepts ids made of letters, digits and ._:- up to
// maxRequestIDLen, so a client cannot inject anything into logs or headers.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

func newRequestID() string {
	if id, err := uuid.NewV7(); err == nil {
		return id.String()
	}
	return uuid.NewString()
}

// requestIDMiddleware reuses a sane incoming X-Request-ID or makes one, puts
// it into the request context and echoes it in the response.
func requestIDMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Request().Header.Get(echo.HeaderXRequestID)
		if !validRequestID(id) {
			id = newRequestID()
		}
		req := c.Request()
		c.SetRequest(req.WithContext(context.WithValue(req.Context(), requestIDKey{}, id)))
		c.Response().Header().Set(echo.HeaderXRequestID, id)
		return next(c)
	}
}

// accessLogMiddleware logs one line per request: method, path (never the
// query string, which may carry codes or tokens), route, status, duration,
// size, peer and request id. Headers, and so cookies and Authorization, are
// never logged. Successful probes log at debug to keep the log readable.
func (s *Server) accessLogMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		if err := next(c); err != nil {
			// Write the error response now so the status below is final.
			c.Error(err)
		}
		req, res := c.Request(), c.Response()
		level := slog.LevelInfo
		switch {
		case res.Status >= http.StatusInternalServerError:
			level = slog.LevelError
		case res.Status < http.StatusBadRequest && (req.URL.Path == "/healthz" || req.URL.Path == "/readyz"):
			level = slog.LevelDebug
		}
		s.logger.LogAttrs(req.Context(), level, "http request",
			slog.String("method", req.Method),
			slog.String("path", req.URL.Path),
			slog.String("route", c.Path()),
			slog.Int("status", res.Status),
			slog.Duration("duration", time.Since(start)),
			slog.Int64("bytes", res.Size),
			slog.String("remote", c.RealIP()),
			slog.String("request_id", RequestID(req.Context())),
		)
		return nil
	}
}

// recoverMiddleware turns a panic into a logged 500 problem. The
// http.ErrAbortHandler sentinel is re-raised, as net/http expects.
func (s *Server) recoverMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			r := recover()
			if r == nil {
				return
			}
			if r == http.ErrAbortHandler {
				panic(r)
			}
			s.logger.ErrorContext(c.Request().Context(), "panic in handler",
				slog.String("request_id", RequestID(c.Request().Context())),
				slog.String("method", c.Request().Method),
				slog.String("path", c.Request().URL.Path),
				slog.Any("panic", r),
				slog.String("stack", string(debug.Stack())),
			)
			err = &Problem{
				Status: http.StatusInternalServerError,
				Code:   CodeInternal,
				Detail: defaultDetail(http.StatusInternalServerError),
			}
		}()
		return next(c)
	}
}
