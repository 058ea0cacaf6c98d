package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync/atomic"
	"time"

	"github.com/riverqueue/river"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// ReconcileArgs is a fleet_reconcile job: compare every managed instance of
// a region with the workers and record what changed.
type ReconcileArgs struct {
	Region string `json:"region"`
	// Manual is set on a run an admin asked for (RunJob), which makes it
	// unique apart from the scheduled runs.
	Manual bool `json:"manual,omitempty"`
}

// Kind implements river.JobArgs.
func (ReconcileArgs) Kind() string { return string(application.JobFleetReconcile) }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (ReconcileArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueFleet, MaxAttempts: fleetMaxAttempts}
}

// fleetMaxAttempts bounds the retries of a periodic job: the next period
// runs it again anyway.
const fleetMaxAttempts = 3

type reconcileWorker struct {
	river.WorkerDefaults[ReconcileArgs]
	rt *runtime
}

func (w *reconcileWorker) NextRetry(job *river.Job[ReconcileArgs]) time.Time {
	return w.rt.nextRetry(job.Attempt)
}

func (w *reconcileWorker) Timeout(*river.Job[ReconcileArgs]) time.Duration {
	return w.rt.opts.FleetJobTimeout
}

func (w *reconcileWorker) Work(ctx context.Context, job *river.Job[ReconcileArgs]) error {
	ctx = jobContext(ctx, application.JobFleetReconcile, job.ID)
	res, err := w.rt.reconcile(ctx, job.Args.Region)
	if err != nil {
		return fmt.Errorf("fleet_reconcile %s: %w", job.Args.Region, err)
	}
	w.rt.log.DebugContext(ctx, "jobs: fleet reconciled", slog.String("region", job.Args.Region),
		slog.Int("instances", res.Instances), slog.Int("workers", res.Workers),
		slog.Int("observed", res.Observed), slog.Int("events", res.Events), slog.Int("unknown", res.Unknown))
	return nil
}

// ReconcileResult counts what one reconciliation of a region did.
type ReconcileResult struct {
	Instances int // managed instances EC2 listed
	Workers   int // live workers of the region
	Observed  int // workers whose observation differed from the read model
	Events    int // events appended
	Unknown   int // instances tagged with a worker id nobody knows
}

// reconcile reads the region's managed instances with one paged
// DescribeInstances (plus DescribeInstanceStatus) and records, for each live
// worker, what differs from the read model. Observations equal to the read
// model are not even sent to the aggregate: a steady fleet costs no event and
// no stream read. A worker whose instance is missing from the list (not
// tagged, or gone) is described on its own. Instances tagged with a worker
// id the read model does not know are logged, never imported.
func (rt *runtime) reconcile(ctx context.Context, region string) (ReconcileResult, error) {
	var res ReconcileResult
	var insts []application.Instance
	err := rt.call(ctx, func(ctx context.Context) (err error) {
		insts, err = rt.deps.Cloud.DescribeManaged(ctx, region)
		return err
	})
	if err != nil {
		return res, err
	}
	res.Instances = len(insts)
	views, err := rt.listWorkers(ctx, application.WorkerFilter{Region: region, IncludeTerminated: true})
	if err != nil {
		return res, err
	}
	pendingTags, err := rt.pendingJobs(ctx, application.JobEC2Tags)
	if err != nil {
		return res, err
	}
	byInstance := make(map[string]application.Instance, len(insts))
	byWorker := map[string]application.Instance{}
	for _, in := range insts {
		byInstance[in.InstanceID] = in
		if id := in.Tags[worker.TagWorkerID]; id != "" && in.State != worker.EC2Terminated {
			if cur, ok := byWorker[id]; !ok || in.LaunchTime.After(cur.LaunchTime) {
				byWorker[id] = in
			}
		}
	}
	known := make(map[string]bool, len(views))
	var live []application.WorkerView
	for _, v := range views {
		known[v.ID] = true
		if !v.Status.Terminal() {
			live = append(live, v)
		}
	}
	res.Workers = len(live)
	for id, in := range byWorker {
		if !known[id] {
			res.Unknown++
			if _, logged := rt.unknownLogged.LoadOrStore(in.InstanceID, true); !logged {
				rt.log.WarnContext(ctx, "jobs: instance tagged with an unknown worker id; not imported",
					slog.String("region", region), slog.String("instance_id", in.InstanceID), slog.String("worker_id", id))
			}
		}
	}
	var observed, events atomic.Int64
	err = forEach(ctx, rt.opts.ReconcileConcurrency, live, func(ctx context.Context, v application.WorkerView) error {
		st := v.State
		inst, found := application.Instance{}, false
		if st.InstanceID != "" {
			inst, found = byInstance[st.InstanceID]
		} else if inst, found = byWorker[st.ID]; !found {
			return nil // nothing launched yet
		}
		var obs worker.Observation
		switch {
		case found:
			obs = rt.observation(inst, !pendingTags[st.ID] && rt.now().Sub(st.UpdatedAt) >= rt.opts.TagsSettle)
		case st.EC2State == worker.EC2Terminated || st.EC2State == worker.EC2NotFound:
			return nil
		default:
			// Not in the managed list: an instance without our tags, or one
			// that is gone.
			var one application.Instance
			err := rt.call(ctx, func(ctx context.Context) (err error) {
				one, err = rt.deps.Cloud.DescribeInstance(ctx, region, st.InstanceID)
				return err
			})
			switch {
			case application.IsCloudNotFound(err):
				obs = notFoundObservation()
			case err != nil:
				rt.log.WarnContext(ctx, "jobs: cannot describe a worker's instance", slog.String("worker_id", st.ID),
					slog.String("instance_id", st.InstanceID), slog.Any("error", err))
				return nil
			default:
				obs = rt.observation(one, false)
			}
		}
		if !observationDiffers(st, obs) {
			return nil
		}
		observed.Add(1)
		r, err := rt.deps.App.ObserveInstance(ctx, st.ID, obs)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rt.log.WarnContext(ctx, "jobs: cannot record an observation", slog.String("worker_id", st.ID), slog.Any("error", err))
			return nil
		}
		events.Add(int64(len(r.Events)))
		return nil
	})
	res.Observed, res.Events = int(observed.Load()), int(events.Load())
	return res, err
}

// observationDiffers reports whether an observation may change the worker:
// anything EC2 reports that the read model does not hold yet, or any
// observation while a change is in flight (the aggregate decides whether it
// completes it).
func observationDiffers(st worker.State, o worker.Observation) bool {
	switch {
	case st.Intent != worker.IntentNone:
		return true
	case st.InstanceID == "" && o.InstanceID != "":
		return true
	case o.State != st.EC2State, o.PublicIP != st.PublicIP, o.PrivateIP != st.PrivateIP,
		o.InstanceType != "" && o.InstanceType != st.InstanceType,
		o.SystemStatus != st.SystemStatus, o.InstanceStatus != st.InstanceStatus:
		return true
	case o.State != worker.EC2Terminated && o.State != worker.EC2NotFound && o.Endpoint != st.Endpoint:
		return true
	case o.Tags != nil && !maps.Equal(o.Tags, st.Tags):
		return true
	}
	return false
}

// listWorkers reads every worker of the read model matching f, page by page.
func (rt *runtime) listWorkers(ctx context.Context, f application.WorkerFilter) ([]application.WorkerView, error) {
	const page = 1000
	f.Limit = page
	var out []application.WorkerView
	for f.Offset = 0; ; f.Offset += page {
		views, _, err := rt.deps.Workers.ListWorkers(ctx, f)
		if err != nil {
			return nil, fmt.Errorf("list workers: %w", err)
		}
		out = append(out, views...)
		if len(views) < page {
			return out, nil
		}
	}
}

// pendingJobs returns the ids of the workers with a job of that kind not
// finished yet (available, pending, retryable, running or scheduled).
func (rt *runtime) pendingJobs(ctx context.Context, kind application.JobKind) (map[string]bool, error) {
	rows, err := rt.pool.Query(ctx, `SELECT DISTINCT args->>'worker_id' FROM river_job
		WHERE kind = $1 AND state IN ('available', 'pending', 'retryable', 'running', 'scheduled')`, string(kind))
	if err != nil {
		return nil, fmt.Errorf("pending %s jobs: %w", kind, err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id *string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("pending %s jobs: %w", kind, err)
		}
		if id != nil {
			out[*id] = true
		}
	}
	return out, rows.Err()
}
