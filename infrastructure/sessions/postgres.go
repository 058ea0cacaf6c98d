package sessions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres keeps sessions, login states and attempt counters in the tables
// of migrations/00004_sessions.sql. Expired rows are deleted when they are
// read; Sweep deletes the rest and should run periodically.
type Postgres struct {
	pool *pgxpool.Pool
	now  func() time.Time
}

var (
	_ Store   = (*Postgres)(nil)
	_ Counter = (*Postgres)(nil)
)

// NewPostgres returns a store on pool, whose database must be migrated.
func NewPostgres(pool *pgxpool.Pool, opts Options) *Postgres {
	return &Postgres{pool: pool, now: opts.clock()}
}

const sessionColumns = `subject, username, method, identity, csrf_token, tokens, tokens_expire_at,
	idle_timeout_ms, created_at, expires_at, max_expires_at, version`

// scanSession reads one row of sessionColumns.
func scanSession(row pgx.Row) (Session, error) {
	var (
		s         Session
		ident     []byte
		tokensExp *time.Time
		idleMS    int64
	)
	err := row.Scan(&s.Subject, &s.Username, &s.Method, &ident, &s.CSRFToken, &s.Tokens, &tokensExp,
		&idleMS, &s.CreatedAt, &s.ExpiresAt, &s.MaxExpiresAt, &s.Version)
	if errors.Is(err, pgx.ErrNoRows) {
		return Session{}, ErrNotFound
	}
	if err != nil {
		return Session{}, err
	}
	var id identity
	if err := json.Unmarshal(ident, &id); err != nil {
		return Session{}, fmt.Errorf("decode session identity: %w", err)
	}
	id.applyTo(&s)
	if tokensExp != nil {
		s.TokensExpireAt = *tokensExp
	}
	s.IdleTimeout = time.Duration(idleMS) * time.Millisecond
	return s, nil
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Create implements Store.
func (p *Postgres) Create(ctx context.Context, s Session) (string, Session, error) {
	s, err := prepare(s, p.now())
	if err != nil {
		return "", Session{}, err
	}
	ident, err := json.Marshal(identityOf(s))
	if err != nil {
		return "", Session{}, fmt.Errorf("encode session identity: %w", err)
	}
	id := NewID()
	row := p.pool.QueryRow(ctx, `INSERT INTO sessions (id_hash, subject, username, method, identity, csrf_token,
		tokens, tokens_expire_at, idle_timeout_ms, created_at, expires_at, max_expires_at, version)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
		RETURNING `+sessionColumns,
		hashKey(id), s.Subject, s.Username, s.Method, ident, s.CSRFToken,
		s.Tokens, nullTime(s.TokensExpireAt), s.IdleTimeout.Milliseconds(), s.CreatedAt, s.ExpiresAt, s.MaxExpiresAt, s.Version)
	stored, err := scanSession(row)
	if err != nil {
		return "", Session{}, fmt.Errorf("create session: %w", err)
	}
	return id, stored, nil
}

// Get implements Store.
func (p *Postgres) Get(ctx context.Context, id string) (Session, error) {
	if !ValidID(id) {
		return Session{}, ErrNotFound
	}
	s, err := scanSession(p.pool.QueryRow(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id_hash = $1`, hashKey(id)))
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Session{}, ErrNotFound
		}
		return Session{}, fmt.Errorf("get session: %w", err)
	}
	now := p.now()
	if s.expired(now) {
		return Session{}, p.deleteExpired(ctx, id, now)
	}
	return s, nil
}

// deleteExpired removes the session if it has expired at now and returns
// ErrNotFound (or the error of the delete).
func (p *Postgres) deleteExpired(ctx context.Context, id string, now time.Time) error {
	_, err := p.pool.Exec(ctx, `DELETE FROM sessions WHERE id_hash = $1 AND (expires_at <= $2 OR max_expires_at <= $2)`,
		hashKey(id), now)
	if err != nil {
		return fmt.Errorf("delete expired session: %w", err)
	}
	return ErrNotFound
}

// Touch implements Store.
func (p *Postgres) Touch(ctx context.Context, id string) (Session, error) {
	if !ValidID(id) {
		return Session{}, ErrNotFound
	}
	now := p.now()
	s, err := scanSession(p.pool.QueryRow(ctx, `UPDATE sessions
		SET expires_at = GREATEST(expires_at, LEAST($2::timestamptz + idle_timeout_ms * interval '1 millisecond', max_expires_at))
		WHERE id_hash = $1 AND expires_at > $2 AND max_expires_at > $2
		RETURNING `+sessionColumns, hashKey(id), now))
	if errors.Is(err, ErrNotFound) {
		return Session{}, p.deleteExpired(ctx, id, now)
	}
	if err != nil {
		return Session{}, fmt.Errorf("touch session: %w", err)
	}
	return s, nil
}

// Update implements Store.
func (p *Postgres) Update(ctx context.Context, id string, s Session) (Session, error) {
	if !ValidID(id) {
		return Session{}, ErrNotFound
	}
	ident, err := json.Marshal(identityOf(s))
	if err != nil {
		return Session{}, fmt.Errorf("encode session identity: %w", err)
	}
	now := p.now()
	out, err := scanSession(p.pool.QueryRow(ctx, `UPDATE sessions
		SET subject = $3, username = $4, identity = $5, tokens = $6, tokens_expire_at = $7, version = version + 1
		WHERE id_hash = $1 AND version = $2 AND expires_at > $8 AND max_expires_at > $8
		RETURNING `+sessionColumns,
		hashKey(id), s.Version, s.Subject, s.Username, ident, s.Tokens, nullTime(s.TokensExpireAt), now))
	if err == nil {
		return out, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return Session{}, fmt.Errorf("update session: %w", err)
	}
	// Nothing matched: the session is gone, or another update came first.
	if _, err := p.Get(ctx, id); err != nil {
		return Session{}, err
	}
	return Session{}, ErrConflict
}

// Delete implements Store.
func (p *Postgres) Delete(ctx context.Context, id string) error {
	if !ValidID(id) {
		return nil
	}
	if _, err := p.pool.Exec(ctx, `DELETE FROM sessions WHERE id_hash = $1`, hashKey(id)); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

// PutLoginState implements Store.
func (p *Postgres) PutLoginState(ctx context.Context, key string, data []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return errors.New("sessions: a login state needs a positive ttl")
	}
	_, err := p.pool.Exec(ctx, `INSERT INTO login_states (key_hash, data, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (key_hash) DO UPDATE SET data = EXCLUDED.data, expires_at = EXCLUDED.expires_at`,
		hashKey(key), data, p.now().Add(ttl))
	if err != nil {
		return fmt.Errorf("put login state: %w", err)
	}
	return nil
}

// TakeLoginState implements Store.
func (p *Postgres) TakeLoginState(ctx context.Context, key string) ([]byte, error) {
	var (
		data      []byte
		expiresAt time.Time
	)
	err := p.pool.QueryRow(ctx, `DELETE FROM login_states WHERE key_hash = $1 RETURNING data, expires_at`, hashKey(key)).
		Scan(&data, &expiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("take login state: %w", err)
	}
	if !p.now().Before(expiresAt) {
		return nil, ErrNotFound
	}
	return data, nil
}

// CountAttempt implements Counter.
func (p *Postgres) CountAttempt(ctx context.Context, key string, window time.Duration) (int64, time.Time, error) {
	now := p.now()
	var (
		n       int64
		resetAt time.Time
	)
	err := p.pool.QueryRow(ctx, `INSERT INTO login_attempts AS a (key_hash, attempts, reset_at) VALUES ($1, 1, $3)
		ON CONFLICT (key_hash) DO UPDATE SET
			attempts = CASE WHEN a.reset_at <= $2 THEN 1 ELSE a.attempts + 1 END,
			reset_at = CASE WHEN a.reset_at <= $2 THEN $3 ELSE a.reset_at END
		RETURNING attempts, reset_at`, hashKey(key), now, now.Add(window)).Scan(&n, &resetAt)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("count attempt: %w", err)
	}
	return n, resetAt, nil
}

// ForgiveAttempt implements Counter.
func (p *Postgres) ForgiveAttempt(ctx context.Context, key string) error {
	_, err := p.pool.Exec(ctx, `UPDATE login_attempts SET attempts = attempts - 1
		WHERE key_hash = $1 AND attempts > 0 AND reset_at > $2`, hashKey(key), p.now())
	if err != nil {
		return fmt.Errorf("forgive attempt: %w", err)
	}
	return nil
}

// Sweep deletes every expired session, login state and closed attempt
// window, and returns how many rows it deleted. Schedule it periodically
// (every few minutes); reads already skip and delete what has expired.
func (p *Postgres) Sweep(ctx context.Context) (int64, error) {
	now := p.now()
	var total int64
	for _, q := range []string{
		`DELETE FROM sessions WHERE expires_at <= $1 OR max_expires_at <= $1`,
		`DELETE FROM login_states WHERE expires_at <= $1`,
		`DELETE FROM login_attempts WHERE reset_at <= $1`,
	} {
		tag, err := p.pool.Exec(ctx, q, now)
		if err != nil {
			return total, fmt.Errorf("sweep sessions: %w", err)
		}
		total += tag.RowsAffected()
	}
	return total, nil
}
