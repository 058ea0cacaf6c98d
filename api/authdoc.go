package api

import (
	"net/http"
	"time"
)

// The /api/auth routes are served by the Authenticator (api/auth). This file
// describes their contract for the OpenAPI document; the types here are the
// documented wire shapes, not used by the server itself.

// AuthSessionInfo is the body of GET /api/auth/session, POST /api/auth/login
// (JSON) and POST /api/auth/extend-session.
type AuthSessionInfo struct {
	Authenticated      bool      `json:"authenticated"`
	Subject            string    `json:"subject,omitempty"`
	Username           string    `json:"username,omitempty"`
	Roles              []string  `json:"roles,omitempty"`
	ExpiresAt          time.Time `json:"expires_at,omitzero" doc:"When the session ends unless extended (sliding idle expiry)."`
	ExpiresInSeconds   int64     `json:"expires_in_seconds,omitempty"`
	MaxExpiresAt       time.Time `json:"max_expires_at,omitzero" doc:"The session's maximum lifetime; extending never goes past it."`
	IdleTimeoutSeconds int64     `json:"idle_timeout_seconds,omitempty"`
	WarningSeconds     int64     `json:"warning_seconds,omitempty" doc:"How long before expiry the UI should warn."`
	CSRFToken          string    `json:"csrf_token,omitempty" doc:"Send as X-CSRF-Token on unsafe cookie-authenticated requests."`
}

// AuthMe is the body of GET /api/auth/me.
type AuthMe struct {
	Subject    string   `json:"subject"`
	Username   string   `json:"username"`
	Name       string   `json:"name"`
	Email      string   `json:"email"`
	Roles      []string `json:"roles"`
	Department string   `json:"department"`
	Auth       string   `json:"auth" doc:"session or bearer."`
}

// AuthCredentials is the JSON body of POST /api/auth/login and POST
// /api/auth/token.
type AuthCredentials struct {
	Username string `json:"username" openapi:"required"`
	Password string `json:"password" openapi:"required"`
}

// AuthLoginForm is the form-encoded body of POST /api/auth/login.
type AuthLoginForm struct {
	Username string `json:"username" openapi:"required"`
	Password string `json:"password" openapi:"required"`
	ReturnTo string `json:"return_to,omitempty" doc:"A same-origin relative path (/...) to go to after login."`
}

// AuthToken is the body of POST /api/auth/token.
type AuthToken struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type" doc:"Bearer."`
	ExpiresIn   int64  `json:"expires_in" doc:"Lifetime in seconds."`
}

// AuthLogout is the body of POST /api/auth/logout.
type AuthLogout struct {
	LogoutURL *string `json:"logout_url" doc:"The identity provider's end-session URL to visit next (OIDC), or null."`
}

// AuthJWKS is the body of GET /api/auth/jwks.json.
type AuthJWKS struct {
	Keys []map[string]any `json:"keys" doc:"The public signing keys (JWK), each with its kid."`
}

var returnToParam = Param{Name: "return_to", In: "query", Description: "A same-origin relative path (/...) to return to; anything else is ignored.",
	Schema: map[string]any{"type": "string", "maxLength": 2048}}

// authRoutes documents the Authenticator's routes exactly as its contract
// states them.
func authRoutes() []Route {
	redirect := func(status int, desc string) Response {
		return Response{Status: status, Description: desc, Headers: map[string]string{"Location": "Where to go."}}
	}
	credentialErrors := []int{http.StatusUnauthorized, http.StatusNotFound, http.StatusTooManyRequests, http.StatusBadRequest,
		http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType}
	return []Route{
		{
			Method: http.MethodGet, Path: "/api/auth/login", OperationID: "authLoginStart", Tag: "auth", Access: AccessAuthenticator,
			Summary:     "Start a login",
			Description: "OIDC mode: redirects to the provider (authorization code with PKCE; state and nonce kept server-side, bound to the browser by a short-lived HttpOnly cookie). Local mode: a minimal login form posting to POST /api/auth/login.",
			Params:      []Param{returnToParam},
			Responses: []Response{
				redirect(http.StatusFound, "OIDC mode: to the provider's authorization endpoint."),
				{Status: http.StatusOK, Description: "Local mode: the login form.", Media: []Media{{Type: "text/html", Schema: map[string]any{"type": "string"}}}},
			},
		},
		{
			Method: http.MethodGet, Path: "/api/auth/callback", OperationID: "authCallback", Tag: "auth", Access: AccessAuthenticator,
			Summary:     "OIDC callback",
			Description: "Verifies state (single use, 10 minutes) and nonce, exchanges the code, creates the session and sets the cookie. Any failure redirects to /?auth_error=<code> (state_mismatch, nonce_mismatch, exchange_failed, idp_error, unavailable). Local mode: 404 not_available.",
			Params: []Param{
				{Name: "code", In: "query", Description: "The authorization code.", Schema: map[string]any{"type": "string"}},
				{Name: "state", In: "query", Description: "The state sent with the authorization request.", Schema: map[string]any{"type": "string"}},
			},
			Errors:    []int{http.StatusNotFound},
			Responses: []Response{redirect(http.StatusSeeOther, "To return_to or /, with the session cookie; or to /?auth_error=<code>.")},
		},
		{
			Method: http.MethodPost, Path: "/api/auth/login", OperationID: "authLogin", Tag: "auth", Access: AccessAuthenticator,
			Summary:     "Log in with a local account",
			Description: "Local mode only (OIDC: 404 not_available). JSON answers 200 with the session; a form post answers 303 to return_to. Wrong credentials: 401 invalid_credentials; too many attempts: 429 rate_limited with Retry-After.",
			Body: &Body{Required: true, Limit: 16 << 10, Media: []Media{
				{Type: mimeJSON, Go: AuthCredentials{}},
				{Type: "application/x-www-form-urlencoded", Go: AuthLoginForm{}},
			}},
			Errors: credentialErrors,
			Responses: []Response{
				{Status: http.StatusOK, Description: "Logged in (JSON); the session cookie is set.", Media: []Media{{Type: mimeJSON, Go: AuthSessionInfo{}}},
					Headers: map[string]string{"Set-Cookie": "The session cookie (" + SessionCookieName + ", HttpOnly, SameSite=Lax)."}},
				redirect(http.StatusSeeOther, "Logged in (form); the session cookie is set."),
			},
		},
		{
			Method: http.MethodPost, Path: "/api/auth/logout", OperationID: "authLogout", Tag: "auth", Access: AccessAuthenticator,
			Summary:     "Log out",
			Description: "Revokes the session and clears the cookie.",
			Security:    []string{"", "sessionCookie"},
			Errors:      []int{http.StatusForbidden},
			Responses:   []Response{jsonOK(http.StatusOK, "Logged out.", AuthLogout{})},
		},
		{
			Method: http.MethodGet, Path: "/api/auth/session", OperationID: "authSession", Tag: "auth", Access: AccessAuthenticator,
			Summary:     "The current session",
			Description: "Never 401: without a session the body is {\"authenticated\": false}. It does not extend the session.",
			Security:    []string{"", "sessionCookie"},
			Responses:   []Response{jsonOK(http.StatusOK, "The session.", AuthSessionInfo{})},
		},
		{
			Method: http.MethodGet, Path: "/api/auth/me", OperationID: "authMe", Tag: "auth", Access: AccessAuthenticator,
			Summary:   "The caller",
			Security:  []string{"sessionCookie", "bearerAuth"},
			Errors:    []int{http.StatusUnauthorized},
			Responses: []Response{jsonOK(http.StatusOK, "Who is calling.", AuthMe{})},
		},
		{
			Method: http.MethodPost, Path: "/api/auth/extend-session", OperationID: "authExtendSession", Tag: "auth", Access: AccessAuthenticator,
			Summary:     "Extend the session",
			Description: "Slides the idle expiry, never past the maximum lifetime.",
			Security:    []string{"sessionCookie"},
			Errors:      []int{http.StatusUnauthorized, http.StatusForbidden},
			Responses:   []Response{jsonOK(http.StatusOK, "The extended session.", AuthSessionInfo{})},
		},
		{
			Method: http.MethodPost, Path: "/api/auth/token", OperationID: "authToken", Tag: "auth", Access: AccessAuthenticator,
			Summary:     "Issue an API token",
			Description: "Local mode only (OIDC: 404 not_available; use the provider's token endpoint): a short-lived JWT for API clients. Rate-limited like login.",
			Body:        &Body{Required: true, Limit: 16 << 10, Media: []Media{{Type: mimeJSON, Go: AuthCredentials{}}}},
			Errors:      credentialErrors,
			Responses:   []Response{jsonOK(http.StatusOK, "The token.", AuthToken{})},
		},
		{
			Method: http.MethodGet, Path: "/api/auth/jwks.json", OperationID: "authJWKS", Tag: "auth", Access: AccessAuthenticator,
			Summary:     "Public signing keys",
			Description: "Local mode: the JWK set that verifies the tokens of POST /api/auth/token. OIDC: 404.",
			Errors:      []int{http.StatusNotFound},
			Responses:   []Response{jsonOK(http.StatusOK, "The JWK set.", AuthJWKS{})},
		},
	}
}
