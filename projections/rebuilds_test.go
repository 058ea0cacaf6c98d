package projections

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain"
)

// holdBeforeSwap returns rebuild options whose rebuilds wait before the
// swap until release is closed (or their context ends), signalling entered.
func holdBeforeSwap(e *env, entered chan<- struct{}, release <-chan struct{}) RebuildOptions {
	return RebuildOptions{Logger: e.log, BeforeSwap: func(ctx context.Context) error {
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
	}}
}

func statusOf(t *testing.T, o *Operator, name string) application.ProjectionStatus {
	t.Helper()
	all, err := o.ProjectionStatuses(context.Background())
	require.NoError(t, err)
	for _, s := range all {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no status for %s", name)
	return application.ProjectionStatus{}
}

func TestOperatorRebuilds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.appendEvents(t, "test", 3, 30)
	p := &countProjection{}
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	o := NewOperator(OperatorOptions{Store: e.store, Pool: e.pool, Projections: []Projection{p}, Logger: e.log,
		Rebuild: holdBeforeSwap(e, entered, release)})
	t.Cleanup(o.Close)

	_, err := o.StartRebuild(context.Background(), "nope", "u")
	require.ErrorIs(t, err, domain.ErrNotFound)

	st, err := o.StartRebuild(context.Background(), "test_counts", "u-admin")
	require.NoError(t, err)
	require.Equal(t, application.RebuildRunning, st.State)
	require.Equal(t, "u-admin", st.StartedBy)
	<-entered

	_, err = o.StartRebuild(context.Background(), "test_counts", "u-admin")
	require.ErrorIs(t, err, application.ErrRebuildInProgress)
	require.ErrorIs(t, err, ErrRebuildInProgress)

	// A second operator (another instance) sees the rebuild lock held.
	other := NewOperator(OperatorOptions{Store: e.store, Pool: e.pool, Projections: []Projection{&countProjection{}}, Logger: e.log})
	t.Cleanup(other.Close)
	_, err = other.StartRebuild(context.Background(), "test_counts", "u-other")
	require.ErrorIs(t, err, application.ErrRebuildInProgress)
	s := statusOf(t, other, "test_counts")
	require.Equal(t, application.RebuildRunning, s.Rebuild.State)
	require.True(t, s.Rebuild.Elsewhere)

	require.Equal(t, application.RebuildRunning, statusOf(t, o, "test_counts").Rebuild.State)
	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	require.NoError(t, o.Wait(ctx))

	s = statusOf(t, o, "test_counts")
	require.Equal(t, application.RebuildSucceeded, s.Rebuild.State, "%+v", s.Rebuild)
	require.Equal(t, int64(30), s.Rebuild.Events)
	require.Equal(t, s.Position, s.Rebuild.Position)
	require.Zero(t, s.LagEvents)
	require.True(t, s.CaughtUp)
	e.waitMatchesLog(t)

	// The other instance no longer sees it running, and may rebuild.
	require.Equal(t, application.RebuildIdle, statusOf(t, other, "test_counts").Rebuild.State)
}

func TestOperatorLag(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.appendEvents(t, "test", 2, 25)
	p := &countProjection{}
	o := NewOperator(OperatorOptions{Store: e.store, Pool: e.pool, Projections: []Projection{p}, Logger: e.log, LagCap: 10})
	t.Cleanup(o.Close)

	s := statusOf(t, o, "test_counts")
	require.Equal(t, 10, s.LagEvents)
	require.True(t, s.LagCapped)
	require.False(t, s.CaughtUp)
	require.False(t, s.Running)
	require.Equal(t, "0", s.Position)

	// With a manager running it, the lag drains and the runner is reported.
	m := NewManager(e.store, e.pool, []Projection{p}, e.runnerOptions())
	o2 := NewOperator(OperatorOptions{Store: e.store, Pool: e.pool, Projections: []Projection{p}, Manager: m, Logger: e.log})
	t.Cleanup(o2.Close)
	start(t, m.Run)
	waitFor(t, func() bool {
		s := statusOf(t, o2, "test_counts")
		return s.LagEvents == 0 && s.CaughtUp && s.Leader
	}, func() string { return "the lag never drained" })
	s = statusOf(t, o2, "test_counts")
	require.True(t, s.Running)
	require.False(t, s.LagCapped)
	require.Empty(t, s.LastError)
}

// TestOperatorCloseCancelsRebuilds: Close stops a running rebuild, which
// fails and leaves the live table as it was.
func TestOperatorCloseCancelsRebuilds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.appendEvents(t, "test", 2, 10)
	never := make(chan struct{})
	entered := make(chan struct{}, 1)
	o := NewOperator(OperatorOptions{Store: e.store, Pool: e.pool, Projections: []Projection{&countProjection{}}, Logger: e.log,
		Rebuild: holdBeforeSwap(e, entered, never)})
	_, err := o.StartRebuild(context.Background(), "test_counts", "u")
	require.NoError(t, err)
	<-entered
	done := make(chan struct{})
	go func() { o.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("Close did not return")
	}
	s := statusOf(t, o, "test_counts")
	require.Equal(t, application.RebuildFailed, s.Rebuild.State)
	require.Contains(t, s.Rebuild.Error, "context canceled")
	_, err = o.StartRebuild(context.Background(), "test_counts", "u")
	require.ErrorIs(t, err, ErrOperatorClosed)
	var n int
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT count(*) FROM test_counts`).Scan(&n))
	require.Zero(t, n, "the live table is untouched")
	var shadows int
	require.NoError(t, e.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_tables WHERE tablename LIKE 'test_counts\_\_%'`).Scan(&shadows))
	require.Zero(t, shadows, "the shadow table is dropped")
}

// TestOperatorLockProbeDoesNotTakeTheLock: listing the statuses while a
// rebuild starts never makes the rebuild find its lock taken.
func TestOperatorLockProbeDoesNotTakeTheLock(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	o := NewOperator(OperatorOptions{Store: e.store, Pool: e.pool, Projections: []Projection{&countProjection{}}, Logger: e.log})
	t.Cleanup(o.Close)
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, e.pool.Config().ConnConfig)
	require.NoError(t, err)
	defer conn.Close(ctx)
	stop := make(chan struct{})
	probing := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				probing <- nil
				return
			default:
			}
			if _, err := o.ProjectionStatuses(ctx); err != nil {
				probing <- err
				return
			}
		}
	}()
	for range 50 {
		var got bool
		require.NoError(t, conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, advisoryKey("rebuild", "test_counts")).Scan(&got))
		require.True(t, got, "the status probe held the rebuild lock")
		_, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, advisoryKey("rebuild", "test_counts"))
		require.NoError(t, err)
	}
	close(stop)
	require.NoError(t, <-probing)
}

func TestNewOperatorRejectsBadWiring(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	require.Panics(t, func() { NewOperator(OperatorOptions{}) })
	require.Panics(t, func() {
		NewOperator(OperatorOptions{Store: e.store, Pool: e.pool, Projections: []Projection{&countProjection{}, &countProjection{}}})
	})
	err := rebuildInProgress("x")
	require.True(t, errors.Is(err, ErrRebuildInProgress) && errors.Is(err, application.ErrRebuildInProgress))
	require.True(t, strings.Contains(err.Error(), "x"))
}
