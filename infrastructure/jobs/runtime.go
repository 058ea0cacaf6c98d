package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// runtime is what every worker shares: the dependencies, the options and
// the helpers that turn a job into application commands.
type runtime struct {
	deps     Deps
	opts     Options
	log      *slog.Logger
	pool     *pgxpool.Pool
	activity activityFilter

	// unknownLogged remembers the instances tagged with an unknown worker
	// id that were logged already (once per process each).
	unknownLogged sync.Map

	// settings caches the effective runtime settings for the periodic
	// schedules (refreshed in the background; see refreshSettings).
	settings atomic.Pointer[settings.Values]
}

// Cause identifies the event a reactor job follows: the worker, the event
// (whose id makes the job unique, so that a replay inserts nothing) and the
// correlation id of the chain the event belongs to.
type Cause struct {
	WorkerID      string `json:"worker_id"`
	EventID       string `json:"event_id" river:"unique"`
	CorrelationID string `json:"correlation_id,omitempty"`
}

// allStates makes a reactor job unique by its causing event whatever the
// state of the first job, cancelled and discarded ones included.
var allStates = []rivertype.JobState{
	rivertype.JobStateAvailable, rivertype.JobStateCancelled, rivertype.JobStateCompleted,
	rivertype.JobStateDiscarded, rivertype.JobStatePending, rivertype.JobStateRetryable,
	rivertype.JobStateRunning, rivertype.JobStateScheduled,
}

// reactorInsertOpts are the insert options of every job a reactor inserts.
func reactorInsertOpts(queue string, maxAttempts int) river.InsertOpts {
	return river.InsertOpts{Queue: queue, MaxAttempts: maxAttempts,
		UniqueOpts: river.UniqueOpts{ByArgs: true, ByState: allStates}}
}

// commandContext returns ctx carrying the system principal of the job kind,
// the chain's correlation id and the causing event's id: every event the
// job's commands append says who (system:<kind>) and why.
func commandContext(ctx context.Context, kind application.JobKind, correlationID, causationID string) context.Context {
	ctx = rbac.WithPrincipal(ctx, rbac.System(string(kind)))
	if correlationID != "" {
		ctx = application.WithCorrelationID(ctx, correlationID)
	}
	if causationID != "" {
		ctx = application.WithCausationID(ctx, causationID)
	}
	return ctx
}

// causeContext is commandContext for a reactor job.
func causeContext(ctx context.Context, kind application.JobKind, c Cause) context.Context {
	return commandContext(ctx, kind, c.CorrelationID, c.EventID)
}

// jobContext is commandContext for a job that follows no event (periodic or
// on demand): the job itself starts the chain.
func jobContext(ctx context.Context, kind application.JobKind, jobID int64) context.Context {
	return commandContext(ctx, kind, "job-"+strconv.FormatInt(jobID, 10), "")
}

// nextRetry is the retry schedule of every worker: exponential from
// RetryBase, capped at RetryMax, with ±20 % jitter.
func (rt *runtime) nextRetry(attempt int) time.Time {
	d := rt.opts.RetryBase
	for i := 1; i < attempt && d < rt.opts.RetryMax; i++ {
		d *= 2
	}
	d = min(d, rt.opts.RetryMax)
	jitter := time.Duration(rand.Int64N(int64(d)/5+1)) * 2
	return time.Now().Add(d - d/5 + jitter)
}

// call runs one call to AWS or CML within CallTimeout.
func (rt *runtime) call(ctx context.Context, f func(ctx context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, rt.opts.CallTimeout)
	defer cancel()
	return f(cctx)
}

// failure decides what a failed call means for a job. A cancelled job
// context (shutdown, job timeout) records nothing: the job runs again. A
// retryable error is returned for River to retry, unless the job has used
// its last attempt. A permanent error, or the last attempt, records the
// outcome with record (the *_failed command of the job) and cancels the job.
func (rt *runtime) failure(ctx context.Context, row *rivertype.JobRow, err error, record func(code, message string) error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("job interrupted: %w", err)
	}
	ce := application.CloudErrorOf(err)
	if ce.Retryable() && row.Attempt < row.MaxAttempts {
		rt.log.InfoContext(ctx, "job: retryable failure", slog.String("kind", row.Kind), slog.Int64("job_id", row.ID),
			slog.Int("attempt", row.Attempt), slog.Any("error", err))
		return err
	}
	code := failureCode(ce)
	if rerr := record(code, ce.Error()); rerr != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("job interrupted: %w", rerr)
		}
		return fmt.Errorf("record failure %s (%v): %w", code, err, rerr)
	}
	rt.log.WarnContext(ctx, "job failed", slog.String("kind", row.Kind), slog.Int64("job_id", row.ID),
		slog.String("code", code), slog.Any("error", err))
	return river.JobCancel(err)
}

// failureCode is the code a *_failed event records: the provider's code
// (AWS error code, CML HTTP status) or the error kind.
func failureCode(ce *application.CloudError) string {
	if ce.Code != "" {
		return ce.Code
	}
	if ce.Kind != "" {
		return string(ce.Kind)
	}
	return string(application.CloudUnknown)
}

// pastDeadline reports whether a job created at created has run out of its
// overall time. Job rows carry the database's time, so this is the wall
// clock's business, not Options.Clock's.
func (rt *runtime) pastDeadline(created time.Time, limit time.Duration) bool {
	return time.Now().After(created.Add(limit))
}

func (rt *runtime) now() time.Time { return rt.opts.Clock.Now() }

// timeoutCode is the code a job records when its operation did not
// complete in time.
const timeoutCode = "Timeout"

// effectiveSettings reads the runtime settings (saved values over the
// environment's) now.
func (rt *runtime) effectiveSettings(ctx context.Context) (settings.Values, error) {
	saved, _, _, err := rt.deps.Settings.SavedSettings(ctx)
	if err != nil {
		return settings.Values{}, fmt.Errorf("read settings: %w", err)
	}
	v, _ := settings.Effective(rt.deps.Defaults, saved)
	return v, nil
}

// cachedSettings returns the settings last loaded by refreshSettings (the
// environment's until the first load).
func (rt *runtime) cachedSettings() settings.Values {
	if v := rt.settings.Load(); v != nil {
		return *v
	}
	v, _ := settings.Effective(rt.deps.Defaults, settings.Patch{})
	return v
}

// refreshSettings loads the effective settings into the cache every
// SettingsRefresh until ctx ends, so that the periodic schedules follow a
// changed interval without a restart.
func (rt *runtime) refreshSettings(ctx context.Context) {
	t := time.NewTicker(rt.opts.SettingsRefresh)
	defer t.Stop()
	for {
		if v, err := rt.effectiveSettings(ctx); err == nil {
			rt.settings.Store(&v)
		} else if ctx.Err() == nil {
			rt.log.WarnContext(ctx, "jobs: cannot read the runtime settings; keeping the last ones", slog.Any("error", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// endpointFor renders the CML endpoint template for an instance (see
// application.EndpointFor).
func endpointFor(template string, inst application.Instance) string {
	return application.EndpointFor(template, inst)
}

// observation is what EC2 reported about an instance, for ObserveInstance.
// Tags are passed only when withTags (the reconciliation reads them; the
// lifecycle jobs leave them to it).
func (rt *runtime) observation(inst application.Instance, withTags bool) worker.Observation {
	o := worker.Observation{
		InstanceID: inst.InstanceID, State: inst.State, PublicIP: inst.PublicIP, PrivateIP: inst.PrivateIP,
		InstanceType: inst.InstanceType, SystemStatus: inst.SystemStatus, InstanceStatus: inst.InstanceStatus,
		Endpoint: endpointFor(rt.opts.EndpointTemplate, inst),
	}
	if withTags {
		o.Tags = inst.Tags
	}
	return o
}

// notFoundObservation is what a worker's instance that EC2 no longer knows
// looks like.
func notFoundObservation() worker.Observation { return worker.Observation{State: worker.EC2NotFound} }

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
