package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// MonitoringArgs is an ec2_monitoring job: switch detailed CloudWatch
// monitoring of the instance (MonitorInstances or UnmonitorInstances) after
// worker.detailed_monitoring_changed.
type MonitoringArgs struct {
	Cause
	Enabled bool `json:"enabled"`
}

// Kind implements river.JobArgs.
func (MonitoringArgs) Kind() string { return string(application.JobEC2Monitoring) }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (MonitoringArgs) InsertOpts() river.InsertOpts {
	return reactorInsertOpts(QueueCloud, lifecycleMaxAttempts)
}

type monitoringWorker struct {
	river.WorkerDefaults[MonitoringArgs]
	rt *runtime
}

func (w *monitoringWorker) NextRetry(job *river.Job[MonitoringArgs]) time.Time {
	return w.rt.nextRetry(job.Attempt)
}

func (w *monitoringWorker) Timeout(*river.Job[MonitoringArgs]) time.Duration { return lifecycleTimeout }

// Work applies the worker's current setting (the latest request wins). A
// worker still provisioning launches with the setting, so it needs no call.
func (w *monitoringWorker) Work(ctx context.Context, job *river.Job[MonitoringArgs]) error {
	rt, id := w.rt, job.Args.WorkerID
	ctx = causeContext(ctx, application.JobEC2Monitoring, job.Args.Cause)
	st, err := rt.deps.App.WorkerState(ctx, id)
	if err != nil {
		return fmt.Errorf("ec2_monitoring: load worker %s: %w", id, err)
	}
	if st.InstanceID == "" || st.Status.Terminal() || st.Status == worker.StatusTerminating {
		return nil
	}
	err = rt.call(ctx, func(ctx context.Context) error {
		return rt.deps.Cloud.SetDetailedMonitoring(ctx, st.Region, st.InstanceID, st.DetailedMonitoring)
	})
	if err == nil || application.IsCloudNotFound(err) {
		return nil
	}
	return rt.failure(ctx, job.JobRow, err, func(code, message string) error {
		rt.log.ErrorContext(ctx, "jobs: cannot switch detailed monitoring", slog.String("worker_id", id),
			slog.Bool("enabled", st.DetailedMonitoring), slog.String("code", code), slog.String("error", message))
		return nil
	})
}
