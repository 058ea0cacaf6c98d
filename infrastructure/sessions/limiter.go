package sessions

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultLimit is the default login rate limit: 10 attempts per 15 minutes
// for each user name and each client address.
var DefaultLimit = Limit{Attempts: 10, Window: 15 * time.Minute}

// Limit is a number of attempts allowed per fixed window. A window starts
// with its first attempt.
type Limit struct {
	Attempts int
	Window   time.Duration
}

// String formats the limit the way ParseLimit reads it ("10/15m0s").
func (l Limit) String() string { return strconv.Itoa(l.Attempts) + "/" + l.Window.String() }

// ParseLimit reads "N/duration", such as "10/15m": N attempts per window.
func ParseLimit(s string) (Limit, error) {
	n, d, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Limit{}, fmt.Errorf("rate limit %q: want attempts/window, such as 10/15m", s)
	}
	attempts, err := strconv.Atoi(strings.TrimSpace(n))
	if err != nil || attempts < 1 {
		return Limit{}, fmt.Errorf("rate limit %q: attempts must be a positive integer", s)
	}
	window, err := time.ParseDuration(strings.TrimSpace(d))
	if err != nil || window < time.Second {
		return Limit{}, fmt.Errorf("rate limit %q: window must be a duration of at least 1s", s)
	}
	return Limit{Attempts: attempts, Window: window}, nil
}

// Counter counts attempts per key in fixed windows, shared by every
// instance. *Postgres and *Redis implement it; keys are hashed before they
// are stored.
type Counter interface {
	// CountAttempt adds one attempt to key's current window (starting a
	// window of the given length when none is open) and returns the number
	// of attempts in the window and when the window ends.
	CountAttempt(ctx context.Context, key string, window time.Duration) (attempts int64, resetAt time.Time, err error)
	// ForgiveAttempt takes one attempt back from key's current window.
	ForgiveAttempt(ctx context.Context, key string) error
}

// Limiter limits password attempts per key (a user name, a client address)
// across all instances. An attempt is counted before the password is
// checked, so concurrent guesses cannot overrun the limit; a successful
// attempt is forgiven afterwards.
type Limiter struct {
	counter Counter
	limit   Limit
	now     func() time.Time
}

// NewLimiter returns a limiter that counts with counter. now is the clock
// used to compute Retry-After; nil means time.Now.
func NewLimiter(counter Counter, limit Limit, now func() time.Time) (*Limiter, error) {
	if counter == nil {
		return nil, errors.New("sessions: a limiter needs a counter")
	}
	if limit.Attempts < 1 || limit.Window <= 0 {
		return nil, fmt.Errorf("sessions: invalid rate limit %s", limit)
	}
	if now == nil {
		now = time.Now
	}
	return &Limiter{counter: counter, limit: limit, now: now}, nil
}

// Limit returns the configured limit.
func (l *Limiter) Limit() Limit { return l.limit }

// Attempt counts one attempt for every key. It returns zero when the attempt
// may proceed, or how long the caller must wait when any key has used up its
// window.
func (l *Limiter) Attempt(ctx context.Context, keys ...string) (time.Duration, error) {
	var wait time.Duration
	for _, k := range keys {
		n, resetAt, err := l.counter.CountAttempt(ctx, k, l.limit.Window)
		if err != nil {
			return 0, fmt.Errorf("count login attempt: %w", err)
		}
		if n > int64(l.limit.Attempts) {
			wait = max(wait, resetAt.Sub(l.now()), time.Second)
		}
	}
	return wait, nil
}

// Forgive takes back the attempt of every key, after it succeeded.
func (l *Limiter) Forgive(ctx context.Context, keys ...string) error {
	var errs []error
	for _, k := range keys {
		if err := l.counter.ForgiveAttempt(ctx, k); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("forgive login attempt: %w", err)
	}
	return nil
}
