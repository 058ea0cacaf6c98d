package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/cmlcloud/cml-cloud-manager/api"
	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/eventstore/postgres"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

// schemaCheck reports whether every migration is applied. Once it has
// passed it stays passed: a running binary's schema cannot fall behind.
func schemaCheck(pool *pgxpool.Pool) func(context.Context) error {
	var ok atomic.Bool
	return func(ctx context.Context) error {
		if ok.Load() {
			return nil
		}
		if err := pgdb.CheckSchema(ctx, pool); err != nil {
			return err
		}
		ok.Store(true)
		return nil
	}
}

// projectionsCheck is ready once every read model has caught up with the
// log (or another instance runs it).
func projectionsCheck(m *projections.Manager) func(context.Context) error {
	return func(context.Context) error {
		if m.Ready() {
			return nil
		}
		var behind []string
		for _, s := range m.Statuses() {
			if !s.CaughtUp {
				behind = append(behind, s.Name)
			}
		}
		return fmt.Errorf("catching up: %s", strings.Join(behind, ", "))
	}
}

func runServe(ctx context.Context, cli *CLI, args []string) error {
	fs := cli.flagSet("serve", "",
		"Run the service until SIGINT or SIGTERM: the HTTP API (RUN_API) and the background roles.\n"+
			"Unless --no-migrate or MIGRATE_ON_START=false, it first creates the database if missing\n"+
			"and applies every migration.")
	noMigrate := fs.Bool("no-migrate", false, "do not create or migrate the database (overrides MIGRATE_ON_START)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("serve takes no arguments, got %q", fs.Args())
	}
	cfg, logger, err := cli.setup()
	if err != nil {
		return err
	}
	if *noMigrate {
		cfg.MigrateOnStart = false
	}
	m := NewMain(cfg, logger)
	err = m.Run(ctx)
	return errors.Join(err, m.Close())
}

// Main is the serve command's program: configuration, logger and the parts
// it wires together. Tests drive it directly: set Config.HTTPAddr to
// "127.0.0.1:0", call Run in a goroutine, wait for Ready, use Addr, cancel
// the context, then Close.
type Main struct {
	Config Config
	Logger *slog.Logger

	// Pool is the Postgres pool; set by Run, closed by Close.
	Pool *pgxpool.Pool
	// Store is the event store; set by Run, closed by Close.
	Store *postgres.Store
	// Registry maps event type names to Go types.
	Registry *domain.Registry
	// Projections runs the read models when Config.RunProjections.
	Projections *projections.Manager
	// API is the HTTP server; set by Run when Config.RunAPI.
	API *api.Server

	// roles run concurrently under one errgroup once everything is open.
	roles []role
	// readiness are the checks behind GET /readyz.
	readiness []api.Check

	listener  net.Listener
	ready     chan struct{}
	closeOnce sync.Once
}

// role is one long-running part of serve (the HTTP server; later the
// projection manager, the reactors, the River client). run blocks until ctx
// is done, then stops gracefully and returns nil; an error ends serve and
// stops every other role.
type role struct {
	name string
	run  func(ctx context.Context) error
}

// NewMain returns a Main for cfg that logs to logger.
func NewMain(cfg Config, logger *slog.Logger) *Main {
	return &Main{Config: cfg, Logger: logger, ready: make(chan struct{})}
}

// Ready is closed once Run has opened everything (the database is migrated
// and the HTTP listener is bound) and started every role.
func (m *Main) Ready() <-chan struct{} { return m.ready }

// Addr is the bound HTTP address, or nil when the API is off. It is valid
// once Ready is closed.
func (m *Main) Addr() net.Addr {
	if m.listener == nil {
		return nil
	}
	return m.listener.Addr()
}

// Run opens the database (creating and migrating it when
// Config.MigrateOnStart), starts every enabled role and blocks until ctx is
// done or a role fails; then it stops the roles gracefully. It returns nil
// after a clean shutdown. Call Close afterwards, whatever Run returned. A
// Main runs once.
func (m *Main) Run(ctx context.Context) error {
	m.Logger.InfoContext(ctx, "starting cml-cloud-manager",
		slog.String("version", buildVersion()),
		slog.String("commit", commit),
		slog.Any("config", m.Config))
	if err := m.open(ctx); err != nil {
		return err
	}
	return m.serve(ctx)
}

// open connects everything serve needs, in dependency order, and collects
// the roles and readiness checks.
func (m *Main) open(ctx context.Context) error {
	cfg := m.Config
	if cfg.EventStoreKind() != EventStorePostgres {
		return errors.New("EVENTSTORE_URL selects EventStoreDB, but this build has no EventStoreDB adapter yet; " +
			"unset EVENTSTORE_URL to use the Postgres event store in DATABASE_URL")
	}

	pool, err := openDatabase(ctx, cfg, m.Logger, cfg.MigrateOnStart)
	if err != nil {
		return err
	}
	m.Pool = pool
	m.readiness = append(m.readiness,
		api.Check{Name: "database", Func: pool.Ping},
		api.Check{Name: "migrations", Func: schemaCheck(pool)},
	)

	// Open the remaining parts here, in dependency order, and register what
	// they contribute (a role, a readiness check); release them in Close.
	store, err := postgres.Open(ctx, pool, postgres.Options{Logger: m.Logger})
	if err != nil {
		return fmt.Errorf("open the event store: %w", err)
	}
	m.Store = store
	m.Registry = application.EventRegistry()

	if cfg.RunProjections {
		m.Projections = projections.NewManager(store, pool, projections.All(m.Registry), projections.RunnerOptions{Logger: m.Logger})
		m.roles = append(m.roles, role{name: "projections", run: m.Projections.Run})
		m.readiness = append(m.readiness, api.Check{Name: "projections", Func: projectionsCheck(m.Projections)})
	}

	if cfg.RunAPI {
		l, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("listen on HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
		}
		m.listener = l
		m.API = api.New(api.Options{Logger: m.Logger, Readiness: m.readiness})
		m.roles = append(m.roles, role{name: "http", run: m.runHTTP})
	}
	return nil
}

// serve runs every role until ctx is done or one fails.
func (m *Main) serve(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range m.roles {
		g.Go(func() error {
			if err := r.run(gctx); err != nil {
				m.Logger.ErrorContext(ctx, "role failed", slog.String("role", r.name), slog.Any("error", err))
				return fmt.Errorf("%s: %w", r.name, err)
			}
			m.Logger.InfoContext(ctx, "role stopped", slog.String("role", r.name))
			return nil
		})
	}
	if len(m.roles) == 0 {
		m.Logger.WarnContext(ctx, "no role enabled; waiting for a signal")
	}
	close(m.ready)
	<-gctx.Done()
	if ctx.Err() != nil {
		m.Logger.InfoContext(ctx, "shutting down", slog.Any("cause", context.Cause(ctx)))
	}
	return g.Wait()
}

// runHTTP serves the API until ctx is done, then shuts the server down,
// giving requests in flight up to HTTP_SHUTDOWN_TIMEOUT to finish.
func (m *Main) runHTTP(ctx context.Context) error {
	served := make(chan error, 1)
	go func() { served <- m.API.Serve(m.listener) }()
	m.Logger.InfoContext(ctx, "http server listening",
		slog.String("addr", m.listener.Addr().String()),
		slog.String("public_url", m.Config.PublicURL))

	select {
	case err := <-served:
		if err == nil {
			err = errors.New("http server stopped unexpectedly")
		}
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.Config.HTTPShutdownTimeout)
	defer cancel()
	shutdownErr := m.API.Shutdown(sctx)
	return errors.Join(shutdownErr, <-served)
}

// Close releases what Run opened. It is safe to call more than once and
// after a failed Run.
func (m *Main) Close() error {
	m.closeOnce.Do(func() {
		if m.listener != nil {
			// Normally closed by the HTTP server already; this covers a Run
			// that failed between listening and serving.
			_ = m.listener.Close()
		}
		if m.Store != nil {
			m.Store.Close()
		}
		if m.Pool != nil {
			m.Pool.Close()
		}
	})
	return nil
}

// openDatabase opens the pool for DATABASE_URL with DATABASE_MAX_CONNS
// connections. With migrate it first creates the database when missing and
// then applies every migration.
func openDatabase(ctx context.Context, cfg Config, logger *slog.Logger, migrate bool) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	pcfg.MaxConns = cfg.DatabaseMaxConns
	if pcfg.MinConns > pcfg.MaxConns {
		pcfg.MinConns = pcfg.MaxConns
	}
	database := pcfg.ConnConfig.Database
	if migrate {
		created, err := pgdb.EnsureDatabase(ctx, cfg.DatabaseURL)
		if err != nil {
			return nil, err
		}
		if created {
			logger.InfoContext(ctx, "created database", slog.String("database", database))
		}
	}
	pool, err := pgdb.ConnectConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	if migrate {
		if err := pgdb.Migrate(ctx, pool, logger); err != nil {
			pool.Close()
			return nil, err
		}
		logger.InfoContext(ctx, "database schema is up to date", slog.String("database", database))
	}
	return pool, nil
}
