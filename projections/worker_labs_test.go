package projections

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

func TestWorkerLabsKeepsTheNewestListOfEachWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := NewWorkerLabs(application.EventRegistry())
	w1, w2 := newUUID(), newUUID()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	lab := func(id, state string) worker.Lab {
		return worker.Lab{ID: id, Title: "T " + id, State: state, NodeCount: 2}
	}
	e.appendTelemetry(t, w1, t0, worker.LabsObserved{Labs: []worker.Lab{lab("a", "STARTED")}})
	e.appendTelemetry(t, w1, t0, worker.MetricsSampled{}) // not a list
	newest := e.appendTelemetry(t, w1, t0.Add(time.Minute), worker.LabsObserved{Labs: []worker.Lab{lab("a", "STOPPED"), lab("b", "STARTED")}})
	last := e.appendTelemetry(t, w2, t0, worker.LabsObserved{Labs: []worker.Lab{}})

	r := start(t, NewRunner(e.store, e.pool, p, e.runnerOptions()).Run)
	waitFor(t, func() bool { return !e.checkpoint(t, p.Name()).Less(last.Position) }, func() string { return "worker_labs behind" })
	r.stop(t)

	reader := NewLabsReader(e.pool)
	got, found, err := reader.WorkerLabs(context.Background(), w1)
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, 2, got.Count)
	require.Equal(t, "STOPPED", got.Labs[0].State)
	require.Equal(t, t0.Add(time.Minute), got.ObservedAt)
	require.Equal(t, newest.Position.String(), got.Position)
	got, found, err = reader.WorkerLabs(context.Background(), w2)
	require.NoError(t, err)
	require.True(t, found)
	require.Zero(t, got.Count)
	require.NotNil(t, got.Labs)
	_, found, err = reader.WorkerLabs(context.Background(), newUUID())
	require.NoError(t, err)
	require.False(t, found)

	// An older list applied again (a replay) does not replace a newer one.
	all, _, err := e.store.ReadAll(context.Background(), eventstore.Start, 1000, p.Filter())
	require.NoError(t, err)
	require.Len(t, all, 3)
	tx, err := e.pool.Begin(context.Background())
	require.NoError(t, err)
	changed, err := p.Apply(context.Background(), tx, liveTables(p), all[:1])
	require.NoError(t, err)
	require.Empty(t, changed)
	require.NoError(t, tx.Commit(context.Background()))
	got, _, err = reader.WorkerLabs(context.Background(), w1)
	require.NoError(t, err)
	require.Equal(t, 2, got.Count)

	// A rebuild gives the same rows.
	_, err = Rebuild(context.Background(), e.store, e.pool, p, RebuildOptions{Logger: e.log})
	require.NoError(t, err)
	again, _, err := reader.WorkerLabs(context.Background(), w1)
	require.NoError(t, err)
	require.Equal(t, got, again)
}
