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
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/cmlcloud/cml-cloud-manager/api"
	"github.com/cmlcloud/cml-cloud-manager/api/auth"
	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/eventstore/esdb"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/eventstore/postgres"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/jobs"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sealing"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sessions"
	"github.com/cmlcloud/cml-cloud-manager/projections"
	"github.com/redis/go-redis/v9"
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
	// Store is the event store (Postgres or EventStoreDB); set by Run,
	// closed by Close.
	Store      eventstore.Store
	closeStore func()
	// Registry maps event type names to Go types.
	Registry *domain.Registry
	// App is the application's command and query handlers.
	App *application.App
	// Telemetry records and reads metrics and labs.
	Telemetry *application.Telemetry
	// Jobs is the job system (River).
	Jobs *jobs.Service
	// Workers reads the worker read models, from the catalog once loaded.
	Workers *projections.CatalogReader
	// Catalog is the in-memory replica of the worker read models.
	Catalog *projections.WorkerCatalog
	// Projections runs the read models when Config.RunProjections.
	Projections *projections.Manager
	// Operator rebuilds read models on an admin's request (with the API).
	Operator *projections.Operator
	// closers release what the roles used, in reverse order, after the
	// roles stopped.
	closers []func()
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
// the roles and readiness checks. Whatever it opened is released by Close,
// even when it fails half-way.
func (m *Main) open(ctx context.Context) error {
	cfg := m.Config
	pool, err := openDatabase(ctx, cfg, m.Logger, cfg.MigrateOnStart)
	if err != nil {
		return err
	}
	m.Pool = pool
	m.readiness = append(m.readiness,
		api.Check{Name: "database", Func: pool.Ping},
		api.Check{Name: "migrations", Func: schemaCheck(pool)},
	)
	if err := m.openEventStore(ctx); err != nil {
		return err
	}
	m.Registry = application.EventRegistry()
	sealer, err := m.openSealer(ctx)
	if err != nil {
		return err
	}
	cl, err := m.openCloud(ctx)
	if err != nil {
		return err
	}
	// The worker catalog keeps the worker read models in memory: queries
	// read it and commands decide on its snapshots.
	m.Catalog = projections.NewWorkerCatalog(pool, projections.CatalogOptions{Logger: m.Logger})
	m.Workers = projections.NewCatalogReader(m.Catalog, projections.NewWorkerReader(pool))
	m.roles = append(m.roles, role{name: "worker-catalog", run: m.Catalog.Run})
	m.readiness = append(m.readiness, api.Check{Name: "catalog", Func: func(context.Context) error {
		if !m.Catalog.Ready() {
			return errors.New("loading")
		}
		return nil
	}})
	m.App = application.New(application.Options{
		Store:           m.Store,
		Registry:        m.Registry,
		Sealer:          sealer,
		Logger:          m.Logger,
		Workers:         m.Workers,
		WorkerSnapshots: m.Catalog.Snapshot,
		Settings:        projections.NewSettingsReader(pool),
		Tasks:           projections.NewTaskReader(pool),
		Regions:         cfg.AWSRegions,
		Defaults:        m.settingsDefaults(cl),
	})
	m.Telemetry = application.NewTelemetry(m.App, projections.NewMetricsReader(pool), projections.NewLabsReader(pool))

	all := projections.All(m.Registry)
	if cfg.RunProjections {
		m.Projections = projections.NewManager(m.Store, pool, all, projections.RunnerOptions{Logger: m.Logger})
		m.roles = append(m.roles, role{name: "projections", run: m.Projections.Run})
		m.readiness = append(m.readiness, api.Check{Name: "projections", Func: projectionsCheck(m.Projections)})
	}

	m.Jobs, err = m.openJobs(ctx, cl, sealer)
	if err != nil {
		return err
	}
	if cl.sim != nil && cfg.Simulator.SeedWorkers > 0 {
		m.roles = append(m.roles, m.seedSimulation(cl))
	}

	if cfg.RunAPI {
		if err := m.openAPI(ctx, sealer, all, cl); err != nil {
			return err
		}
	}
	return nil
}

// openEventStore opens the event store serve uses.
func (m *Main) openEventStore(ctx context.Context) error {
	store, closeStore, ping, err := openEventStore(ctx, m.Config, m.Pool, m.Logger)
	if err != nil {
		return err
	}
	m.Store, m.closeStore = store, closeStore
	if ping != nil {
		m.readiness = append(m.readiness, api.Check{Name: "eventstore", Func: ping})
	}
	return nil
}

// openEventStore opens the Postgres event store in pool, or EventStoreDB
// when EVENTSTORE_URL is set (then ping checks that it answers).
func openEventStore(ctx context.Context, cfg Config, pool *pgxpool.Pool, logger *slog.Logger) (store eventstore.Store, closeStore func(), ping func(context.Context) error, err error) {
	if cfg.EventStoreKind() == EventStorePostgres {
		s, err := postgres.Open(ctx, pool, postgres.Options{Logger: logger})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("open the event store: %w", err)
		}
		return s, s.Close, nil, nil
	}
	s, err := esdb.Open(ctx, esdb.Options{
		URL: cfg.EventStoreURL, Logger: logger,
		ReadTimeout: cfg.EventStoreReadTimeout, TelemetryMaxAge: cfg.TelemetryRetention,
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open EventStoreDB: %w", err)
	}
	return s, s.Close, s.Ping, nil
}

// openSealer builds the sealer of secrets from SECRETS_KEY, or from a key
// generated now in development (validation refuses that in production).
func (m *Main) openSealer(ctx context.Context) (*sealing.Sealer, error) {
	if m.Config.SecretsKey == "" {
		m.Logger.WarnContext(ctx, "SECRETS_KEY is not set: using a key generated at start; "+
			"a pending licence registration or an OIDC session will not survive a restart")
		return sealing.New(sealing.RandomKey())
	}
	key, err := sealing.ParseKey(m.Config.SecretsKey)
	if err != nil {
		return nil, fmt.Errorf("SECRETS_KEY: %w", err)
	}
	return sealing.New(key)
}

// openAPI builds the authenticator, the application's auxiliary handlers
// and the HTTP server, and binds the listener.
func (m *Main) openAPI(ctx context.Context, sealer *sealing.Sealer, all []projections.Projection, cl *cloud) error {
	cfg := m.Config
	authn, err := m.openAuth(ctx, sealer)
	if err != nil {
		return err
	}
	m.Operator = projections.NewOperator(projections.OperatorOptions{
		Store: m.Store, Pool: m.Pool, Projections: all, Manager: m.Projections, Logger: m.Logger,
	})
	history := application.NewHistory(application.HistoryOptions{
		Store: m.Store, Registry: m.Registry, Audit: projections.NewAuditReader(m.Pool),
	})
	system := application.NewSystem(application.SystemOptions{
		Checks: []application.ComponentCheck{
			{Name: "database", Check: m.Pool.Ping},
			{Name: "event_store", Check: application.EventStoreCheck(m.Store)},
		},
		Projections: m.Operator,
		Logger:      m.Logger,
	})
	l, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
	}
	m.listener = l
	m.API = api.New(api.Options{
		Logger: m.Logger, Readiness: m.readiness,
		App: m.App, History: history, System: system, Admin: application.NewAdmin(m.Operator), Auth: authn,
		Telemetry: m.Telemetry, Jobs: application.NewJobControl(m.App, m.Jobs),
		Fleet: application.NewFleet(m.App, cl.provider, cl.cml, application.FleetOptions{
			EndpointTemplate: cl.endpointTemplate, CallTimeout: cfg.Jobs.CallTimeout,
		}),
		// The event streams: the dashboard's follows the worker catalog;
		// cookie sessions are re-checked so a signed-out browser's stream
		// ends with auth.session.expired.
		Streams: &api.StreamOptions{Catalog: m.Catalog, Labs: projections.NewLabsReader(m.Pool), Sessions: authn},
	})
	m.roles = append(m.roles, role{name: "http", run: m.runHTTP})
	return nil
}

// openAuth builds the session store (Postgres, or Redis with REDIS_URL),
// the login limiter on the same backend, and the authenticator.
func (m *Main) openAuth(ctx context.Context, sealer *sealing.Sealer) (*auth.Authenticator, error) {
	cfg := m.Config
	var (
		store   sessions.Store
		counter sessions.Counter
	)
	if cfg.RedisURL != "" {
		opts, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		client := redis.NewClient(opts)
		if err := client.Ping(ctx).Err(); err != nil {
			_ = client.Close()
			return nil, fmt.Errorf("connect to Redis at %s: %w", redactConn(cfg.RedisURL), err)
		}
		m.closers = append(m.closers, func() { _ = client.Close() })
		m.readiness = append(m.readiness, api.Check{Name: "redis", Func: func(ctx context.Context) error { return client.Ping(ctx).Err() }})
		r := sessions.NewRedis(client, sessions.Options{})
		store, counter = r, r
	} else {
		p := sessions.NewPostgres(m.Pool, sessions.Options{})
		store, counter = p, p
		m.roles = append(m.roles, role{name: "session-sweeper", run: sweepSessions(p, m.Logger)})
	}
	limit, err := sessions.ParseLimit(cfg.Auth.LoginRateLimit)
	if err != nil {
		return nil, fmt.Errorf("LOGIN_RATE_LIMIT: %w", err)
	}
	limiter, err := sessions.NewLimiter(counter, limit, nil)
	if err != nil {
		return nil, err
	}
	a := cfg.Auth
	authn, err := auth.New(auth.Options{
		Mode: auth.Mode(a.Mode), Environment: cfg.Environment, PublicURL: cfg.PublicURL, Logger: m.Logger,
		Sessions: store, Limiter: limiter,
		IdleTimeout: a.IdleTimeout, MaxLifetime: a.MaxLifetime, Warning: a.Warning,
		Local: auth.LocalOptions{AccountsFile: a.AccountsFile, SigningKeyFile: a.SigningKeyFile, TokenTTL: a.TokenTTL},
		OIDC: auth.OIDCOptions{
			IssuerURL: a.OIDCIssuerURL, ClientID: a.OIDCClientID, ClientSecret: a.OIDCClientSecret,
			Audience: a.OIDCAudience, Scopes: a.OIDCScopes, RolesClaims: a.OIDCRolesClaim,
			PostLogoutRedirectURL: a.OIDCPostLogoutRedirectURL, SigningAlgorithms: a.OIDCSigningAlgs,
			RefreshLeeway: a.OIDCRefreshLeeway, Sealer: sealer,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("authentication: %w", err)
	}
	return authn, nil
}

// sweepSessions deletes expired Postgres sessions every few minutes.
func sweepSessions(store *sessions.Postgres, logger *slog.Logger) func(context.Context) error {
	return func(ctx context.Context) error {
		t := time.NewTicker(5 * time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				if n, err := store.Sweep(ctx); err != nil && ctx.Err() == nil {
					logger.WarnContext(ctx, "sweeping expired sessions failed", slog.Any("error", err))
				} else if n > 0 {
					logger.DebugContext(ctx, "swept expired sessions", slog.Int64("sessions", n))
				}
			}
		}
	}
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
		if m.Operator != nil {
			m.Operator.Close()
		}
		for i := len(m.closers) - 1; i >= 0; i-- {
			m.closers[i]()
		}
		if m.closeStore != nil {
			m.closeStore()
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
