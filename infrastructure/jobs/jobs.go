// Package jobs runs the side effects and the background work of CML Cloud
// Manager on River (DESIGN.md section 6).
//
//   - The Reactor follows the workers' lifecycle streams and inserts one job
//     per side effect an event calls for, in the transaction that advances
//     its checkpoint, unique by the causing event (a replay or a crash can
//     never lose or double a side effect).
//   - One River worker per job kind calls EC2, CloudWatch or CML through the
//     application's ports and records every outcome as a command of the
//     application, with the system principal of its kind, the chain's
//     correlation id and the causing event as causation.
//   - Periodic jobs (fleet_reconcile and fleet_metrics per region,
//     labs_sync, idle_check, telemetry_prune, auto_import when on) run on
//     River's elected leader, unique per period, at intervals read from the
//     effective runtime settings, so a change needs no restart.
//
// Errors are classified by application.CloudError: retryable ones are
// retried by River with backoff, permanent ones end the job with River's
// JobCancel after the *_failed event is recorded. Service also implements
// application.JobQueue (refresh, run now, overview).
package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"golang.org/x/sync/errgroup"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

// Queues. Lifecycle jobs have their own queue so that long fleet jobs never
// delay a start or a stop.
const (
	QueueCloud = "cloud" // ec2_launch, ec2_start, ec2_stop, ec2_terminate, ec2_tags, ec2_monitoring
	QueueCML   = "cml"   // license_register, license_deregister, lab_action
	QueueFleet = "fleet" // the periodic jobs and worker_refresh
)

// Deps are the parts the jobs use. All are required except Pruners (none:
// telemetry_prune does nothing) and Logger.
type Deps struct {
	App       *application.App
	Telemetry *application.Telemetry
	Cloud     application.CloudProvider
	CML       application.CMLClient
	// Sealer opens the licence tokens (license_register).
	Sealer application.TokenSealer
	// Store is the event log the reactor follows.
	Store    eventstore.Store
	Registry *domain.Registry
	// Workers is the worker_view read model: the fleet jobs list workers
	// from it (a list may lag a little; every decision that changes a worker
	// is taken again on the aggregate).
	Workers application.WorkerReadModel
	// Settings and Defaults give the effective runtime settings (intervals,
	// idle policy).
	Settings application.SettingsReadModel
	Defaults settings.Values
	// Regions are the managed regions (AWS_REGIONS).
	Regions []string
	// Pruners apply the telemetry retention.
	Pruners []Pruner
	Logger  *slog.Logger
}

// AutoImportOptions configure auto_import (off by default).
type AutoImportOptions struct {
	Enabled bool
	// Region and AMINamePattern (a glob such as "cisco-cml2.9-*") select the
	// instances; both are required when Enabled.
	Region         string
	AMINamePattern string
	// Interval between runs; default 1 h.
	Interval time.Duration
}

// Options tune the jobs. Zero values take the defaults named on each field.
type Options struct {
	// InsertOnly makes a client that only inserts jobs (an instance that
	// serves the API but runs no job workers): no queues, no periodic jobs,
	// no reactor.
	InsertOnly bool
	// NoPeriodic runs the workers and the reactor but schedules no
	// periodic job on this instance (an instance that must never run them
	// when it leads; tests that run the fleet jobs themselves).
	NoPeriodic bool
	// CloudWorkers, CMLWorkers and FleetWorkers are the MaxWorkers of the
	// queues; defaults 20, 10 and 4.
	CloudWorkers, CMLWorkers, FleetWorkers int
	// SoftStopTimeout is how long Stop lets running jobs finish before
	// cancelling them; default 20 s.
	SoftStopTimeout time.Duration
	// CallTimeout bounds each call to AWS or CML; default 30 s.
	CallTimeout time.Duration
	// PollInterval is the snooze between two polls of a change in flight
	// (instance state, licence registration); default 5 s.
	PollInterval time.Duration
	// RetryBase and RetryMax shape the retry schedule of retryable
	// failures: RetryBase·2^(attempt-1), at most RetryMax, ±20 %; defaults
	// 2 s and 2 min.
	RetryBase, RetryMax time.Duration
	// LaunchDeadline, TransitionDeadline, LicenseDeadline and LabDeadline
	// bound a whole operation, from its job's creation, before it is
	// recorded as failed with code Timeout; defaults 15 min, 10 min, 5 min
	// and 10 min.
	LaunchDeadline, TransitionDeadline, LicenseDeadline, LabDeadline time.Duration
	// FleetJobTimeout bounds one run of a fleet job; default 10 min.
	FleetJobTimeout time.Duration
	// CMLConcurrency bounds the controllers polled at once by a fleet job;
	// default 32. ReconcileConcurrency bounds the observations recorded at
	// once by a reconciliation; default 8.
	CMLConcurrency, ReconcileConcurrency int
	// EndpointTemplate is the CML endpoint of a worker, with {public_ip},
	// {private_ip} and {instance_id} placeholders (CML_ENDPOINT_TEMPLATE);
	// default "https://{public_ip}".
	EndpointTemplate string
	// TelemetryRetention is how long telemetry is kept
	// (TELEMETRY_RETENTION); default 7 days.
	TelemetryRetention time.Duration
	// RefreshThrottle is the period within which one worker is refreshed on
	// demand at most once, across all instances; default 30 s.
	RefreshThrottle time.Duration
	// PeriodicRecheck is how often the periodic schedules re-read their
	// interval; default 15 s. SettingsRefresh is how often the cached
	// runtime settings are reloaded; default 10 s.
	PeriodicRecheck, SettingsRefresh time.Duration
	// TagsSettle is how long after a worker's last lifecycle event the
	// reconciliation waits before it compares the instance's tags with the
	// worker's (a tag change requested here must reach EC2 first); default
	// 60 s.
	TagsSettle time.Duration
	// ActivityExcludedUsers are CML user ids whose telemetry events are not
	// activity (the product's own API user, CML_ACTIVITY_EXCLUDED_USER_IDS);
	// ActivityExcludedPattern is a regular expression of more such ids;
	// default DefaultExcludedUserPattern.
	ActivityExcludedUsers   []string
	ActivityExcludedPattern string
	AutoImport              AutoImportOptions
	// RescueStuckJobsAfter is when River gives a running job of a dead
	// process to another; default FleetJobTimeout plus a minute (a job
	// still running is never given away).
	RescueStuckJobsAfter time.Duration
	// FetchPollInterval and FetchCooldown tune how fast River picks up new
	// jobs (River's defaults when zero; tests lower them).
	FetchPollInterval, FetchCooldown time.Duration
	// ReactorLockRetry is how often a standby reactor tries to lead; default
	// 5 s.
	ReactorLockRetry time.Duration
	// Clock is the time of deadlines and idle decisions; default the system
	// clock. Use the application's clock.
	Clock application.Clock
}

func (o Options) withDefaults() (Options, error) {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	defInt(&o.CloudWorkers, 20)
	defInt(&o.CMLWorkers, 10)
	defInt(&o.FleetWorkers, 4)
	def(&o.SoftStopTimeout, 20*time.Second)
	def(&o.CallTimeout, 30*time.Second)
	def(&o.PollInterval, 5*time.Second)
	def(&o.RetryBase, 2*time.Second)
	def(&o.RetryMax, 2*time.Minute)
	def(&o.LaunchDeadline, 15*time.Minute)
	def(&o.TransitionDeadline, 10*time.Minute)
	def(&o.LicenseDeadline, 5*time.Minute)
	def(&o.LabDeadline, 10*time.Minute)
	def(&o.FleetJobTimeout, 10*time.Minute)
	defInt(&o.CMLConcurrency, 32)
	defInt(&o.ReconcileConcurrency, 8)
	if o.EndpointTemplate == "" {
		o.EndpointTemplate = "https://{public_ip}"
	}
	def(&o.TelemetryRetention, 7*24*time.Hour)
	def(&o.RefreshThrottle, 30*time.Second)
	def(&o.PeriodicRecheck, 15*time.Second)
	def(&o.SettingsRefresh, 10*time.Second)
	def(&o.TagsSettle, time.Minute)
	if o.ActivityExcludedPattern == "" {
		o.ActivityExcludedPattern = DefaultExcludedUserPattern
	}
	def(&o.AutoImport.Interval, time.Hour)
	def(&o.RescueStuckJobsAfter, o.FleetJobTimeout+time.Minute)
	def(&o.ReactorLockRetry, projections.DefaultLockRetry)
	if o.FetchPollInterval > 0 && o.FetchCooldown <= 0 {
		// River refuses a poll interval below its default cooldown (100 ms).
		o.FetchCooldown = min(o.FetchPollInterval, 100*time.Millisecond)
	}
	if o.Clock == nil {
		o.Clock = application.SystemClock
	}
	var problems []error
	if o.AutoImport.Enabled && (o.AutoImport.Region == "" || o.AutoImport.AMINamePattern == "") {
		problems = append(problems, errors.New("auto-import needs a region and an AMI name pattern"))
	}
	if o.RetryMax < o.RetryBase {
		problems = append(problems, errors.New("the maximum retry delay is below the base delay"))
	}
	return o, errors.Join(problems...)
}

// Service is the job system: the River client, its workers and periodic
// jobs, and the reactor. Create it with New, then Start and Stop it.
type Service struct {
	rt      *runtime
	pool    *pgxpool.Pool
	client  *river.Client[pgx.Tx]
	reactor *projections.Runner

	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	started bool
	stopped bool // a Service runs once
}

// New builds the job system on the pgx pool (River's tables must exist:
// pgdb.Migrate runs rivermigrate). ctx is not retained.
func New(ctx context.Context, pool *pgxpool.Pool, deps Deps, opts Options) (*Service, error) {
	var missing []string
	for name, ok := range map[string]bool{
		"App": deps.App != nil, "Telemetry": deps.Telemetry != nil, "Cloud": deps.Cloud != nil,
		"CML": deps.CML != nil, "Sealer": deps.Sealer != nil, "Store": deps.Store != nil,
		"Registry": deps.Registry != nil, "Workers": deps.Workers != nil, "Settings": deps.Settings != nil,
		"pool": pool != nil,
	} {
		if !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, fmt.Errorf("jobs: missing dependencies: %v", missing)
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	deps.Regions = slices.Clone(deps.Regions)
	self, _ := deps.CML.(UserIdentifier)
	activity, err := newActivityFilter(opts.ActivityExcludedUsers, opts.ActivityExcludedPattern, self)
	if err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	rt := &runtime{deps: deps, opts: opts, log: deps.Logger.With(slog.String("component", "jobs")),
		pool: pool, activity: activity}

	workers := river.NewWorkers()
	river.AddWorker(workers, &launchWorker{rt: rt})
	river.AddWorker(workers, &startWorker{rt: rt})
	river.AddWorker(workers, &stopWorker{rt: rt})
	river.AddWorker(workers, &terminateWorker{rt: rt})
	river.AddWorker(workers, &tagsWorker{rt: rt})
	river.AddWorker(workers, &monitoringWorker{rt: rt})
	river.AddWorker(workers, &licenseRegisterWorker{rt: rt})
	river.AddWorker(workers, &licenseDeregisterWorker{rt: rt})
	river.AddWorker(workers, &labActionWorker{rt: rt})
	river.AddWorker(workers, &reconcileWorker{rt: rt})
	river.AddWorker(workers, &metricsWorker{rt: rt})
	river.AddWorker(workers, &labsSyncWorker{rt: rt})
	river.AddWorker(workers, &idleCheckWorker{rt: rt})
	river.AddWorker(workers, &pruneWorker{rt: rt})
	river.AddWorker(workers, &autoImportWorker{rt: rt})
	river.AddWorker(workers, &refreshWorker{rt: rt})

	cfg := &river.Config{
		Logger:          deps.Logger.With(slog.String("component", "river")),
		Workers:         workers,
		SoftStopTimeout: opts.SoftStopTimeout,
		// Every worker sets its own timeout; this one only has to respect
		// River's rule that it not exceed RescueStuckJobsAfter.
		JobTimeout:           min(lifecycleTimeout, opts.RescueStuckJobsAfter),
		RescueStuckJobsAfter: opts.RescueStuckJobsAfter,
		FetchPollInterval:    opts.FetchPollInterval,
		FetchCooldown:        opts.FetchCooldown,
	}
	if !opts.InsertOnly {
		cfg.Queues = map[string]river.QueueConfig{
			QueueCloud: {MaxWorkers: opts.CloudWorkers},
			QueueCML:   {MaxWorkers: opts.CMLWorkers},
			QueueFleet: {MaxWorkers: opts.FleetWorkers},
		}
		if !opts.NoPeriodic {
			cfg.PeriodicJobs = rt.riverPeriodicJobs(rt.periodics())
		}
	}
	client, err := river.NewClient(riverpgxv5.New(pool), cfg)
	if err != nil {
		return nil, fmt.Errorf("jobs: river client: %w", err)
	}
	s := &Service{rt: rt, pool: pool, client: client}
	if !opts.InsertOnly {
		s.reactor = projections.NewRunner(deps.Store, pool, NewReactor(deps.Registry, client),
			projections.RunnerOptions{Logger: deps.Logger, LockRetry: opts.ReactorLockRetry})
	}
	return s, nil
}

// Client is the River client (to insert jobs in a transaction of one's own,
// or for tests).
func (s *Service) Client() *river.Client[pgx.Tx] { return s.client }

// ReactorStatus reports the reactor's runner (leader, checkpoint, caught
// up, last error); the zero value for an insert-only service.
func (s *Service) ReactorStatus() projections.RunnerStatus {
	if s.reactor == nil {
		return projections.RunnerStatus{Name: ReactorName}
	}
	return s.reactor.Status()
}

// Start starts the River client (its queues and, on the elected leader, the
// periodic jobs), the settings refresher and the reactor. It returns once
// they run. ctx only bounds the start: cancelling it later stops nothing
// (that would cancel running jobs abruptly); Stop stops them gracefully.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return errors.New("jobs: a service starts once")
	}
	if s.rt.opts.InsertOnly {
		s.started = true
		return nil
	}
	if v, err := s.rt.effectiveSettings(ctx); err == nil {
		s.rt.settings.Store(&v)
	}
	if err := s.client.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("jobs: start river: %w", err)
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel, s.done, s.started = cancel, make(chan struct{}), true
	var wg sync.WaitGroup
	wg.Go(func() { s.rt.refreshSettings(bg) })
	wg.Go(func() {
		if err := s.reactor.Run(bg); err != nil {
			s.rt.log.ErrorContext(bg, "jobs: reactor stopped", slog.Any("error", err))
		}
	})
	go func() {
		wg.Wait()
		close(s.done)
	}()
	s.rt.log.InfoContext(ctx, "jobs started", slog.Any("regions", s.rt.deps.Regions),
		slog.Int("periodic_jobs", len(s.rt.periodics())))
	return nil
}

// Stop stops the reactor, then the River client: running jobs get
// SoftStopTimeout to finish before their contexts are cancelled (they then
// record nothing and run again later). It returns when everything stopped or
// ctx ends.
func (s *Service) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started || s.stopped {
		return nil
	}
	s.stopped = true
	if s.rt.opts.InsertOnly {
		return nil
	}
	s.cancel()
	select {
	case <-s.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	soft, cancel := context.WithTimeout(ctx, s.rt.opts.SoftStopTimeout)
	defer cancel()
	err := s.client.Stop(soft)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		err = s.client.StopAndCancel(ctx)
	}
	if err != nil {
		return fmt.Errorf("jobs: stop river: %w", err)
	}
	return nil
}

// Run starts the service, waits until ctx ends, then stops it gracefully
// (running jobs get SoftStopTimeout, then their contexts are cancelled): the
// shape of a `serve` role.
func (s *Service) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*s.rt.opts.SoftStopTimeout+5*time.Second)
	defer cancel()
	return s.Stop(stopCtx)
}

// forEach runs f for every item with at most n at once and returns the first
// error (which cancels the context of the others).
func forEach[T any](ctx context.Context, n int, items []T, f func(ctx context.Context, item T) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(n, 1))
	for _, it := range items {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error { return f(gctx, it) })
	}
	return g.Wait()
}
