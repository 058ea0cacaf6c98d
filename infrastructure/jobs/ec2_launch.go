package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/riverqueue/river"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// LaunchArgs is an ec2_launch job: launch the instance of a worker after
// worker.created (attempt 1) or worker.provisioning_retried, then poll until
// EC2 reports it running.
type LaunchArgs struct {
	Cause
	// Attempt is the domain's launch attempt: the ClientToken is
	// "<worker id>-<attempt>", so a job that runs again (after a timeout, a
	// crash) finds the instance its first run created instead of launching
	// another, and a deliberate retry of a failed launch gets a new token.
	Attempt int `json:"attempt"`
}

// Kind implements river.JobArgs.
func (LaunchArgs) Kind() string { return string(application.JobEC2Launch) }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (LaunchArgs) InsertOpts() river.InsertOpts {
	return reactorInsertOpts(QueueCloud, lifecycleMaxAttempts)
}

// ClientToken is the EC2 idempotency token of a worker's launch attempt.
func ClientToken(workerID string, attempt int) string {
	return workerID + "-" + strconv.Itoa(attempt)
}

type launchWorker struct {
	river.WorkerDefaults[LaunchArgs]
	rt *runtime
}

func (w *launchWorker) NextRetry(job *river.Job[LaunchArgs]) time.Time {
	return w.rt.nextRetry(job.Attempt)
}

func (w *launchWorker) Timeout(*river.Job[LaunchArgs]) time.Duration { return lifecycleTimeout }

// Work launches the instance while the worker is provisioning this attempt
// without an instance, then polls it until it runs. Like the other lifecycle
// jobs it starts every run from the aggregate's state and EC2's.
func (w *launchWorker) Work(ctx context.Context, job *river.Job[LaunchArgs]) error {
	rt, a := w.rt, job.Args
	ctx = causeContext(ctx, application.JobEC2Launch, a.Cause)
	st, err := rt.deps.App.WorkerState(ctx, a.WorkerID)
	if err != nil {
		return fmt.Errorf("ec2_launch: load worker %s: %w", a.WorkerID, err)
	}
	if st.LaunchAttempt != a.Attempt || st.Intent != worker.IntentLaunch {
		return nil // another attempt, or this one is over (failed, running, removed)
	}
	if st.InstanceID != "" {
		return w.poll(ctx, job, st)
	}
	record := func(code, message string) error {
		_, err := rt.deps.App.RecordProvisioningFailed(ctx, a.WorkerID, code, message)
		return err
	}
	if rt.pastDeadline(job.CreatedAt, rt.opts.LaunchDeadline) {
		msg := fmt.Sprintf("no instance was launched within %s", rt.opts.LaunchDeadline)
		if err := record(timeoutCode, msg); err != nil {
			return err
		}
		return river.JobCancel(fmt.Errorf("ec2_launch of worker %s: %s", a.WorkerID, msg))
	}
	spec := application.LaunchSpec{
		ClientToken: ClientToken(a.WorkerID, a.Attempt), WorkerID: a.WorkerID, Region: st.Region, Name: st.Name,
		ImageID: st.AMIID, InstanceType: st.InstanceType, SubnetID: st.SubnetID,
		SecurityGroupIDs: st.SecurityGroupIDs, KeyName: st.KeyName, Tags: userTags(st.Tags),
		DetailedMonitoring: st.DetailedMonitoring,
	}
	var inst application.Instance
	err = rt.call(ctx, func(ctx context.Context) (err error) {
		inst, err = rt.deps.Cloud.Launch(ctx, spec)
		return err
	})
	if err != nil && application.CloudErrorOf(err).Code == "IdempotentParameterMismatch" {
		// The token was used with other parameters (the tags changed between
		// two runs): the first run's instance carries the worker's id.
		found, ok, ferr := rt.findTagged(ctx, st.Region, a.WorkerID)
		if ferr == nil && ok {
			inst, err = found, nil
		}
	}
	if err != nil {
		return rt.failure(ctx, job.JobRow, err, record)
	}
	if _, err := rt.deps.App.RecordInstanceLaunched(ctx, a.WorkerID, inst.InstanceID); err != nil {
		return fmt.Errorf("ec2_launch: record instance %s: %w", inst.InstanceID, err)
	}
	rt.log.InfoContext(ctx, "jobs: instance launched", slog.String("worker_id", a.WorkerID),
		slog.String("instance_id", inst.InstanceID), slog.Int("attempt", a.Attempt))
	return river.JobSnooze(rt.opts.PollInterval)
}

// poll records the launched instance's state until it runs. Past the
// deadline it stops polling and leaves the instance to the reconciliation:
// the launch itself succeeded.
func (w *launchWorker) poll(ctx context.Context, job *river.Job[LaunchArgs], st worker.State) error {
	rt, id := w.rt, job.Args.WorkerID
	var inst application.Instance
	err := rt.call(ctx, func(ctx context.Context) (err error) {
		inst, err = rt.deps.Cloud.DescribeInstance(ctx, st.Region, st.InstanceID)
		return err
	})
	switch {
	case application.IsCloudNotFound(err):
		_, err := rt.deps.App.ObserveInstance(ctx, id, notFoundObservation())
		return err
	case err != nil:
		if ctx.Err() == nil && !application.CloudErrorOf(err).Retryable() {
			return river.JobCancel(err)
		}
		return err
	}
	if _, err := rt.deps.App.ObserveInstance(ctx, id, rt.observation(inst, false)); err != nil {
		return fmt.Errorf("ec2_launch: record observation: %w", err)
	}
	if inst.State != worker.EC2Pending {
		return nil // running, or changed by somebody else: the launch is over
	}
	if rt.pastDeadline(job.CreatedAt, rt.opts.LaunchDeadline) {
		rt.log.WarnContext(ctx, "jobs: launched instance still pending at the deadline; the reconciliation follows it",
			slog.String("worker_id", id), slog.String("instance_id", st.InstanceID))
		return nil
	}
	return river.JobSnooze(rt.opts.PollInterval)
}

// userTags are a worker's tags without the product's reserved ones, which
// the cloud adapter sets itself.
func userTags(tags map[string]string) map[string]string {
	out := make(map[string]string, len(tags))
	for k, v := range tags {
		if k == worker.TagManagedBy || k == worker.TagWorkerID {
			continue
		}
		out[k] = v
	}
	return out
}
