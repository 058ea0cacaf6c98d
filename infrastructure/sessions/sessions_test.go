package sessions

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// DefaultTestRedisURL is used when TEST_REDIS_URL is unset.
const DefaultTestRedisURL = "redis://127.0.0.1:6379/0"

// newRedisClient connects to the test Redis server. Every test gets a key
// prefix of its own and its keys are deleted when it ends.
func newRedisClient(t *testing.T) (*redis.Client, string) {
	t.Helper()
	url := os.Getenv("TEST_REDIS_URL")
	if url == "" {
		url = DefaultTestRedisURL
	}
	opts, err := redis.ParseURL(url)
	require.NoError(t, err)
	client := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		t.Fatalf("Redis at %s does not answer (set TEST_REDIS_URL): %v", url, err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "cmlcm_test:" + hex.EncodeToString(b) + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		iter := client.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			client.Del(ctx, iter.Val())
		}
		_ = client.Close()
	})
	return client, prefix
}

func openPostgres(t *testing.T, now func() time.Time) interface {
	Store
	Counter
} {
	return NewPostgres(pgtest.NewPool(t), Options{Now: now})
}

func openRedis(t *testing.T, now func() time.Time) interface {
	Store
	Counter
} {
	client, prefix := newRedisClient(t)
	return NewRedis(client, Options{Now: now, KeyPrefix: prefix})
}

func TestPostgresStore(t *testing.T) {
	t.Parallel()
	runStoreContract(t, openPostgres)
}

func TestRedisStore(t *testing.T) {
	t.Parallel()
	runStoreContract(t, openRedis)
}

func TestPostgresKeepsOnlyHashes(t *testing.T) {
	t.Parallel()
	c := newClock()
	pool := pgtest.NewPool(t)
	s := NewPostgres(pool, Options{Now: c.Now})
	id, _, err := s.Create(t.Context(), newSession(c.Now()))
	require.NoError(t, err)
	loginKey := NewID()
	require.NoError(t, s.PutLoginState(t.Context(), loginKey, []byte("x"), time.Minute))
	_, _, err = s.CountAttempt(t.Context(), "user:secret-name", time.Minute)
	require.NoError(t, err)

	var dump string
	err = pool.QueryRow(t.Context(), `SELECT
		(SELECT string_agg(encode(id_hash, 'escape') || row_to_json(s)::text, '') FROM sessions s) ||
		(SELECT string_agg(encode(key_hash, 'escape'), '') FROM login_states) ||
		(SELECT string_agg(encode(key_hash, 'escape'), '') FROM login_attempts)`).Scan(&dump)
	require.NoError(t, err)
	require.NotContains(t, dump, id)
	require.NotContains(t, dump, loginKey)
	require.NotContains(t, dump, "secret-name")
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM sessions WHERE id_hash = $1`, hashKey(id)).Scan(&n))
	require.Equal(t, 1, n, "the row is keyed by the id's SHA-256")
}

func TestRedisKeepsOnlyHashes(t *testing.T) {
	t.Parallel()
	c := newClock()
	client, prefix := newRedisClient(t)
	s := NewRedis(client, Options{Now: c.Now, KeyPrefix: prefix})
	id, created, err := s.Create(t.Context(), newSession(c.Now()))
	require.NoError(t, err)
	loginKey := NewID()
	require.NoError(t, s.PutLoginState(t.Context(), loginKey, []byte("x"), time.Minute))
	_, _, err = s.CountAttempt(t.Context(), "user:secret-name", time.Minute)
	require.NoError(t, err)

	keys, err := client.Keys(t.Context(), prefix+"*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 3)
	all := strings.Join(keys, " ")
	require.NotContains(t, all, id)
	require.NotContains(t, all, loginKey)
	require.NotContains(t, all, "secret-name")
	require.Contains(t, all, prefix+"session:"+hex.EncodeToString(hashKey(id)))

	ttl, err := client.PTTL(t.Context(), prefix+"session:"+hex.EncodeToString(hashKey(id))).Result()
	require.NoError(t, err)
	require.InDelta(t, float64(created.ExpiresAt.Sub(c.Now())), float64(ttl), float64(5*time.Second),
		"the key's TTL follows the idle expiry")
}

func TestRedisDropsExpiredKeys(t *testing.T) {
	t.Parallel()
	client, prefix := newRedisClient(t)
	s := NewRedis(client, Options{KeyPrefix: prefix})
	in := newSession(time.Now())
	in.IdleTimeout = 50 * time.Millisecond
	id, _, err := s.Create(t.Context(), in)
	require.NoError(t, err)
	key := prefix + "session:" + hex.EncodeToString(hashKey(id))
	require.Eventually(t, func() bool {
		n, err := client.Exists(context.Background(), key).Result()
		return err == nil && n == 0
	}, 5*time.Second, 20*time.Millisecond, "Redis drops the key of an idle session on its own")
}

func TestPostgresSweep(t *testing.T) {
	t.Parallel()
	c := newClock()
	pool := pgtest.NewPool(t)
	s := NewPostgres(pool, Options{Now: c.Now})
	short := newSession(c.Now())
	short.IdleTimeout = time.Minute
	_, _, err := s.Create(t.Context(), short)
	require.NoError(t, err)
	keep, _, err := s.Create(t.Context(), newSession(c.Now()))
	require.NoError(t, err)
	require.NoError(t, s.PutLoginState(t.Context(), NewID(), []byte("x"), time.Minute))
	_, _, err = s.CountAttempt(t.Context(), "ip:192.0.2.7", time.Minute)
	require.NoError(t, err)

	n, err := s.Sweep(t.Context())
	require.NoError(t, err)
	require.Zero(t, n, "nothing has expired yet")

	c.Advance(2 * time.Minute)
	n, err = s.Sweep(t.Context())
	require.NoError(t, err)
	require.Equal(t, int64(3), n, "one session, one login state, one attempt window")
	_, err = s.Get(t.Context(), keep)
	require.NoError(t, err)
}

func TestParseLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Limit
		wantErr bool
	}{
		{in: "10/15m", want: Limit{Attempts: 10, Window: 15 * time.Minute}},
		{in: " 5 / 1h ", want: Limit{Attempts: 5, Window: time.Hour}},
		{in: "1/1s", want: Limit{Attempts: 1, Window: time.Second}},
		{in: "10", wantErr: true},
		{in: "0/15m", wantErr: true},
		{in: "-1/15m", wantErr: true},
		{in: "ten/15m", wantErr: true},
		{in: "10/15", wantErr: true},
		{in: "10/10ms", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseLimit(tt.in)
		if tt.wantErr {
			require.Error(t, err, tt.in)
			continue
		}
		require.NoError(t, err, tt.in)
		require.Equal(t, tt.want, got, tt.in)
		back, err := ParseLimit(got.String())
		require.NoError(t, err)
		require.Equal(t, got, back, "String round-trips")
	}
}

func FuzzParseLimit(f *testing.F) {
	for _, s := range []string{"10/15m", "1/1s", "x/y", "/", "9999999999999999999/1h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLimit(s)
		if err != nil {
			return
		}
		if l.Attempts < 1 || l.Window < time.Second {
			t.Fatalf("ParseLimit(%q) = %+v: accepted an invalid limit", s, l)
		}
	})
}

func TestNewIDAndValidID(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		id := NewID()
		require.True(t, ValidID(id))
		require.Len(t, id, 43)
		require.False(t, seen[id])
		seen[id] = true
	}
	for _, bad := range []string{"", "abc", NewID() + "=", strings.Repeat("a", 42) + "!", strings.Repeat("A", 44)} {
		require.False(t, ValidID(bad), bad)
	}
}

func FuzzValidID(f *testing.F) {
	f.Add(NewID())
	f.Add("")
	f.Add(strings.Repeat("_", 43))
	f.Fuzz(func(t *testing.T, s string) {
		if ValidID(s) && len(s) != IDLength {
			t.Fatalf("ValidID(%q) accepted a value of length %d", s, len(s))
		}
	})
}

func TestLimiter(t *testing.T) {
	t.Parallel()
	for name, open := range map[string]backend{"Postgres": openPostgres, "Redis": openRedis} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := newClock()
			store := open(t, c.Now)
			limit := Limit{Attempts: 3, Window: 10 * time.Minute}
			// Two limiters on one backend stand for two instances.
			a, err := NewLimiter(store, limit, c.Now)
			require.NoError(t, err)
			b, err := NewLimiter(store, limit, c.Now)
			require.NoError(t, err)
			ctx := t.Context()

			for i, l := range []*Limiter{a, b, a} {
				wait, err := l.Attempt(ctx, "user:alice", "ip:192.0.2.1")
				require.NoError(t, err)
				require.Zero(t, wait, "attempt %d is within the limit", i+1)
			}
			c.Advance(time.Minute)
			wait, err := b.Attempt(ctx, "user:alice", "ip:192.0.2.2")
			require.NoError(t, err)
			require.Equal(t, 9*time.Minute, wait.Round(time.Second), "the fourth attempt on alice waits for the window's end")

			wait, err = a.Attempt(ctx, "user:bob", "ip:192.0.2.1")
			require.NoError(t, err)
			require.Equal(t, 9*time.Minute, wait.Round(time.Second), "the address has used its window too")

			wait, err = a.Attempt(ctx, "user:carol", "ip:192.0.2.3")
			require.NoError(t, err)
			require.Zero(t, wait, "other names and addresses are unaffected")
			require.NoError(t, a.Forgive(ctx, "user:carol", "ip:192.0.2.3"))

			c.Advance(9 * time.Minute)
			wait, err = a.Attempt(ctx, "user:alice", "ip:192.0.2.1")
			require.NoError(t, err)
			require.Zero(t, wait, "a new window")
		})
	}
}

func TestLimiterForgivesSuccess(t *testing.T) {
	t.Parallel()
	c := newClock()
	store := openPostgres(t, c.Now)
	l, err := NewLimiter(store, Limit{Attempts: 2, Window: time.Minute}, c.Now)
	require.NoError(t, err)
	for i := range 10 {
		wait, err := l.Attempt(t.Context(), "user:alice")
		require.NoError(t, err)
		require.Zero(t, wait, "successful attempt %d", i+1)
		require.NoError(t, l.Forgive(t.Context(), "user:alice"))
	}
}

func TestNewLimiterValidates(t *testing.T) {
	t.Parallel()
	c := newClock()
	_, err := NewLimiter(nil, DefaultLimit, nil)
	require.Error(t, err)
	store := openPostgres(t, c.Now)
	_, err = NewLimiter(store, Limit{}, nil)
	require.Error(t, err)
	l, err := NewLimiter(store, DefaultLimit, nil)
	require.NoError(t, err)
	require.Equal(t, DefaultLimit, l.Limit())
}
