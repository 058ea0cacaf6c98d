package api

import (
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/ui/apidocs"
)

// TestRoutesMatchOpenAPI walks Echo's registered routes (the server's and
// the authenticator's) against the served document, both ways.
func TestRoutesMatchOpenAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	require.NoError(t, e.server.CheckRoutes())

	// The check can fail: an extra route is reported.
	e.server.echo.GET("/api/undocumented/:x", func(echo.Context) error { return nil })
	err := e.server.CheckRoutes()
	require.ErrorContains(t, err, "route not documented: GET /api/undocumented/{x}")
}

func TestRouteDiff(t *testing.T) {
	t.Parallel()
	doc := []byte(`{"paths": {
		"/a": {"get": {}, "parameters": []},
		"/b/{id}": {"get": {}, "post": {}},
		"/c/{id}/x": {"put": {}},
		"/d": {"delete": {}}
	}}`)
	tests := []struct {
		name       string
		registered []methodPath
		want       []string
	}{
		{"Same", []methodPath{{"GET", "/a"}, {"GET", "/b/{id}"}, {"POST", "/b/{id}"}, {"PUT", "/c/{id}/x"}, {"DELETE", "/d"}}, nil},
		{"Undocumented", []methodPath{{"GET", "/a"}, {"GET", "/b/{id}"}, {"POST", "/b/{id}"}, {"PUT", "/c/{id}/x"}, {"DELETE", "/d"}, {"GET", "/e"}},
			[]string{"route not documented: GET /e"}},
		{"NotRegistered", []methodPath{{"GET", "/a"}, {"GET", "/b/{id}"}, {"POST", "/b/{id}"}, {"PUT", "/c/{id}/x"}},
			[]string{"documented route not registered: DELETE /d"}},
		{"MethodMismatch", []methodPath{{"GET", "/a"}, {"GET", "/b/{id}"}, {"PATCH", "/b/{id}"}, {"PUT", "/c/{id}/x"}, {"DELETE", "/d"}},
			[]string{"documented method not registered: POST /b/{id} (the path is)", "method not documented: PATCH /b/{id} (the path is)"}},
		{"ParamMismatch", []methodPath{{"GET", "/a"}, {"GET", "/b/{id}"}, {"POST", "/b/{id}"}, {"PUT", "/c/{worker}/x"}, {"DELETE", "/d"}},
			[]string{"path parameters differ: registered PUT /c/{worker}/x, documented /c/{id}/x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, routeDiff(tt.registered, doc))
		})
	}
}

// TestOpenAPIDocument checks the document's integrity: OpenAPI 3.1, every
// $ref resolves, every operation has an id, responses and the error
// responses its route implies, and roles that match the policy.
func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	res := e.do(t, request{method: http.MethodGet, path: "/api/openapi.json"})
	require.Equal(t, http.StatusOK, res.status)
	require.Equal(t, "application/json", res.header.Get("Content-Type"))
	var doc map[string]any
	res.json(t, &doc)
	require.Equal(t, "3.1.0", doc["openapi"])

	// Every $ref points at something that exists.
	refRE := regexp.MustCompile(`"\$ref":\s*"#/([^"]+)"`)
	for _, m := range refRE.FindAllStringSubmatch(string(res.body), -1) {
		var node any = doc
		for part := range strings.SplitSeq(m[1], "/") {
			obj, ok := node.(map[string]any)
			require.True(t, ok, "ref %s", m[1])
			node, ok = obj[part]
			require.True(t, ok, "ref %s does not resolve", m[1])
		}
	}

	paths := doc["paths"].(map[string]any)
	ids := map[string]bool{}
	for _, r := range Routes() {
		op, ok := paths[r.Path].(map[string]any)[strings.ToLower(r.Method)].(map[string]any)
		require.True(t, ok, "%s %s missing", r.Method, r.Path)
		id := op["operationId"].(string)
		require.False(t, ids[id], "operationId %s used twice", id)
		ids[id] = true
		responses := op["responses"].(map[string]any)
		for _, status := range r.ErrorStatuses() {
			require.Contains(t, responses, itoa(int64(status)), "%s %s", r.Method, r.Path)
		}
		if r.Access == AccessAction {
			var want []any
			for _, role := range r.Roles() {
				want = append(want, string(role))
			}
			require.Equal(t, want, op["x-roles"], "%s %s", r.Method, r.Path)
			require.NotContains(t, op, "security", "role routes use the document's security")
		} else {
			require.Contains(t, op, "security")
		}
	}
	// The auth contract's routes are documented with their answers.
	login := paths["/api/auth/login"].(map[string]any)
	require.Contains(t, login["post"].(map[string]any)["responses"], "429")
	require.Contains(t, login["get"].(map[string]any)["responses"], "302")
	schemes := doc["components"].(map[string]any)["securitySchemes"].(map[string]any)
	require.Equal(t, SessionCookieName, schemes["sessionCookie"].(map[string]any)["name"])
	require.Equal(t, "bearer", schemes["bearerAuth"].(map[string]any)["scheme"])

	// Request schemas reject unknown fields, as the decoder does.
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	for _, name := range []string{"CreateWorkerRequest", "SettingsUpdateRequest", "SettingsPatch", "UpdateTaskRequest", "LabImportRequest"} {
		require.Equal(t, false, schemas[name].(map[string]any)["additionalProperties"], name)
	}
	require.Equal(t, []any{"name", "region"}, schemas["CreateWorkerRequest"].(map[string]any)["required"])
	// The problem schema lists the stable codes.
	codes := schemas["Problem"].(map[string]any)["properties"].(map[string]any)["code"].(map[string]any)["enum"].([]any)
	for _, c := range []string{CodeInvalid, CodeIllegalTransition, CodeConflict, CodeAlreadyExists, CodeUnauthenticated, CodeForbidden} {
		require.Contains(t, codes, c)
	}
}

// TestDocsPage serves the page and its assets from the binary and never
// points the browser at another origin.
func TestDocsPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	page := e.do(t, request{method: http.MethodGet, path: "/api/docs"})
	require.Equal(t, http.StatusOK, page.status)
	require.Contains(t, page.header.Get("Content-Type"), "text/html")
	require.Contains(t, page.header.Get("Content-Security-Policy"), "script-src 'self'")
	html := string(page.body)
	srcRE := regexp.MustCompile(`(?:src|href)="([^"]+)"`)
	var refs []string
	for _, m := range srcRE.FindAllStringSubmatch(html, -1) {
		refs = append(refs, m[1])
	}
	require.NotEmpty(t, refs)
	for _, ref := range refs {
		require.False(t, strings.Contains(ref, "//"), "the page loads %s from another origin", ref)
		require.True(t, strings.HasPrefix(ref, "docs/"), "ref %s", ref)
		asset := e.do(t, request{method: http.MethodGet, path: "/api/" + ref, header: http.Header{"Accept-Encoding": {"gzip"}}})
		require.Equal(t, http.StatusOK, asset.status, ref)
		require.NotEmpty(t, asset.body)
	}
	js := e.do(t, request{method: http.MethodGet, path: "/api/docs/init.js"})
	require.Contains(t, string(js.body), `url: "openapi.json"`)
	require.Contains(t, string(js.body), "validatorUrl: null")
	require.Contains(t, js.header.Get("Content-Type"), "javascript")

	// Conditional requests and gzip.
	etag := js.header.Get("ETag")
	require.NotEmpty(t, etag)
	again := e.do(t, request{method: http.MethodGet, path: "/api/docs/init.js", header: http.Header{"If-None-Match": {etag}}})
	require.Equal(t, http.StatusNotModified, again.status)

	missing := e.do(t, request{method: http.MethodGet, path: "/api/docs/nope.js"})
	missing.problem(t, http.StatusNotFound, CodeNotFound)

	// Every embedded asset is documented, and only those.
	require.True(t, slices.Equal(apidocs.Assets(), docsAssetNames()))
	for _, name := range apidocs.Assets() {
		res := e.do(t, request{method: http.MethodGet, path: "/api/docs/" + name})
		require.Equal(t, http.StatusOK, res.status, name)
	}
	require.Contains(t, apidocs.Assets(), "LICENSE")
}

// TestRoutesTable checks the table's own consistency.
func TestRoutesTable(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, r := range Routes() {
		key := r.Method + " " + r.Path
		require.False(t, seen[key], "%s twice", key)
		seen[key] = true
		switch r.Access {
		case AccessAction:
			require.NotEmpty(t, r.Action, key)
			require.NotEmpty(t, r.Roles(), "%s: no role may call it", key)
			require.NotNil(t, r.handler, key)
		case AccessPublic:
			require.NotNil(t, r.handler, key)
		case AccessAuthenticator:
			require.True(t, strings.HasPrefix(r.Path, "/api/auth/"), key)
			require.Nil(t, r.handler, key)
		}
		if r.Body != nil {
			require.Positive(t, r.Body.Limit, key)
			require.NotEmpty(t, r.Body.Media, key)
		}
		for _, p := range r.Params {
			require.Contains(t, []string{"path", "query", "header"}, p.In, key)
		}
	}
}
