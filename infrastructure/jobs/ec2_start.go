package jobs

import (
	"context"
	"time"

	"github.com/riverqueue/river"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// StartArgs is an ec2_start job: start the worker's instance after
// worker.start_requested, then poll until EC2 reports it running.
type StartArgs struct {
	Cause
}

// Kind implements river.JobArgs.
func (StartArgs) Kind() string { return string(application.JobEC2Start) }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (StartArgs) InsertOpts() river.InsertOpts {
	return reactorInsertOpts(QueueCloud, lifecycleMaxAttempts)
}

type startWorker struct {
	river.WorkerDefaults[StartArgs]
	rt *runtime
}

var startTransition = transition{
	kind:    application.JobEC2Start,
	intent:  worker.IntentStart,
	reached: func(s worker.EC2State) bool { return s == worker.EC2Running },
	actOn:   func(s worker.EC2State) bool { return s == worker.EC2Stopped },
	act: func(ctx context.Context, cloud application.CloudProvider, region, id string) error {
		return cloud.Start(ctx, region, id)
	},
	recordFailed: (*application.App).RecordStartFailed,
}

func (w *startWorker) Work(ctx context.Context, job *river.Job[StartArgs]) error {
	return w.rt.drive(ctx, job.JobRow, job.Args.Cause, startTransition)
}

func (w *startWorker) NextRetry(job *river.Job[StartArgs]) time.Time {
	return w.rt.nextRetry(job.Attempt)
}

func (w *startWorker) Timeout(*river.Job[StartArgs]) time.Duration { return lifecycleTimeout }
