package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/eventstore/storetest"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb/pgtest"
)

// Tests of the Postgres adapter beyond the contract suite.

const waitTimeout = 10 * time.Second

func event(typ string) eventstore.EventData {
	return eventstore.EventData{ID: storetest.NewID(), Type: typ, Data: []byte(`{"k": 1}`)}
}

// nextMessage returns the next message of sub within waitTimeout.
func nextMessage(t *testing.T, sub eventstore.Subscription) eventstore.Message {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case m, ok := <-sub.Messages():
		require.True(t, ok, "subscription ended: %v", sub.Err())
		return m
	case <-timer.C:
		t.Fatalf("no message after %s", waitTimeout)
		return eventstore.Message{}
	}
}

func nextEvent(t *testing.T, sub eventstore.Subscription) *eventstore.RecordedEvent {
	t.Helper()
	for {
		if m := nextMessage(t, sub); m.Event != nil {
			return m.Event
		}
	}
}

// listenerCount counts the LISTEN connections on the store's database.
func listenerCount(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	err := s.pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1`, listenerAppName).Scan(&n)
	require.NoError(t, err)
	return n
}

// TestNotificationAcrossStores: a subscription of one store wakes up on an
// append through another store (another process) by LISTEN/NOTIFY alone: its
// poll interval is an hour.
func TestNotificationAcrossStores(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	reader := openStore(t, pool, Options{})
	writer := openStore(t, pool, Options{})
	filter := eventstore.Filter{StreamPrefixes: []string{"cross-"}}

	sub, err := reader.Subscribe(t.Context(), eventstore.Start, filter)
	require.NoError(t, err)
	// A local append: once it is delivered, the subscription has read the
	// log and waits for a wake-up.
	first := event("test.local")
	_, err = reader.Append(t.Context(), "cross-1", eventstore.NoStream, first)
	require.NoError(t, err)
	require.Equal(t, first.ID, nextEvent(t, sub).ID)

	remote := event("test.remote")
	_, err = writer.Append(t.Context(), "cross-2", eventstore.NoStream, remote)
	require.NoError(t, err)
	require.Equal(t, remote.ID, nextEvent(t, sub).ID, "delivered through NOTIFY")
}

// TestListenerReconnects: after its connection is killed the listener
// reconnects, LISTENs again and notifications wake subscribers again.
func TestListenerReconnects(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	reader := openStore(t, pool, Options{})
	writer := openStore(t, pool, Options{})
	filter := eventstore.Filter{StreamPrefixes: []string{"relisten-"}}
	sub, err := reader.Subscribe(t.Context(), eventstore.Start, filter)
	require.NoError(t, err)
	require.Equal(t, 2, listenerCount(t, reader))

	var killed int
	err = pool.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1`, listenerAppName).Scan(&killed)
	require.NoError(t, err)
	require.Equal(t, 2, killed)

	// Appended while the listeners may be down: delivered once they are back
	// (the reconnect wakes every subscriber) or through NOTIFY.
	e1 := event("test.during")
	_, err = writer.Append(t.Context(), "relisten-1", eventstore.NoStream, e1)
	require.NoError(t, err)
	require.Equal(t, e1.ID, nextEvent(t, sub).ID)

	require.Eventually(t, func() bool { return listenerCount(t, reader) == 2 }, waitTimeout, 10*time.Millisecond,
		"both listeners reconnect")
	// The reconnect wake-up is over once e2's predecessor was delivered and
	// the listeners are back; e2 can only arrive through the new LISTEN.
	e2 := event("test.after")
	_, err = writer.Append(t.Context(), "relisten-2", eventstore.NoStream, e2)
	require.NoError(t, err)
	require.Equal(t, e2.ID, nextEvent(t, sub).ID)
}

// TestFailedAppendsWriteNothing: failed appends, including every kind of id
// overlap (event ids are unique across streams here), write nothing. A
// failed expectation draws no position; an id overlap is found by the
// unique index after positions were drawn, which leaves a gap that readers
// settle.
func TestFailedAppendsWriteNothing(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	first, second := event("test.first"), event("test.second")
	res, err := s.Append(ctx, "gapless", eventstore.NoStream, first, second)
	require.NoError(t, err)

	failures := []struct {
		name     string
		stream   string
		expected eventstore.Expected
		events   []eventstore.EventData
	}{
		{"exact too high", "gapless", eventstore.Exact(5), []eventstore.EventData{event("x")}},
		{"exact too low", "gapless", eventstore.Exact(0), []eventstore.EventData{event("x")}},
		{"no stream on existing", "gapless", eventstore.NoStream, []eventstore.EventData{event("x"), event("y")}},
		{"stream exists on absent", "absent", eventstore.StreamExists, []eventstore.EventData{event("x")}},
		{"exact on absent", "absent", eventstore.Exact(0), []eventstore.EventData{event("x")}},
	}
	overlaps := []struct {
		name     string
		stream   string
		expected eventstore.Expected
		events   []eventstore.EventData
	}{
		{"overlap, known id last", "gapless", eventstore.Any, []eventstore.EventData{event("x"), first}},
		{"overlap, known id first", "gapless", eventstore.Any, []eventstore.EventData{first, event("x")}},
		{"known ids in another order", "gapless", eventstore.Any, []eventstore.EventData{second, first}},
		{"known ids skipping one", "gapless", eventstore.Any, []eventstore.EventData{first, event("x"), second}},
		{"known ids in another stream", "other", eventstore.Any, []eventstore.EventData{first, second}},
		{"known ids in another stream, new stream expected", "other", eventstore.NoStream, []eventstore.EventData{first}},
	}
	check := func(name, stream string, err error) {
		require.ErrorIs(t, err, eventstore.ErrWrongExpectedVersion, name)
		var wev *eventstore.WrongExpectedVersionError
		require.ErrorAs(t, err, &wev, name)
		require.Equal(t, stream, wev.Stream, name)
		require.Equal(t, stream == "gapless", wev.ActualExists, name)
		if wev.ActualExists {
			require.Equal(t, uint64(1), wev.Actual, name)
		}
	}
	for _, f := range failures {
		_, err := s.Append(ctx, f.stream, f.expected, f.events...)
		check(f.name, f.stream, err)
	}
	var last int64
	require.NoError(t, s.pool.QueryRow(ctx, `SELECT last_value FROM events_position_seq`).Scan(&last))
	require.Equal(t, int64(res.Position.Commit), last, "no position drawn by a failed expectation")
	for _, f := range overlaps {
		_, err := s.Append(ctx, f.stream, f.expected, f.events...)
		check(f.name, f.stream, err)
		require.ErrorContains(t, err, "partly match", f.name)
	}
	next, err := s.Append(ctx, "gapless", eventstore.Exact(1), event("test.third"))
	require.NoError(t, err)
	require.Equal(t, uint64(2), next.NextRevision)
	all, cp, err := s.ReadAll(ctx, res.Position, 10, eventstore.Filter{StreamPrefixes: []string{"gapless", "other"}})
	require.NoError(t, err)
	require.Len(t, all, 1, "readers skip the gaps the overlaps left")
	require.Equal(t, next.Position, cp)
	got, err := s.ReadStream(ctx, "gapless", 0, 10)
	require.NoError(t, err)
	require.Len(t, got, 3, "the failed appends wrote nothing")
	other, err := s.ReadStream(ctx, "other", 0, 10)
	require.NoError(t, err)
	require.Empty(t, other)
}

// TestAppendRejectsWhatJSONBRejects: the server's jsonb parser is stricter
// than encoding/json (\u0000, lone surrogates); its data exceptions map to
// ErrInvalidAppend.
func TestAppendRejectsWhatJSONBRejects(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	for _, data := range []string{`{"a": "\u0000"}`, `["\ud800"]`} {
		e := event("test.bad")
		e.Data = []byte(data)
		_, err := s.Append(t.Context(), "bad-json", eventstore.Any, e)
		require.ErrorIs(t, err, eventstore.ErrInvalidAppend, data)
	}
	got, err := s.ReadStream(t.Context(), "bad-json", 0, 10)
	require.NoError(t, err)
	require.Empty(t, got)
}

// TestFilteredSubscriptionSendsCheckpoints: events the filter skips move the
// subscription's checkpoint forward with checkpoint-only messages.
func TestFilteredSubscriptionSendsCheckpoints(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	start, err := s.Append(ctx, "cp-match", eventstore.NoStream, event("test.match"))
	require.NoError(t, err)
	sub, err := s.Subscribe(ctx, start.Position, eventstore.Filter{StreamPrefixes: []string{"cp-match"}})
	require.NoError(t, err)
	var last eventstore.AppendResult
	for range 3 {
		last, err = s.Append(ctx, "cp-skip", eventstore.Any, event("test.skip"))
		require.NoError(t, err)
	}
	for {
		m := nextMessage(t, sub)
		require.Nil(t, m.Event, "only skipped events were appended")
		require.True(t, start.Position.Less(m.Checkpoint))
		if !m.Checkpoint.Less(last.Position) {
			break
		}
	}
}

// TestCloseEndsSubscriptions: Close ends subscriptions with ErrClosed, and
// Subscribe fails afterwards.
func TestCloseEndsSubscriptions(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	sub, err := s.Subscribe(context.Background(), eventstore.Start, eventstore.Filter{})
	require.NoError(t, err)
	s.Close()
	select {
	case _, ok := <-sub.Messages():
		require.False(t, ok, "no events were appended")
	case <-time.After(waitTimeout):
		t.Fatal("subscription still open after Close")
	}
	require.ErrorIs(t, sub.Err(), ErrClosed)
	_, err = s.Subscribe(context.Background(), eventstore.Start, eventstore.Filter{})
	require.ErrorIs(t, err, ErrClosed)
	s.Close() // idempotent
}

// TestOpenRequiresSchema: Open reports missing migrations.
func TestOpenRequiresSchema(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	_, err := pool.Exec(t.Context(), `DROP TABLE events`)
	require.NoError(t, err)
	_, err = Open(t.Context(), pool, Options{Logger: testLogger(t)})
	require.ErrorContains(t, err, "migrations")
}

// TestSettleUnderConcurrentWriters: writers commit concurrently while other
// appends are held open for a while and then committed or rolled back. The
// subscription must deliver exactly the committed events, in strictly
// increasing positions, and ReadAll must agree with it.
func TestSettleUnderConcurrentWriters(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	start, err := s.Append(ctx, "stress-marker", eventstore.NoStream, event("test.marker"))
	require.NoError(t, err)
	filter := eventstore.Filter{StreamPrefixes: []string{"stress-w"}}
	sub, err := s.Subscribe(ctx, start.Position, filter)
	require.NoError(t, err)

	const writers, perWriter, held = 4, 100, 30
	var (
		mu        sync.Mutex
		committed = map[string]bool{}
		wg        sync.WaitGroup
		errs      = make(chan error, writers+1)
	)
	record := func(id string) {
		mu.Lock()
		committed[id] = true
		mu.Unlock()
	}
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				e := event("test.write")
				if _, err := s.Append(ctx, fmt.Sprintf("stress-w%d", w), eventstore.Any, e); err != nil {
					errs <- err
					return
				}
				record(e.ID)
				if i%10 == 0 {
					time.Sleep(time.Millisecond) // let the held appends interleave
				}
			}
		})
	}
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range held {
			e := event("test.held")
			release, err := startHeldAppend(ctx, s, fmt.Sprintf("stress-wheld%d", i), e)
			if err != nil {
				errs <- err
				return
			}
			time.Sleep(time.Duration(rng.IntN(5000)) * time.Microsecond) // hold it open meanwhile
			commit := rng.IntN(2) == 0
			if err := release(commit); err != nil {
				errs <- err
				return
			}
			if commit {
				record(e.ID)
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	var delivered []string
	prev := start.Position
	for len(delivered) < len(committed) {
		e := nextEvent(t, sub)
		require.True(t, prev.Less(e.Position), "positions strictly increase")
		prev = e.Position
		require.True(t, committed[e.ID], "event %s delivered twice or never committed", e.ID)
		delivered = append(delivered, e.ID)
	}
	require.Len(t, delivered, len(committed))
	seen := map[string]bool{}
	for _, id := range delivered {
		require.False(t, seen[id], "duplicate %s", id)
		seen[id] = true
	}
	sentinel := event("test.sentinel")
	_, err = s.Append(ctx, "stress-wsentinel", eventstore.NoStream, sentinel)
	require.NoError(t, err)
	require.Equal(t, sentinel.ID, nextEvent(t, sub).ID, "nothing else before the sentinel")

	var read []string
	from := start.Position
	for len(read) < len(delivered)+1 {
		evs, cp, err := s.ReadAll(ctx, from, 100, filter)
		require.NoError(t, err)
		require.True(t, len(evs) > 0 || from.Less(cp), "ReadAll makes progress")
		for _, e := range evs {
			read = append(read, e.ID)
		}
		from = cp
	}
	require.Equal(t, append(delivered, sentinel.ID), read)
}

// TestReadAllWaitsForHeldAppend: a ReadAll that meets a hole held by an
// append in flight waits for it, then delivers it in order.
func TestReadAllWaitsForHeldAppend(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	start, err := s.Append(ctx, "wait-marker", eventstore.NoStream, event("test.marker"))
	require.NoError(t, err)
	a, b := event("test.a"), event("test.b")
	release := holdAppend(t, s, "wait-a", a)
	_, err = s.Append(ctx, "wait-b", eventstore.NoStream, b)
	require.NoError(t, err)

	type result struct {
		events []eventstore.RecordedEvent
		err    error
	}
	done := make(chan result, 1)
	go func() {
		evs, _, err := s.ReadAll(ctx, start.Position, 10, eventstore.Filter{StreamPrefixes: []string{"wait-"}})
		done <- result{evs, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("ReadAll returned while the earlier append is held: %d events, %v", len(r.events), r.err)
	case <-time.After(300 * time.Millisecond):
	}
	require.NoError(t, release(true))
	select {
	case r := <-done:
		require.NoError(t, r.err)
		require.Len(t, r.events, 2)
		require.Equal(t, a.ID, r.events[0].ID)
		require.Equal(t, b.ID, r.events[1].ID)
	case <-time.After(waitTimeout):
		t.Fatal("ReadAll still waiting after the held append committed")
	}
	require.GreaterOrEqual(t, s.settledUpTo.Load(), positionOf(t, s, b.ID), "the settle is remembered")
}

func positionOf(t *testing.T, s *Store, id string) uint64 {
	t.Helper()
	var pos int64
	require.NoError(t, s.pool.QueryRow(t.Context(), `SELECT position FROM events WHERE event_id = $1`, id).Scan(&pos))
	return uint64(pos)
}

// signalHandler signals ch (without blocking) for each record with message
// msg.
type signalHandler struct {
	slog.Handler
	msg string
	ch  chan struct{}
}

func (h signalHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		select {
		case h.ch <- struct{}{}:
		default:
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h signalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return signalHandler{h.Handler.WithAttrs(attrs), h.msg, h.ch}
}

func (h signalHandler) WithGroup(name string) slog.Handler {
	return signalHandler{h.Handler.WithGroup(name), h.msg, h.ch}
}

// TestSubscriptionRetriesDatabaseErrors: a subscription whose reads fail
// keeps going once the database answers again.
func TestSubscriptionRetriesDatabaseErrors(t *testing.T) {
	t.Parallel()
	failed := make(chan struct{}, 1)
	logger := slog.New(signalHandler{testLogger(t).Handler(), "event store subscription read failed; retrying", failed})
	s := openStore(t, pgtest.NewPool(t), Options{Logger: logger})
	ctx := t.Context()
	sub, err := s.Subscribe(ctx, eventstore.Start, eventstore.Filter{})
	require.NoError(t, err)
	e1 := event("test.one")
	_, err = s.Append(ctx, "retry-1", eventstore.NoStream, e1)
	require.NoError(t, err)
	require.Equal(t, e1.ID, nextEvent(t, sub).ID)

	// Make reads fail: the events table disappears for a moment.
	_, err = s.pool.Exec(ctx, `ALTER TABLE events RENAME TO events_away`)
	require.NoError(t, err)
	s.wake.broadcast() // the subscription reads now, and fails
	select {
	case <-failed:
	case <-time.After(waitTimeout):
		t.Fatal("the subscription did not report the failed read")
	}
	_, err = s.pool.Exec(ctx, `ALTER TABLE events_away RENAME TO events`)
	require.NoError(t, err)

	e2 := event("test.two")
	_, err = s.Append(ctx, "retry-2", eventstore.NoStream, e2)
	require.NoError(t, err)
	require.Equal(t, e2.ID, nextEvent(t, sub).ID, "no gap, no repeat")
}

func TestContiguousRun(t *testing.T) {
	t.Parallel()
	cases := []struct {
		from       uint64
		positions  []int64
		end, after uint64
	}{
		{10, nil, 10, 0},
		{10, []int64{11, 12, 13}, 13, 0},
		{10, []int64{12, 13}, 10, 12},
		{10, []int64{11, 12, 14, 15}, 12, 14},
		{0, []int64{1}, 1, 0},
	}
	for _, c := range cases {
		end, after := contiguousRun(c.from, c.positions)
		require.Equal(t, c.end, end, "%v after %d", c.positions, c.from)
		require.Equal(t, c.after, after, "%v after %d", c.positions, c.from)
	}
}

func TestLikePrefix(t *testing.T) {
	t.Parallel()
	require.Equal(t, `worker-%`, likePrefix("worker-"))
	require.Equal(t, `a\_b\%c\\d%`, likePrefix(`a_b%c\d`))
	require.Equal(t, `%`, likePrefix(""))
}

func TestAppendErrorMapping(t *testing.T) {
	t.Parallel()
	err := appendError("s", errors.New("boom"))
	require.ErrorContains(t, err, "boom")
	require.NotErrorIs(t, err, eventstore.ErrWrongExpectedVersion)
}
