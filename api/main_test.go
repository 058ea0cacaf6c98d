package api

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/eventstore/postgres"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/jobs"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/jobs/simulation"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb/pgtest"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sealing"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

// shared is the package's database, event store and running projections,
// as `serve` runs them; each test builds its own application and server on
// top (see newEnv).
var shared struct {
	url     string
	pool    *pgxpool.Pool
	store   *postgres.Store
	manager *projections.Manager
	// cloud is the built-in cloud simulator with the real AWS and CML
	// adapters pointed at it; jobs only inserts (no job runs here).
	cloud *simulation.Cloud
	jobs  *jobs.Service
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(wrapped{m})
}

type wrapped struct{ m *testing.M }

func (w wrapped) Run() int {
	url, drop, err := pgtest.CreateDatabase(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	stop, err := startShared(withMaxConns(url, 24))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = drop()
		return 1
	}
	code := w.m.Run()
	stop()
	if err := drop(); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	return code
}

func withMaxConns(url string, n int) string {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return fmt.Sprintf("%s%spool_max_conns=%d", url, sep, n)
}

// startShared opens the shared pool and store and runs every projection
// until stop is called.
func startShared(url string) (stop func(), err error) {
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
	m := projections.NewManager(store, pool, projections.All(application.EventRegistry()),
		projections.RunnerOptions{Logger: quiet, LockRetry: 100 * time.Millisecond})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = m.Run(ctx)
	}()
	cloud, err := simulation.Start(ctx, simulation.Options{
		Regions: []string{"us-east-1", "us-west-2"}, Logger: quiet,
		BootDelay: time.Millisecond, ReadyDelay: time.Millisecond, LicenseDelay: time.Millisecond, NodeBootDelay: time.Millisecond,
	})
	if err != nil {
		cancel()
		<-done
		store.Close()
		pool.Close()
		return nil, err
	}
	registry := application.EventRegistry()
	sealer, err := sealing.New(sealing.RandomKey())
	if err != nil {
		panic(err)
	}
	app := application.New(application.Options{
		Store: store, Registry: registry, Sealer: sealer, Logger: quiet,
		Workers: projections.NewWorkerReader(pool), Settings: projections.NewSettingsReader(pool),
		Tasks: projections.NewTaskReader(pool), Regions: []string{"us-east-1", "us-west-2"}, Defaults: testDefaults,
	})
	js, err := jobs.New(ctx, pool, jobs.Deps{
		App: app, Telemetry: application.NewTelemetry(app, projections.NewMetricsReader(pool), projections.NewLabsReader(pool)),
		Cloud: cloud.Provider, CML: cloud.CML, Sealer: sealer, Store: store, Registry: registry,
		Workers: projections.NewWorkerReader(pool), Settings: projections.NewSettingsReader(pool),
		Defaults: testDefaults, Regions: []string{"us-east-1", "us-west-2"}, Logger: quiet,
	}, jobs.Options{InsertOnly: true, EndpointTemplate: cloud.EndpointTemplate})
	if err == nil {
		err = js.Start(ctx)
	}
	if err != nil {
		cancel()
		<-done
		_ = cloud.Close()
		store.Close()
		pool.Close()
		return nil, err
	}
	shared.url, shared.pool, shared.store, shared.manager = url, pool, store, m
	shared.cloud, shared.jobs = cloud, js
	return func() {
		_ = js.Stop(context.Background())
		cancel()
		<-done
		_ = cloud.Close()
		store.Close()
		pool.Close()
	}, nil
}
