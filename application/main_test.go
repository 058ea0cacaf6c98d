package application_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/eventstore/postgres"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb/pgtest"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sealing"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

var dbURL string

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(wrapped{m})
}

// wrapped gives the package one migrated database for all its tests.
type wrapped struct{ m *testing.M }

func (w wrapped) Run() int {
	url, drop, err := pgtest.CreateDatabase(context.Background())
	if err != nil {
		panic(err)
	}
	dbURL = url
	stop, err := startProjector(url)
	if err != nil {
		panic(err)
	}
	code := w.m.Run()
	stop()
	if err := drop(); err != nil && code == 0 {
		code = 1
	}
	return code
}

// startProjector runs every read-model projection for the package's tests,
// as `serve` does, until stop is called.
func startProjector(url string) (stop func(), err error) {
	ctx, cancel := context.WithCancel(context.Background())
	pool, err := pgdb.Connect(ctx, url)
	if err != nil {
		cancel()
		return nil, err
	}
	quiet := slog.New(slog.DiscardHandler)
	store, err := postgres.Open(ctx, pool, postgres.Options{Logger: quiet})
	if err != nil {
		cancel()
		pool.Close()
		return nil, err
	}
	m := projections.NewManager(store, pool, projections.All(application.EventRegistry()), projections.RunnerOptions{Logger: quiet, LockRetry: 100 * time.Millisecond})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = m.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
		store.Close()
		pool.Close()
	}, nil
}

// waitProjected waits until the named projection has applied the log up to
// pos.
func waitProjected(t *testing.T, b *bundle, name string, pos string) {
	t.Helper()
	want, err := eventstore.ParsePosition(pos)
	if err != nil {
		t.Fatalf("position %q: %v", pos, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		var c, p int64
		err := b.pool.QueryRow(context.Background(), `SELECT commit_position, prepare_position FROM projection_checkpoints WHERE name = $1`, name).Scan(&c, &p)
		got := eventstore.Position{Commit: uint64(c), Prepare: uint64(p)}
		if err == nil && !got.Less(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("projection %s did not reach %s (at %s, err %v)", name, want, got, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testDefaults are the environment defaults of the runtime settings.
var testDefaults = settings.Values{
	AMIIDs:                map[string]string{"us-east-1": "ami-0123456789abcdef0", "us-west-2": "ami-0fedcba9876543210"},
	AMIName:               "cml-2.9",
	InstanceType:          "m5zn.metal",
	SecurityGroupIDs:      []string{"sg-0123456789abcdef0"},
	SubnetID:              "subnet-0123456789abcdef0",
	KeyName:               "cml",
	DefaultTags:           map[string]string{"Environment": "test"},
	IdleDetectionEnabled:  true,
	IdleTimeoutSeconds:    3600,
	IdleSnoozeSeconds:     3600,
	FleetReconcileSeconds: 60,
	FleetMetricsSeconds:   300,
	LabsSyncSeconds:       1800,
	IdleCheckSeconds:      300,
}

// bundle is what a test needs: the application over a real Postgres store
// and real read models.
type bundle struct {
	pool  *pgxpool.Pool
	store *postgres.Store
	app   *application.App
	clock *fakeClock
	opts  application.Options
	// catalogAt, when the app reads workers from a catalog, reports whether
	// the catalog has caught up with a position.
	catalogAt func(eventstore.Position) bool
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func setup(t testing.TB) *bundle {
	t.Helper()
	ctx := context.Background()
	pool, err := pgdb.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store, err := postgres.Open(ctx, pool, postgres.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	sealer, err := sealing.New(sealing.RandomKey())
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)}
	opts := application.Options{
		Store: store, Clock: clock, Sealer: sealer,
		Workers:  projections.NewWorkerReader(pool),
		Settings: projections.NewSettingsReader(pool),
		Tasks:    projections.NewTaskReader(pool),
		Regions:  []string{"us-east-1", "us-west-2"},
		Defaults: testDefaults,
		Logger:   slog.New(slog.DiscardHandler),
	}
	return &bundle{pool: pool, store: store, app: application.New(opts), clock: clock, opts: opts}
}

// as returns a context carrying a principal with the given roles.
func as(subject string, dept string, roles ...rbac.Role) context.Context {
	return rbac.WithPrincipal(context.Background(), rbac.Principal{Subject: subject, Username: subject, Roles: roles, Department: dept})
}

var (
	adminCtx  = as("admin-1", "ops", rbac.RoleAdmin)
	systemCtx = rbac.WithPrincipal(context.Background(), rbac.System("test"))
)
