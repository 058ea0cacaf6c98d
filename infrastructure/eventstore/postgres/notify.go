package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// notifyCoalesce is the pause after each pg_notify: appends during it share
// the next notification, so a burst costs one notification, not one per
// append, and other processes learn of new events within about this delay.
// NOTIFY is never sent inside an append: a notifying transaction takes a
// database-wide lock at commit, which would serialise all appends.
const notifyCoalesce = 10 * time.Millisecond

// notifySQL sends the notification in its own transaction, committed without
// waiting for the WAL flush (set_config(..., true) lasts until that commit):
// a notification needs no durability, and a flushing commit per burst costs
// the appends noticeably.
const notifySQL = `SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)`

// Reconnect backoff of the listener and retry backoff of subscriptions.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

func nextBackoff(d time.Duration) time.Duration {
	if d < minBackoff {
		return minBackoff
	}
	return min(2*d, maxBackoff)
}

// broadcaster wakes every goroutine waiting on the channel it handed out.
type broadcaster struct {
	mu sync.Mutex
	ch chan struct{}
}

// wait returns a channel closed by the next broadcast. Take it before reading
// so that a broadcast during the read is not missed.
func (b *broadcaster) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

// broadcast wakes all waiters; it never blocks.
func (b *broadcaster) broadcast() {
	b.mu.Lock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
	b.mu.Unlock()
}

// appended records a successful append: local subscribers wake at once, the
// notifier tells other processes.
func (s *Store) appended(pos uint64) {
	s.wake.broadcast()
	for {
		cur := s.lastAppended.Load()
		if pos <= cur || s.lastAppended.CompareAndSwap(cur, pos) {
			break
		}
	}
	select {
	case s.notifyReq <- struct{}{}:
	default: // a notification is already pending
	}
}

// runNotifier sends one pg_notify per burst of local appends, from the pool
// and in its own transaction. The payload is the highest position appended
// by this process (informational: receivers just read the log).
func (s *Store) runNotifier() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.notifyReq:
		}
		payload := strconv.FormatUint(s.lastAppended.Load(), 10)
		if _, err := s.pool.Exec(s.ctx, notifySQL, s.channel, payload); err != nil && s.ctx.Err() == nil {
			// Other processes fall back to polling until the next one.
			s.log.WarnContext(s.ctx, "event store notification failed", slog.Any("error", err))
		}
		if !sleepCtx(s.ctx, notifyCoalesce) {
			return
		}
	}
}

// listenerAppName names the LISTEN connection in pg_stat_activity.
const listenerAppName = "cmlcm-eventstore-listener"

// listen opens the dedicated LISTEN connection.
func (s *Store) listen(ctx context.Context) (*pgx.Conn, error) {
	cfg := s.pool.Config().ConnConfig // a copy
	params := make(map[string]string, len(cfg.RuntimeParams)+1)
	maps.Copy(params, cfg.RuntimeParams)
	params["application_name"] = listenerAppName
	cfg.RuntimeParams = params
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect listener: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		closeConn(conn)
		return nil, fmt.Errorf("listen on %s: %w", s.channel, err)
	}
	return conn, nil
}

// runListener wakes local subscribers on each notification. When the
// connection drops it reconnects with backoff and then wakes every
// subscriber, since notifications may have been missed meanwhile.
func (s *Store) runListener(conn *pgx.Conn) {
	defer s.wg.Done()
	defer func() {
		if conn != nil {
			closeConn(conn)
		}
	}()
	var backoff time.Duration
	for {
		if conn == nil {
			backoff = nextBackoff(backoff)
			if !sleepCtx(s.ctx, backoff) {
				return
			}
			c, err := s.listen(s.ctx)
			if err != nil {
				if s.ctx.Err() != nil {
					return
				}
				s.log.WarnContext(s.ctx, "event store listener cannot reconnect", slog.Any("error", err), slog.Duration("retry_in", nextBackoff(backoff)))
				continue
			}
			conn, backoff = c, 0
			s.log.InfoContext(s.ctx, "event store listener reconnected")
			s.wake.broadcast()
		}
		_, err := conn.WaitForNotification(s.ctx)
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			s.log.WarnContext(s.ctx, "event store listener lost its connection", slog.Any("error", err))
			closeConn(conn)
			conn = nil
			s.wake.broadcast() // subscribers fall back to reading now
			continue
		}
		s.wake.broadcast()
	}
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx) // closing a broken connection fails; nothing to do about it
}
