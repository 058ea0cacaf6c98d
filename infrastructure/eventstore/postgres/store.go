// Package postgres is the Postgres adapter of the event store port
// (application/eventstore). The schema and the eventstore_append function come
// from migrations/00001_event_store.sql.
//
// Appends are one round trip each: a call of eventstore_append in autocommit.
// Readers of the global log only deliver settled positions (see read.go), so
// an append that commits after a later-numbered one is never skipped. New
// events wake local subscribers at once and other processes through
// LISTEN/NOTIFY (notify.go); polling is the fallback.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

// DefaultChannel is the LISTEN/NOTIFY channel used when Options.Channel is
// empty.
const DefaultChannel = "cmlcm_events"

// DefaultPollInterval is the fallback polling interval of subscriptions used
// when Options.PollInterval is zero.
const DefaultPollInterval = 2 * time.Second

// ErrClosed ends subscriptions when the store is closed and is returned by
// Subscribe afterwards.
var ErrClosed = errors.New("event store closed")

// Options configure a Store. The zero value is usable.
type Options struct {
	// Logger receives warnings (lost connections, slow settles). nil means
	// slog.Default().
	Logger *slog.Logger
	// Channel is the LISTEN/NOTIFY channel; all processes sharing the
	// database must use the same one. Default DefaultChannel.
	Channel string
	// PollInterval is how often an idle subscription reads the log even
	// without a notification. Default DefaultPollInterval.
	PollInterval time.Duration
}

// maxChannelLen is the longest channel name Postgres accepts (NAMEDATALEN-1).
const maxChannelLen = 63

// appendSignature identifies the append function of the migration.
// appendSQL appends events in one statement, run in autocommit, so an
// append is one round trip. In order, for every event row it produces:
//
//  1. appender takes the appenders' shared advisory lock (see the settle
//     protocol in read.go): the lock must be held before the first nextval;
//     every output row joins the CTE, so it is evaluated before any row's
//     target list (and its nextval) is computed;
//  2. cur reads the stream's last revision (an index probe);
//  3. the WHERE clause checks the expectation ($2: 0 any, 1 no stream, 2
//     stream exists, 3 exact $3); when it fails no row is produced and no
//     position is drawn;
//  4. each event gets the next revision and position, in array order.
//
// Two writers that read the same last revision race on UNIQUE (stream,
// revision): one commits, the other fails with a unique violation after
// drawing positions, which leaves a gap that readers settle.
const appendSQL = `WITH appender AS (SELECT pg_advisory_xact_lock_shared(1129139269, 1163285332)),
     cur AS (SELECT max(revision) AS rev FROM events WHERE stream = $1)
INSERT INTO events (position, stream, revision, event_id, type, data, metadata)
SELECT nextval('events_position_seq'), $1, coalesce(cur.rev, -1) + u.ord, u.id, u.type, u.data, u.meta
  FROM appender, cur,
       unnest($4::uuid[], $5::text[], $6::jsonb[], $7::jsonb[]) WITH ORDINALITY AS u(id, type, data, meta, ord)
 WHERE CASE $2::smallint WHEN 1 THEN cur.rev IS NULL
                         WHEN 2 THEN cur.rev IS NOT NULL
                         WHEN 3 THEN cur.rev = $3::bigint
                         ELSE true END
RETURNING revision, position`

// appendOneSQL is appendSQL for the common single-event append, with scalar
// parameters: cheaper to encode here and to execute there.
const appendOneSQL = `WITH appender AS (SELECT pg_advisory_xact_lock_shared(1129139269, 1163285332)),
     cur AS (SELECT max(revision) AS rev FROM events WHERE stream = $1)
INSERT INTO events (position, stream, revision, event_id, type, data, metadata)
SELECT nextval('events_position_seq'), $1, coalesce(cur.rev, -1) + 1, $4::uuid, $5::text, $6::jsonb, $7::jsonb
  FROM appender, cur
 WHERE CASE $2::smallint WHEN 1 THEN cur.rev IS NULL
                         WHEN 2 THEN cur.rev IS NOT NULL
                         WHEN 3 THEN cur.rev = $3::bigint
                         ELSE true END
RETURNING revision, position`

// Constraint names of the events table (migrations/00001_event_store.sql).
const (
	constraintEventID        = "events_event_id_key"
	constraintStreamRevision = "events_stream_revision_key"
)

// maxAttempts bounds the retries of an operation that failed on a broken
// connection. Appends are safe to retry because the event ids make them
// idempotent.
const maxAttempts = 4

// Store is the Postgres event store. It is safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	log     *slog.Logger
	channel string
	poll    time.Duration

	// ctx ends the background goroutines and subscriptions; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex // guards closed and wg.Add against Close
	closed bool

	wake         broadcaster   // wakes local subscriptions
	notifyReq    chan struct{} // asks the notifier for a pg_notify
	lastAppended atomic.Uint64 // highest position appended by this process

	// settledUpTo: every position up to it is settled (committed or a
	// permanent gap). settleSem serialises settles so concurrent readers
	// share one.
	settledUpTo atomic.Uint64
	settleSem   chan struct{}
	lastProbe   atomic.Int64 // unix nanoseconds of the last probeSettled
}

var _ eventstore.Store = (*Store)(nil)

// Open checks the schema, starts listening for notifications and starts the
// notifier. The pool stays owned by the caller; Close the store before the
// pool.
func Open(ctx context.Context, pool *pgxpool.Pool, opts Options) (*Store, error) {
	if pool == nil {
		return nil, errors.New("open event store: nil pool")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Channel == "" {
		opts.Channel = DefaultChannel
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if len(opts.Channel) > maxChannelLen {
		return nil, fmt.Errorf("open event store: channel name %q is longer than %d bytes", opts.Channel, maxChannelLen)
	}
	var ok bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('events') IS NOT NULL AND to_regclass('events_position_seq') IS NOT NULL`).Scan(&ok); err != nil {
		return nil, fmt.Errorf("open event store: %w", err)
	}
	if !ok {
		return nil, errors.New("open event store: table events missing (migrations not applied)")
	}
	s := &Store{
		pool:      pool,
		log:       opts.Logger.With(slog.String("component", "eventstore.postgres")),
		channel:   opts.Channel,
		poll:      opts.PollInterval,
		notifyReq: make(chan struct{}, 1),
		settleSem: make(chan struct{}, 1),
	}
	conn, err := s.listen(ctx)
	if err != nil {
		return nil, fmt.Errorf("open event store: %w", err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(2)
	go s.runListener(conn)
	go s.runNotifier()
	return s, nil
}

// Close stops the background goroutines and ends every subscription (their
// Err is then ErrClosed), and waits for them. It does not close the pool.
func (s *Store) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// Append writes events to the end of stream if it matches expected. See
// eventstore.Store.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.Expected, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	args, err := buildAppend(stream, expected, events)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	for attempt := 1; ; attempt++ {
		res, written, err := s.tryAppend(ctx, args)
		switch {
		case err == nil && written:
			s.appended(res.Position.Commit)
			return res, nil
		case err == nil:
			// The expectation failed: a wrong version, or this very append
			// committed already (a retry after a lost reply).
			return s.resolve(ctx, args, expected)
		case isUniqueViolation(err, constraintStreamRevision) && expected.IsAny() && attempt < maxAttempts:
			// Another writer took the revision first; Any appends after it.
			continue
		case isUniqueViolation(err, constraintStreamRevision), isUniqueViolation(err, constraintEventID):
			return s.resolve(ctx, args, expected)
		case attempt < maxAttempts && ctx.Err() == nil && isConnError(err):
			// Safe to repeat: the event ids make a repeated append
			// idempotent.
			continue
		}
		return eventstore.AppendResult{}, appendError(stream, err)
	}
}

// tryAppend runs appendSQL once. written is false when the expectation did
// not hold (nothing was written).
func (s *Store) tryAppend(ctx context.Context, a *appendArgs) (eventstore.AppendResult, bool, error) {
	var rows pgx.Rows
	var err error
	if len(a.ids) == 1 {
		rows, err = s.pool.Query(ctx, appendOneSQL, a.stream, a.kind, a.revision, a.ids[0], a.types[0], a.data[0], a.metadata[0])
	} else {
		rows, err = s.pool.Query(ctx, appendSQL, a.values()...)
	}
	if err != nil {
		return eventstore.AppendResult{}, false, err
	}
	var rev, pos, n int64
	for rows.Next() {
		if err := rows.Scan(&rev, &pos); err != nil {
			rows.Close()
			return eventstore.AppendResult{}, false, err
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return eventstore.AppendResult{}, false, err
	}
	if n == 0 {
		return eventstore.AppendResult{}, false, nil
	}
	if n != int64(len(a.ids)) {
		return eventstore.AppendResult{}, false, fmt.Errorf("append to %s: wrote %d of %d events", a.stream, n, len(a.ids))
	}
	return eventstore.AppendResult{
		NextRevision: uint64(rev),
		Position:     eventstore.Position{Commit: uint64(pos), Prepare: uint64(pos)},
	}, true, nil
}

// resolveSQL finds the given ids and the stream's last revision, after an
// append wrote nothing. The simple protocol makes Postgres plan it for the
// actual ids each time (a cached generic plan for "= ANY" could be a
// sequential scan).
const resolveSQL = `SELECT e.event_id, e.stream, e.revision, e.position,
       (SELECT max(revision) FROM events WHERE stream = $2)
  FROM events e WHERE e.event_id = ANY ($1::uuid[])
 UNION ALL
SELECT NULL, NULL, NULL, NULL, (SELECT max(revision) FROM events WHERE stream = $2)`

// resolve explains an append that wrote nothing: when every id is already
// in the stream, consecutively and in this order, it is a repeat of an
// append that committed (idempotent success, with the original result);
// ids that only partly match an earlier append are refused; otherwise the
// stream was not in the expected state.
func (s *Store) resolve(ctx context.Context, a *appendArgs, expected eventstore.Expected) (eventstore.AppendResult, error) {
	ids := make([]string, len(a.ids))
	for i, id := range a.ids {
		ids[i] = formatUUID(id)
	}
	type found struct {
		stream   string
		revision int64
		position int64
	}
	byID := map[string]found{}
	var actual *int64
	_, err := retryConn(ctx, func() (struct{}, error) {
		rows, err := s.pool.Query(ctx, resolveSQL, pgx.QueryExecModeSimpleProtocol, ids, a.stream)
		if err != nil {
			return struct{}{}, err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				id, stream           *string
				revision, posn, last *int64
			)
			if err := rows.Scan(&id, &stream, &revision, &posn, &last); err != nil {
				return struct{}{}, err
			}
			actual = last
			if id != nil {
				byID[*id] = found{stream: *stream, revision: *revision, position: *posn}
			}
		}
		return struct{}{}, rows.Err()
	})
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("append to %s: look up the outcome: %w", a.stream, err)
	}
	wev := &eventstore.WrongExpectedVersionError{Stream: a.stream, Expected: expected}
	if actual != nil {
		wev.Actual, wev.ActualExists = uint64(*actual), true
	}
	if len(byID) == 0 {
		return eventstore.AppendResult{}, wev
	}
	first, ok := byID[ids[0]]
	repeat := ok && len(byID) == len(ids)
	for i, id := range ids {
		f, ok := byID[id]
		if !ok || f.stream != a.stream || f.revision != first.revision+int64(i) {
			repeat = false
			break
		}
	}
	if !repeat {
		return eventstore.AppendResult{}, fmt.Errorf("event ids partly match an earlier append: %w", wev)
	}
	last := byID[ids[len(ids)-1]]
	return eventstore.AppendResult{
		NextRevision: uint64(last.revision),
		Position:     eventstore.Position{Commit: uint64(last.position), Prepare: uint64(last.position)},
	}, nil
}

// appendError maps a failed append statement.
func appendError(stream string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "22") {
		// Data exception: input the server refuses, e.g. \u0000 in JSON.
		return fmt.Errorf("append to %s: %w: %s", stream, eventstore.ErrInvalidAppend, pgErr.Message)
	}
	return fmt.Errorf("append to %s: %w", stream, err)
}

func isUniqueViolation(err error, constraint string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == constraint
}

// isConnError reports whether err comes from a broken connection rather than
// from the statement: the server terminated the backend (57P01..57P03), a
// connection exception (class 08), or a network error.
func isConnError(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, pgx.ErrNoRows) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03"
	}
	// Everything else pgx returns for a query whose arguments it could
	// encode is an I/O failure.
	return true
}

// retryConn runs a read, retrying it a few times on a broken connection.
func retryConn[T any](ctx context.Context, read func() (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		v, err := read()
		if err == nil || attempt >= maxAttempts || ctx.Err() != nil || !isConnError(err) {
			return v, err
		}
	}
}

const eventColumns = `position, stream, revision, event_id, type, data, metadata, recorded_at`

// ReadStream returns up to max events of stream from revision from on. See
// eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, stream string, from uint64, max int) ([]eventstore.RecordedEvent, error) {
	if max <= 0 {
		return nil, fmt.Errorf("read stream %s: max %d must be positive", stream, max)
	}
	if from > math.MaxInt64 {
		return []eventstore.RecordedEvent{}, nil
	}
	events, err := retryConn(ctx, func() ([]eventstore.RecordedEvent, error) {
		rows, err := s.pool.Query(ctx, `SELECT `+eventColumns+` FROM events
			WHERE stream = $1 AND revision >= $2 ORDER BY revision LIMIT $3`, stream, int64(from), max)
		if err != nil {
			return nil, err
		}
		return collectEvents(rows, max)
	})
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", stream, err)
	}
	return events, nil
}

// collectEvents scans rows of eventColumns.
func collectEvents(rows pgx.Rows, capacity int) ([]eventstore.RecordedEvent, error) {
	defer rows.Close()
	events := make([]eventstore.RecordedEvent, 0, min(capacity, 64))
	for rows.Next() {
		var (
			pos, rev int64
			id       [16]byte
			e        eventstore.RecordedEvent
		)
		if err := rows.Scan(&pos, &e.Stream, &rev, &id, &e.Type, &e.Data, &e.Metadata, &e.RecordedAt); err != nil {
			return nil, err
		}
		e.ID = formatUUID(id)
		e.Revision = uint64(rev)
		e.Position = eventstore.Position{Commit: uint64(pos), Prepare: uint64(pos)}
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return events, nil
}

// sleepCtx waits for d or until ctx ends; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
