package jobs

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

var userCtx = rbac.WithPrincipal(context.Background(), rbac.Principal{Subject: "u-user", Username: "user", Roles: []rbac.Role{rbac.RoleUser}})

func (e *env) jobState(t *testing.T, id int64) string {
	t.Helper()
	var s string
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT state FROM river_job WHERE id = $1`, id).Scan(&s))
	return s
}

func TestRefreshIsThrottledPerWorkerAcrossInstances(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ids := e.importRunning(t, 2)
	e.waitTagsApplied(t)
	other := e.insertOnly(t) // another instance of the service (API only)
	mine := application.NewJobControl(e.app, e.svc)
	theirs := application.NewJobControl(e.app, other)

	first, err := mine.RefreshWorker(userCtx, ids[0])
	require.NoError(t, err)
	require.False(t, first.Duplicate)
	second, err := theirs.RefreshWorker(userCtx, ids[0])
	require.NoError(t, err)
	require.True(t, second.Duplicate, "the throttle is shared by every instance")
	require.Equal(t, first.JobID, second.JobID)
	another, err := theirs.RefreshWorker(userCtx, ids[1])
	require.NoError(t, err)
	require.False(t, another.Duplicate, "the throttle is per worker")

	waitFor(t, "the refresh done", func() (bool, string) {
		s := e.jobState(t, first.JobID)
		return s == "completed", s
	})
	var samples int
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT count(*) FROM events
		WHERE stream = $1 AND metadata->'actor'->>'subject' = 'system:worker_refresh'`, worker.TelemetryStream(ids[0])).Scan(&samples))
	require.Positive(t, samples)

	_, err = mine.RefreshWorker(userCtx, "0190c6a0-0000-7000-8000-000000000001")
	require.ErrorIs(t, err, domain.ErrNotFound)
	_, err = mine.RefreshWorker(rbac.WithPrincipal(context.Background(), rbac.Principal{Subject: "a", Roles: []rbac.Role{rbac.RoleAuditor}}), ids[0])
	require.ErrorIs(t, err, rbac.ErrForbidden)
}

func TestRunJobAndJobsOverview(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{jobs: Options{SettingsRefresh: 50 * time.Millisecond}})
	jc := application.NewJobControl(e.app, e.svc)
	run, err := jc.RunJob(adminCtx, string(application.JobFleetReconcile))
	require.NoError(t, err)
	require.Len(t, run, 1)
	require.Equal(t, region, run[0].Region)
	require.False(t, run[0].Duplicate)
	again, err := jc.RunJob(adminCtx, string(application.JobFleetReconcile))
	require.NoError(t, err)
	require.True(t, again[0].Duplicate)
	waitFor(t, "the run done", func() (bool, string) {
		s := e.jobState(t, run[0].JobID)
		return s == "completed", s
	})

	_, err = jc.RunJob(adminCtx, "nope")
	require.ErrorIs(t, err, domain.ErrNotFound)
	_, err = jc.RunJob(adminCtx, string(application.JobAutoImport))
	require.ErrorIs(t, err, domain.ErrInvalid, "auto-import is off")
	_, err = jc.RunJob(managerCtx, string(application.JobLabsSync))
	require.ErrorIs(t, err, rbac.ErrForbidden)

	o, err := jc.Jobs(userCtx)
	require.NoError(t, err)
	intervals := map[application.JobKind]int64{}
	for _, p := range o.Periodic {
		intervals[p.Kind] = p.IntervalSeconds
		if p.Kind == application.JobFleetReconcile {
			require.NotNil(t, p.LastRun)
			require.Equal(t, run[0].JobID, p.LastRun.ID)
			require.Equal(t, region, p.LastRun.Region)
		}
	}
	require.Equal(t, map[application.JobKind]int64{
		application.JobFleetReconcile: 60, application.JobFleetMetrics: 300, application.JobLabsSync: 1800,
		application.JobIdleCheck: 300, application.JobTelemetryPrune: 86400, application.JobAutoImport: 0,
	}, intervals)
	require.NotEmpty(t, o.Recent)
	require.Positive(t, o.Counts["completed"])

	// A saved interval applies without a restart.
	n := int64(120)
	_, err = e.app.UpdateSettings(adminCtx, settings.Patch{FleetReconcileSeconds: &n}, nil)
	require.NoError(t, err)
	waitFor(t, "the new interval", func() (bool, string) {
		o, err := jc.Jobs(userCtx)
		if err != nil {
			return false, err.Error()
		}
		for _, p := range o.Periodic {
			if p.Kind == application.JobFleetReconcile {
				return p.IntervalSeconds == 120, ""
			}
		}
		return false, ""
	})
}

func TestPeriodicIntervalChangesWithoutRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{
		periodic: true,
		jobs:     Options{PeriodicRecheck: 200 * time.Millisecond, SettingsRefresh: 100 * time.Millisecond},
		defaults: func(v *settings.Values) { v.FleetReconcileSeconds = int64(settings.MaxInterval / time.Second) },
	})
	reconciles := func() int {
		var n int
		require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job WHERE kind = 'fleet_reconcile'`).Scan(&n))
		return n
	}
	waitFor(t, "the current period's run", func() (bool, string) { return reconciles() == 1, "" })
	n := int64(settings.MinInterval / time.Second)
	_, err := e.app.UpdateSettings(adminCtx, settings.Patch{FleetReconcileSeconds: &n}, nil)
	require.NoError(t, err)
	start := time.Now()
	waitFor(t, "runs at the new interval", func() (bool, string) { return reconciles() >= 3, "" })
	require.Less(t, time.Since(start), 3*settings.MinInterval+5*time.Second)
}

func TestAutoImportImportsLiveUnmanagedInstancesOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{jobs: Options{AutoImport: AutoImportOptions{Enabled: true, Region: region, AMINamePattern: "cisco-cml2.9-*"}}})
	console := e.cloud.Sim.Console()
	live, err := console.Launch(region, consoleLaunch("cisco-cml2.9-lablet-v0.1.6", 2))
	require.NoError(t, err)
	_, err = console.Launch(region, consoleLaunch("cisco-cml2.8-lablet-v0.1.5", 1)) // another AMI
	require.NoError(t, err)
	dead, err := console.Launch(region, consoleLaunch("cisco-cml2.9-lablet-v0.1.7", 1))
	require.NoError(t, err)
	require.NoError(t, console.Terminate(dead[0].ID))
	waitFor(t, "terminated", func() (bool, string) {
		in, _ := e.cloud.Sim.Instance(dead[0].ID)
		return in.State == "terminated", in.State
	})

	res, err := e.svc.rt.autoImport(cycleCtx(application.JobAutoImport), 0)
	require.NoError(t, err)
	require.Equal(t, 2, res.Imported, "%+v", res)
	e.waitCaughtUp(t)
	for i, id := range res.WorkerIDs {
		v := e.view(t, id)
		require.Equal(t, live[i].ID, v.InstanceID)
		require.Equal(t, "system:auto_import", v.CreatedBy.Subject)
		require.Equal(t, "system", v.CreatedBy.Type)
		// The follow-up refresh is for the new worker, under its own id.
		waitFor(t, "the refresh of "+id, func() (bool, string) {
			var n int
			_ = e.pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job WHERE kind = 'worker_refresh' AND args->>'worker_id' = $1`, id).Scan(&n)
			return n == 1, ""
		})
	}
	again, err := e.svc.rt.autoImport(cycleCtx(application.JobAutoImport), 0)
	require.NoError(t, err)
	require.Zero(t, again.Imported)
	require.Equal(t, 2, again.Skipped)
}

func TestTelemetryPruneAppliesTheRetention(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{jobs: Options{TelemetryRetention: time.Millisecond}})
	ids := e.importRunning(t, 2)
	e.settle(t)
	_, err := e.svc.rt.collectMetrics(cycleCtx(application.JobFleetMetrics), region)
	require.NoError(t, err)
	e.waitCaughtUp(t)
	telemetry := func() (events, rows int) {
		require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE stream LIKE 'worker\_telemetry-%'`).Scan(&events))
		require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT count(*) FROM worker_metrics`).Scan(&rows))
		return events, rows
	}
	events, rows := telemetry()
	require.Greater(t, events, len(ids))
	require.Positive(t, rows)
	lifecycle := e.lifecycleEvents(t)

	run, err := application.NewJobControl(e.app, e.svc).RunJob(adminCtx, string(application.JobTelemetryPrune))
	require.NoError(t, err)
	waitFor(t, "the prune done", func() (bool, string) {
		s := e.jobState(t, run[0].JobID)
		return s == "completed", s
	})
	events, rows = telemetry()
	require.Equal(t, len(ids), events, "the newest event of each telemetry stream is kept")
	require.Zero(t, rows)
	require.Equal(t, lifecycle, e.lifecycleEvents(t), "lifecycle streams are never pruned")
}

func TestNewRefusesIncompleteDependencies(t *testing.T) {
	t.Parallel()
	_, err := New(context.Background(), nil, Deps{}, Options{})
	require.Error(t, err)
	require.Contains(t, err.Error(), "App")
	e := newEnv(t, envOptions{noService: true})
	_, err = New(context.Background(), e.pool, e.deps, Options{AutoImport: AutoImportOptions{Enabled: true}})
	require.ErrorContains(t, err, "auto-import needs a region")
	_, err = New(context.Background(), e.pool, e.deps, Options{ActivityExcludedPattern: "(["})
	require.ErrorContains(t, err, "excluded user pattern")
}

// TestJobControlAccessMatrix: admin manager user auditor integrator none
// system, as in application/rbac_test.go.
func TestJobControlAccessMatrix(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noService: true})
	jc := application.NewJobControl(e.app, e.insertOnly(t))
	callers := []rbac.Principal{
		{Subject: "a", Roles: []rbac.Role{rbac.RoleAdmin}}, {Subject: "m", Roles: []rbac.Role{rbac.RoleManager}},
		{Subject: "u", Roles: []rbac.Role{rbac.RoleUser}}, {Subject: "au", Roles: []rbac.Role{rbac.RoleAuditor}},
		{Subject: "i", Roles: []rbac.Role{rbac.RoleIntegrator}}, {Subject: "n"}, rbac.System("test"),
	}
	for _, row := range []struct {
		op     string
		expect string
		call   func(ctx context.Context) error
	}{
		{"RefreshWorker", "AAA----", func(ctx context.Context) error {
			_, err := jc.RefreshWorker(ctx, "0190c6a0-0000-7000-8000-000000000001")
			if errors.Is(err, domain.ErrNotFound) {
				return nil
			}
			return err
		}},
		{"RunJob", "A------", func(ctx context.Context) error {
			_, err := jc.RunJob(ctx, string(application.JobLabsSync))
			return err
		}},
		{"Jobs", "AAAA---", func(ctx context.Context) error {
			_, err := jc.Jobs(ctx)
			return err
		}},
	} {
		for i, p := range callers {
			err := row.call(rbac.WithPrincipal(context.Background(), p))
			if row.expect[i] == 'A' {
				require.NoError(t, err, "%s as %v", row.op, p.Roles)
			} else {
				require.ErrorIs(t, err, rbac.ErrForbidden, "%s as %v", row.op, p.Roles)
			}
		}
		require.ErrorIs(t, row.call(context.Background()), rbac.ErrUnauthenticated, row.op)
	}
}

func TestRunStopsGracefullyWhenTheContextEnds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noService: true})
	svc, err := New(context.Background(), e.pool, e.deps, e.opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	id := e.importRunning(t, 1)[0]
	_, err = e.app.StopWorker(managerCtx, id)
	require.NoError(t, err)
	e.waitStatus(t, id, worker.StatusStopped)
	require.True(t, svc.ReactorStatus().Leader)
	cancel()
	require.NoError(t, <-done)
	require.False(t, svc.ReactorStatus().Leader)
	require.Error(t, svc.Start(context.Background()), "a service runs once")
}
