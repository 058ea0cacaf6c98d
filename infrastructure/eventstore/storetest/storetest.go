// Package storetest is the contract suite of the event store port
// (application/eventstore). Every adapter runs it from its own tests:
//
//	func TestContract(t *testing.T) { storetest.Run(t, storetest.Harness{NewStore: ...}) }
//
// The suite never assumes an empty log: each test works in streams named with
// its own random prefix, filters the global log by that prefix, and starts
// reading from the position of a marker event it appended itself. It can
// therefore run against a shared server whose log already holds events.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

// Harness tells the suite how to get and manipulate stores of one adapter.
type Harness struct {
	// NewStore returns a ready store; cleanup via t.Cleanup.
	NewStore func(t *testing.T) eventstore.Store
	// HoldAppend starts an append of events to stream and stops after the
	// positions are assigned but before the commit; release(commit) commits or
	// rolls it back. nil: the out-of-order tests skip, saying why.
	//
	// While an append is held, readers of that store's log may block, so
	// NewStore should not share a log between tests that hold appends and
	// tests that read the log without a filter.
	HoldAppend func(t *testing.T, s eventstore.Store, stream string, events ...eventstore.EventData) (release func(commit bool) error)
	// DropConnections severs the store's database connections. nil: the
	// resubscribe test skips, saying why.
	DropConnections func(t *testing.T, s eventstore.Store)
}

// waitTimeout bounds every wait for something that should happen.
const waitTimeout = 10 * time.Second

// quietPeriod is how long the out-of-order tests watch that nothing is
// delivered too early.
const quietPeriod = 300 * time.Millisecond

// Run runs the contract suite as parallel subtests of t.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.NewStore == nil {
		t.Fatal("storetest: Harness.NewStore is nil")
	}
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"ExpectedVersion", testExpectedVersion},
		{"IdempotentAppend", testIdempotentAppend},
		{"InvalidAppend", testInvalidAppend},
		{"ReadStream", testReadStream},
		{"GlobalOrderAndExclusivity", testGlobalOrder},
		{"Filters", testFilters},
		{"LiveDelivery", testLiveDelivery},
		{"SubscriptionEndsWithContext", testSubscriptionEnds},
		{"ConcurrentWritersOneStream", testWritersRace},
		{"ConcurrentWritersWithSubscriber", testManyWriters},
		{"OutOfOrderCommit", func(t *testing.T, h Harness) { testOutOfOrder(t, h, true) }},
		{"OutOfOrderRollback", func(t *testing.T, h Harness) { testOutOfOrder(t, h, false) }},
		{"ResubscribeAfterDrop", testResubscribe},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, h)
		})
	}
}

// NewID returns a random (version 4) UUID in canonical form.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("storetest: no randomness: %v", err))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// newPrefix returns a random stream-name prefix for one test.
func newPrefix() string {
	return "storetest_" + strings.ReplaceAll(NewID()[:13], "-", "") + "-"
}

// newEvent returns an event with a fresh id, type typ and data {"n": n}.
func newEvent(typ string, n int) eventstore.EventData {
	return eventstore.EventData{
		ID:       NewID(),
		Type:     typ,
		Data:     fmt.Appendf(nil, `{"n": %d, "note": "storetest"}`, n),
		Metadata: []byte(`{"source": "storetest"}`),
	}
}

func mustAppend(t *testing.T, s eventstore.Store, stream string, expected eventstore.Expected, events ...eventstore.EventData) eventstore.AppendResult {
	t.Helper()
	res, err := s.Append(t.Context(), stream, expected, events...)
	require.NoError(t, err, "append %d event(s) to %s expecting %s", len(events), stream, expected)
	return res
}

// marker appends one event to a stream of its own and returns its position:
// the test's reads and subscriptions start after it.
func marker(t *testing.T, s eventstore.Store, prefix string) eventstore.Position {
	t.Helper()
	return mustAppend(t, s, prefix+"marker", eventstore.Any, newEvent("storetest.marker", 0)).Position
}

func ids(events []eventstore.RecordedEvent) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

func dataIDs(events []eventstore.EventData) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

// requireIncreasing checks that positions strictly increase after from.
func requireIncreasing(t *testing.T, from eventstore.Position, events []eventstore.RecordedEvent) {
	t.Helper()
	prev := from
	for i, e := range events {
		require.True(t, prev.Less(e.Position), "event %d (%s) at %s does not come after %s", i, e.ID, e.Position, prev)
		prev = e.Position
	}
}

// readAllUntil pages through ReadAll after from until it has n events,
// checking order and checkpoints on the way. It fails after waitTimeout.
func readAllUntil(t *testing.T, s eventstore.Store, from eventstore.Position, filter eventstore.Filter, n int) []eventstore.RecordedEvent {
	t.Helper()
	var got []eventstore.RecordedEvent
	deadline := time.Now().Add(waitTimeout)
	pause := time.Millisecond
	for len(got) < n {
		page, cp, err := s.ReadAll(t.Context(), from, 100, filter)
		require.NoError(t, err, "read all after %s", from)
		requireIncreasing(t, from, page)
		if len(page) > 0 {
			last := page[len(page)-1].Position
			require.False(t, cp.Less(last), "checkpoint %s is before the last returned event %s", cp, last)
		}
		require.False(t, cp.Less(from), "checkpoint %s went back before %s", cp, from)
		got = append(got, page...)
		if len(page) == 0 && cp == from {
			require.True(t, time.Now().Before(deadline), "read all: only %d of %d events after %s", len(got), n, waitTimeout)
			time.Sleep(pause) // polling a condition: the events may still be in flight
			pause = min(2*pause, 50*time.Millisecond)
		}
		from = cp
	}
	require.Len(t, got, n, "read all returned more events than appended")
	return got
}

// receiver reads a subscription and checks the ordering rules of messages.
type receiver struct {
	t    *testing.T
	sub  eventstore.Subscription
	last eventstore.Position
}

func subscribe(t *testing.T, s eventstore.Store, from eventstore.Position, filter eventstore.Filter) *receiver {
	t.Helper()
	sub, err := s.Subscribe(t.Context(), from, filter)
	require.NoError(t, err, "subscribe after %s", from)
	return &receiver{t: t, sub: sub, last: from}
}

// next returns the next message, failing after waitTimeout.
func (r *receiver) next() eventstore.Message {
	r.t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case m, ok := <-r.sub.Messages():
		require.True(r.t, ok, "subscription ended early: %v", r.sub.Err())
		r.check(m)
		return m
	case <-timer.C:
		r.t.Fatalf("no message from the subscription after %s (last position %s)", waitTimeout, r.last)
		return eventstore.Message{}
	}
}

func (r *receiver) check(m eventstore.Message) {
	r.t.Helper()
	if m.Event != nil {
		require.Equal(r.t, m.Event.Position, m.Checkpoint, "event message checkpoint must equal the event position")
		require.True(r.t, r.last.Less(m.Event.Position), "event %s at %s delivered after position %s", m.Event.ID, m.Event.Position, r.last)
	} else {
		require.False(r.t, m.Checkpoint.Less(r.last), "checkpoint %s went back before %s", m.Checkpoint, r.last)
	}
	r.last = m.Checkpoint
}

// nextEvent returns the next event, skipping checkpoint-only messages.
func (r *receiver) nextEvent() *eventstore.RecordedEvent {
	r.t.Helper()
	for {
		if m := r.next(); m.Event != nil {
			return m.Event
		}
	}
}

// events returns the next n events.
func (r *receiver) events(n int) []eventstore.RecordedEvent {
	r.t.Helper()
	out := make([]eventstore.RecordedEvent, 0, n)
	for len(out) < n {
		out = append(out, *r.nextEvent())
	}
	return out
}

// quiet checks that no event arrives for d; checkpoints must stay before
// limit.
func (r *receiver) quiet(d time.Duration, limit eventstore.Position) {
	r.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case m, ok := <-r.sub.Messages():
			require.True(r.t, ok, "subscription ended early: %v", r.sub.Err())
			require.Nil(r.t, m.Event, "event delivered while an earlier append is in flight")
			require.True(r.t, m.Checkpoint.Less(limit), "checkpoint %s passed %s while an earlier append is in flight", m.Checkpoint, limit)
			r.check(m)
		case <-timer.C:
			return
		}
	}
}

func requireWrongVersion(t *testing.T, err error, stream string, exists bool, actual uint64) {
	t.Helper()
	require.Error(t, err)
	require.ErrorIs(t, err, eventstore.ErrWrongExpectedVersion)
	var wev *eventstore.WrongExpectedVersionError
	require.ErrorAs(t, err, &wev)
	require.Equal(t, stream, wev.Stream)
	require.Equal(t, exists, wev.ActualExists, "ActualExists")
	if exists {
		require.Equal(t, actual, wev.Actual, "Actual")
	}
}

func testExpectedVersion(t *testing.T, h Harness) {
	s := h.NewStore(t)
	prefix := newPrefix()
	cases := []struct {
		name     string
		existing int // events in the stream before the append
		expected eventstore.Expected
		ok       bool
	}{
		{"absent/no-stream", 0, eventstore.NoStream, true},
		{"absent/stream-exists", 0, eventstore.StreamExists, false},
		{"absent/any", 0, eventstore.Any, true},
		{"absent/exact-0", 0, eventstore.Exact(0), false},
		{"absent/exact-2", 0, eventstore.Exact(2), false},
		{"three/no-stream", 3, eventstore.NoStream, false},
		{"three/stream-exists", 3, eventstore.StreamExists, true},
		{"three/any", 3, eventstore.Any, true},
		{"three/exact-correct", 3, eventstore.Exact(2), true},
		{"three/exact-too-low", 3, eventstore.Exact(1), false},
		{"three/exact-too-high", 3, eventstore.Exact(3), false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stream := fmt.Sprintf("%sev-%d", prefix, i)
			if tc.existing > 0 {
				evs := make([]eventstore.EventData, tc.existing)
				for j := range evs {
					evs[j] = newEvent("storetest.setup", j)
				}
				res := mustAppend(t, s, stream, eventstore.NoStream, evs...)
				require.Equal(t, uint64(tc.existing-1), res.NextRevision)
			}
			ev := newEvent("storetest.tried", 99)
			res, err := s.Append(t.Context(), stream, tc.expected, ev)
			got, rerr := s.ReadStream(t.Context(), stream, 0, 100)
			require.NoError(t, rerr)
			if tc.ok {
				require.NoError(t, err)
				require.Equal(t, uint64(tc.existing), res.NextRevision, "revision of the appended event")
				require.False(t, res.Position.IsZero(), "position of the appended event")
				require.Len(t, got, tc.existing+1)
				require.Equal(t, ev.ID, got[tc.existing].ID)
				require.Equal(t, res.Position, got[tc.existing].Position)
				return
			}
			requireWrongVersion(t, err, stream, tc.existing > 0, uint64(tc.existing-1))
			require.Len(t, got, tc.existing, "a failed append must write nothing")
			// The failed event was not consumed: it can still be appended.
			res = mustAppend(t, s, stream, eventstore.Any, ev)
			require.Equal(t, uint64(tc.existing), res.NextRevision)
		})
	}
}

func testIdempotentAppend(t *testing.T, h Harness) {
	s := h.NewStore(t)
	prefix := newPrefix()
	stream := prefix + "idem"
	e1, e2, e3 := newEvent("storetest.a", 1), newEvent("storetest.b", 2), newEvent("storetest.c", 3)

	first := mustAppend(t, s, stream, eventstore.NoStream, e1, e2)
	require.Equal(t, uint64(1), first.NextRevision)
	again := mustAppend(t, s, stream, eventstore.NoStream, e1, e2)
	require.Equal(t, first, again, "same ids, same expectation")
	anyAgain := mustAppend(t, s, stream, eventstore.Any, e1, e2)
	require.Equal(t, first, anyAgain, "same ids with Any")
	got, err := s.ReadStream(t.Context(), stream, 0, 100)
	require.NoError(t, err)
	require.Equal(t, dataIDs([]eventstore.EventData{e1, e2}), ids(got), "nothing duplicated")

	// Exact expectation, retried.
	next := mustAppend(t, s, stream, eventstore.Exact(1), e3)
	require.Equal(t, uint64(2), next.NextRevision)
	require.Equal(t, next, mustAppend(t, s, stream, eventstore.Exact(1), e3))

	// A partial overlap is an error and writes nothing. (Adapters differ on
	// subtler cases, such as known ids in another order or in another
	// stream; their own tests cover those.)
	e4 := newEvent("storetest.d", 4)
	_, err = s.Append(t.Context(), stream, eventstore.Any, e3, e4)
	require.Error(t, err, "known id followed by a new one")
	got, err = s.ReadStream(t.Context(), stream, 0, 100)
	require.NoError(t, err)
	require.Equal(t, dataIDs([]eventstore.EventData{e1, e2, e3}), ids(got))

	// e4 was not consumed by the failed appends.
	require.Equal(t, uint64(3), mustAppend(t, s, stream, eventstore.Exact(2), e4).NextRevision)
}

func testInvalidAppend(t *testing.T, h Harness) {
	s := h.NewStore(t)
	prefix := newPrefix()
	good := func() eventstore.EventData { return newEvent("storetest.ok", 1) }
	with := func(f func(*eventstore.EventData)) eventstore.EventData {
		e := good()
		f(&e)
		return e
	}
	dup := good()
	cases := []struct {
		name   string
		stream string
		events []eventstore.EventData
	}{
		{"empty stream name", "", []eventstore.EventData{good()}},
		{"no events", prefix + "none", nil},
		{"empty id", prefix + "noid", []eventstore.EventData{with(func(e *eventstore.EventData) { e.ID = "" })}},
		{"id not a uuid", prefix + "badid", []eventstore.EventData{with(func(e *eventstore.EventData) { e.ID = "not-a-uuid" })}},
		{"duplicate ids", prefix + "dup", []eventstore.EventData{dup, dup}},
		{"empty type", prefix + "notype", []eventstore.EventData{with(func(e *eventstore.EventData) { e.Type = "" })}},
		{"nil data", prefix + "nodata", []eventstore.EventData{with(func(e *eventstore.EventData) { e.Data = nil })}},
		{"data not json", prefix + "baddata", []eventstore.EventData{with(func(e *eventstore.EventData) { e.Data = []byte("{nope") })}},
		{"metadata not json", prefix + "badmeta", []eventstore.EventData{with(func(e *eventstore.EventData) { e.Metadata = []byte("nope}") })}},
		{"second event invalid", prefix + "second", []eventstore.EventData{good(), with(func(e *eventstore.EventData) { e.Data = []byte("[1,") })}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := s.Append(t.Context(), tc.stream, eventstore.Any, tc.events...)
			require.ErrorIs(t, err, eventstore.ErrInvalidAppend)
			require.NotErrorIs(t, err, eventstore.ErrWrongExpectedVersion)
			if tc.stream != "" {
				got, err := s.ReadStream(t.Context(), tc.stream, 0, 10)
				require.NoError(t, err)
				require.Empty(t, got, "an invalid append must write nothing")
			}
		})
	}
	t.Run("nil metadata is allowed", func(t *testing.T) {
		t.Parallel()
		stream := prefix + "nilmeta"
		e := with(func(e *eventstore.EventData) { e.Metadata = nil })
		mustAppend(t, s, stream, eventstore.NoStream, e)
		got, err := s.ReadStream(t.Context(), stream, 0, 10)
		require.NoError(t, err)
		require.Len(t, got, 1)
		require.Equal(t, e.ID, got[0].ID)
	})
}

func testReadStream(t *testing.T, h Harness) {
	s := h.NewStore(t)
	prefix := newPrefix()
	missing, err := s.ReadStream(t.Context(), prefix+"missing", 0, 10)
	require.NoError(t, err, "a missing stream is not an error")
	require.Empty(t, missing)

	stream := prefix + "read"
	evs := make([]eventstore.EventData, 5)
	for i := range evs {
		evs[i] = newEvent(fmt.Sprintf("storetest.type%d", i), i)
	}
	mustAppend(t, s, stream, eventstore.NoStream, evs[:2]...)
	mustAppend(t, s, stream, eventstore.Exact(1), evs[2:]...)

	all, err := s.ReadStream(t.Context(), stream, 0, 100)
	require.NoError(t, err)
	require.Len(t, all, 5)
	var prev eventstore.Position
	for i, e := range all {
		require.Equal(t, evs[i].ID, e.ID)
		require.Equal(t, stream, e.Stream)
		require.Equal(t, uint64(i), e.Revision)
		require.Equal(t, evs[i].Type, e.Type)
		require.JSONEq(t, string(evs[i].Data), string(e.Data))
		require.JSONEq(t, string(evs[i].Metadata), string(e.Metadata))
		require.False(t, e.RecordedAt.IsZero(), "recorded at")
		require.WithinDuration(t, time.Now(), e.RecordedAt, time.Hour, "recorded at")
		require.True(t, prev.Less(e.Position), "positions increase with revisions")
		prev = e.Position
	}

	page, err := s.ReadStream(t.Context(), stream, 2, 2)
	require.NoError(t, err)
	require.Equal(t, ids(all[2:4]), ids(page), "from 2, max 2")
	tail, err := s.ReadStream(t.Context(), stream, 3, 100)
	require.NoError(t, err)
	require.Equal(t, ids(all[3:]), ids(tail), "from 3")
	past, err := s.ReadStream(t.Context(), stream, 5, 100)
	require.NoError(t, err)
	require.Empty(t, past, "from past the end")
}

func testGlobalOrder(t *testing.T, h Harness) {
	s := h.NewStore(t)
	prefix := newPrefix()
	filter := eventstore.Filter{StreamPrefixes: []string{prefix}}
	start := marker(t, s, prefix)

	const n = 10
	var appended []eventstore.EventData
	var positions []eventstore.Position
	for i := range n {
		e := newEvent("storetest.ordered", i)
		res := mustAppend(t, s, fmt.Sprintf("%sorder-%d", prefix, i%3), eventstore.Any, e)
		appended = append(appended, e)
		positions = append(positions, res.Position)
	}
	for i := 1; i < n; i++ {
		require.True(t, positions[i-1].Less(positions[i]), "sequential appends get increasing positions")
	}

	all := readAllUntil(t, s, start, filter, n)
	require.Equal(t, dataIDs(appended), ids(all))
	for i, e := range all {
		require.Equal(t, positions[i], e.Position, "read position equals append position")
	}

	const k = 3
	after := readAllUntil(t, s, all[k].Position, filter, n-k-1)
	require.Equal(t, ids(all[k+1:]), ids(after), "ReadAll from the position of event k starts at event k+1")

	r := subscribe(t, s, all[5].Position, filter)
	require.Equal(t, ids(all[6:]), ids(r.events(n-6)), "Subscribe from the position of event 5 starts at event 6")
}

func testFilters(t *testing.T, h Harness) {
	s := h.NewStore(t)
	prefix := newPrefix()
	typ := "storetest." + strings.TrimSuffix(strings.TrimPrefix(prefix, "storetest_"), "-") + "."
	start := marker(t, s, prefix)

	type ev struct{ stream, typ string }
	spec := []ev{
		{"a-1", "created"}, {"b-1", "created"}, {"a-2", "deleted"}, {"b-1", "deleted"}, {"a-1", "deleted"},
		{"x_1", "created"}, {"xa1", "created"}, {"x%1", "created"},
	}
	var all []eventstore.EventData
	for i, e := range spec {
		d := newEvent(typ+e.typ, i)
		mustAppend(t, s, prefix+e.stream, eventstore.Any, d)
		all = append(all, d)
	}
	pick := func(idx ...int) []string {
		out := make([]string, len(idx))
		for i, j := range idx {
			out[i] = all[j].ID
		}
		return out
	}
	cases := []struct {
		name   string
		filter eventstore.Filter
		want   []string
	}{
		{"stream prefix", eventstore.Filter{StreamPrefixes: []string{prefix + "a-"}}, pick(0, 2, 4)},
		{"two stream prefixes", eventstore.Filter{StreamPrefixes: []string{prefix + "a-2", prefix + "b-"}}, pick(1, 2, 3)},
		{"type prefix", eventstore.Filter{TypePrefixes: []string{typ + "del"}}, pick(2, 3, 4)},
		{"stream and type prefix", eventstore.Filter{StreamPrefixes: []string{prefix + "a-"}, TypePrefixes: []string{typ + "del"}}, pick(2, 4)},
		{"underscore is literal", eventstore.Filter{StreamPrefixes: []string{prefix + "x_"}}, pick(5)},
		{"percent is literal", eventstore.Filter{StreamPrefixes: []string{prefix + "x%"}}, pick(7)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := readAllUntil(t, s, start, tc.filter, len(tc.want))
			require.Equal(t, tc.want, ids(got))
			// Nothing else matches: the rest of this test's events are skipped.
			last := got[len(got)-1].Position
			rest, _, err := s.ReadAll(t.Context(), last, 100, tc.filter)
			require.NoError(t, err)
			for _, e := range rest {
				require.False(t, strings.HasPrefix(e.Stream, prefix), "unexpected match %s in %s (%s)", e.ID, e.Stream, e.Type)
			}
		})
	}

	t.Run("checkpoint passes skipped events", func(t *testing.T) {
		t.Parallel()
		filter := eventstore.Filter{StreamPrefixes: []string{prefix + "cp-match"}}
		from := mustAppend(t, s, prefix+"cp-match", eventstore.Any, newEvent(typ+"matching", 0)).Position
		var last eventstore.Position
		for i := range 5 {
			last = mustAppend(t, s, prefix+"cp-skip", eventstore.Any, newEvent(typ+"skipped", i)).Position
		}
		deadline := time.Now().Add(waitTimeout)
		cp := from
		for cp.Less(last) {
			require.True(t, time.Now().Before(deadline), "checkpoint stuck at %s, before %s", cp, last)
			evs, next, err := s.ReadAll(t.Context(), cp, 100, filter)
			require.NoError(t, err)
			require.Empty(t, evs, "nothing after the matching event matches")
			require.False(t, next.Less(cp), "checkpoint went back")
			if next == cp {
				time.Sleep(10 * time.Millisecond) // polling a condition
			}
			cp = next
		}
	})
}

func testLiveDelivery(t *testing.T, h Harness) {
	s := h.NewStore(t)
	prefix := newPrefix()
	filter := eventstore.Filter{StreamPrefixes: []string{prefix}}
	start := marker(t, s, prefix)
	r := subscribe(t, s, start, filter)

	evs := []eventstore.EventData{newEvent("storetest.live", 1), newEvent("storetest.live", 2), newEvent("storetest.live", 3)}
	errc := make(chan error, 1)
	go func() {
		var err error
		for i, e := range evs {
			if _, aerr := s.Append(context.Background(), prefix+"live", eventstore.Any, e); aerr != nil && err == nil {
				err = fmt.Errorf("append %d: %w", i, aerr)
			}
		}
		errc <- err
	}()
	got := r.events(len(evs))
	require.NoError(t, <-errc)
	require.Equal(t, dataIDs(evs), ids(got))
	for i, e := range got {
		require.Equal(t, prefix+"live", e.Stream)
		require.Equal(t, uint64(i), e.Revision)
		require.Equal(t, "storetest.live", e.Type)
		require.JSONEq(t, string(evs[i].Data), string(e.Data))
	}
}

func testSubscriptionEnds(t *testing.T, h Harness) {
	s := h.NewStore(t)
	prefix := newPrefix()
	start := marker(t, s, prefix)
	ctx, cancel := context.WithCancel(t.Context())
	sub, err := s.Subscribe(ctx, start, eventstore.Filter{StreamPrefixes: []string{prefix}})
	require.NoError(t, err)
	cancel()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		select {
		case m, ok := <-sub.Messages():
			if !ok {
				require.ErrorIs(t, sub.Err(), context.Canceled)
				return
			}
			require.Nil(t, m.Event, "no events were appended after the marker")
		case <-timer.C:
			t.Fatal("the subscription did not end after its context was cancelled")
		}
	}
}

func testWritersRace(t *testing.T, h Harness) {
	s := h.NewStore(t)
	stream := newPrefix() + "race"
	mustAppend(t, s, stream, eventstore.NoStream, newEvent("storetest.first", 0))

	const writers = 32
	start := make(chan struct{})
	errs := make(chan error, writers)
	for i := range writers {
		go func() {
			<-start
			_, err := s.Append(context.Background(), stream, eventstore.Exact(0), newEvent("storetest.racer", i))
			errs <- err
		}()
	}
	close(start)
	wins := 0
	for range writers {
		if err := <-errs; err == nil {
			wins++
		} else {
			requireWrongVersion(t, err, stream, true, 1)
		}
	}
	require.Equal(t, 1, wins, "exactly one writer wins")
	got, err := s.ReadStream(t.Context(), stream, 0, 100)
	require.NoError(t, err)
	require.Len(t, got, 2, "the stream has exactly one new event")
	require.Equal(t, "storetest.racer", got[1].Type)
}

func testManyWriters(t *testing.T, h Harness) {
	s := h.NewStore(t)
	prefix := newPrefix()
	filter := eventstore.Filter{StreamPrefixes: []string{prefix}}
	start := marker(t, s, prefix)
	r := subscribe(t, s, start, filter)

	const writers, perWriter = 8, 25
	errs := make(chan error, writers)
	sent := make(chan string, writers*perWriter)
	for w := range writers {
		go func() {
			stream := fmt.Sprintf("%sw-%d", prefix, w)
			for i := range perWriter {
				expected := eventstore.Exact(uint64(i - 1))
				if i == 0 {
					expected = eventstore.NoStream
				}
				e := newEvent("storetest.many", i)
				if _, err := s.Append(context.Background(), stream, expected, e); err != nil {
					errs <- fmt.Errorf("%s revision %d: %w", stream, i, err)
					return
				}
				sent <- e.ID
			}
			errs <- nil
		}()
	}
	got := r.events(writers * perWriter)
	for range writers {
		require.NoError(t, <-errs)
	}
	close(sent)
	want := make(map[string]bool)
	for id := range sent {
		want[id] = true
	}
	nextRev := make(map[string]uint64)
	for _, e := range got {
		require.True(t, want[e.ID], "event %s received twice or never appended", e.ID)
		delete(want, e.ID)
		require.Equal(t, nextRev[e.Stream], e.Revision, "revisions of %s in order", e.Stream)
		nextRev[e.Stream]++
	}
	require.Empty(t, want, "events never received")
	// Nothing more (no duplicate) comes before a sentinel appended now.
	sentinel := newEvent("storetest.sentinel", 0)
	mustAppend(t, s, prefix+"sentinel", eventstore.NoStream, sentinel)
	require.Equal(t, sentinel.ID, r.nextEvent().ID)
}

func testOutOfOrder(t *testing.T, h Harness, commit bool) {
	if h.HoldAppend == nil {
		t.Skip("Harness.HoldAppend is nil: this adapter cannot hold an append between position assignment and commit")
	}
	s := h.NewStore(t)
	prefix := newPrefix()
	filter := eventstore.Filter{StreamPrefixes: []string{prefix}}
	start := marker(t, s, prefix)
	r := subscribe(t, s, start, filter)

	evA, evB := newEvent("storetest.held", 1), newEvent("storetest.after", 2)
	release := h.HoldAppend(t, s, prefix+"a", evA)
	released := false
	t.Cleanup(func() {
		if !released {
			_ = release(false)
		}
	})
	resB := mustAppend(t, s, prefix+"b", eventstore.NoStream, evB)

	// While A is held, B must not be delivered: A will get a lower position.
	r.quiet(quietPeriod, resB.Position)
	ctx, cancel := context.WithTimeout(t.Context(), quietPeriod)
	evs, cp, err := s.ReadAll(ctx, start, 100, filter)
	cancel()
	if err != nil {
		require.ErrorIs(t, err, context.DeadlineExceeded, "ReadAll may only wait for the held append")
	} else {
		require.Empty(t, evs, "ReadAll returned events while an earlier append is in flight")
		require.True(t, cp.Less(resB.Position), "ReadAll checkpoint %s passed %s while an earlier append is in flight", cp, resB.Position)
	}

	released = true
	require.NoError(t, release(commit))
	if commit {
		a := r.nextEvent()
		require.Equal(t, evA.ID, a.ID, "the held append is delivered first")
		require.True(t, a.Position.Less(resB.Position), "the held append has the lower position")
		require.Equal(t, evB.ID, r.nextEvent().ID)
		require.Equal(t, []string{evA.ID, evB.ID}, ids(readAllUntil(t, s, start, filter, 2)))
		return
	}
	require.Equal(t, evB.ID, r.nextEvent().ID, "after the rollback B is delivered")
	sentinel := newEvent("storetest.sentinel", 0)
	mustAppend(t, s, prefix+"sentinel", eventstore.NoStream, sentinel)
	require.Equal(t, sentinel.ID, r.nextEvent().ID, "the rolled-back append is never delivered")
	require.Equal(t, []string{evB.ID, sentinel.ID}, ids(readAllUntil(t, s, start, filter, 2)))
	got, err := s.ReadStream(t.Context(), prefix+"a", 0, 10)
	require.NoError(t, err)
	require.Empty(t, got)
}

// appendRetrying appends, retrying errors other than a wrong expected
// version (a connection may just have been severed). The event ids make the
// retry idempotent.
func appendRetrying(t *testing.T, s eventstore.Store, stream string, expected eventstore.Expected, events ...eventstore.EventData) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	pause := 10 * time.Millisecond
	for {
		_, err := s.Append(t.Context(), stream, expected, events...)
		if err == nil {
			return
		}
		require.NotErrorIs(t, err, eventstore.ErrWrongExpectedVersion)
		require.NotErrorIs(t, err, eventstore.ErrInvalidAppend)
		require.True(t, time.Now().Before(deadline), "append keeps failing: %v", err)
		t.Logf("append failed, retrying: %v", err)
		time.Sleep(pause)
		pause = min(2*pause, 500*time.Millisecond)
	}
}

func testResubscribe(t *testing.T, h Harness) {
	if h.DropConnections == nil {
		t.Skip("Harness.DropConnections is nil: this adapter cannot sever its connections on demand")
	}
	s := h.NewStore(t)
	prefix := newPrefix()
	filter := eventstore.Filter{StreamPrefixes: []string{prefix}}
	start := marker(t, s, prefix)
	r := subscribe(t, s, start, filter)
	stream := prefix + "resub"

	var before, after []eventstore.EventData
	for i := range 3 {
		before = append(before, newEvent("storetest.before", i))
		after = append(after, newEvent("storetest.after", i))
	}
	for i, e := range before {
		expected := eventstore.Exact(uint64(i - 1))
		if i == 0 {
			expected = eventstore.NoStream
		}
		mustAppend(t, s, stream, expected, e)
	}
	require.Equal(t, dataIDs(before), ids(r.events(3)))

	h.DropConnections(t, s)
	for i, e := range after {
		appendRetrying(t, s, stream, eventstore.Exact(uint64(2+i)), e)
	}
	require.Equal(t, dataIDs(after), ids(r.events(3)), "events after the drop, no gap, no duplicate")
	sentinel := newEvent("storetest.sentinel", 0)
	appendRetrying(t, s, prefix+"sentinel", eventstore.NoStream, sentinel)
	require.Equal(t, sentinel.ID, r.nextEvent().ID, "nothing repeated before the sentinel")
	got, err := s.ReadStream(t.Context(), stream, 0, 10)
	require.NoError(t, err)
	require.Equal(t, append(dataIDs(before), dataIDs(after)...), ids(got))
}
