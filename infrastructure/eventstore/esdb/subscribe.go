package esdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

const (
	// subscriptionBuffer is the capacity of a subscription's channel.
	subscriptionBuffer = 256
	// searchWindow and checkpointMultiplier ask the server for a checkpoint
	// after every checkpointMultiplier × searchWindow events it considered.
	searchWindow         = 32
	checkpointMultiplier = 1
	// skippedCheckpointEvery: after this many events filtered out here (not
	// by the server) in a row, a checkpoint-only message reports them.
	skippedCheckpointEvery = 32
	// Pauses before resubscribing after a drop: doubling from the first to
	// the second.
	resubscribeMin = 50 * time.Millisecond
	resubscribeMax = 5 * time.Second
)

// errNoConfirmation ends a subscription attempt whose confirmation did not
// arrive within the read timeout.
var errNoConfirmation = errors.New("no subscription confirmation within the read timeout")

// Subscribe delivers the events of $all after from (exclusive) that match
// filter, first the stored ones and then live ones, with checkpoint-only
// messages for the server's checkpoints (events its filter skipped). The
// server filters on the stream prefixes when there are any, otherwise on the
// type prefixes, otherwise it excludes system event types; the rest of the
// filter, and the exclusion of system streams, applies here. When the
// connection drops the subscription resubscribes from the last position it
// delivered. It ends when ctx ends (Err is ctx's error) or the store is
// closed (Err is ErrClosed).
func (s *Store) Subscribe(ctx context.Context, from eventstore.Position, filter eventstore.Filter) (eventstore.Subscription, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	f := newSubscriptionFilter(filter)
	s.subs.Add(1)
	return eventstore.StartSubscription(ctx, s.ctx, ErrClosed, subscriptionBuffer, s.subs.Done,
		func(ctx context.Context, out chan<- eventstore.Message) { s.runSubscription(ctx, out, from, f) }), nil
}

// subscriptionFilter is the port's filter split between the server and the
// adapter.
type subscriptionFilter struct {
	server *esdb.SubscriptionFilter
	local  eventstore.Filter // applied here, after the server's
}

func newSubscriptionFilter(f eventstore.Filter) subscriptionFilter {
	switch {
	case len(f.StreamPrefixes) > 0:
		return subscriptionFilter{
			server: &esdb.SubscriptionFilter{Type: esdb.StreamFilterType, Prefixes: f.StreamPrefixes},
			local:  eventstore.Filter{TypePrefixes: f.TypePrefixes},
		}
	case len(f.TypePrefixes) > 0:
		return subscriptionFilter{
			server: &esdb.SubscriptionFilter{Type: esdb.EventFilterType, Prefixes: f.TypePrefixes},
		}
	default:
		// A filter even so: the server then sends checkpoints.
		return subscriptionFilter{server: esdb.ExcludeSystemEventsFilter()}
	}
}

func (f subscriptionFilter) pass(stream, eventType string) bool {
	return !hidden(stream, eventType) && f.local.Matches(stream, eventType)
}

// runSubscription subscribes, and resubscribes after each drop, until ctx
// ends.
func (s *Store) runSubscription(ctx context.Context, out chan<- eventstore.Message, from eventstore.Position, f subscriptionFilter) {
	r := &subscriptionRun{store: s, ctx: ctx, out: out, filter: f, last: from}
	pause := resubscribeMin
	for {
		began := time.Now()
		delivered, err := r.session()
		if ctx.Err() != nil {
			return
		}
		if delivered || time.Since(began) >= time.Second {
			pause = resubscribeMin // it was working: retry at once
		}
		s.log.WarnContext(ctx, "eventstoredb: subscription dropped; resubscribing",
			slog.String("after", r.last.String()), slog.Duration("in", pause), slog.Any("error", err))
		timer := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		pause = min(2*pause, resubscribeMax)
	}
}

// subscriptionRun is the state of one Subscribe across its sessions.
type subscriptionRun struct {
	store  *Store
	ctx    context.Context
	out    chan<- eventstore.Message
	filter subscriptionFilter
	// last is the position of the last message delivered, or of the last
	// event filtered out here: a new session starts after it.
	last eventstore.Position
	// reported is the position of the last message delivered.
	reported eventstore.Position
	// skipped counts the events filtered out here since the last message.
	skipped int
}

// session runs one server subscription until it drops or ctx ends. It
// reports whether it delivered anything, and why it ended.
func (r *subscriptionRun) session() (delivered bool, err error) {
	ctx, cancel := context.WithCancelCause(r.ctx)
	defer cancel(nil)
	// The server must confirm within the read timeout.
	confirm := time.AfterFunc(r.store.readTimeout, func() { cancel(errNoConfirmation) })
	var sub *esdb.Subscription
	g, err := r.store.callOn(ctx, func(ctx context.Context, c *esdb.Client) error {
		var err error
		sub, err = c.SubscribeToAll(ctx, esdb.SubscribeToAllOptions{
			From:               allPosition(r.last),
			Filter:             r.filter.server,
			MaxSearchWindow:    searchWindow,
			CheckpointInterval: checkpointMultiplier,
		})
		return err
	})
	if !confirm.Stop() && err == nil {
		// Confirmed as the timer fired: the timer ended the stream anyway.
		_ = sub.Close()
		err = errNoConfirmation
	}
	if err != nil {
		return false, fmt.Errorf("subscribe to $all after %s: %w", r.last, err)
	}
	defer func() { _ = sub.Close() }()
	r.reported = r.last
	for {
		e := sub.Recv() // returns when the stream fails, ctx included
		switch {
		case e.EventAppeared != nil:
			ev := e.EventAppeared.OriginalEvent()
			if ev == nil {
				continue
			}
			pos := toPosition(ev.Position)
			if !r.last.Less(pos) {
				continue // at or before what was delivered already
			}
			r.last = pos
			if !r.filter.pass(ev.StreamID, ev.EventType) {
				r.skipped++
				if r.skipped >= skippedCheckpointEvery && !r.flushSkipped() {
					return delivered, r.ctx.Err()
				}
				continue
			}
			rec := toRecorded(ev)
			if !r.send(eventstore.Message{Event: &rec, Checkpoint: pos}) {
				return delivered, r.ctx.Err()
			}
			delivered = true
		case e.CheckPointReached != nil:
			pos := toPosition(*e.CheckPointReached)
			if !r.last.Less(pos) && !r.reported.Less(r.last) {
				continue // nothing new to report
			}
			r.last = maxPosition(r.last, pos)
			if !r.send(eventstore.Message{Checkpoint: r.last}) {
				return delivered, r.ctx.Err()
			}
			delivered = true
		case e.CaughtUp != nil:
			if r.skipped > 0 && !r.flushSkipped() {
				return delivered, r.ctx.Err()
			}
		case e.SubscriptionDropped != nil:
			if unavailable(e.SubscriptionDropped.Error) {
				// The connection broke: move every call off this client now,
				// before another one makes it reconnect (see retire).
				r.store.retire(g, e.SubscriptionDropped.Error)
			}
			return delivered, e.SubscriptionDropped.Error
		}
	}
}

// flushSkipped reports the events filtered out here with a checkpoint-only
// message.
func (r *subscriptionRun) flushSkipped() bool {
	return r.send(eventstore.Message{Checkpoint: r.last})
}

// send delivers m unless ctx ends first.
func (r *subscriptionRun) send(m eventstore.Message) bool {
	if !eventstore.Send(r.ctx, r.out, m) {
		return false
	}
	r.reported = m.Checkpoint
	r.skipped = 0
	return true
}

func maxPosition(a, b eventstore.Position) eventstore.Position {
	if a.Less(b) {
		return b
	}
	return a
}
