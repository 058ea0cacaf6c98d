package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/api"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
)

// devAccounts are the development accounts of local mode and their role.
var devAccounts = map[string]rbac.Role{
	"admin": rbac.RoleAdmin, "manager": rbac.RoleManager, "user": rbac.RoleUser,
	"auditor": rbac.RoleAuditor, "integrator": rbac.RoleIntegrator,
}

// e2eClient calls the served API as one caller.
type e2eClient struct {
	t      *testing.T
	base   string
	http   *http.Client
	bearer string
	csrf   string
}

func (c *e2eClient) do(method, path string, body any) (int, []byte) {
	c.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	// Streams answer their headers at once and never end: a short deadline
	// reads the status and leaves.
	ctx, cancel := context.WithTimeout(c.t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	}
	if c.csrf != "" {
		req.Header.Set("X-CSRF-Token", c.csrf)
	}
	res, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	if strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		return res.StatusCode, nil
	}
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

// TestServeEndToEnd runs serve as `make run` does (simulated cloud, local
// accounts, seeded workers) and checks, over real HTTP and the real
// authenticator: that seeded workers move through their states by the
// jobs; that every development account gets a token and, on every
// authorised route of the table, exactly the refusals the RBAC policy
// implies (403 for a role the route's action does not admit, 401 without
// credentials, neither for an admitted role); and that a browser session
// works with its cookie and CSRF token.
func TestServeEndToEnd(t *testing.T) {
	cfg := mustLoad(t, map[string]string{
		"DATABASE_URL":           freshDatabaseURL(t),
		"HTTP_ADDR":              "127.0.0.1:0",
		"SIMULATOR_SEED_WORKERS": "2",
		"LOGIN_RATE_LIMIT":       "100/1m",
	})
	m := NewMain(cfg, testLogger(t))
	stop := startMain(t, m)
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	}()
	base := "http://" + m.Addr().String()
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	anonymous := &e2eClient{t: t, base: base, http: &http.Client{Transport: transport}}

	clients := map[string]*e2eClient{"anonymous": anonymous}
	for name := range devAccounts {
		code, body := anonymous.do(http.MethodPost, "/api/auth/token", map[string]string{"username": name, "password": "test"})
		if code != http.StatusOK {
			t.Fatalf("token for %s: %d %s", name, code, body)
		}
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" {
			t.Fatalf("token for %s: %s", name, body)
		}
		clients[name] = &e2eClient{t: t, base: base, http: anonymous.http, bearer: tok.AccessToken}
	}

	// The seeded worker created by the product is launched by the jobs
	// through the simulated EC2 until it runs.
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := clients["user"].do(http.MethodGet, "/api/workers", nil)
		if code != http.StatusOK {
			t.Fatalf("GET /api/workers: %d %s", code, body)
		}
		var page struct {
			Items []struct {
				Name   string `json:"name"`
				Status string `json:"status"`
			} `json:"items"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatal(err)
		}
		running := 0
		for _, w := range page.Items {
			if w.Status == "running" {
				running++
			}
		}
		if len(page.Items) == 2 && running == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("seeded workers never all ran: %s", body)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Every authorised route, as every caller. Path parameters name things
	// that do not exist: an admitted caller then gets 400, 404 or 409 (or
	// 2xx), never 401 or 403.
	fill := strings.NewReplacer("{id}", "0b7e7f9e-5a55-4c43-9a40-5f7d3f0e0a11", "{lab}", "lab-1",
		"{name}", "task_view", "{kind}", "idle_check")
	for _, r := range api.Routes() {
		if r.Access != api.AccessAction {
			continue
		}
		path := fill.Replace(r.Path)
		var body any
		if r.Body != nil {
			body = map[string]any{}
		}
		for caller, c := range clients {
			code, resp := c.do(r.Method, path, body)
			switch {
			case caller == "anonymous":
				if code != http.StatusUnauthorized {
					t.Errorf("%s %s anonymous: %d, want 401 (%s)", r.Method, r.Path, code, resp)
				}
			case slices.Contains(r.Roles(), devAccounts[caller]):
				if code == http.StatusUnauthorized || code == http.StatusForbidden || code >= 500 {
					t.Errorf("%s %s as %s (admitted): %d (%s)", r.Method, r.Path, caller, code, resp)
				}
			default:
				if code != http.StatusForbidden {
					t.Errorf("%s %s as %s (refused): %d, want 403 (%s)", r.Method, r.Path, caller, code, resp)
				}
			}
		}
	}

	// A browser: sign in, read with the cookie; an unsafe request needs the
	// session's CSRF token.
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browser := &e2eClient{t: t, base: base, http: &http.Client{Transport: transport, Jar: jar}}
	code, body := browser.do(http.MethodPost, "/api/auth/login", map[string]string{"username": "manager", "password": "test"})
	if code != http.StatusOK {
		t.Fatalf("login: %d %s", code, body)
	}
	var session struct {
		CSRFToken string `json:"csrf_token"`
	}
	if err := json.Unmarshal(body, &session); err != nil || session.CSRFToken == "" {
		t.Fatalf("login answer: %s", body)
	}
	if code, body := browser.do(http.MethodGet, "/api/workers", nil); code != http.StatusOK {
		t.Fatalf("GET /api/workers with the cookie: %d %s", code, body)
	}
	task := map[string]any{"title": "from the browser"}
	if code, body := browser.do(http.MethodPost, "/api/tasks", task); code != http.StatusForbidden || !strings.Contains(string(body), "csrf") {
		t.Fatalf("POST without the CSRF token: %d %s", code, body)
	}
	browser.csrf = session.CSRFToken
	if code, body := browser.do(http.MethodPost, "/api/tasks", task); code != http.StatusCreated {
		t.Fatalf("POST with the CSRF token: %d %s", code, body)
	}
}
