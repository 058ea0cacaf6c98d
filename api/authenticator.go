package api

import "github.com/labstack/echo/v4"

// Authenticator identifies the callers of /api and serves the /api/auth/*
// routes. The implementation lives in api/auth (local accounts and OIDC,
// sessions, bearer tokens); the server only depends on this interface.
type Authenticator interface {
	// Middleware runs on every /api request. It resolves the caller from the
	// session cookie or an "Authorization: Bearer" token and stores the
	// principal in the request's context with rbac.WithPrincipal, so that the
	// application handlers can authorise it. A request without credentials
	// passes through anonymous (the application answers 401 where a caller
	// is required); invalid or expired credentials are answered 401
	// problem+json with a WWW-Authenticate header; a cookie-authenticated
	// unsafe request (POST, PUT, PATCH, DELETE) without a valid CSRF token or
	// a same-origin Origin header is answered 403 with code "csrf".
	Middleware() echo.MiddlewareFunc
	// Register mounts the /api/auth/* routes on the /api group.
	Register(api *echo.Group)
}
