package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sse "github.com/tmaxmax/go-sse"

	"github.com/cmlcloud/cml-cloud-manager/api"
	"github.com/cmlcloud/cml-cloud-manager/api/auth"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sessions"
)

// TestDashboardStreamEndsWithTheSession signs in with the real
// authenticator (local mode, a Postgres session), opens the dashboard
// stream with the session cookie, then signs out in another request: the
// stream sends auth.session.expired and ends. A bearer-token stream of the
// same server is not affected by session checks.
func TestDashboardStreamEndsWithTheSession(t *testing.T) {
	t.Parallel()
	x := newSessionEnv(t)
	id := x.env.ImportWorker(t, "session-stream")

	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	browser := &http.Client{Jar: jar}
	info := x.login(t, browser, "user")

	events := api.StreamEvents(t, browser, x.env.URL+"/api/events/stream?worker_ids="+id)
	first := next(t, events)
	require.Equal(t, "worker.snapshot", first.Type)

	// A bearer client's stream of the same server.
	token := x.token(t, "auditor")
	req, err := http.NewRequest(http.MethodGet, x.env.URL+"/api/events/stream?worker_ids="+id, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	bearer := api.StreamEventsRequest(t, http.DefaultClient, req)
	require.Equal(t, "worker.snapshot", next(t, bearer).Type)

	// Sign out: the session is revoked.
	out, err := http.NewRequest(http.MethodPost, x.env.URL+"/api/auth/logout", nil)
	require.NoError(t, err)
	out.Header.Set("X-CSRF-Token", info.CSRFToken)
	res, err := browser.Do(out)
	require.NoError(t, err)
	res.Body.Close()
	require.Less(t, res.StatusCode, 300)

	var got []sse.Event
	deadline := time.After(20 * time.Second)
	for open := true; open; {
		select {
		case ev, ok := <-events:
			if open = ok; ok {
				got = append(got, ev)
			}
		case <-deadline:
			t.Fatalf("the stream did not end with the session; got %v", got)
		}
	}
	require.NotEmpty(t, got, "the stream ended without a word")
	require.Equal(t, api.EventSessionExpired, got[len(got)-1].Type)

	// The bearer stream goes on: its next event is the next change.
	res2, err := http.DefaultClient.Do(mustRequest(t, http.MethodPut, x.env.URL+"/api/workers/"+id+"/tags",
		map[string]any{"tags": map[string]string{"after": "logout"}}, x.token(t, "manager")))
	require.NoError(t, err)
	res2.Body.Close()
	require.Equal(t, http.StatusOK, res2.StatusCode)
	ev := next(t, bearer)
	require.Equal(t, "worker.snapshot", ev.Type)
	require.Contains(t, ev.Data, "logout")
}

type sessionEnv struct {
	env  *api.ExternalEnv
	auth *auth.Authenticator
}

func newSessionEnv(t *testing.T) *sessionEnv {
	t.Helper()
	store := sessions.NewPostgres(api.SharedPool(), sessions.Options{})
	limiter, err := sessions.NewLimiter(store, sessions.DefaultLimit, nil)
	require.NoError(t, err)
	a, err := auth.New(auth.Options{
		Mode: auth.ModeLocal, Environment: "development", PublicURL: "http://127.0.0.1",
		Sessions: store, Limiter: limiter,
	})
	require.NoError(t, err)
	return &sessionEnv{auth: a, env: api.NewExternalEnv(t, a, a, 20*time.Millisecond)}
}

func (x *sessionEnv) login(t *testing.T, client *http.Client, user string) auth.SessionInfo {
	t.Helper()
	res, err := client.Post(x.env.URL+"/api/auth/login", "application/json",
		bytes.NewReader([]byte(`{"username":"`+user+`","password":"`+auth.DevPassword+`"}`)))
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	var info auth.SessionInfo
	require.NoError(t, json.NewDecoder(res.Body).Decode(&info))
	return info
}

func (x *sessionEnv) token(t *testing.T, user string) string {
	t.Helper()
	res, err := http.Post(x.env.URL+"/api/auth/token", "application/json",
		bytes.NewReader([]byte(`{"username":"`+user+`","password":"`+auth.DevPassword+`"}`)))
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	var body struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(t, json.NewDecoder(res.Body).Decode(&body))
	require.NotEmpty(t, body.AccessToken)
	return body.AccessToken
}

func mustRequest(t *testing.T, method, url string, body any, token string) *http.Request {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	req, err := http.NewRequest(method, url, bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	return req
}

func next(t *testing.T, events <-chan sse.Event) sse.Event {
	t.Helper()
	select {
	case ev, ok := <-events:
		require.True(t, ok, "the stream ended")
		return ev
	case <-time.After(20 * time.Second):
		t.Fatal("no event within 20s")
		return sse.Event{}
	}
}

// TestBearerStreamEndsWhenItsTokenExpires: for a bearer token the session
// is the token's lifetime; a stream opened with it sends
// auth.session.expired and ends when the token expires.
func TestBearerStreamEndsWhenItsTokenExpires(t *testing.T) {
	t.Parallel()
	store := sessions.NewPostgres(api.SharedPool(), sessions.Options{})
	limiter, err := sessions.NewLimiter(store, sessions.DefaultLimit, nil)
	require.NoError(t, err)
	// The authenticator's clock: tokens are issued now and expire a minute
	// later, which the test brings about by moving the clock on.
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	a, err := auth.New(auth.Options{
		Mode: auth.ModeLocal, Environment: "development", PublicURL: "http://127.0.0.1",
		Sessions: store, Limiter: limiter, Local: auth.LocalOptions{TokenTTL: time.Minute}, Now: now,
	})
	require.NoError(t, err)
	x := &sessionEnv{auth: a, env: api.NewExternalEnv(t, a, a, 20*time.Millisecond)}
	id := x.env.ImportWorker(t, "bearer-expiry")

	req, err := http.NewRequest(http.MethodGet, x.env.URL+"/api/events/stream?worker_ids="+id, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+x.token(t, "user"))
	events := api.StreamEventsRequest(t, http.DefaultClient, req)
	require.Equal(t, "worker.snapshot", next(t, events).Type)
	skew.Store(int64(2 * time.Minute))

	var got []sse.Event
	deadline := time.After(20 * time.Second)
	for open := true; open; {
		select {
		case ev, ok := <-events:
			if open = ok; ok {
				got = append(got, ev)
			}
		case <-deadline:
			t.Fatalf("the stream outlived its token; got %v", got)
		}
	}
	require.NotEmpty(t, got, "the stream ended without a word")
	require.Equal(t, api.EventSessionExpired, got[len(got)-1].Type)
}
