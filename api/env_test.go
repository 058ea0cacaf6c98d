package api

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sealing"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

// testUserHeader names the caller for testAuthenticator.
const testUserHeader = "X-Test-User"

// callers are the kinds of caller of the RBAC matrix, in its column order;
// "anonymous" sends no credentials.
var callers = []string{"admin", "manager", "user", "auditor", "integrator", "none", "anonymous"}

// principals maps a test caller to its principal.
var principals = map[string]rbac.Principal{
	"admin":      {Subject: "u-admin", Username: "admin", Roles: []rbac.Role{rbac.RoleAdmin}, Department: "ops"},
	"manager":    {Subject: "u-manager", Username: "manager", Roles: []rbac.Role{rbac.RoleManager}, Department: "ops"},
	"user":       {Subject: "u-user", Username: "user", Roles: []rbac.Role{rbac.RoleUser}, Department: "ops"},
	"auditor":    {Subject: "u-auditor", Username: "auditor", Roles: []rbac.Role{rbac.RoleAuditor}},
	"integrator": {Subject: "svc-integrator", Username: "integrator", Roles: []rbac.Role{rbac.RoleIntegrator}},
	"none":       {Subject: "u-nobody", Username: "nobody"},
}

// testAuthenticator is the test stand-in for api/auth: it maps the
// X-Test-User header to a principal (no header: anonymous; an unknown name:
// 401 as for a bad token) and registers the /api/auth routes of the auth
// contract (written out here from the contract, independently of the route
// table) as stubs answering 204.
type testAuthenticator struct{}

var authContractRoutes = [][2]string{
	{http.MethodGet, "/auth/login"}, {http.MethodGet, "/auth/callback"}, {http.MethodPost, "/auth/login"},
	{http.MethodPost, "/auth/logout"}, {http.MethodGet, "/auth/session"}, {http.MethodGet, "/auth/me"},
	{http.MethodPost, "/auth/extend-session"}, {http.MethodPost, "/auth/token"}, {http.MethodGet, "/auth/jwks.json"},
}

func (testAuthenticator) Middleware() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			name := c.Request().Header.Get(testUserHeader)
			if name == "" {
				return next(c)
			}
			p, ok := principals[name]
			if !ok {
				return NewProblem(http.StatusUnauthorized, CodeUnauthenticated, "Unknown test user.")
			}
			req := c.Request()
			c.SetRequest(req.WithContext(rbac.WithPrincipal(req.Context(), p)))
			return next(c)
		}
	}
}

func (testAuthenticator) Register(g *echo.Group) {
	for _, r := range authContractRoutes {
		g.Add(r[0], r[1], func(c echo.Context) error { return c.NoContent(http.StatusNoContent) })
	}
}

// env is one test's application, server and client over the shared
// database.
type env struct {
	app       *application.App
	history   *application.History
	system    *application.System
	admin     *application.Admin
	operator  *projections.Operator
	telemetry *application.Telemetry
	jobs      *application.JobControl
	fleet     *application.Fleet
	server    *Server
	logs      *syncBuffer
	url       string
	client    *http.Client
}

type envOptions struct {
	noRouteGate bool
	rebuild     projections.RebuildOptions
	// streams, when set, enables the event streams over a worker catalog
	// of the env's own (see newTestStreams).
	streams *streamConfig
	// auth replaces testAuthenticator (the external tests use api/auth).
	auth Authenticator
}

// testDefaults are the environment's runtime settings.
var testDefaults = settings.Values{
	AMIIDs:                map[string]string{"us-east-1": "ami-0123456789abcdef0", "us-west-2": "ami-0fedcba9876543210"},
	AMIName:               "cml-2.9",
	InstanceType:          "m5zn.metal",
	SecurityGroupIDs:      []string{"sg-0123456789abcdef0"},
	SubnetID:              "subnet-0123456789abcdef0",
	KeyName:               "cml",
	IdleDetectionEnabled:  true,
	IdleTimeoutSeconds:    3600,
	IdleSnoozeSeconds:     3600,
	FleetReconcileSeconds: 60,
	FleetMetricsSeconds:   300,
	LabsSyncSeconds:       1800,
	IdleCheckSeconds:      300,
}

func newEnv(t testing.TB, o ...envOptions) *env {
	t.Helper()
	var opts envOptions
	if len(o) > 0 {
		opts = o[0]
	}
	sealer, err := sealing.New(sealing.RandomKey())
	require.NoError(t, err)
	quiet := slog.New(slog.DiscardHandler)
	pool, store := shared.pool, shared.store
	app := application.New(application.Options{
		Store: store, Sealer: sealer, Logger: quiet,
		Workers:  projections.NewWorkerReader(pool),
		Settings: projections.NewSettingsReader(pool),
		Tasks:    projections.NewTaskReader(pool),
		Regions:  []string{"us-east-1", "us-west-2"},
		Defaults: testDefaults,
	})
	operator := projections.NewOperator(projections.OperatorOptions{
		Store: store, Pool: pool, Projections: projections.All(application.EventRegistry()),
		Manager: shared.manager, Logger: quiet, Rebuild: opts.rebuild,
	})
	t.Cleanup(operator.Close)
	e := &env{
		app:      app,
		history:  application.NewHistory(application.HistoryOptions{Store: store, Audit: projections.NewAuditReader(pool)}),
		operator: operator,
		admin:    application.NewAdmin(operator),
		system: application.NewSystem(application.SystemOptions{
			Checks: []application.ComponentCheck{
				{Name: "database", Check: pool.Ping},
				{Name: "event_store", Check: application.EventStoreCheck(store)},
			},
			Projections: operator, Logger: quiet,
		}),
		telemetry: application.NewTelemetry(app, projections.NewMetricsReader(pool), projections.NewLabsReader(pool)),
		jobs:      application.NewJobControl(app, shared.jobs),
		fleet: application.NewFleet(app, shared.cloud.Provider, shared.cloud.CML,
			application.FleetOptions{EndpointTemplate: shared.cloud.EndpointTemplate}),
		logs: &syncBuffer{},
	}
	e.server = New(Options{
		Logger:    slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		App:       e.app,
		History:   e.history,
		System:    e.system,
		Admin:     e.admin,
		Auth:      cmp.Or[Authenticator](opts.auth, testAuthenticator{}),
		Telemetry: e.telemetry,
		Jobs:      e.jobs,
		Fleet:     e.fleet,
		Metrics:   prometheus.NewRegistry(),
		Readiness: []Check{
			{Name: "database", Func: pool.Ping},
		},
		Streams:     newTestStreams(t, opts.streams),
		noRouteGate: opts.noRouteGate,
	})
	ts := httptest.NewServer(e.server.Handler())
	t.Cleanup(ts.Close)
	transport := &http.Transport{MaxIdleConnsPerHost: 32}
	t.Cleanup(transport.CloseIdleConnections)
	e.url = ts.URL
	e.client = &http.Client{Transport: transport, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return e
}

// request is one HTTP call of a test.
type request struct {
	method, path string
	as           string // a caller name; "" or "anonymous" sends no credentials
	body         any    // []byte and string are sent as is, anything else as JSON
	contentType  string // default application/json when there is a body
	header       http.Header
}

// response is what came back.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.body, v), "body: %s", r.body)
}

// problem decodes a problem+json body and checks its status and code.
func (r response) problem(t testing.TB, status int, code string) map[string]any {
	t.Helper()
	require.Equal(t, status, r.status, "body: %s", r.body)
	require.Equal(t, ProblemContentType, r.header.Get("Content-Type"), "body: %s", r.body)
	var p map[string]any
	r.json(t, &p)
	require.Equal(t, code, p["code"], "body: %s", r.body)
	require.Equal(t, float64(status), p["status"])
	require.NotEmpty(t, p["request_id"])
	return p
}

func (e *env) do(t testing.TB, rq request) response {
	t.Helper()
	var body io.Reader
	ct := rq.contentType
	switch b := rq.body.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(b)
	case string:
		body = bytes.NewReader([]byte(b))
	default:
		data, err := json.Marshal(b)
		require.NoError(t, err)
		body = bytes.NewReader(data)
	}
	if body != nil && ct == "" {
		ct = "application/json"
	}
	req, err := http.NewRequest(rq.method, e.url+rq.path, body)
	require.NoError(t, err)
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for k, v := range rq.header {
		req.Header[k] = v
	}
	if rq.as != "" && rq.as != "anonymous" {
		req.Header.Set(testUserHeader, rq.as)
	}
	res, err := e.client.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return response{status: res.StatusCode, header: res.Header, body: data}
}

// ctxAs returns a context carrying the named caller's principal.
func ctxAs(name string) context.Context {
	return rbac.WithPrincipal(context.Background(), principals[name])
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// importWorker makes a worker for an instance in the given EC2 state and
// waits until the read model shows it.
func (e *env) importWorker(t testing.TB, name string, state worker.EC2State) string {
	t.Helper()
	res, err := e.app.ImportWorker(ctxAs("admin"), application.ImportWorker{
		Name: name, Region: "us-east-1", InstanceID: "i-" + randomHex(17), State: state,
		Endpoint: "https://192.0.2.10",
	})
	require.NoError(t, err)
	waitProjected(t, "worker_view", res.Position)
	return res.ID
}

// createTask creates a task in department ops assigned to the user caller.
func (e *env) createTask(t testing.TB, title string) string {
	t.Helper()
	res, err := e.app.CreateTask(ctxAs("admin"), application.CreateTask{Title: title, AssigneeID: "u-user", Department: "ops"})
	require.NoError(t, err)
	waitProjected(t, "task_view", res.Position)
	return res.ID
}

// waitProjected waits until the named read model has applied the log up to
// pos.
func waitProjected(t testing.TB, name, pos string) {
	t.Helper()
	want, err := eventstore.ParsePosition(pos)
	require.NoError(t, err)
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, _, err := projections.ReadCheckpoint(context.Background(), shared.pool, name)
		require.NoError(t, err)
		if !got.Less(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("read model %s did not reach %s (at %s)", name, want, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rebuildHook holds every rebuild before its swap until release is closed,
// signalling entered (without blocking) each time one gets there.
func rebuildHook(entered chan<- struct{}, release <-chan struct{}) projections.RebuildOptions {
	return projections.RebuildOptions{BeforeSwap: func(ctx context.Context) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
}
