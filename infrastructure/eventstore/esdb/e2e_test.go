package esdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb/pgtest"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sealing"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

// TestApplicationOverEventStoreDB drives the application over this adapter
// against the in-process server, with the real projections writing the read
// models to Postgres, unchanged: once they have caught up, every worker_view
// row equals the fold of the worker's stream, and audit_log holds one row per
// lifecycle event, at the event's EventStoreDB position.
func TestApplicationOverEventStoreDB(t *testing.T) {
	t.Parallel()
	srv := startTestServer(t)
	store := openStore(t, srv.URL(), Options{TelemetryMaxAge: time.Hour})
	pool := pgtest.NewPool(t)
	registry := application.EventRegistry()

	ctx, stop := context.WithCancel(context.Background())
	manager := projections.NewManager(store, pool, projections.All(registry),
		projections.RunnerOptions{Logger: testLogger(t), LockRetry: 100 * time.Millisecond})
	ran := make(chan error, 1)
	go func() { ran <- manager.Run(ctx) }()
	t.Cleanup(func() { // before the store and the pool close
		stop()
		require.NoError(t, <-ran)
	})

	sealer, err := sealing.New(sealing.RandomKey())
	require.NoError(t, err)
	clock := &stepClock{now: time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)}
	app := application.New(application.Options{
		Store: store, Clock: clock, Sealer: sealer,
		Workers:  projections.NewWorkerReader(pool),
		Settings: projections.NewSettingsReader(pool),
		Tasks:    projections.NewTaskReader(pool),
		Regions:  []string{"us-east-1"},
		Defaults: e2eDefaults,
		Logger:   testLogger(t),
	})
	admin := rbac.WithPrincipal(context.Background(), rbac.Principal{Subject: "admin-1", Username: "admin-1", Roles: []rbac.Role{rbac.RoleAdmin}})
	system := rbac.WithPrincipal(context.Background(), rbac.System("e2e"))

	var ids []string
	for i := range 5 {
		res, err := app.CreateWorker(admin, application.CreateWorker{Name: fmt.Sprintf("e2e-%d", i), Region: "us-east-1"})
		require.NoError(t, err)
		ids = append(ids, res.ID)
	}
	// A seeded random walk over the worker commands: the domain may refuse
	// some, nothing else may fail.
	rng := rand.New(rand.NewPCG(3, 8))
	commands := e2eCommands(admin, system)
	changed := 0
	for range 300 {
		id := ids[rng.IntN(len(ids))]
		cmd := commands[rng.IntN(len(commands))]
		clock.advance(time.Duration(rng.IntN(600)) * time.Second)
		res, err := cmd.run(app, id, rng)
		if err != nil {
			require.True(t, refused(err), "%s on %s: %v", cmd.name, id, err)
			continue
		}
		if res.Changed {
			changed++
		}
	}
	require.Greater(t, changed, 40, "the walk changed the workers")
	// Concurrent writers on one worker: the repository retries on a wrong
	// expected version, as EventStoreDB reports it.
	created, err := app.CreateWorker(admin, application.CreateWorker{Name: "e2e-concurrent", Region: "us-east-1"})
	require.NoError(t, err)
	busy := created.ID
	ids = append(ids, busy)
	const writers = 8
	type outcome struct {
		res application.Result
		err error
	}
	outcomes := make(chan outcome, writers)
	for i := range writers {
		go func() {
			res, err := app.ReplaceWorkerTags(admin, busy, map[string]string{"writer": fmt.Sprint(i)})
			outcomes <- outcome{res, err}
		}()
	}
	last := created.Position // after every command of the walk
	landed := 0
	for range writers {
		o := <-outcomes
		if o.err != nil {
			// The only acceptable failure: still conflicting after the
			// repository's retries.
			require.ErrorIs(t, o.err, application.ErrConflict)
			continue
		}
		res := o.res
		require.True(t, res.Changed)
		landed++
		if p, q := mustPosition(t, last), mustPosition(t, res.Position); p.Less(q) {
			last = res.Position
		}
	}
	require.GreaterOrEqual(t, landed, writers/2, "retries let most concurrent writers land")
	tags, err := store.ReadStream(t.Context(), worker.Stream(busy), 0, 100)
	require.NoError(t, err)
	require.Len(t, tags, len(created.Events)+landed, "one event per successful command, none lost, none doubled")

	for _, name := range []string{"worker_view", "audit_log"} {
		waitProjected(t, pool, name, mustPosition(t, last))
	}
	repo := application.NewRepository(store, registry, worker.New, worker.Stream, clock, application.UUIDv7{}, application.DefaultRetryPolicy)
	for _, id := range ids {
		folded, err := repo.Load(t.Context(), id)
		require.NoError(t, err)
		view, err := app.GetWorker(admin, id)
		require.NoError(t, err)
		want, err := json.Marshal(folded.State())
		require.NoError(t, err)
		got, err := json.Marshal(view.State)
		require.NoError(t, err)
		require.JSONEq(t, string(want), string(got), "worker_view of %s is the fold of its stream", id)
		require.Equal(t, folded.Version(), view.Revision)

		recs, err := store.ReadStream(t.Context(), worker.Stream(id), 0, 100000)
		require.NoError(t, err)
		require.Equal(t, recs[len(recs)-1].Position.String(), view.Position, "worker_view position is the server's")
		rows, err := pool.Query(t.Context(), `SELECT event_id::text, position_commit, position_prepare FROM audit_log WHERE worker_id = $1 ORDER BY position_commit, position_prepare`, id)
		require.NoError(t, err)
		type row struct {
			id      string
			commit  int64
			prepare int64
		}
		var audit []row
		for rows.Next() {
			var r row
			require.NoError(t, rows.Scan(&r.id, &r.commit, &r.prepare))
			audit = append(audit, r)
		}
		require.NoError(t, rows.Err())
		require.Len(t, audit, len(recs), "one audit row per lifecycle event of %s", id)
		for i, rec := range recs {
			require.Equal(t, row{rec.ID, int64(rec.Position.Commit), int64(rec.Position.Prepare)}, audit[i])
		}
	}
}

// waitProjected polls the projection's checkpoint until it reaches pos.
func waitProjected(t *testing.T, pool *pgxpool.Pool, name string, pos eventstore.Position) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var c, p int64
		err := pool.QueryRow(t.Context(), `SELECT commit_position, prepare_position FROM projection_checkpoints WHERE name = $1`, name).Scan(&c, &p)
		got := eventstore.Position{Commit: uint64(c), Prepare: uint64(p)}
		if err == nil && !got.Less(pos) {
			return
		}
		require.True(t, time.Now().Before(deadline), "projection %s did not reach %s (at %s, err %v)", name, pos, got, err)
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
}

func mustPosition(t *testing.T, s string) eventstore.Position {
	t.Helper()
	p, err := eventstore.ParsePosition(s)
	require.NoError(t, err)
	return p
}

// refused: the domain may refuse a command; nothing else may fail.
func refused(err error) bool {
	return errors.Is(err, domain.ErrInvalid) || errors.Is(err, domain.ErrIllegalTransition) ||
		errors.Is(err, domain.ErrNotFound) || errors.Is(err, domain.ErrAlreadyExists)
}

type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

var e2eDefaults = settings.Values{
	AMIIDs:                map[string]string{"us-east-1": "ami-0123456789abcdef0"},
	AMIName:               "cml-2.9",
	InstanceType:          "m5zn.metal",
	SecurityGroupIDs:      []string{"sg-0123456789abcdef0"},
	SubnetID:              "subnet-0123456789abcdef0",
	KeyName:               "cml",
	IdleDetectionEnabled:  true,
	IdleTimeoutSeconds:    3600,
	IdleSnoozeSeconds:     3600,
	FleetReconcileSeconds: 60,
	FleetMetricsSeconds:   300,
	LabsSyncSeconds:       1800,
	IdleCheckSeconds:      300,
}

type e2eCommand struct {
	name string
	run  func(app *application.App, id string, rng *rand.Rand) (application.Result, error)
}

func e2eCommands(admin, system context.Context) []e2eCommand {
	instances := []string{"i-0123456789abcdef0", "i-0fedcba9876543210"}
	states := []worker.EC2State{worker.EC2Pending, worker.EC2Running, worker.EC2Stopping, worker.EC2Stopped, worker.EC2Terminated}
	return []e2eCommand{
		{"start", func(app *application.App, id string, _ *rand.Rand) (application.Result, error) {
			return app.StartWorker(admin, id)
		}},
		{"stop", func(app *application.App, id string, _ *rand.Rand) (application.Result, error) {
			return app.StopWorker(admin, id)
		}},
		{"terminate", func(app *application.App, id string, rng *rand.Rand) (application.Result, error) {
			if rng.IntN(8) > 0 { // keep terminations rare
				return application.Result{}, nil
			}
			return app.TerminateWorker(admin, id)
		}},
		{"tags", func(app *application.App, id string, rng *rand.Rand) (application.Result, error) {
			return app.ReplaceWorkerTags(admin, id, map[string]string{"k": []string{"a", "b"}[rng.IntN(2)]})
		}},
		{"monitoring", func(app *application.App, id string, rng *rand.Rand) (application.Result, error) {
			return app.SetDetailedMonitoring(admin, id, rng.IntN(2) == 0)
		}},
		{"idle-detection", func(app *application.App, id string, rng *rand.Rand) (application.Result, error) {
			return app.SetIdleDetection(admin, id, rng.IntN(2) == 0, 0)
		}},
		{"record-launch", func(app *application.App, id string, rng *rand.Rand) (application.Result, error) {
			return app.RecordInstanceLaunched(system, id, instances[rng.IntN(len(instances))])
		}},
		{"observe-instance", func(app *application.App, id string, rng *rand.Rand) (application.Result, error) {
			o := worker.Observation{InstanceID: instances[rng.IntN(len(instances))], State: states[rng.IntN(len(states))]}
			if o.State == worker.EC2Running {
				o.PublicIP, o.PrivateIP, o.Endpoint = "198.51.100.7", "10.0.0.5", "https://127.0.0.1:1"
				o.SystemStatus, o.InstanceStatus = "ok", "ok"
			}
			return app.ObserveInstance(system, id, o)
		}},
		{"observe-service", func(app *application.App, id string, rng *rand.Rand) (application.Result, error) {
			st := []worker.ServiceStatus{worker.ServiceAvailable, worker.ServiceUnavailable}[rng.IntN(2)]
			return app.ObserveService(system, id, st, "2.9.0", rng.IntN(2) == 0)
		}},
	}
}
