package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sealing"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

// pollWorker GETs a worker until it is visible (the read model is updated
// after the command returns).
func (e *env) pollWorker(t *testing.T, path string) application.WorkerView {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		res := e.do(t, request{method: http.MethodGet, path: path, as: "admin"})
		if res.status == http.StatusOK {
			var v application.WorkerView
			res.json(t, &v)
			return v
		}
		require.Equal(t, http.StatusNotFound, res.status, "body %s", res.body)
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCreateAndListWorkers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	name := "create-" + randomHex(8)
	res := e.do(t, request{method: http.MethodPost, path: "/api/workers", as: "admin",
		body:   map[string]any{"name": name, "region": "us-west-2", "tags": map[string]string{"team": "netops"}},
		header: http.Header{"X-Request-Id": {"req-create-" + name}}})
	require.Equal(t, http.StatusAccepted, res.status, "body %s", res.body)
	var result application.Result
	res.json(t, &result)
	require.True(t, result.Changed)
	require.Equal(t, []string{"worker.created.v1"}, result.Events)
	loc := res.header.Get("Location")
	require.Equal(t, "/api/workers/"+result.ID, loc)

	v := e.pollWorker(t, loc)
	require.Equal(t, name, v.Name)
	require.Equal(t, worker.StatusProvisioning, v.Status)
	require.Equal(t, "ami-0fedcba9876543210", v.AMIID, "the region's default AMI")
	require.Equal(t, "netops", v.Tags["team"])
	require.Equal(t, "u-admin", v.CreatedBy.Subject)

	// The request id is the correlation id of the recorded event. The
	// history reads audit_log, which may lag worker_view.
	waitProjected(t, "audit_log", v.Position)
	hist := e.do(t, request{method: http.MethodGet, path: loc + "/history", as: "auditor"})
	require.Equal(t, http.StatusOK, hist.status, "body %s", hist.body)
	var page application.AuditPage
	hist.json(t, &page)
	require.Len(t, page.Items, 1)
	require.Equal(t, "req-create-"+name, page.Items[0].CorrelationID)
	require.Equal(t, "u-admin", page.Items[0].Actor.Subject)

	// Filters.
	list := func(query string) WorkerPage {
		res := e.do(t, request{method: http.MethodGet, path: "/api/workers?" + query, as: "integrator"})
		require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
		var p WorkerPage
		res.json(t, &p)
		return p
	}
	p := list("q=" + name)
	require.Equal(t, 1, p.Total)
	require.Equal(t, result.ID, p.Items[0].ID)
	require.Equal(t, application.DefaultPageSize, p.Limit)
	p = list("q=" + name + "&region=us-east-1")
	require.Equal(t, 0, p.Total)
	require.Empty(t, p.Items)
	require.NotNil(t, p.Items, "an empty page is [] not null")
	p = list("q=" + name + "&status=provisioning&region=us-west-2")
	require.Equal(t, 1, p.Total)
}

func TestListWorkersPaging(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	prefix := "page-" + randomHex(6) + "-"
	var ids []string
	for i := range 5 {
		ids = append(ids, e.importWorker(t, fmt.Sprintf("%s%d", prefix, i), worker.EC2Running))
	}
	var got []string
	for offset := 0; ; offset += 2 {
		res := e.do(t, request{method: http.MethodGet, path: fmt.Sprintf("/api/workers?q=%s&limit=2&offset=%d", prefix, offset), as: "user"})
		require.Equal(t, http.StatusOK, res.status)
		var p WorkerPage
		res.json(t, &p)
		require.Equal(t, 5, p.Total)
		require.Equal(t, 2, p.Limit)
		require.Equal(t, offset, p.Offset)
		if len(p.Items) == 0 {
			break
		}
		for _, w := range p.Items {
			got = append(got, w.ID)
		}
	}
	require.Equal(t, ids, got, "ordered by name, every worker once")

	// Removed workers are listed only on request.
	res := e.do(t, request{method: http.MethodDelete, path: "/api/workers/" + ids[0], as: "admin"})
	require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
	var r application.Result
	res.json(t, &r)
	waitProjected(t, "worker_view", r.Position)
	res = e.do(t, request{method: http.MethodGet, path: "/api/workers?q=" + prefix, as: "user"})
	var p WorkerPage
	res.json(t, &p)
	require.Equal(t, 4, p.Total)
	res = e.do(t, request{method: http.MethodGet, path: "/api/workers?include_terminated=true&q=" + prefix, as: "user"})
	res.json(t, &p)
	require.Equal(t, 5, p.Total)
}

// TestValidation: bad ids, times, paging bounds, filters, bodies.
func TestValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.importWorker(t, "validation", worker.EC2Running)
	w := "/api/workers/" + id
	tests := []struct {
		name   string
		rq     request
		status int
		code   string
		field  string // a field named in problems
	}{
		{"BadID", request{method: "GET", path: "/api/workers/not-a-uuid"}, 400, CodeInvalid, "id"},
		{"UpperCaseID", request{method: "GET", path: "/api/workers/" + strings.ToUpper(id)}, 400, CodeInvalid, "id"},
		{"BadIDOnCommand", request{method: "POST", path: "/api/workers/123/stop"}, 400, CodeInvalid, "id"},
		{"BadTaskID", request{method: "GET", path: "/api/tasks/x"}, 400, CodeInvalid, "id"},
		{"LimitZero", request{method: "GET", path: "/api/workers?limit=0"}, 400, CodeInvalid, "limit"},
		{"LimitTooBig", request{method: "GET", path: "/api/workers?limit=1001"}, 400, CodeInvalid, "limit"},
		{"LimitNotANumber", request{method: "GET", path: "/api/workers?limit=ten"}, 400, CodeInvalid, "limit"},
		{"NegativeOffset", request{method: "GET", path: "/api/workers?offset=-1"}, 400, CodeInvalid, "offset"},
		{"OffsetTooBig", request{method: "GET", path: "/api/workers?offset=1000001"}, 400, CodeInvalid, "offset"},
		{"TwiceGiven", request{method: "GET", path: "/api/workers?limit=1&limit=2"}, 400, CodeInvalid, "limit"},
		{"BadRegion", request{method: "GET", path: "/api/workers?region=mars-1"}, 400, CodeInvalid, "region"},
		{"BadStatus", request{method: "GET", path: "/api/workers?status=sleeping"}, 400, CodeInvalid, "status"},
		{"BadBool", request{method: "GET", path: "/api/workers?include_terminated=maybe"}, 400, CodeInvalid, "include_terminated"},
		{"LongQuery", request{method: "GET", path: "/api/workers?q=" + strings.Repeat("x", 201)}, 400, CodeInvalid, "q"},
		{"StateWithoutAt", request{method: "GET", path: w + "/state", as: "auditor"}, 400, CodeInvalid, "at"},
		{"StateBadAt", request{method: "GET", path: w + "/state?at=yesterday", as: "auditor"}, 400, CodeInvalid, "at"},
		{"StateDateOnly", request{method: "GET", path: w + "/state?at=2026-01-02", as: "auditor"}, 400, CodeInvalid, "at"},
		{"HistoryBadCursor", request{method: "GET", path: w + "/history?cursor=abc", as: "auditor"}, 400, CodeInvalid, "cursor"},
		{"HistoryBadType", request{method: "GET", path: w + "/history?type=Worker%20X", as: "auditor"}, 400, CodeInvalid, "type"},
		{"AuditBadWorker", request{method: "GET", path: "/api/audit?worker=w1", as: "auditor"}, 400, CodeInvalid, "worker"},
		{"AuditBadFrom", request{method: "GET", path: "/api/audit?from=now", as: "auditor"}, 400, CodeInvalid, "from"},
		{"AuditFromAfterTo", request{method: "GET", path: "/api/audit?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", as: "auditor"}, 400, CodeInvalid, "from"},
		{"AuditBadFormat", request{method: "GET", path: "/api/audit?format=xml", as: "auditor"}, 400, CodeInvalid, "format"},
		{"BadLabID", request{method: "POST", path: w + "/labs/..%2Fx/start"}, 400, CodeInvalid, "lab"},
		{"MalformedJSON", request{method: "POST", path: "/api/workers", body: `{"name": "x",`}, 400, CodeBadRequest, ""},
		{"NotJSON", request{method: "POST", path: "/api/workers", body: `name=x`}, 400, CodeBadRequest, ""},
		{"EmptyBody", request{method: "POST", path: "/api/workers", body: ``, contentType: "application/json"}, 400, CodeBadRequest, ""},
		{"TrailingData", request{method: "POST", path: "/api/workers", body: `{"name":"x","region":"us-east-1"} {}`}, 400, CodeBadRequest, ""},
		{"UnknownField", request{method: "POST", path: "/api/workers", body: `{"name":"x","region":"us-east-1","colour":"red"}`}, 400, CodeInvalid, "colour"},
		{"WrongType", request{method: "POST", path: "/api/workers", body: `{"name":7,"region":"us-east-1"}`}, 400, CodeInvalid, "name"},
		{"NestedUnknownField", request{method: "PUT", path: "/api/settings", body: `{"set":{"bogus":1}}`}, 400, CodeInvalid, "bogus"},
		{"UnknownSettingToClear", request{method: "PUT", path: "/api/settings", body: `{"clear":["bogus"]}`}, 400, CodeInvalid, ""},
		{"DomainValidation", request{method: "POST", path: "/api/workers", body: `{"name":" ","region":"eu-north-9"}`}, 400, CodeInvalid, "region"},
		{"WrongContentType", request{method: "POST", path: "/api/workers", body: `{}`, contentType: "text/plain"}, 415, CodeUnsupportedMediaType, ""},
		{"NoContentType", request{method: "PUT", path: w + "/tags", body: `{"tags":{}}`, contentType: "-"}, 415, CodeUnsupportedMediaType, ""},
		{"MissingTags", request{method: "PUT", path: w + "/tags", body: `{}`}, 400, CodeInvalid, "tags"},
		{"MissingEnabled", request{method: "PUT", path: w + "/monitoring", body: `{}`}, 400, CodeInvalid, "enabled"},
		{"IdleTimeoutTooShort", request{method: "PUT", path: w + "/idle-detection", body: `{"enabled":true,"timeout_minutes":1}`}, 400, CodeInvalid, "timeout_minutes"},
		{"IdleTimeoutWhenDisabling", request{method: "PUT", path: w + "/idle-detection", body: `{"enabled":false,"timeout_minutes":30}`}, 400, CodeInvalid, "timeout_minutes"},
		{"EmptyLicenseToken", request{method: "POST", path: w + "/license", body: `{"token":""}`}, 400, CodeInvalid, "token"},
		{"Oversize", request{method: "POST", path: "/api/workers", body: `{"name":"` + strings.Repeat("a", MaxJSONBody) + `"}`}, 413, CodeRequestTooLarge, ""},
		{"LabWrongContentType", request{method: "POST", path: w + "/labs", body: "x", contentType: "text/plain"}, 415, CodeUnsupportedMediaType, ""},
		{"LabOversizeYAML", request{method: "POST", path: w + "/labs", body: strings.Repeat("a", MaxLabBody+1), contentType: "application/yaml"}, 413, CodeRequestTooLarge, ""},
		{"LabYAMLTooLargeForDomain", request{method: "POST", path: w + "/labs", body: strings.Repeat("a", worker.MaxLabYAMLBytes+1), contentType: "application/yaml"}, 400, CodeInvalid, "yaml"},
		{"LabEmptyYAML", request{method: "POST", path: w + "/labs", body: "  ", contentType: "application/yaml"}, 400, CodeInvalid, "yaml"},
		{"LabNotUTF8", request{method: "POST", path: w + "/labs", body: "\xff\xfe", contentType: "application/yaml"}, 400, CodeInvalid, "yaml"},
		{"RebuildBadName", request{method: "POST", path: "/api/admin/projections/Bad-Name/rebuild"}, 400, CodeInvalid, "name"},
		{"RebuildUnknown", request{method: "POST", path: "/api/admin/projections/nope/rebuild"}, 404, CodeNotFound, ""},
		{"MissingWorker", request{method: "GET", path: "/api/workers/0190c6a0-0000-7000-8000-0000000000ff"}, 404, CodeNotFound, ""},
		{"MissingWorkerHistory", request{method: "GET", path: "/api/workers/0190c6a0-0000-7000-8000-0000000000ff/history", as: "auditor"}, 404, CodeNotFound, ""},
		{"MissingWorkerState", request{method: "GET", path: "/api/workers/0190c6a0-0000-7000-8000-0000000000ff/state?at=2026-01-01T00:00:00Z", as: "auditor"}, 404, CodeNotFound, ""},
		{"MissingTask", request{method: "DELETE", path: "/api/tasks/0190c6a0-0000-7000-8000-0000000000ff"}, 404, CodeNotFound, ""},
		{"NoSuchRoute", request{method: "GET", path: "/api/nothing-here"}, 404, CodeNotFound, ""},
		{"MethodNotAllowed", request{method: "PATCH", path: "/api/workers"}, 405, CodeMethodNotAllowed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rq := tt.rq
			if rq.as == "" {
				rq.as = "admin"
			}
			if rq.contentType == "-" {
				rq.contentType, rq.header = "", http.Header{"Content-Type": nil}
			}
			res := e.do(t, rq)
			p := res.problem(t, tt.status, tt.code)
			if tt.code == CodeInvalid {
				problems, ok := p["problems"].([]any)
				require.True(t, ok, "problems missing: %s", res.body)
				if tt.field != "" {
					var fields []string
					for _, x := range problems {
						fields = append(fields, x.(map[string]any)["field"].(string))
					}
					require.Contains(t, fields, tt.field, "body %s", res.body)
				}
			}
		})
	}
}

// TestCommandOutcomes: 202 when something changed, 200 with changed:false
// when nothing did, 409 with the current status for an illegal transition.
func TestCommandOutcomes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.importWorker(t, "outcomes", worker.EC2Running)
	path := "/api/workers/" + id

	res := e.do(t, request{method: http.MethodPost, path: path + "/start", as: "manager"})
	require.Equal(t, http.StatusOK, res.status, "already running: body %s", res.body)
	var r application.Result
	res.json(t, &r)
	require.False(t, r.Changed)
	require.Empty(t, r.Events)

	res = e.do(t, request{method: http.MethodPost, path: path + "/stop", as: "manager"})
	require.Equal(t, http.StatusAccepted, res.status, "body %s", res.body)
	res.json(t, &r)
	require.Equal(t, []string{"worker.stop_requested.v1"}, r.Events)

	// Stopping: labs need a running worker.
	res = e.do(t, request{method: http.MethodPost, path: path + "/labs/lab-1/start", as: "manager"})
	p := res.problem(t, http.StatusConflict, CodeIllegalTransition)
	require.Equal(t, "stopping", p["current_status"])
	require.Contains(t, p["detail"], "stopping")

	// Tags: replace, then the same again changes nothing.
	res = e.do(t, request{method: http.MethodPut, path: path + "/tags", as: "manager", body: map[string]any{"tags": map[string]string{"a": "1"}}})
	require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
	res.json(t, &r)
	require.True(t, r.Changed)
	res = e.do(t, request{method: http.MethodPut, path: path + "/tags", as: "manager", body: map[string]any{"tags": map[string]string{"a": "1"}}})
	res.json(t, &r)
	require.False(t, r.Changed)
	require.Equal(t, http.StatusOK, res.status)

	// Terminate, then remove; a removed worker cannot be started.
	res = e.do(t, request{method: http.MethodPost, path: path + "/terminate", as: "admin"})
	require.Equal(t, http.StatusAccepted, res.status, "body %s", res.body)
	res = e.do(t, request{method: http.MethodDelete, path: path, as: "admin"})
	require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
	res = e.do(t, request{method: http.MethodPost, path: path + "/start", as: "admin"})
	p = res.problem(t, http.StatusConflict, CodeIllegalTransition)
	require.Equal(t, "removed", p["current_status"])

	// Idle detection with a per-worker timeout; licence on a worker that
	// is not running.
	id2 := e.importWorker(t, "outcomes-2", worker.EC2Stopped)
	res = e.do(t, request{method: http.MethodPut, path: "/api/workers/" + id2 + "/idle-detection", as: "admin",
		body: map[string]any{"enabled": true, "timeout_minutes": 45}})
	require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
	res.json(t, &r)
	waitProjected(t, "worker_view", r.Position)
	v := e.pollWorker(t, "/api/workers/"+id2)
	require.Equal(t, int64(45*60), v.IdleTimeoutSeconds)
	res = e.do(t, request{method: http.MethodPost, path: "/api/workers/" + id2 + "/license", as: "admin", body: map[string]any{"token": "abc"}})
	res.problem(t, http.StatusConflict, CodeIllegalTransition)

	res = e.do(t, request{method: http.MethodGet, path: "/api/workers/" + id2 + "/idle-status", as: "user"})
	require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
	var idle map[string]any
	res.json(t, &idle)
	require.Equal(t, id2, idle["worker_id"])
	require.Equal(t, "worker", idle["timeout_source"])
}

func TestLabRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.importWorker(t, "labs", worker.EC2Running)
	path := "/api/workers/" + id + "/labs"
	topology := "lab:\n  title: Demo\n  version: '0.2.2'\nnodes: []\nlinks: []\n"

	res := e.do(t, request{method: http.MethodPost, path: path + "?title=From%20YAML", as: "manager", body: topology, contentType: "application/yaml; charset=utf-8"})
	require.Equal(t, http.StatusAccepted, res.status, "body %s", res.body)
	var acc LabActionAccepted
	res.json(t, &acc)
	require.Equal(t, worker.LabImport, acc.Action)
	require.True(t, application.ValidID(acc.RequestID))
	require.Equal(t, id, acc.ID)

	res = e.do(t, request{method: http.MethodPost, path: path, as: "manager", body: map[string]any{"title": "From JSON", "yaml": topology}})
	require.Equal(t, http.StatusAccepted, res.status, "body %s", res.body)
	res = e.do(t, request{method: http.MethodPost, path: path, as: "manager", body: map[string]any{"title": "x", "yaml": topology, "extra": 1}})
	res.problem(t, http.StatusBadRequest, CodeInvalid)

	for _, verb := range []string{"start", "stop", "wipe"} {
		res = e.do(t, request{method: http.MethodPost, path: path + "/lab_1.x-y/" + verb, as: "manager"})
		require.Equal(t, http.StatusAccepted, res.status, "body %s", res.body)
		res.json(t, &acc)
		require.Equal(t, worker.LabAction(verb), acc.Action)
		require.Equal(t, "lab_1.x-y", acc.LabID)
	}
	res = e.do(t, request{method: http.MethodDelete, path: path + "/lab_1", as: "manager"})
	require.Equal(t, http.StatusAccepted, res.status, "body %s", res.body)
	res.json(t, &acc)
	waitProjected(t, "worker_view", acc.Position)

	v := e.pollWorker(t, "/api/workers/"+id)
	require.Len(t, v.PendingLabActions, 6)
	// The audit log keeps the size of an imported topology, never its text.
	res = e.do(t, request{method: http.MethodGet, path: "/api/workers/" + id + "/history?type=worker.lab_action_requested", as: "auditor"})
	require.Equal(t, http.StatusOK, res.status)
	require.NotContains(t, string(res.body), "nodes: []")
	require.Contains(t, string(res.body), "yaml_bytes")
}

// TestHistoryPaging pages through a worker's history with a cursor.
func TestHistoryPaging(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.importWorker(t, "history", worker.EC2Running)
	ctx := ctxAs("admin")
	var last application.Result
	for i := range 6 {
		r, err := e.app.ReplaceWorkerTags(ctx, id, map[string]string{"n": fmt.Sprint(i)})
		require.NoError(t, err)
		last = r
	}
	waitProjected(t, "audit_log", last.Position)

	var all []application.AuditEntry
	cursor := ""
	pages := 0
	for {
		q := "limit=3"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		res := e.do(t, request{method: http.MethodGet, path: "/api/workers/" + id + "/history?" + q, as: "auditor"})
		require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
		var p application.AuditPage
		res.json(t, &p)
		pages++
		all = append(all, p.Items...)
		if p.NextCursor == "" {
			break
		}
		require.Len(t, p.Items, 3)
		cursor = p.NextCursor
	}
	require.Len(t, all, 7, "imported + 6 tag changes")
	require.Equal(t, 3, pages)
	require.Equal(t, "worker.imported.v1", all[6].EventType, "newest first")
	for i := 1; i < len(all); i++ {
		require.Greater(t, all[i-1].Revision, all[i].Revision)
	}
	require.Equal(t, `{"external":false,"tags":{"n":"5"}}`, compactJSON(t, all[0].Data))
	require.Equal(t, "u-admin", all[0].Actor.Subject)
	require.NotEmpty(t, all[0].CausationID)

	// Filtered by type prefix.
	res := e.do(t, request{method: http.MethodGet, path: "/api/workers/" + id + "/history?type=worker.imported", as: "admin"})
	var p application.AuditPage
	res.json(t, &p)
	require.Len(t, p.Items, 1)
	require.Empty(t, p.NextCursor)

	// The same entries through /api/audit.
	res = e.do(t, request{method: http.MethodGet, path: "/api/audit?worker=" + id + "&type=worker.tags&actor=admin&limit=100", as: "auditor"})
	require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
	res.json(t, &p)
	require.Len(t, p.Items, 6)
}

func compactJSON(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal(raw, &v))
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// TestTimeTravel checks that state?at= equals the fold of the stream up to
// that instant, for every instant between events: the read model's row
// right after each command is the expected state from that event's instant
// until the next event's.
func TestTimeTravel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.importWorker(t, "time-travel", worker.EC2Running)
	ctx := ctxAs("admin")
	steps := []func() (application.Result, error){
		func() (application.Result, error) {
			return e.app.ReplaceWorkerTags(ctx, id, map[string]string{"step": "1"})
		},
		func() (application.Result, error) { return e.app.SetDetailedMonitoring(ctx, id, true) },
		func() (application.Result, error) { return e.app.StopWorker(ctx, id) },
		func() (application.Result, error) { return e.app.SetIdleDetection(ctx, id, false, 0) },
	}
	snapshots := []worker.State{e.pollWorker(t, "/api/workers/"+id).State}
	for _, step := range steps {
		time.Sleep(2 * time.Millisecond) // distinct instants
		r, err := step()
		require.NoError(t, err)
		require.True(t, r.Changed)
		waitProjected(t, "worker_view", r.Position)
		snapshots = append(snapshots, e.pollWorker(t, "/api/workers/"+id).State)
	}
	waitProjected(t, "audit_log", e.pollWorker(t, "/api/workers/"+id).Position)
	res := e.do(t, request{method: http.MethodGet, path: "/api/workers/" + id + "/history", as: "auditor"})
	var hist application.AuditPage
	res.json(t, &hist)
	require.Len(t, hist.Items, len(snapshots))
	times := make([]time.Time, len(hist.Items))
	for i, h := range hist.Items {
		times[len(times)-1-i] = h.OccurredAt // oldest first
	}

	stateAt := func(at time.Time) (int, application.WorkerSnapshot) {
		res := e.do(t, request{method: http.MethodGet, path: "/api/workers/" + id + "/state?at=" + url.QueryEscape(at.Format(time.RFC3339Nano)), as: "auditor"})
		var s application.WorkerSnapshot
		if res.status == http.StatusOK {
			res.json(t, &s)
		}
		return res.status, s
	}
	for i := range times {
		instants := []time.Time{times[i]}
		if i+1 < len(times) {
			gap := times[i+1].Sub(times[i])
			instants = append(instants, times[i].Add(gap/2), times[i+1].Add(-time.Microsecond))
		} else {
			instants = append(instants, times[i].Add(time.Hour))
		}
		for _, at := range instants {
			status, s := stateAt(at)
			require.Equal(t, http.StatusOK, status, "at %s", at)
			require.Equal(t, int64(i), s.Revision, "at %s", at)
			require.Equal(t, snapshots[i], s.State, "state at %s (after event %d)", at, i)
		}
	}
	// Before the first event the worker did not exist.
	res = e.do(t, request{method: http.MethodGet, path: "/api/workers/" + id + "/state?at=" + url.QueryEscape(times[0].Add(-time.Microsecond).Format(time.RFC3339Nano)), as: "auditor"})
	p := res.problem(t, http.StatusNotFound, CodeNotFound)
	require.Contains(t, p["detail"], "did not exist yet")
}

func TestSettingsRoundTrip(t *testing.T) {
	e := newEnv(t) // not parallel: the settings are global
	res := e.do(t, request{method: http.MethodPut, path: "/api/settings", as: "admin",
		body: map[string]any{"set": map[string]any{"instance_type": "c5.metal", "idle_timeout_seconds": 1800}}})
	require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
	var r application.Result
	res.json(t, &r)
	require.True(t, r.Changed)
	waitProjected(t, "settings_view", r.Position)
	t.Cleanup(func() {
		_, err := e.app.UpdateSettings(ctxAs("admin"), settings.Patch{}, []settings.Key{settings.KeyInstanceType, settings.KeyIdleTimeoutSeconds})
		require.NoError(t, err)
	})

	res = e.do(t, request{method: http.MethodGet, path: "/api/settings", as: "auditor"})
	require.Equal(t, http.StatusOK, res.status)
	var v application.SettingsView
	res.json(t, &v)
	require.Equal(t, "c5.metal", v.Effective.InstanceType)
	require.Equal(t, int64(1800), v.Effective.IdleTimeoutSeconds)
	require.Equal(t, "saved", string(v.Sources["instance_type"]))
	require.Equal(t, "environment", string(v.Sources["ami_name"]))
	require.Equal(t, "u-admin", v.UpdatedBy.Subject)

	res = e.do(t, request{method: http.MethodPut, path: "/api/settings", as: "admin", body: map[string]any{"clear": []string{"instance_type"}}})
	require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
	res.json(t, &r)
	waitProjected(t, "settings_view", r.Position)
	res = e.do(t, request{method: http.MethodGet, path: "/api/settings", as: "admin"})
	res.json(t, &v)
	require.Equal(t, "m5zn.metal", v.Effective.InstanceType)

	res = e.do(t, request{method: http.MethodPut, path: "/api/settings", as: "admin", body: map[string]any{"set": map[string]any{"fleet_metrics_interval_seconds": 1}}})
	res.problem(t, http.StatusBadRequest, CodeInvalid)
}

func TestTasks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dept := "dept-" + randomHex(6)
	admin := ctxAs("admin")
	mk := func(title, assignee string) string {
		r, err := e.app.CreateTask(admin, application.CreateTask{Title: title, AssigneeID: assignee, Department: dept})
		require.NoError(t, err)
		waitProjected(t, "task_view", r.Position)
		return r.ID
	}
	mine := mk("for user", "u-user")
	mk("for someone else", "u-other")

	count := func(as, query string) int {
		res := e.do(t, request{method: http.MethodGet, path: "/api/tasks?department=" + dept + query, as: as})
		require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
		var p TaskPage
		res.json(t, &p)
		require.Len(t, p.Items, p.Total)
		return p.Total
	}
	require.Equal(t, 2, count("admin", ""))
	require.Equal(t, 2, count("auditor", ""))
	require.Equal(t, 0, count("manager", ""), "the manager's department is ops")
	require.Equal(t, 1, count("user", ""), "a user sees the tasks assigned to them")
	res := e.do(t, request{method: http.MethodGet, path: "/api/tasks/" + mine, as: "user"})
	require.Equal(t, http.StatusOK, res.status)

	res = e.do(t, request{method: http.MethodPost, path: "/api/tasks", as: "user", body: map[string]any{"title": "t", "assignee_id": "u-admin"}})
	res.problem(t, http.StatusForbidden, CodeForbidden)
	res = e.do(t, request{method: http.MethodPost, path: "/api/tasks", as: "user", body: map[string]any{"title": "own", "priority": "high"}})
	require.Equal(t, http.StatusCreated, res.status, "body %s", res.body)
	require.True(t, strings.HasPrefix(res.header.Get("Location"), "/api/tasks/"))
	res = e.do(t, request{method: http.MethodPost, path: "/api/tasks", as: "user", body: map[string]any{"title": "own", "priority": "urgent"}})
	res.problem(t, http.StatusBadRequest, CodeInvalid)

	res = e.do(t, request{method: http.MethodPut, path: "/api/tasks/" + mine, as: "user", body: map[string]any{"status": "in_progress"}})
	require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
	res = e.do(t, request{method: http.MethodPut, path: "/api/tasks/" + mine, as: "user", body: map[string]any{"department": "elsewhere"}})
	res.problem(t, http.StatusForbidden, CodeForbidden)
}

func TestSystemHealthAndProjections(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	res := e.do(t, request{method: http.MethodGet, path: "/api/system/health", as: "user"})
	require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
	var h application.SystemHealth
	res.json(t, &h)
	for _, c := range []string{"database", "event_store", "projections"} {
		require.Contains(t, h.Components, c)
	}
	require.Equal(t, application.HealthUp, h.Components["database"].Status)
	require.Equal(t, application.HealthUp, h.Components["event_store"].Status)
	names := map[string]bool{}
	for _, p := range h.Projections {
		names[p.Name] = true
		require.True(t, p.Running)
	}
	want := map[string]bool{}
	for _, p := range projections.All(application.EventRegistry()) {
		want[p.Name()] = true
	}
	require.Equal(t, want, names)
	require.Equal(t, "no-store", res.header.Get("Cache-Control"))

	res = e.do(t, request{method: http.MethodGet, path: "/api/admin/projections", as: "admin"})
	require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
	var list ProjectionList
	res.json(t, &list)
	require.Len(t, list.Items, len(want))
	for _, p := range list.Items {
		require.NotEmpty(t, p.Position)
		require.Contains(t, []string{application.RebuildIdle, application.RebuildRunning, application.RebuildSucceeded}, p.Rebuild.State)
	}
}

// TestRebuildConflicts: a rebuild already running in this process or
// holding the lock in another instance is 409.
func TestRebuildConflicts(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	e := newEnv(t, envOptions{rebuild: rebuildHook(entered, release)})
	const path = "/api/admin/projections/settings_view/rebuild"

	res := e.do(t, request{method: http.MethodPost, path: path, as: "admin"})
	require.Equal(t, http.StatusAccepted, res.status, "body %s", res.body)
	var st application.RebuildState
	res.json(t, &st)
	require.Equal(t, application.RebuildRunning, st.State)
	require.Equal(t, "u-admin", st.StartedBy)
	<-entered

	res = e.do(t, request{method: http.MethodPost, path: path, as: "admin"})
	res.problem(t, http.StatusConflict, CodeRebuildInProgress)

	// Another instance (operator) sees the lock held.
	other := newEnv(t)
	res = other.do(t, request{method: http.MethodPost, path: path, as: "admin"})
	res.problem(t, http.StatusConflict, CodeRebuildInProgress)
	res = other.do(t, request{method: http.MethodGet, path: "/api/admin/projections", as: "admin"})
	var list ProjectionList
	res.json(t, &list)
	found := false
	for _, p := range list.Items {
		if p.Name == "settings_view" {
			found = true
			require.Equal(t, application.RebuildRunning, p.Rebuild.State)
			require.True(t, p.Rebuild.Elsewhere)
		}
	}
	require.True(t, found)

	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, e.operator.Wait(ctx))
	res = e.do(t, request{method: http.MethodGet, path: "/api/admin/projections", as: "admin"})
	res.json(t, &list)
	for _, p := range list.Items {
		if p.Name == "settings_view" {
			require.Equal(t, application.RebuildSucceeded, p.Rebuild.State, "%+v", p.Rebuild)
			require.False(t, p.Rebuild.FinishedAt.IsZero())
		}
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.importWorker(t, "metrics", worker.EC2Running)
	e.do(t, request{method: http.MethodGet, path: "/api/workers/" + id, as: "user"})
	e.do(t, request{method: http.MethodGet, path: "/api/no/such/" + id, as: "user"})
	e.do(t, request{method: http.MethodGet, path: "/wp-admin/" + id})
	res := e.do(t, request{method: http.MethodGet, path: "/metrics"})
	require.Equal(t, http.StatusOK, res.status)
	body := string(res.body)
	require.Contains(t, body, `cmlcm_http_requests_total{method="GET",route="/api/workers/:id",status="200"} 1`)
	require.Contains(t, body, `route="unmatched",status="404"`)
	require.Contains(t, body, "cmlcm_http_request_duration_seconds_bucket")
	require.Contains(t, body, "go_goroutines")
	require.Contains(t, body, "process_")
	require.NotContains(t, body, id, "a raw path reached a label")
}

// TestInternalErrorsAreLoggedNotLeaked serves from a read model whose
// database pool is closed: the handler's error is internal, logged with the
// request id, and its text never reaches the client.
func TestInternalErrorsAreLoggedNotLeaked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	closed, err := pgdb.Connect(context.Background(), shared.url)
	require.NoError(t, err)
	closed.Close()
	sealer, err := sealing.New(sealing.RandomKey())
	require.NoError(t, err)
	app := application.New(application.Options{
		Store: shared.store, Sealer: sealer, Logger: slog.New(slog.DiscardHandler),
		Workers: projections.NewWorkerReader(closed), Settings: projections.NewSettingsReader(closed),
		Tasks: projections.NewTaskReader(closed), Defaults: testDefaults,
	})
	logs := &syncBuffer{}
	s := New(Options{
		Logger: slog.New(slog.NewJSONHandler(logs, nil)), App: app, History: e.history, System: e.system,
		Admin: e.admin, Auth: testAuthenticator{}, Telemetry: e.telemetry, Jobs: e.jobs, Fleet: e.fleet,
	})
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/api/workers", nil)
	req.Header.Set(testUserHeader, "user")
	req.Header.Set("X-Request-Id", "req-internal-1")
	s.Handler().ServeHTTP(rec, req)
	require.Equal(t, http.StatusInternalServerError, rec.Code)
	var p map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &p))
	require.Equal(t, CodeInternal, p["code"])
	require.Equal(t, "req-internal-1", p["request_id"])
	require.NotContains(t, rec.Body.String(), "closed")
	require.Contains(t, logs.String(), "req-internal-1")
	require.Contains(t, logs.String(), "closed pool")
}
