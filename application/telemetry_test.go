package application_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

func telemetryOf(b *bundle) *application.Telemetry {
	return application.NewTelemetry(b.app, projections.NewMetricsReader(b.pool), projections.NewLabsReader(b.pool))
}

// importedWorker imports a running worker and waits until worker_view has
// it.
func importedWorker(t *testing.T, b *bundle, instanceID string) string {
	t.Helper()
	res, err := b.app.ImportWorker(adminCtx, application.ImportWorker{
		Region: "us-east-1", InstanceID: instanceID, State: worker.EC2Running, InstanceType: "m5zn.metal",
	})
	require.NoError(t, err)
	waitProjected(t, b, "worker_view", res.Position)
	return res.ID
}

func pct(v float64) *float64 { return &v }

func TestRecordMetricsAppendsSamplesToTheTelemetryStream(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tel := telemetryOf(b)
	id := importedWorker(t, b, "i-0"+hex16(t))
	nodes := 3
	ctx := application.WithCorrelationID(systemCtx, "job-7")
	var last application.Result
	for i, cpu := range []float64{10, 20, 30, 40} {
		if i > 0 {
			b.clock.Advance(time.Minute)
		}
		res, err := tel.RecordMetrics(ctx, id, worker.MetricsSampled{EC2SystemStatus: "ok", CloudWatchCPU: pct(cpu), NodesTotal: &nodes})
		require.NoError(t, err)
		require.True(t, res.Changed)
		require.Equal(t, []string{"worker.metrics_sampled.v1"}, res.Events)
		last = res
	}
	recs := readStream(t, b, worker.TelemetryStream(id))
	require.Len(t, recs, 4)
	m, err := application.ParseMetadata(recs[0].Metadata)
	require.NoError(t, err)
	require.Equal(t, "job-7", m.CorrelationID)
	require.Equal(t, "system", m.Actor.Type)
	require.Len(t, readStream(t, b, worker.Stream(id)), 1, "the lifecycle stream is untouched")

	_, err = tel.RecordMetrics(systemCtx, id, worker.MetricsSampled{CMLCPU: pct(120)})
	require.ErrorIs(t, err, domain.ErrInvalid)
	_, err = tel.RecordMetrics(systemCtx, "0190c6a0-0000-7000-8000-0000000000ff", worker.MetricsSampled{})
	require.ErrorIs(t, err, domain.ErrNotFound)

	// The series, downsampled to 2-minute steps from the first sample.
	waitProjected(t, b, "worker_metrics", last.Position)
	first := b.clock.Now().Add(-3 * time.Minute)
	series, err := tel.WorkerMetrics(adminCtx, id, application.MetricsQuery{From: first, To: first.Add(4 * time.Minute), Step: 2 * time.Minute})
	require.NoError(t, err)
	require.Equal(t, int64(120), series.StepSeconds)
	require.Len(t, series.Points, 2)
	require.Equal(t, 2, series.Points[0].Samples)
	require.InDelta(t, 15, *series.Points[0].CloudWatchCPU, 1e-9)
	require.InDelta(t, 35, *series.Points[1].CloudWatchCPU, 1e-9)
	require.Equal(t, "ok", series.Points[1].EC2SystemStatus)
	require.InDelta(t, 3, *series.Points[1].NodesTotal, 1e-9)
	require.Nil(t, series.Points[1].CMLCPU, "not measured stays null")

	// The worker view carries the newest sample.
	v, err := b.app.GetWorker(adminCtx, id)
	require.NoError(t, err)
	require.NotNil(t, v.LatestMetrics)
	require.InDelta(t, 40, *v.LatestMetrics.CloudWatchCPU, 1e-9)
	require.Nil(t, v.LabsCount)
}

func TestWorkerMetricsQueryDefaultsAndBounds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tel := telemetryOf(b)
	id := importedWorker(t, b, "i-0"+hex16(t))
	now := b.clock.Now()
	s, err := tel.WorkerMetrics(adminCtx, id, application.MetricsQuery{})
	require.NoError(t, err)
	require.Equal(t, now, s.To)
	require.Equal(t, now.Add(-application.DefaultMetricsRange), s.From)
	require.Equal(t, int64(60), s.StepSeconds, "6 h in at most 360 points")
	require.Empty(t, s.Points)
	require.NotNil(t, s.Points)

	for name, q := range map[string]application.MetricsQuery{
		"from after to":   {From: now, To: now.Add(-time.Hour)},
		"range too long":  {From: now.Add(-60 * 24 * time.Hour), To: now},
		"step too small":  {From: now.Add(-time.Hour), To: now, Step: time.Second},
		"too many points": {From: now.Add(-30 * 24 * time.Hour), To: now, Step: time.Minute},
		"fractional step": {From: now.Add(-time.Hour), To: now, Step: 90500 * time.Millisecond},
	} {
		_, err := tel.WorkerMetrics(adminCtx, id, q)
		require.ErrorIs(t, err, domain.ErrInvalid, name)
	}
	_, err = tel.WorkerMetrics(adminCtx, "0190c6a0-0000-7000-8000-0000000000fe", application.MetricsQuery{})
	require.ErrorIs(t, err, domain.ErrNotFound)
	_, err = tel.WorkerMetrics(adminCtx, "nope", application.MetricsQuery{})
	require.ErrorIs(t, err, domain.ErrInvalid)
}

func TestObserveLabsRecordsOnlyChanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tel := telemetryOf(b)
	id := importedWorker(t, b, "i-0"+hex16(t))

	labs, err := tel.WorkerLabs(adminCtx, id)
	require.NoError(t, err)
	require.Equal(t, 0, labs.Count)
	require.NotNil(t, labs.Labs)
	require.True(t, labs.ObservedAt.IsZero())

	list := []worker.Lab{
		{ID: "lab-b", Title: "B", State: "STARTED", NodeCount: 2},
		{ID: "lab-a", Title: "A", State: "STOPPED", NodeCount: 3},
	}
	res, err := tel.ObserveLabs(systemCtx, id, list)
	require.NoError(t, err)
	require.True(t, res.Changed)
	waitProjected(t, b, "worker_labs", res.Position)

	// The same list in another order changes nothing.
	again, err := tel.ObserveLabs(systemCtx, id, []worker.Lab{list[1], list[0]})
	require.NoError(t, err)
	require.False(t, again.Changed)

	got, err := tel.WorkerLabs(rbac.WithPrincipal(context.Background(), rbac.Principal{Subject: "aud", Roles: []rbac.Role{rbac.RoleAuditor}}), id)
	require.NoError(t, err)
	require.Equal(t, 2, got.Count)
	require.Equal(t, "lab-a", got.Labs[0].ID, "sorted by id")
	require.Equal(t, res.Position, got.Position)
	require.False(t, got.ObservedAt.IsZero())

	v, err := b.app.GetWorker(adminCtx, id)
	require.NoError(t, err)
	require.NotNil(t, v.LabsCount)
	require.Equal(t, 2, *v.LabsCount)

	// A changed list is recorded; an empty one too.
	list[0].State = "STOPPED"
	res, err = tel.ObserveLabs(systemCtx, id, list)
	require.NoError(t, err)
	require.True(t, res.Changed)
	res, err = tel.ObserveLabs(systemCtx, id, nil)
	require.NoError(t, err)
	require.True(t, res.Changed)
	waitProjected(t, b, "worker_labs", res.Position)
	got, err = tel.WorkerLabs(adminCtx, id)
	require.NoError(t, err)
	require.Zero(t, got.Count)
	require.Len(t, readStream(t, b, worker.TelemetryStream(id)), 3)
}

func TestWorkerStateLoadsTheAggregate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := importedWorker(t, b, "i-0"+hex16(t))
	_, err := b.app.StopWorker(adminCtx, id)
	require.NoError(t, err)
	// The aggregate knows at once, whatever the read model says.
	st, err := b.app.WorkerState(systemCtx, id)
	require.NoError(t, err)
	require.Equal(t, worker.StatusStopping, st.Status)
	require.Equal(t, worker.IntentStop, st.Intent)

	_, err = b.app.WorkerState(systemCtx, "0190c6a0-0000-7000-8000-0000000000fd")
	require.ErrorIs(t, err, domain.ErrNotFound)
	_, err = b.app.WorkerState(adminCtx, id)
	require.ErrorIs(t, err, rbac.ErrForbidden, "jobs only")
}

// The access matrix of the telemetry handlers, as in rbac_test.go: admin
// manager user auditor integrator none system.
func TestTelemetryAccessMatrix(t *testing.T) {
	b := setup(t)
	tel := telemetryOf(b)
	missing := "0190c6a0-0000-7000-8000-000000000001"
	for _, row := range []struct {
		op     string
		expect string
		call   func(ctx context.Context) error
	}{
		{"RecordMetrics", "------A", func(ctx context.Context) error {
			_, err := tel.RecordMetrics(ctx, missing, worker.MetricsSampled{})
			return err
		}},
		{"ObserveLabs", "------A", func(ctx context.Context) error {
			_, err := tel.ObserveLabs(ctx, missing, nil)
			return err
		}},
		{"WorkerMetrics", "AAAA---", func(ctx context.Context) error {
			_, err := tel.WorkerMetrics(ctx, missing, application.MetricsQuery{})
			return err
		}},
		{"WorkerLabs", "AAAA---", func(ctx context.Context) error {
			_, err := tel.WorkerLabs(ctx, missing)
			return err
		}},
	} {
		for i, c := range callers {
			err := row.call(rbac.WithPrincipal(context.Background(), c.p))
			denied := errors.Is(err, rbac.ErrForbidden)
			require.Equal(t, row.expect[i] != 'A', denied, "%s as %s: %v", row.op, c.name, err)
			if !denied {
				require.ErrorIs(t, err, domain.ErrNotFound, "%s as %s", row.op, c.name)
			}
		}
		require.ErrorIs(t, row.call(context.Background()), rbac.ErrUnauthenticated, row.op)
	}
}
