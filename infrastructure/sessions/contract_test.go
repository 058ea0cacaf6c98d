package sessions

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// clock is a settable test clock, safe for concurrent use.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock {
	return &clock{now: time.Now().Truncate(time.Millisecond)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// backend opens a store (which is also a Counter) on the given clock.
type backend func(t *testing.T, now func() time.Time) interface {
	Store
	Counter
}

const (
	testIdle = 30 * time.Minute
	testMax  = 2 * time.Hour
)

func newSession(now time.Time) Session {
	return Session{
		Subject:        "sub-1",
		Username:       "alice",
		Name:           "Alice Example",
		Email:          "alice@example.com",
		Department:     "eng",
		Roles:          []string{"manager", "auditor"},
		Method:         "oidc",
		CSRFToken:      "csrf-token",
		Tokens:         "v1:sealed",
		TokensExpireAt: now.Add(5 * time.Minute),
		IdleTimeout:    testIdle,
		MaxExpiresAt:   now.Add(testMax),
	}
}

// runStoreContract is the behaviour every Store and Counter must have.
func runStoreContract(t *testing.T, open backend) {
	t.Run("CreateAndGet", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		s := open(t, c.Now)
		in := newSession(c.Now())
		id, created, err := s.Create(t.Context(), in)
		require.NoError(t, err)
		require.True(t, ValidID(id), "id %q", id)
		require.Equal(t, int64(1), created.Version)
		require.WithinDuration(t, c.Now(), created.CreatedAt, time.Millisecond)
		require.WithinDuration(t, c.Now().Add(testIdle), created.ExpiresAt, time.Millisecond)

		got, err := s.Get(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, in.Subject, got.Subject)
		require.Equal(t, in.Username, got.Username)
		require.Equal(t, in.Name, got.Name)
		require.Equal(t, in.Email, got.Email)
		require.Equal(t, in.Department, got.Department)
		require.Equal(t, in.Roles, got.Roles)
		require.Equal(t, in.Method, got.Method)
		require.Equal(t, in.CSRFToken, got.CSRFToken)
		require.Equal(t, in.Tokens, got.Tokens)
		require.Equal(t, testIdle, got.IdleTimeout)
		require.WithinDuration(t, in.TokensExpireAt, got.TokensExpireAt, time.Millisecond)
		require.WithinDuration(t, in.MaxExpiresAt, got.MaxExpiresAt, time.Millisecond)
		require.WithinDuration(t, created.ExpiresAt, got.ExpiresAt, time.Millisecond)
		require.Equal(t, int64(1), got.Version)

		id2, _, err := s.Create(t.Context(), in)
		require.NoError(t, err)
		require.NotEqual(t, id, id2, "every session gets its own id")
	})

	t.Run("LocalSessionWithoutTokens", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		s := open(t, c.Now)
		in := newSession(c.Now())
		in.Method, in.Tokens, in.TokensExpireAt, in.Roles = "local", "", time.Time{}, nil
		id, _, err := s.Create(t.Context(), in)
		require.NoError(t, err)
		got, err := s.Get(t.Context(), id)
		require.NoError(t, err)
		require.Empty(t, got.Tokens)
		require.True(t, got.TokensExpireAt.IsZero())
		require.Empty(t, got.Roles)
	})

	t.Run("CreateRejectsInvalid", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		s := open(t, c.Now)
		for name, mutate := range map[string]func(*Session){
			"no subject":    func(s *Session) { s.Subject = "" },
			"no idle":       func(s *Session) { s.IdleTimeout = 0 },
			"max in past":   func(s *Session) { s.MaxExpiresAt = c.Now().Add(-time.Second) },
			"max right now": func(s *Session) { s.MaxExpiresAt = c.Now() },
		} {
			in := newSession(c.Now())
			mutate(&in)
			_, _, err := s.Create(t.Context(), in)
			require.Error(t, err, name)
		}
	})

	t.Run("UnknownAndMalformedIDs", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		s := open(t, c.Now)
		for _, id := range []string{"", "short", NewID(), NewID() + "x", "!" + NewID()[1:]} {
			_, err := s.Get(t.Context(), id)
			require.ErrorIs(t, err, ErrNotFound, "Get(%q)", id)
			_, err = s.Touch(t.Context(), id)
			require.ErrorIs(t, err, ErrNotFound, "Touch(%q)", id)
			_, err = s.Update(t.Context(), id, newSession(c.Now()))
			require.ErrorIs(t, err, ErrNotFound, "Update(%q)", id)
			require.NoError(t, s.Delete(t.Context(), id), "Delete(%q)", id)
		}
	})

	t.Run("SlidingIdleExpiry", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		s := open(t, c.Now)
		id, _, err := s.Create(t.Context(), newSession(c.Now()))
		require.NoError(t, err)

		c.Advance(testIdle - time.Minute)
		got, err := s.Get(t.Context(), id)
		require.NoError(t, err, "still inside the idle timeout")
		before := got.ExpiresAt

		c.Advance(30 * time.Second)
		got, err = s.Get(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, before.UnixMilli(), got.ExpiresAt.UnixMilli(), "Get must not slide the expiry")

		touched, err := s.Touch(t.Context(), id)
		require.NoError(t, err)
		require.WithinDuration(t, c.Now().Add(testIdle), touched.ExpiresAt, time.Millisecond)

		c.Advance(testIdle - time.Minute)
		_, err = s.Get(t.Context(), id)
		require.NoError(t, err, "the touch moved the idle expiry")

		c.Advance(2 * time.Minute)
		_, err = s.Get(t.Context(), id)
		require.ErrorIs(t, err, ErrNotFound, "idle for longer than the timeout")
		_, err = s.Touch(t.Context(), id)
		require.ErrorIs(t, err, ErrNotFound, "an expired session cannot be revived")
	})

	t.Run("ExpiresExactlyAtIdleTimeout", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		s := open(t, c.Now)
		id, _, err := s.Create(t.Context(), newSession(c.Now()))
		require.NoError(t, err)
		c.Advance(testIdle)
		_, err = s.Touch(t.Context(), id)
		require.ErrorIs(t, err, ErrNotFound)
	})

	t.Run("MaximumLifetime", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		s := open(t, c.Now)
		in := newSession(c.Now())
		id, _, err := s.Create(t.Context(), in)
		require.NoError(t, err)
		// Stay active: touch well within every idle period.
		for elapsed := time.Duration(0); elapsed < testMax-testIdle; elapsed += testIdle / 2 {
			c.Advance(testIdle / 2)
			got, err := s.Touch(t.Context(), id)
			require.NoError(t, err, "after %s", elapsed)
			require.False(t, got.ExpiresAt.After(got.MaxExpiresAt))
		}
		got, err := s.Touch(t.Context(), id)
		require.NoError(t, err)
		require.WithinDuration(t, in.MaxExpiresAt, got.ExpiresAt, time.Millisecond, "the idle expiry is capped at the maximum")

		c.Advance(in.MaxExpiresAt.Sub(c.Now()))
		_, err = s.Get(t.Context(), id)
		require.ErrorIs(t, err, ErrNotFound, "the maximum lifetime ends the session however active it is")
	})

	t.Run("Revocation", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		s := open(t, c.Now)
		id, created, err := s.Create(t.Context(), newSession(c.Now()))
		require.NoError(t, err)
		other, _, err := s.Create(t.Context(), newSession(c.Now()))
		require.NoError(t, err)

		require.NoError(t, s.Delete(t.Context(), id))
		_, err = s.Get(t.Context(), id)
		require.ErrorIs(t, err, ErrNotFound)
		_, err = s.Touch(t.Context(), id)
		require.ErrorIs(t, err, ErrNotFound)
		_, err = s.Update(t.Context(), id, created)
		require.ErrorIs(t, err, ErrNotFound)
		require.NoError(t, s.Delete(t.Context(), id), "deleting twice is fine")

		_, err = s.Get(t.Context(), other)
		require.NoError(t, err, "other sessions are untouched")
	})

	t.Run("UpdateWithVersion", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		s := open(t, c.Now)
		id, created, err := s.Create(t.Context(), newSession(c.Now()))
		require.NoError(t, err)

		c.Advance(time.Minute)
		next := created
		next.Roles = []string{"user"}
		next.Name = "Alice Renamed"
		next.Tokens = "v1:refreshed"
		next.TokensExpireAt = c.Now().Add(5 * time.Minute)
		next.CSRFToken = "ignored"
		updated, err := s.Update(t.Context(), id, next)
		require.NoError(t, err)
		require.Equal(t, int64(2), updated.Version)
		require.Equal(t, []string{"user"}, updated.Roles)
		require.Equal(t, "Alice Renamed", updated.Name)
		require.Equal(t, "v1:refreshed", updated.Tokens)
		require.WithinDuration(t, next.TokensExpireAt, updated.TokensExpireAt, time.Millisecond)
		require.Equal(t, created.CSRFToken, updated.CSRFToken, "Update leaves the CSRF token alone")
		require.Equal(t, created.ExpiresAt.UnixMilli(), updated.ExpiresAt.UnixMilli(), "Update does not slide")

		got, err := s.Get(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, updated.Version, got.Version)
		require.Equal(t, "v1:refreshed", got.Tokens)

		_, err = s.Update(t.Context(), id, next) // still version 1
		require.ErrorIs(t, err, ErrConflict)

		c.Advance(testIdle)
		_, err = s.Update(t.Context(), id, updated)
		require.ErrorIs(t, err, ErrNotFound, "an expired session cannot be updated")
	})

	t.Run("ConcurrentUpdatesOneWins", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		s := open(t, c.Now)
		id, created, err := s.Create(t.Context(), newSession(c.Now()))
		require.NoError(t, err)
		const n = 16
		var wins, conflicts atomic.Int32
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				next := created
				next.Tokens = "v1:writer-" + string(rune('a'+i))
				_, err := s.Update(context.Background(), id, next)
				switch {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, ErrConflict):
					conflicts.Add(1)
				default:
					t.Errorf("update: %v", err)
				}
			})
		}
		wg.Wait()
		require.Equal(t, int32(1), wins.Load(), "exactly one writer of version 1 wins")
		require.Equal(t, int32(n-1), conflicts.Load())
		got, err := s.Get(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, int64(2), got.Version)
	})

	t.Run("ConcurrentTouchGetDelete", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		s := open(t, c.Now)
		ids := make([]string, 8)
		for i := range ids {
			id, _, err := s.Create(t.Context(), newSession(c.Now()))
			require.NoError(t, err)
			ids[i] = id
		}
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				ctx := context.Background()
				for i := range 20 {
					id := ids[(w+i)%len(ids)]
					if _, err := s.Touch(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
						t.Errorf("touch: %v", err)
					}
					if _, err := s.Get(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
						t.Errorf("get: %v", err)
					}
					if w == 0 && i%5 == 4 {
						if err := s.Delete(ctx, id); err != nil {
							t.Errorf("delete: %v", err)
						}
					}
				}
				c.Advance(time.Second)
			})
		}
		wg.Wait()
		// Worker 0 deleted ids 4, 9→1, 14→6, 19→3; the others must remain.
		deleted := map[int]bool{4: true, 1: true, 6: true, 3: true}
		for i, id := range ids {
			_, err := s.Get(t.Context(), id)
			if deleted[i] {
				require.ErrorIs(t, err, ErrNotFound, "session %d was deleted", i)
			} else {
				require.NoError(t, err, "session %d", i)
			}
		}
	})

	t.Run("LoginStateTakenOnce", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		s := open(t, c.Now)
		key := NewID()
		data := []byte{0, 1, 2, 255, 'x'}
		require.NoError(t, s.PutLoginState(t.Context(), key, data, 10*time.Minute))
		_, err := s.TakeLoginState(t.Context(), NewID())
		require.ErrorIs(t, err, ErrNotFound, "another key")

		var got [][]byte
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				b, err := s.TakeLoginState(context.Background(), key)
				if errors.Is(err, ErrNotFound) {
					return
				}
				if err != nil {
					t.Errorf("take: %v", err)
					return
				}
				mu.Lock()
				got = append(got, b)
				mu.Unlock()
			})
		}
		wg.Wait()
		require.Len(t, got, 1, "exactly one concurrent taker gets the state")
		require.Equal(t, data, got[0])
	})

	t.Run("LoginStateExpires", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		s := open(t, c.Now)
		key := NewID()
		require.NoError(t, s.PutLoginState(t.Context(), key, []byte("state"), 10*time.Minute))
		c.Advance(10 * time.Minute)
		_, err := s.TakeLoginState(t.Context(), key)
		require.ErrorIs(t, err, ErrNotFound)
		require.Error(t, s.PutLoginState(t.Context(), key, []byte("x"), 0), "a ttl is required")
	})

	t.Run("AttemptWindows", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		s := open(t, c.Now)
		const window = 15 * time.Minute
		start := c.Now()
		for want := int64(1); want <= 3; want++ {
			n, reset, err := s.CountAttempt(t.Context(), "user:alice", window)
			require.NoError(t, err)
			require.Equal(t, want, n)
			require.WithinDuration(t, start.Add(window), reset, time.Millisecond, "the window starts with its first attempt")
			c.Advance(time.Minute)
		}
		n, _, err := s.CountAttempt(t.Context(), "user:bob", window)
		require.NoError(t, err)
		require.Equal(t, int64(1), n, "keys count separately")

		require.NoError(t, s.ForgiveAttempt(t.Context(), "user:alice"))
		n, _, err = s.CountAttempt(t.Context(), "user:alice", window)
		require.NoError(t, err)
		require.Equal(t, int64(3), n, "3 attempts, one forgiven, one more")

		require.NoError(t, s.ForgiveAttempt(t.Context(), "user:nobody"), "forgiving an unknown key is a no-op")

		c.Advance(window)
		n, reset, err := s.CountAttempt(t.Context(), "user:alice", window)
		require.NoError(t, err)
		require.Equal(t, int64(1), n, "a new window starts after the old one ends")
		require.WithinDuration(t, c.Now().Add(window), reset, time.Millisecond)
	})

	t.Run("ConcurrentAttemptsAreAllCounted", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		s := open(t, c.Now)
		const n = 20
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				if _, _, err := s.CountAttempt(context.Background(), "ip:192.0.2.1", time.Minute); err != nil {
					t.Errorf("count: %v", err)
				}
			})
		}
		wg.Wait()
		got, _, err := s.CountAttempt(t.Context(), "ip:192.0.2.1", time.Minute)
		require.NoError(t, err)
		require.Equal(t, int64(n+1), got)
	})
}
