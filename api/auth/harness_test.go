package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cmlcloud/cml-cloud-manager/api"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb/pgtest"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sealing"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sessions"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testClock is a settable clock shared by the store, the limiter and the
// authenticator.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock { return &testClock{now: time.Now().Truncate(time.Millisecond)} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// syncBuffer collects log output from concurrent requests.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// backend is a session store with its limiter.
type backend struct {
	store   sessions.Store
	counter sessions.Counter
}

func postgresBackend(t testing.TB, clock *testClock) backend {
	s := sessions.NewPostgres(pgtest.NewPool(t), sessions.Options{Now: clock.Now})
	return backend{store: s, counter: s}
}

func redisBackend(t testing.TB, clock *testClock) backend {
	t.Helper()
	u := os.Getenv("TEST_REDIS_URL")
	if u == "" {
		u = "redis://127.0.0.1:6379/0"
	}
	opts, err := redis.ParseURL(u)
	require.NoError(t, err)
	client := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		t.Fatalf("Redis at %s does not answer (set TEST_REDIS_URL): %v", u, err)
	}
	prefix := "cmlcm_test:" + sessions.NewID()[:12] + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		iter := client.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			client.Del(ctx, iter.Val())
		}
		_ = client.Close()
	})
	s := sessions.NewRedis(client, sessions.Options{Now: clock.Now, KeyPrefix: prefix})
	return backend{store: s, counter: s}
}

// harness is an Authenticator mounted on a plain Echo, served on loopback,
// with a cookie-keeping client that does not follow redirects.
type harness struct {
	t      testing.TB
	auth   *Authenticator
	url    string
	client *http.Client
	logs   *syncBuffer
	clock  *testClock
	store  sessions.Store
}

// harnessConfig adjusts a harness before its Authenticator is built.
type harnessConfig struct {
	backend backend
	clock   *testClock
	logs    *syncBuffer
	limit   sessions.Limit
	mutate  func(*Options)
}

func newHarness(t testing.TB, mode Mode, hc harnessConfig) *harness {
	t.Helper()
	if hc.clock == nil {
		hc.clock = newTestClock()
	}
	if hc.backend.store == nil {
		hc.backend = postgresBackend(t, hc.clock)
	}
	if hc.logs == nil {
		hc.logs = &syncBuffer{}
	}
	if hc.limit.Attempts == 0 {
		hc.limit = sessions.DefaultLimit
	}
	srv := httptest.NewUnstartedServer(nil)
	base := "http://" + srv.Listener.Addr().String()
	limiter, err := sessions.NewLimiter(hc.backend.counter, hc.limit, hc.clock.Now)
	require.NoError(t, err)
	opts := Options{
		Mode:        mode,
		Environment: "development",
		PublicURL:   base,
		Logger:      slog.New(slog.NewJSONHandler(hc.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Sessions:    hc.backend.store,
		Limiter:     limiter,
		Now:         hc.clock.Now,
	}
	if hc.mutate != nil {
		hc.mutate(&opts)
	}
	a, err := New(opts)
	require.NoError(t, err)
	srv.Config.Handler = newEcho(t, a)
	srv.Start()
	t.Cleanup(srv.Close)
	h := &harness{t: t, auth: a, url: base, logs: hc.logs, clock: hc.clock, store: hc.backend.store}
	h.client = newBrowser(t)
	return h
}

// newBrowser is an HTTP client with its own cookie jar that stops at
// redirects, so tests see each hop.
func newBrowser(t testing.TB) *http.Client {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Jar:           jar,
		Transport:     tr,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// newEcho mounts a on a plain Echo: an /api group with the middleware, the
// auth routes, and /api/probe, which answers the principal.
func newEcho(t testing.TB, a *Authenticator) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.IPExtractor = echo.ExtractIPDirect()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		var p *api.Problem
		if !errors.As(err, &p) {
			var he *echo.HTTPError
			if errors.As(err, &he) {
				p = api.NewProblem(he.Code, fmt.Sprintf("http_%d", he.Code), fmt.Sprint(he.Message))
			} else {
				t.Errorf("handler error that is not a problem: %v", err)
				p = api.NewProblem(http.StatusInternalServerError, api.CodeInternal, "")
			}
		}
		b, _ := json.Marshal(p)
		_ = c.Blob(p.Status, api.ProblemContentType, b)
	}
	g := e.Group("/api", a.Middleware())
	a.Register(g)
	probe := func(c echo.Context) error {
		p, ok := rbac.FromContext(c.Request().Context())
		if !ok {
			return api.NewProblem(http.StatusUnauthorized, api.CodeUnauthorized, "no principal")
		}
		return c.JSON(http.StatusOK, p)
	}
	g.GET("/probe", probe)
	g.POST("/probe", probe)
	g.DELETE("/probe", probe)
	return e
}

// response is a finished request.
type response struct {
	*http.Response
	body []byte
}

func (r response) json(t testing.TB, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.body, v), "body %s", r.body)
}

// problemCode returns the code of a problem+json body.
func (r response) problemCode(t testing.TB) string {
	t.Helper()
	require.Equal(t, api.ProblemContentType, r.Header.Get("Content-Type"), "body %s", r.body)
	var p struct {
		Code string `json:"code"`
	}
	r.json(t, &p)
	return p.Code
}

// do sends a request with the browser's cookies; body may be nil, a string
// (sent as is) or any value (sent as JSON).
func (h *harness) do(client *http.Client, method, path string, body any, header http.Header) response {
	h.t.Helper()
	return doRequest(h.t, client, method, h.abs(path), body, header)
}

func (h *harness) abs(path string) string {
	if strings.HasPrefix(path, "http") {
		return path
	}
	return h.url + path
}

func doRequest(t testing.TB, client *http.Client, method, target string, body any, header http.Header) response {
	t.Helper()
	var rd io.Reader
	contentType := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		require.NoError(t, err)
		rd = bytes.NewReader(raw)
		contentType = echo.MIMEApplicationJSON
	}
	req, err := http.NewRequest(method, target, rd)
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{Response: resp, body: raw}
}

// login signs in with a local account through the JSON route and returns
// the session info.
func (h *harness) login(client *http.Client, username, password string) SessionInfo {
	h.t.Helper()
	r := h.do(client, http.MethodPost, "/api/auth/login", map[string]string{"username": username, "password": password}, nil)
	require.Equal(h.t, http.StatusOK, r.StatusCode, "login as %s: %s", username, r.body)
	var info SessionInfo
	r.json(h.t, &info)
	require.True(h.t, info.Authenticated)
	return info
}

// sessionCookie returns the browser's session cookie value ("" if none).
func (h *harness) sessionCookie(client *http.Client) string {
	u, _ := url.Parse(h.url)
	for _, c := range client.Jar.Cookies(u) {
		if c.Name == SessionCookie {
			return c.Value
		}
	}
	return ""
}

// probe calls GET /api/probe and returns the status and principal.
func (h *harness) probe(client *http.Client, header http.Header) (int, rbac.Principal) {
	h.t.Helper()
	r := h.do(client, http.MethodGet, "/api/probe", nil, header)
	var p rbac.Principal
	if r.StatusCode == http.StatusOK {
		r.json(h.t, &p)
	}
	return r.StatusCode, p
}

func bearer(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

func csrfHeader(token string) http.Header {
	return http.Header{"X-Csrf-Token": {token}}
}

// newSealer returns a sealer with a fresh key.
func newSealer(t testing.TB) *sealing.Sealer {
	s, err := sealing.New(sealing.RandomKey())
	require.NoError(t, err)
	return s
}
