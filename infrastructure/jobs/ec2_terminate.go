package jobs

import (
	"context"
	"time"

	"github.com/riverqueue/river"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// TerminateArgs is an ec2_terminate job: terminate the worker's instance
// after worker.termination_requested, then poll until EC2 reports it
// terminated (or no longer knows it).
type TerminateArgs struct {
	Cause
}

// Kind implements river.JobArgs.
func (TerminateArgs) Kind() string { return string(application.JobEC2Terminate) }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (TerminateArgs) InsertOpts() river.InsertOpts {
	return reactorInsertOpts(QueueCloud, lifecycleMaxAttempts)
}

type terminateWorker struct {
	river.WorkerDefaults[TerminateArgs]
	rt *runtime
}

var terminateTransition = transition{
	kind:   application.JobEC2Terminate,
	intent: worker.IntentTerminate,
	reached: func(s worker.EC2State) bool {
		return s == worker.EC2Terminated || s == worker.EC2NotFound
	},
	actOn: func(s worker.EC2State) bool {
		switch s {
		case worker.EC2Pending, worker.EC2Running, worker.EC2Stopping, worker.EC2Stopped:
			return true
		}
		return false
	},
	act: func(ctx context.Context, cloud application.CloudProvider, region, id string) error {
		return cloud.Terminate(ctx, region, id)
	},
	recordFailed: (*application.App).RecordTerminationFailed,
}

func (w *terminateWorker) Work(ctx context.Context, job *river.Job[TerminateArgs]) error {
	return w.rt.drive(ctx, job.JobRow, job.Args.Cause, terminateTransition)
}

func (w *terminateWorker) NextRetry(job *river.Job[TerminateArgs]) time.Time {
	return w.rt.nextRetry(job.Attempt)
}

func (w *terminateWorker) Timeout(*river.Job[TerminateArgs]) time.Duration { return lifecycleTimeout }
