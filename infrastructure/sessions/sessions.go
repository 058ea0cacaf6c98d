// Package sessions keeps the server side of browser sign-ins, shared by every
// instance of the service: sessions with a sliding idle expiry and a maximum
// lifetime, the pending state of OIDC logins, and the login-attempt counters
// of the rate limiter. Postgres is the default backend (NewPostgres); Redis is
// the other (NewRedis). Both store only SHA-256 hashes of the session ids and
// login bindings they are given, never the values themselves.
package sessions

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"
)

// Errors of the stores.
var (
	// ErrNotFound means the session or login state does not exist, has
	// expired, or was revoked (or already taken).
	ErrNotFound = errors.New("sessions: not found")
	// ErrConflict means the session changed since it was read: Update was
	// given a stale Version.
	ErrConflict = errors.New("sessions: session changed concurrently")
)

// IDLength is the length of a session id: 32 random bytes (256 bits) in
// unpadded base64url.
var IDLength = base64.RawURLEncoding.EncodedLen(32)

// Session is one signed-in browser.
type Session struct {
	// Subject is the principal's stable id (the token's "sub").
	Subject string
	// Username is the login name ("preferred_username").
	Username string
	// Name and Email describe the person, for display.
	Name  string
	Email string
	// Department scopes what a manager sees.
	Department string
	// Roles are the external role names granted at sign-in (or at the last
	// token refresh).
	Roles []string
	// Method is how the session was opened ("local" or "oidc").
	Method string
	// CSRFToken must accompany the session's unsafe requests (or a
	// same-origin Origin header).
	CSRFToken string
	// Tokens are the identity provider's tokens, sealed by the caller; the
	// store keeps them as given. Empty for local sessions.
	Tokens string
	// TokensExpireAt is when the access token inside Tokens expires; zero
	// when there is none.
	TokensExpireAt time.Time
	// IdleTimeout is how far each activity pushes ExpiresAt.
	IdleTimeout time.Duration
	// CreatedAt is when the session was opened (set by Create).
	CreatedAt time.Time
	// ExpiresAt is the idle expiry: the session ends then unless it is
	// touched before. Never after MaxExpiresAt.
	ExpiresAt time.Time
	// MaxExpiresAt is the end of the session's maximum lifetime.
	MaxExpiresAt time.Time
	// Version counts the updates of the identity and tokens (1 after
	// Create); Update needs the current one.
	Version int64
}

// expired reports whether the session has ended at now.
func (s Session) expired(now time.Time) bool {
	return !now.Before(s.ExpiresAt) || !now.Before(s.MaxExpiresAt)
}

// slide returns the idle expiry that activity at now gives the session.
func (s Session) slide(now time.Time) time.Time {
	e := now.Add(s.IdleTimeout)
	if e.After(s.MaxExpiresAt) {
		return s.MaxExpiresAt
	}
	return e
}

// prepare validates a new session and fills in the fields Create owns.
func prepare(s Session, now time.Time) (Session, error) {
	switch {
	case s.Subject == "":
		return Session{}, errors.New("sessions: a session needs a subject")
	case s.IdleTimeout <= 0:
		return Session{}, errors.New("sessions: a session needs a positive idle timeout")
	case !s.MaxExpiresAt.After(now):
		return Session{}, errors.New("sessions: the maximum lifetime of a new session must end in the future")
	}
	s.CreatedAt = now
	s.ExpiresAt = s.slide(now)
	s.Version = 1
	return s, nil
}

// NewID returns a new random session id: 256 bits in unpadded base64url.
func NewID() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("sessions: no randomness: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// ValidID reports whether s has the shape of an id made by NewID. Stores
// answer ErrNotFound for any other value without looking it up.
func ValidID(s string) bool {
	if len(s) != IDLength {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && len(b) == 32
}

// hashKey is what the stores keep instead of a secret key.
func hashKey(key string) []byte {
	sum := sha256.Sum256([]byte(key))
	return sum[:]
}

// identity is the part of a session stored as one JSON document.
type identity struct {
	Name       string   `json:"name,omitempty"`
	Email      string   `json:"email,omitempty"`
	Department string   `json:"department,omitempty"`
	Roles      []string `json:"roles"`
}

func identityOf(s Session) identity {
	roles := s.Roles
	if roles == nil {
		roles = []string{}
	}
	return identity{Name: s.Name, Email: s.Email, Department: s.Department, Roles: roles}
}

func (id identity) applyTo(s *Session) {
	s.Name, s.Email, s.Department, s.Roles = id.Name, id.Email, id.Department, id.Roles
}
