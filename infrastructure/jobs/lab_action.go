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

// LabActionArgs is a lab_action job: start, stop, wipe, delete or import a
// lab on the worker's controller after worker.lab_action_requested, then
// record lab_action_completed or lab_action_failed.
type LabActionArgs struct {
	Cause
	RequestID string           `json:"request_id"`
	Action    worker.LabAction `json:"action"`
	LabID     string           `json:"lab_id,omitempty"`
	Title     string           `json:"title,omitempty"`
	YAML      string           `json:"yaml,omitempty"`
}

// Kind implements river.JobArgs.
func (LabActionArgs) Kind() string { return string(application.JobLabAction) }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (LabActionArgs) InsertOpts() river.InsertOpts {
	return reactorInsertOpts(QueueCML, cmlMaxAttempts)
}

type labActionWorker struct {
	river.WorkerDefaults[LabActionArgs]
	rt *runtime
}

func (w *labActionWorker) NextRetry(job *river.Job[LabActionArgs]) time.Time {
	return w.rt.nextRetry(job.Attempt)
}

func (w *labActionWorker) Timeout(*river.Job[LabActionArgs]) time.Duration { return cmlJobTimeout }

// recordAttempts is how often a job tries to record an outcome whose side
// effect already happened before giving up (and being retried by River).
const recordAttempts = 3

// Work performs the operation once the request is still pending. Start,
// stop and wipe are idempotent in CML, and deleting a lab that is gone
// completes the request. An import is not idempotent: it is retried only
// when the controller refused it (unavailable, throttled, busy), never after
// a timeout, which may hide an import that happened.
func (w *labActionWorker) Work(ctx context.Context, job *river.Job[LabActionArgs]) error {
	rt, a := w.rt, job.Args
	ctx = causeContext(ctx, application.JobLabAction, a.Cause)
	st, err := rt.deps.App.WorkerState(ctx, a.WorkerID)
	if err != nil {
		return fmt.Errorf("lab_action: load worker %s: %w", a.WorkerID, err)
	}
	pending, ok := st.PendingLabActions[a.RequestID]
	if !ok {
		return nil // recorded already
	}
	record := func(code, message string) error {
		_, err := rt.deps.App.RecordLabActionFailed(ctx, a.WorkerID, a.RequestID, code, message)
		return err
	}
	if done, err := rt.cmlPreconditions(job.CreatedAt, rt.opts.LabDeadline, st, record); done {
		return err
	}
	labID := a.LabID
	err = rt.call(ctx, func(ctx context.Context) (err error) {
		switch a.Action {
		case worker.LabImport:
			labID, err = rt.deps.CML.ImportLab(ctx, st.Endpoint, a.Title, a.YAML)
		case worker.LabDelete:
			err = rt.deps.CML.DeleteLab(ctx, st.Endpoint, a.LabID)
			if application.IsCloudNotFound(err) {
				err = nil // already gone: the requested end state
			}
		default:
			err = rt.deps.CML.LabAction(ctx, st.Endpoint, a.LabID, a.Action)
		}
		return err
	})
	if err != nil {
		if a.Action == worker.LabImport && application.CloudErrorOf(err).Kind == application.CloudTimeout && ctx.Err() == nil {
			// The controller may have imported the lab: do not import twice.
			msg := "the import timed out and may have happened; check the worker's labs: " + err.Error()
			if rerr := record(timeoutCode, msg); rerr != nil {
				return rerr
			}
			return river.JobCancel(err)
		}
		return rt.failure(ctx, job.JobRow, err, record)
	}
	// The operation happened: record it even if the store is briefly
	// unavailable, rather than let River run the operation again.
	for attempt := 1; ; attempt++ {
		_, err = rt.deps.App.RecordLabActionCompleted(ctx, a.WorkerID, a.RequestID, labID)
		if err == nil || attempt == recordAttempts || ctx.Err() != nil {
			break
		}
		sleep(ctx, time.Duration(attempt)*200*time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("lab_action: record completion of request %s: %w", a.RequestID, err)
	}
	rt.log.InfoContext(ctx, "jobs: lab action done", slog.String("worker_id", a.WorkerID),
		slog.String("action", string(a.Action)), slog.String("lab_id", labID))
	// A person asked for it through the product: that is activity on the
	// worker, which the controller attributes to the product's own API user
	// (excluded from idle detection).
	if _, err := rt.deps.App.ObserveActivity(ctx, a.WorkerID, pending.RequestedAt, "lab_"+string(a.Action)); err != nil {
		rt.log.WarnContext(ctx, "jobs: cannot record the lab action as activity", slog.String("worker_id", a.WorkerID), slog.Any("error", err))
	}
	// Show the new lab list at once rather than at the next labs_sync.
	rt.syncLabs(ctx, a.WorkerID, st.Endpoint)
	return nil
}
