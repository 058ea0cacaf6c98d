package sessions

import (
	"context"
	"time"
)

// Store keeps sessions and the pending state of OIDC logins. Every method is
// safe for concurrent use, also across processes sharing one backend.
// Implementations: *Postgres and *Redis.
type Store interface {
	// Create stores a new session under a new random id (NewID) and returns
	// the id, which only the caller's cookie keeps, and the stored session.
	// Create sets CreatedAt, ExpiresAt (now plus IdleTimeout, capped at
	// MaxExpiresAt) and Version (1).
	Create(ctx context.Context, s Session) (id string, stored Session, err error)
	// Get returns the session. An unknown, revoked or expired session is
	// ErrNotFound (an expired one is deleted on the way). Get does not slide
	// the idle expiry.
	Get(ctx context.Context, id string) (Session, error)
	// Touch slides the idle expiry to now plus the session's IdleTimeout,
	// never past MaxExpiresAt and never backwards, and returns the session.
	// ErrNotFound as for Get.
	Touch(ctx context.Context, id string) (Session, error)
	// Update replaces the identity (Subject, Username, Name, Email,
	// Department, Roles) and the tokens (Tokens, TokensExpireAt) of the
	// session when its version is still s.Version, and returns the session
	// with the next version. A stale version is ErrConflict; ErrNotFound as
	// for Get.
	Update(ctx context.Context, id string, s Session) (Session, error)
	// Delete revokes the session. Deleting an unknown session is not an
	// error.
	Delete(ctx context.Context, id string) error

	// PutLoginState keeps data under key for ttl.
	PutLoginState(ctx context.Context, key string, data []byte, ttl time.Duration) error
	// TakeLoginState returns and deletes the data under key, so that it can
	// be taken once only. Unknown or expired keys are ErrNotFound.
	TakeLoginState(ctx context.Context, key string) ([]byte, error)
}

// Options configure a store.
type Options struct {
	// Now is the clock; nil means time.Now. Tests move it forward to expire
	// sessions. The Redis store also sets key TTLs so that Redis drops what
	// has expired by then.
	Now func() time.Time
	// KeyPrefix starts every Redis key (default "cmlcm:"); the Postgres
	// store ignores it.
	KeyPrefix string
}

func (o Options) clock() func() time.Time {
	if o.Now != nil {
		return o.Now
	}
	return time.Now
}
