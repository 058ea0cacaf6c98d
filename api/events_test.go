package api

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	sse "github.com/tmaxmax/go-sse"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

// streamConfig adjusts the event streams of a test env (zero values take
// the defaults).
type streamConfig struct {
	heartbeat    time.Duration
	sessionCheck time.Duration
	writeTimeout time.Duration
	backlog      int
	sessions     SessionChecker
}

// newTestStreams enables the event streams of an env (nil c: none), over
// a worker catalog of its own, as a separate instance of the service
// would run it: its own LISTEN connection to the shared database.
func newTestStreams(t testing.TB, c *streamConfig) *StreamOptions {
	if c == nil {
		return nil
	}
	return &StreamOptions{
		Catalog: startCatalog(t), Labs: projections.NewLabsReader(shared.pool), Sessions: c.sessions,
		Heartbeat: c.heartbeat, SessionCheck: c.sessionCheck, WriteTimeout: c.writeTimeout, Backlog: c.backlog,
	}
}

// startCatalog runs a worker catalog over the shared database until the
// test ends, and waits for its first load.
func startCatalog(t testing.TB) *projections.WorkerCatalog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := projections.NewWorkerCatalog(shared.pool, projections.CatalogOptions{Logger: slog.New(slog.DiscardHandler), Retry: 50 * time.Millisecond})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	require.NoError(t, c.WaitReady(wctx))
	return c
}

// newStreamEnv is an env with event streams.
func newStreamEnv(t testing.TB, c streamConfig) *env {
	t.Helper()
	return newEnv(t, envOptions{streams: &c})
}

// sseStream is one open event stream of a test: a goroutine parses it
// with go-sse into events.
type sseStream struct {
	res    *http.Response
	cancel context.CancelFunc
	events chan sse.Event
	done   chan struct{} // closed when the stream has ended
	err    error         // why it ended, once done is closed
}

// streamWait bounds every wait for an event.
const streamWait = 20 * time.Second

// openStream opens path as the named caller and requires a 200 event
// stream.
func (e *env) openStream(t testing.TB, path, as string, header http.Header) *sseStream {
	t.Helper()
	s, status, body := e.tryStream(t, path, as, header)
	require.Equal(t, http.StatusOK, status, "%s: %s", path, body)
	return s
}

// tryStream opens path; when the answer is not 200 it returns the status
// and body and no stream.
func (e *env) tryStream(t testing.TB, path, as string, header http.Header) (*sseStream, int, []byte) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+path, nil)
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	if as != "" && as != "anonymous" {
		req.Header.Set(testUserHeader, as)
	}
	// No client timeout: it would cut the stream.
	res, err := (&http.Client{Transport: e.client.Transport}).Do(req)
	require.NoError(t, err)
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		cancel()
		return nil, res.StatusCode, body
	}
	require.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
	require.Equal(t, "no-store", res.Header.Get("Cache-Control"))
	require.Equal(t, "no", res.Header.Get("X-Accel-Buffering"))
	s := &sseStream{res: res, cancel: cancel, events: make(chan sse.Event, 1<<14), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for ev, err := range sse.Read(res.Body, &sse.ReadConfig{MaxEventSize: 4 << 20}) {
			if err != nil {
				s.err = err
				return
			}
			select {
			case s.events <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(s.close)
	return s, http.StatusOK, nil
}

// close ends the stream from the client's side.
func (s *sseStream) close() {
	s.cancel()
	s.res.Body.Close()
	<-s.done
}

// next returns the next event, heartbeats included.
func (s *sseStream) next(t testing.TB) sse.Event {
	t.Helper()
	select {
	case ev := <-s.events:
		return ev
	case <-s.done:
		select {
		case ev := <-s.events:
			return ev
		default:
		}
		t.Fatalf("the stream ended: %v", s.err)
	case <-time.After(streamWait):
		t.Fatalf("no event within %s", streamWait)
	}
	return sse.Event{}
}

// data returns the next event that is not a heartbeat.
func (s *sseStream) data(t testing.TB) sse.Event {
	t.Helper()
	for {
		if ev := s.next(t); ev.Type != EventHeartbeat {
			return ev
		}
	}
}

// ended waits until the server has ended the stream and returns the events
// that came before the end.
func (s *sseStream) ended(t testing.TB) []sse.Event {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(streamWait):
		t.Fatalf("the stream did not end within %s", streamWait)
	}
	var out []sse.Event
	for {
		select {
		case ev := <-s.events:
			out = append(out, ev)
		default:
			return out
		}
	}
}

// workerOf decodes the worker id of a dashboard event.
func workerOf(t testing.TB, ev sse.Event) string {
	t.Helper()
	var v struct {
		ID       string `json:"id"`
		WorkerID string `json:"worker_id"`
	}
	require.NoError(t, json.Unmarshal([]byte(ev.Data), &v), "%s: %s", ev.Type, ev.Data)
	if ev.Type == application.DashboardSnapshot {
		return v.ID
	}
	return v.WorkerID
}

// marksOf parses an event's id as dashboard marks.
func marksOf(t testing.TB, ev sse.Event) projections.Marks {
	t.Helper()
	m, err := projections.ParseMarks(ev.LastEventID)
	require.NoError(t, err, "id %q", ev.LastEventID)
	return m
}

// notBefore reports whether every position of b is at or after a's.
func notBefore(a, b projections.Marks) bool {
	return !b.Lifecycle.Less(a.Lifecycle) && !b.Metrics.Less(a.Metrics) && !b.Labs.Less(a.Labs)
}

func (e *env) telemetryOf() *application.Telemetry {
	return application.NewTelemetry(e.app, projections.NewMetricsReader(shared.pool), projections.NewLabsReader(shared.pool))
}

var systemCtx = rbac.WithPrincipal(context.Background(), rbac.System("stream-test"))

func ptr[T any](v T) *T { return &v }

// TestDashboardStream follows two workers through every kind of change: the
// initial snapshots go to the connecting client only, then snapshots,
// metrics, labs and the removal arrive in order, each with an id that only
// grows.
func TestDashboardStream(t *testing.T) {
	t.Parallel()
	e := newStreamEnv(t, streamConfig{heartbeat: time.Hour})
	w1 := e.importWorker(t, "dash-1", worker.EC2Running)
	w2 := e.importWorker(t, "dash-2", worker.EC2Running)
	ids := w1 + "," + w2

	a := e.openStream(t, "/api/events/stream?worker_ids="+ids, "user", nil)
	seen := map[string]int{}
	var last projections.Marks
	for range 2 {
		ev := a.data(t)
		require.Equal(t, application.DashboardSnapshot, ev.Type)
		var v application.WorkerView
		require.NoError(t, json.Unmarshal([]byte(ev.Data), &v))
		require.Contains(t, []string{"dash-1", "dash-2"}, v.Name)
		require.Equal(t, worker.StatusRunning, v.Status)
		seen[v.ID]++
		m := marksOf(t, ev)
		require.True(t, notBefore(last, m))
		last = m
	}
	require.Equal(t, map[string]int{w1: 1, w2: 1}, seen)

	// Another client connecting gets its own snapshots (of the whole
	// fleet); the first gets none of them (upstream broadcast every new
	// client's snapshots to all): its next event is the next change.
	b := e.openStream(t, "/api/events/stream", "auditor", nil)
	for got := map[string]bool{}; !got[w1] || !got[w2]; {
		if ev := b.data(t); ev.Type == application.DashboardSnapshot {
			got[workerOf(t, ev)] = true
		}
	}

	ctx := ctxAs("admin")
	_, err := e.app.ReplaceWorkerTags(ctx, w2, map[string]string{"team": "blue"})
	require.NoError(t, err)
	ev := a.data(t)
	require.Equal(t, application.DashboardSnapshot, ev.Type)
	var v application.WorkerView
	require.NoError(t, json.Unmarshal([]byte(ev.Data), &v))
	require.Equal(t, w2, v.ID)
	require.Equal(t, map[string]string{"team": "blue"}, v.Tags)
	m := marksOf(t, ev)
	require.True(t, last.Lifecycle.Less(m.Lifecycle), "the id moves on: %s then %s", last, m)
	last = m

	tel := e.telemetryOf()
	_, err = tel.RecordMetrics(systemCtx, w1, worker.MetricsSampled{CMLCPU: ptr(42.5), NodesRunning: ptr(3)})
	require.NoError(t, err)
	ev = a.data(t)
	require.Equal(t, application.DashboardMetrics, ev.Type)
	var mv WorkerMetricsEvent
	require.NoError(t, json.Unmarshal([]byte(ev.Data), &mv))
	require.Equal(t, w1, mv.WorkerID)
	require.NotNil(t, mv.LatestMetrics)
	require.Equal(t, 42.5, *mv.LatestMetrics.CMLCPU)
	m = marksOf(t, ev)
	require.True(t, notBefore(last, m))
	require.Equal(t, mv.Position, m.Metrics.String())
	last = m

	labs := []worker.Lab{{ID: "lab-1", Title: "ospf", State: "STARTED", NodeCount: 4, LinkCount: 3}}
	_, err = tel.ObserveLabs(systemCtx, w2, labs)
	require.NoError(t, err)
	ev = a.data(t)
	require.Equal(t, application.DashboardLabs, ev.Type)
	var lv WorkerLabsEvent
	require.NoError(t, json.Unmarshal([]byte(ev.Data), &lv))
	require.Equal(t, w2, lv.WorkerID)
	require.Equal(t, labs, lv.Labs)
	m = marksOf(t, ev)
	require.True(t, notBefore(last, m))
	require.Equal(t, lv.Position, m.Labs.String())
	last = m

	_, err = e.app.RemoveWorker(ctx, w1)
	require.NoError(t, err)
	ev = a.data(t)
	require.Equal(t, application.DashboardRemoved, ev.Type)
	require.Equal(t, w1, workerOf(t, ev))
	require.True(t, notBefore(last, marksOf(t, ev)))

	// A client connecting now gets no snapshot of the removed worker.
	c := e.openStream(t, "/api/events/stream?worker_ids="+ids, "integrator", nil)
	ev = c.data(t)
	require.Equal(t, application.DashboardSnapshot, ev.Type)
	require.Equal(t, w2, workerOf(t, ev))
	_, err = e.app.ReplaceWorkerTags(ctx, w2, map[string]string{"team": "red"})
	require.NoError(t, err)
	ev = c.data(t)
	require.Equal(t, w2, workerOf(t, ev))
	require.Contains(t, ev.Data, `"red"`)
}

// TestDashboardStreamResumes reconnects with the last id: only what changed
// since arrives, not the initial snapshots again.
func TestDashboardStreamResumes(t *testing.T) {
	t.Parallel()
	e := newStreamEnv(t, streamConfig{heartbeat: time.Hour})
	w1 := e.importWorker(t, "resume-1", worker.EC2Running)
	w2 := e.importWorker(t, "resume-2", worker.EC2Running)
	w3 := e.importWorker(t, "resume-3", worker.EC2Running)
	path := "/api/events/stream?worker_ids=" + w1 + "," + w2 + "," + w3

	s := e.openStream(t, path, "user", nil)
	var lastID string
	for range 3 {
		ev := s.data(t)
		require.Equal(t, application.DashboardSnapshot, ev.Type)
		lastID = ev.LastEventID
	}
	s.close()

	// While disconnected: w1's tags change, w2 gets a metrics sample; w3
	// does not change.
	ctx := ctxAs("manager")
	tags, err := e.app.ReplaceWorkerTags(ctx, w1, map[string]string{"while": "away"})
	require.NoError(t, err)
	sample, err := e.telemetryOf().RecordMetrics(systemCtx, w2, worker.MetricsSampled{CloudWatchCPU: ptr(7.0)})
	require.NoError(t, err)
	waitProjected(t, "worker_view", tags.Position)
	waitProjected(t, "worker_metrics", sample.Position)

	// Each reconnection resumes from the same id, so it also gets the
	// markers of the ones before it.
	markers := map[string]string{}
	for _, resume := range []struct {
		name   string
		path   string
		header http.Header
	}{
		{"Header", path, http.Header{"Last-Event-ID": {lastID}}},
		{"Query", path + "&last_event_id=" + lastID, nil},
	} {
		t.Run(resume.name, func(t *testing.T) {
			r := e.openStream(t, resume.path, "user", resume.header)
			want := map[string]string{w1: application.DashboardSnapshot, w2: application.DashboardMetrics}
			if len(markers) > 0 {
				want[w3] = application.DashboardSnapshot
			}
			got := map[string]string{}
			for len(got) < len(want) {
				ev := r.data(t)
				_, dup := got[workerOf(t, ev)]
				require.False(t, dup, "%s twice", ev.Data)
				got[workerOf(t, ev)] = ev.Type
			}
			require.Equal(t, want, got)
			// Nothing else is pending: the next event is a later change.
			marker, err := e.app.ReplaceWorkerTags(ctx, w3, map[string]string{"marker": resume.name})
			require.NoError(t, err)
			ev := r.data(t)
			require.Equal(t, w3, workerOf(t, ev), "no snapshot of an unchanged worker on resume")
			require.Contains(t, ev.Data, resume.name)
			require.Equal(t, marker.Position, marksOf(t, ev).Lifecycle.String())
			markers[resume.name] = marker.Position
		})
	}

	t.Run("Types", func(t *testing.T) {
		r := e.openStream(t, path+"&types=worker.metrics", "user", http.Header{"Last-Event-ID": {lastID}})
		ev := r.data(t)
		require.Equal(t, application.DashboardMetrics, ev.Type)
		require.Equal(t, w2, workerOf(t, ev))
		_, err := e.app.ReplaceWorkerTags(ctx, w1, map[string]string{"skipped": "yes"})
		require.NoError(t, err)
		s2, err := e.telemetryOf().RecordMetrics(systemCtx, w3, worker.MetricsSampled{CloudWatchCPU: ptr(9.0)})
		require.NoError(t, err)
		ev = r.data(t)
		require.Equal(t, application.DashboardMetrics, ev.Type, "the snapshot is filtered out")
		require.Equal(t, s2.Position, marksOf(t, ev).Metrics.String())
	})
}

// TestDashboardStreamAcrossInstances changes a worker through one server
// instance and watches it arrive at a dashboard client of another: each
// instance has its own worker catalog, fed by the read models' NOTIFY.
func TestDashboardStreamAcrossInstances(t *testing.T) {
	t.Parallel()
	one := newStreamEnv(t, streamConfig{heartbeat: time.Hour})
	two := newStreamEnv(t, streamConfig{heartbeat: time.Hour})
	id := one.importWorker(t, "two-instances", worker.EC2Running)

	s := two.openStream(t, "/api/events/stream?worker_ids="+id, "user", nil)
	require.Equal(t, application.DashboardSnapshot, s.data(t).Type)
	res := one.do(t, request{method: http.MethodPut, path: "/api/workers/" + id + "/tags", as: "manager",
		body: map[string]any{"tags": map[string]string{"via": "instance-1"}}})
	require.Equal(t, http.StatusOK, res.status, "%s", res.body)
	ev := s.data(t)
	require.Equal(t, application.DashboardSnapshot, ev.Type)
	var v application.WorkerView
	require.NoError(t, json.Unmarshal([]byte(ev.Data), &v))
	require.Equal(t, map[string]string{"via": "instance-1"}, v.Tags)
}

// TestEventStreamsValidateAndRefuse: bad parameters are 400 problems, and
// the domain stream refuses every role but integrator and admin.
func TestEventStreamsValidateAndRefuse(t *testing.T) {
	t.Parallel()
	e := newStreamEnv(t, streamConfig{})
	for _, tc := range []struct {
		name, path, as string
		header         http.Header
		status         int
		code, field    string
	}{
		{"DashboardAnonymous", "/api/events/stream", "", nil, 401, CodeUnauthenticated, ""},
		{"DashboardNoRole", "/api/events/stream", "none", nil, 403, CodeForbidden, ""},
		{"DomainUser", "/api/events/domain", "user", nil, 403, CodeForbidden, ""},
		{"DomainManager", "/api/events/domain", "manager", nil, 403, CodeForbidden, ""},
		{"DomainAuditor", "/api/events/domain", "auditor", nil, 403, CodeForbidden, ""},
		{"DomainAnonymous", "/api/events/domain", "", nil, 401, CodeUnauthenticated, ""},
		{"BadWorkerIDs", "/api/events/stream?worker_ids=nope", "user", nil, 400, CodeInvalid, "worker_ids"},
		{"BadTypes", "/api/events/stream?types=worker.created", "user", nil, 400, CodeInvalid, "types"},
		{"BadMarks", "/api/events/stream", "user", http.Header{"Last-Event-ID": {"12"}}, 400, CodeInvalid, "Last-Event-ID"},
		{"BadMarksQuery", "/api/events/stream?last_event_id=x.y.z", "user", nil, 400, CodeInvalid, "last_event_id"},
		{"IDsDisagree", "/api/events/stream?last_event_id=1.1.1", "user", http.Header{"Last-Event-ID": {"2.2.2"}}, 400, CodeInvalid, "last_event_id"},
		{"BadFrom", "/api/events/domain?from=-1", "integrator", nil, 400, CodeInvalid, "from"},
		{"BadResume", "/api/events/domain", "admin", http.Header{"Last-Event-ID": {"1.2.3"}}, 400, CodeInvalid, "Last-Event-ID"},
		{"BadPrefix", "/api/events/domain?types=Worker", "integrator", nil, 400, CodeInvalid, "types"},
		{"BadWorker", "/api/events/domain?worker_id=1", "integrator", nil, 400, CodeInvalid, "worker_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := e.do(t, request{method: http.MethodGet, path: tc.path, as: tc.as, header: tc.header})
			res.problem(t, tc.status, tc.code)
			if tc.field != "" {
				require.Contains(t, string(res.body), `"field":"`+tc.field+`"`)
			}
		})
	}
	// Without streams the routes answer 503.
	plain := newEnv(t)
	res := plain.do(t, request{method: http.MethodGet, path: "/api/events/stream", as: "user"})
	res.problem(t, http.StatusServiceUnavailable, CodeUnavailable)
	res = plain.do(t, request{method: http.MethodGet, path: "/api/events/domain", as: "integrator"})
	res.problem(t, http.StatusServiceUnavailable, CodeUnavailable)
}

// TestEventStreamHeartbeats: heartbeats carry the stream's position as id.
func TestEventStreamHeartbeats(t *testing.T) {
	t.Parallel()
	e := newStreamEnv(t, streamConfig{heartbeat: 20 * time.Millisecond})
	id := e.importWorker(t, "heartbeat", worker.EC2Running)
	s := e.openStream(t, "/api/events/stream?worker_ids="+id, "user", nil)
	snap := s.data(t)
	require.Equal(t, application.DashboardSnapshot, snap.Type)
	hb := s.next(t)
	require.Equal(t, EventHeartbeat, hb.Type)
	// Changes of other workers, filtered out, still move the id on.
	require.True(t, notBefore(marksOf(t, snap), marksOf(t, hb)), "%s then %s", snap.LastEventID, hb.LastEventID)
	var beat HeartbeatEvent
	require.NoError(t, json.Unmarshal([]byte(hb.Data), &beat))
	require.WithinDuration(t, time.Now(), beat.Time, time.Minute)

	// The domain stream's heartbeat carries the position up to which the
	// log was examined, even when the filter matched nothing.
	d := e.openStream(t, "/api/events/domain?types=worker.no_such_type", "integrator", nil)
	for {
		ev := d.next(t)
		require.Equal(t, EventHeartbeat, ev.Type)
		if ev.LastEventID == "" {
			continue // the log was not examined yet
		}
		pos, err := eventstore.ParsePosition(ev.LastEventID)
		require.NoError(t, err)
		if !pos.Less(marksOf(t, snap).Lifecycle) {
			break
		}
	}
}

// TestEventStreamsShutdown stops a server gracefully: every stream gets
// system.shutdown and ends, so Shutdown does not wait for them.
func TestEventStreamsShutdown(t *testing.T) {
	t.Parallel()
	e := newStreamEnv(t, streamConfig{heartbeat: time.Hour})
	id := e.importWorker(t, "shutdown", worker.EC2Running)
	// Serve the env's server on a listener of its own, as serve does.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- e.server.Serve(l) }()
	live := &env{url: "http://" + l.Addr().String(), client: e.client}

	dash := live.openStream(t, "/api/events/stream?worker_ids="+id, "user", nil)
	require.Equal(t, application.DashboardSnapshot, dash.data(t).Type)
	dom := live.openStream(t, "/api/events/domain?worker_id="+id, "integrator", nil)
	require.Equal(t, "worker.imported.v1", dom.data(t).Type)

	ctx, cancel := context.WithTimeout(context.Background(), streamWait)
	defer cancel()
	require.NoError(t, e.server.Shutdown(ctx), "the streams ended by themselves")
	require.NoError(t, <-served)
	for _, s := range []*sseStream{dash, dom} {
		rest := s.ended(t)
		require.NotEmpty(t, rest)
		require.Equal(t, EventShutdown, rest[len(rest)-1].Type)
	}
	_, err = http.Get(live.url + "/healthz")
	require.Error(t, err, "the listener is closed")
}

// TestDomainStreamEnvelope reads one worker's events: log order, the
// envelope's fields, redaction of the licence token.
func TestDomainStreamEnvelope(t *testing.T) {
	t.Parallel()
	e := newStreamEnv(t, streamConfig{heartbeat: time.Hour})
	id := e.importWorker(t, "domain", worker.EC2Running)
	ctx := ctxAs("admin")
	_, err := e.app.RequestLicenseRegistration(ctx, id, "secret-licence-token-"+randomHex(8), false)
	require.NoError(t, err)
	stop := e.do(t, request{method: http.MethodPost, path: "/api/workers/" + id + "/stop", as: "admin",
		header: http.Header{"X-Request-Id": {"req-domain-stop"}}})
	require.Equal(t, http.StatusAccepted, stop.status, "%s", stop.body)

	s := e.openStream(t, "/api/events/domain?worker_id="+id, "integrator", nil)
	var got []application.DomainEvent
	for len(got) < 3 {
		ev := s.data(t)
		var d application.DomainEvent
		require.NoError(t, json.Unmarshal([]byte(ev.Data), &d))
		require.Equal(t, ev.Type, d.Type)
		require.Equal(t, ev.LastEventID, d.Position)
		require.NotContains(t, ev.Data, "secret-licence-token")
		require.NotContains(t, ev.Data, "sealed_token")
		got = append(got, d)
	}
	require.Equal(t, "worker.imported.v1", got[0].Type)
	require.Equal(t, "worker.license_registration_requested.v1", got[1].Type)
	require.Equal(t, "worker.stop_requested.v1", got[2].Type)
	for i, d := range got {
		require.Equal(t, worker.Stream(id), d.Stream)
		require.Equal(t, int64(i), d.Revision)
		require.NotEmpty(t, d.ID)
		require.Equal(t, "u-admin", d.Actor.Subject)
		require.NotEmpty(t, d.CorrelationID)
		require.False(t, d.OccurredAt.IsZero())
		require.Empty(t, d.DecodeError)
	}
	require.Equal(t, "req-domain-stop", got[2].CorrelationID)
	// From a position, by type prefix.
	r := e.openStream(t, "/api/events/domain?worker_id="+id+"&types=worker.stop,worker.nothing&from="+got[0].Position, "admin", nil)
	ev := r.data(t)
	require.Equal(t, "worker.stop_requested.v1", ev.Type)
	require.Equal(t, got[2].Position, ev.LastEventID)
}

// readFirstFrame reads an event stream's response up to the end of its
// first frame (a blank line), or until streamWait.
func readFirstFrame(t testing.TB, body io.Reader) string {
	t.Helper()
	type result struct {
		frame string
		err   error
	}
	done := make(chan result, 1)
	go func() {
		var b strings.Builder
		r := bufio.NewReader(body)
		for {
			line, err := r.ReadString('\n')
			b.WriteString(line)
			if err != nil {
				done <- result{b.String(), err}
				return
			}
			if line == "\n" && strings.TrimSpace(b.String()) != "" {
				done <- result{b.String(), nil}
				return
			}
		}
	}()
	select {
	case r := <-done:
		require.NoError(t, r.err, "frame so far: %q", r.frame)
		return r.frame
	case <-time.After(streamWait):
		t.Fatalf("no frame within %s", streamWait)
		return ""
	}
}

// doStream calls an event stream route for the RBAC matrix: an error
// answer is read whole; a 200 stream is read up to its first frame (which
// must be an SSE frame) and then closed.
func (e *env) doStream(t testing.TB, rq request) response {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, rq.method, e.url+rq.path, nil)
	require.NoError(t, err)
	for k, v := range rq.header {
		req.Header[k] = v
	}
	if rq.as != "" && rq.as != "anonymous" {
		req.Header.Set(testUserHeader, rq.as)
	}
	res, err := (&http.Client{Transport: e.client.Transport}).Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		body, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return response{status: res.StatusCode, header: res.Header, body: body}
	}
	require.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
	frame := readFirstFrame(t, res.Body)
	require.Regexp(t, `(?m)^(id|event|data): `, frame)
	return response{status: res.StatusCode, header: res.Header, body: []byte(frame)}
}

// streamOfWorker calls an event stream filtered on a fresh worker, whose
// snapshot or first event is the stream's first frame (the RBAC matrix).
func streamOfWorker(prefix string) func(*testing.T, *env) request {
	return func(t *testing.T, e *env) request {
		id := e.importWorker(t, "matrix-stream", worker.EC2Running)
		return request{method: http.MethodGet, path: prefix + id}
	}
}

// ExternalEnv is a test env for the package's external tests (package
// api_test, which may import api/auth): the shared database, and a server
// with the given authenticator and event streams.
type ExternalEnv struct {
	URL  string
	Pool *pgxpool.Pool
	e    *env
}

// NewExternalEnv builds an ExternalEnv. sessions re-checks stream callers'
// sessions every sessionCheck.
func NewExternalEnv(t *testing.T, auth Authenticator, sessions SessionChecker, sessionCheck time.Duration) *ExternalEnv {
	t.Helper()
	e := newEnv(t, envOptions{auth: auth, streams: &streamConfig{heartbeat: time.Hour, sessions: sessions, sessionCheck: sessionCheck}})
	return &ExternalEnv{URL: e.url, Pool: shared.pool, e: e}
}

// ImportWorker makes a running worker and waits until the read model shows
// it.
func (x *ExternalEnv) ImportWorker(t *testing.T, name string) string {
	t.Helper()
	return x.e.importWorker(t, name, worker.EC2Running)
}

// SharedPool is the package's test database.
func SharedPool() *pgxpool.Pool { return shared.pool }

// StreamEvents opens an event stream with client (which carries the
// caller's cookies) and returns its events, parsed with go-sse, until it
// ends; the stream is closed when the test ends.
func StreamEvents(t *testing.T, client *http.Client, url string) <-chan sse.Event {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	return StreamEventsRequest(t, client, req)
}

// StreamEventsRequest is StreamEvents for a prepared request.
func StreamEventsRequest(t *testing.T, client *http.Client, req *http.Request) <-chan sse.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(req.Context())
	res, err := client.Do(req.WithContext(ctx))
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode)
	out := make(chan sse.Event, 1024)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(out)
		for ev, err := range sse.Read(res.Body, &sse.ReadConfig{MaxEventSize: 4 << 20}) {
			if err != nil {
				return
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		res.Body.Close()
		wg.Wait()
	})
	return out
}
