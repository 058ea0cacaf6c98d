package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// transition drives one requested lifecycle change (start, stop, terminate)
// to its end. Every run of the job starts from what the aggregate and EC2
// say now, so a run that is repeated (a retry, a snooze, a replay after a
// crash) never repeats a side effect that already happened and never misses
// one that did not:
//
//  1. the worker's intent is no longer this one: the change completed or
//     failed (recorded by an earlier run or the reconciliation): done;
//  2. past the deadline: record the *_failed event with code Timeout;
//  3. describe the instance and record what EC2 says (ObserveInstance
//     appends only a change; an observation of the target state closes the
//     intent);
//  4. the target is reached: done;
//  5. EC2 is in the state the call applies to: make the call (EC2 treats a
//     repeated start, stop or terminate as a no-op);
//  6. snooze and poll again.
type transition struct {
	kind   application.JobKind
	intent worker.Intent
	// reached reports whether the observed state completes the change.
	reached func(worker.EC2State) bool
	// actOn reports whether the call applies in the observed state (start a
	// stopped instance; not a stopping one, which must first stop).
	actOn func(worker.EC2State) bool
	act   func(ctx context.Context, cloud application.CloudProvider, region, instanceID string) error
	// recordFailed is the *_failed command.
	recordFailed func(app *application.App, ctx context.Context, id, code, message string) (application.Result, error)
}

// drive runs the transition once for a job caused by c.
func (rt *runtime) drive(ctx context.Context, row *rivertype.JobRow, c Cause, t transition) error {
	ctx = causeContext(ctx, t.kind, c)
	st, err := rt.deps.App.WorkerState(ctx, c.WorkerID)
	if err != nil {
		return fmt.Errorf("%s: load worker %s: %w", t.kind, c.WorkerID, err)
	}
	if st.Intent != t.intent {
		return nil // completed or failed already
	}
	record := func(code, message string) error {
		_, err := t.recordFailed(rt.deps.App, ctx, c.WorkerID, code, message)
		return err
	}
	if rt.pastDeadline(row.CreatedAt, rt.opts.TransitionDeadline) {
		msg := fmt.Sprintf("the instance did not reach the requested state within %s", rt.opts.TransitionDeadline)
		if err := record(timeoutCode, msg); err != nil {
			return err
		}
		return river.JobCancel(fmt.Errorf("%s of worker %s: %s", t.kind, c.WorkerID, msg))
	}
	instanceID := st.InstanceID
	if instanceID == "" {
		if t.intent != worker.IntentTerminate {
			return river.JobCancel(fmt.Errorf("%s: worker %s has no instance", t.kind, c.WorkerID))
		}
		// A failed launch may still have left an instance tagged with the
		// worker's id: find it, or record that there is none.
		inst, found, err := rt.findTagged(ctx, st.Region, c.WorkerID)
		if err != nil {
			return rt.failure(ctx, row, err, record)
		}
		if !found {
			_, err := rt.deps.App.ObserveInstance(ctx, c.WorkerID, notFoundObservation())
			return err
		}
		if _, err := rt.deps.App.ObserveInstance(ctx, c.WorkerID, rt.observation(inst, false)); err != nil {
			return err
		}
		instanceID = inst.InstanceID
	}
	var inst application.Instance
	err = rt.call(ctx, func(ctx context.Context) (err error) {
		inst, err = rt.deps.Cloud.DescribeInstance(ctx, st.Region, instanceID)
		return err
	})
	switch {
	case application.IsCloudNotFound(err):
		// The instance is gone: that is the truth, whatever was asked.
		_, err := rt.deps.App.ObserveInstance(ctx, c.WorkerID, notFoundObservation())
		return err
	case err != nil:
		return rt.failure(ctx, row, err, record)
	}
	if _, err := rt.deps.App.ObserveInstance(ctx, c.WorkerID, rt.observation(inst, false)); err != nil {
		return fmt.Errorf("%s: record observation: %w", t.kind, err)
	}
	if t.reached(inst.State) {
		return nil
	}
	if t.actOn(inst.State) {
		err := rt.call(ctx, func(ctx context.Context) error { return t.act(ctx, rt.deps.Cloud, st.Region, instanceID) })
		switch {
		case application.IsCloudNotFound(err):
			_, err := rt.deps.App.ObserveInstance(ctx, c.WorkerID, notFoundObservation())
			return err
		case err != nil:
			return rt.failure(ctx, row, err, record)
		}
		rt.log.InfoContext(ctx, "jobs: EC2 call made", slog.String("kind", string(t.kind)),
			slog.String("worker_id", c.WorkerID), slog.String("instance_id", instanceID))
	}
	return river.JobSnooze(rt.opts.PollInterval)
}

// findTagged looks for the instance of the region tagged with the worker's
// id (one paged DescribeInstances of the managed instances).
func (rt *runtime) findTagged(ctx context.Context, region, workerID string) (application.Instance, bool, error) {
	var all []application.Instance
	err := rt.call(ctx, func(ctx context.Context) (err error) {
		all, err = rt.deps.Cloud.DescribeManaged(ctx, region)
		return err
	})
	if err != nil {
		return application.Instance{}, false, err
	}
	var best application.Instance
	found := false
	for _, in := range all {
		if in.Tags[worker.TagWorkerID] != workerID || in.State == worker.EC2Terminated {
			continue
		}
		if !found || in.LaunchTime.After(best.LaunchTime) {
			best, found = in, true
		}
	}
	return best, found, nil
}

// lifecycleTimeout bounds one run of a lifecycle job: a describe, a call
// and the commands that record them.
const lifecycleTimeout = 2 * time.Minute

// lifecycleMaxAttempts bounds the retries of a lifecycle job; the overall
// deadline normally ends it first.
const lifecycleMaxAttempts = 25
