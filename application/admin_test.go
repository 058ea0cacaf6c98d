package application_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

func TestAdminRebuildsReadModels(t *testing.T) {
	t.Parallel()
	b := setup(t)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	op := projections.NewOperator(projections.OperatorOptions{
		Store: b.store, Pool: b.pool, Projections: projections.All(application.EventRegistry()),
		Logger: slog.New(slog.DiscardHandler),
		Rebuild: projections.RebuildOptions{BeforeSwap: func(ctx context.Context) error {
			select {
			case entered <- struct{}{}:
			default:
			}
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}},
	})
	t.Cleanup(op.Close)
	admin := application.NewAdmin(op)

	checkAccess(t, "Projections", "A------", func(ctx context.Context) error {
		_, err := admin.Projections(ctx)
		return err
	})
	checkAccess(t, "RebuildProjection", "A------", func(ctx context.Context) error {
		_, err := admin.RebuildProjection(ctx, "no_such_read_model")
		return err
	})

	_, err := admin.RebuildProjection(adminCtx, "Bad Name")
	require.ErrorIs(t, err, domain.ErrInvalid)
	_, err = admin.RebuildProjection(adminCtx, "nothing_like_it")
	require.ErrorIs(t, err, domain.ErrNotFound)

	st, err := admin.RebuildProjection(adminCtx, "task_view")
	require.NoError(t, err)
	require.Equal(t, application.RebuildRunning, st.State)
	require.Equal(t, "admin-1", st.StartedBy)
	<-entered
	_, err = admin.RebuildProjection(adminCtx, "task_view")
	require.ErrorIs(t, err, application.ErrRebuildInProgress)
	require.ErrorIs(t, err, projections.ErrRebuildInProgress)

	list, err := admin.Projections(adminCtx)
	require.NoError(t, err)
	require.Len(t, list, len(projections.All(application.EventRegistry())))
	byName := map[string]application.ProjectionStatus{}
	for _, p := range list {
		byName[p.Name] = p
	}
	require.Equal(t, application.RebuildRunning, byName["task_view"].Rebuild.State)
	require.False(t, byName["task_view"].Rebuild.Elsewhere)
	require.Equal(t, application.RebuildIdle, byName["worker_view"].Rebuild.State)

	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, op.Wait(ctx))
	list, err = admin.Projections(adminCtx)
	require.NoError(t, err)
	for _, p := range list {
		if p.Name == "task_view" {
			require.Equal(t, application.RebuildSucceeded, p.Rebuild.State, "%+v", p.Rebuild)
			require.NotEmpty(t, p.Rebuild.Position)
		}
	}
	require.Panics(t, func() { application.NewAdmin(nil) })
}
