package esdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/eventstore/storetest"
)

// Tests of the EventStoreDB adapter beyond the contract suite, against the
// in-process server.

const waitTimeout = 10 * time.Second

func event(typ string) eventstore.EventData {
	return eventstore.EventData{ID: storetest.NewID(), Type: typ, Data: []byte(`{"k": 1}`)}
}

// testBundle is a server and a store connected to it.
type testBundle struct {
	srv   *testServer
	store *Store
}

func setup(t *testing.T, opts Options) testBundle {
	t.Helper()
	srv := startTestServer(t)
	return testBundle{srv: srv, store: openStore(t, srv.URL(), opts)}
}

// rawClient is a client of srv that bypasses the adapter, to write what the
// adapter refuses to.
func rawClient(t *testing.T, srv *testServer) *esdb.Client {
	t.Helper()
	conf, err := esdb.ParseConnectionString(srv.URL())
	require.NoError(t, err)
	conf.Logger = esdb.NoopLogging()
	c, err := esdb.NewClient(conf)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func mustAppend(t *testing.T, s *Store, stream string, expected eventstore.Expected, events ...eventstore.EventData) eventstore.AppendResult {
	t.Helper()
	res, err := s.Append(t.Context(), stream, expected, events...)
	require.NoError(t, err, "append to %s", stream)
	return res
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

func TestSystemEventsNeverReachCallers(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{TelemetryMaxAge: time.Hour})
	raw := rawClient(t, b.srv)
	ctx := t.Context()

	// The server's own events are in the log already. Add stream metadata
	// (written by the adapter for a telemetry stream) and a link event in a
	// user stream, written behind the adapter's back.
	telemetry := worker.TelemetryStream(uuid.NewString())
	tel := mustAppend(t, b.store, telemetry, eventstore.NoStream, event("worker.metrics_sampled.v1"))
	require.Len(t, b.srv.log.stream("$$"+telemetry), 1, "the metadata event is in the log")
	_, err := raw.AppendToStream(ctx, "user-1", esdb.AppendToStreamOptions{}, esdb.EventData{
		EventType: "$>", ContentType: esdb.ContentTypeBinary, Data: []byte("0@" + telemetry)})
	require.NoError(t, err)
	last := mustAppend(t, b.store, "user-1", eventstore.Any, event("test.visible"))

	all, cp, err := b.store.ReadAll(ctx, eventstore.Start, 100, eventstore.Filter{})
	require.NoError(t, err)
	require.Equal(t, last.Position, cp, "the checkpoint reaches the last event")
	var seen []string
	for _, e := range all {
		seen = append(seen, e.Stream+" "+e.Type)
	}
	require.Equal(t, []string{telemetry + " worker.metrics_sampled.v1", "user-1 test.visible"}, seen)
	require.Equal(t, tel.Position, all[0].Position)

	stream, err := b.store.ReadStream(ctx, "user-1", 0, 10)
	require.NoError(t, err)
	require.Len(t, stream, 1, "the link event is left out of the stream")
	require.Equal(t, uint64(1), stream[0].Revision, "revisions are the server's")

	sub, err := b.store.Subscribe(ctx, eventstore.Start, eventstore.Filter{})
	require.NoError(t, err)
	require.Equal(t, all[0].ID, nextEvent(t, sub).ID)
	require.Equal(t, all[1].ID, nextEvent(t, sub).ID)

	_, err = b.store.ReadStream(ctx, "$settings", 0, 10)
	require.ErrorContains(t, err, "reserved for the server")
	for _, tc := range []struct{ stream, typ string }{{"$settings", "test.x"}, {"user-2", "$metadata"}} {
		_, err = b.store.Append(ctx, tc.stream, eventstore.Any, event(tc.typ))
		require.ErrorIs(t, err, eventstore.ErrInvalidAppend, "%s %s", tc.stream, tc.typ)
	}
}

func TestAppendSendsJSONWithCallerIDs(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	withMeta := event("test.meta")
	withMeta.Metadata = []byte(`{"correlation_id": "c-1"}`)
	noMeta := event("test.nometa")
	res := mustAppend(t, b.store, "json-1", eventstore.NoStream, withMeta, noMeta)
	require.Equal(t, uint64(1), res.NextRevision)

	recs := b.srv.log.stream("json-1")
	require.Len(t, recs, 2)
	for i, e := range []eventstore.EventData{withMeta, noMeta} {
		require.Equal(t, e.ID, recs[i].id.String(), "the caller's id")
		require.Equal(t, "application/json", recs[i].contentType, "JSON content type, set explicitly")
		require.Equal(t, e.Type, recs[i].eventType)
		require.JSONEq(t, string(e.Data), string(recs[i].data))
	}
	require.JSONEq(t, `{"correlation_id": "c-1"}`, string(recs[0].meta))
	require.JSONEq(t, `{}`, string(recs[1].meta), "nil metadata is sent as an empty object")
	require.Equal(t, eventstore.Position{Commit: recs[1].pos, Prepare: recs[1].pos}, res.Position,
		"the position of the last event, straight from the server")

	got, err := b.store.ReadStream(t.Context(), "json-1", 0, 10)
	require.NoError(t, err)
	require.Equal(t, recs[0].created.UTC().Truncate(100*time.Nanosecond), got[0].RecordedAt.UTC())
}

func TestWrongExpectedVersionIsThePortsError(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	mustAppend(t, b.store, "wev-1", eventstore.NoStream, event("a"), event("b"))
	cases := []struct {
		name     string
		stream   string
		expected eventstore.Expected
		exists   bool
	}{
		{"exact too low", "wev-1", eventstore.Exact(0), true},
		{"exact too high", "wev-1", eventstore.Exact(7), true},
		{"no stream", "wev-1", eventstore.NoStream, true},
		{"stream exists on a missing stream", "wev-none", eventstore.StreamExists, false},
		{"exact on a missing stream", "wev-none", eventstore.Exact(0), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := b.store.Append(t.Context(), tc.stream, tc.expected, event("c"))
			var wev *eventstore.WrongExpectedVersionError
			require.ErrorAs(t, err, &wev)
			require.ErrorIs(t, err, eventstore.ErrWrongExpectedVersion)
			require.Equal(t, tc.stream, wev.Stream)
			require.Equal(t, tc.expected, wev.Expected)
			require.Equal(t, tc.exists, wev.ActualExists)
			if tc.exists {
				require.Equal(t, uint64(1), wev.Actual)
			}
		})
	}
}

func TestParseActualRevision(t *testing.T) {
	t.Parallel()
	cases := []struct {
		msg  string
		rev  uint64
		okay bool
	}{
		{"wrong expected version: expecting '0' but got '3'", 3, true},
		{"wrong expected version: expecting 'no_stream' but got '18446744073709551614'", 18446744073709551614, true},
		{"wrong expected version: expecting 'stream_exists' but got 'no_stream'", 0, false},
		{"wrong expected version: expecting '5' but got '-2'", 0, false},
		{"something else", 0, false},
		{"expecting 'but got '7'' but got '9'", 9, true},
	}
	for _, c := range cases {
		rev, ok := parseActualRevision(c.msg)
		require.Equal(t, c.okay, ok, c.msg)
		require.Equal(t, c.rev, rev, c.msg)
	}
}

func FuzzParseActualRevision(f *testing.F) {
	f.Add("12")
	f.Add("no_stream")
	f.Add("")
	f.Add("7' but got '8")
	f.Fuzz(func(t *testing.T, current string) {
		msg := fmt.Sprintf("wrong expected version: expecting '1' but got '%s'", current)
		rev, ok := parseActualRevision(msg)
		if want, err := strconv.ParseUint(current, 10, 64); err == nil {
			require.True(t, ok, msg)
			require.Equal(t, want, rev, "a revision reads back as the number sent")
			return
		}
		if !ok {
			require.Zero(t, rev)
		}
	})
}

func FuzzBuildEvents(f *testing.F) {
	f.Add("s-1", "0190c6a0-0000-7000-8000-000000000000", "t.v1", []byte(`{"a":1}`), []byte(nil))
	f.Add("$s", "not-a-uuid", "", []byte(`{`), []byte(`[]`))
	f.Fuzz(func(t *testing.T, stream, id, typ string, data, meta []byte) {
		out, err := buildEvents(stream, []eventstore.EventData{{ID: id, Type: typ, Data: data, Metadata: meta}})
		if err != nil {
			require.ErrorIs(t, err, eventstore.ErrInvalidAppend)
			return
		}
		require.Len(t, out, 1)
		require.Equal(t, strings.ToLower(id), out[0].EventID.String())
		require.Equal(t, esdb.ContentTypeJson, out[0].ContentType)
		require.True(t, json.Valid(out[0].Data) && json.Valid(out[0].Metadata))
		require.False(t, strings.HasPrefix(stream, "$") || strings.HasPrefix(typ, "$"))
	})
}

func TestIdempotentAppendWithoutServerPosition(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.srv.idempotentNoPosition.Store(true)
	e1, e2 := event("a"), event("b")
	first := mustAppend(t, b.store, "idem-1", eventstore.NoStream, e1, e2)
	for _, exp := range []eventstore.Expected{eventstore.NoStream, eventstore.Any} {
		again := mustAppend(t, b.store, "idem-1", exp, e1, e2)
		require.Equal(t, first, again, "the position is read back when the server gives none (%s)", exp)
	}
}

func TestSubscriptionSplitsTheFilter(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name         string
		filter       eventstore.Filter
		serverType   string // "stream" or "event_type"
		serverExpr   string // prefixes joined by "|", or the regex
		want         []int  // indexes of the matching appends below
		sentinelType string // a type the filter passes in stream a-sentinel
	}{
		{"stream prefixes on the server, types here",
			eventstore.Filter{StreamPrefixes: []string{"a-"}, TypePrefixes: []string{"t.del"}}, "stream", "a-", []int{1}, "t.deleted"},
		{"type prefixes on the server",
			eventstore.Filter{TypePrefixes: []string{"t.cre", "t.up"}}, "event_type", "t.cre|t.up", []int{0, 2, 3}, "t.created"},
		{"no filter: the server excludes system types",
			eventstore.Filter{}, "event_type", `^[^\$].*`, []int{0, 1, 2, 3}, "t.other"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, Options{})
			requests := b.srv.watchSubscriptions(4)
			start := mustAppend(t, b.store, "marker", eventstore.NoStream, event("marker")).Position
			sub, err := b.store.Subscribe(t.Context(), start, tc.filter)
			require.NoError(t, err)
			var opts *apiOptions
			select {
			case opts = <-requests:
			case <-time.After(waitTimeout):
				t.Fatal("no subscription reached the server")
			}
			fo := opts.GetFilter()
			require.NotNil(t, fo, "a server-side filter")
			expr, kind := fo.GetStreamIdentifier(), "stream"
			if expr == nil {
				expr, kind = fo.GetEventType(), "event_type"
			}
			require.Equal(t, tc.serverType, kind)
			sent := expr.GetRegex()
			if sent == "" {
				sent = strings.Join(expr.GetPrefix(), "|")
			}
			require.Equal(t, tc.serverExpr, sent)
			require.Equal(t, uint32(searchWindow), fo.GetMax())
			require.Equal(t, uint32(checkpointMultiplier), fo.GetCheckpointIntervalMultiplier())

			appends := []struct{ stream, typ string }{{"a-1", "t.created"}, {"a-1", "t.deleted"}, {"b-1", "t.created"}, {"b-1", "t.updated"}}
			var want []string
			for i, a := range appends {
				e := event(a.typ)
				mustAppend(t, b.store, a.stream, eventstore.Any, e)
				if slices.Contains(tc.want, i) {
					want = append(want, e.ID)
				}
			}
			sentinel := event(tc.sentinelType)
			mustAppend(t, b.store, "a-sentinel", eventstore.Any, sentinel)
			var got []string
			for e := nextEvent(t, sub); e.ID != sentinel.ID; e = nextEvent(t, sub) {
				got = append(got, e.ID)
			}
			require.Equal(t, want, got)
		})
	}
}

func TestSubscriptionTurnsServerCheckpointsIntoMessages(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ctx := t.Context()
	start := mustAppend(t, b.store, "cp-match", eventstore.NoStream, event("match")).Position
	filter := eventstore.Filter{StreamPrefixes: []string{"cp-match"}}

	// Caught up: the server sends a checkpoint when it goes live.
	var before eventstore.Position
	for range 5 {
		before = mustAppend(t, b.store, "cp-skip", eventstore.Any, event("skip")).Position
	}
	sub, err := b.store.Subscribe(ctx, start, filter)
	require.NoError(t, err)
	m := nextMessage(t, sub)
	require.Nil(t, m.Event)
	require.Equal(t, before, m.Checkpoint, "the catch-up checkpoint covers the skipped events")

	// Live: a checkpoint after every 32 events considered.
	var positions []eventstore.Position
	for range 3 * searchWindow {
		positions = append(positions, mustAppend(t, b.store, "cp-skip", eventstore.Any, event("skip")).Position)
	}
	var got []eventstore.Position
	for len(got) < 3 {
		m := nextMessage(t, sub)
		require.Nil(t, m.Event, "only skipped events were appended")
		got = append(got, m.Checkpoint)
	}
	require.Equal(t, []eventstore.Position{positions[searchWindow-1], positions[2*searchWindow-1], positions[3*searchWindow-1]}, got)

	match := event("match")
	mustAppend(t, b.store, "cp-match", eventstore.Any, match)
	require.Equal(t, match.ID, nextEvent(t, sub).ID)
}

func TestSkippedEventsAreReported(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ctx := t.Context()
	start := mustAppend(t, b.store, "skip-marker", eventstore.NoStream, event("marker")).Position
	// The server filters on the stream; the type is filtered here.
	filter := eventstore.Filter{StreamPrefixes: []string{"skip-"}, TypePrefixes: []string{"wanted"}}
	var last eventstore.Position
	for range skippedCheckpointEvery {
		last = mustAppend(t, b.store, "skip-1", eventstore.Any, event("unwanted")).Position
	}
	sub, err := b.store.Subscribe(ctx, start, filter)
	require.NoError(t, err)
	for {
		m := nextMessage(t, sub)
		require.Nil(t, m.Event)
		if m.Checkpoint == last {
			break
		}
		require.True(t, m.Checkpoint.Less(last), "checkpoint %s passed %s", m.Checkpoint, last)
	}
	wanted := event("wanted")
	mustAppend(t, b.store, "skip-1", eventstore.Any, wanted)
	require.Equal(t, wanted.ID, nextEvent(t, sub).ID)
}

func TestCloseEndsEverything(t *testing.T) {
	t.Parallel()
	srv := startTestServer(t)
	s, err := Open(t.Context(), Options{URL: srv.URL(), Logger: testLogger(t)})
	require.NoError(t, err)
	require.NoError(t, s.Ping(t.Context()))
	sub, err := s.Subscribe(context.Background(), eventstore.Start, eventstore.Filter{})
	require.NoError(t, err)
	s.Close()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for open := true; open; {
		select {
		case m, ok := <-sub.Messages():
			require.Nil(t, m.Event, "the log holds no user events")
			open = ok
		case <-timer.C:
			t.Fatal("subscription still open after Close")
		}
	}
	require.ErrorIs(t, sub.Err(), ErrClosed)
	_, err = s.Subscribe(context.Background(), eventstore.Start, eventstore.Filter{})
	require.ErrorIs(t, err, ErrClosed)
	_, err = s.Append(t.Context(), "closed-1", eventstore.Any, event("x"))
	require.ErrorIs(t, err, ErrClosed)
	_, err = s.ReadStream(t.Context(), "closed-1", 0, 1)
	require.ErrorIs(t, err, ErrClosed)
	_, _, err = s.ReadAll(t.Context(), eventstore.Start, 1, eventstore.Filter{})
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, s.Ping(t.Context()), ErrClosed)
	s.Close() // idempotent
	requireClientsClosed(t, s)
}

func TestEveryReadHasADeadline(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	b := setup(t, Options{ReadTimeout: timeout})
	ctx := t.Context()
	start := mustAppend(t, b.store, "dl-1", eventstore.NoStream, event("a")).Position
	b.srv.stall.Store(true)

	reads := map[string]func() error{
		"ReadStream": func() error { _, err := b.store.ReadStream(ctx, "dl-1", 0, 10); return err },
		"ReadAll":    func() error { _, _, err := b.store.ReadAll(ctx, eventstore.Start, 10, eventstore.Filter{}); return err },
	}
	for name, read := range reads {
		began := time.Now()
		err := read()
		require.ErrorIs(t, err, context.DeadlineExceeded, name)
		require.ErrorContains(t, err, "read timeout", name)
		require.Less(t, time.Since(began), waitTimeout, "%s returned after its deadline", name)
	}

	// A subscription that gets no confirmation gives up after the read
	// timeout and subscribes again; once the server answers it delivers.
	requests := b.srv.watchSubscriptions(8)
	sub, err := b.store.Subscribe(ctx, start, eventstore.Filter{StreamPrefixes: []string{"dl-"}})
	require.NoError(t, err)
	for i := range 2 { // the second request: the first one timed out
		select {
		case <-requests:
		case <-time.After(waitTimeout):
			t.Fatalf("subscription request %d did not come", i+1)
		}
	}
	b.srv.stall.Store(false)
	e := event("b")
	mustAppend(t, b.store, "dl-1", eventstore.Exact(0), e)
	require.Equal(t, e.ID, nextEvent(t, sub).ID)
}

func TestReadsEndWithTheirContext(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{ReadTimeout: time.Hour})
	b.srv.stall.Store(true)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err := b.store.ReadStream(ctx, "ctx-1", 0, 10)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotContains(t, err.Error(), "read timeout", "the caller's deadline, not the store's")

	cctx, ccancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, _, err := b.store.ReadAll(cctx, eventstore.Start, 10, eventstore.Filter{})
		done <- err
	}()
	ccancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(waitTimeout):
		t.Fatal("ReadAll did not end with its context")
	}
}

func TestTelemetryStreamsGetMaxAge(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{TelemetryMaxAge: 89*time.Minute + 30*time.Second}) // rounds up to whole seconds
	ctx := t.Context()
	telemetry := worker.TelemetryStream(uuid.NewString())
	mustAppend(t, b.store, telemetry, eventstore.NoStream, event("worker.metrics_sampled.v1"))
	mustAppend(t, b.store, telemetry, eventstore.Exact(0), event("worker.metrics_sampled.v1"))
	meta := b.srv.log.stream("$$" + telemetry)
	require.Len(t, meta, 1, "written once, before the first append")
	require.Equal(t, "$metadata", meta[0].eventType)
	require.Equal(t, "application/json", meta[0].contentType)
	require.JSONEq(t, `{"$maxAge": 5370}`, string(meta[0].data))
	require.Less(t, meta[0].pos, b.srv.log.stream(telemetry)[0].pos, "the metadata precedes the first event")

	lifecycle := worker.Stream(uuid.NewString())
	mustAppend(t, b.store, lifecycle, eventstore.NoStream, event("worker.created.v1"))
	require.Empty(t, b.srv.log.stream("$$"+lifecycle), "lifecycle streams are kept forever")

	// Another process with another retention keeps the other properties.
	raw := rawClient(t, b.srv)
	other := worker.TelemetryStream(uuid.NewString())
	_, err := raw.AppendToStream(ctx, "$$"+other, esdb.AppendToStreamOptions{ExpectedRevision: esdb.NoStream{}}, esdb.EventData{
		EventType: "$metadata", ContentType: esdb.ContentTypeJson, Data: []byte(`{"$maxAge": 60, "$maxCount": 1000, "owner": "ops"}`)})
	require.NoError(t, err)
	mustAppend(t, b.store, other, eventstore.Any, event("worker.metrics_sampled.v1"))
	meta = b.srv.log.stream("$$" + other)
	require.Len(t, meta, 2)
	require.JSONEq(t, `{"$maxAge": 5370, "$maxCount": 1000, "owner": "ops"}`, string(meta[1].data))

	// Without a retention nothing is written.
	plain := openStore(t, b.srv.URL(), Options{})
	third := worker.TelemetryStream(uuid.NewString())
	mustAppend(t, plain, third, eventstore.NoStream, event("worker.metrics_sampled.v1"))
	require.Empty(t, b.srv.log.stream("$$"+third))
}

func TestTelemetryExpiresOnTheServer(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{TelemetryMaxAge: time.Second})
	telemetry := worker.TelemetryStream(uuid.NewString())
	mustAppend(t, b.store, telemetry, eventstore.NoStream, event("worker.metrics_sampled.v1"))
	got, err := b.store.ReadStream(t.Context(), telemetry, 0, 10)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Eventually(t, func() bool {
		got, err := b.store.ReadStream(t.Context(), telemetry, 0, 10)
		return err == nil && len(got) == 0
	}, waitTimeout, 50*time.Millisecond, "the server hides events older than $maxAge")
}

// TestOutageWithSubscription: the node is down long enough for the calls to
// fail; the client keeps discovering it (the store lifts the client's limit
// of attempts), and once the node is back the subscription resumes and
// appends work, without a stranded call left behind (goleak checks).
func TestOutageWithSubscription(t *testing.T) {
	t.Parallel()
	srv := startTestServer(t)
	s := openStore(t, srv.URL(), Options{ReadTimeout: 500 * time.Millisecond})
	ctx := t.Context()
	start := mustAppend(t, s, "outage-1", eventstore.NoStream, event("a")).Position
	sub, err := s.Subscribe(ctx, start, eventstore.Filter{StreamPrefixes: []string{"outage-"}})
	require.NoError(t, err)

	srv.stop()
	// The first call fails on the broken connection, which retires the
	// client; the next ones wait for the node within their deadline.
	_, err = s.ReadStream(ctx, "outage-1", 0, 10)
	require.Error(t, err)
	_, err = s.ReadStream(ctx, "outage-1", 0, 10)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Error(t, s.Ping(ctx), "not ready while the node is down")
	srv.start(t)

	var e eventstore.EventData
	require.Eventually(t, func() bool {
		e = event("b")
		_, err := s.Append(ctx, "outage-2", eventstore.Any, e)
		return err == nil
	}, waitTimeout, 20*time.Millisecond, "appends work again once the node is back")
	require.Equal(t, e.ID, nextEvent(t, sub).ID, "the subscription resumed")
	require.NoError(t, s.Ping(ctx))
}

// TestClientThatGaveUpIsReplaced: with a limit of discovery attempts in the
// URL, the client gives up while the node is down and fails every later
// call; the store replaces it.
func TestClientThatGaveUpIsReplaced(t *testing.T) {
	t.Parallel()
	srv := startTestServer(t)
	s := openStore(t, srv.URL()+"&maxDiscoverAttempts=2&discoveryInterval=20", Options{})
	ctx := t.Context()
	mustAppend(t, s, "gaveup-1", eventstore.NoStream, event("a"))

	srv.stop()
	for range 3 { // the broken connection, then failed discoveries
		_, err := s.ReadStream(ctx, "gaveup-1", 0, 10)
		require.Error(t, err)
		t.Logf("while the node is down: %v", err)
	}
	s.mu.Lock()
	replaced := s.gen.n
	s.mu.Unlock()
	require.GreaterOrEqual(t, replaced, 2, "the client was replaced after each failure")
	srv.start(t)

	require.Eventually(t, func() bool {
		got, err := s.ReadStream(ctx, "gaveup-1", 0, 10)
		return err == nil && len(got) == 1
	}, waitTimeout, 20*time.Millisecond, "reads work again once the node is back")
}

func TestOpenChecksItsOptions(t *testing.T) {
	t.Parallel()
	srv := startTestServer(t)
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"no URL", Options{}, "esdb://"},
		{"not an esdb URL", Options{URL: "http://127.0.0.1:2113"}, "esdb://"},
		{"negative read timeout", Options{URL: srv.URL(), ReadTimeout: -time.Second}, "read timeout"},
		{"negative max age", Options{URL: srv.URL(), TelemetryMaxAge: -time.Second}, "max age"},
		{"nobody answers", Options{URL: "esdb://admin:s3cret@127.0.0.1:1?tls=false&maxDiscoverAttempts=1"}, "127.0.0.1:1"},
		{"invalid setting", Options{URL: "esdb://admin:s3cret@127.0.0.1:1?tls=maybe"}, "not a valid connection string"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.opts.Logger = testLogger(t)
			s, err := Open(t.Context(), tc.opts)
			require.Nil(t, s)
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "s3cret", "credentials stay out of errors")
		})
	}
}

func TestOpenAcceptsKurrentDBSchemes(t *testing.T) {
	t.Parallel()
	srv := startTestServer(t)
	s := openStore(t, "kurrentdb://"+srv.addr+"?tls=false", Options{})
	mustAppend(t, s, "kurrent-1", eventstore.NoStream, event("a"))
	for _, tc := range []struct{ in, out string }{
		{"esdb://h:2113", "esdb://h:2113"},
		{"esdb+discover://h:2113", "esdb+discover://h:2113"},
		{"kurrentdb://u:p@h:2113,g:2113?tls=true", "esdb://u:p@h:2113,g:2113?tls=true"},
		{"kurrentdb+discover://h:2113", "esdb+discover://h:2113"},
	} {
		got, ok := clientURL(tc.in)
		require.True(t, ok, tc.in)
		require.Equal(t, tc.out, got)
	}
	_, ok := clientURL("postgres://h/db")
	require.False(t, ok)
}

func TestReadAllConsidersABoundedWindow(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.store.readWindow = 50
	ctx := t.Context()
	start := mustAppend(t, b.store, "win-marker", eventstore.NoStream, event("marker")).Position
	batch := make([]eventstore.EventData, 120)
	for i := range batch {
		batch[i] = event("noise")
	}
	mustAppend(t, b.store, "win-noise", eventstore.NoStream, batch...)
	match := event("match")
	last := mustAppend(t, b.store, "win-match", eventstore.NoStream, match).Position
	noise := b.srv.log.stream("win-noise")
	filter := eventstore.Filter{StreamPrefixes: []string{"win-match"}}

	evs, cp, err := b.store.ReadAll(ctx, start, 10, filter)
	require.NoError(t, err)
	require.Empty(t, evs)
	require.Equal(t, eventstore.Position{Commit: noise[49].pos, Prepare: noise[49].pos}, cp, "50 events considered")
	evs, cp, err = b.store.ReadAll(ctx, cp, 10, filter)
	require.NoError(t, err)
	require.Empty(t, evs)
	require.Equal(t, eventstore.Position{Commit: noise[99].pos, Prepare: noise[99].pos}, cp)
	evs, cp, err = b.store.ReadAll(ctx, cp, 10, filter)
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.Equal(t, match.ID, evs[0].ID)
	require.Equal(t, last, cp)

	// Pages: more events than one request asks for.
	b.store.readWindow = readAllWindow
	all, cp, err := b.store.ReadAll(ctx, start, readAllPage+10, eventstore.Filter{StreamPrefixes: []string{"win-"}})
	require.NoError(t, err)
	require.Len(t, all, 121)
	require.Equal(t, last, cp)
}

func TestClientLoggingGoesToSlog(t *testing.T) {
	t.Parallel()
	rec := &recordingHandler{}
	log := clientLogger(slogNew(rec))
	canceled := statusError(t, "canceled")
	unavailable := statusError(t, "unavailable")
	log("error", "subscription has dropped. Reason: %v", canceled)
	log("error", "subscription has dropped. Reason: %v", unavailable)
	log("warn", "received unknown message, skipping", []any{}) // applyLogger's un-spread arguments
	log("info", "discovery attempt %v/%v", []any{1, 10})
	log("debug", "trying candidate '%s'...", "127.0.0.1:2113")
	require.Equal(t, []string{
		"INFO eventstoredb client: subscription has dropped. Reason: " + canceled.Error(),
		"ERROR eventstoredb client: subscription has dropped. Reason: " + unavailable.Error(),
		"WARN eventstoredb client: received unknown message, skipping",
		"INFO eventstoredb client: discovery attempt 1/10",
		"DEBUG eventstoredb client: trying candidate '127.0.0.1:2113'...",
	}, rec.lines())
	require.True(t, cancelled([]any{fmt.Errorf("wrapped: %w", context.Canceled)}))
	require.False(t, cancelled([]any{errors.New("boom"), "text"}))
}
