package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/task"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// APIVersion is the version of the HTTP API in the OpenAPI document.
const APIVersion = "1.0.0"

// SessionCookieName is the session cookie the Authenticator sets (see
// api/auth), documented as a security scheme.
const SessionCookieName = "cmlcm_session"

// problemCodes lists every stable problem code, for the document: the
// server's and those of the /api/auth routes.
var problemCodes = []string{
	CodeBadRequest, CodeInvalid, CodeUnauthenticated, CodeForbidden, CodeNotFound, CodeMethodNotAllowed,
	CodeNotAcceptable, CodeConflict, CodeIllegalTransition, CodeAlreadyExists, CodeRebuildInProgress,
	CodeRequestTooLarge, CodeUnsupportedMediaType, CodeTooManyRequests, CodeInternal, CodeNotReady,
	CodeUnavailable,
	// The Authenticator's (api/auth).
	"csrf", "invalid_credentials", "invalid_token", "session_expired", "rate_limited", "not_available",
}

// errorResponses describes each error status: its component name and the
// codes it carries.
var errorResponses = map[int]struct {
	name, desc string
}{
	http.StatusBadRequest:            {"BadRequest", "Malformed JSON (`bad_request`), invalid input (`invalid`, with `problems` listing each field and reason), or an import look-up matching several instances (`ambiguous`, with `instance_ids`)."},
	http.StatusUnauthorized:          {"Unauthenticated", "No credentials (`unauthenticated`), an invalid or expired bearer token (`invalid_token`) or session (`session_expired`), each with a WWW-Authenticate header; or a wrong username or password (`invalid_credentials`)."},
	http.StatusForbidden:             {"Forbidden", "The caller's roles do not allow this (`forbidden`), or a cookie-authenticated unsafe request without a CSRF token or same-origin Origin (`csrf`)."},
	http.StatusNotFound:              {"NotFound", "No such resource (`not_found`), or a route of the other authentication mode (`not_available`)."},
	http.StatusConflict:              {"Conflict", "The current state does not allow this (`illegal_transition`, with `current_status`), it already exists (`already_exists`), it kept changing concurrently (`conflict`), or a rebuild is running (`rebuild_in_progress`)."},
	http.StatusRequestEntityTooLarge: {"RequestTooLarge", "The body is over the limit (`request_too_large`)."},
	http.StatusUnsupportedMediaType:  {"UnsupportedMediaType", "The body's Content-Type is not accepted (`unsupported_media_type`)."},
	http.StatusTooManyRequests:       {"TooManyRequests", "Too many attempts (`rate_limited`); Retry-After says when to try again."},
	http.StatusInternalServerError:   {"Internal", "An internal error (`internal`), logged with the request id; details are never returned."},
	http.StatusBadGateway:            {"UpstreamError", "A call to AWS or a CML controller made for this request failed (`upstream_error`, with `operation`, `kind` and `upstream_code`)."},
	http.StatusServiceUnavailable:    {"Unavailable", "Not ready (`not_ready`, with `checks`), unavailable (`unavailable`), or a call to AWS or a CML controller that may succeed later (`upstream_unavailable`, with `operation`, `kind` and `upstream_code`)."},
}

// buildOpenAPI generates the OpenAPI 3.1 document of the route table.
func buildOpenAPI(table []Route) ([]byte, error) {
	g := newSchemaGen()
	registerSchemaHints(g)
	for _, r := range table {
		if r.Body == nil {
			continue
		}
		for _, m := range r.Body.Media {
			if m.Go != nil {
				markStrict(g, typeOf(m.Go))
			}
		}
	}

	paths := map[string]map[string]any{}
	usedErrors := map[int]bool{}
	for _, r := range table {
		op, err := operation(g, r, usedErrors)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", r.Method, r.Path, err)
		}
		if paths[r.Path] == nil {
			paths[r.Path] = map[string]any{}
		}
		m := strings.ToLower(r.Method)
		if _, dup := paths[r.Path][m]; dup {
			return nil, fmt.Errorf("%s %s is described twice", r.Method, r.Path)
		}
		paths[r.Path][m] = op
	}

	problem := g.schema(typeOf(problemDoc{}))
	responses := map[string]any{}
	for status := range usedErrors {
		e := errorResponses[status]
		responses[e.name] = map[string]any{
			"description": e.desc,
			"headers":     map[string]any{"X-Request-ID": map[string]any{"$ref": "#/components/headers/X-Request-ID"}},
			"content":     map[string]any{ProblemContentType: map[string]any{"schema": problem}},
		}
	}
	doc := map[string]any{
		"openapi":           "3.1.0",
		"jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
		"info": map[string]any{
			"title":       "CML Cloud Manager API",
			"version":     APIVersion,
			"description": apiDescription(table),
			"license":     map[string]any{"name": "Proprietary"},
		},
		"servers": []any{map[string]any{"url": "/"}},
		"tags":    tags(),
		"paths":   paths,
		"components": map[string]any{
			"schemas":   g.components,
			"responses": responses,
			"headers": map[string]any{
				"X-Request-ID": map[string]any{
					"description": "The request's id (a sane incoming X-Request-ID is kept); it is the correlation id of the events a command records.",
					"schema":      map[string]any{"type": "string"},
				},
			},
			"securitySchemes": map[string]any{
				"sessionCookie": map[string]any{
					"type": "apiKey", "in": "cookie", "name": SessionCookieName,
					"description": "The browser session (HttpOnly). Unsafe requests also need the X-CSRF-Token header (csrf_token of GET /api/auth/session) or a same-origin Origin header.",
				},
				"bearerAuth": map[string]any{
					"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
					"description": "A JWT from the OIDC provider, or from POST /api/auth/token in local mode.",
				},
			},
		},
		"security": []any{map[string]any{"sessionCookie": []string{}}, map[string]any{"bearerAuth": []string{}}},
	}
	return json.MarshalIndent(doc, "", " ")
}

// markStrict marks a request type and the structs it contains as rejecting
// unknown properties (as the decoder does).
func markStrict(g *schemaGen, t reflect.Type) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || g.strict[t] || t == timeType {
		return
	}
	g.strict[t] = true
	for i := range t.NumField() {
		markStrict(g, t.Field(i).Type)
	}
}

// registerSchemaHints declares the enums and component names of the domain's
// types.
func registerSchemaHints(g *schemaGen) {
	enum(g, worker.Statuses...)
	enum(g, worker.EC2Pending, worker.EC2Running, worker.EC2Stopping, worker.EC2Stopped, worker.EC2ShuttingDown, worker.EC2Terminated, worker.EC2NotFound)
	enum(g, worker.IntentNone, worker.IntentLaunch, worker.IntentStart, worker.IntentStop, worker.IntentTerminate)
	enum(g, worker.ServiceUnavailable, worker.ServiceAvailable, worker.ServiceDegraded)
	enum(g, worker.LicenseUnregistered, worker.LicenseRegistered, worker.LicenseEvaluation, worker.LicenseExpired, worker.LicenseInvalid)
	enum(g, worker.LicenseOpNone, worker.LicenseOpRegister, worker.LicenseOpDeregister)
	enum(g, worker.StopManual, worker.StopIdleTimeout, worker.StopExternal)
	enum(g, worker.LabStart, worker.LabStop, worker.LabWipe, worker.LabDelete, worker.LabImport)
	enum(g, task.StatusPending, task.StatusInProgress, task.StatusCompleted)
	enum(g, task.PriorityLow, task.PriorityMedium, task.PriorityHigh)
	enum(g, settings.Keys...)
	enum(g, settings.SourceSaved, settings.SourceEnvironment)
	g.enums[typeOf(problemCode(""))] = problemCodes
	g.renames[typeOf(worker.State{})] = "WorkerState"
	g.renames[typeOf(task.State{})] = "TaskState"
	g.renames[typeOf(settings.Patch{})] = "SettingsPatch"
	g.renames[typeOf(settings.Values{})] = "SettingsValues"
	g.renames[typeOf(application.Result{})] = "CommandResult"
	g.renames[typeOf(application.Actor{})] = "Actor"
	g.renames[typeOf(problemDoc{})] = "Problem"
	g.renames[typeOf(domain.Problem{})] = "FieldProblem"
}

// problemDoc describes the problem+json body (Problem marshals itself).
type problemDoc struct {
	Type      string            `json:"type" doc:"A URI for the problem type; about:blank means the HTTP status says it all."`
	Title     string            `json:"title" doc:"Short summary (the status text)."`
	Status    int               `json:"status" doc:"The HTTP status."`
	Code      problemCode       `json:"code" doc:"Stable machine-readable code; switch on this, never on title or detail."`
	Detail    string            `json:"detail,omitempty" doc:"Explanation for people."`
	Instance  string            `json:"instance,omitempty"`
	RequestID string            `json:"request_id,omitempty" doc:"The X-Request-ID of the request, to quote when reporting a problem."`
	Problems  []domain.Problem  `json:"problems,omitempty" doc:"For code invalid: every field in error and why."`
	Current   string            `json:"current_status,omitempty" doc:"For code illegal_transition: the resource's current status."`
	WorkerID  string            `json:"worker_id,omitempty" doc:"For code already_exists on an import: the worker that manages the instance."`
	Action    string            `json:"action,omitempty" doc:"For code forbidden: the refused action."`
	Checks    map[string]string `json:"checks,omitempty" doc:"For code not_ready: each readiness check's outcome."`
}

type problemCode string

// operation builds one path item operation.
func operation(g *schemaGen, r Route, usedErrors map[int]bool) (map[string]any, error) {
	if r.OperationID == "" || r.Summary == "" {
		return nil, fmt.Errorf("operationId and summary are required")
	}
	op := map[string]any{
		"operationId": r.OperationID,
		"summary":     r.Summary,
		"tags":        []string{r.Tag},
		"description": operationDescription(r),
	}
	switch r.Access {
	case AccessPublic:
		op["security"] = []any{}
		op["x-access"] = "public"
	case AccessAuthenticator:
		op["x-access"] = "authenticator"
		sec := []any{}
		for _, name := range r.Security {
			if name == "" {
				sec = append(sec, map[string]any{})
			} else {
				sec = append(sec, map[string]any{name: []string{}})
			}
		}
		op["security"] = sec
	case AccessAction:
		roles := r.Roles()
		names := make([]string, len(roles))
		for i, role := range roles {
			names[i] = string(role)
		}
		op["x-access"] = "role"
		op["x-action"] = string(r.Action)
		op["x-roles"] = names
	}
	var params []any
	for _, p := range r.Params {
		params = append(params, map[string]any{
			"name": p.Name, "in": p.In, "required": p.Required || p.In == "path",
			"description": p.Description, "schema": p.Schema,
		})
	}
	declared := map[string]bool{}
	for _, p := range r.Params {
		if p.In == "path" {
			declared[p.Name] = true
		}
	}
	for _, name := range r.PathParams() {
		if !declared[name] {
			return nil, fmt.Errorf("path parameter %s is not declared", name)
		}
		delete(declared, name)
	}
	if len(declared) > 0 {
		return nil, fmt.Errorf("declared path parameters not in the path: %v", declared)
	}
	if params != nil {
		op["parameters"] = params
	}
	if r.Body != nil {
		content := map[string]any{}
		for _, m := range r.Body.Media {
			content[m.Type] = map[string]any{"schema": mediaSchema(g, m)}
		}
		op["requestBody"] = map[string]any{
			"required":    r.Body.Required,
			"description": "At most " + strconv.FormatInt(r.Body.Limit, 10) + " bytes. Unknown JSON fields are rejected.",
			"content":     content,
		}
	}
	responses := map[string]any{}
	for _, resp := range r.Responses {
		out := map[string]any{"description": resp.Description}
		headers := map[string]any{"X-Request-ID": map[string]any{"$ref": "#/components/headers/X-Request-ID"}}
		for name, desc := range resp.Headers {
			headers[name] = map[string]any{"description": desc, "schema": map[string]any{"type": "string"}}
		}
		out["headers"] = headers
		if len(resp.Media) > 0 {
			content := map[string]any{}
			for _, m := range resp.Media {
				content[m.Type] = map[string]any{"schema": mediaSchema(g, m)}
			}
			out["content"] = content
		}
		key := strconv.Itoa(resp.Status)
		if _, dup := responses[key]; dup {
			return nil, fmt.Errorf("response %s described twice", key)
		}
		responses[key] = out
	}
	for _, status := range r.ErrorStatuses() {
		e, ok := errorResponses[status]
		if !ok {
			return nil, fmt.Errorf("no error response described for status %d", status)
		}
		usedErrors[status] = true
		responses[strconv.Itoa(status)] = map[string]any{"$ref": "#/components/responses/" + e.name}
	}
	op["responses"] = responses
	return op, nil
}

func mediaSchema(g *schemaGen, m Media) map[string]any {
	if m.Go != nil {
		return g.schema(typeOf(m.Go))
	}
	return m.Schema
}

func operationDescription(r Route) string {
	var b strings.Builder
	b.WriteString(r.Description)
	add := func(s string) {
		if b.Len() > 0 {
			b.WriteString("\n\n")
		}
		b.WriteString(s)
	}
	switch r.Access {
	case AccessPublic:
		add("**Access:** public (no credentials).")
	case AccessAuthenticator:
		add("**Access:** served by the authenticator; see the description of each response.")
	case AccessAction:
		roles := r.Roles()
		names := make([]string, len(roles))
		for i, role := range roles {
			names[i] = string(role)
		}
		add("**Roles:** " + strings.Join(names, ", ") + " (action `" + string(r.Action) + "`).")
	}
	if r.Rules != "" {
		add("**Rules:** " + r.Rules)
	}
	return b.String()
}

// apiDescription is the document's introduction with the route × role table.
func apiDescription(table []Route) string {
	var b strings.Builder
	b.WriteString("The HTTP API of CML Cloud Manager. Errors are `application/problem+json` (RFC 9457) with a stable `code`. ")
	b.WriteString("JSON bodies are size-limited and unknown fields are rejected. Every response carries `X-Request-ID`.\n\n")
	b.WriteString("Roles: admin ⊇ manager ⊇ user; auditor reads everything plus history; integrator reads workers (and the domain event stream).\n\n")
	b.WriteString("| method | path | roles |\n|---|---|---|\n")
	for _, r := range table {
		roles := "public"
		switch r.Access {
		case AccessAuthenticator:
			roles = "authenticator"
		case AccessAction:
			var names []string
			for _, role := range r.Roles() {
				names = append(names, string(role))
			}
			roles = strings.Join(names, ", ")
			if r.Rules != "" {
				roles += " (" + r.Rules + ")"
			}
		}
		fmt.Fprintf(&b, "| %s | `%s` | %s |\n", r.Method, r.Path, roles)
	}
	return b.String()
}

func tags() []any {
	list := []struct{ name, desc string }{
		{"workers", "CML controllers on EC2: list, create, operate."},
		{"labs", "Lab operations on a worker's CML controller."},
		{"history", "Lifecycle history, time travel and the audit log (auditors, admins)."},
		{"settings", "Runtime settings."},
		{"system", "Service health."},
		{"admin", "Read-model administration."},
		{"tasks", "Tasks (the RBAC sample)."},
		{"events", "Server-sent event streams: the dashboard's and the integrators' domain stream."},
		{"auth", "Login, sessions and tokens."},
		{"docs", "This document and its page."},
		{"ops", "Probes and metrics."},
	}
	out := make([]any, len(list))
	for i, t := range list {
		out[i] = map[string]any{"name": t.name, "description": t.desc}
	}
	return out
}

// openAPI serves the document.
func (s *Server) openAPI(c echo.Context) error {
	c.Response().Header().Set(echo.HeaderCacheControl, "no-cache")
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, s.openAPIDoc)
}

// CheckRoutes compares the routes registered on the server (including the
// Authenticator's) with the OpenAPI document it serves, in both directions.
// It returns an error listing every difference: an undocumented route, a
// documented route that is not registered, a method served on a path the
// document describes without it, or path parameters named differently.
func (s *Server) CheckRoutes() error {
	var registered []methodPath
	for _, r := range s.echo.Routes() {
		if r.Method == echo.RouteNotFound {
			continue // the catch-all of a group's middleware
		}
		registered = append(registered, methodPath{r.Method, echoToTemplate(r.Path)})
	}
	if diffs := routeDiff(registered, s.openAPIDoc); len(diffs) > 0 {
		return fmt.Errorf("routes and OpenAPI document differ:\n%s", strings.Join(diffs, "\n"))
	}
	return nil
}

type methodPath struct{ method, path string }

var echoParamRE = regexp.MustCompile(`:([a-zA-Z_][a-zA-Z0-9_]*)`)

// echoToTemplate turns "/api/workers/:id" into "/api/workers/{id}" (and a
// trailing "*" into "{*}").
func echoToTemplate(p string) string {
	p = echoParamRE.ReplaceAllString(p, "{$1}")
	if strings.HasSuffix(p, "*") {
		p = strings.TrimSuffix(p, "*") + "{*}"
	}
	return p
}

// shape replaces each parameter of a path template by {}.
func shape(p string) string {
	return paramRE.ReplaceAllString(strings.ReplaceAll(p, "{*}", "{}"), "{}")
}

// routeDiff lists the differences between registered routes and the paths of
// an OpenAPI document.
func routeDiff(registered []methodPath, doc []byte) []string {
	var parsed struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &parsed); err != nil {
		return []string{"the document is not JSON: " + err.Error()}
	}
	documented := map[methodPath]bool{}
	docShapes := map[string]string{} // shape → documented template
	for path, ops := range parsed.Paths {
		docShapes[shape(path)] = path
		for m := range ops {
			switch m {
			case "get", "put", "post", "delete", "options", "head", "patch", "trace":
				documented[methodPath{strings.ToUpper(m), path}] = true
			}
		}
	}
	regShapes := map[string]string{}
	seen := map[methodPath]bool{}
	var diffs []string
	for _, r := range registered {
		seen[r] = true
		regShapes[shape(r.path)] = r.path
		if documented[r] {
			continue
		}
		docPath, sameShape := docShapes[shape(r.path)]
		switch {
		case sameShape && docPath != r.path:
			diffs = append(diffs, fmt.Sprintf("path parameters differ: registered %s %s, documented %s", r.method, r.path, docPath))
		case sameShape:
			diffs = append(diffs, fmt.Sprintf("method not documented: %s %s (the path is)", r.method, r.path))
		default:
			diffs = append(diffs, fmt.Sprintf("route not documented: %s %s", r.method, r.path))
		}
	}
	for d := range documented {
		if seen[d] {
			continue
		}
		regPath, sameShape := regShapes[shape(d.path)]
		switch {
		case sameShape && regPath != d.path:
			// Reported above from the registered side.
		case sameShape:
			diffs = append(diffs, fmt.Sprintf("documented method not registered: %s %s (the path is)", d.method, d.path))
		default:
			diffs = append(diffs, fmt.Sprintf("documented route not registered: %s %s", d.method, d.path))
		}
	}
	slices.Sort(diffs)
	return diffs
}
