package jobs

import (
	"context"
	"time"

	"github.com/riverqueue/river"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// StopArgs is an ec2_stop job: stop the worker's instance after
// worker.stop_requested (manual or idle_timeout), then poll until EC2
// reports it stopped.
type StopArgs struct {
	Cause
}

// Kind implements river.JobArgs.
func (StopArgs) Kind() string { return string(application.JobEC2Stop) }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (StopArgs) InsertOpts() river.InsertOpts {
	return reactorInsertOpts(QueueCloud, lifecycleMaxAttempts)
}

type stopWorker struct {
	river.WorkerDefaults[StopArgs]
	rt *runtime
}

var stopTransition = transition{
	kind:    application.JobEC2Stop,
	intent:  worker.IntentStop,
	reached: func(s worker.EC2State) bool { return s == worker.EC2Stopped },
	// A pending instance cannot be stopped yet; a stopping one is on its way.
	actOn: func(s worker.EC2State) bool { return s == worker.EC2Running },
	act: func(ctx context.Context, cloud application.CloudProvider, region, id string) error {
		return cloud.Stop(ctx, region, id)
	},
	recordFailed: (*application.App).RecordStopFailed,
}

func (w *stopWorker) Work(ctx context.Context, job *river.Job[StopArgs]) error {
	return w.rt.drive(ctx, job.JobRow, job.Args.Cause, stopTransition)
}

func (w *stopWorker) NextRetry(job *river.Job[StopArgs]) time.Time {
	return w.rt.nextRetry(job.Attempt)
}

func (w *stopWorker) Timeout(*river.Job[StopArgs]) time.Duration { return lifecycleTimeout }
