package application_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// countingStore counts the stream reads of the real store it wraps.
type countingStore struct {
	eventstore.Store
	reads atomic.Int64
}

func (s *countingStore) ReadStream(ctx context.Context, stream string, from uint64, max int) ([]eventstore.RecordedEvent, error) {
	s.reads.Add(1)
	return s.Store.ReadStream(ctx, stream, from, max)
}

// withSnapshots returns an App over b's store whose worker commands decide
// first on the state snapshot returns, and the store's read counter.
func withSnapshots(b *bundle, snapshot func(id string) (*worker.Worker, bool)) (*application.App, *countingStore) {
	opts := b.opts
	cs := &countingStore{Store: b.store}
	opts.Store = cs
	opts.WorkerSnapshots = snapshot
	return application.New(opts), cs
}

// loadState folds a worker's stream.
func loadState(t *testing.T, b *bundle, id string) *worker.Worker {
	t.Helper()
	repo := application.NewRepository(b.store, application.EventRegistry(), worker.New, worker.Stream, b.clock, application.UUIDv7{}, application.DefaultRetryPolicy)
	w, err := repo.Load(context.Background(), id)
	require.NoError(t, err)
	return w
}

func TestCommandsDecideOnACurrentSnapshotWithoutReading(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res, err := b.app.ImportWorker(adminCtx, application.ImportWorker{Region: "us-east-1", InstanceID: "i-0" + hex16(t), State: worker.EC2Running})
	require.NoError(t, err)
	current := loadState(t, b, res.ID)
	app, store := withSnapshots(b, func(string) (*worker.Worker, bool) { return worker.FromState(current.State(), current.Version()), true })

	stop, err := app.StopWorker(adminCtx, res.ID)
	require.NoError(t, err)
	require.Equal(t, []string{"worker.stop_requested.v1"}, stop.Events)
	require.Zero(t, store.reads.Load(), "a current snapshot needs no stream read")
}

func TestStaleSnapshotsNeverDropOrRefuseACommand(t *testing.T) {
	t.Parallel()
	b := setup(t)
	instance := "i-0" + hex16(t)
	res, err := b.app.ImportWorker(adminCtx, application.ImportWorker{Region: "us-east-1", InstanceID: instance, State: worker.EC2Running})
	require.NoError(t, err)
	running := loadState(t, b, res.ID)
	// The worker moves on: stopped, then observed stopped.
	_, err = b.app.StopWorker(adminCtx, res.ID)
	require.NoError(t, err)
	_, err = b.app.ObserveInstance(systemCtx, res.ID, worker.Observation{InstanceID: instance, State: worker.EC2Stopped})
	require.NoError(t, err)

	stale := func(string) (*worker.Worker, bool) { return worker.FromState(running.State(), running.Version()), true }
	app, store := withSnapshots(b, stale)

	// On the stale snapshot the worker runs, so a start would change
	// nothing: the no-op is confirmed on the stream, where it is stopped.
	start, err := app.StartWorker(adminCtx, res.ID)
	require.NoError(t, err)
	require.Equal(t, []string{"worker.start_requested.v1"}, start.Events)
	require.Equal(t, int64(1), store.reads.Load())

	// On the stale snapshot a stop is legal and appends, but the snapshot's
	// revision is old: the append is refused and the stop decided again on
	// the stream, where the worker is starting (pending): refused for real.
	_, err = app.StopWorker(adminCtx, res.ID)
	require.Error(t, err)
	require.Contains(t, err.Error(), "pending")
	require.Equal(t, int64(2), store.reads.Load(), "one stream read after the refused append")

	// A refusal on a stale snapshot is confirmed on the stream too.
	provisioning := func(id string) (*worker.Worker, bool) {
		w := worker.New()
		events, err := w.Create(id, worker.CreateSpec{Name: "x", Region: "us-east-1", InstanceType: "m5zn.metal", AMIID: "ami-0123456789abcdef0"})
		require.NoError(t, err)
		require.NoError(t, w.Apply(events[0], b.clock.Now()))
		return w, true
	}
	app, _ = withSnapshots(b, provisioning)
	tags, err := app.ReplaceWorkerTags(adminCtx, res.ID, map[string]string{"team": "a"})
	require.NoError(t, err, "refused on the snapshot would be wrong: the worker is not provisioning")
	require.Equal(t, []string{"worker.tags_changed.v1"}, tags.Events)

	final := loadState(t, b, res.ID)
	require.Equal(t, worker.StatusPending, final.Status())
	require.Equal(t, "a", final.State().Tags["team"])
}
