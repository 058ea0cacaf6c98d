package application_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

// monitorFunc adapts a function to application.ProjectionMonitor.
type monitorFunc func(ctx context.Context) ([]application.ProjectionStatus, error)

func (f monitorFunc) ProjectionStatuses(ctx context.Context) ([]application.ProjectionStatus, error) {
	return f(ctx)
}

func newOperator(t *testing.T, b *bundle) *projections.Operator {
	t.Helper()
	op := projections.NewOperator(projections.OperatorOptions{
		Store: b.store, Pool: b.pool, Projections: projections.All(application.EventRegistry()),
		Logger: slog.New(slog.DiscardHandler),
	})
	t.Cleanup(op.Close)
	return op
}

func TestSystemHealth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	op := newOperator(t, b)
	healthy := application.NewSystem(application.SystemOptions{
		Checks: []application.ComponentCheck{
			{Name: "database", Check: b.pool.Ping},
			{Name: "event_store", Check: application.EventStoreCheck(b.store)},
		},
		Projections: op, Clock: b.clock, Logger: slog.New(slog.DiscardHandler),
	})
	checkAccess(t, "Health", "AAAA---", func(ctx context.Context) error {
		_, err := healthy.Health(ctx)
		return err
	})

	// Wait for the package's runners to catch up, then everything is up.
	// Other tests append in parallel, so the report checked is the one that
	// found everything healthy, not a later one.
	var h application.SystemHealth
	require.Eventually(t, func() bool {
		var err error
		h, err = healthy.Health(adminCtx)
		require.NoError(t, err)
		if h.Status != application.HealthHealthy {
			return false
		}
		for _, p := range h.Projections {
			if p.LagEvents != 0 || !p.CaughtUp {
				return false
			}
		}
		return true
	}, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, b.clock.Now().UTC(), h.CheckedAt)
	require.Equal(t, application.HealthUp, h.Components["database"].Status)
	require.Equal(t, application.HealthUp, h.Components["event_store"].Status)
	require.Equal(t, application.HealthUp, h.Components["projections"].Status)
	require.Len(t, h.Projections, len(projections.All(application.EventRegistry())))
	for _, p := range h.Projections {
		require.Zero(t, p.LagEvents, p.Name)
		require.True(t, p.CaughtUp, p.Name)
		require.False(t, p.Running, "no runner in this System's process: %s", p.Name)
	}

	// A failing check, a check that times out, a lagging read model.
	degraded := application.NewSystem(application.SystemOptions{
		Timeout: 50 * time.Millisecond,
		Checks: []application.ComponentCheck{
			{Name: "database", Check: func(context.Context) error { return errors.New("dial db-host-internal: refused") }},
			{Name: "event_store", Check: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
		},
		Projections: monitorFunc(func(context.Context) ([]application.ProjectionStatus, error) {
			return []application.ProjectionStatus{
				{Name: "worker_view", CaughtUp: true},
				{Name: "audit_log", LagEvents: 1000, LagCapped: true},
				{Name: "task_view", CaughtUp: true, LastError: "boom"},
			}, nil
		}),
		Logger: slog.New(slog.DiscardHandler),
	})
	h, err := degraded.Health(adminCtx)
	require.NoError(t, err)
	require.Equal(t, application.HealthDegraded, h.Status)
	require.Equal(t, application.ComponentHealth{Status: application.HealthDown, Reason: "failed", LatencyMS: h.Components["database"].LatencyMS}, h.Components["database"])
	require.Equal(t, "timeout", h.Components["event_store"].Reason)
	require.Equal(t, application.HealthDegraded, h.Components["projections"].Status)
	require.Equal(t, "runner_error", h.Components["projections"].Reason)
	require.Equal(t, application.HealthUp, h.Projections[0].Status)
	require.Equal(t, application.HealthDegraded, h.Projections[1].Status)
	require.True(t, h.Projections[1].LagCapped)
	require.True(t, h.Projections[2].Failing)

	broken := application.NewSystem(application.SystemOptions{
		Projections: monitorFunc(func(context.Context) ([]application.ProjectionStatus, error) { return nil, errors.New("no db") }),
		Logger:      slog.New(slog.DiscardHandler),
	})
	h, err = broken.Health(adminCtx)
	require.NoError(t, err)
	require.Equal(t, application.HealthDown, h.Components["projections"].Status)
	require.Empty(t, h.Projections)
	require.NotNil(t, h.Projections)
}

func TestNewSystemRejectsBadWiring(t *testing.T) {
	t.Parallel()
	ok := func(context.Context) error { return nil }
	mon := monitorFunc(func(context.Context) ([]application.ProjectionStatus, error) { return nil, nil })
	for name, o := range map[string]application.SystemOptions{
		"NoMonitor": {},
		"NoName":    {Projections: mon, Checks: []application.ComponentCheck{{Check: ok}}},
		"Duplicate": {Projections: mon, Checks: []application.ComponentCheck{{Name: "a", Check: ok}, {Name: "a", Check: ok}}},
		"Reserved":  {Projections: mon, Checks: []application.ComponentCheck{{Name: "projections", Check: ok}}},
	} {
		require.Panics(t, func() { application.NewSystem(o) }, name)
	}
}
