package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

func TestTablesName(t *testing.T) {
	tb := Tables{"a": "a__rebuild"}
	require.Equal(t, "a__rebuild", tb.Name("a"))
	require.Equal(t, "b", tb.Name("b"))
	require.Equal(t, `"a__rebuild"`, tb.Ident("a"))
	require.Equal(t, "c", Tables(nil).Name("c"))
}

func TestRunnerCatchUpThenLive(t *testing.T) {
	e := newEnv(t)
	e.appendEvents(t, "other", 3, 10) // filtered out
	backlog := e.appendEvents(t, "test", 5, 45)

	// Hold the first batch before its commit to see the runner not caught up.
	release := make(chan struct{})
	var first sync.Once
	opts := e.runnerOptions()
	opts.BeforeCommit = func(ctx context.Context) error {
		first.Do(func() {
			select {
			case <-release:
			case <-ctx.Done():
			}
		})
		return nil
	}
	r := NewRunner(e.store, e.pool, &countProjection{}, opts)
	start(t, r.Run)
	waitFor(t, func() bool { return r.Status().Leader }, func() string { return "runner never led" })
	require.False(t, r.Status().CaughtUp, "caught up before applying its backlog")
	close(release)

	e.waitMatchesLog(t)
	last := backlog[len(backlog)-1].Position
	require.Equal(t, last, e.checkpoint(t, "test_counts"))
	waitFor(t, func() bool { return r.Status().CaughtUp }, func() string { return "never caught up" })
	st := r.Status()
	require.Equal(t, "test_counts", st.Name)
	require.Equal(t, last, st.Position)
	require.Empty(t, st.LastError)

	// Live: new appends arrive through the subscription.
	var lastLive eventstore.Position
	for range 3 {
		e.appendEvents(t, "other", 2, 2)
		res := e.appendEvents(t, "test", 7, 10)
		lastLive = res[len(res)-1].Position
	}
	e.waitMatchesLog(t)
	require.Equal(t, lastLive, e.checkpoint(t, "test_counts"))
	require.Equal(t, lastLive, r.Status().Position)
}

func TestRunnerAdvancesPastFilteredEvents(t *testing.T) {
	e := newEnv(t)
	e.appendEvents(t, "test", 2, 5)
	r := NewRunner(e.store, e.pool, &countProjection{}, e.runnerOptions())
	start(t, r.Run)
	e.waitMatchesLog(t)

	// Only events the projection skips: the checkpoint still moves past them
	// (within about a second), so a restart does not scan them again.
	other := e.appendEvents(t, "other", 2, 6)
	last := other[len(other)-1].Position
	waitFor(t, func() bool { return e.checkpoint(t, "test_counts") == last },
		func() string {
			return fmt.Sprintf("checkpoint %s never reached the filtered events' %s", e.checkpoint(t, "test_counts"), last)
		})
	e.waitMatchesLog(t)
}

// TestRunnerCrashBeforeCommit stops the runner between the read-model write
// and the commit: the batch must vanish entirely, and a new runner must
// apply every event exactly once.
func TestRunnerCrashBeforeCommit(t *testing.T) {
	e := newEnv(t)
	res := e.appendEvents(t, "test", 4, 30)
	last := res[len(res)-1].Position

	ctx, crash := context.WithCancel(context.Background())
	defer crash()
	var commits atomic.Int32
	opts := e.runnerOptions()
	opts.BatchSize = 10
	opts.BeforeCommit = func(ctx context.Context) error {
		if commits.Add(1) == 2 {
			crash() // the second batch's rows are written, its COMMIT not sent
		}
		return nil
	}
	p := &countProjection{}
	r := NewRunner(e.store, e.pool, p, opts)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(waitTimeout):
		t.Fatal("runner did not stop after the crash")
	}
	require.EqualValues(t, 2, commits.Load())
	ends := p.batchEnds()
	require.Len(t, ends, 2, "the crashed batch was applied before the crash")

	// The first batch is committed, the second is not: rows and checkpoint
	// agree.
	cp := e.checkpoint(t, "test_counts")
	require.Equal(t, ends[0], cp, "the checkpoint is the first batch's end")
	require.True(t, cp.Less(last), "the crashed batch must not have committed")
	rows := tableRows(t, e.pool, "test_counts")
	var upToCheckpoint int
	for _, ev := range e.logged(t) {
		r, ok := rows[ev.ID]
		if cp.Less(ev.Position) {
			require.False(t, ok, "event %s after the checkpoint %s is in the table", ev.Position, cp)
			continue
		}
		upToCheckpoint++
		require.True(t, ok, "event %s before the checkpoint %s is missing", ev.Position, cp)
		require.Equal(t, 1, r.applied)
	}
	require.Len(t, rows, upToCheckpoint)

	// Restart: everything exactly once.
	r2 := NewRunner(e.store, e.pool, p, e.runnerOptions())
	start(t, r2.Run)
	e.waitMatchesLog(t)
	require.Equal(t, last, e.checkpoint(t, "test_counts"))
}

// TestRunnerBeforeCommitError fails a batch just before its commit: the
// runner rolls back, retries after a pause and applies everything once.
func TestRunnerBeforeCommitError(t *testing.T) {
	e := newEnv(t)
	e.appendEvents(t, "test", 3, 12)
	var calls atomic.Int32
	opts := e.runnerOptions()
	opts.BeforeCommit = func(context.Context) error {
		if calls.Add(1) <= 2 {
			return errors.New("injected failure")
		}
		return nil
	}
	r := NewRunner(e.store, e.pool, &countProjection{}, opts)
	start(t, r.Run)
	e.waitMatchesLog(t)
	require.GreaterOrEqual(t, calls.Load(), int32(3))
	// The status is updated just after the commit the test has observed.
	waitFor(t, func() bool { return r.Status().LastError == "" },
		func() string { return "a committed batch did not clear the error: " + r.Status().LastError })
}

func TestRunnerSingleLeaderAndFailover(t *testing.T) {
	e := newEnv(t)
	e.appendEvents(t, "test", 5, 20)

	// Two runners of one projection on one database: as if two servers.
	p1, p2 := &countProjection{}, &countProjection{}
	r1 := NewRunner(e.store, e.pool, p1, e.runnerOptions())
	r2 := NewRunner(e.store, e.pool, p2, e.runnerOptions())
	s1 := start(t, r1.Run)
	s2 := start(t, r2.Run)

	waitFor(t, func() bool {
		a, b := r1.Status(), r2.Status()
		return a.Leader != b.Leader && a.CaughtUp && b.CaughtUp
	}, func() string { return fmt.Sprintf("no single leader: %+v %+v", r1.Status(), r2.Status()) })
	leader, standby, sLeader := r1, r2, s1
	pStandby := p2
	if r2.Status().Leader {
		leader, standby, sLeader, pStandby = r2, r1, s2, p1
	}

	e.appendEvents(t, "test", 5, 20)
	e.waitMatchesLog(t)
	// The standby kept retrying the lock meanwhile, without ever applying.
	require.False(t, r1.Status().Leader && r2.Status().Leader, "two leaders")
	require.Zero(t, pStandby.calls.Load(), "the standby applied events")
	require.False(t, standby.Status().Leader)

	// The leader dies: the standby takes over and continues without gap or
	// duplicate.
	sLeader.stop(t)
	require.False(t, leader.Status().Leader)
	waitFor(t, func() bool { return standby.Status().Leader }, func() string { return "the standby never took over" })
	res := e.appendEvents(t, "test", 5, 20)
	e.waitMatchesLog(t)
	require.Equal(t, res[len(res)-1].Position, e.checkpoint(t, "test_counts"))
	require.Positive(t, pStandby.calls.Load())
}

// lockHolder returns the backend pid holding the leadership lock of name, or
// 0.
func (e *env) lockHolder(tb testing.TB, name string) int32 {
	tb.Helper()
	key := uint64(advisoryKey("projection", name))
	var pid int32
	err := e.pool.QueryRow(context.Background(), `
		SELECT pid FROM pg_locks
		WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND classid = $1 AND objid = $2 AND objsubid = 1 AND granted`,
		uint32(key>>32), uint32(key)).Scan(&pid)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0
	}
	require.NoError(tb, err)
	return pid
}

func TestRunnerLockConnectionLost(t *testing.T) {
	e := newEnv(t)
	e.appendEvents(t, "test", 3, 10)
	r := NewRunner(e.store, e.pool, &countProjection{}, e.runnerOptions())
	start(t, r.Run)
	e.waitMatchesLog(t)
	pid := e.lockHolder(t, "test_counts")
	require.NotZero(t, pid)

	_, err := e.pool.Exec(context.Background(), `SELECT pg_terminate_backend($1)`, pid)
	require.NoError(t, err)
	waitFor(t, func() bool { return strings.Contains(r.Status().LastError, errLockLost.Error()) },
		func() string { return "the lost lock was not noticed: " + r.Status().LastError })
	// It went back to acquiring, on a new connection.
	waitFor(t, func() bool {
		p := e.lockHolder(t, "test_counts")
		return p != 0 && p != pid && r.Status().Leader
	}, func() string { return "leadership not re-acquired" })
	e.appendEvents(t, "test", 3, 10)
	e.waitMatchesLog(t)
}

// TestRunnerFencing moves the checkpoint behind the runner's back, as another
// writer that applied some events would: the runner must notice, reload and
// continue from there without applying those events again.
func TestRunnerFencing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.appendEvents(t, "test", 3, 10)
	r := NewRunner(e.store, e.pool, &countProjection{}, e.runnerOptions())
	start(t, r.Run)
	e.waitMatchesLog(t)

	// Hold the checkpoint row so the runner cannot commit the next events.
	tx, err := e.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = lockCheckpoint(ctx, tx, "test_counts")
	require.NoError(t, err)

	res := e.appendEvents(t, "test", 3, 5)
	// "Another writer" applies the first three new events and advances the
	// checkpoint.
	var ids []string
	for _, ev := range e.logged(t)[10:13] {
		ids = append(ids, ev.ID)
		_, err := tx.Exec(ctx, `INSERT INTO test_counts (event_id, stream, position) VALUES ($1, $2, $3)`,
			ev.ID, ev.Stream, int64(ev.Position.Commit))
		require.NoError(t, err)
	}
	require.Len(t, ids, 3)
	require.NoError(t, writeCheckpoint(ctx, tx, "test_counts", res[2].Position))
	require.NoError(t, tx.Commit(ctx))

	e.waitMatchesLog(t)
	require.Equal(t, res[4].Position, e.checkpoint(t, "test_counts"))
	require.Positive(t, r.fenced.Load(), "the runner never saw the moved checkpoint")
}

func TestRunnerNotify(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	listener, err := pgx.ConnectConfig(ctx, e.pool.Config().ConnConfig)
	require.NoError(t, err)
	defer listener.Close(context.Background())
	_, err = listener.Exec(ctx, "LISTEN "+DefaultReadModelChannel)
	require.NoError(t, err)

	r := NewRunner(e.store, e.pool, &countProjection{}, e.runnerOptions())
	start(t, r.Run)
	res := e.appendEvents(t, "test", 2, 3)
	want := map[string]bool{}
	for _, ev := range e.logged(t) {
		want[ev.ID] = true
	}

	got := map[string]bool{}
	for len(got) < len(want) {
		n, err := listener.WaitForNotification(ctx)
		require.NoError(t, err, "notifications received for %d of %d ids", len(got), len(want))
		require.Equal(t, DefaultReadModelChannel, n.Channel)
		msg, err := ParseNotification(n.Payload)
		require.NoError(t, err)
		require.Equal(t, "test_counts", msg.Projection)
		require.False(t, msg.Rebuilt)
		pos, err := eventstore.ParsePosition(msg.Position)
		require.NoError(t, err)
		require.False(t, res[len(res)-1].Position.Less(pos), "position %s beyond the log", pos)
		// Sent on commit: the rows are visible when the notification arrives.
		rows := tableRows(t, e.pool, "test_counts")
		for _, id := range msg.IDs {
			require.True(t, want[id], "unexpected id %s", id)
			require.Contains(t, rows, id)
			got[id] = true
		}
	}
}

func TestNotificationsSplit(t *testing.T) {
	pos := eventstore.Position{Commit: 123456, Prepare: 123456}
	var ids []string
	for i := range 1000 {
		ids = append(ids, fmt.Sprintf("%08d-0000-4000-8000-000000000000", i))
	}
	ids = append(ids, ids[:10]...)               // duplicates are sent once
	ids = append(ids, strings.Repeat("x", 8000)) // too long to be sent at all
	payloads, dropped := notifications("worker_view", pos, ids)
	require.Equal(t, 1, dropped)
	require.Greater(t, len(payloads), 1)
	var all []string
	for _, p := range payloads {
		require.LessOrEqual(t, len(p), maxNotifyPayload)
		n, err := ParseNotification(p)
		require.NoError(t, err)
		require.Equal(t, "worker_view", n.Projection)
		require.Equal(t, "123456", n.Position)
		all = append(all, n.IDs...)
	}
	require.Equal(t, ids[:1000], all)

	payloads, dropped = notifications("x", pos, nil)
	require.Empty(t, payloads)
	require.Zero(t, dropped)

	var raw map[string]any
	p, _ := notifications("x", pos, []string{"a"})
	require.NoError(t, json.Unmarshal([]byte(p[0]), &raw))
	require.Equal(t, map[string]any{"projection": "x", "position": "123456", "ids": []any{"a"}}, raw)
}

// TestRunnerPoisonEventBacksOff: an event whose application keeps failing
// must not spin; once fixed, the runner resumes.
func TestRunnerPoisonEventBacksOff(t *testing.T) {
	e := newEnv(t)
	res := e.appendEvents(t, "test", 1, 10)
	poison := res[5].Position
	var (
		mu       sync.Mutex
		failures []time.Time
		healed   atomic.Bool
	)
	p := &countProjection{fail: func(ev eventstore.RecordedEvent) error {
		if ev.Position != poison || healed.Load() {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, time.Now())
		return errors.New("poison")
	}}
	opts := e.runnerOptions()
	opts.BatchSize = 1
	r := NewRunner(e.store, e.pool, p, opts)
	start(t, r.Run)

	nFailures := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(failures)
	}
	waitFor(t, func() bool { return nFailures() >= 4 }, func() string { return "the poison event was not retried" })
	mu.Lock()
	spent := failures[3].Sub(failures[0])
	mu.Unlock()
	// Pauses of at least half of 100, 200 and 400 ms (jitter).
	require.GreaterOrEqual(t, spent, 350*time.Millisecond, "retries too fast")
	st := r.Status()
	require.Contains(t, st.LastError, "poison")
	require.Equal(t, res[4].Position, st.Position, "events before the poison one are applied")
	require.False(t, st.CaughtUp)

	healed.Store(true)
	e.waitMatchesLog(t)
	waitFor(t, func() bool { return r.Status().LastError == "" && r.Status().CaughtUp },
		func() string { return fmt.Sprintf("status after healing: %+v", r.Status()) })
}

// emptyProjection needs no table and changes nothing.
type emptyProjection struct{ name string }

func (p emptyProjection) Name() string { return p.name }
func (p emptyProjection) Filter() eventstore.Filter {
	return eventstore.Filter{StreamPrefixes: []string{"none-"}}
}
func (p emptyProjection) Tables() []string { return nil }
func (p emptyProjection) Apply(context.Context, pgx.Tx, Tables, []eventstore.RecordedEvent) ([]string, error) {
	return nil, nil
}

func TestManager(t *testing.T) {
	e := newEnv(t)
	e.appendEvents(t, "test", 3, 30)
	counts := &countProjection{}
	m := NewManager(e.store, e.pool, []Projection{counts, emptyProjection{name: "empty"}}, e.runnerOptions())
	require.False(t, m.Ready())
	p, ok := m.Projection("test_counts")
	require.True(t, ok)
	require.Same(t, counts, p)
	_, ok = m.Projection("nope")
	require.False(t, ok)
	require.Len(t, m.Projections(), 2)

	s := start(t, m.Run)
	waitFor(t, m.Ready, func() string { return fmt.Sprintf("manager never ready: %+v", m.Statuses()) })
	e.waitMatchesLog(t)
	st := m.Statuses()
	require.Len(t, st, 2)
	require.Equal(t, "test_counts", st[0].Name)
	require.Equal(t, "empty", st[1].Name)
	for _, s := range st {
		require.True(t, s.Leader, s.Name)
	}
	s.stop(t)
	for _, s := range m.Statuses() {
		require.False(t, s.Leader, s.Name)
	}

	bad := NewManager(e.store, e.pool, []Projection{emptyProjection{name: "a"}, emptyProjection{name: "a"}, emptyProjection{}}, RunnerOptions{})
	err := bad.Run(context.Background())
	require.ErrorContains(t, err, `two projections are named "a"`)
	require.ErrorContains(t, err, "empty name")
	require.False(t, bad.Ready())
}

// TestRunnerNotCaughtUpBeyondTheFilterWindow: a filtered read considers a
// bounded window of the log (65,536 positions in the Postgres store). With
// more non-matching events than that before the next matching one, the
// runner must not report itself caught up while that event is unapplied.
func TestRunnerNotCaughtUpBeyondTheFilterWindow(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	// Bulk-insert the filler with nothing in flight (setup only).
	_, err := e.pool.Exec(ctx, `INSERT INTO events (position, stream, revision, event_id, type, data)
		SELECT nextval('events_position_seq'), 'other-' || (g % 100), g / 100, gen_random_uuid(), 'test.other.v1', '{}'
		  FROM generate_series(0, 70999) g`)
	require.NoError(t, err)
	e.appendEvents(t, "test", 1, 1)

	release := make(chan struct{})
	p := &countProjection{}
	opts := e.runnerOptions()
	opts.BeforeCommit = func(ctx context.Context) error {
		if len(p.batchEnds()) == 0 {
			return nil // a checkpoint-only commit over the filler
		}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r := NewRunner(e.store, e.pool, p, opts)
	start(t, r.Run)
	// The batch holding the matching event is stuck before its commit.
	waitFor(t, func() bool { return len(p.batchEnds()) > 0 }, func() string { return "the matching event never reached Apply" })
	require.False(t, r.Status().CaughtUp, "caught up while the matching event is not applied")
	close(release)
	e.waitMatchesLog(t)
	waitFor(t, func() bool { return r.Status().CaughtUp }, func() string { return "never caught up" })
}
