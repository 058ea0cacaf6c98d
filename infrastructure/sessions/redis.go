package sessions

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis keeps sessions, login states and attempt counters in Redis. Each is
// a hash holding its own expiry (Unix milliseconds, from the store's clock)
// and a key TTL that matches it, so Redis drops what has ended; the scripts
// below make every read-modify-write atomic.
type Redis struct {
	client redis.UniversalClient
	prefix string
	now    func() time.Time
}

var (
	_ Store   = (*Redis)(nil)
	_ Counter = (*Redis)(nil)
)

// DefaultKeyPrefix starts every Redis key of the store.
const DefaultKeyPrefix = "cmlcm:"

// NewRedis returns a store on client.
func NewRedis(client redis.UniversalClient, opts Options) *Redis {
	prefix := opts.KeyPrefix
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	return &Redis{client: client, prefix: prefix, now: opts.clock()}
}

// Session hash fields.
const (
	fSubject   = "subject"
	fUsername  = "username"
	fMethod    = "method"
	fIdentity  = "identity"
	fCSRF      = "csrf"
	fTokens    = "tokens"
	fTokensExp = "tokens_exp"
	fIdle      = "idle"
	fCreated   = "created"
	fExpires   = "exp"
	fMax       = "max"
	fVersion   = "ver"
)

func (r *Redis) key(kind, secret string) string {
	return r.prefix + kind + ":" + hex.EncodeToString(hashKey(secret))
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fields reads a session hash, keeping the first error.
type fields struct {
	m   map[string]string
	err error
}

func (f *fields) int(name string) int64 {
	n, err := strconv.ParseInt(f.m[name], 10, 64)
	if err != nil && f.err == nil {
		f.err = fmt.Errorf("field %s: %w", name, err)
	}
	return n
}

// time reads Unix milliseconds; 0 is the zero time.
func (f *fields) time(name string) time.Time {
	if n := f.int(name); n != 0 {
		return time.UnixMilli(n)
	}
	return time.Time{}
}

// decodeSession reads the flat field/value list of HGETALL (as a script
// returns it: a list of strings).
func decodeSession(v any) (Session, error) {
	list, ok := v.([]any)
	if !ok || len(list)%2 != 0 {
		return Session{}, fmt.Errorf("decode session: unexpected reply %T", v)
	}
	f := fields{m: make(map[string]string, len(list)/2)}
	for i := 0; i < len(list); i += 2 {
		k, _ := list[i].(string)
		val, _ := list[i+1].(string)
		f.m[k] = val
	}
	s := Session{
		Subject:        f.m[fSubject],
		Username:       f.m[fUsername],
		Method:         f.m[fMethod],
		CSRFToken:      f.m[fCSRF],
		Tokens:         f.m[fTokens],
		TokensExpireAt: f.time(fTokensExp),
		IdleTimeout:    time.Duration(f.int(fIdle)) * time.Millisecond,
		CreatedAt:      f.time(fCreated),
		ExpiresAt:      f.time(fExpires),
		MaxExpiresAt:   f.time(fMax),
		Version:        f.int(fVersion),
	}
	if f.err != nil {
		return Session{}, fmt.Errorf("decode session: %w", f.err)
	}
	var id identity
	if err := json.Unmarshal([]byte(f.m[fIdentity]), &id); err != nil {
		return Session{}, fmt.Errorf("decode session identity: %w", err)
	}
	id.applyTo(&s)
	return s, nil
}

// Scripts. KEYS[1] is the session key and ARGV[1] the current time in ms.
// A session whose idle or maximum expiry has passed is deleted and reported
// missing (a nil reply).
var (
	// getScript returns the session.
	getScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'exp', 'max')
if not f[1] then return false end
local now = tonumber(ARGV[1])
if tonumber(f[1]) <= now or tonumber(f[2]) <= now then
  redis.call('DEL', KEYS[1])
  return false
end
return redis.call('HGETALL', KEYS[1])`)

	// touchScript slides the idle expiry and the key's TTL.
	touchScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'exp', 'max', 'idle')
if not f[1] then return false end
local now = tonumber(ARGV[1])
local exp, max, idle = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
if exp <= now or max <= now then
  redis.call('DEL', KEYS[1])
  return false
end
local e = math.max(exp, math.min(now + idle, max))
redis.call('HSET', KEYS[1], 'exp', string.format('%.0f', e))
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', e - now))
return redis.call('HGETALL', KEYS[1])`)

	// updateScript replaces identity and tokens when ARGV[2] is the current
	// version; a stale version is the error reply "CONFLICT".
	updateScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'exp', 'max', 'ver')
if not f[1] then return false end
local now = tonumber(ARGV[1])
if tonumber(f[1]) <= now or tonumber(f[2]) <= now then
  redis.call('DEL', KEYS[1])
  return false
end
if f[3] ~= ARGV[2] then return redis.error_reply('CONFLICT') end
redis.call('HSET', KEYS[1], 'subject', ARGV[3], 'username', ARGV[4], 'identity', ARGV[5],
  'tokens', ARGV[6], 'tokens_exp', ARGV[7], 'ver', string.format('%.0f', tonumber(f[3]) + 1))
return redis.call('HGETALL', KEYS[1])`)

	// countScript counts an attempt in the hash {n, reset}; ARGV[2] is the
	// window in ms. It returns the attempts and the window's end.
	countScript = redis.NewScript(`
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local f = redis.call('HMGET', KEYS[1], 'n', 'reset')
local n, reset = tonumber(f[1] or '0'), tonumber(f[2] or '0')
if reset <= now then
  n, reset = 0, now + window
end
n = n + 1
redis.call('HSET', KEYS[1], 'n', string.format('%.0f', n), 'reset', string.format('%.0f', reset))
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', reset - now))
return {n, reset}`)

	// forgiveScript takes an attempt back from an open window.
	forgiveScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'n', 'reset')
if f[1] and tonumber(f[1]) > 0 and tonumber(f[2]) > tonumber(ARGV[1]) then
  redis.call('HINCRBY', KEYS[1], 'n', -1)
end
return 0`)

	// takeScript returns and deletes a login state {data, exp} that has not
	// expired.
	takeScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'data', 'exp')
redis.call('DEL', KEYS[1])
if not f[1] or tonumber(f[2]) <= tonumber(ARGV[1]) then return false end
return f[1]`)
)

// runSession runs a script that answers a session or nil.
func (r *Redis) runSession(ctx context.Context, script *redis.Script, id string, args ...any) (Session, error) {
	if !ValidID(id) {
		return Session{}, ErrNotFound
	}
	v, err := script.Run(ctx, r.client, []string{r.key("session", id)}, append([]any{r.now().UnixMilli()}, args...)...).Result()
	if errors.Is(err, redis.Nil) {
		return Session{}, ErrNotFound
	}
	if err != nil {
		if strings.Contains(err.Error(), "CONFLICT") {
			return Session{}, ErrConflict
		}
		return Session{}, err
	}
	return decodeSession(v)
}

// Create implements Store.
func (r *Redis) Create(ctx context.Context, s Session) (string, Session, error) {
	now := r.now()
	s, err := prepare(s, now)
	if err != nil {
		return "", Session{}, err
	}
	ident, err := json.Marshal(identityOf(s))
	if err != nil {
		return "", Session{}, fmt.Errorf("encode session identity: %w", err)
	}
	id := NewID()
	key := r.key("session", id)
	// Redis keeps milliseconds; so does the session we return.
	s.CreatedAt, s.ExpiresAt, s.MaxExpiresAt = time.UnixMilli(ms(s.CreatedAt)), time.UnixMilli(ms(s.ExpiresAt)), time.UnixMilli(ms(s.MaxExpiresAt))
	if !s.TokensExpireAt.IsZero() {
		s.TokensExpireAt = time.UnixMilli(ms(s.TokensExpireAt))
	}
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key,
			fSubject, s.Subject, fUsername, s.Username, fMethod, s.Method, fIdentity, string(ident),
			fCSRF, s.CSRFToken, fTokens, s.Tokens, fTokensExp, ms(s.TokensExpireAt),
			fIdle, s.IdleTimeout.Milliseconds(), fCreated, ms(s.CreatedAt), fExpires, ms(s.ExpiresAt),
			fMax, ms(s.MaxExpiresAt), fVersion, s.Version)
		p.PExpire(ctx, key, s.ExpiresAt.Sub(now))
		return nil
	})
	if err != nil {
		return "", Session{}, fmt.Errorf("create session: %w", err)
	}
	return id, s, nil
}

// Get implements Store.
func (r *Redis) Get(ctx context.Context, id string) (Session, error) {
	s, err := r.runSession(ctx, getScript, id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Session{}, fmt.Errorf("get session: %w", err)
	}
	return s, err
}

// Touch implements Store.
func (r *Redis) Touch(ctx context.Context, id string) (Session, error) {
	s, err := r.runSession(ctx, touchScript, id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Session{}, fmt.Errorf("touch session: %w", err)
	}
	return s, err
}

// Update implements Store.
func (r *Redis) Update(ctx context.Context, id string, s Session) (Session, error) {
	ident, err := json.Marshal(identityOf(s))
	if err != nil {
		return Session{}, fmt.Errorf("encode session identity: %w", err)
	}
	out, err := r.runSession(ctx, updateScript, id,
		strconv.FormatInt(s.Version, 10), s.Subject, s.Username, string(ident), s.Tokens, ms(s.TokensExpireAt))
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrConflict) {
		return Session{}, fmt.Errorf("update session: %w", err)
	}
	return out, err
}

// Delete implements Store.
func (r *Redis) Delete(ctx context.Context, id string) error {
	if !ValidID(id) {
		return nil
	}
	if err := r.client.Del(ctx, r.key("session", id)).Err(); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

// PutLoginState implements Store.
func (r *Redis) PutLoginState(ctx context.Context, key string, data []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return errors.New("sessions: a login state needs a positive ttl")
	}
	k := r.key("login", key)
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, k, "data", data, "exp", ms(r.now().Add(ttl)))
		p.PExpire(ctx, k, ttl)
		return nil
	})
	if err != nil {
		return fmt.Errorf("put login state: %w", err)
	}
	return nil
}

// TakeLoginState implements Store.
func (r *Redis) TakeLoginState(ctx context.Context, key string) ([]byte, error) {
	s, err := takeScript.Run(ctx, r.client, []string{r.key("login", key)}, r.now().UnixMilli()).Text()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("take login state: %w", err)
	}
	return []byte(s), nil
}

// CountAttempt implements Counter.
func (r *Redis) CountAttempt(ctx context.Context, key string, window time.Duration) (int64, time.Time, error) {
	v, err := countScript.Run(ctx, r.client, []string{r.key("attempts", key)},
		r.now().UnixMilli(), window.Milliseconds()).Int64Slice()
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("count attempt: %w", err)
	}
	if len(v) != 2 {
		return 0, time.Time{}, fmt.Errorf("count attempt: unexpected reply %v", v)
	}
	return v[0], time.UnixMilli(v[1]), nil
}

// ForgiveAttempt implements Counter.
func (r *Redis) ForgiveAttempt(ctx context.Context, key string) error {
	err := forgiveScript.Run(ctx, r.client, []string{r.key("attempts", key)}, r.now().UnixMilli()).Err()
	if err != nil {
		return fmt.Errorf("forgive attempt: %w", err)
	}
	return nil
}
