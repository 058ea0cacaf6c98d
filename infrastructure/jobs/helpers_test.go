package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/eventstore/postgres"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/jobs/simulation"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb/pgtest"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sealing"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const region = "us-east-1"

// waitTimeout bounds every wait for an expected state.
const waitTimeout = 60 * time.Second

// offsetClock is the wall clock moved forward by an offset a test advances:
// the application, the jobs, the simulated cloud and its controllers share
// it, while River and the database keep real time.
type offsetClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *offsetClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

func quietLogger() *slog.Logger {
	if os.Getenv("JOBS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testDefaults are the environment's runtime settings in these tests.
func testDefaults() settings.Values {
	return settings.Values{
		AMIIDs:       simulation.AMIIDs([]string{region}, simulation.DefaultAMIName),
		AMIName:      simulation.DefaultAMIName,
		InstanceType: "m5zn.metal", SubnetID: "subnet-0123456789abcdef0",
		SecurityGroupIDs: []string{"sg-0123456789abcdef0"}, KeyName: "cml",
		DefaultTags:          map[string]string{"Environment": "test"},
		IdleDetectionEnabled: true, IdleTimeoutSeconds: 3600, IdleSnoozeSeconds: 3600,
		FleetReconcileSeconds: 60, FleetMetricsSeconds: 300, LabsSyncSeconds: 1800, IdleCheckSeconds: 300,
	}
}

// env is one test's world: a fresh database with the event store and every
// read model running, the simulated cloud with the real AWS and CML clients,
// the application, and the job service.
type env struct {
	pool  *pgxpool.Pool
	store *postgres.Store
	app   *application.App
	tel   *application.Telemetry
	cloud *simulation.Cloud
	svc   *Service
	clock *offsetClock
	deps  Deps
	opts  Options
}

type envOptions struct {
	jobs     Options
	sim      simulation.Options
	defaults func(*settings.Values)
	// noService builds no job service (a test builds its own).
	noService bool
	// periodic schedules the periodic jobs (tests run the fleet jobs
	// themselves otherwise).
	periodic bool
}

func newEnv(t testing.TB, eo envOptions) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{clock: &offsetClock{}}

	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(t))
	require.NoError(t, err)
	cfg.MaxConns = 8
	e.pool, err = pgdb.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	e.store, err = postgres.Open(ctx, e.pool, postgres.Options{Logger: quietLogger(), PollInterval: 200 * time.Millisecond})
	require.NoError(t, err)

	registry := application.EventRegistry()
	// The read models the jobs read (each runner holds a connection of its
	// own for its leadership lock: the audit log and tasks are left out).
	readModels := []projections.Projection{
		projections.NewWorkerView(registry), projections.NewWorkerMetrics(registry),
		projections.NewWorkerLabs(registry), projections.NewSettingsView(registry),
	}
	manager := projections.NewManager(e.store, e.pool, readModels,
		projections.RunnerOptions{Logger: quietLogger(), LockRetry: 100 * time.Millisecond})
	projDone := make(chan struct{})
	go func() {
		defer close(projDone)
		_ = manager.Run(ctx)
	}()

	simOpts := eo.sim
	simOpts.Regions = []string{region}
	simOpts.Clock = e.clock
	simOpts.Logger = quietLogger()
	simOpts.EmptyControllers = true
	if simOpts.Timings == (cloudsim.Timings{}) {
		simOpts.Timings = cloudsim.Timings{Pending: 200 * time.Millisecond, Stopping: 200 * time.Millisecond,
			ShuttingDown: 200 * time.Millisecond, StatusInitializing: 100 * time.Millisecond, MonitoringChange: 100 * time.Millisecond}
	}
	for _, d := range []*time.Duration{&simOpts.BootDelay, &simOpts.ReadyDelay} {
		if *d == 0 {
			*d = time.Millisecond
		}
	}
	if simOpts.LicenseDelay == 0 {
		simOpts.LicenseDelay = 300 * time.Millisecond
	}
	if simOpts.NodeBootDelay == 0 {
		simOpts.NodeBootDelay = 200 * time.Millisecond
	}
	e.cloud, err = simulation.Start(ctx, simOpts)
	require.NoError(t, err)

	sealer, err := sealing.New(sealing.RandomKey())
	require.NoError(t, err)
	defaults := testDefaults()
	if eo.defaults != nil {
		eo.defaults(&defaults)
	}
	workers := projections.NewWorkerReader(e.pool)
	settingsReader := projections.NewSettingsReader(e.pool)
	e.app = application.New(application.Options{
		Store: e.store, Clock: e.clock, Sealer: sealer, Workers: workers, Settings: settingsReader,
		Tasks: projections.NewTaskReader(e.pool), Regions: []string{region}, Defaults: defaults, Logger: quietLogger(),
	})
	e.tel = application.NewTelemetry(e.app, projections.NewMetricsReader(e.pool), projections.NewLabsReader(e.pool))
	e.deps = Deps{
		App: e.app, Telemetry: e.tel, Cloud: e.cloud.Provider, CML: e.cloud.CML, Sealer: sealer, Store: e.store,
		Registry: registry, Workers: workers, Settings: settingsReader, Defaults: defaults, Regions: []string{region},
		Pruners: []Pruner{postgres.TelemetryPruner{Store: e.store, Prefix: worker.TelemetryStreamPrefix}, projections.MetricsPruner{Pool: e.pool}},
		Logger:  quietLogger(),
	}
	e.opts = testOptions(eo.jobs, e)
	e.opts.NoPeriodic = !eo.periodic
	// Registered before any service starts, so it runs after they stopped.
	t.Cleanup(func() {
		cancel()
		<-projDone
		require.NoError(t, e.cloud.Close())
		e.store.Close()
		e.pool.Close()
	})
	if !eo.noService {
		e.svc = e.startService(t, e.opts)
	}
	return e
}

// testOptions fills the options of a test service: fast polls and retries,
// the simulator's endpoints, the shared clock, and no periodic job unless
// the test turns them on.
func testOptions(o Options, e *env) Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.PollInterval, 100*time.Millisecond)
	def(&o.RetryBase, 50*time.Millisecond)
	def(&o.RetryMax, 500*time.Millisecond)
	def(&o.FetchPollInterval, 50*time.Millisecond)
	def(&o.FetchCooldown, 10*time.Millisecond)
	def(&o.ReactorLockRetry, 100*time.Millisecond)
	def(&o.SoftStopTimeout, 5*time.Second)
	def(&o.CallTimeout, 10*time.Second)
	def(&o.TagsSettle, time.Millisecond)
	if o.EndpointTemplate == "" {
		o.EndpointTemplate = e.cloud.EndpointTemplate
	}
	if o.Clock == nil {
		o.Clock = e.clock
	}
	return o
}

// startService builds and starts a job service; the test's cleanup stops
// it (before the database goes away).
func (e *env) startService(t testing.TB, opts Options) *Service {
	t.Helper()
	svc, err := New(context.Background(), e.pool, e.deps, opts)
	require.NoError(t, err)
	require.NoError(t, svc.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, svc.Stop(ctx))
	})
	return svc
}

// Principals of the tests.
var (
	adminCtx   = rbac.WithPrincipal(context.Background(), rbac.Principal{Subject: "u-admin", Username: "admin", Roles: []rbac.Role{rbac.RoleAdmin}})
	managerCtx = rbac.WithPrincipal(context.Background(), rbac.Principal{Subject: "u-manager", Username: "manager", Roles: []rbac.Role{rbac.RoleManager}})
)

// waitFor polls cond every 20 ms until it holds or waitTimeout passes.
func waitFor(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s (last: %s)", what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// view reads a worker from the read model.
func (e *env) view(t testing.TB, id string) application.WorkerView {
	t.Helper()
	v, err := projections.NewWorkerReader(e.pool).GetWorker(context.Background(), id)
	require.NoError(t, err)
	return v
}

// waitStatus waits until the read model shows the worker in status.
func (e *env) waitStatus(t testing.TB, id string, status worker.Status) application.WorkerView {
	t.Helper()
	var v application.WorkerView
	waitFor(t, fmt.Sprintf("worker %s %s", id, status), func() (bool, string) {
		got, err := projections.NewWorkerReader(e.pool).GetWorker(context.Background(), id)
		if err != nil {
			return false, err.Error()
		}
		v = got
		return got.Status == status, fmt.Sprintf("%s (intent %q, ec2 %s)", got.Status, got.Intent, got.EC2State)
	})
	return v
}

// waitCaughtUp waits until every read model has applied the log's head.
func (e *env) waitCaughtUp(t testing.TB) {
	t.Helper()
	head := e.head(t)
	for _, name := range []string{"worker_view", "worker_metrics", "worker_labs"} {
		waitFor(t, name+" at "+head.String(), func() (bool, string) {
			pos, _, err := projections.ReadCheckpoint(context.Background(), e.pool, name)
			if err != nil {
				return false, err.Error()
			}
			return !pos.Less(head), pos.String()
		})
	}
}

// waitApplied waits until worker_view has applied the log up to pos (a
// command's Result.Position).
func (e *env) waitApplied(t testing.TB, pos string) {
	t.Helper()
	want, err := eventstore.ParsePosition(pos)
	require.NoError(t, err)
	waitFor(t, "worker_view at "+pos, func() (bool, string) {
		got, _, err := projections.ReadCheckpoint(context.Background(), e.pool, "worker_view")
		return err == nil && !got.Less(want), got.String()
	})
}

// head is the position of the log's last event.
func (e *env) head(t testing.TB) eventstore.Position {
	t.Helper()
	var p int64
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT coalesce(max(position), 0) FROM events`).Scan(&p))
	return eventstore.Position{Commit: uint64(p), Prepare: uint64(p)}
}

// eventsAfter reads every event after from that matches f.
func (e *env) eventsAfter(t testing.TB, from eventstore.Position, f eventstore.Filter) []eventstore.RecordedEvent {
	t.Helper()
	var out []eventstore.RecordedEvent
	for {
		recs, next, err := e.store.ReadAll(context.Background(), from, 1000, f)
		require.NoError(t, err)
		out = append(out, recs...)
		if next == from || !from.Less(next) {
			return out
		}
		from = next
		if len(recs) == 0 && !next.Less(e.head(t)) {
			return out
		}
	}
}

// events reads a whole stream.
func (e *env) events(t testing.TB, stream string) []eventstore.RecordedEvent {
	t.Helper()
	var out []eventstore.RecordedEvent
	for from := uint64(0); ; {
		recs, err := e.store.ReadStream(context.Background(), stream, from, 1000)
		require.NoError(t, err)
		out = append(out, recs...)
		if len(recs) < 1000 {
			return out
		}
		from = recs[len(recs)-1].Revision + 1
	}
}

// types lists the short event types of a stream ("created", ...).
func (e *env) types(t testing.TB, stream string) []string {
	t.Helper()
	var out []string
	for _, r := range e.events(t, stream) {
		out = append(out, shortType(r.Type))
	}
	return out
}

func shortType(t string) string {
	t = strings.TrimPrefix(t, "worker.")
	return t[:strings.LastIndex(t, ".")]
}

func count(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

// importRunning starts n running instances out of band and imports each as
// a worker; it waits until the read model shows them.
func (e *env) importRunning(t testing.TB, n int) []string {
	t.Helper()
	insts, err := e.cloud.Sim.Console().Launch(region, cloudsim.ConsoleLaunch{
		ImageID: cloudsim.ImageID(region, simulation.DefaultAMIName), Count: n, Running: true,
		DetailedMonitoring: true, Tags: map[string]string{worker.TagManagedBy: worker.TagManagedByValue},
	})
	require.NoError(t, err)
	ids := make([]string, 0, n)
	for i, in := range insts {
		res, err := e.app.ImportWorker(adminCtx, application.ImportWorker{
			Name: fmt.Sprintf("w-%04d", i), Region: region, InstanceID: in.ID, InstanceType: in.InstanceType,
			AMIID: in.ImageID, State: worker.EC2State(in.State), PublicIP: in.PublicIP, PrivateIP: in.PrivateIP,
			Endpoint: strings.ReplaceAll(e.cloud.EndpointTemplate, "{instance_id}", in.ID),
			Tags:     in.Tags,
		})
		require.NoError(t, err)
		ids = append(ids, res.ID)
	}
	e.waitCaughtUp(t)
	return ids
}

// cycleCtx is the context of a fleet job run by a test.
func cycleCtx(kind application.JobKind) context.Context {
	return jobContext(context.Background(), kind, 0)
}

// consoleLaunch launches count running instances of the seeded AMI name out
// of band, unmanaged.
func consoleLaunch(amiName string, count int) cloudsim.ConsoleLaunch {
	return cloudsim.ConsoleLaunch{ImageID: cloudsim.ImageID(region, amiName), Count: count, Running: true,
		Tags: map[string]string{"Name": "found-" + amiName}}
}
