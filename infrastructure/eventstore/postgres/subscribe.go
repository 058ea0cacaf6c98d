package postgres

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

// subscriptionBatch is the number of events a subscription reads at a time.
const subscriptionBatch = 512

// subscriptionBuffer is the capacity of a subscription's channel.
const subscriptionBuffer = 256

type subscription struct {
	ch  chan eventstore.Message
	mu  sync.Mutex
	err error
}

func (s *subscription) Messages() <-chan eventstore.Message { return s.ch }

func (s *subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

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
	sub := &subscription{ch: make(chan eventstore.Message, subscriptionBuffer)}
	subCtx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(s.ctx, func() { cancel(ErrClosed) })
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer stop()
		s.runSubscription(subCtx, sub, from, compileFilter(filter))
		cancel(nil)
		sub.mu.Lock()
		sub.err = context.Cause(subCtx)
		sub.mu.Unlock()
		close(sub.ch)
	}()
	return sub, nil
}

func (s *Store) runSubscription(ctx context.Context, sub *subscription, from eventstore.Position, f compiledFilter) {
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
			if !send(ctx, sub.ch, eventstore.Message{Event: e, Checkpoint: e.Position}) {
				return
			}
			pos = e.Position.Commit
		}
		if res.checkpoint > pos {
			cp := eventstore.Position{Commit: res.checkpoint, Prepare: res.checkpoint}
			if !send(ctx, sub.ch, eventstore.Message{Checkpoint: cp}) {
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

func send(ctx context.Context, ch chan<- eventstore.Message, m eventstore.Message) bool {
	select {
	case ch <- m:
		return true
	case <-ctx.Done():
		return false
	}
}
