package application

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// WorkerState loads the worker aggregate from its stream and returns its
// current state (the system principal only). Background jobs decide from
// this, never from a read model that may lag behind the log.
func (a *App) WorkerState(ctx context.Context, id string) (worker.State, error) {
	if _, err := rbac.Authorize(ctx, rbac.WorkerRecord); err != nil {
		return worker.State{}, err
	}
	if err := checkID("id", id); err != nil {
		return worker.State{}, err
	}
	w, err := a.workers.Load(ctx, id)
	if err != nil {
		return worker.State{}, err
	}
	if !w.Exists() {
		return worker.State{}, notFound("worker", id)
	}
	return w.State(), nil
}

// EnqueuedJob describes a job an on-demand request enqueued.
type EnqueuedJob struct {
	JobID    int64   `json:"job_id"`
	Kind     JobKind `json:"kind"`
	WorkerID string  `json:"worker_id,omitempty"`
	Region   string  `json:"region,omitempty"`
	// Duplicate is true when the same job was already enqueued in the
	// current period: nothing new was enqueued and JobID is the existing
	// job. River's uniqueness, shared by every instance of the service, is
	// the throttle.
	Duplicate bool `json:"duplicate"`
	// State is the job's River state (available, running, completed, ...).
	State       string    `json:"state"`
	ScheduledAt time.Time `json:"scheduled_at"`
}

// JobInfo is one job as River holds it.
type JobInfo struct {
	ID          int64     `json:"id"`
	Kind        JobKind   `json:"kind"`
	Queue       string    `json:"queue"`
	State       string    `json:"state"`
	Attempt     int       `json:"attempt"`
	MaxAttempts int       `json:"max_attempts"`
	WorkerID    string    `json:"worker_id,omitempty"`
	Region      string    `json:"region,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	ScheduledAt time.Time `json:"scheduled_at"`
	AttemptedAt time.Time `json:"attempted_at,omitzero"`
	FinalizedAt time.Time `json:"finalized_at,omitzero"`
	// LastError is the latest attempt's error, if any.
	LastError string `json:"last_error,omitempty"`
}

// PeriodicJobInfo is one periodic job: its interval (from the effective
// runtime settings or the configuration) and its latest run.
type PeriodicJobInfo struct {
	Kind            JobKind `json:"kind"`
	Region          string  `json:"region,omitempty"`
	Enabled         bool    `json:"enabled"`
	IntervalSeconds int64   `json:"interval_seconds"`
	// NextRunAt is when the next period starts (runs are aligned on
	// multiples of the interval).
	NextRunAt time.Time `json:"next_run_at,omitzero"`
	LastRun   *JobInfo  `json:"last_run,omitempty"`
}

// JobsOverview is GET /api/system/jobs: the periodic jobs, the most recent
// jobs, and how many jobs are in each state.
type JobsOverview struct {
	Periodic []PeriodicJobInfo `json:"periodic"`
	Recent   []JobInfo         `json:"recent"`
	Counts   map[string]int    `json:"counts"`
}

// JobQueue is the port to the job system (infrastructure/jobs, on River).
// Enqueueing is for operational requests that change nothing in the domain
// (DESIGN.md section 2, rule 1); domain changes reach the jobs through the
// reactor instead.
type JobQueue interface {
	// EnqueueRefresh enqueues a refresh of one worker (EC2 state, metrics,
	// CML service, licence and labs), at most one per worker per throttle
	// period across every instance of the service.
	EnqueueRefresh(ctx context.Context, workerID string) (EnqueuedJob, error)
	// RunNow enqueues a run of a periodic job now (one per region for the
	// per-region kinds), at most one per kind (and region) per short period.
	RunNow(ctx context.Context, kind JobKind) ([]EnqueuedJob, error)
	// Overview reports the periodic jobs, the recent jobs and the counts.
	Overview(ctx context.Context) (JobsOverview, error)
}

// JobControl answers the job commands and queries: the on-demand refresh of
// a worker, running a periodic job now, and the jobs overview.
type JobControl struct {
	app   *App
	queue JobQueue
}

// NewJobControl builds the job handlers. It panics when a dependency is
// missing (a wiring bug).
func NewJobControl(app *App, queue JobQueue) *JobControl {
	if app == nil || queue == nil {
		panic("application: NewJobControl needs the App and a JobQueue")
	}
	return &JobControl{app: app, queue: queue}
}

// RefreshWorker enqueues a refresh of the worker (user+); repeated requests
// within the throttle period return the job already enqueued (Duplicate).
// Terminated and removed workers have nothing to refresh.
func (c *JobControl) RefreshWorker(ctx context.Context, id string) (EnqueuedJob, error) {
	if _, err := rbac.Authorize(ctx, rbac.WorkerRefresh); err != nil {
		return EnqueuedJob{}, err
	}
	if err := checkID("id", id); err != nil {
		return EnqueuedJob{}, err
	}
	v, err := c.app.opts.Workers.GetWorker(ctx, id)
	if err != nil {
		return EnqueuedJob{}, asNotFound(err, "worker", id)
	}
	if v.Status.Terminal() {
		return EnqueuedJob{}, &domain.TransitionError{Command: "refresh", State: string(v.Status), Reason: "the worker is no longer managed"}
	}
	job, err := c.queue.EnqueueRefresh(ctx, id)
	if err != nil {
		return EnqueuedJob{}, fmt.Errorf("enqueue refresh of worker %s: %w", id, err)
	}
	return job, nil
}

// RunJob runs a periodic job now (admin). An unknown kind is not found.
func (c *JobControl) RunJob(ctx context.Context, kind string) ([]EnqueuedJob, error) {
	if _, err := rbac.Authorize(ctx, rbac.SystemJobsRun); err != nil {
		return nil, err
	}
	k := JobKind(kind)
	if !slices.Contains(PeriodicJobKinds, k) {
		return nil, &NotFoundError{Kind: "periodic job", ID: kind}
	}
	jobs, err := c.queue.RunNow(ctx, k)
	if err != nil {
		return nil, fmt.Errorf("run job %s: %w", kind, err)
	}
	if jobs == nil {
		jobs = []EnqueuedJob{}
	}
	return jobs, nil
}

// Jobs reports the periodic jobs, the recent jobs and the job counts (user+,
// auditor).
func (c *JobControl) Jobs(ctx context.Context) (JobsOverview, error) {
	if _, err := rbac.Authorize(ctx, rbac.SystemRead); err != nil {
		return JobsOverview{}, err
	}
	o, err := c.queue.Overview(ctx)
	if err != nil {
		return JobsOverview{}, fmt.Errorf("jobs overview: %w", err)
	}
	if o.Periodic == nil {
		o.Periodic = []PeriodicJobInfo{}
	}
	if o.Recent == nil {
		o.Recent = []JobInfo{}
	}
	if o.Counts == nil {
		o.Counts = map[string]int{}
	}
	return o, nil
}
