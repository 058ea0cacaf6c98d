package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

// Settle protocol: how readers of the global log cope with out-of-order
// commits.
//
// Positions come from events_position_seq before the appending transaction
// commits, so a transaction A can hold position 10 while B, with 11, commits
// first. A reader that delivered 11 and moved its checkpoint past 10 would
// lose A. So a reader only delivers settled positions: positions that are
// either visible (committed) or known never to appear (a rolled-back append,
// or values the sequence skipped after a crash).
//
// Fast path: the positions after from are read (unfiltered, from the primary
// key). The run from+1, from+2, ... that is contiguous is settled: every one
// of those rows is visible. Delivery stops at the first hole.
//
// A hole followed by a visible higher position may be an append still in
// flight or a permanent gap. To tell, settle:
//
//  1. read L, the sequence's last_value (one statement);
//  2. in a separate, later statement, list the virtual transaction ids that
//     hold the appenders' advisory lock (pg_advisory_xact_lock_shared with
//     appendLockKey1/2, taken by eventstore_append before its first nextval);
//  3. wait until none of those transactions holds the lock any more.
//
// Then every position <= L is settled. Proof: let T be the append that drew
// a position p <= L. Its nextval ran before L was read in step 1, and T took
// the lock before its nextval, so T held the lock when step 1 ran. At step 2
// T either still holds it, and is listed and waited for in step 3, or it has
// already ended. Advisory transaction locks are released after the commit has
// become visible to new snapshots (in CommitTransaction, src/backend/access/
// transam/xact.c, ProcArrayEndTransaction precedes the release of the locks),
// so once T no longer holds the lock its rows are visible or, if it rolled
// back, never will be. A position <= L still missing after that is therefore
// a permanent gap. (Waiting may include appenders whose positions are above
// L; that only costs time.)
//
// The highest settled L is kept in settledUpTo: positions up to it need no
// scan for holes any more, so an old gap costs at most one settle per process,
// and catching up below it reads events with one statement per batch. A reader
// catching up also probes (at most once a second) whether any append is in
// flight at all; if none is, everything up to L is settled without waiting.
//
// A reader only settles when it cannot deliver anything else: when the very
// next position is missing. It then waits for the appends in flight (within
// its context), which normally takes milliseconds; a transaction kept open
// after its append (never done by this adapter) stalls readers until it ends,
// and is logged every settleWarnEvery.

// Advisory lock keys of eventstore_append (two-int4 form: objsubid = 2).
const (
	appendLockKey1 = 1129139269 // "CMLE"
	appendLockKey2 = 1163285332 // "EVST"
)

// settledWindow bounds the positions one filtered read below settledUpTo
// considers, so a selective filter cannot turn one call into a full scan.
const settledWindow = 1 << 16

// filteredScanLimit is the minimum number of positions the fast path scans
// for a filtered read, so a selective filter still advances quickly.
const filteredScanLimit = 4096

// probeEvery limits how often a reader catching up probes whether it can
// settle the whole log without waiting.
const probeEvery = time.Second

// settleWarnEvery is how often a settle that keeps waiting for the same
// appenders logs a warning.
const settleWarnEvery = 5 * time.Second

var (
	lockFilterSQL = fmt.Sprintf(`locktype = 'advisory'
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND classid = %d AND objid = %d AND objsubid = 2`, appendLockKey1, appendLockKey2)
	listAppendersSQL  = `SELECT coalesce(array_agg(virtualtransaction), '{}') FROM pg_locks WHERE ` + lockFilterSQL
	stillAppendingSQL = `SELECT coalesce(array_agg(virtualtransaction), '{}') FROM pg_locks WHERE ` + lockFilterSQL +
		` AND virtualtransaction = ANY ($1::text[])`
)

// compiledFilter is a Filter turned into the SQL fetching matching events.
type compiledFilter struct {
	filtered bool
	fetchSQL string // $1 from (exclusive), $2 up to (inclusive), $3 limit, then patterns
	patterns []any
}

func compileFilter(f eventstore.Filter) compiledFilter {
	var (
		c     compiledFilter
		where strings.Builder
	)
	add := func(column string, prefixes []string) {
		if len(prefixes) == 0 {
			return
		}
		pats := make([]string, len(prefixes))
		for i, p := range prefixes {
			pats[i] = likePrefix(p)
		}
		c.patterns = append(c.patterns, pats)
		fmt.Fprintf(&where, " AND %s LIKE ANY ($%d::text[])", column, 3+len(c.patterns))
	}
	add("stream", f.StreamPrefixes)
	add("type", f.TypePrefixes)
	c.filtered = len(c.patterns) > 0
	c.fetchSQL = `SELECT ` + eventColumns + ` FROM events WHERE position > $1 AND position <= $2` +
		where.String() + ` ORDER BY position LIMIT $3`
	return c
}

// likePrefix turns a prefix into a LIKE pattern matching strings that start
// with it (backslash is LIKE's default escape character).
func likePrefix(p string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(p) + "%"
}

// readResult is one batch of the global log.
type readResult struct {
	events     []eventstore.RecordedEvent
	checkpoint uint64 // highest settled position considered
	more       bool   // the batch stopped before the end of the visible log
}

// ReadAll returns up to max settled events after from that match filter, and
// the highest settled position considered. See eventstore.Store. When the
// next position is held by an append in flight, it waits (within ctx) for that
// append to end.
func (s *Store) ReadAll(ctx context.Context, from eventstore.Position, max int, filter eventstore.Filter) ([]eventstore.RecordedEvent, eventstore.Position, error) {
	if max <= 0 {
		return nil, from, fmt.Errorf("read all: max %d must be positive", max)
	}
	f := compileFilter(filter)
	start := min(from.Commit, math.MaxInt64)
	res, err := retryConn(ctx, func() (readResult, error) { return s.read(ctx, start, max, f) })
	if err != nil {
		return nil, from, fmt.Errorf("read all after %s: %w", from, err)
	}
	cp := from
	if res.checkpoint > from.Commit {
		cp = eventstore.Position{Commit: res.checkpoint, Prepare: res.checkpoint}
	}
	return res.events, cp, nil
}

// read returns the next batch after from (see the settle protocol above).
func (s *Store) read(ctx context.Context, from uint64, batch int, f compiledFilter) (readResult, error) {
	for {
		if settled := s.settledUpTo.Load(); from < settled {
			// Everything up to settled is final: no hole check needed.
			upto := settled
			if f.filtered && settled-from > settledWindow {
				upto = from + settledWindow
			}
			events, err := s.fetch(ctx, from, upto, batch, f)
			if err != nil {
				return readResult{}, err
			}
			res := readResult{events: events, checkpoint: upto, more: upto < settled}
			if len(events) == batch {
				res.checkpoint, res.more = events[len(events)-1].Position.Commit, true
			}
			return res, nil
		}

		limit := batch
		if f.filtered {
			limit = max(batch, filteredScanLimit)
		}
		positions, err := s.scanPositions(ctx, from, limit)
		if err != nil {
			return readResult{}, err
		}
		end, beyondHole := contiguousRun(from, positions)
		if beyondHole == 0 && len(positions) == limit {
			// At least a full scan behind the head: a reader catching up.
			// If no append is in flight, settle everything at once so the
			// next batches need no scan.
			if err := s.probeSettled(ctx); err != nil {
				return readResult{}, err
			}
		}
		if end == from {
			if beyondHole == 0 {
				return readResult{checkpoint: from}, nil // nothing new
			}
			// The next position is missing but a later one is visible:
			// settle at least up to it, then read below settledUpTo.
			if err := s.settle(ctx, beyondHole); err != nil {
				return readResult{}, err
			}
			continue
		}
		events, err := s.fetch(ctx, from, end, batch, f)
		if err != nil {
			return readResult{}, err
		}
		res := readResult{events: events, checkpoint: end, more: beyondHole != 0 || len(positions) == limit}
		if len(events) == batch {
			res.checkpoint, res.more = events[len(events)-1].Position.Commit, true
		}
		return res, nil
	}
}

// contiguousRun returns the end of the run from+1, from+2, ... in positions
// (from when the run is empty) and the first position after a hole (0 when
// there is none).
func contiguousRun(from uint64, positions []int64) (end, beyondHole uint64) {
	end = from
	for _, p := range positions {
		if uint64(p) != end+1 {
			return end, uint64(p)
		}
		end++
	}
	return end, 0
}

func (s *Store) scanPositions(ctx context.Context, from uint64, limit int) ([]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT position FROM events WHERE position > $1 ORDER BY position LIMIT $2`, int64(from), limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

func (s *Store) fetch(ctx context.Context, from, upto uint64, limit int, f compiledFilter) ([]eventstore.RecordedEvent, error) {
	args := make([]any, 0, 3+len(f.patterns))
	args = append(args, int64(from), int64(upto), limit)
	args = append(args, f.patterns...)
	rows, err := s.pool.Query(ctx, f.fetchSQL, args...)
	if err != nil {
		return nil, err
	}
	return collectEvents(rows, limit)
}

// settle makes sure settledUpTo >= need, where need is a visible position.
// Concurrent callers share one settle.
func (s *Store) settle(ctx context.Context, need uint64) error {
	for s.settledUpTo.Load() < need {
		select {
		case s.settleSem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		if s.settledUpTo.Load() >= need {
			<-s.settleSem
			return nil
		}
		last, err := s.settleOnce(ctx)
		<-s.settleSem
		if err != nil {
			return fmt.Errorf("settle positions: %w", err)
		}
		s.raiseSettled(last)
		if last < need {
			// Cannot happen unless the sequence was reset below existing rows.
			return fmt.Errorf("settle positions: sequence last value %d is below visible position %d", last, need)
		}
	}
	return nil
}

// settleOnce runs steps 1 to 3 of the settle protocol and returns L.
func (s *Store) settleOnce(ctx context.Context) (uint64, error) {
	last, holders, err := s.settleStart(ctx)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	nextWarn := start.Add(settleWarnEvery)
	delay := time.Millisecond
	for len(holders) > 0 {
		if !sleepCtx(ctx, delay) {
			return 0, ctx.Err()
		}
		delay = min(2*delay, 50*time.Millisecond)
		if err := s.pool.QueryRow(ctx, stillAppendingSQL, holders).Scan(&holders); err != nil {
			return 0, fmt.Errorf("check appenders: %w", err)
		}
		if now := time.Now(); len(holders) > 0 && now.After(nextWarn) {
			nextWarn = now.Add(settleWarnEvery)
			s.log.WarnContext(ctx, "event store readers wait for appends in flight",
				slog.Duration("waited", now.Sub(start)),
				slog.Uint64("up_to_position", last),
				slog.Any("virtual_transactions", holders))
		}
	}
	return last, nil
}

// settleStart runs steps 1 and 2: L, then the appenders holding the lock.
func (s *Store) settleStart(ctx context.Context) (uint64, []string, error) {
	var last int64
	if err := s.pool.QueryRow(ctx, `SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_position_seq`).Scan(&last); err != nil {
		return 0, nil, fmt.Errorf("read sequence: %w", err)
	}
	var holders []string
	if err := s.pool.QueryRow(ctx, listAppendersSQL).Scan(&holders); err != nil {
		return 0, nil, fmt.Errorf("list appenders: %w", err)
	}
	return uint64(last), holders, nil
}

// probeSettled is a settle that does not wait: when no append holds the lock,
// everything up to L is settled at once (same proof, with an empty list). It
// runs at most once per probeEvery.
func (s *Store) probeSettled(ctx context.Context) error {
	now := time.Now().UnixNano()
	prev := s.lastProbe.Load()
	if now-prev < int64(probeEvery) || !s.lastProbe.CompareAndSwap(prev, now) {
		return nil
	}
	last, holders, err := s.settleStart(ctx)
	if err != nil {
		return fmt.Errorf("probe settled positions: %w", err)
	}
	if len(holders) == 0 {
		s.raiseSettled(last)
	}
	return nil
}

// raiseSettled moves settledUpTo up to p (never down).
func (s *Store) raiseSettled(p uint64) {
	for {
		cur := s.settledUpTo.Load()
		if p <= cur || s.settledUpTo.CompareAndSwap(cur, p) {
			return
		}
	}
}
