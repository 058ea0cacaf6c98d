package eventstore

import (
	"context"
	"sync"
)

// StartSubscription is the plumbing every store's Subscribe shares. It runs
// produce in a new goroutine and returns the Subscription produce feeds
// through out (a channel of capacity buffer). produce's context ends when
// ctx ends, or when closing (the store's own context) ends, with closedErr
// as the cause; produce must return then. Once it has returned, Err reports
// the context's cause, the channel is closed, and done runs (the store's
// WaitGroup.Done, say).
func StartSubscription(ctx, closing context.Context, closedErr error, buffer int, done func(),
	produce func(ctx context.Context, out chan<- Message)) Subscription {
	sub := &feed{ch: make(chan Message, buffer)}
	subCtx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(closing, func() { cancel(closedErr) })
	go func() {
		defer done()
		defer stop()
		produce(subCtx, sub.ch)
		cancel(nil)
		sub.mu.Lock()
		sub.err = context.Cause(subCtx)
		sub.mu.Unlock()
		close(sub.ch)
	}()
	return sub
}

// Send delivers m on out unless ctx ends first; it reports whether m was
// delivered.
func Send(ctx context.Context, out chan<- Message, m Message) bool {
	select {
	case out <- m:
		return true
	case <-ctx.Done():
		return false
	}
}

type feed struct {
	ch  chan Message
	mu  sync.Mutex
	err error
}

func (f *feed) Messages() <-chan Message { return f.ch }

func (f *feed) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
