package jobs

import (
	"context"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// IdleCheckArgs is an idle_check job: read each running worker's CML
// telemetry events, record newer activity of a person, and stop the workers
// that the idle rule says are idle.
type IdleCheckArgs struct {
	Manual bool `json:"manual,omitempty"`
}

// Kind implements river.JobArgs.
func (IdleCheckArgs) Kind() string { return string(application.JobIdleCheck) }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (IdleCheckArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueFleet, MaxAttempts: fleetMaxAttempts}
}

type idleCheckWorker struct {
	river.WorkerDefaults[IdleCheckArgs]
	rt *runtime
}

func (w *idleCheckWorker) NextRetry(job *river.Job[IdleCheckArgs]) time.Time {
	return w.rt.nextRetry(job.Attempt)
}

func (w *idleCheckWorker) Timeout(*river.Job[IdleCheckArgs]) time.Duration {
	return w.rt.opts.FleetJobTimeout
}

func (w *idleCheckWorker) Work(ctx context.Context, job *river.Job[IdleCheckArgs]) error {
	ctx = jobContext(ctx, application.JobIdleCheck, job.ID)
	_, err := w.rt.checkIdle(ctx)
	return err
}

// IdleResult counts what one idle check did.
type IdleResult struct {
	Checked  int // running workers with idle detection on
	Activity int // workers whose activity moved
	Stopped  int // workers stopped as idle
	Skipped  int // workers whose telemetry could not be read (never stopped)
}

// checkIdle applies the idle rule (DESIGN.md section 5, upstream section
// 5.3 without its bugs): activity is a relevant telemetry event of a person
// newer than the last known activity (the product's own API user and the
// automation accounts excluded); activity_observed is recorded only when it
// moves; the rule itself is the domain's (reference time = latest of
// activity, any observed start and creation; snooze after every start;
// global or per-worker timeout; per-worker opt-out), evaluated first on the
// read model and, when it says idle, again on the aggregate by StopIfIdle,
// which records idle_detected and stop_requested{idle_timeout}. A worker
// whose telemetry cannot be read is never stopped.
func (rt *runtime) checkIdle(ctx context.Context) (IdleResult, error) {
	var res IdleResult
	eff, err := rt.effectiveSettings(ctx)
	if err != nil {
		return res, err
	}
	policy := eff.IdlePolicy()
	if !policy.Enabled {
		return res, nil
	}
	views, err := rt.listWorkers(ctx, application.WorkerFilter{Status: worker.StatusRunning})
	if err != nil {
		return res, err
	}
	var eligible []application.WorkerView
	for _, v := range views {
		if v.IdleDetectionEnabled {
			eligible = append(eligible, v)
		}
	}
	res.Checked = len(eligible)
	type outcome struct{ moved, stopped, skipped bool }
	outcomes := make([]outcome, len(eligible))
	idx := make(map[string]int, len(eligible))
	for i, v := range eligible {
		idx[v.ID] = i
	}
	err = forEach(ctx, rt.opts.CMLConcurrency, eligible, func(ctx context.Context, v application.WorkerView) error {
		o := &outcomes[idx[v.ID]]
		st := v.State
		if st.Endpoint == "" {
			o.skipped = true
			return nil
		}
		var events []application.CMLTelemetryEvent
		err := rt.call(ctx, func(ctx context.Context) (err error) {
			events, err = rt.deps.CML.TelemetryEvents(ctx, st.Endpoint)
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			o.skipped = true
			rt.log.InfoContext(ctx, "jobs: cannot read CML telemetry; not checking idleness",
				slog.String("worker_id", st.ID), slog.Any("error", err))
			return nil
		}
		now := rt.now().UTC()
		if at, category, ok := rt.activity.latest(st.Endpoint, events, st.LastActivityAt, now); ok {
			if _, err := rt.deps.App.ObserveActivity(ctx, st.ID, at, category); err != nil {
				rt.log.WarnContext(ctx, "jobs: cannot record activity", slog.String("worker_id", st.ID), slog.Any("error", err))
				return nil
			}
			st.LastActivityAt, o.moved = at, true
		}
		if !worker.FromState(st, v.Revision).IdleDecision(now, policy).Eligible {
			return nil
		}
		r, d, err := rt.deps.App.StopIfIdle(ctx, st.ID)
		if err != nil {
			rt.log.WarnContext(ctx, "jobs: idle stop failed", slog.String("worker_id", st.ID), slog.Any("error", err))
			return nil
		}
		if r.Changed {
			o.stopped = true
			rt.log.InfoContext(ctx, "jobs: idle worker stopped", slog.String("worker_id", st.ID),
				slog.Int64("idle_seconds", d.IdleSeconds), slog.Int64("timeout_seconds", d.TimeoutSeconds),
				slog.String("reference", d.ReferenceKind))
		}
		return nil
	})
	for _, o := range outcomes {
		if o.moved {
			res.Activity++
		}
		if o.stopped {
			res.Stopped++
		}
		if o.skipped {
			res.Skipped++
		}
	}
	return res, err
}
