package jobs

import (
	"context"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// LabsSyncArgs is a labs_sync job: read the labs of every running worker's
// controller and record each list that changed.
type LabsSyncArgs struct {
	Manual bool `json:"manual,omitempty"`
}

// Kind implements river.JobArgs.
func (LabsSyncArgs) Kind() string { return string(application.JobLabsSync) }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (LabsSyncArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueFleet, MaxAttempts: fleetMaxAttempts}
}

type labsSyncWorker struct {
	river.WorkerDefaults[LabsSyncArgs]
	rt *runtime
}

func (w *labsSyncWorker) NextRetry(job *river.Job[LabsSyncArgs]) time.Time {
	return w.rt.nextRetry(job.Attempt)
}

func (w *labsSyncWorker) Timeout(*river.Job[LabsSyncArgs]) time.Duration {
	return w.rt.opts.FleetJobTimeout
}

func (w *labsSyncWorker) Work(ctx context.Context, job *river.Job[LabsSyncArgs]) error {
	rt := w.rt
	ctx = jobContext(ctx, application.JobLabsSync, job.ID)
	views, err := rt.listWorkers(ctx, application.WorkerFilter{Status: worker.StatusRunning})
	if err != nil {
		return err
	}
	return forEach(ctx, rt.opts.CMLConcurrency, views, func(ctx context.Context, v application.WorkerView) error {
		if v.Endpoint != "" {
			rt.syncLabs(ctx, v.ID, v.Endpoint)
		}
		return nil
	})
}

// syncLabs reads a controller's labs and records the list when it changed.
// Failures are logged: the next sync tries again.
func (rt *runtime) syncLabs(ctx context.Context, id, endpoint string) {
	var labs []worker.Lab
	err := rt.call(ctx, func(ctx context.Context) (err error) {
		labs, err = rt.deps.CML.Labs(ctx, endpoint)
		return err
	})
	if err != nil {
		if ctx.Err() == nil {
			rt.log.InfoContext(ctx, "jobs: cannot read the labs", slog.String("worker_id", id), slog.Any("error", err))
		}
		return
	}
	if _, err := rt.deps.Telemetry.ObserveLabs(ctx, id, labs); err != nil && ctx.Err() == nil {
		rt.log.WarnContext(ctx, "jobs: cannot record the labs", slog.String("worker_id", id), slog.Any("error", err))
	}
}
