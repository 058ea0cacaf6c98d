// Package api is the HTTP interface of CML Cloud Manager: an Echo server
// with request ids, access logging, Prometheus metrics, panic recovery and
// RFC 9457 problem+json errors; the liveness and readiness probes; one
// handler file per resource under /api; and the route table (routes.go) from
// which the router, the OpenAPI document (/api/openapi.json, with its page at
// /api/docs) and the RBAC matrix are all derived.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cmlcloud/cml-cloud-manager/application"
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

	// App, History, System and Admin are the application's handlers behind
	// the /api routes. With App nil the server answers only the probes,
	// /metrics and the API document; with App set the other three and Auth
	// are required.
	App     *application.App
	History *application.History
	System  *application.System
	Admin   *application.Admin
	// Auth identifies the callers of every /api route and serves the
	// /api/auth routes.
	Auth Authenticator
	// Telemetry (metrics and labs), Jobs (refresh, jobs overview, run now)
	// and Fleet (import by look-up, lab download) are required with App.
	Telemetry *application.Telemetry
	Jobs      *application.JobControl
	Fleet     *application.Fleet
	// Metrics is the Prometheus registry served at /metrics; the server
	// registers its request metrics and the Go and process collectors on it.
	// Nil makes a registry of its own.
	Metrics *prometheus.Registry
	// Streams enables the server-sent event routes (/api/events/...); nil
	// answers them 503. A graceful Shutdown ends every stream with
	// system.shutdown.
	Streams *StreamOptions

	// noRouteGate, for tests, leaves authorisation to the application
	// handlers alone (see authorize).
	noRouteGate bool
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

	app     *application.App
	history *application.History
	system  *application.System
	admin   *application.Admin
	auth    Authenticator
	metrics *httpMetrics

	telemetry *application.Telemetry
	jobs      *application.JobControl
	fleet     *application.Fleet
	// streams serves the event streams (nil: not enabled).
	streams *streams

	// routePaths holds "METHOD /echo/path" of every registered route (metric
	// labels use only these).
	routePaths map[string]bool
	// openAPIDoc is the document generated from the route table.
	openAPIDoc []byte
}

// New builds a Server with its middleware and routes. It panics on wiring
// mistakes: a readiness check without a name or func, or two sharing a name;
// App set without History, System, Admin or Auth; a route table that does
// not describe itself completely.
func New(opts Options) *Server {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.App != nil && (opts.History == nil || opts.System == nil || opts.Admin == nil || opts.Auth == nil ||
		opts.Telemetry == nil || opts.Jobs == nil || opts.Fleet == nil) {
		panic("api: Options.App needs History, System, Admin, Auth, Telemetry, Jobs and Fleet too")
	}
	reg := opts.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Server{
		logger:           logger,
		echo:             echo.New(),
		readiness:        opts.Readiness,
		readinessTimeout: opts.ReadinessTimeout,
		app:              opts.App,
		history:          opts.History,
		system:           opts.System,
		admin:            opts.Admin,
		auth:             opts.Auth,
		telemetry:        opts.Telemetry,
		jobs:             opts.Jobs,
		fleet:            opts.Fleet,
		metrics:          newHTTPMetrics(reg),
		routePaths:       map[string]bool{},
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
	e.Use(requestIDMiddleware, s.metricsMiddleware, s.accessLogMiddleware, s.recoverMiddleware)

	s.checkReadiness()
	table := s.routes()
	doc, err := buildOpenAPI(table)
	if err != nil {
		panic("api: OpenAPI document: " + err.Error())
	}
	s.openAPIDoc = doc
	var apiGroup *echo.Group
	if s.app != nil {
		// The Authenticator's middleware runs on every /api request, found
		// or not. It is not group middleware: Echo would answer a wrong
		// method under /api 404 instead of 405.
		e.Use(onlyUnder("/api/", s.auth.Middleware()))
		apiGroup = e.Group("/api")
		s.auth.Register(apiGroup)
	}
	s.register(table, apiGroup, opts.noRouteGate)

	s.server = &http.Server{
		Handler:           e,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		// WriteTimeout: 0 on purpose, see readHeaderTimeout's comment.
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	if opts.Streams != nil && s.app != nil {
		s.streams = newStreams(*opts.Streams, logger, reg)
		s.server.ConnContext = withConn
		// Shutdown does not wait for the streams: each sends
		// system.shutdown and ends when it starts.
		s.server.RegisterOnShutdown(s.streams.stop)
	}
	return s
}

// onlyUnder applies mw to requests whose path starts with prefix.
func onlyUnder(prefix string, mw echo.MiddlewareFunc) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		wrapped := mw(next)
		return func(c echo.Context) error {
			if strings.HasPrefix(c.Request().URL.Path, prefix) {
				return wrapped(c)
			}
			return next(c)
		}
	}
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
		ctx := context.WithValue(req.Context(), requestIDKey{}, id)
		// The request id is the correlation id of the events its command
		// records.
		ctx = application.WithCorrelationID(ctx, id)
		c.SetRequest(req.WithContext(ctx))
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
