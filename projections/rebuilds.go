package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

// DefaultLagCap bounds how many events Operator counts when it measures how
// far a read model is behind the log.
const DefaultLagCap = 1000

// ErrOperatorClosed is returned by StartRebuild after Close.
var ErrOperatorClosed = errors.New("projections operator is shut down")

// OperatorOptions configures an Operator.
type OperatorOptions struct {
	Store eventstore.Store
	Pool  *pgxpool.Pool
	// Projections are the read models to operate (usually All(registry)).
	Projections []Projection
	// Manager runs the projections in this process; nil when this instance
	// does not (RUN_PROJECTIONS=false): statuses then come from the stored
	// checkpoints alone.
	Manager *Manager
	// Rebuild configures every rebuild (its Logger defaults to Logger).
	Rebuild RebuildOptions
	// LagCap is the most events counted when measuring lag (DefaultLagCap
	// when zero).
	LagCap int
	Logger *slog.Logger
}

// Operator reports the state of each read model and runs rebuilds in the
// background of this process: it implements application.ProjectionAdmin
// (and so application.ProjectionMonitor). Close it on shutdown: that cancels
// the rebuilds still running (their shadow tables are dropped, the live
// tables are untouched) and waits for them.
type Operator struct {
	opts   OperatorOptions
	byName map[string]Projection
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	states map[string]application.RebuildState
}

var _ application.ProjectionAdmin = (*Operator)(nil)

// NewOperator returns an Operator. It panics when Store or Pool is missing
// or two projections share a name (wiring bugs).
func NewOperator(o OperatorOptions) *Operator {
	if o.Store == nil || o.Pool == nil {
		panic("projections: NewOperator needs Store and Pool")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Rebuild.Logger == nil {
		o.Rebuild.Logger = o.Logger
	}
	if o.LagCap <= 0 {
		o.LagCap = DefaultLagCap
	}
	byName := make(map[string]Projection, len(o.Projections))
	for _, p := range o.Projections {
		if _, dup := byName[p.Name()]; dup {
			panic(fmt.Sprintf("projections: NewOperator: two projections are named %q", p.Name()))
		}
		byName[p.Name()] = p
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Operator{opts: o, byName: byName, ctx: ctx, cancel: cancel, states: map[string]application.RebuildState{}}
}

// Close cancels the running rebuilds and waits until they have stopped.
// StartRebuild fails afterwards. It is safe to call more than once.
func (o *Operator) Close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.cancel()
	o.wg.Wait()
}

// Wait blocks until no rebuild started by this Operator is running, or ctx
// is done.
func (o *Operator) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		o.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// StartRebuild implements application.ProjectionAdmin: it starts Rebuild of
// the named projection in a goroutine and returns its running state. A
// rebuild of the same projection running here, or holding the rebuild lock
// in another instance, is application.ErrRebuildInProgress (which also
// matches ErrRebuildInProgress).
func (o *Operator) StartRebuild(ctx context.Context, name, by string) (application.RebuildState, error) {
	p, ok := o.byName[name]
	if !ok {
		return application.RebuildState{}, &application.NotFoundError{Kind: "read model", ID: name}
	}
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return application.RebuildState{}, ErrOperatorClosed
	}
	prev, had := o.states[name]
	if prev.State == application.RebuildRunning {
		o.mu.Unlock()
		return application.RebuildState{}, rebuildInProgress(name)
	}
	st := application.RebuildState{State: application.RebuildRunning, StartedAt: time.Now().UTC(), StartedBy: by}
	o.states[name] = st // reserved: a concurrent StartRebuild now sees it running
	o.mu.Unlock()

	busy, err := o.lockedElsewhere(ctx, name)
	if err != nil || busy {
		o.mu.Lock()
		if had {
			o.states[name] = prev
		} else {
			delete(o.states, name)
		}
		o.mu.Unlock()
		if err != nil {
			return application.RebuildState{}, err
		}
		return application.RebuildState{}, rebuildInProgress(name)
	}

	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		o.opts.Logger.InfoContext(o.ctx, "rebuild requested", slog.String("projection", name), slog.String("by", by))
		res, err := Rebuild(o.ctx, o.opts.Store, o.opts.Pool, p, o.opts.Rebuild)
		if !errors.Is(err, ErrRebuildInProgress) {
			// Postgres releases the rebuild's lock when its connection's
			// backend exits, a moment after Rebuild closed it; until then
			// this rebuild would look like another instance's.
			o.awaitUnlocked(name)
		}
		done := st
		done.FinishedAt = time.Now().UTC()
		if err != nil {
			done.State, done.Error = application.RebuildFailed, err.Error()
			o.opts.Logger.ErrorContext(o.ctx, "rebuild failed", slog.String("projection", name), slog.Any("error", err))
		} else {
			done.State, done.Events, done.Position = application.RebuildSucceeded, res.Events, res.Position.String()
		}
		o.mu.Lock()
		o.states[name] = done
		o.mu.Unlock()
	}()
	return st, nil
}

// awaitUnlocked waits, for at most a few seconds, until nobody holds the
// rebuild lock of the projection.
func (o *Operator) awaitUnlocked(name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(o.ctx), 5*time.Second)
	defer cancel()
	for {
		held, err := o.lockedElsewhere(ctx, name)
		if err != nil || !held {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func rebuildInProgress(name string) error {
	return fmt.Errorf("rebuild %s: %w (%w)", name, application.ErrRebuildInProgress, ErrRebuildInProgress)
}

// lockedElsewhere reports whether a session holds the rebuild lock of the
// projection. It reads pg_locks rather than trying the lock, so that probing
// never makes a starting rebuild find its lock taken.
func (o *Operator) lockedElsewhere(ctx context.Context, name string) (bool, error) {
	key := uint64(advisoryKey("rebuild", name))
	var held bool
	err := o.opts.Pool.QueryRow(ctx, `SELECT EXISTS (
		SELECT 1 FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objsubid = 1
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND classid = $1::bigint::oid AND objid = $2::bigint::oid)`,
		int64(key>>32), int64(key&0xffffffff)).Scan(&held)
	if err != nil {
		return false, fmt.Errorf("probe the rebuild lock of %s: %w", name, err)
	}
	return held, nil
}

// ProjectionStatuses implements application.ProjectionMonitor: for each
// projection, in the order given, its stored checkpoint, the runner of this
// process (when there is a Manager), the events still to apply (counted up
// to LagCap) and its latest rebuild.
func (o *Operator) ProjectionStatuses(ctx context.Context) ([]application.ProjectionStatus, error) {
	runners := map[string]RunnerStatus{}
	if o.opts.Manager != nil {
		for _, s := range o.opts.Manager.Statuses() {
			runners[s.Name] = s
		}
	}
	out := make([]application.ProjectionStatus, 0, len(o.opts.Projections))
	for _, p := range o.opts.Projections {
		name := p.Name()
		pos, _, err := ReadCheckpoint(ctx, o.opts.Pool, name)
		if err != nil {
			return nil, err
		}
		behind, _, err := o.opts.Store.ReadAll(ctx, pos, o.opts.LagCap, p.Filter())
		if err != nil {
			return nil, fmt.Errorf("measure the lag of %s: %w", name, err)
		}
		st := application.ProjectionStatus{
			Name: name, Position: pos.String(), LagEvents: len(behind), LagCapped: len(behind) >= o.opts.LagCap,
			CaughtUp: len(behind) == 0,
		}
		if r, ok := runners[name]; ok {
			st.Running, st.Leader, st.LastError, st.UpdatedAt = true, r.Leader, r.LastError, r.UpdatedAt.UTC()
			st.CaughtUp = r.CaughtUp
		}
		o.mu.Lock()
		rb, ok := o.states[name]
		o.mu.Unlock()
		if !ok {
			rb = application.RebuildState{State: application.RebuildIdle}
		}
		if rb.State != application.RebuildRunning {
			busy, err := o.lockedElsewhere(ctx, name)
			if err != nil {
				return nil, err
			}
			if busy {
				rb = application.RebuildState{State: application.RebuildRunning, Elsewhere: true}
			}
		}
		st.Rebuild = rb
		out = append(out, st)
	}
	return out, nil
}
