package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sessions"
)

func TestLocalSessionLifecycle(t *testing.T) {
	t.Parallel()
	for name, open := range map[string]func(testing.TB, *testClock) backend{"Postgres": postgresBackend, "Redis": redisBackend} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			clock := newTestClock()
			h := newHarness(t, ModeLocal, harnessConfig{backend: open(t, clock), clock: clock})
			b := h.client

			r := h.do(b, http.MethodGet, "/api/auth/session", nil, nil)
			require.Equal(t, http.StatusOK, r.StatusCode)
			require.JSONEq(t, `{"authenticated":false}`, string(r.body))
			status, _ := h.probe(b, nil)
			require.Equal(t, http.StatusUnauthorized, status, "anonymous reaches the route; the application refuses")

			info := h.login(b, "manager", DevPassword)
			require.Equal(t, "manager", info.Subject)
			require.Equal(t, []string{"manager"}, info.Roles)
			require.Equal(t, int64(DefaultIdleTimeout/time.Second), info.ExpiresInSeconds)
			require.Equal(t, int64(DefaultIdleTimeout/time.Second), info.IdleTimeoutSeconds)
			require.Equal(t, int64(DefaultWarning/time.Second), info.WarningSeconds)
			require.WithinDuration(t, clock.Now().Add(DefaultMaxLifetime), info.MaxExpiresAt, time.Second)
			require.Len(t, info.CSRFToken, 43)

			status, p := h.probe(b, nil)
			require.Equal(t, http.StatusOK, status)
			require.Equal(t, rbac.Principal{Subject: "manager", Username: "manager", Roles: []rbac.Role{rbac.RoleManager}, Department: "engineering"}, p)

			r = h.do(b, http.MethodGet, "/api/auth/me", nil, nil)
			require.Equal(t, http.StatusOK, r.StatusCode)
			var me MeResponse
			r.json(t, &me)
			require.Equal(t, MeResponse{Subject: "manager", Username: "manager", Name: "Development Manager",
				Email: "manager@example.com", Roles: []string{"manager"}, Department: "engineering", Auth: "session"}, me)

			// GET /session does not extend; activity does.
			clock.Advance(10 * time.Minute)
			r = h.do(b, http.MethodGet, "/api/auth/session", nil, nil)
			var later SessionInfo
			r.json(t, &later)
			require.Equal(t, info.ExpiresAt, later.ExpiresAt, "GET /api/auth/session must not extend the session")
			require.Equal(t, int64(20*60), later.ExpiresInSeconds)

			status, _ = h.probe(b, nil)
			require.Equal(t, http.StatusOK, status)
			r = h.do(b, http.MethodGet, "/api/auth/session", nil, nil)
			r.json(t, &later)
			require.Equal(t, int64(30*60), later.ExpiresInSeconds, "a request slides the idle expiry")

			// extend-session slides too, and needs the CSRF token.
			clock.Advance(5 * time.Minute)
			r = h.do(b, http.MethodPost, "/api/auth/extend-session", nil, nil)
			require.Equal(t, http.StatusForbidden, r.StatusCode)
			require.Equal(t, CodeCSRF, r.problemCode(t))
			r = h.do(b, http.MethodPost, "/api/auth/extend-session", nil, csrfHeader(info.CSRFToken))
			require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.body)
			var ext SessionInfo
			r.json(t, &ext)
			require.WithinDuration(t, clock.Now().Add(DefaultIdleTimeout), ext.ExpiresAt, time.Second)

			// Idle past the timeout: the session is gone.
			clock.Advance(DefaultIdleTimeout + time.Second)
			r = h.do(b, http.MethodGet, "/api/probe", nil, nil)
			require.Equal(t, http.StatusUnauthorized, r.StatusCode)
			require.Equal(t, CodeSessionExpired, r.problemCode(t))
			require.NotEmpty(t, r.Header.Get("WWW-Authenticate"))
			require.Empty(t, h.sessionCookie(b), "the stale cookie is cleared")
			r = h.do(b, http.MethodGet, "/api/auth/session", nil, nil)
			require.JSONEq(t, `{"authenticated":false}`, string(r.body))
		})
	}
}

func TestLocalSessionCookieFlags(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ModeLocal, harnessConfig{})
	r := h.do(h.client, http.MethodPost, "/api/auth/login", map[string]string{"username": "user", "password": DevPassword}, nil)
	require.Equal(t, http.StatusOK, r.StatusCode)
	var ck *http.Cookie
	for _, c := range r.Cookies() {
		if c.Name == SessionCookie {
			ck = c
		}
	}
	require.NotNil(t, ck)
	require.True(t, ck.HttpOnly)
	require.Equal(t, http.SameSiteLaxMode, ck.SameSite)
	require.Equal(t, "/", ck.Path)
	require.False(t, ck.Secure, "http public URL")
	require.Len(t, ck.Value, 43, "256 random bits")
	require.Equal(t, "no-store", r.Header.Get("Cache-Control"))
	require.NotContains(t, string(r.body), ck.Value, "the session id is only in the cookie")
}

func TestSecureCookieWithHTTPSPublicURL(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ModeLocal, harnessConfig{})
	a, err := New(Options{Mode: ModeLocal, PublicURL: "https://cml.example.com/manager", Sessions: h.store, Limiter: h.auth.limiter})
	require.NoError(t, err)
	require.Equal(t, "https://cml.example.com", a.origin)
	require.Equal(t, "https://cml.example.com/manager", a.publicBase)
	rec := httptest.NewRecorder()
	c := echo.New().NewContext(httptest.NewRequest(http.MethodGet, "/", nil), rec)
	a.setSessionCookie(c, sessions.NewID(), sessions.Session{MaxExpiresAt: time.Now().Add(time.Hour)})
	ck := rec.Result().Cookies()
	require.Len(t, ck, 1)
	require.True(t, ck[0].Secure, "an https public URL makes the cookie Secure")
	require.True(t, ck[0].HttpOnly)
}

func TestLocalLoginFailures(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ModeLocal, harnessConfig{})
	tests := []struct {
		name        string
		contentType string
		body        string
		status      int
		code        string
	}{
		{"wrong password", "application/json", `{"username":"admin","password":"nope"}`, 401, CodeInvalidCredentials},
		{"unknown user", "application/json", `{"username":"nobody","password":"test"}`, 401, CodeInvalidCredentials},
		{"unknown field", "application/json", `{"username":"admin","password":"test","admin":true}`, 400, "bad_request"},
		{"missing password", "application/json", `{"username":"admin"}`, 400, "bad_request"},
		{"not an object", "application/json", `["admin","test"]`, 400, "bad_request"},
		{"two objects", "application/json", `{"username":"admin","password":"test"}{}`, 400, "bad_request"},
		{"too large", "application/json", `{"username":"admin","password":"` + strings.Repeat("x", 20<<10) + `"}`, 413, "request_too_large"},
		{"wrong media type", "text/plain", `username=admin`, 415, "unsupported_media_type"},
		{"form unknown field", "application/x-www-form-urlencoded", `username=admin&password=test&x=1`, 400, "bad_request"},
		{"form repeated field", "application/x-www-form-urlencoded", `username=admin&username=user&password=test`, 400, "bad_request"},
	}
	for _, tt := range tests {
		r := h.do(h.client, http.MethodPost, "/api/auth/login", tt.body, http.Header{"Content-Type": {tt.contentType}})
		require.Equal(t, tt.status, r.StatusCode, "%s: %s", tt.name, r.body)
		require.Equal(t, tt.code, r.problemCode(t), tt.name)
		require.Empty(t, h.sessionCookie(h.client), tt.name)
	}

	// Unknown users and wrong passwords get the same answer.
	a := h.do(newBrowser(t), http.MethodPost, "/api/auth/login", `{"username":"admin","password":"nope"}`, http.Header{"Content-Type": {"application/json"}})
	b := h.do(newBrowser(t), http.MethodPost, "/api/auth/login", `{"username":"nobody","password":"nope"}`, http.Header{"Content-Type": {"application/json"}})
	var pa, pb map[string]any
	a.json(t, &pa)
	b.json(t, &pb)
	require.Equal(t, pa, pb)
}

func TestUnknownUsersCostABcryptComparison(t *testing.T) {
	t.Parallel()
	// Timing cannot be asserted on a shared machine; what makes it equal is
	// that unknown names are compared against a hash of the same cost.
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost+2)
	require.NoError(t, err)
	path := filepath.Join(dir, "accounts.json")
	writeAccounts(t, path, `{"accounts":[{"username":"alice","password_hash":"`+string(hash)+`","roles":["user"]}]}`)
	h := newHarness(t, ModeLocal, harnessConfig{mutate: func(o *Options) { o.Local.AccountsFile = path }})
	cost, err := bcrypt.Cost(h.auth.local.dummyHash)
	require.NoError(t, err)
	require.Equal(t, bcrypt.MinCost+2, cost)
	_, ok := h.auth.local.authenticate("nobody", "pw")
	require.False(t, ok)
	acc, ok := h.auth.local.authenticate("ALICE", "pw")
	require.True(t, ok, "user names match ignoring case")
	require.Equal(t, "alice", acc.Username)
}

func TestLoginFormAndOpenRedirect(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ModeLocal, harnessConfig{})

	r := h.do(h.client, http.MethodGet, "/api/auth/login?return_to="+url.QueryEscape(`/workers?x="><script>`), nil, nil)
	require.Equal(t, http.StatusOK, r.StatusCode)
	require.True(t, strings.HasPrefix(r.Header.Get("Content-Type"), "text/html"))
	page := string(r.body)
	require.Contains(t, page, `<form id="login" method="post"`)
	require.NotContains(t, page, `"><script>`, "return_to is escaped")
	require.NotContains(t, page, "http://cdn", "no external assets")
	require.Contains(t, r.Header.Get("Content-Security-Policy"), "default-src 'none'")

	tests := []struct {
		returnTo string
		want     string
	}{
		{"/workers?id=1", "/workers?id=1"},
		{"/", "/"},
		{"", "/"},
		{"//evil.example/x", "/"},
		{"/\\evil.example", "/"},
		{"https://evil.example/", "/"},
		{"javascript:alert(1)", "/"},
		{"workers", "/"},
		{"/ok\r\nSet-Cookie: x=1", "/"},
	}
	for _, tt := range tests {
		b := newBrowser(t)
		form := url.Values{"username": {"user"}, "password": {DevPassword}, "return_to": {tt.returnTo}}
		r := h.do(b, http.MethodPost, "/api/auth/login", form.Encode(), http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
		require.Equal(t, http.StatusSeeOther, r.StatusCode, "%q: %s", tt.returnTo, r.body)
		require.Equal(t, h.url+tt.want, r.Header.Get("Location"), "return_to %q", tt.returnTo)
		require.NotEmpty(t, h.sessionCookie(b))
	}
}

func TestLocalTokens(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ModeLocal, harnessConfig{})
	api := newBrowser(t)

	r := h.do(api, http.MethodPost, "/api/auth/token", map[string]string{"username": "integrator", "password": DevPassword}, nil)
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.body)
	var tok TokenResponse
	r.json(t, &tok)
	require.Equal(t, "Bearer", tok.TokenType)
	require.Equal(t, int64(DefaultTokenTTL/time.Second), tok.ExpiresIn)
	require.Empty(t, h.sessionCookie(api), "tokens open no session")

	status, p := h.probe(api, bearer(tok.AccessToken))
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, []rbac.Role{rbac.RoleIntegrator}, p.Roles)

	r = h.do(api, http.MethodGet, "/api/auth/me", nil, bearer(tok.AccessToken))
	var me MeResponse
	r.json(t, &me)
	require.Equal(t, "bearer", me.Auth)
	require.Equal(t, "integrator", me.Username)

	// Bearer requests need no CSRF token.
	r = h.do(api, http.MethodPost, "/api/probe", nil, bearer(tok.AccessToken))
	require.Equal(t, http.StatusOK, r.StatusCode)

	// The claims are what an OIDC provider would give.
	claims := decodeJWTPayload(t, tok.AccessToken)
	require.Equal(t, h.url, claims["iss"])
	require.Equal(t, Audience, claims["aud"])
	require.Equal(t, "integrator", claims["sub"])
	require.Equal(t, "integrator", claims["preferred_username"])
	require.Equal(t, map[string]any{"roles": []any{"integrator"}}, claims["realm_access"])
	for _, k := range []string{"iat", "nbf", "exp", "jti"} {
		require.Contains(t, claims, k)
	}

	// The JWKS publishes the key by kid.
	r = h.do(api, http.MethodGet, "/api/auth/jwks.json", nil, nil)
	require.Equal(t, http.StatusOK, r.StatusCode)
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	r.json(t, &set)
	require.Len(t, set.Keys, 1)
	require.Equal(t, "EdDSA", set.Keys[0]["alg"])
	require.Equal(t, "OKP", set.Keys[0]["kty"])
	require.Equal(t, decodeJWTHeader(t, tok.AccessToken)["kid"], set.Keys[0]["kid"])

	// Expired after the TTL.
	h.clock.Advance(DefaultTokenTTL + tokenLeeway + time.Second)
	r = h.do(api, http.MethodGet, "/api/probe", nil, bearer(tok.AccessToken))
	require.Equal(t, http.StatusUnauthorized, r.StatusCode)
	require.Equal(t, CodeInvalidToken, r.problemCode(t))
	require.Contains(t, r.Header.Get("WWW-Authenticate"), "Bearer")

	// Wrong credentials.
	r = h.do(api, http.MethodPost, "/api/auth/token", map[string]string{"username": "integrator", "password": "x"}, nil)
	require.Equal(t, http.StatusUnauthorized, r.StatusCode)
	require.Equal(t, CodeInvalidCredentials, r.problemCode(t))
	r = h.do(api, http.MethodPost, "/api/auth/token", "username=integrator&password=test", http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
	require.Equal(t, http.StatusUnsupportedMediaType, r.StatusCode)
}

func TestLocalModeRefusesOIDCRoutes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ModeLocal, harnessConfig{})
	r := h.do(h.client, http.MethodGet, "/api/auth/callback?code=x&state=y", nil, nil)
	require.Equal(t, http.StatusNotFound, r.StatusCode)
	require.Equal(t, CodeNotAvailable, r.problemCode(t))
}

func TestLogoutRevokesSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ModeLocal, harnessConfig{})
	info := h.login(h.client, "admin", DevPassword)
	stolen := h.sessionCookie(h.client)

	r := h.do(h.client, http.MethodPost, "/api/auth/logout", nil, csrfHeader(info.CSRFToken))
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.body)
	require.JSONEq(t, `{"logout_url":null}`, string(r.body))
	require.Empty(t, h.sessionCookie(h.client))

	// The old cookie no longer works anywhere, even replayed.
	replay := http.Header{"Cookie": {SessionCookie + "=" + stolen}}
	r = h.do(newBrowser(t), http.MethodGet, "/api/probe", nil, replay)
	require.Equal(t, http.StatusUnauthorized, r.StatusCode)
	require.Equal(t, CodeSessionExpired, r.problemCode(t))
	r = h.do(newBrowser(t), http.MethodGet, "/api/auth/me", nil, replay)
	require.Equal(t, http.StatusUnauthorized, r.StatusCode)
	require.Equal(t, CodeUnauthenticated, r.problemCode(t))
	r = h.do(newBrowser(t), http.MethodPost, "/api/auth/extend-session", nil, replay)
	require.Equal(t, http.StatusUnauthorized, r.StatusCode)

	// Logging out without a session is fine.
	r = h.do(newBrowser(t), http.MethodPost, "/api/auth/logout", nil, nil)
	require.Equal(t, http.StatusOK, r.StatusCode)
}

func TestLoginReplacesPreviousSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ModeLocal, harnessConfig{})
	h.login(h.client, "user", DevPassword)
	first := h.sessionCookie(h.client)
	h.login(h.client, "admin", DevPassword)
	second := h.sessionCookie(h.client)
	require.NotEqual(t, first, second)
	_, err := h.store.Get(t.Context(), first)
	require.Error(t, err, "signing in again revokes the browser's previous session")
}

func TestMaximumLifetimeEndsActiveSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ModeLocal, harnessConfig{mutate: func(o *Options) {
		o.IdleTimeout, o.MaxLifetime = 10*time.Minute, 25*time.Minute
	}})
	info := h.login(h.client, "user", DevPassword)
	for range 4 {
		h.clock.Advance(5 * time.Minute)
		r := h.do(h.client, http.MethodPost, "/api/auth/extend-session", nil, csrfHeader(info.CSRFToken))
		require.Equal(t, http.StatusOK, r.StatusCode)
		var ext SessionInfo
		r.json(t, &ext)
		require.False(t, ext.ExpiresAt.After(info.MaxExpiresAt), "never past the maximum lifetime")
	}
	h.clock.Advance(5 * time.Minute)
	status, _ := h.probe(h.client, nil)
	require.Equal(t, http.StatusUnauthorized, status)
}

func TestRemovedAccountEndsSessionAndTokens(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	require.NoError(t, err)
	path := filepath.Join(dir, "accounts.json")
	writeAccounts(t, path, `{"accounts":[
		{"username":"alice","password_hash":"`+string(hash)+`","roles":["admin"],"department":"ops","name":"Alice","email":"alice@example.com"},
		{"username":"bob","password_hash":"`+string(hash)+`","roles":[]}]}`)
	clock := newTestClock()
	be := postgresBackend(t, clock)
	key := writeKeyFile(t, dir)
	h := newHarness(t, ModeLocal, harnessConfig{backend: be, clock: clock, mutate: func(o *Options) {
		o.Local.AccountsFile, o.Local.SigningKeyFile = path, key
	}})
	h.login(h.client, "alice", "pw")
	r := h.do(newBrowser(t), http.MethodPost, "/api/auth/token", map[string]string{"username": "alice", "password": "pw"}, nil)
	var tok TokenResponse
	r.json(t, &tok)

	// bob has no role: authenticated, but the application will refuse him.
	bob := newBrowser(t)
	h.login(bob, "bob", "pw")
	status, p := h.probe(bob, nil)
	require.Equal(t, http.StatusOK, status)
	require.Empty(t, p.Roles)

	// A restart with alice removed from the file.
	writeAccounts(t, path, `{"accounts":[{"username":"bob","password_hash":"`+string(hash)+`","roles":[]}]}`)
	h2 := newHarness(t, ModeLocal, harnessConfig{backend: be, clock: clock, mutate: func(o *Options) {
		o.Local.AccountsFile, o.Local.SigningKeyFile = path, key
	}})
	r = h2.do(newBrowser(t), http.MethodGet, "/api/probe", nil, http.Header{"Cookie": {SessionCookie + "=" + h.sessionCookie(h.client)}})
	require.Equal(t, http.StatusUnauthorized, r.StatusCode)
	r = h2.do(newBrowser(t), http.MethodGet, "/api/probe", nil, bearer(tok.AccessToken))
	require.Equal(t, http.StatusUnauthorized, r.StatusCode)
	require.Equal(t, CodeInvalidToken, r.problemCode(t))
}

func TestSessionsSurviveRestartAndAreShared(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	be := postgresBackend(t, clock)
	a := newHarness(t, ModeLocal, harnessConfig{backend: be, clock: clock})
	b := newHarness(t, ModeLocal, harnessConfig{backend: be, clock: clock})
	a.login(a.client, "auditor", DevPassword)
	cookie := http.Header{"Cookie": {SessionCookie + "=" + a.sessionCookie(a.client)}}
	r := b.do(newBrowser(t), http.MethodGet, "/api/probe", nil, cookie)
	require.Equal(t, http.StatusOK, r.StatusCode, "another instance on the same store knows the session")
}

func TestLoginRateLimitSharedAcrossInstances(t *testing.T) {
	t.Parallel()
	for name, open := range map[string]func(testing.TB, *testClock) backend{"Postgres": postgresBackend, "Redis": redisBackend} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			clock := newTestClock()
			be := open(t, clock)
			limit := sessions.Limit{Attempts: 4, Window: 15 * time.Minute}
			one := newHarness(t, ModeLocal, harnessConfig{backend: be, clock: clock, limit: limit})
			two := newHarness(t, ModeLocal, harnessConfig{backend: be, clock: clock, limit: limit})
			wrong := map[string]string{"username": "admin", "password": "wrong"}
			for i, h := range []*harness{one, two, one, two} {
				r := h.do(newBrowser(t), http.MethodPost, "/api/auth/login", wrong, nil)
				require.Equal(t, http.StatusUnauthorized, r.StatusCode, "attempt %d", i+1)
			}
			clock.Advance(time.Minute)
			for _, h := range []*harness{one, two} {
				r := h.do(newBrowser(t), http.MethodPost, "/api/auth/login", map[string]string{"username": "admin", "password": DevPassword}, nil)
				require.Equal(t, http.StatusTooManyRequests, r.StatusCode, "even the right password waits: %s", r.body)
				require.Equal(t, CodeRateLimited, r.problemCode(t))
				secs, err := strconv.Atoi(r.Header.Get("Retry-After"))
				require.NoError(t, err)
				require.InDelta(t, 14*60, secs, 2)
				r = h.do(newBrowser(t), http.MethodPost, "/api/auth/token", map[string]string{"username": "admin", "password": DevPassword}, nil)
				require.Equal(t, http.StatusTooManyRequests, r.StatusCode, "the token route shares the limit")
			}
			clock.Advance(14 * time.Minute)
			one.login(newBrowser(t), "admin", DevPassword)
		})
	}
}

func TestSuccessfulLoginsDoNotUseTheLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ModeLocal, harnessConfig{limit: sessions.Limit{Attempts: 3, Window: time.Hour}})
	for range 8 {
		h.login(newBrowser(t), "user", DevPassword)
	}
}

func TestNewRefusesBadConfiguration(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	be := postgresBackend(t, clock)
	h := newHarness(t, ModeLocal, harnessConfig{backend: be, clock: clock})
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	require.NoError(t, err)
	accounts := filepath.Join(dir, "accounts.json")
	writeAccounts(t, accounts, `{"accounts":[{"username":"alice","password_hash":"`+string(hash)+`","roles":["admin"]}]}`)
	key := writeKeyFile(t, dir)
	base := Options{Mode: ModeLocal, PublicURL: "https://cml.example.com", Sessions: be.store, Limiter: h.auth.limiter}
	tests := []struct {
		name    string
		mutate  func(*Options)
		wantErr string
	}{
		{"production with dev accounts", func(o *Options) { o.Environment = "production"; o.Local.SigningKeyFile = key }, "development accounts are refused"},
		{"production without key", func(o *Options) { o.Environment = "production"; o.Local.AccountsFile = accounts }, "signing key file"},
		{"production configured", func(o *Options) {
			o.Environment = "production"
			o.Local.AccountsFile, o.Local.SigningKeyFile = accounts, key
		}, ""},
		{"development defaults", func(*Options) {}, ""},
		{"unknown mode", func(o *Options) { o.Mode = "ldap" }, "unknown auth mode"},
		{"no store", func(o *Options) { o.Sessions = nil }, "session store"},
		{"no limiter", func(o *Options) { o.Limiter = nil }, "rate limiter"},
		{"relative public URL", func(o *Options) { o.PublicURL = "/x" }, "public URL"},
		{"idle above max", func(o *Options) { o.IdleTimeout, o.MaxLifetime = 2*time.Hour, time.Hour }, "idle timeout"},
		{"token ttl", func(o *Options) { o.Local.TokenTTL = time.Second }, "token lifetime"},
		{"missing accounts file", func(o *Options) { o.Local.AccountsFile = filepath.Join(dir, "nope.json") }, "accounts file"},
		{"oidc without issuer", func(o *Options) { o.Mode = ModeOIDC }, "issuer URL"},
		{"oidc with HS256", func(o *Options) {
			o.Mode = ModeOIDC
			o.OIDC = OIDCOptions{IssuerURL: "https://idp.example.com", ClientID: "c", ClientSecret: "s", Sealer: newSealer(t), SigningAlgorithms: []string{"HS256"}}
		}, "not allowed"},
		{"oidc without sealer", func(o *Options) {
			o.Mode = ModeOIDC
			o.OIDC = OIDCOptions{IssuerURL: "https://idp.example.com", ClientID: "c", ClientSecret: "s"}
		}, "sealer"},
		{"oidc configured", func(o *Options) {
			o.Mode = ModeOIDC
			o.OIDC = OIDCOptions{IssuerURL: "https://idp.example.com", ClientID: "c", ClientSecret: "s", Sealer: newSealer(t)}
		}, ""},
	}
	for _, tt := range tests {
		opts := base
		tt.mutate(&opts)
		_, err := New(opts)
		if tt.wantErr == "" {
			require.NoError(t, err, tt.name)
		} else {
			require.ErrorContains(t, err, tt.wantErr, tt.name)
		}
	}
}

func TestDevAccountsWarnAtStart(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	newHarness(t, ModeLocal, harnessConfig{logs: logs})
	require.Contains(t, logs.String(), `"level":"WARN"`)
	require.Contains(t, logs.String(), "development accounts")
}

func TestLoadAccounts(t *testing.T) {
	t.Parallel()
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	require.NoError(t, err)
	h := string(hash)
	tests := []struct {
		name    string
		file    string
		wantErr string
	}{
		{"valid", `{"accounts":[{"username":"a.b-c_d@x","password_hash":"` + h + `","roles":["Admin","user","user"],"department":"d","name":"N","email":"a@example.com"}]}`, ""},
		{"no roles", `{"accounts":[{"username":"a","password_hash":"` + h + `","roles":[]}]}`, ""},
		{"system role", `{"accounts":[{"username":"a","password_hash":"` + h + `","roles":["system"]}]}`, "system role"},
		{"unknown role", `{"accounts":[{"username":"a","password_hash":"` + h + `","roles":["root"]}]}`, "unknown role"},
		{"plain password", `{"accounts":[{"username":"a","password_hash":"secret","roles":[]}]}`, "bcrypt"},
		{"duplicate", `{"accounts":[{"username":"a","password_hash":"` + h + `"},{"username":"A","password_hash":"` + h + `"}]}`, "twice"},
		{"bad username", `{"accounts":[{"username":"a b","password_hash":"` + h + `"}]}`, "username"},
		{"empty", `{"accounts":[]}`, "no accounts"},
		{"unknown field", `{"accounts":[{"username":"a","password":"pw","password_hash":"` + h + `"}]}`, "unknown field"},
		{"bad email", `{"accounts":[{"username":"a","password_hash":"` + h + `","email":"nope"}]}`, "email"},
		{"trailing", `{"accounts":[{"username":"a","password_hash":"` + h + `"}]} {}`, "trailing"},
		{"not json", `accounts: []`, "decode"},
	}
	for _, tt := range tests {
		path := filepath.Join(t.TempDir(), "accounts.json")
		writeAccounts(t, path, tt.file)
		accounts, err := LoadAccounts(path)
		if tt.wantErr != "" {
			require.ErrorContains(t, err, tt.wantErr, tt.name)
			continue
		}
		require.NoError(t, err, tt.name)
		require.NotEmpty(t, accounts)
	}
	accounts, err := parseAccounts([]byte(tests[0].file))
	require.NoError(t, err)
	require.Equal(t, []rbac.Role{rbac.RoleAdmin, rbac.RoleUser}, accounts[0].Roles, "roles are normalised and deduplicated")

	// Several problems are reported together.
	_, err = parseAccounts([]byte(`{"accounts":[{"username":"","password_hash":"x","roles":["system"]}]}`))
	require.ErrorContains(t, err, "username")
	require.ErrorContains(t, err, "bcrypt")
	require.ErrorContains(t, err, "system role")
}

func writeAccounts(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
}

// decodeJWTPayload returns a JWT's claims without verifying it.
func decodeJWTPayload(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	require.Len(t, parts, 3)
	raw, err := b64.DecodeString(parts[1])
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	return m
}

func decodeJWTHeader(t *testing.T, token string) map[string]any {
	t.Helper()
	raw, err := b64.DecodeString(strings.Split(token, ".")[0])
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	return m
}

// writeKeyFile writes a PKCS#8 Ed25519 key and returns its path.
func writeKeyFile(t *testing.T, dir string) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	require.NoError(t, err)
	path := filepath.Join(dir, "signing-key.pem")
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
	return path
}

func TestCheckSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ModeLocal, harnessConfig{})
	info := h.login(h.client, "user", DevPassword)
	id := h.sessionCookie(h.client)
	s, err := h.store.Get(t.Context(), id)
	require.NoError(t, err)
	ctx := setCallerContext(t.Context(), &caller{via: viaSession, sessionID: id, session: s})

	exp, ok, err := h.auth.CheckSession(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.WithinDuration(t, info.ExpiresAt, exp, time.Millisecond)

	require.NoError(t, h.store.Delete(t.Context(), id))
	_, ok, err = h.auth.CheckSession(ctx)
	require.True(t, ok)
	require.ErrorIs(t, err, ErrSessionEnded)

	_, ok, err = h.auth.CheckSession(t.Context())
	require.NoError(t, err)
	require.False(t, ok, "anonymous")
	_, ok, err = h.auth.CheckSession(setCallerContext(t.Context(), &caller{via: viaBearer}))
	require.NoError(t, err)
	require.False(t, ok, "bearer callers have no session")
}
