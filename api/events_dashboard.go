package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/sync/singleflight"

	"github.com/cmlcloud/cml-cloud-manager/api/stream"
	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

// WorkerMetricsEvent is the data of worker.metrics.
type WorkerMetricsEvent struct {
	WorkerID      string                     `json:"worker_id"`
	Position      string                     `json:"position" doc:"Log position of the sample."`
	LatestMetrics *application.MetricsSample `json:"latest_metrics"`
}

// WorkerLabsEvent is the data of worker.labs.
type WorkerLabsEvent struct {
	WorkerID string       `json:"worker_id"`
	Position string       `json:"position" doc:"Log position of the lab list."`
	Labs     []worker.Lab `json:"labs"`
}

// WorkerRemovedEvent is the data of worker.removed.
type WorkerRemovedEvent struct {
	WorkerID string `json:"worker_id"`
	Position string `json:"position" doc:"Log position of the worker.removed event."`
}

// dashboardQueryLimit bounds the worker_ids query value (100 UUIDs and
// commas).
const dashboardQueryLimit = application.MaxStreamWorkerIDs * 37

// dashboardStream serves GET /api/events/stream.
func (s *Server) dashboardStream(c echo.Context) error {
	p := newParams(c)
	q := application.DashboardQuery{
		WorkerIDs: splitList(p.query("worker_ids", dashboardQueryLimit)),
		Types:     splitList(p.query("types", 200)),
	}
	var (
		marks  projections.Marks
		resume bool
	)
	if id, field := p.resumeID("last_event_id"); id != "" {
		m, err := projections.ParseMarks(id)
		if err != nil {
			p.problems.Add(field, "%q is not an id of this stream", truncateForMessage(id))
		}
		marks, resume = m, true
	}
	if err := p.err(); err != nil {
		return err
	}
	ctx := c.Request().Context()
	scope, err := s.app.DashboardStream(ctx, q)
	if err != nil {
		return err
	}
	st := s.streams
	if st == nil || st.stopping() {
		return streamsUnavailable()
	}
	wait, cancel := context.WithTimeout(ctx, catalogReadyWait)
	err = st.opts.Catalog.WaitReady(wait)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return NewProblem(http.StatusServiceUnavailable, CodeUnavailable, "The worker catalog is still loading; try again shortly.")
	}

	// Join before reading the baseline: a change applied after ChangedSince
	// is in the hub after the reader's position, and one applied before is
	// in the baseline (the marks then skip its copy in the hub).
	reader := st.hub.Join()
	defer reader.Leave()
	st.limitSendBuffer(ctx)
	// No buffer of its own: an idle subscriber holds no more than the
	// connection's.
	w, err := s.startStream(c, 0)
	if err != nil {
		return s.endStream(c, "dashboard", nil, err)
	}
	gauge := st.subscribers.WithLabelValues("dashboard")
	gauge.Inc()
	defer gauge.Dec()
	d := &dashboard{st: st, ctx: ctx, w: w, scope: scope, marks: marks}
	g := newGuard(ctx, st, w)
	defer g.stop()
	return s.endStream(c, "dashboard", g, d.run(g, reader, resume))
}

// dashboard is one subscriber of the dashboard stream.
type dashboard struct {
	st    *streams
	ctx   context.Context
	w     *stream.Writer
	scope application.DashboardScope
	// marks are the catalog positions up to which this subscriber has been
	// given every change (or skipped it by its filters): the frames' id.
	marks projections.Marks
}

func (d *dashboard) run(g *guard, reader *stream.Reader[projections.CatalogChange], resume bool) error {
	if err := d.catchUp(!resume); err != nil {
		return err
	}
	if err := d.w.Flush(); err != nil {
		return err
	}
	var batch []projections.CatalogChange
	for {
		select {
		case <-reader.Wait():
			var err error
			if batch, err = reader.Read(batch[:0]); err != nil {
				return err
			}
			for _, ch := range batch {
				if err := d.handle(ch); err != nil {
					return err
				}
			}
			clear(batch)
			if err := d.w.Flush(); err != nil {
				return err
			}
		case <-g.heartbeat.C:
			if err := g.beat(d.marks.String()); err != nil {
				return err
			}
		case <-g.checkC():
			if done, err := g.checkSession(); done || err != nil {
				return err
			}
		case <-d.st.shutdown:
			return g.shutdown()
		case <-d.ctx.Done():
			return nil
		}
	}
}

// catchUp sends what changed since the marks. initial (a subscriber
// without an id) sends one worker.snapshot per worker that is still managed
// and no other kind: the snapshots carry the newest metrics and the labs
// count, and the marks still advance past every kind.
func (d *dashboard) catchUp(initial bool) error {
	for _, ch := range d.st.opts.Catalog.ChangedSince(d.marks) {
		if initial && ch.Kind != projections.ChangeSnapshot {
			d.marks.Advance(ch)
			continue
		}
		if err := d.send(ch); err != nil {
			return err
		}
	}
	return nil
}

// handle processes one change of the hub.
func (d *dashboard) handle(ch projections.CatalogChange) error {
	if ch.Kind == projections.ChangeReset {
		// The catalog reloaded, or the hub lost changes: catch up.
		return d.catchUp(false)
	}
	if d.marks.Handled(ch) {
		return nil
	}
	return d.send(ch)
}

// send writes one change when the subscriber's scope allows it, and
// advances the marks either way.
func (d *dashboard) send(ch projections.CatalogChange) error {
	eventType := dashboardType(ch.Kind)
	if eventType == "" {
		return nil
	}
	if !d.scope.Allows(eventType, ch.WorkerID) {
		d.marks.Advance(ch)
		return nil
	}
	data, ok, err := d.st.frames.data(d.ctx, ch)
	if err != nil {
		return err
	}
	d.marks.Advance(ch)
	if !ok {
		// The lab list is already newer than this change: its own change
		// follows, and is sent then, once.
		return nil
	}
	return d.w.Event(d.marks.String(), eventType, data)
}

// dashboardType is the event type of a kind of catalog change.
func dashboardType(k projections.ChangeKind) string {
	switch k {
	case projections.ChangeSnapshot:
		return application.DashboardSnapshot
	case projections.ChangeMetrics:
		return application.DashboardMetrics
	case projections.ChangeLabs:
		return application.DashboardLabs
	case projections.ChangeRemoved:
		return application.DashboardRemoved
	}
	return ""
}

// frames encodes the data of dashboard events once for all subscribers: a
// snapshot is the catalog entry's own JSON; metrics and removals are
// encoded once per change; a lab list is read once per change from the
// worker_labs read model (the catalog keeps only the count).
type frames struct {
	labs   application.LabsReadModel
	flight singleflight.Group

	// mu guards the caches; every subscriber reads them for every change.
	mu      sync.RWMutex
	encoded map[frameKey][]byte
	labsAt  map[string]labsFrame // the newest list read, per worker
}

type frameKey struct {
	kind projections.ChangeKind
	id   string
	pos  eventstore.Position
}

type labsFrame struct {
	pos  eventstore.Position
	data []byte
}

// maxCachedFrames bounds each cache; a full cache is emptied (a change's
// frame is needed only while subscribers catch up with it).
const maxCachedFrames = 8192

// labsReadTimeout bounds a read of a lab list, which subscribers share (so
// it does not depend on the request of the one that started it).
const labsReadTimeout = 10 * time.Second

func newFrames(labs application.LabsReadModel) *frames {
	return &frames{labs: labs, encoded: map[frameKey][]byte{}, labsAt: map[string]labsFrame{}}
}

// data returns the event data of a change. ok is false for a lab list that
// the read model already holds in a newer version (nothing is sent for it).
func (f *frames) data(ctx context.Context, ch projections.CatalogChange) (data []byte, ok bool, err error) {
	switch ch.Kind {
	case projections.ChangeSnapshot:
		return ch.Entry.JSON(), true, nil
	case projections.ChangeLabs:
		return f.labsData(ctx, ch.WorkerID, ch.Position)
	}
	key := frameKey{ch.Kind, ch.WorkerID, ch.Position}
	f.mu.RLock()
	data, ok = f.encoded[key]
	f.mu.RUnlock()
	if ok {
		return data, true, nil
	}
	if ch.Kind == projections.ChangeMetrics {
		data = mustJSON(WorkerMetricsEvent{WorkerID: ch.WorkerID, Position: ch.Position.String(), LatestMetrics: ch.Entry.View.LatestMetrics})
	} else {
		data = mustJSON(WorkerRemovedEvent{WorkerID: ch.WorkerID, Position: ch.Position.String()})
	}
	f.mu.Lock()
	if len(f.encoded) >= maxCachedFrames {
		clear(f.encoded)
	}
	f.encoded[key] = data
	f.mu.Unlock()
	return data, true, nil
}

// labsData returns the worker.labs data for the worker's list at pos.
func (f *frames) labsData(ctx context.Context, id string, pos eventstore.Position) ([]byte, bool, error) {
	f.mu.RLock()
	lf, ok := f.labsAt[id]
	f.mu.RUnlock()
	if !ok || lf.pos.Less(pos) {
		v, err, _ := f.flight.Do(id, func() (any, error) {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), labsReadTimeout)
			defer cancel()
			return f.loadLabs(rctx, id)
		})
		if err != nil {
			return nil, false, err
		}
		lf = v.(labsFrame)
	}
	switch {
	case pos.Less(lf.pos):
		return nil, false, nil
	case lf.pos.Less(pos):
		// The read model cannot be behind the catalog, which read it after
		// the change was committed: a flight that started earlier answered.
		// Read again.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), labsReadTimeout)
		defer cancel()
		var err error
		if lf, err = f.loadLabs(rctx, id); err != nil {
			return nil, false, err
		}
		if pos.Less(lf.pos) {
			return nil, false, nil
		}
	}
	return lf.data, true, nil
}

func (f *frames) loadLabs(ctx context.Context, id string) (labsFrame, error) {
	labs, _, err := f.labs.WorkerLabs(ctx, id)
	if err != nil {
		return labsFrame{}, fmt.Errorf("read the labs of worker %s: %w", id, err)
	}
	var pos eventstore.Position
	if labs.Position != "" {
		if pos, err = eventstore.ParsePosition(labs.Position); err != nil {
			return labsFrame{}, fmt.Errorf("labs of worker %s: %w", id, err)
		}
	}
	if labs.Labs == nil {
		labs.Labs = []worker.Lab{}
	}
	lf := labsFrame{pos: pos, data: mustJSON(WorkerLabsEvent{WorkerID: id, Position: labs.Position, Labs: labs.Labs})}
	f.mu.Lock()
	if len(f.labsAt) >= maxCachedFrames {
		clear(f.labsAt)
	}
	if cur, ok := f.labsAt[id]; !ok || cur.pos.Less(pos) {
		f.labsAt[id] = lf
	}
	f.mu.Unlock()
	return lf, nil
}

// mustJSON encodes the data of an event whose types always encode.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("api: encode %T: %v", v, err))
	}
	return b
}
