package projections

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

// schemaObjects lists the names of a table's indexes, constraints and owned
// sequences, and the tables whose name starts with it.
func (e *env) schemaObjects(tb testing.TB, table string) map[string][]string {
	tb.Helper()
	out := map[string][]string{}
	for kind, q := range map[string]string{
		"indexes":     `SELECT indexname FROM pg_indexes WHERE tablename = $1 ORDER BY 1`,
		"constraints": `SELECT conname FROM pg_constraint WHERE conrelid = to_regclass($1) ORDER BY 1`,
		"sequences": `SELECT s.relname FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
			WHERE d.refobjid = to_regclass($1) AND d.deptype IN ('a', 'i') ORDER BY 1`,
		"tables": `SELECT tablename FROM pg_tables WHERE tablename LIKE $1 || '%' ORDER BY 1`,
	} {
		rows, err := e.pool.Query(context.Background(), q, table)
		require.NoError(tb, err)
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(tb, err)
		out[kind] = names
	}
	return out
}

// reader queries test_counts without pause until stopped, as the API would
// during a rebuild, and records what it saw.
type reader struct {
	stop    chan struct{}
	done    chan struct{}
	queries atomic.Int64
	mu      sync.Mutex
	errs    []error
}

func startReader(tb testing.TB, e *env, probeID string) *reader {
	r := &reader{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		ctx := context.Background()
		var lastCount int64
		for {
			select {
			case <-r.stop:
				return
			default:
			}
			// Both statements are prepared and cached per connection by pgx.
			var count, maxPos int64
			err := e.pool.QueryRow(ctx, `SELECT count(*), coalesce(max(position), 0) FROM test_counts`).Scan(&count, &maxPos)
			if err == nil && count < lastCount {
				err = fmt.Errorf("count went back from %d to %d", lastCount, count)
			}
			lastCount = max(lastCount, count)
			if err == nil {
				var stream string
				var position int64
				err = e.pool.QueryRow(ctx, `SELECT stream, position FROM test_counts WHERE event_id = $1`, probeID).Scan(&stream, &position)
			}
			if err != nil {
				r.mu.Lock()
				r.errs = append(r.errs, err)
				r.mu.Unlock()
			}
			r.queries.Add(1)
		}
	}()
	tb.Cleanup(r.halt)
	return r
}

func (r *reader) halt() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
}

func TestRebuild(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.appendEvents(t, "other", 3, 20)
	e.appendEvents(t, "test", 20, 300)

	opts := e.runnerOptions()
	opts.BatchSize = 50
	live := NewRunner(e.store, e.pool, &countProjection{}, opts)
	start(t, live.Run)
	e.waitMatchesLog(t)
	before := tableRows(t, e.pool, "test_counts")
	names := e.schemaObjects(t, "test_counts")
	require.Equal(t, []string{"test_counts"}, names["tables"])
	require.Len(t, names["indexes"], 3)
	require.Len(t, names["sequences"], 2)

	listener, err := pgx.ConnectConfig(ctx, e.pool.Config().ConnConfig)
	require.NoError(t, err)
	defer listener.Close(ctx)
	_, err = listener.Exec(ctx, "LISTEN "+DefaultReadModelChannel)
	require.NoError(t, err)

	// Readers and writers keep going during the rebuild.
	rd := startReader(t, e, e.logged(t)[0].ID)
	writerStop := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-writerStop:
				writerDone <- nil
				return
			default:
			}
			_, err := e.store.Append(ctx, fmt.Sprintf("test-w%d", i%5), eventstore.Any,
				eventstore.EventData{ID: newUUID(), Type: "test.happened.v1", Data: []byte(`{}`)})
			if err != nil {
				writerDone <- err
				return
			}
			time.Sleep(2 * time.Millisecond) // pacing, not synchronisation
		}
	}()

	var swaps atomic.Int32
	var late eventstore.Position
	res, err := Rebuild(ctx, e.store, e.pool, &countProjection{}, RebuildOptions{
		Logger:    e.log,
		BatchSize: 64,
		BeforeSwap: func(context.Context) error {
			swaps.Add(1)
			// Events between the catch-up and the swap: the swap applies them.
			r := e.appendEvents(t, "test-late", 2, 10)
			late = r[len(r)-1].Position
			return nil
		},
	})
	require.NoError(t, err)
	close(writerStop)
	require.NoError(t, <-writerDone)
	require.EqualValues(t, 1, swaps.Load())

	// The result covers exactly the events up to its position.
	var upTo int64
	for _, ev := range e.logged(t) {
		if !res.Position.Less(ev.Position) {
			upTo++
		}
	}
	require.Equal(t, upTo, res.Events)
	require.GreaterOrEqual(t, res.Events, int64(300+10))
	require.False(t, res.Position.Less(late), "the swap did not apply the late events")
	require.Positive(t, res.Duration)
	require.Positive(t, res.EventsPerSecond)
	require.False(t, e.checkpoint(t, "test_counts").Less(res.Position))

	// The live runner resumes after the swap: no gap, no duplicate, and the
	// rows it had are unchanged.
	e.waitMatchesLog(t)
	after := tableRows(t, e.pool, "test_counts")
	for id, r := range before {
		require.Equal(t, r, after[id])
	}
	require.Equal(t, names, e.schemaObjects(t, "test_counts"), "names changed by the swap")

	rd.halt()
	require.Empty(t, rd.errs, "readers were interrupted")
	require.Greater(t, rd.queries.Load(), int64(10))

	// The swap was announced.
	nctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	for {
		n, err := listener.WaitForNotification(nctx)
		require.NoError(t, err, "no rebuilt notification")
		msg, err := ParseNotification(n.Payload)
		require.NoError(t, err)
		if msg.Rebuilt {
			require.Equal(t, "test_counts", msg.Projection)
			require.Equal(t, res.Position.String(), msg.Position)
			break
		}
	}

	// Live delivery continues into the new table (its serial and identity
	// defaults work).
	e.appendEvents(t, "test", 4, 25)
	e.waitMatchesLog(t)

	// A second rebuild works on the swapped tables.
	res2, err := Rebuild(ctx, e.store, e.pool, &countProjection{}, RebuildOptions{Logger: e.log})
	require.NoError(t, err)
	require.Equal(t, int64(len(e.logged(t))), res2.Events)
	require.Equal(t, names, e.schemaObjects(t, "test_counts"), "names changed by the second swap")
	e.appendEvents(t, "test", 4, 25)
	e.waitMatchesLog(t)
	var nulls int
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT count(*) FROM test_counts WHERE n IS NULL OR k IS NULL`).Scan(&nulls))
	require.Zero(t, nulls)
}

// TestRebuildWithoutRunner rebuilds a projection that never ran: the
// checkpoint is created, and a runner started afterwards continues from it.
func TestRebuildWithoutRunner(t *testing.T) {
	e := newEnv(t)
	e.appendEvents(t, "test", 5, 40)
	_, found, err := ReadCheckpoint(context.Background(), e.pool, "test_counts")
	require.NoError(t, err)
	require.False(t, found)

	res, err := Rebuild(context.Background(), e.store, e.pool, &countProjection{}, RebuildOptions{Logger: e.log, BatchSize: 7})
	require.NoError(t, err)
	require.EqualValues(t, 40, res.Events)
	require.Equal(t, res.Position, e.checkpoint(t, "test_counts"))
	ok, why := e.matchesLog(t)
	require.True(t, ok, why)

	p := &countProjection{}
	r := NewRunner(e.store, e.pool, p, e.runnerOptions())
	start(t, r.Run)
	waitFor(t, func() bool { return r.Status().CaughtUp }, func() string { return "never caught up" })
	require.Zero(t, p.calls.Load(), "the runner re-applied rebuilt events")
	e.appendEvents(t, "test", 5, 5)
	e.waitMatchesLog(t)
}

func TestRebuildInProgress(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, e.pool.Config().ConnConfig)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, advisoryKey("rebuild", "test_counts"))
	require.NoError(t, err)

	_, err = Rebuild(ctx, e.store, e.pool, &countProjection{}, RebuildOptions{Logger: e.log})
	require.ErrorIs(t, err, ErrRebuildInProgress)
}

// TestRebuildSwapLockTimeout: a long reader holds the live table; the swap
// gives up after SwapLockTimeout and retries, and succeeds once the reader
// is gone. When it never goes away, the rebuild fails and leaves the live
// table as it was.
func TestRebuildSwapLockTimeout(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.appendEvents(t, "test", 3, 30)
	r := NewRunner(e.store, e.pool, &countProjection{}, e.runnerOptions())
	start(t, r.Run)
	e.waitMatchesLog(t)

	longReader := func() pgx.Tx {
		tx, err := e.pool.Begin(ctx)
		require.NoError(t, err)
		var n int
		require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM test_counts`).Scan(&n))
		return tx
	}

	tx := longReader()
	var attempts atomic.Int32
	res, err := Rebuild(ctx, e.store, e.pool, &countProjection{}, RebuildOptions{
		Logger:          e.log,
		SwapLockTimeout: 100 * time.Millisecond,
		SwapAttempts:    3,
		BeforeSwap: func(context.Context) error {
			if attempts.Add(1) == 2 {
				require.NoError(t, tx.Commit(ctx))
			}
			return nil
		},
	})
	require.NoError(t, err)
	require.EqualValues(t, 2, attempts.Load())
	require.EqualValues(t, 30, res.Events)
	e.waitMatchesLog(t)

	tx = longReader()
	defer func() { _ = tx.Rollback(ctx) }()
	names := e.schemaObjects(t, "test_counts")
	_, err = Rebuild(ctx, e.store, e.pool, &countProjection{}, RebuildOptions{
		Logger: e.log, SwapLockTimeout: 50 * time.Millisecond, SwapAttempts: 2,
	})
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "55P03", pgErr.Code)
	require.NoError(t, tx.Rollback(ctx))
	require.Equal(t, names, e.schemaObjects(t, "test_counts"), "a failed rebuild must leave no trace")
	e.appendEvents(t, "test", 3, 5)
	e.waitMatchesLog(t)
}

func TestRebuildApplyFailure(t *testing.T) {
	e := newEnv(t)
	e.appendEvents(t, "test", 3, 30)
	r := NewRunner(e.store, e.pool, &countProjection{}, e.runnerOptions())
	start(t, r.Run)
	e.waitMatchesLog(t)
	names := e.schemaObjects(t, "test_counts")
	cp := e.checkpoint(t, "test_counts")

	broken := &countProjection{fail: func(ev eventstore.RecordedEvent) error {
		if ev.Revision == 5 {
			return errors.New("cannot apply")
		}
		return nil
	}}
	_, err := Rebuild(context.Background(), e.store, e.pool, broken, RebuildOptions{Logger: e.log, BatchSize: 4})
	require.ErrorContains(t, err, "cannot apply")
	require.Equal(t, names, e.schemaObjects(t, "test_counts"))
	require.Equal(t, cp, e.checkpoint(t, "test_counts"))
	ok, why := e.matchesLog(t)
	require.True(t, ok, why)
}

func TestRebuildRejectsBadTables(t *testing.T) {
	e := newEnv(t)
	_, err := Rebuild(context.Background(), e.store, e.pool, emptyProjection{name: "x"}, RebuildOptions{Logger: e.log})
	require.ErrorContains(t, err, "owns no tables")
}
