package api

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// matrixCase says how to call one route with valid input and what an
// allowed caller gets. The expected statuses of the RBAC matrix are derived
// from the route table: anonymous 401; a caller whose role the route's
// action admits (rbac.Policy, through Route.Roles) gets ok; any other 403.
// override lists the callers for whom a rule finer than the roles decides
// (the Rules of the route).
type matrixCase struct {
	prepare  func(t *testing.T, e *env) request
	ok       int
	override map[string]int
	// after runs once the call is done (to wait for a background rebuild).
	after func(t *testing.T, e *env)
	// stream marks a server-sent event route: a 200 is read up to its
	// first frame, then closed (the body never ends).
	stream bool
}

func get(path string) func(*testing.T, *env) request {
	return func(*testing.T, *env) request { return request{method: http.MethodGet, path: path} }
}

// onWorker calls path (with %s for the worker id) on a fresh worker in the
// given EC2 state.
func onWorker(method, suffix string, state worker.EC2State, body any, contentType string) func(*testing.T, *env) request {
	return func(t *testing.T, e *env) request {
		id := e.importWorker(t, "matrix", state)
		return request{method: method, path: "/api/workers/" + id + suffix, body: body, contentType: contentType}
	}
}

func onTask(method string, body any) func(*testing.T, *env) request {
	return func(t *testing.T, e *env) request {
		id := e.createTask(t, "matrix task")
		return request{method: method, path: "/api/tasks/" + id, body: body}
	}
}

// matrixCases has one entry per route of the table ("METHOD path"); a
// route without one fails the test, so a new route needs its row.
var matrixCases = map[string]matrixCase{
	"GET /api/workers": {prepare: get("/api/workers"), ok: 200},
	"POST /api/workers": {ok: 202, prepare: func(*testing.T, *env) request {
		return request{method: http.MethodPost, path: "/api/workers", body: map[string]any{"name": "matrix-" + randomHex(6), "region": "us-east-1"}}
	}},
	"GET /api/workers/{id}":                   {ok: 200, prepare: onWorker(http.MethodGet, "", worker.EC2Running, nil, "")},
	"DELETE /api/workers/{id}":                {ok: 200, prepare: onWorker(http.MethodDelete, "", worker.EC2Running, nil, "")},
	"POST /api/workers/{id}/terminate":        {ok: 202, prepare: onWorker(http.MethodPost, "/terminate", worker.EC2Running, nil, "")},
	"POST /api/workers/{id}/start":            {ok: 202, prepare: onWorker(http.MethodPost, "/start", worker.EC2Stopped, nil, "")},
	"POST /api/workers/{id}/stop":             {ok: 202, prepare: onWorker(http.MethodPost, "/stop", worker.EC2Running, nil, "")},
	"PUT /api/workers/{id}/tags":              {ok: 200, prepare: onWorker(http.MethodPut, "/tags", worker.EC2Running, map[string]any{"tags": map[string]string{"team": "x"}}, "")},
	"PUT /api/workers/{id}/monitoring":        {ok: 200, prepare: onWorker(http.MethodPut, "/monitoring", worker.EC2Running, map[string]any{"enabled": true}, "")},
	"PUT /api/workers/{id}/idle-detection":    {ok: 200, prepare: onWorker(http.MethodPut, "/idle-detection", worker.EC2Running, map[string]any{"enabled": false}, "")},
	"POST /api/workers/{id}/license":          {ok: 202, prepare: onWorker(http.MethodPost, "/license", worker.EC2Running, map[string]any{"token": "tok-" + randomHex(8)}, "")},
	"DELETE /api/workers/{id}/license":        {ok: 202, prepare: onWorker(http.MethodDelete, "/license", worker.EC2Running, nil, "")},
	"GET /api/workers/{id}/idle-status":       {ok: 200, prepare: onWorker(http.MethodGet, "/idle-status", worker.EC2Running, nil, "")},
	"POST /api/workers/{id}/labs":             {ok: 202, prepare: onWorker(http.MethodPost, "/labs?title=t", worker.EC2Running, "lab:\n  title: t\nnodes: []\n", "application/yaml")},
	"POST /api/workers/{id}/labs/{lab}/start": {ok: 202, prepare: onWorker(http.MethodPost, "/labs/lab-1/start", worker.EC2Running, nil, "")},
	"POST /api/workers/{id}/labs/{lab}/stop":  {ok: 202, prepare: onWorker(http.MethodPost, "/labs/lab-1/stop", worker.EC2Running, nil, "")},
	"POST /api/workers/{id}/labs/{lab}/wipe":  {ok: 202, prepare: onWorker(http.MethodPost, "/labs/lab-1/wipe", worker.EC2Running, nil, "")},
	"DELETE /api/workers/{id}/labs/{lab}":     {ok: 202, prepare: onWorker(http.MethodDelete, "/labs/lab-1", worker.EC2Running, nil, "")},
	"GET /api/workers/{id}/history":           {ok: 200, prepare: onWorker(http.MethodGet, "/history", worker.EC2Running, nil, "")},
	"POST /api/workers/import": {ok: 201, prepare: func(t *testing.T, e *env) request {
		in := launchOutOfBand(t, "matrix-import")
		return request{method: http.MethodPost, path: "/api/workers/import", body: map[string]any{"region": "us-east-1", "instance_id": in.ID}}
	}},
	"POST /api/workers/{id}/refresh":            {ok: 202, prepare: onWorker(http.MethodPost, "/refresh", worker.EC2Running, nil, "")},
	"GET /api/workers/{id}/metrics":             {ok: 200, prepare: onWorker(http.MethodGet, "/metrics", worker.EC2Running, nil, "")},
	"GET /api/workers/{id}/labs":                {ok: 200, prepare: onWorker(http.MethodGet, "/labs", worker.EC2Running, nil, "")},
	"GET /api/workers/{id}/labs/{lab}/download": {ok: 200, prepare: onSimulatedLab("/download")},
	"GET /api/system/jobs":                      {ok: 200, prepare: get("/api/system/jobs")},
	"POST /api/system/jobs/{kind}/run": {ok: 202, prepare: func(*testing.T, *env) request {
		return request{method: http.MethodPost, path: "/api/system/jobs/idle_check/run"}
	}},
	"GET /api/workers/{id}/state": {ok: 200, prepare: onWorkerStateNow},
	"GET /api/audit":              {ok: 200, prepare: get("/api/audit?limit=5")},
	"GET /api/settings":           {ok: 200, prepare: get("/api/settings")},
	"PUT /api/settings":           {ok: 200, prepare: putSettings},
	"GET /api/system/health":      {ok: 200, prepare: get("/api/system/health")},
	"GET /api/admin/projections":  {ok: 200, prepare: get("/api/admin/projections")},
	"POST /api/admin/projections/{name}/rebuild": {ok: 202, after: waitRebuilds, prepare: func(*testing.T, *env) request {
		return request{method: http.MethodPost, path: "/api/admin/projections/task_view/rebuild"}
	}},
	"GET /api/tasks": {ok: 200, prepare: get("/api/tasks")},
	"POST /api/tasks": {ok: 201, prepare: func(*testing.T, *env) request {
		return request{method: http.MethodPost, path: "/api/tasks", body: map[string]any{"title": "mine"}}
	}},
	"GET /api/tasks/{id}": {ok: 200, prepare: onTask(http.MethodGet, nil)},
	// The task is the user's (assignee) in department ops: a manager who is
	// not the assignee may not update it.
	"PUT /api/tasks/{id}":    {ok: 200, prepare: onTask(http.MethodPut, map[string]any{"title": "renamed"}), override: map[string]int{"manager": 403}},
	"DELETE /api/tasks/{id}": {ok: 200, prepare: onTask(http.MethodDelete, nil)},
	"GET /api/openapi.json":  {ok: 200, prepare: get("/api/openapi.json")},
	"GET /api/docs":          {ok: 200, prepare: get("/api/docs")},
	"GET /api/docs/{asset}":  {ok: 200, prepare: get("/api/docs/init.js")},
	"GET /healthz":           {ok: 200, prepare: get("/healthz")},
	"GET /readyz":            {ok: 200, prepare: get("/readyz")},
	"GET /metrics":           {ok: 200, prepare: get("/metrics")},
	// The streams' first frame: a worker's snapshot, the worker's first
	// domain event.
	"GET /api/events/stream": {ok: 200, stream: true, prepare: streamOfWorker("/api/events/stream?worker_ids=")},
	"GET /api/events/domain": {ok: 200, stream: true, prepare: streamOfWorker("/api/events/domain?worker_id=")},
}

func onWorkerStateNow(t *testing.T, e *env) request {
	id := e.importWorker(t, "matrix", worker.EC2Running)
	at := time.Now().UTC().Add(time.Second).Format(time.RFC3339Nano)
	return request{method: http.MethodGet, path: "/api/workers/" + id + "/state?at=" + at}
}

func putSettings(*testing.T, *env) request {
	return request{method: http.MethodPut, path: "/api/settings", body: map[string]any{"set": map[string]any{"labs_sync_interval_seconds": 1800}}}
}

func waitRebuilds(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, e.operator.Wait(ctx))
}

// expectedStatus derives a cell of the matrix from the route table.
func expectedStatus(r Route, c matrixCase, caller string) int {
	if r.Access == AccessPublic {
		return c.ok
	}
	if caller == "anonymous" {
		return http.StatusUnauthorized
	}
	if s, ok := c.override[caller]; ok {
		return s
	}
	if slices.ContainsFunc(r.Roles(), func(role rbac.Role) bool { return slices.Contains(principals[caller].Roles, role) }) {
		return c.ok
	}
	return http.StatusForbidden
}

// TestRBACMatrix calls every route of the table as every kind of caller and
// asserts the exact status. It runs twice: through the server's route gate,
// and with the gate off, where only the application handlers authorise; the
// same statuses prove that each route's action in the table is the one its
// handler authorises.
func TestRBACMatrix(t *testing.T) {
	for _, gate := range []struct {
		name string
		off  bool
	}{{"Gate", false}, {"ApplicationOnly", true}} {
		t.Run(gate.name, func(t *testing.T) {
			e := newEnv(t, envOptions{noRouteGate: gate.off, streams: &streamConfig{}})
			for _, r := range Routes() {
				if r.Access == AccessAuthenticator {
					continue // the authenticator's own routes; its tests cover them
				}
				key := r.Method + " " + r.Path
				c, ok := matrixCases[key]
				if !ok {
					t.Errorf("route %s has no row in the RBAC matrix", key)
					continue
				}
				t.Run(key, func(t *testing.T) {
					for _, caller := range callers {
						want := expectedStatus(r, c, caller)
						rq := c.prepare(t, e)
						rq.as = caller
						var res response
						if c.stream {
							res = e.doStream(t, rq)
						} else {
							res = e.do(t, rq)
						}
						require.Equal(t, want, res.status, "%s as %s: body %s", key, caller, res.body)
						switch {
						case want == http.StatusUnauthorized:
							res.problem(t, want, CodeUnauthenticated)
							require.Contains(t, res.header.Get("WWW-Authenticate"), "Bearer")
						case want == http.StatusForbidden:
							res.problem(t, want, CodeForbidden)
						}
						if c.after != nil && res.status < 300 {
							c.after(t, e)
						}
					}
				})
			}
			for key := range matrixCases {
				found := slices.ContainsFunc(Routes(), func(r Route) bool { return r.Method+" "+r.Path == key })
				require.True(t, found, "matrix row %s names no route", key)
			}
		})
	}
}
