package jobs

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

// jobCounts returns the number of River jobs of each kind.
func (e *env) jobCounts(t *testing.T) map[string]int {
	t.Helper()
	rows, err := e.pool.Query(context.Background(), `SELECT kind, count(*) FROM river_job GROUP BY kind`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var k string
		var n int
		require.NoError(t, rows.Scan(&k, &n))
		out[k] = n
	}
	require.NoError(t, rows.Err())
	return out
}

// runReactor runs a reactor runner until the returned stop is called.
func (e *env) runReactor(t *testing.T, svc *Service, opts projections.RunnerOptions) (*projections.Runner, func()) {
	t.Helper()
	opts.Logger = quietLogger()
	opts.LockRetry = 50 * time.Millisecond
	r := projections.NewRunner(e.store, e.pool, NewReactor(application.EventRegistry(), svc.Client()), opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(ctx)
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return r, stop
}

func (e *env) waitReactorAt(t *testing.T, r *projections.Runner) {
	t.Helper()
	head := e.head(t)
	waitFor(t, "reactor at the head", func() (bool, string) {
		st := r.Status()
		return !st.Position.Less(head), st.Position.String() + " " + st.LastError
	})
}

// An insert-only service: the jobs the reactor inserts stay in the table.
func (e *env) insertOnly(t *testing.T) *Service {
	t.Helper()
	opts := e.opts
	opts.InsertOnly = true
	return e.startService(t, opts)
}

func TestReactorCrashAndReplayNeitherLoseNorDoubleAJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noService: true})
	svc := e.insertOnly(t)
	ids := e.importRunning(t, 2)
	created, err := e.app.CreateWorker(adminCtx, application.CreateWorker{Name: "new", Region: region})
	require.NoError(t, err)
	_, err = e.app.StopWorker(managerCtx, ids[0])
	require.NoError(t, err)
	_, err = e.app.ReplaceWorkerTags(managerCtx, ids[1], map[string]string{"team": "red"})
	require.NoError(t, err)
	_, _, err = e.app.RequestLabAction(managerCtx, ids[1], application.LabAction{Action: worker.LabStart, LabID: "lab-1"})
	require.NoError(t, err)
	want := map[string]int{
		"ec2_launch": 1, "ec2_stop": 1, "lab_action": 1,
		"ec2_tags":       3, // two imports, one tag change
		"worker_refresh": 2, // two imports
	}

	// A crash inside the batch transaction, after the jobs were inserted
	// and before the commit: nothing is kept, and the batch is read again.
	var failures atomic.Int64
	r, stop := e.runReactor(t, svc, projections.RunnerOptions{BeforeCommit: func(context.Context) error {
		if failures.Add(1) <= 3 {
			return errors.New("crash before commit")
		}
		return nil
	}})
	waitFor(t, "three failed batches", func() (bool, string) { return failures.Load() >= 3, "" })
	e.waitReactorAt(t, r)
	stop()
	require.Equal(t, want, e.jobCounts(t))

	// The launch job knows its attempt and its cause.
	var args LaunchArgs
	require.NoError(t, e.pool.QueryRow(context.Background(),
		`SELECT args FROM river_job WHERE kind = 'ec2_launch'`).Scan(&args))
	require.Equal(t, created.ID, args.WorkerID)
	require.Equal(t, 1, args.Attempt)
	require.Equal(t, e.events(t, worker.Stream(created.ID))[0].ID, args.EventID)

	// A replay from the start of the log (a lost checkpoint), even with a
	// job cancelled meanwhile, inserts nothing new.
	_, err = e.pool.Exec(context.Background(), `UPDATE river_job SET state = 'cancelled', finalized_at = now() WHERE kind = 'ec2_stop'`)
	require.NoError(t, err)
	_, err = e.pool.Exec(context.Background(), `UPDATE projection_checkpoints SET commit_position = 0, prepare_position = 0 WHERE name = $1`, ReactorName)
	require.NoError(t, err)
	r1, stop1 := e.runReactor(t, svc, projections.RunnerOptions{})
	r2, stop2 := e.runReactor(t, svc, projections.RunnerOptions{}) // a second instance
	e.waitReactorAt(t, r1)
	e.waitReactorAt(t, r2)
	stop1()
	stop2()
	require.Equal(t, want, e.jobCounts(t))

	// New events after the replay get their jobs.
	_, err = e.app.TerminateWorker(adminCtx, ids[1])
	require.NoError(t, err)
	r3, stop3 := e.runReactor(t, svc, projections.RunnerOptions{})
	e.waitReactorAt(t, r3)
	stop3()
	want["ec2_terminate"] = 1
	require.Equal(t, want, e.jobCounts(t))
}

func TestReactorFilterCoversEveryEventWithAReaction(t *testing.T) {
	t.Parallel()
	f := (&Reactor{}).Filter()
	for _, e := range worker.Events() {
		reacts := len(application.Reactions("0190c6a0-0000-7000-8000-000000000001", e)) > 0
		require.Equal(t, reacts, f.Matches(worker.Stream("x"), e.EventType()), "%s", e.EventType())
	}
	require.False(t, f.Matches(worker.TelemetryStream("x"), "worker.created.v1"))
}
