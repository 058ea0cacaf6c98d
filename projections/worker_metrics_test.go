package projections

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// appendTelemetry appends one telemetry event of worker id that occurred at
// at, as the application does.
func (e *env) appendTelemetry(tb testing.TB, id string, at time.Time, ev domain.Event) eventstore.AppendResult {
	tb.Helper()
	typ, data, err := application.EventRegistry().Encode(ev)
	require.NoError(tb, err)
	meta, err := json.Marshal(application.Metadata{Actor: application.Actor{Type: "system", Subject: "system:test"}, OccurredAt: at})
	require.NoError(tb, err)
	res, err := e.store.Append(context.Background(), worker.TelemetryStream(id), eventstore.Any,
		eventstore.EventData{ID: newUUID(), Type: typ, Data: data, Metadata: meta})
	require.NoError(tb, err)
	return res
}

func f64(v float64) *float64 { return &v }

type metricsRow struct {
	at       time.Time
	cpu      *float64
	sys      *string
	running  *int32
	position int64
}

func metricsRows(tb testing.TB, e *env, table string) []metricsRow {
	tb.Helper()
	rows, err := e.pool.Query(context.Background(), `SELECT sampled_at, cloudwatch_cpu, ec2_system_status, nodes_running, position_commit FROM `+
		pgx.Identifier{table}.Sanitize()+` ORDER BY position_commit`)
	require.NoError(tb, err)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (metricsRow, error) {
		var m metricsRow
		err := r.Scan(&m.at, &m.cpu, &m.sys, &m.running, &m.position)
		return m, err
	})
	require.NoError(tb, err)
	return out
}

func TestWorkerMetricsProjectsSamplesOnceAndServesSeries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	registry := application.EventRegistry()
	p := NewWorkerMetrics(registry)
	w1, w2 := newUUID(), newUUID()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	nodes := 4
	for i := range 6 {
		e.appendTelemetry(t, w1, t0.Add(time.Duration(i)*time.Minute), worker.MetricsSampled{
			EC2SystemStatus: "ok", CloudWatchCPU: f64(float64(10 * i)), NodesRunning: &nodes})
	}
	e.appendTelemetry(t, w2, t0, worker.MetricsSampled{CMLCPU: f64(50)})
	e.appendTelemetry(t, w1, t0, worker.LabsObserved{Labs: []worker.Lab{{ID: "l"}}}) // not a sample
	last := e.appendTelemetry(t, w2, t0.Add(time.Minute), worker.MetricsSampled{})

	r := start(t, NewRunner(e.store, e.pool, p, e.runnerOptions()).Run)
	waitFor(t, func() bool { return !e.checkpoint(t, p.Name()).Less(last.Position) }, func() string { return "worker_metrics behind" })
	r.stop(t)
	rows := metricsRows(t, e, "worker_metrics")
	require.Len(t, rows, 8)
	require.Equal(t, t0, rows[0].at.UTC())
	require.Equal(t, "ok", *rows[0].sys)
	require.Equal(t, int32(4), *rows[0].running)

	// Applying the whole log again changes nothing.
	all, _, err := e.store.ReadAll(context.Background(), eventstore.Start, 1000, p.Filter())
	require.NoError(t, err)
	tx, err := e.pool.Begin(context.Background())
	require.NoError(t, err)
	_, err = p.Apply(context.Background(), tx, liveTables(p), all)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(context.Background()))
	require.Equal(t, rows, metricsRows(t, e, "worker_metrics"))

	// Series: averages per step, last status, null when unmeasured.
	reader := NewMetricsReader(e.pool)
	series, err := reader.MetricsSeries(context.Background(), w1, t0, t0.Add(6*time.Minute), 3*time.Minute)
	require.NoError(t, err)
	require.Len(t, series, 2)
	require.Equal(t, t0, series[0].At)
	require.Equal(t, 3, series[0].Samples)
	require.InDelta(t, 10, *series[0].CloudWatchCPU, 1e-9)
	require.InDelta(t, 40, *series[1].CloudWatchCPU, 1e-9)
	require.Nil(t, series[0].CMLCPU)
	empty, err := reader.MetricsSeries(context.Background(), w2, t0.Add(time.Hour), t0.Add(2*time.Hour), time.Minute)
	require.NoError(t, err)
	require.Empty(t, empty)
	_, err = reader.MetricsSeries(context.Background(), w2, t0, t0.Add(time.Hour), 0)
	require.Error(t, err)

	// A rebuild gives the same table.
	res, err := Rebuild(context.Background(), e.store, e.pool, p, RebuildOptions{Logger: e.log})
	require.NoError(t, err)
	require.EqualValues(t, 8, res.Events)
	require.Equal(t, rows, metricsRows(t, e, "worker_metrics"))

	// Retention.
	n, err := PruneWorkerMetrics(context.Background(), e.pool, t0.Add(3*time.Minute))
	require.NoError(t, err)
	require.EqualValues(t, 5, n, "three samples of w1 and two of w2 before t0+3m")
	n, err = MetricsPruner{Pool: e.pool}.Prune(context.Background(), t0.Add(time.Hour))
	require.NoError(t, err)
	require.EqualValues(t, 3, n)
}
