package api

import (
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// Access says how a route is authorised.
type Access int

// Kinds of access.
const (
	// AccessAction routes need a principal allowed to perform the route's
	// rbac.Action; the application handler authorises it, and the server
	// checks it first so that a refused caller gets 401/403 before any
	// validation of the request.
	AccessAction Access = iota
	// AccessPublic routes need no credentials (probes, metrics, the API
	// document and its page).
	AccessPublic
	// AccessAuthenticator routes are the /api/auth routes, served by the
	// Authenticator (api.Options.Auth): documented here, registered there.
	AccessAuthenticator
)

// Route is one operation of the HTTP API. The route table (Routes) is the
// single description from which the router is built, the OpenAPI document
// is generated, and the RBAC matrix test derives its expectations: a route is
// added by writing its handler and one entry of the table.
type Route struct {
	Method string
	// Path is the OpenAPI path template ("/api/workers/{id}"); the Echo path
	// is derived from it ("/api/workers/:id").
	Path        string
	OperationID string
	Tag         string
	Summary     string
	Description string
	Access      Access
	// Action is what the handler authorises (AccessAction routes).
	Action rbac.Action
	Params []Param
	Body   *Body
	// Responses are the successful responses; error responses are derived
	// (see ErrorStatuses) plus Errors.
	Responses []Response
	// Errors lists error statuses beyond the derived ones (409 for commands).
	Errors []int
	// Rules describes access rules finer than the roles (ownership), for
	// the document and the matrix.
	Rules string
	// Security names the accepted security schemes of an authenticator
	// route ("" for anonymous); nil means none (public).
	Security []string

	handler echo.HandlerFunc
}

// Param is a path, query or header parameter.
type Param struct {
	Name        string
	In          string // path, query, header
	Description string
	Required    bool
	Schema      map[string]any
}

// Body is a request body: one schema per accepted media type.
type Body struct {
	Required bool
	Media    []Media
	// Limit is the most bytes accepted.
	Limit int64
}

// Media is a media type with its schema: Go (a value whose type is
// reflected) or Schema (a literal JSON Schema).
type Media struct {
	Type   string
	Go     any
	Schema map[string]any
}

// Response is a successful response.
type Response struct {
	Status      int
	Description string
	Media       []Media
	// Headers names response headers with their description.
	Headers map[string]string
}

// EchoPath converts the route's OpenAPI path template to Echo's syntax.
func (r Route) EchoPath() string { return paramRE.ReplaceAllString(r.Path, ":$1") }

var paramRE = regexp.MustCompile(`\{([a-zA-Z_][a-zA-Z0-9_]*)\}`)

// PathParams returns the names of the path's parameters, in order.
func (r Route) PathParams() []string {
	var out []string
	for _, m := range paramRE.FindAllStringSubmatch(r.Path, -1) {
		out = append(out, m[1])
	}
	return out
}

// Roles returns the external roles allowed to call the route, derived from
// rbac.Policy through the route's action (with the hierarchy admin ⊇
// manager ⊇ user). Public and authenticator routes return nil.
func (r Route) Roles() []rbac.Role {
	if r.Access != AccessAction {
		return nil
	}
	var out []rbac.Role
	for _, role := range rbac.ExternalRoles {
		if rbac.Allowed(rbac.Principal{Roles: []rbac.Role{role}}, r.Action) {
			out = append(out, role)
		}
	}
	return out
}

// ErrorStatuses returns every error status the route documents: 400 when it
// takes parameters or a body, 401 and 403 for authorised routes, 404 when its
// path names a resource, 413 and 415 with a body, the route's own Errors,
// and 500.
func (r Route) ErrorStatuses() []int {
	set := map[int]bool{http.StatusInternalServerError: true}
	if len(r.Params) > 0 || r.Body != nil {
		set[http.StatusBadRequest] = true
	}
	if r.Access == AccessAction {
		set[http.StatusUnauthorized] = true
		set[http.StatusForbidden] = true
	}
	if len(r.PathParams()) > 0 {
		set[http.StatusNotFound] = true
	}
	if r.Body != nil {
		set[http.StatusRequestEntityTooLarge] = true
		set[http.StatusUnsupportedMediaType] = true
	}
	for _, s := range r.Errors {
		set[s] = true
	}
	out := make([]int, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// Routes returns the route table of the HTTP API.
func Routes() []Route { return (&Server{}).routes() }

// Schemas of parameters used by many routes.
var (
	uuidSchema    = map[string]any{"type": "string", "format": "uuid", "pattern": `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`}
	labIDSchema   = map[string]any{"type": "string", "pattern": labIDRE.String()}
	limitSchema   = map[string]any{"type": "integer", "minimum": 1, "maximum": application.MaxPageSize, "default": application.DefaultPageSize}
	offsetSchema  = map[string]any{"type": "integer", "minimum": 0, "maximum": MaxOffset, "default": 0}
	timeSchema    = map[string]any{"type": "string", "format": "date-time"}
	typeSchema    = map[string]any{"type": "string", "pattern": `^[a-z0-9_.]+$`, "maxLength": application.MaxTypePrefixLength}
	cursorSchema  = map[string]any{"type": "string", "maxLength": 64}
	workerIDParam = Param{Name: "id", In: "path", Required: true, Description: "The worker's id.", Schema: uuidSchema}
	taskIDParam   = Param{Name: "id", In: "path", Required: true, Description: "The task's id.", Schema: uuidSchema}
	labParam      = Param{Name: "lab", In: "path", Required: true, Description: "The CML lab id.", Schema: labIDSchema}
	limitParam    = Param{Name: "limit", In: "query", Description: "Page size.", Schema: limitSchema}
	offsetParam   = Param{Name: "offset", In: "query", Description: "Items to skip.", Schema: offsetSchema}
	cursorParam   = Param{Name: "cursor", In: "query", Description: "The next_cursor of the previous page.", Schema: cursorSchema}
	typeParam     = Param{Name: "type", In: "query", Description: "Only events whose type starts with this prefix (worker.stop).", Schema: typeSchema}
	jsonBody      = func(v any) *Body {
		return &Body{Required: true, Limit: MaxJSONBody, Media: []Media{{Type: mimeJSON, Go: v}}}
	}
	jsonOK = func(status int, desc string, v any) Response {
		return Response{Status: status, Description: desc, Media: []Media{{Type: mimeJSON, Go: v}}}
	}
	commandResponses = func(accepted bool) []Response {
		if !accepted {
			return []Response{jsonOK(http.StatusOK, "Done (\"changed\": false when nothing had to change).", application.Result{})}
		}
		return []Response{
			jsonOK(http.StatusAccepted, "Recorded; the background jobs carry it out.", application.Result{}),
			jsonOK(http.StatusOK, "Nothing to do: already in that state (\"changed\": false).", application.Result{}),
		}
	}
)

// routes is the route table, with handlers bound to s.
func (s *Server) routes() []Route {
	conflict := []int{http.StatusConflict}
	return append([]Route{
		// Workers.
		{
			Method: http.MethodGet, Path: "/api/workers", OperationID: "listWorkers", Tag: "workers",
			Summary:     "List workers",
			Description: "Workers from the worker_view read model, ordered by name. Terminated and removed workers are left out unless include_terminated or status asks for them.",
			Action:      rbac.WorkersRead,
			Params: []Param{
				{Name: "region", In: "query", Description: "Only this AWS region.", Schema: map[string]any{"type": "string", "maxLength": 32}},
				{Name: "status", In: "query", Description: "Only this status.", Schema: map[string]any{"type": "string", "enum": statusNames()}},
				{Name: "include_terminated", In: "query", Description: "Include terminated and removed workers.", Schema: map[string]any{"type": "boolean", "default": false}},
				{Name: "q", In: "query", Description: "Text matched against name, instance id and region, or an exact worker id.", Schema: map[string]any{"type": "string", "maxLength": 200}},
				limitParam, offsetParam,
			},
			Responses: []Response{jsonOK(http.StatusOK, "A page of workers.", WorkerPage{})},
			handler:   s.listWorkers,
		},
		{
			Method: http.MethodPost, Path: "/api/workers", OperationID: "createWorker", Tag: "workers",
			Summary:     "Create a worker",
			Description: "Records the worker and requests the launch of its EC2 instance. Empty fields take the runtime settings.",
			Action:      rbac.WorkerCreate, Body: jsonBody(CreateWorkerRequest{}),
			Responses: []Response{{Status: http.StatusAccepted, Description: "Created; the launch runs in the background.",
				Media: []Media{{Type: mimeJSON, Go: application.Result{}}}, Headers: map[string]string{"Location": "The worker's URL."}}},
			handler: s.createWorker,
		},
		{
			Method: http.MethodPost, Path: "/api/workers/import", OperationID: "importWorkers", Tag: "workers",
			Summary: "Import existing instances",
			Description: "Looks instances of a managed region up in EC2 (by instance id, AMI id or AMI name pattern) and makes each unmanaged live one a worker. " +
				"A look-up by AMI must find exactly one unmanaged instance unless \"all\" is true (400 ambiguous, listing them). " +
				"Managed, terminated and shutting-down instances are reported as skipped. 201 when at least one worker was created, else 200.",
			Action: rbac.WorkerImport, Body: jsonBody(application.ImportRequest{}),
			Errors: []int{http.StatusNotFound, http.StatusConflict, http.StatusBadGateway, http.StatusServiceUnavailable},
			Responses: []Response{
				{Status: http.StatusCreated, Description: "Imported (see skipped for the instances left alone).",
					Media: []Media{{Type: mimeJSON, Go: application.ImportOutcome{}}}, Headers: map[string]string{"Location": "The worker's URL, when exactly one was imported."}},
				jsonOK(http.StatusOK, "Nothing imported: every match was skipped.", application.ImportOutcome{}),
			},
			handler: s.importWorkers,
		},
		{
			Method: http.MethodGet, Path: "/api/workers/{id}", OperationID: "getWorker", Tag: "workers",
			Summary: "Get a worker", Action: rbac.WorkersRead, Params: []Param{workerIDParam},
			Responses: []Response{jsonOK(http.StatusOK, "The worker.", application.WorkerView{})},
			handler:   s.getWorker,
		},
		{
			Method: http.MethodDelete, Path: "/api/workers/{id}", OperationID: "removeWorker", Tag: "workers",
			Summary:     "Stop managing a worker",
			Description: "The worker becomes removed; its instance is left untouched.",
			Action:      rbac.WorkerRemove, Params: []Param{workerIDParam}, Errors: conflict,
			Responses: commandResponses(false), handler: s.workerCommand(false, s.removeWorker),
		},
		{
			Method: http.MethodPost, Path: "/api/workers/{id}/terminate", OperationID: "terminateWorker", Tag: "workers",
			Summary: "Terminate a worker's instance", Action: rbac.WorkerTerminate, Params: []Param{workerIDParam}, Errors: conflict,
			Responses: commandResponses(true), handler: s.workerCommand(true, s.terminateWorker),
		},
		{
			Method: http.MethodPost, Path: "/api/workers/{id}/start", OperationID: "startWorker", Tag: "workers",
			Summary: "Start a worker", Action: rbac.WorkerStart, Params: []Param{workerIDParam}, Errors: conflict,
			Responses: commandResponses(true), handler: s.workerCommand(true, s.startWorker),
		},
		{
			Method: http.MethodPost, Path: "/api/workers/{id}/stop", OperationID: "stopWorker", Tag: "workers",
			Summary: "Stop a worker", Action: rbac.WorkerStop, Params: []Param{workerIDParam}, Errors: conflict,
			Responses: commandResponses(true), handler: s.workerCommand(true, s.stopWorker),
		},
		{
			Method: http.MethodPost, Path: "/api/workers/{id}/refresh", OperationID: "refreshWorker", Tag: "workers",
			Summary:     "Refresh a worker now",
			Description: "Enqueues a refresh of the worker's EC2 state, metrics, CML service, licence and labs. At most one refresh per worker is enqueued per throttle period (REFRESH_THROTTLE) across every instance of the service; a repeated request returns the job already enqueued with \"duplicate\": true.",
			Action:      rbac.WorkerRefresh, Params: []Param{workerIDParam}, Errors: conflict,
			Responses: []Response{jsonOK(http.StatusAccepted, "Enqueued (or already enqueued).", application.EnqueuedJob{})},
			handler:   s.refreshWorker,
		},
		{
			Method: http.MethodPut, Path: "/api/workers/{id}/tags", OperationID: "replaceWorkerTags", Tag: "workers",
			Summary: "Replace a worker's tags", Action: rbac.WorkerTags, Params: []Param{workerIDParam},
			Body: jsonBody(TagsRequest{}), Errors: conflict,
			Responses: commandResponses(false), handler: s.workerCommand(false, s.replaceTags),
		},
		{
			Method: http.MethodPut, Path: "/api/workers/{id}/monitoring", OperationID: "setDetailedMonitoring", Tag: "workers",
			Summary: "Switch detailed CloudWatch monitoring", Action: rbac.WorkerMonitoring, Params: []Param{workerIDParam},
			Body: jsonBody(MonitoringRequest{}), Errors: conflict,
			Responses: commandResponses(false), handler: s.workerCommand(false, s.setMonitoring),
		},
		{
			Method: http.MethodPut, Path: "/api/workers/{id}/idle-detection", OperationID: "setIdleDetection", Tag: "workers",
			Summary: "Enable or disable idle auto-stop", Action: rbac.WorkerIdleDetection, Params: []Param{workerIDParam},
			Body: jsonBody(IdleDetectionRequest{}), Errors: conflict,
			Responses: commandResponses(false), handler: s.workerCommand(false, s.setIdleDetection),
		},
		{
			Method: http.MethodPost, Path: "/api/workers/{id}/license", OperationID: "registerLicense", Tag: "workers",
			Summary: "Register the CML licence", Description: "The worker must be running.",
			Action: rbac.WorkerLicense, Params: []Param{workerIDParam}, Body: jsonBody(LicenseRequest{}), Errors: conflict,
			Responses: commandResponses(true), handler: s.workerCommand(true, s.registerLicense),
		},
		{
			Method: http.MethodDelete, Path: "/api/workers/{id}/license", OperationID: "deregisterLicense", Tag: "workers",
			Summary: "Deregister the CML licence", Description: "The worker must be running.",
			Action: rbac.WorkerLicense, Params: []Param{workerIDParam}, Errors: conflict,
			Responses: commandResponses(true), handler: s.workerCommand(true, s.deregisterLicense),
		},
		{
			Method: http.MethodGet, Path: "/api/workers/{id}/idle-status", OperationID: "getIdleStatus", Tag: "workers",
			Summary: "Evaluate the idle rule now", Action: rbac.WorkerObserve, Params: []Param{workerIDParam},
			Responses: []Response{jsonOK(http.StatusOK, "The idle decision with its inputs.", application.WorkerIdleStatus{})},
			handler:   s.idleStatus,
		},

		{
			Method: http.MethodGet, Path: "/api/workers/{id}/metrics", OperationID: "getWorkerMetrics", Tag: "workers",
			Summary:     "A worker's metrics over time",
			Description: "CPU, memory and disk samples from the worker_metrics read model, averaged per step. Default range: the last 6 hours; default step: about 360 points over the range.",
			Action:      rbac.WorkerObserve,
			Params: []Param{workerIDParam,
				{Name: "from", In: "query", Description: "Start of the range (RFC 3339); default to minus 6 hours.", Schema: timeSchema},
				{Name: "to", In: "query", Description: "End of the range (RFC 3339); default now.", Schema: timeSchema},
				{Name: "step", In: "query", Description: "Seconds per point (at least 10).", Schema: map[string]any{"type": "integer", "minimum": 1, "maximum": maxMetricsStepSeconds}},
			},
			Responses: []Response{jsonOK(http.StatusOK, "The series.", application.MetricsSeries{})},
			handler:   s.workerMetrics,
		},
		{
			Method: http.MethodGet, Path: "/api/workers/{id}/labs", OperationID: "listWorkerLabs", Tag: "labs",
			Summary: "A worker's labs", Description: "The lab list last observed on the controller (worker_labs read model).",
			Action: rbac.WorkerObserve, Params: []Param{workerIDParam},
			Responses: []Response{jsonOK(http.StatusOK, "The labs.", application.WorkerLabs{})},
			handler:   s.workerLabs,
		},
		{
			Method: http.MethodGet, Path: "/api/workers/{id}/labs/{lab}/download", OperationID: "downloadLab", Tag: "labs",
			Summary: "Download a lab's topology", Description: "Asks the worker's controller for the lab's topology. The worker must be running.",
			Action: rbac.WorkerObserve, Params: []Param{workerIDParam, labParam},
			Errors: []int{http.StatusConflict, http.StatusBadGateway, http.StatusServiceUnavailable},
			Responses: []Response{{Status: http.StatusOK, Description: "The topology as YAML.",
				Media:   []Media{{Type: mimeYAML, Schema: map[string]any{"type": "string"}}},
				Headers: map[string]string{"Content-Disposition": "attachment; filename=<lab>.yaml"}}},
			handler: s.downloadLab,
		},

		// Labs.
		{
			Method: http.MethodPost, Path: "/api/workers/{id}/labs", OperationID: "importLab", Tag: "labs",
			Summary:     "Import a lab",
			Description: "Send the topology as the body with Content-Type application/yaml (title in ?title=), or as JSON {title, yaml}. The worker must be running.",
			Action:      rbac.WorkerLabsManage,
			Params: []Param{workerIDParam, {Name: "title", In: "query", Description: "Title of the new lab (YAML bodies only).",
				Schema: map[string]any{"type": "string", "maxLength": 255}}},
			Body: &Body{Required: true, Limit: MaxLabBody, Media: []Media{
				{Type: mimeYAML, Schema: map[string]any{"type": "string", "maxLength": worker.MaxLabYAMLBytes}},
				{Type: mimeJSON, Go: LabImportRequest{}},
			}},
			Errors:    conflict,
			Responses: []Response{jsonOK(http.StatusAccepted, "Requested; a background job imports it.", LabActionAccepted{})},
			handler:   s.importLab,
		},
		s.labRoute(http.MethodPost, "start", worker.LabStart),
		s.labRoute(http.MethodPost, "stop", worker.LabStop),
		s.labRoute(http.MethodPost, "wipe", worker.LabWipe),
		s.labRoute(http.MethodDelete, "", worker.LabDelete),

		// History.
		{
			Method: http.MethodGet, Path: "/api/workers/{id}/history", OperationID: "getWorkerHistory", Tag: "history",
			Summary:     "A worker's lifecycle events",
			Description: "Newest first, from the audit_log read model, each with its actor, correlation and causation ids.",
			Action:      rbac.WorkerHistory, Params: []Param{workerIDParam, typeParam, cursorParam, limitParam},
			Responses: []Response{jsonOK(http.StatusOK, "A page of events.", application.AuditPage{})},
			handler:   s.workerHistory,
		},
		{
			Method: http.MethodGet, Path: "/api/workers/{id}/state", OperationID: "getWorkerStateAt", Tag: "history",
			Summary:     "A worker as it was at an instant",
			Description: "Folds the worker's lifecycle stream from the event store up to the last event that occurred at or before `at`. 404 when the worker did not exist yet.",
			Action:      rbac.WorkerHistory,
			Params: []Param{workerIDParam, {Name: "at", In: "query", Required: true, Description: "The instant, RFC 3339.",
				Schema: timeSchema}},
			Responses: []Response{jsonOK(http.StatusOK, "The worker's state at that instant.", application.WorkerSnapshot{})},
			handler:   s.workerStateAt,
		},
		{
			Method: http.MethodGet, Path: "/api/audit", OperationID: "getAuditLog", Tag: "history",
			Summary:     "The audit log",
			Description: "Lifecycle events of workers, settings and tasks, newest first. JSON pages by default; CSV (streamed, for large exports) with ?format=csv or Accept: text/csv, where limit 0 (the default) exports every matching entry.",
			Action:      rbac.AuditRead,
			Params: []Param{
				{Name: "actor", In: "query", Description: "Only events caused by this subject or username.", Schema: map[string]any{"type": "string", "maxLength": 256}},
				{Name: "worker", In: "query", Description: "Only events of this worker.", Schema: uuidSchema},
				typeParam,
				{Name: "from", In: "query", Description: "Events that occurred at or after this instant (RFC 3339).", Schema: timeSchema},
				{Name: "to", In: "query", Description: "Events that occurred before this instant (RFC 3339).", Schema: timeSchema},
				cursorParam,
				{Name: "limit", In: "query", Description: "Page size (JSON: 1 to 1000, default 100); most rows (CSV: default 0, all).", Schema: map[string]any{"type": "integer", "minimum": 0}},
				{Name: "format", In: "query", Description: "json (default) or csv.", Schema: map[string]any{"type": "string", "enum": []string{"json", "csv"}}},
			},
			Responses: []Response{{Status: http.StatusOK, Description: "A page of audit entries, or the CSV export.", Media: []Media{
				{Type: mimeJSON, Go: application.AuditPage{}},
				{Type: mimeCSV, Schema: map[string]any{"type": "string", "description": "Header row: " + strings.Join(auditCSVColumns, ",") + "."}},
			}}},
			handler: s.audit,
		},

		// Settings.
		{
			Method: http.MethodGet, Path: "/api/settings", OperationID: "getSettings", Tag: "settings",
			Summary: "Runtime settings", Description: "Effective values, where each comes from, and what was saved.",
			Action: rbac.SettingsRead, Responses: []Response{jsonOK(http.StatusOK, "The settings.", application.SettingsView{})},
			handler: s.getSettings,
		},
		{
			Method: http.MethodPut, Path: "/api/settings", OperationID: "updateSettings", Tag: "settings",
			Summary:     "Save or clear runtime settings",
			Description: "A saved value wins over the environment; a cleared one follows the environment again.",
			Action:      rbac.SettingsUpdate, Body: jsonBody(SettingsUpdateRequest{}), Errors: conflict,
			Responses: commandResponses(false), handler: s.updateSettings,
		},

		// System and administration.
		{
			Method: http.MethodGet, Path: "/api/system/health", OperationID: "getSystemHealth", Tag: "system",
			Summary: "Health of the service's components", Description: "Database, event store and each read model with its lag.",
			Action: rbac.SystemRead, Responses: []Response{jsonOK(http.StatusOK, "The health report (also when degraded).", application.SystemHealth{})},
			handler: s.systemHealth,
		},
		{
			Method: http.MethodGet, Path: "/api/system/jobs", OperationID: "getSystemJobs", Tag: "system",
			Summary: "Background jobs", Description: "The periodic jobs with their intervals and latest runs, the most recent jobs, and how many jobs are in each state.",
			Action: rbac.SystemRead, Responses: []Response{jsonOK(http.StatusOK, "The jobs overview.", application.JobsOverview{})},
			handler: s.systemJobs,
		},
		{
			Method: http.MethodPost, Path: "/api/system/jobs/{kind}/run", OperationID: "runSystemJob", Tag: "system",
			Summary:     "Run a periodic job now",
			Description: "Enqueues a run of the periodic job (one per region for the per-region kinds). A repeated request within a few seconds returns the jobs already enqueued.",
			Action:      rbac.SystemJobsRun,
			Params: []Param{{Name: "kind", In: "path", Required: true, Description: "The periodic job.",
				Schema: map[string]any{"type": "string", "enum": periodicJobNames()}}},
			Responses: []Response{jsonOK(http.StatusAccepted, "Enqueued.", RunJobAccepted{})},
			handler:   s.runJob,
		},
		{
			Method: http.MethodGet, Path: "/api/admin/projections", OperationID: "listProjections", Tag: "admin",
			Summary: "Read models", Description: "Each read model's checkpoint, runner, lag and rebuild state.",
			Action: rbac.ProjectionsRebuild, Responses: []Response{jsonOK(http.StatusOK, "The read models.", ProjectionList{})},
			handler: s.listProjections,
		},
		{
			Method: http.MethodPost, Path: "/api/admin/projections/{name}/rebuild", OperationID: "rebuildProjection", Tag: "admin",
			Summary:     "Rebuild a read model",
			Description: "Recomputes the read model from the event log into new tables in the background of this instance while the old ones keep serving, then swaps them in. 409 when a rebuild of it is already running.",
			Action:      rbac.ProjectionsRebuild,
			Params: []Param{{Name: "name", In: "path", Required: true, Description: "The read model (worker_view, audit_log, settings_view, task_view).",
				Schema: map[string]any{"type": "string", "pattern": projectionNameRE.String()}}},
			Errors: conflict,
			Responses: []Response{{Status: http.StatusAccepted, Description: "Started.", Media: []Media{{Type: mimeJSON, Go: application.RebuildState{}}},
				Headers: map[string]string{"Location": "Where to follow its progress."}}},
			handler: s.rebuildProjection,
		},

		// Tasks.
		{
			Method: http.MethodGet, Path: "/api/tasks", OperationID: "listTasks", Tag: "tasks",
			Summary: "List tasks", Action: rbac.TasksRead,
			Rules: "Admins and auditors see every task, managers the tasks of their department, users the tasks assigned to them.",
			Params: []Param{
				{Name: "department", In: "query", Description: "Only this department.", Schema: map[string]any{"type": "string", "maxLength": 200}},
				{Name: "assignee_id", In: "query", Description: "Only tasks assigned to this subject.", Schema: map[string]any{"type": "string", "maxLength": 200}},
				limitParam, offsetParam,
			},
			Responses: []Response{jsonOK(http.StatusOK, "A page of tasks.", TaskPage{})},
			handler:   s.listTasks,
		},
		{
			Method: http.MethodPost, Path: "/api/tasks", OperationID: "createTask", Tag: "tasks",
			Summary: "Create a task", Action: rbac.TaskCreate, Body: jsonBody(CreateTaskRequest{}),
			Rules: "Users create tasks assigned to themselves, managers within their department, admins anywhere.",
			Responses: []Response{{Status: http.StatusCreated, Description: "Created.", Media: []Media{{Type: mimeJSON, Go: application.Result{}}},
				Headers: map[string]string{"Location": "The task's URL."}}},
			handler: s.createTask,
		},
		{
			Method: http.MethodGet, Path: "/api/tasks/{id}", OperationID: "getTask", Tag: "tasks",
			Summary: "Get a task", Action: rbac.TasksRead, Params: []Param{taskIDParam},
			Rules:     "A task the caller may not see is reported missing (404).",
			Responses: []Response{jsonOK(http.StatusOK, "The task.", application.TaskView{})},
			handler:   s.getTask,
		},
		{
			Method: http.MethodPut, Path: "/api/tasks/{id}", OperationID: "updateTask", Tag: "tasks",
			Summary: "Update a task", Action: rbac.TaskUpdate, Params: []Param{taskIDParam}, Body: jsonBody(UpdateTaskRequest{}),
			Rules:  "Only an admin or the task's assignee; only admins reassign.",
			Errors: conflict, Responses: commandResponses(false), handler: s.updateTask,
		},
		{
			Method: http.MethodDelete, Path: "/api/tasks/{id}", OperationID: "deleteTask", Tag: "tasks",
			Summary: "Delete a task", Action: rbac.TaskDelete, Params: []Param{taskIDParam},
			Rules:  "Admins, or managers of the task's department.",
			Errors: conflict, Responses: commandResponses(false), handler: s.deleteTask,
		},

		// The API's own description.
		{
			Method: http.MethodGet, Path: "/api/openapi.json", OperationID: "getOpenAPI", Tag: "docs", Access: AccessPublic,
			Summary:   "This OpenAPI document",
			Responses: []Response{{Status: http.StatusOK, Description: "The OpenAPI 3.1 document.", Media: []Media{{Type: mimeJSON, Schema: map[string]any{"type": "object"}}}}},
			handler:   s.openAPI,
		},
		{
			Method: http.MethodGet, Path: "/api/docs", OperationID: "getDocs", Tag: "docs", Access: AccessPublic,
			Summary:   "Interactive API documentation",
			Responses: []Response{{Status: http.StatusOK, Description: "The documentation page.", Media: []Media{{Type: "text/html", Schema: map[string]any{"type": "string"}}}}},
			handler:   s.docsPage,
		},
		{
			Method: http.MethodGet, Path: "/api/docs/{asset}", OperationID: "getDocsAsset", Tag: "docs", Access: AccessPublic,
			Summary: "An asset of the documentation page",
			Params: []Param{{Name: "asset", In: "path", Required: true, Description: "The file name.",
				Schema: map[string]any{"type": "string", "enum": docsAssetNames()}}},
			Responses: []Response{{Status: http.StatusOK, Description: "The asset.", Media: []Media{{Type: "application/octet-stream", Schema: map[string]any{"type": "string"}}}}},
			handler:   s.docsAsset,
		},

		// Operations.
		{
			Method: http.MethodGet, Path: "/healthz", OperationID: "healthz", Tag: "ops", Access: AccessPublic,
			Summary: "Liveness probe", Description: "The process serves HTTP; no I/O.",
			Responses: []Response{jsonOK(http.StatusOK, "Alive.", statusBody{})},
			handler:   s.healthz,
		},
		{
			Method: http.MethodGet, Path: "/readyz", OperationID: "readyz", Tag: "ops", Access: AccessPublic,
			Summary: "Readiness probe", Description: "Ready once every check passes; 503 not_ready names the failing ones.",
			Responses: []Response{jsonOK(http.StatusOK, "Ready.", readyBody{})}, Errors: []int{http.StatusServiceUnavailable},
			handler: s.readyz,
		},
		{
			Method: http.MethodGet, Path: "/metrics", OperationID: "metrics", Tag: "ops", Access: AccessPublic,
			Summary:     "Prometheus metrics",
			Description: "Request counts and durations by route template and status, and the Go runtime and process collectors.",
			Responses: []Response{{Status: http.StatusOK, Description: "Metrics in the Prometheus text format.",
				Media: []Media{{Type: "text/plain", Schema: map[string]any{"type": "string"}}}}},
			handler: s.metricsHandler,
		},
	}, append(s.eventRoutes(), authRoutes()...)...)
}

// labRoute describes POST .../labs/{lab}/{verb} (or DELETE .../labs/{lab}).
func (s *Server) labRoute(method, verb string, action worker.LabAction) Route {
	path, id, summary := "/api/workers/{id}/labs/{lab}", "deleteLab", "Delete a lab"
	if verb != "" {
		path += "/" + verb
		id = verb + "Lab"
		summary = strings.ToUpper(verb[:1]) + verb[1:] + " a lab"
	}
	return Route{
		Method: method, Path: path, OperationID: id, Tag: "labs", Summary: summary,
		Description: "Requests the operation; a background job performs it on the CML controller. The worker must be running.",
		Action:      rbac.WorkerLabsManage, Params: []Param{workerIDParam, labParam}, Errors: []int{http.StatusConflict},
		Responses: []Response{jsonOK(http.StatusAccepted, "Requested.", LabActionAccepted{})},
		handler:   s.labActionHandler(action),
	}
}

func periodicJobNames() []string {
	out := make([]string, len(application.PeriodicJobKinds))
	for i, k := range application.PeriodicJobKinds {
		out[i] = string(k)
	}
	return out
}

func statusNames() []string {
	out := make([]string, len(worker.Statuses))
	for i, st := range worker.Statuses {
		out[i] = string(st)
	}
	return out
}

// statusBody and readyBody document the probes' bodies.
type statusBody struct {
	Status string `json:"status"`
}

type readyBody struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// register mounts every route of the table except the authenticator's: the
// /api routes on the group (which runs the Authenticator's middleware), the
// others on the root. AccessAction routes first check the route's action.
func (s *Server) register(table []Route, apiGroup *echo.Group, noGate bool) {
	for _, r := range table {
		if r.Access == AccessAuthenticator || (apiGroup == nil && r.Access == AccessAction) {
			continue
		}
		h := r.handler
		if r.Access == AccessAction && !noGate {
			h = authorize(r.Action)(h)
		}
		s.routePaths[r.Method+" "+r.EchoPath()] = true
		if apiGroup != nil && strings.HasPrefix(r.Path, "/api/") {
			apiGroup.Add(r.Method, strings.TrimPrefix(r.EchoPath(), "/api"), h)
			continue
		}
		s.echo.Add(r.Method, r.EchoPath(), h)
	}
}

// authorize checks the principal against the route's action before the
// handler runs, so that every refused call is answered 401 or 403 whatever
// its parameters. The application handler authorises again: it is the
// authority, this is the order of the answers.
func authorize(action rbac.Action) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if _, err := rbac.Authorize(c.Request().Context(), action); err != nil {
				return err
			}
			return next(c)
		}
	}
}

// typeOf returns the reflected type of a Media's Go value.
func typeOf(v any) reflect.Type { return reflect.TypeOf(v) }
