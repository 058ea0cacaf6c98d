package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

// Defaults of RunnerOptions.
const (
	DefaultBatchSize = 500
	DefaultLockRetry = 5 * time.Second
)

const (
	// checkpointInterval bounds how often a runner writes a checkpoint that
	// only skips filtered-out events (no read-model change).
	checkpointInterval = time.Second
	// backoffMin and backoffMax bound the pause after a failed batch.
	backoffMin = 100 * time.Millisecond
	backoffMax = 30 * time.Second
	// minPingTimeout is the least time a leader waits for its lock
	// connection to answer a ping before giving the leadership up.
	minPingTimeout = 5 * time.Second
	// maxNotifyPayload keeps NOTIFY payloads under Postgres' 8000-byte limit.
	maxNotifyPayload = 7000
)

// RunnerOptions configures a Runner (and every Runner of a Manager).
type RunnerOptions struct {
	// Logger receives the runner's logs; nil means slog.Default().
	Logger *slog.Logger
	// BatchSize is the most messages applied in one transaction (default
	// 500). A batch holds what is immediately available, up to this size.
	BatchSize int
	// LockRetry is how often a standby retries to take the leadership, and
	// how often a leader checks that its lock connection is alive (default
	// 5 s).
	LockRetry time.Duration
	// ReadModelChannel is the NOTIFY channel (default
	// DefaultReadModelChannel).
	ReadModelChannel string
	// BeforeCommit, a test hook, is called inside each batch transaction after
	// the read-model and checkpoint writes, just before COMMIT. An error
	// aborts the batch like an Apply error.
	BeforeCommit func(ctx context.Context) error
}

func (o RunnerOptions) withDefaults() RunnerOptions {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.LockRetry <= 0 {
		o.LockRetry = DefaultLockRetry
	}
	if o.ReadModelChannel == "" {
		o.ReadModelChannel = DefaultReadModelChannel
	}
	return o
}

// RunnerStatus is a runner's state, for readiness checks and operators.
type RunnerStatus struct {
	// Name is the projection's name.
	Name string
	// Position is the checkpoint: the last one this runner committed while
	// leading, or the stored one as last read while standing by.
	Position eventstore.Position
	// Leader is true while this runner holds the projection's lock.
	Leader bool
	// CaughtUp becomes true once the runner has applied everything up to the
	// log head (checked with ReadAll after its batches), or once it has seen
	// that another instance leads. It stays true afterwards.
	CaughtUp bool
	// LastError is the error of the latest failed attempt; a committed batch
	// clears it.
	LastError string
	// UpdatedAt is when the status last changed.
	UpdatedAt time.Time
}

// Runner keeps one projection up to date. Create it with NewRunner and call
// Run once.
type Runner struct {
	store   eventstore.Store
	pool    *pgxpool.Pool
	p       Projection
	opts    RunnerOptions
	log     *slog.Logger
	name    string
	filter  eventstore.Filter
	tables  Tables
	lockKey int64

	// Owned by the goroutine running Run.
	committed eventstore.Position // the checkpoint row as this runner last wrote or read it
	pending   eventstore.Position // >= committed: also covers unwritten filter-only advances
	lastWrite time.Time           // of the checkpoint row

	mu     sync.Mutex
	status RunnerStatus

	// fenced counts batches abandoned because the checkpoint row had moved.
	fenced atomic.Int64
}

// NewRunner returns a runner of projection p reading store and writing through
// pool.
func NewRunner(store eventstore.Store, pool *pgxpool.Pool, p Projection, opts RunnerOptions) *Runner {
	opts = opts.withDefaults()
	name := p.Name()
	return &Runner{
		store:   store,
		pool:    pool,
		p:       p,
		opts:    opts,
		log:     opts.Logger.With(slog.String("projection", name)),
		name:    name,
		filter:  p.Filter(),
		tables:  liveTables(p),
		lockKey: advisoryKey("projection", name),
		status:  RunnerStatus{Name: name, UpdatedAt: time.Now()},
	}
}

// Status returns a snapshot of the runner's state. It is safe to call
// concurrently with Run.
func (r *Runner) Status() RunnerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

func (r *Runner) updateStatus(f func(s *RunnerStatus)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.status)
	r.status.UpdatedAt = time.Now()
}

func (r *Runner) recordError(err error) {
	r.updateStatus(func(s *RunnerStatus) { s.LastError = err.Error() })
}

// Run keeps the projection up to date until ctx ends, then returns nil.
// Failures (database, event store, Apply) are logged, recorded in Status and
// retried with a bounded exponential back-off; they do not end Run.
//
// Only one runner per projection name applies events at a time, across
// processes: Run first takes a session advisory lock on a dedicated
// connection (retrying every LockRetry while another instance holds it), and
// gives the leadership up when that connection fails.
func (r *Runner) Run(ctx context.Context) error {
	defer r.updateStatus(func(s *RunnerStatus) { s.Leader = false })
	var conn *pgx.Conn
	for {
		var err error
		conn, err = r.acquire(ctx, conn)
		if err != nil {
			return nil // ctx ended
		}
		r.lead(ctx, conn)
		// Leadership ends with the lock connection: closing it releases the
		// lock (it may be dead already).
		closeConn(conn)
		conn = nil
		r.updateStatus(func(s *RunnerStatus) { s.Leader = false })
		if ctx.Err() != nil {
			return nil
		}
	}
}

// acquire returns a connection holding the projection's advisory lock,
// retrying every LockRetry. It reuses conn (which does not hold the lock)
// when it is still open. It fails only when ctx ends.
func (r *Runner) acquire(ctx context.Context, conn *pgx.Conn) (*pgx.Conn, error) {
	standbyLogged := false
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			closeConn(conn)
			return nil, ctx.Err()
		case <-timer.C:
		}
		timer.Reset(r.opts.LockRetry)

		if conn == nil || conn.IsClosed() {
			c, err := pgx.ConnectConfig(ctx, r.pool.Config().ConnConfig)
			if err != nil {
				if ctx.Err() == nil {
					r.log.WarnContext(ctx, "projection: cannot connect for the leadership lock", slog.Any("error", err))
					r.recordError(fmt.Errorf("connect for leadership lock: %w", err))
				}
				continue
			}
			conn = c
		}
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, r.lockKey).Scan(&got); err != nil {
			if ctx.Err() == nil {
				r.log.WarnContext(ctx, "projection: cannot try the leadership lock", slog.Any("error", err))
				r.recordError(fmt.Errorf("try leadership lock: %w", err))
			}
			closeConn(conn)
			conn = nil
			continue
		}
		if got {
			return conn, nil
		}
		// Another instance leads: report its checkpoint and stand by.
		pos, _, err := ReadCheckpoint(ctx, conn, r.name)
		r.updateStatus(func(s *RunnerStatus) {
			s.Leader = false
			s.CaughtUp = true
			if err == nil {
				s.Position = pos
			}
		})
		if !standbyLogged {
			r.log.InfoContext(ctx, "projection: another instance leads; standing by")
			standbyLogged = true
		}
	}
}

// errLockLost is the cancellation cause of a leadership whose lock
// connection failed.
var errLockLost = errors.New("leadership lock connection lost")

// lead applies events while this runner holds the lock on conn. It returns
// when ctx ends or the lock connection fails.
func (r *Runner) lead(ctx context.Context, conn *pgx.Conn) {
	leadCtx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { r.watchLock(leadCtx, conn, cancel) })
	defer func() {
		cancel(nil)
		wg.Wait()
	}()

	r.updateStatus(func(s *RunnerStatus) { s.Leader = true })
	r.log.InfoContext(ctx, "projection: leading")
	bo := backoff{}
	for {
		err := r.follow(leadCtx, &bo)
		if leadCtx.Err() != nil {
			if cause := context.Cause(leadCtx); errors.Is(cause, errLockLost) && ctx.Err() == nil {
				r.log.WarnContext(ctx, "projection: lost the leadership lock; stopping and re-acquiring")
				r.recordError(cause)
			}
			return
		}
		var fe *fencedError
		if errors.As(err, &fe) {
			r.log.InfoContext(ctx, "projection: checkpoint moved by another writer; resuming from it",
				slog.String("expected", fe.expected.String()), slog.String("found", fe.found.String()))
			// Resume at once; but if the checkpoint keeps moving without a
			// batch of ours committing in between, another writer is active:
			// pause as after a failure rather than chase it.
			if bo.fenced {
				bo.wait(leadCtx)
			}
			bo.fenced = true
			continue
		}
		r.log.ErrorContext(ctx, "projection: batch failed; backing off", slog.Any("error", err),
			slog.Duration("backoff", bo.peek()))
		r.recordError(err)
		bo.wait(leadCtx) // when leadCtx ends, the next follow returns at once
	}
}

// watchLock pings the lock connection every LockRetry and cancels the
// leadership when it fails: a dead session has released its lock, so another
// instance may be leading already.
func (r *Runner) watchLock(ctx context.Context, conn *pgx.Conn, cancel context.CancelCauseFunc) {
	t := time.NewTicker(r.opts.LockRetry)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, pcancel := context.WithTimeout(ctx, max(r.opts.LockRetry, minPingTimeout))
		err := conn.Ping(pctx)
		pcancel()
		if err != nil && ctx.Err() == nil {
			cancel(fmt.Errorf("%w: %w", errLockLost, err))
			return
		}
	}
}

// fencedError reports that the checkpoint row is not where this runner left
// it: another writer (a rebuild, an old leader) committed in between.
type fencedError struct {
	expected, found eventstore.Position
}

func (e *fencedError) Error() string {
	return fmt.Sprintf("checkpoint moved: expected %s, found %s", e.expected, e.found)
}

// follow subscribes from the stored checkpoint and applies batches until an
// error, a fencing conflict or the end of ctx.
func (r *Runner) follow(ctx context.Context, bo *backoff) error {
	from, _, err := ReadCheckpoint(ctx, r.pool, r.name)
	if err != nil {
		return err
	}
	r.committed, r.pending, r.lastWrite = from, from, time.Time{}
	r.updateStatus(func(s *RunnerStatus) { s.Position = from })

	subCtx, cancel := context.WithCancel(ctx)
	sub, err := r.store.Subscribe(subCtx, from, r.filter)
	if err != nil {
		cancel()
		return fmt.Errorf("subscribe from %s: %w", from, err)
	}
	defer func() {
		cancel()
		// Drain until the subscription's goroutine has exited.
		for range sub.Messages() {
		}
	}()

	msgs := sub.Messages()
	flush := time.NewTimer(time.Hour)
	flush.Stop()
	defer flush.Stop()
	var flushC <-chan time.Time
	for {
		// About to wait for more: if nothing is buffered, check whether the
		// log head has been reached.
		if len(msgs) == 0 {
			if err := r.probeHead(ctx); err != nil {
				return err
			}
		}
		var first eventstore.Message
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-flushC:
			flushC = nil
			if r.pending != r.committed {
				if err := r.commit(ctx, nil, r.pending); err != nil {
					return err
				}
				bo.reset()
			}
			continue
		case m, ok := <-msgs:
			if !ok {
				return subscriptionEnded(sub)
			}
			first = m
		}

		events, last, open := r.gather(first, msgs)
		switch {
		case len(events) > 0 || (last != r.pending && time.Since(r.lastWrite) >= checkpointInterval):
			if err := r.commit(ctx, events, last); err != nil {
				return err
			}
			flushC = nil
			bo.reset()
		case last != r.pending:
			// Only filtered-out events: remember, write within a second.
			r.pending = last
			if flushC == nil {
				flush.Reset(max(0, checkpointInterval-time.Since(r.lastWrite)))
				flushC = flush.C
			}
		}
		if !open {
			return subscriptionEnded(sub)
		}
	}
}

func subscriptionEnded(sub eventstore.Subscription) error {
	if err := sub.Err(); err != nil {
		return fmt.Errorf("subscription ended: %w", err)
	}
	return errors.New("subscription ended")
}

// gather collects first and the messages immediately available after it, up
// to BatchSize. It returns the events, the position of the last message and
// whether the channel is still open. Messages at or before the position
// already covered are skipped.
func (r *Runner) gather(first eventstore.Message, msgs <-chan eventstore.Message) (events []eventstore.RecordedEvent, last eventstore.Position, open bool) {
	last = r.pending
	add := func(m eventstore.Message) {
		pos := m.Checkpoint
		if m.Event != nil && pos.Less(m.Event.Position) {
			pos = m.Event.Position
		}
		if !last.Less(pos) {
			r.log.Debug("projection: skipping a message already covered", slog.String("position", pos.String()))
			return
		}
		if m.Event != nil {
			events = append(events, *m.Event)
		}
		last = pos
	}
	add(first)
	for n := 1; n < r.opts.BatchSize; n++ {
		select {
		case m, ok := <-msgs:
			if !ok {
				return events, last, false
			}
			add(m)
		default:
			return events, last, true
		}
	}
	return events, last, true
}

// probeHead marks the runner caught up when the log holds no matching event
// after its position.
func (r *Runner) probeHead(ctx context.Context) error {
	if r.Status().CaughtUp {
		return nil
	}
	// A filtered read considers a bounded window of the log: an empty answer
	// whose checkpoint moved only means that window held nothing for us, so
	// keep reading until the checkpoint stops moving (the head) or an event
	// shows up.
	from := r.pending
	for {
		events, checkpoint, err := r.store.ReadAll(ctx, from, 1, r.filter)
		if err != nil {
			return fmt.Errorf("probe the log head after %s: %w", from, err)
		}
		if len(events) > 0 {
			return nil
		}
		if !from.Less(checkpoint) {
			break
		}
		from = checkpoint
	}
	r.updateStatus(func(s *RunnerStatus) { s.CaughtUp = true })
	r.log.InfoContext(ctx, "projection: caught up", slog.String("position", r.pending.String()))
	return nil
}

// commit applies events and moves the checkpoint to last in one transaction,
// after checking that the checkpoint row is still where this runner left it,
// and queues the change notifications, which Postgres delivers on commit.
func (r *Runner) commit(ctx context.Context, events []eventstore.RecordedEvent, last eventstore.Position) error {
	tx, err := r.pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		return fmt.Errorf("begin batch: %w", err)
	}
	defer rollback(ctx, tx)

	stored, err := lockCheckpoint(ctx, tx, r.name)
	if err != nil {
		return err
	}
	if stored != r.committed {
		r.fenced.Add(1)
		return &fencedError{expected: r.committed, found: stored}
	}
	var changed []string
	if len(events) > 0 {
		changed, err = r.p.Apply(ctx, tx, r.tables, events)
		if err != nil {
			return fmt.Errorf("apply %d events (%s..%s): %w",
				len(events), events[0].Position, events[len(events)-1].Position, err)
		}
	}
	c, p, err := toColumns(last)
	if err != nil {
		return fmt.Errorf("write checkpoint %q: %w", r.name, err)
	}
	payloads, dropped := notifications(r.name, last, changed)
	if dropped > 0 {
		r.log.WarnContext(ctx, "projection: ids too long for a notification were left out", slog.Int("count", dropped))
	}
	b := &pgx.Batch{}
	b.Queue(writeCheckpointSQL, r.name, c, p)
	for _, pl := range payloads {
		b.Queue(`SELECT pg_notify($1, $2)`, r.opts.ReadModelChannel, pl)
	}
	if err := sendBatch(ctx, tx, b); err != nil {
		return fmt.Errorf("write checkpoint %q and notify: %w", r.name, err)
	}
	if r.opts.BeforeCommit != nil {
		if err := r.opts.BeforeCommit(ctx); err != nil {
			return fmt.Errorf("before commit: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit batch: %w", err)
	}
	r.committed, r.pending, r.lastWrite = last, last, time.Now()
	r.updateStatus(func(s *RunnerStatus) {
		s.Position = last
		s.LastError = ""
	})
	return nil
}

// sendBatch runs b in tx; its first statement must be the checkpoint UPDATE.
func sendBatch(ctx context.Context, tx pgx.Tx, b *pgx.Batch) error {
	br := tx.SendBatch(ctx, b)
	tag, err := br.Exec()
	if err == nil && tag.RowsAffected() != 1 {
		err = errors.New("checkpoint row missing")
	}
	for i := 1; err == nil && i < b.Len(); i++ {
		_, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// rollback ends tx if it is still open. It uses its own short deadline so a
// cancelled ctx still returns the connection to the pool cleanly.
func rollback(ctx context.Context, tx pgx.Tx) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = tx.Rollback(rctx) // after Commit this is a no-op returning ErrTxClosed
}

func closeConn(conn *pgx.Conn) {
	if conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// notifications builds the NOTIFY payloads for a batch: the distinct ids in
// order, split so that each payload stays under maxNotifyPayload bytes. An id
// that alone would exceed it is left out and counted in dropped.
func notifications(name string, pos eventstore.Position, ids []string) (payloads []string, dropped int) {
	if len(ids) == 0 {
		return nil, 0
	}
	head, _ := json.Marshal(Notification{Projection: name, Position: pos.String(), IDs: []string{}})
	base := len(head)
	seen := make(map[string]struct{}, len(ids))
	var chunk []string
	size := base
	flush := func() {
		if len(chunk) == 0 {
			return
		}
		b, _ := json.Marshal(Notification{Projection: name, Position: pos.String(), IDs: chunk})
		payloads = append(payloads, string(b))
		chunk, size = nil, base
	}
	for _, id := range ids {
		if _, dup := seen[id]; dup {
			continue
		}
		seen[id] = struct{}{}
		enc, _ := json.Marshal(id)
		cost := len(enc) + 1 // the separating comma
		if base+cost > maxNotifyPayload {
			dropped++
			continue
		}
		if size+cost > maxNotifyPayload {
			flush()
		}
		chunk = append(chunk, id)
		size += cost
	}
	flush()
	return payloads, dropped
}

// advisoryKey derives the advisory lock key of a projection's leadership or
// rebuild from its name.
func advisoryKey(kind, name string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("cmlcm." + kind + "\x00" + name))
	return int64(h.Sum64())
}

// backoff is a bounded exponential pause with jitter.
type backoff struct {
	next time.Duration
	// fenced is set by a fencing conflict and cleared by a commit.
	fenced bool
}

func (b *backoff) peek() time.Duration {
	if b.next < backoffMin {
		return backoffMin
	}
	return b.next
}

// wait pauses for the current step and doubles it. It returns false when
// ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	d := b.peek()
	b.next = min(2*d, backoffMax)
	d = d/2 + rand.N(d/2+1) // jitter in [d/2, d]
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (b *backoff) reset() { *b = backoff{} }
