package api

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cmlcloud/cml-cloud-manager/api/stream"
	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

// The two server-sent event routes (DESIGN.md section 10, ADR 9):
//
//   - GET /api/events/stream, the dashboard stream: what changed in the
//     worker read models, from the in-memory worker catalog (which every
//     instance keeps current from the read models' NOTIFY channel, so a
//     change made through any instance reaches the dashboards of all).
//     Each frame's id is the catalog marks after it; a reconnect with
//     Last-Event-ID gets what changed since.
//   - GET /api/events/domain, the domain stream: the event log itself for
//     integrators, id = global position, replayed from the durable log and
//     then live.
//
// Every subscriber has bounded memory and never delays another: dashboard
// subscribers read a shared ring of changes (stream.Hub) at their own pace
// and are disconnected when they fall further behind than it holds; domain
// subscribers each read their own store subscription. A write that does not
// complete within the write timeout disconnects its client too. Clients
// resume by id.

// Defaults of StreamOptions.
const (
	DefaultHeartbeat        = 30 * time.Second
	DefaultSessionCheck     = 15 * time.Second
	DefaultStreamWriteLimit = 10 * time.Second
	DefaultStreamBacklog    = 8192
	DefaultStreamSendBuffer = 64 << 10
	// catalogFeedBuffer is the buffer of the hub's own subscription to the
	// catalog: a burst larger than this (a metrics round of a very large
	// fleet) makes the catalog drop the hub, which then resubscribes and has
	// every subscriber catch up.
	catalogFeedBuffer = 8192
	// catalogReadyWait bounds how long a subscriber waits for the catalog's
	// first load at start-up before it is answered 503.
	catalogReadyWait = 10 * time.Second
	// domainBatch bounds the events written between two flushes.
	domainBatch = 256
)

// Stream control event types (besides the dashboard's application.Dashboard*
// types and the domain event types).
const (
	EventHeartbeat      = "heartbeat"
	EventSessionExpired = "auth.session.expired"
	EventShutdown       = "system.shutdown"
)

// ErrSessionEnded is what a SessionChecker returns when the caller's
// session has expired or was revoked (api/auth's ErrSessionEnded is this
// error).
var ErrSessionEnded = errors.New("session ended")

// WorkerCatalog is what the dashboard stream needs of the worker catalog
// (*projections.WorkerCatalog).
type WorkerCatalog interface {
	// Subscribe returns a channel of changes with room for buffer changes,
	// closed when the subscriber does not keep up, and a function that ends
	// the subscription.
	Subscribe(buffer int) (<-chan projections.CatalogChange, func())
	// ChangedSince returns, in position order, the latest change of each
	// kind of each worker past the marks.
	ChangedSince(projections.Marks) []projections.CatalogChange
	// WaitReady blocks until the catalog has loaded once or ctx ends.
	WaitReady(ctx context.Context) error
}

// SessionChecker re-checks the session behind a long-lived request
// (*auth.Authenticator). ok is false for callers without a session (bearer
// tokens, which are checked when the request starts); a session that has
// ended is an error matching ErrSessionEnded.
type SessionChecker interface {
	CheckSession(ctx context.Context) (expiresAt time.Time, ok bool, err error)
}

// StreamOptions configure the server-sent event routes.
type StreamOptions struct {
	// Catalog is the worker catalog the dashboard stream follows
	// (required).
	Catalog WorkerCatalog
	// Labs reads the lab lists sent in worker.labs events (required).
	Labs application.LabsReadModel
	// Sessions, optional, tells when a cookie session ends: the stream then
	// sends auth.session.expired and closes. Errors other than
	// ErrSessionEnded are logged and the check is retried.
	Sessions SessionChecker
	// Heartbeat is the interval of heartbeat events (default 30 s).
	Heartbeat time.Duration
	// SessionCheck is the interval of session checks (default 15 s); a
	// session is also checked when it is due to expire.
	SessionCheck time.Duration
	// WriteTimeout bounds each write of events to a client (default 10 s):
	// a client that does not read is disconnected after it.
	WriteTimeout time.Duration
	// Backlog is how many catalog changes the dashboard subscribers share
	// (default 8192): one further behind is disconnected and resumes by id.
	Backlog int
	// SendBuffer is the kernel send buffer of a dashboard stream's
	// connection (default 64 KiB; negative leaves the kernel's own sizing,
	// which grows to megabytes per connection). It bounds the memory a
	// stalled subscriber holds in the kernel and makes its writer block,
	// and so be disconnected, promptly. It applies when the server serves
	// the connection (Server.Serve), not behind another server's handler.
	SendBuffer int
}

// streams is the state shared by the event routes of one server.
type streams struct {
	opts   StreamOptions
	logger *slog.Logger
	hub    *stream.Hub[projections.CatalogChange]
	frames *frames

	subscribers *prometheus.GaugeVec
	ended       *prometheus.CounterVec

	// shutdown is closed when the server starts a graceful stop.
	shutdown     chan struct{}
	shutdownOnce sync.Once
}

func newStreams(o StreamOptions, logger *slog.Logger, reg prometheus.Registerer) *streams {
	if o.Catalog == nil || o.Labs == nil {
		panic("api: StreamOptions needs Catalog and Labs")
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.SessionCheck <= 0 {
		o.SessionCheck = DefaultSessionCheck
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultStreamWriteLimit
	}
	if o.Backlog <= 0 {
		o.Backlog = DefaultStreamBacklog
	}
	if o.SendBuffer == 0 {
		o.SendBuffer = DefaultStreamSendBuffer
	}
	feed := func() (<-chan projections.CatalogChange, func()) { return o.Catalog.Subscribe(catalogFeedBuffer) }
	st := &streams{
		opts:   o,
		logger: logger.With(slog.String("component", "event_streams")),
		hub:    stream.NewHub(feed, o.Backlog, projections.CatalogChange{Kind: projections.ChangeReset}),
		frames: newFrames(o.Labs),
		subscribers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "cmlcm", Subsystem: "sse", Name: "subscribers",
			Help: "Open server-sent event streams by route (dashboard, domain).",
		}, []string{"stream"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "cmlcm", Subsystem: "sse", Name: "streams_ended_total",
			Help: "Server-sent event streams ended, by route and reason (client, slow, session, shutdown, error).",
		}, []string{"stream", "reason"}),
		shutdown: make(chan struct{}),
	}
	// A registry shared by several servers keeps the first server's
	// collectors; the others count into them.
	st.subscribers = registerOrExisting(reg, st.subscribers)
	st.ended = registerOrExisting(reg, st.ended)
	return st
}

func registerOrExisting[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic("api: register stream metrics: " + err.Error())
}

// stop tells every stream that the server is stopping: each sends
// system.shutdown and ends, and new ones are refused. The server registers
// it with RegisterOnShutdown.
func (st *streams) stop() { st.shutdownOnce.Do(func() { close(st.shutdown) }) }

func (st *streams) stopping() bool {
	select {
	case <-st.shutdown:
		return true
	default:
		return false
	}
}

// HeartbeatEvent is the data of a heartbeat event. Its id is the stream's
// current position, so Last-Event-ID stays current even while filters
// skip everything.
type HeartbeatEvent struct {
	Time time.Time `json:"time" doc:"The server's time (RFC 3339, UTC)."`
}

// SessionExpiredEvent is the data of auth.session.expired: the stream ends
// after it; sign in again.
type SessionExpiredEvent struct {
	Time time.Time `json:"time"`
}

// ShutdownEvent is the data of system.shutdown: the server is stopping and
// ends the stream; reconnect (with Last-Event-ID) to another instance or
// after the restart.
type ShutdownEvent struct {
	Message string    `json:"message"`
	Time    time.Time `json:"time"`
}

// now returns the current time in UTC, so that timestamps end in Z.
func now() time.Time { return time.Now().UTC() }

// streamsUnavailable answers a stream route on a server without streams, or
// one that is stopping.
func streamsUnavailable() error {
	return NewProblem(http.StatusServiceUnavailable, CodeUnavailable, "Event streams are not available on this server; try again shortly.")
}

// splitList splits a comma-separated query value, dropping empty items.
func splitList(s string) []string {
	if s == "" {
		return nil
	}
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// resumeID returns the id to resume after and the name of the parameter
// that gave it: the Last-Event-ID header (what EventSource sends on a
// reconnect), or the query parameter (for clients that cannot set
// headers); both is a problem unless they agree.
func (p *params) resumeID(query string) (id, field string) {
	q := p.query(query, 128)
	h := p.c.Request().Header.Values("Last-Event-ID")
	switch {
	case len(h) > 1:
		p.problems.Add("Last-Event-ID", "is given more than once")
		return "", ""
	case len(h) == 1 && len(h[0]) > 128:
		p.problems.Add("Last-Event-ID", "is longer than 128 characters")
		return "", ""
	case len(h) == 1 && h[0] != "" && q != "" && h[0] != q:
		p.problems.Add(query, "differs from the Last-Event-ID header")
		return "", ""
	case len(h) == 1 && h[0] != "":
		return h[0], "Last-Event-ID"
	}
	return q, query
}

// guard is what every stream session watches besides its own data: the
// heartbeat, the caller's session, the server's shutdown and the client
// going away.
type guard struct {
	st        *streams
	ctx       context.Context
	w         *stream.Writer
	heartbeat *time.Ticker
	check     *time.Timer // nil when the caller has no session to check
	// expired is set once auth.session.expired was sent.
	expired bool
}

func newGuard(ctx context.Context, st *streams, w *stream.Writer) *guard {
	g := &guard{st: st, ctx: ctx, w: w, heartbeat: time.NewTicker(st.opts.Heartbeat)}
	if st.opts.Sessions != nil {
		g.check = time.NewTimer(st.opts.SessionCheck)
	}
	return g
}

func (g *guard) stop() {
	g.heartbeat.Stop()
	if g.check != nil {
		g.check.Stop()
	}
}

// checkC returns the session check's channel (nil, never ready, without
// one).
func (g *guard) checkC() <-chan time.Time {
	if g.check == nil {
		return nil
	}
	return g.check.C
}

// beat writes a heartbeat carrying id (none when empty).
func (g *guard) beat(id string) error {
	if err := g.w.Event(id, EventHeartbeat, mustJSON(HeartbeatEvent{Time: now()})); err != nil {
		return err
	}
	return g.w.Flush()
}

// checkSession re-checks the caller's session. done is true when the
// session ended (auth.session.expired was sent) or the stream failed.
func (g *guard) checkSession() (done bool, err error) {
	o := g.st.opts
	expires, ok, err := o.Sessions.CheckSession(g.ctx)
	switch {
	case errors.Is(err, ErrSessionEnded):
		g.expired = true
		if err := g.w.Event("", EventSessionExpired, mustJSON(SessionExpiredEvent{Time: now()})); err != nil {
			return true, err
		}
		return true, g.w.Flush()
	case err != nil:
		if g.ctx.Err() == nil {
			g.st.logger.WarnContext(g.ctx, "checking the session of an event stream failed; retrying", slog.Any("error", err))
		}
		g.check.Reset(o.SessionCheck)
	case !ok:
		g.check = nil // bearer tokens: checked when the request started
	default:
		next := o.SessionCheck
		if until := time.Until(expires) + 100*time.Millisecond; until < next {
			next = max(until, 10*time.Millisecond)
		}
		g.check.Reset(next)
	}
	return false, nil
}

// shutdown writes system.shutdown.
func (g *guard) shutdown() error {
	if err := g.w.Event("", EventShutdown, mustJSON(ShutdownEvent{Message: "The server is stopping; reconnect with Last-Event-ID.", Time: now()})); err != nil {
		return err
	}
	return g.w.Flush()
}

// startStream begins the response of a stream; buffer is the size of the
// stream's own write buffer (0: none).
func (s *Server) startStream(c echo.Context, buffer int) (*stream.Writer, error) {
	return stream.Start(c.Response(), c.Response().Writer, s.streams.opts.WriteTimeout, buffer)
}

type connKey struct{}

// withConn is the server's ConnContext: it keeps each request's connection
// in its context, so that a stream can size the connection's buffer.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// limitSendBuffer sets the kernel send buffer of the request's connection
// (see StreamOptions.SendBuffer).
func (st *streams) limitSendBuffer(ctx context.Context) {
	c, ok := ctx.Value(connKey{}).(interface{ SetWriteBuffer(bytes int) error })
	if !ok || st.opts.SendBuffer < 0 {
		return
	}
	if err := c.SetWriteBuffer(st.opts.SendBuffer); err != nil {
		st.logger.DebugContext(ctx, "sizing the send buffer of an event stream failed", slog.Any("error", err))
	}
}

// endStream records why a stream ended and logs the unusual; the response
// is already committed, so nothing is returned to the error handler.
func (s *Server) endStream(c echo.Context, route string, g *guard, err error) error {
	ctx := c.Request().Context()
	st := s.streams
	reason := "error"
	switch {
	case g != nil && g.expired:
		reason = "session"
	case err == nil && st.stopping():
		reason = "shutdown"
	case errors.Is(err, stream.ErrBehind), errors.Is(err, os.ErrDeadlineExceeded):
		// A write that timed out cancels the request's context too: test
		// this first.
		reason = "slow"
		st.logger.InfoContext(ctx, "event stream client fell behind; disconnected (it resumes by id)",
			slog.String("route", route), slog.String("request_id", RequestID(ctx)), slog.Any("error", err))
	case ctx.Err() != nil, err == nil:
		reason = "client"
	default:
		st.logger.WarnContext(ctx, "event stream ended", slog.String("route", route),
			slog.String("request_id", RequestID(ctx)), slog.Any("error", err))
	}
	st.ended.WithLabelValues(route, reason).Inc()
	return nil
}

// eventRoutes are the routes of the event streams, for the route table.
func (s *Server) eventRoutes() []Route {
	resume := Param{Name: "Last-Event-ID", In: "header", Description: "The id of the last event received: the stream resumes after it (EventSource sends it on reconnects).",
		Schema: map[string]any{"type": "string", "maxLength": 128}}
	sse := func(desc string) []Response {
		return []Response{{Status: http.StatusOK, Description: desc,
			Headers: map[string]string{"Cache-Control": "no-store", "X-Accel-Buffering": "no (proxies must not buffer the stream)"},
			Media:   []Media{{Type: mimeEventStream, Schema: map[string]any{"type": "string", "description": "Server-sent events: `id:`, `event:` and one `data:` line of JSON per event."}}}}}
	}
	return []Route{
		{
			Method: http.MethodGet, Path: "/api/events/stream", OperationID: "streamDashboardEvents", Tag: "events",
			Summary: "Dashboard event stream (server-sent events)",
			Description: "On connect, one `worker.snapshot` per worker the caller may see (the worker as GET /api/workers/{id} returns it), sent to this caller only; " +
				"then `worker.snapshot`, `worker.metrics` ({worker_id, position, latest_metrics}), `worker.labs` ({worker_id, position, labs}) and `worker.removed` ({worker_id, position}) as the read models change, on every instance. " +
				"`heartbeat` ({time}) every 30 s; `auth.session.expired` then the end of the stream when a cookie session ends; `system.shutdown` before a graceful stop.\n\n" +
				"Each frame's id is the read-model position (`lifecycle.metrics.labs` log positions). Reconnecting with Last-Event-ID (or ?last_event_id=) sends only what changed since, without the initial snapshots. " +
				"A client that falls behind is disconnected and resumes the same way.",
			Action: rbac.EventsStream,
			Params: []Param{
				{Name: "worker_ids", In: "query", Description: "Only these workers (comma-separated ids, at most 100).", Schema: map[string]any{"type": "string", "maxLength": dashboardQueryLimit}},
				{Name: "types", In: "query", Description: "Only these event types (comma-separated): " + strings.Join(application.DashboardTypes, ", ") + ".", Schema: map[string]any{"type": "string", "maxLength": 200}},
				{Name: "last_event_id", In: "query", Description: "Resume after this id, for clients that cannot send Last-Event-ID.", Schema: map[string]any{"type": "string", "maxLength": 128}},
				resume,
			},
			Errors:    []int{http.StatusServiceUnavailable},
			Responses: sse("The event stream."),
			handler:   s.dashboardStream,
		},
		{
			Method: http.MethodGet, Path: "/api/events/domain", OperationID: "streamDomainEvents", Tag: "events",
			Summary: "Domain event stream for integrators (server-sent events)",
			Description: "The domain events themselves in log order. Each frame: `id` = the event's global position, `event` = its versioned type, " +
				"`data` = {id, position, type, stream, revision, data, actor, correlation_id, causation_id, command, occurred_at, recorded_at}; licence tokens and lab YAML are redacted. " +
				"Last-Event-ID (or ?from=) replays from the durable log after that position and then goes live, with no gap and no duplicate across the switch. " +
				"`heartbeat` frames carry the position up to which the log was examined, so a filtered stream resumes without rescanning. " +
				"A client that stops reading is disconnected and resumes by id.",
			Action: rbac.EventsDomain,
			Params: []Param{
				{Name: "from", In: "query", Description: "Start after this global position (exclusive); absent: the start of the log.", Schema: map[string]any{"type": "string", "maxLength": 128}},
				{Name: "types", In: "query", Description: "Only event types starting with one of these prefixes (comma-separated, at most 20), such as worker.stop,worker.lab_.", Schema: map[string]any{"type": "string", "maxLength": domainTypesLimit}},
				{Name: "worker_id", In: "query", Description: "Only this worker's lifecycle and telemetry events.", Schema: uuidSchema},
				resume,
			},
			Errors:    []int{http.StatusServiceUnavailable},
			Responses: sse("The event stream."),
			handler:   s.domainStream,
		},
	}
}

// mimeEventStream is the media type of server-sent events.
const mimeEventStream = "text/event-stream"
