package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/eventstore/storetest"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogWriter sends the store's log lines to the test log.
type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// openStore opens a store on pool, closed when t ends. The poll interval is
// an hour unless set: tests must not depend on polling.
func openStore(t *testing.T, pool *pgxpool.Pool, opts Options) *Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = time.Hour
	}
	s, err := Open(t.Context(), pool, opts)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

// newStore opens a store on a fresh database.
func newStore(t *testing.T) *Store {
	t.Helper()
	return openStore(t, pgtest.NewPool(t), Options{})
}

// connect opens a connection of its own to the store's database.
func connect(t *testing.T, s *Store) *pgx.Conn {
	t.Helper()
	conn, err := pgx.ConnectConfig(t.Context(), s.pool.Config().ConnConfig)
	require.NoError(t, err)
	return conn
}

// holdAppend runs the append statement inside a transaction on a connection of
// its own and leaves the transaction open: the positions are assigned and
// the appenders' advisory lock is held until release.
func holdAppend(t *testing.T, es eventstore.Store, stream string, events ...eventstore.EventData) func(commit bool) error {
	t.Helper()
	release, err := startHeldAppend(t.Context(), es.(*Store), stream, events...)
	require.NoError(t, err)
	return release
}

// startHeldAppend is holdAppend for any goroutine.
func startHeldAppend(ctx context.Context, s *Store, stream string, events ...eventstore.EventData) (func(commit bool) error, error) {
	args, err := buildAppend(stream, eventstore.Any, events)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig)
	if err != nil {
		return nil, err
	}
	bg := context.Background()
	tx, err := conn.Begin(ctx)
	if err == nil {
		var rev, pos int64
		err = tx.QueryRow(ctx, appendSQL, args.values()...).Scan(&rev, &pos)
	}
	if err != nil {
		_ = conn.Close(bg)
		return nil, fmt.Errorf("held append: %w", err)
	}
	return func(commit bool) error {
		defer func() { _ = conn.Close(bg) }()
		if commit {
			return tx.Commit(bg)
		}
		return tx.Rollback(bg)
	}, nil
}

// dropConnections terminates every other backend of the store's database:
// its pool's connections and its listener.
func dropConnections(t *testing.T, es eventstore.Store) {
	t.Helper()
	s := es.(*Store)
	conn := connect(t, s)
	defer func() { _ = conn.Close(context.Background()) }()
	var n int
	err := conn.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&n)
	require.NoError(t, err)
	require.Positive(t, n, "no backend to terminate: the store holds no connection")
}

func TestContract(t *testing.T) {
	t.Parallel()
	storetest.Run(t, storetest.Harness{
		NewStore:        func(t *testing.T) eventstore.Store { return newStore(t) },
		HoldAppend:      holdAppend,
		DropConnections: dropConnections,
	})
}
