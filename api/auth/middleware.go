package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/labstack/echo/v4"

	"github.com/cmlcloud/cml-cloud-manager/api"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sessions"
)

// routeKind tells the middleware how much of the caller a route needs.
type routeKind int

const (
	// routeAPI is every route but the auth routes: credentials are resolved
	// and invalid or expired ones are refused.
	routeAPI routeKind = iota
	// routePublic routes (login, callback, token, jwks) ignore credentials.
	routePublic
	// routeSessionInfo (GET /auth/session) reads the session without
	// sliding it and treats an ended session as none.
	routeSessionInfo
	// routeAccount routes (me, logout, extend-session) treat an ended
	// session as none.
	routeAccount
)

// Methods of opening a session (sessions.Session.Method).
const (
	methodLocal = "local"
	methodOIDC  = "oidc"
)

// How a caller authenticated, as GET /api/auth/me reports it.
const (
	viaSession = "session"
	viaBearer  = "bearer"
)

// maxBearerLen bounds the tokens we are willing to parse.
const maxBearerLen = 16 << 10

// Credentials that do not identify anyone.
var (
	// ErrSessionEnded means the session has expired or was revoked. It is
	// api.ErrSessionEnded, which the event streams check for.
	ErrSessionEnded = api.ErrSessionEnded
	// errInvalidToken means the bearer token did not verify.
	errInvalidToken = errors.New("invalid bearer token")
)

// identity is who a token or session says the caller is.
type identity struct {
	Subject    string
	Username   string
	Name       string
	Email      string
	Department string
	Roles      []rbac.Role
}

func (id identity) principal() rbac.Principal {
	return rbac.Principal{Subject: id.Subject, Username: id.Username, Roles: id.Roles, Department: id.Department}
}

// roleNames returns the roles as strings, never nil.
func (id identity) roleNames() []string {
	out := make([]string, 0, len(id.Roles))
	for _, r := range id.Roles {
		out = append(out, string(r))
	}
	return out
}

// parseRoles keeps the external role names we know, once each, in order;
// "system" and foreign names are dropped.
func parseRoles(names []string) []rbac.Role {
	out := make([]rbac.Role, 0, len(names))
	for _, n := range names {
		if r, ok := rbac.ParseRole(n); ok && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// caller is the authenticated caller of a request.
type caller struct {
	identity
	via       string
	sessionID string
	session   sessions.Session
	// tokenExpiry is when a bearer token expires (zero for sessions).
	tokenExpiry time.Time
}

type callerKey struct{}

// callerFrom returns the caller the middleware resolved, if any.
func callerFrom(ctx context.Context) (*caller, bool) {
	c, ok := ctx.Value(callerKey{}).(*caller)
	return c, ok
}

func setCaller(c echo.Context, cl *caller) {
	c.SetRequest(c.Request().WithContext(setCallerContext(c.Request().Context(), cl)))
}

// setCallerContext carries the caller, and its principal for the
// application, in ctx.
func setCallerContext(ctx context.Context, cl *caller) context.Context {
	return context.WithValue(rbac.WithPrincipal(ctx, cl.principal()), callerKey{}, cl)
}

// Middleware implements api.Authenticator.
func (a *Authenticator) Middleware() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			kind := a.routes[req.Method+" "+c.Path()]
			if kind == routePublic {
				return next(c)
			}
			if h := req.Header.Get(echo.HeaderAuthorization); h != "" && kind != routeSessionInfo {
				cl, err := a.bearerCaller(req.Context(), h)
				if errors.Is(err, errInvalidToken) {
					c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="`+Audience+`", error="invalid_token"`)
					return api.NewProblem(http.StatusUnauthorized, CodeInvalidToken, "The bearer token is invalid or has expired.")
				}
				if err != nil {
					return err
				}
				setCaller(c, cl)
				return next(c)
			}
			ck, err := req.Cookie(SessionCookie)
			if err != nil || ck.Value == "" {
				return next(c)
			}
			cl, err := a.sessionCaller(req.Context(), ck.Value)
			if errors.Is(err, ErrSessionEnded) {
				a.clearSessionCookie(c)
				if kind != routeAPI {
					return next(c)
				}
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="`+Audience+`"`)
				return api.NewProblem(http.StatusUnauthorized, CodeSessionExpired, "The session has ended; sign in again.")
			}
			if err != nil {
				return a.unavailable(req.Context(), "resolve session", err)
			}
			if unsafeMethod(req.Method) && !a.csrfOK(req, cl.session) {
				a.logger.WarnContext(req.Context(), "csrf check failed",
					slog.String("method", req.Method), slog.String("path", req.URL.Path),
					slog.String("request_id", api.RequestID(req.Context())))
				return api.NewProblem(http.StatusForbidden, CodeCSRF,
					"A cookie-authenticated "+req.Method+" needs the session's X-CSRF-Token header or a same-origin Origin header.")
			}
			if kind != routeSessionInfo {
				err = a.slide(req.Context(), cl)
				if errors.Is(err, ErrSessionEnded) {
					a.clearSessionCookie(c)
					return api.NewProblem(http.StatusUnauthorized, CodeSessionExpired, "The session has ended; sign in again.")
				}
				if err != nil {
					return a.unavailable(req.Context(), "slide session", err)
				}
			}
			setCaller(c, cl)
			return next(c)
		}
	}
}

// unavailable logs err and returns a 503 problem: a dependency (the session
// store, the identity provider) failed, not the caller.
func (a *Authenticator) unavailable(ctx context.Context, what string, err error) error {
	a.logger.ErrorContext(ctx, what+" failed", slog.Any("error", err), slog.String("request_id", api.RequestID(ctx)))
	return api.NewProblem(http.StatusServiceUnavailable, api.CodeUnavailable, "Authentication is temporarily unavailable; try again.")
}

func unsafeMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return false
	}
	return true
}

// csrfOK accepts the session's CSRF token in X-CSRF-Token, or an Origin
// header equal to the public URL's origin.
func (a *Authenticator) csrfOK(r *http.Request, s sessions.Session) bool {
	if tok := r.Header.Get("X-CSRF-Token"); tok != "" && s.CSRFToken != "" &&
		subtle.ConstantTimeCompare([]byte(tok), []byte(s.CSRFToken)) == 1 {
		return true
	}
	return a.sameOrigin(r)
}

// sameOrigin reports whether the request's Origin header is ours.
func (a *Authenticator) sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	return o != "" && strings.EqualFold(o, a.origin)
}

// foreignOrigin reports whether the request says it comes from another
// origin. Requests without Origin (API clients, old browsers) pass.
func (a *Authenticator) foreignOrigin(r *http.Request) bool {
	return r.Header.Get("Origin") != "" && !a.sameOrigin(r)
}

// bearerCaller verifies an Authorization header.
func (a *Authenticator) bearerCaller(ctx context.Context, header string) (*caller, error) {
	scheme, token, _ := strings.Cut(strings.TrimSpace(header), " ")
	token = strings.TrimSpace(token)
	var (
		id  identity
		err error
	)
	switch {
	case !strings.EqualFold(scheme, "Bearer") || token == "":
		err = errors.New("not a Bearer authorization")
	case len(token) > maxBearerLen:
		err = errors.New("token too long")
	case a.local != nil:
		id, err = a.local.verify(token)
	default:
		id, err = a.oidc.verifyBearer(ctx, token)
	}
	if errors.Is(err, errProviderUnavailable) {
		return nil, a.unavailable(ctx, "verify bearer token", err)
	}
	if err != nil {
		a.logger.InfoContext(ctx, "bearer token rejected", slog.String("reason", err.Error()),
			slog.String("request_id", api.RequestID(ctx)))
		return nil, errInvalidToken
	}
	return &caller{identity: id, via: viaBearer, tokenExpiry: tokenExpiry(token)}, nil
}

// tokenExpiry reads the exp claim of a JWT that has just been verified
// (zero when it has none).
func tokenExpiry(token string) time.Time {
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
		return time.Time{}
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return time.Time{}
	}
	return exp.Time
}

// sessionCaller resolves a session cookie.
func (a *Authenticator) sessionCaller(ctx context.Context, id string) (*caller, error) {
	s, err := a.store.Get(ctx, id)
	if errors.Is(err, sessions.ErrNotFound) {
		return nil, ErrSessionEnded
	}
	if err != nil {
		return nil, fmt.Errorf("get session: %w", err)
	}
	var ident identity
	switch {
	case s.Method == methodLocal && a.local != nil:
		acc, ok := a.local.account(s.Username)
		if !ok {
			// The account was removed since sign-in.
			return nil, a.endSession(ctx, id)
		}
		ident = acc.identity()
	case s.Method == methodOIDC && a.oidc != nil:
		s, err = a.refreshIfDue(ctx, id, s)
		if err != nil {
			return nil, err
		}
		ident = identity{
			Subject: s.Subject, Username: s.Username, Name: s.Name, Email: s.Email,
			Department: s.Department, Roles: parseRoles(s.Roles),
		}
	default:
		// Opened in the other mode; the configuration changed since.
		return nil, a.endSession(ctx, id)
	}
	return &caller{identity: ident, via: viaSession, sessionID: id, session: s}, nil
}

// slide pushes the idle expiry of the caller's session on activity, at most
// once per touchEvery to spare the store a write per request.
func (a *Authenticator) slide(ctx context.Context, cl *caller) error {
	s := cl.session
	if !s.ExpiresAt.Before(s.MaxExpiresAt) || a.now().Add(s.IdleTimeout).Sub(s.ExpiresAt) < a.touchEvery {
		return nil
	}
	s, err := a.store.Touch(ctx, cl.sessionID)
	if errors.Is(err, sessions.ErrNotFound) {
		return ErrSessionEnded
	}
	if err != nil {
		return fmt.Errorf("touch session: %w", err)
	}
	cl.session = s
	return nil
}

// endSession deletes a session that may no longer be used and returns
// ErrSessionEnded (or the delete's error).
func (a *Authenticator) endSession(ctx context.Context, id string) error {
	if err := a.store.Delete(ctx, id); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return ErrSessionEnded
}

// CheckSession re-reads the session that authenticated the request in ctx,
// without sliding it, and returns its current idle expiry. For a bearer
// token the "session" is the token's lifetime: its expiry is returned, and
// ErrSessionEnded once it has passed. ok is false for anonymous callers and
// tokens without an expiry. A session that has expired or was revoked since
// the request began is ErrSessionEnded. Long-lived responses, such as the
// event streams, call it periodically to tell the client when its session
// ends.
func (a *Authenticator) CheckSession(ctx context.Context) (expiresAt time.Time, ok bool, err error) {
	cl, found := callerFrom(ctx)
	if found && cl.via == viaBearer && !cl.tokenExpiry.IsZero() {
		if !a.now().Before(cl.tokenExpiry) {
			return cl.tokenExpiry, true, ErrSessionEnded
		}
		return cl.tokenExpiry, true, nil
	}
	if !found || cl.via != viaSession {
		return time.Time{}, false, nil
	}
	s, err := a.store.Get(ctx, cl.sessionID)
	if errors.Is(err, sessions.ErrNotFound) {
		return time.Time{}, true, ErrSessionEnded
	}
	if err != nil {
		return time.Time{}, true, fmt.Errorf("check session: %w", err)
	}
	return s.ExpiresAt, true, nil
}
