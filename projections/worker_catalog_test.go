package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// catalogEnv runs the real worker read models and a catalog over them.
type catalogEnv struct {
	*env
	catalog *WorkerCatalog
	reg     *domain.Registry
}

func newCatalogEnv(t *testing.T) *catalogEnv {
	t.Helper()
	e := newEnv(t)
	reg := application.EventRegistry()
	m := NewManager(e.store, e.pool, []Projection{NewWorkerView(reg), NewWorkerMetrics(reg), NewWorkerLabs(reg)},
		RunnerOptions{Logger: e.log, LockRetry: 50 * time.Millisecond})
	start(t, m.Run)
	c := NewWorkerCatalog(e.pool, CatalogOptions{Logger: e.log, Retry: 50 * time.Millisecond})
	start(t, c.Run)
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	require.NoError(t, c.WaitReady(ctx))
	return &catalogEnv{env: e, catalog: c, reg: reg}
}

// appendWorker appends events to a worker's stream (lifecycle or
// telemetry) with metadata, and returns the position of the last one.
func (ce *catalogEnv) appendWorker(t *testing.T, stream string, events ...domain.Event) eventstore.Position {
	t.Helper()
	data := make([]eventstore.EventData, len(events))
	for i, ev := range events {
		typ, body, err := ce.reg.Encode(ev)
		require.NoError(t, err)
		data[i] = eventstore.EventData{ID: newUUID(), Type: typ, Data: body,
			Metadata: fmt.Appendf(nil, `{"actor":{"type":"user","subject":"t"},"occurred_at":%q}`, time.Now().UTC().Format(time.RFC3339Nano))}
	}
	res, err := ce.store.Append(t.Context(), stream, eventstore.Any, data...)
	require.NoError(t, err)
	return res.Position
}

func (ce *catalogEnv) waitFor(t *testing.T, id string, cond func(*CatalogEntry) bool) *CatalogEntry {
	t.Helper()
	var last *CatalogEntry
	waitFor(t, func() bool {
		e, ok := ce.catalog.Entry(id)
		last = e
		return ok && cond(e)
	}, func() string { return fmt.Sprintf("catalog entry of %s: %+v", id, last) })
	return last
}

func imported(id, instance string) worker.Imported {
	return worker.Imported{WorkerID: id, Name: "w-" + id[:8], Region: "us-east-1", InstanceID: instance,
		InstanceType: "m5zn.metal", EC2State: worker.EC2Running, IdleDetectionEnabled: true}
}

func TestCatalogFollowsTheReadModels(t *testing.T) {
	ce := newCatalogEnv(t)
	changes, stop := ce.catalog.Subscribe(64)
	defer stop()

	id := newUUID()
	p1 := ce.appendWorker(t, worker.Stream(id), imported(id, "i-0123456789abcdef0"))
	e := ce.waitFor(t, id, func(e *CatalogEntry) bool { return e.Lifecycle == p1 })
	require.Equal(t, worker.StatusRunning, e.View.Status)
	require.Equal(t, int64(0), e.View.Revision)

	// The entry's JSON is the view's JSON, the same bytes the API serves.
	var decoded application.WorkerView
	require.NoError(t, json.Unmarshal(e.JSON(), &decoded))
	require.Equal(t, e.View.State.Name, decoded.State.Name)
	plain, err := json.Marshal(e.View.WithJSON(nil))
	require.NoError(t, err)
	require.JSONEq(t, string(plain), string(e.JSON()))

	cpu := 42.0
	p2 := ce.appendWorker(t, worker.TelemetryStream(id), worker.MetricsSampled{CloudWatchCPU: &cpu})
	p3 := ce.appendWorker(t, worker.TelemetryStream(id), worker.LabsObserved{Labs: []worker.Lab{{ID: "lab1", Title: "L", State: "STARTED"}}})
	p4 := ce.appendWorker(t, worker.Stream(id), worker.Removed{})
	e = ce.waitFor(t, id, func(e *CatalogEntry) bool { return e.Lifecycle == p4 && e.Labs == p3 })
	require.Equal(t, p2, e.Metrics)
	require.Equal(t, 42.0, *e.View.LatestMetrics.CloudWatchCPU)
	require.Equal(t, 1, *e.View.LabsCount)

	// Subscribers saw each kind of change with its position (the
	// projections commit independently, so kinds may interleave).
	got := map[ChangeKind]eventstore.Position{}
	deadline := time.After(waitTimeout)
	for len(got) < 4 {
		select {
		case c := <-changes:
			got[c.Kind] = c.Position
		case <-deadline:
			t.Fatalf("changes so far: %v", got)
		}
	}
	require.Equal(t, map[ChangeKind]eventstore.Position{ChangeSnapshot: p1, ChangeMetrics: p2, ChangeLabs: p3, ChangeRemoved: p4}, got)

	// Resuming from marks gives what changed since, the latest per kind.
	since := ce.catalog.ChangedSince(Marks{Lifecycle: p1, Metrics: p2})
	require.Len(t, since, 2)
	require.Equal(t, ChangeLabs, since[0].Kind)
	require.Equal(t, ChangeRemoved, since[1].Kind)
	head := ce.catalog.Head()
	require.Equal(t, Marks{Lifecycle: p4, Metrics: p2, Labs: p3}, head)
	require.Empty(t, ce.catalog.ChangedSince(head))
	parsed, err := ParseMarks(head.String())
	require.NoError(t, err)
	require.Equal(t, head, parsed)
}

func TestCatalogReaderMatchesTheDatabase(t *testing.T) {
	ce := newCatalogEnv(t)
	var last eventstore.Position
	ids := make([]string, 12)
	for i := range ids {
		ids[i] = newUUID()
		ev := imported(ids[i], fmt.Sprintf("i-0%016x", i+1))
		ev.Name = fmt.Sprintf("worker-%02d", 12-i)
		if i%3 == 0 {
			ev.Region = "us-west-2"
		}
		last = ce.appendWorker(t, worker.Stream(ids[i]), ev)
		if i%4 == 0 {
			last = ce.appendWorker(t, worker.Stream(ids[i]), worker.TerminationRequested{},
				worker.InstanceStateObserved{EC2State: worker.EC2Terminated})
		}
	}
	waitFor(t, func() bool { return ce.catalog.Head().Lifecycle == last }, func() string { return "catalog never caught up" })

	db := NewWorkerReader(ce.pool)
	cat := NewCatalogReader(ce.catalog, db)
	ctx := t.Context()
	filters := []application.WorkerFilter{
		{Limit: 100},
		{Limit: 5, Offset: 3},
		{Limit: 100, Offset: 50},
		{Region: "us-west-2", Limit: 100},
		{IncludeTerminated: true, Limit: 100},
		{Status: worker.StatusTerminated, Limit: 100},
		{Query: "WORKER-0", Limit: 100},
		{Query: ids[5], Limit: 100},
	}
	for _, f := range filters {
		want, wantTotal, err := db.ListWorkers(ctx, f)
		require.NoError(t, err)
		got, gotTotal, err := cat.ListWorkers(ctx, f)
		require.NoError(t, err)
		require.Equal(t, wantTotal, gotTotal, "%+v", f)
		require.Len(t, got, len(want), "%+v", f)
		for i := range want {
			wj, _ := json.Marshal(want[i])
			gj, _ := json.Marshal(got[i])
			require.JSONEq(t, string(wj), string(gj), "%+v item %d", f, i)
		}
	}
	for _, id := range []string{ids[1], ids[4]} {
		want, err := db.GetWorker(ctx, id)
		require.NoError(t, err)
		got, err := cat.GetWorker(ctx, id)
		require.NoError(t, err)
		wj, _ := json.Marshal(want)
		gj, _ := json.Marshal(got)
		require.JSONEq(t, string(wj), string(gj))
	}
	_, err := cat.GetWorker(ctx, newUUID())
	require.ErrorIs(t, err, domain.ErrNotFound)
	v, ok, err := cat.FindByInstance(ctx, "us-east-1", "i-00000000000000002")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, ids[1], v.ID)
	_, ok, err = cat.FindByInstance(ctx, "us-west-2", "i-00000000000000001") // terminated
	require.NoError(t, err)
	require.False(t, ok)
}

func TestCatalogDropsASlowSubscriberAndSurvivesALostConnection(t *testing.T) {
	ce := newCatalogEnv(t)
	slow, stopSlow := ce.catalog.Subscribe(1)
	defer stopSlow()

	id := newUUID()
	ce.appendWorker(t, worker.Stream(id), imported(id, "i-0aaaaaaaaaaaaaaa1"))
	var last eventstore.Position
	for i := range 3 {
		last = ce.appendWorker(t, worker.Stream(id), worker.TagsChanged{Tags: map[string]string{"n": fmt.Sprint(i)}})
		ce.waitFor(t, id, func(e *CatalogEntry) bool { return e.Lifecycle == last })
	}
	// The slow subscriber got one change and then its channel was closed.
	n := 0
	for range slow {
		n++
	}
	require.Equal(t, 1, n)

	// Kill the catalog's listening connection: it reconnects and reloads.
	_, err := ce.pool.Exec(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'`)
	require.NoError(t, err)
	p := ce.appendWorker(t, worker.Stream(id), worker.Removed{})
	e := ce.waitFor(t, id, func(e *CatalogEntry) bool { return e.Lifecycle == p })
	require.Equal(t, worker.StatusRemoved, e.View.Status)
}

// TestCatalogAnnouncesEachKindInPositionOrder: many workers change through
// several projections at once; every subscriber sees, per kind, positions
// that only grow, and a subscriber that resumes from its marks after any
// change gets exactly what it had not seen.
func TestCatalogAnnouncesEachKindInPositionOrder(t *testing.T) {
	ce := newCatalogEnv(t)
	changes, stop := ce.catalog.Subscribe(100000)
	defer stop()
	ids := make([]string, 20)
	for i := range ids {
		ids[i] = newUUID()
		ce.appendWorker(t, worker.Stream(ids[i]), imported(ids[i], fmt.Sprintf("i-0%016x", i+100)))
	}
	var last Marks
	for round := range 10 {
		for i, id := range ids {
			cpu := float64(round*10 + i%10)
			last.Metrics = ce.appendWorker(t, worker.TelemetryStream(id), worker.MetricsSampled{CloudWatchCPU: &cpu})
			if (i+round)%3 == 0 {
				last.Lifecycle = ce.appendWorker(t, worker.Stream(id), worker.TagsChanged{Tags: map[string]string{"r": fmt.Sprint(round)}})
			}
			if (i+round)%5 == 0 {
				last.Labs = ce.appendWorker(t, worker.TelemetryStream(id), worker.LabsObserved{Labs: []worker.Lab{{ID: fmt.Sprint(round), Title: "t", State: "STOPPED"}}})
			}
		}
	}
	waitFor(t, func() bool { return ce.catalog.Head() == last }, func() string { return fmt.Sprint(ce.catalog.Head(), " != ", last) })

	var seen Marks
	var history []CatalogChange
	for seen != last {
		select {
		case c, ok := <-changes:
			require.True(t, ok, "subscriber dropped")
			if c.Kind == ChangeReset {
				continue
			}
			require.False(t, seen.Handled(c), "%s change at %s after %s", c.Kind, c.Position, seen)
			seen.Advance(c)
			history = append(history, c)
		case <-time.After(waitTimeout):
			t.Fatalf("saw %s, want %s", seen, last)
		}
	}
	// Resuming after any prefix of the history yields the latest change of
	// each worker and kind not yet seen, and nothing already seen.
	for cut := 0; cut < len(history); cut += 7 {
		var m Marks
		for _, c := range history[:cut] {
			m.Advance(c)
		}
		for _, c := range ce.catalog.ChangedSince(m) {
			require.False(t, m.Handled(c))
		}
		latest := map[string]bool{}
		for _, c := range history[cut:] {
			latest[string(c.Kind)+c.WorkerID] = true
		}
		require.Len(t, ce.catalog.ChangedSince(m), len(latest), "cut %d", cut)
	}
}

func TestCatalogReaderEncodesPagesAndForgetsThemOnChange(t *testing.T) {
	ce := newCatalogEnv(t)
	id := newUUID()
	p := ce.appendWorker(t, worker.Stream(id), imported(id, "i-0bbbbbbbbbbbbbbb1"))
	ce.waitFor(t, id, func(e *CatalogEntry) bool { return e.Lifecycle == p })
	r := NewCatalogReader(ce.catalog, NewWorkerReader(ce.pool))
	ctx := t.Context()
	f := application.WorkerFilter{Limit: 10}

	page, err := r.EncodedWorkerPage(ctx, f)
	require.NoError(t, err)
	items, total, err := r.ListWorkers(ctx, f)
	require.NoError(t, err)
	want, err := json.Marshal(struct {
		Items  []application.WorkerView `json:"items"`
		Total  int                      `json:"total"`
		Limit  int                      `json:"limit"`
		Offset int                      `json:"offset"`
	}{items, total, f.Limit, f.Offset})
	require.NoError(t, err)
	require.JSONEq(t, string(want), string(page))
	again, err := r.EncodedWorkerPage(ctx, f)
	require.NoError(t, err)
	require.Same(t, &page[0], &again[0], "an unchanged fleet is served from the cache")

	p = ce.appendWorker(t, worker.Stream(id), worker.TagsChanged{Tags: map[string]string{"team": "b"}})
	ce.waitFor(t, id, func(e *CatalogEntry) bool { return e.Lifecycle == p })
	fresh, err := r.EncodedWorkerPage(ctx, f)
	require.NoError(t, err)
	require.Contains(t, string(fresh), `"team":"b"`)
	require.NotContains(t, string(page), `"team":"b"`)
}
