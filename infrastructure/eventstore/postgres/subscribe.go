package postgres

import (
	"context"
	"log/slog"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

// subscriptionBatch is the number of events a subscription reads at a time.
const subscriptionBatch = 512

// subscriptionBuffer is the capacity of a subscription's channel.
const subscriptionBuffer = 256

// Subscribe delivers the settled events after from that match filter, first
// the stored ones and then live ones, and checkpoint-only messages when the
// filter skipped events. Database errors are logged and retried with backoff,
// resuming after the last delivered position. The subscription ends when ctx
// ends (Err is ctx's error) or the store is closed (Err is ErrClosed).
func (s *Store) Subscribe(ctx context.Context, from eventstore.Position, filter eventstore.Filter) (eventstore.Subscription, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	f := compileFilter(filter)
	s.wg.Add(1)
	return eventstore.StartSubscription(ctx, s.ctx, ErrClosed, subscriptionBuffer, s.wg.Done,
		func(ctx context.Context, out chan<- eventstore.Message) { s.runSubscription(ctx, out, from, f) }), nil
}

func (s *Store) runSubscription(ctx context.Context, out chan<- eventstore.Message, from eventstore.Position, f compiledFilter) {
	pos := min(from.Commit, 1<<63-1)
	var backoff time.Duration
	for {
		woken := s.wake.wait()
		res, err := s.read(ctx, pos, subscriptionBatch, f)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = nextBackoff(backoff)
			s.log.WarnContext(ctx, "event store subscription read failed; retrying",
				slog.Uint64("after_position", pos), slog.Duration("retry_in", backoff), slog.Any("error", err))
			if !sleepCtx(ctx, backoff) {
				return
			}
			continue
		}
		if backoff > 0 {
			s.log.InfoContext(ctx, "event store subscription resumed", slog.Uint64("after_position", pos))
			backoff = 0
		}
		for i := range res.events {
			e := &res.events[i]
			if !eventstore.Send(ctx, out, eventstore.Message{Event: e, Checkpoint: e.Position}) {
				return
			}
			pos = e.Position.Commit
		}
		if res.checkpoint > pos {
			cp := eventstore.Position{Commit: res.checkpoint, Prepare: res.checkpoint}
			if !eventstore.Send(ctx, out, eventstore.Message{Checkpoint: cp}) {
				return
			}
			pos = res.checkpoint
		}
		if res.more {
			continue
		}
		poll := time.NewTimer(s.poll)
		select {
		case <-woken:
		case <-poll.C:
		case <-ctx.Done():
		}
		poll.Stop()
		if ctx.Err() != nil {
			return
		}
	}
}
