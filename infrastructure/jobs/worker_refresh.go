package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// RefreshArgs is a worker_refresh job: record the worker's EC2 state, one
// metrics sample, its CML service and licence, and its labs. On demand
// (POST /api/workers/{id}/refresh) it is unique per worker and throttle
// period, shared by every instance of the service; after worker.imported the
// reactor inserts one unique by the event.
type RefreshArgs struct {
	WorkerID      string `json:"worker_id" river:"unique"`
	EventID       string `json:"event_id,omitempty" river:"unique"`
	CorrelationID string `json:"correlation_id,omitempty"`
}

// Kind implements river.JobArgs.
func (RefreshArgs) Kind() string { return string(application.JobWorkerRefresh) }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (RefreshArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueFleet, MaxAttempts: fleetMaxAttempts}
}

type refreshWorker struct {
	river.WorkerDefaults[RefreshArgs]
	rt *runtime
}

func (w *refreshWorker) NextRetry(job *river.Job[RefreshArgs]) time.Time {
	return w.rt.nextRetry(job.Attempt)
}

func (w *refreshWorker) Timeout(*river.Job[RefreshArgs]) time.Duration { return lifecycleTimeout }

func (w *refreshWorker) Work(ctx context.Context, job *river.Job[RefreshArgs]) error {
	a := job.Args
	if a.EventID != "" {
		ctx = commandContext(ctx, application.JobWorkerRefresh, a.CorrelationID, a.EventID)
	} else {
		ctx = jobContext(ctx, application.JobWorkerRefresh, job.ID)
	}
	return w.rt.refresh(ctx, a.WorkerID)
}

// refresh brings one worker up to date from the aggregate's state: EC2 (one
// DescribeInstance), then, when it runs, CloudWatch for its instance, its
// controller and its labs.
func (rt *runtime) refresh(ctx context.Context, id string) error {
	st, err := rt.deps.App.WorkerState(ctx, id)
	if err != nil {
		return fmt.Errorf("worker_refresh: load worker %s: %w", id, err)
	}
	if st.Status.Terminal() || st.InstanceID == "" {
		return nil
	}
	var inst application.Instance
	err = rt.call(ctx, func(ctx context.Context) (err error) {
		inst, err = rt.deps.Cloud.DescribeInstance(ctx, st.Region, st.InstanceID)
		return err
	})
	switch {
	case application.IsCloudNotFound(err):
		_, err := rt.deps.App.ObserveInstance(ctx, id, notFoundObservation())
		return err
	case err != nil:
		return err
	}
	if _, err := rt.deps.App.ObserveInstance(ctx, id, rt.observation(inst, false)); err != nil {
		return fmt.Errorf("worker_refresh: record observation: %w", err)
	}
	if inst.State != worker.EC2Running {
		return nil
	}
	if st, err = rt.deps.App.WorkerState(ctx, id); err != nil {
		return fmt.Errorf("worker_refresh: reload worker %s: %w", id, err)
	}
	var cw *application.InstanceMetrics
	var got map[string]application.InstanceMetrics
	if err := rt.call(ctx, func(ctx context.Context) (err error) {
		got, err = rt.deps.Cloud.Metrics(ctx, st.Region, []string{st.InstanceID}, rt.now().Add(-metricsLookback))
		return err
	}); err == nil {
		if m, ok := got[st.InstanceID]; ok {
			cw = &m
		}
	}
	if _, err := rt.pollWorker(ctx, st, cw); err != nil {
		return fmt.Errorf("worker_refresh: %w", err)
	}
	if st.Endpoint != "" {
		rt.syncLabs(ctx, id, st.Endpoint)
	}
	return nil
}
