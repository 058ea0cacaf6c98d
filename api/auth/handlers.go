package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/cmlcloud/cml-cloud-manager/api"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sessions"
)

// Register implements api.Authenticator: it mounts the /auth routes on the
// /api group. Call it once.
func (a *Authenticator) Register(g *echo.Group) {
	auth := g.Group("/auth")
	add := func(kind routeKind, r *echo.Route) *echo.Route {
		a.routes[r.Method+" "+r.Path] = kind
		return r
	}
	add(routePublic, auth.GET("/login", a.getLogin))
	add(routePublic, auth.POST("/login", a.postLogin))
	a.callbackPath = add(routePublic, auth.GET("/callback", a.callback)).Path
	add(routePublic, auth.POST("/token", a.token))
	add(routePublic, auth.GET("/jwks.json", a.jwks))
	add(routeSessionInfo, auth.GET("/session", a.sessionInfo))
	add(routeAccount, auth.GET("/me", a.me))
	add(routeAccount, auth.POST("/logout", a.logout))
	add(routeAccount, auth.POST("/extend-session", a.extendSession))
}

func notAvailable(what string) error {
	return api.NewProblem(http.StatusNotFound, CodeNotAvailable, what)
}

// randomToken returns 256 random bits in unpadded base64url.
func randomToken() string {
	return sessions.NewID()
}

// SessionInfo is the body of GET /api/auth/session and of the routes that
// open or extend a session.
type SessionInfo struct {
	Authenticated      bool      `json:"authenticated"`
	Subject            string    `json:"subject"`
	Username           string    `json:"username"`
	Roles              []string  `json:"roles"`
	ExpiresAt          time.Time `json:"expires_at"`
	ExpiresInSeconds   int64     `json:"expires_in_seconds"`
	MaxExpiresAt       time.Time `json:"max_expires_at"`
	IdleTimeoutSeconds int64     `json:"idle_timeout_seconds"`
	WarningSeconds     int64     `json:"warning_seconds"`
	CSRFToken          string    `json:"csrf_token"`
}

func (a *Authenticator) sessionInfoOf(id identity, s sessions.Session) SessionInfo {
	return SessionInfo{
		Authenticated:      true,
		Subject:            id.Subject,
		Username:           id.Username,
		Roles:              id.roleNames(),
		ExpiresAt:          s.ExpiresAt.UTC(),
		ExpiresInSeconds:   max(0, int64(s.ExpiresAt.Sub(a.now())/time.Second)),
		MaxExpiresAt:       s.MaxExpiresAt.UTC(),
		IdleTimeoutSeconds: int64(s.IdleTimeout / time.Second),
		WarningSeconds:     int64(a.warning / time.Second),
		CSRFToken:          s.CSRFToken,
	}
}

func noStore(c echo.Context) {
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
}

// openSession creates a session for id, revoking the one the browser had
// (so a planted session id never becomes a signed-in one), and sets the
// cookie.
func (a *Authenticator) openSession(c echo.Context, method string, id identity, tokens string, tokensExpireAt time.Time) (sessions.Session, error) {
	ctx := c.Request().Context()
	if old, err := c.Cookie(SessionCookie); err == nil && old.Value != "" {
		if err := a.store.Delete(ctx, old.Value); err != nil {
			return sessions.Session{}, fmt.Errorf("revoke the previous session: %w", err)
		}
	}
	sid, s, err := a.store.Create(ctx, sessions.Session{
		Subject: id.Subject, Username: id.Username, Name: id.Name, Email: id.Email, Department: id.Department,
		Roles: id.roleNames(), Method: method, CSRFToken: randomToken(),
		Tokens: tokens, TokensExpireAt: tokensExpireAt,
		IdleTimeout: a.idle, MaxExpiresAt: a.now().Add(a.maxLife),
	})
	if err != nil {
		return sessions.Session{}, fmt.Errorf("create session: %w", err)
	}
	a.setSessionCookie(c, sid, s)
	a.logger.InfoContext(ctx, "signed in", slog.String("method", method), slog.String("subject", id.Subject),
		slog.String("username", id.Username), slog.String("remote", c.RealIP()),
		slog.String("request_id", api.RequestID(ctx)))
	return s, nil
}

// getLogin starts a sign-in: the provider's login page in OIDC mode, the
// login form in local mode.
func (a *Authenticator) getLogin(c echo.Context) error {
	returnTo := safeReturnTo(c.QueryParam("return_to"))
	if a.oidc != nil {
		return a.startOIDCLogin(c, returnTo)
	}
	return a.loginForm(c, returnTo)
}

// callback is the OIDC redirect target.
func (a *Authenticator) callback(c echo.Context) error {
	if a.oidc == nil {
		return notAvailable("The callback exists in OIDC mode only.")
	}
	return a.oidcCallback(c)
}

// postLogin signs in with a local account: JSON in, SessionInfo out; or a
// form post, answered with a redirect to return_to.
func (a *Authenticator) postLogin(c echo.Context) error {
	if a.local == nil {
		return notAvailable("Password sign-in exists in local mode only; use GET /api/auth/login.")
	}
	req := c.Request()
	if a.foreignOrigin(req) {
		return api.NewProblem(http.StatusForbidden, CodeCSRF, "Sign-in is only accepted from this site's own pages.")
	}
	creds, form, err := decodeLogin(c)
	if err != nil {
		return err
	}
	acc, err := a.checkPassword(c, creds)
	if err != nil {
		return err
	}
	s, err := a.openSession(c, methodLocal, acc.identity(), "", time.Time{})
	if err != nil {
		return a.unavailable(req.Context(), "sign in", err)
	}
	noStore(c)
	if form {
		return c.Redirect(http.StatusSeeOther, a.publicBase+safeReturnTo(creds.ReturnTo))
	}
	return c.JSON(http.StatusOK, a.sessionInfoOf(acc.identity(), s))
}

// checkPassword applies the rate limit and checks the credentials.
func (a *Authenticator) checkPassword(c echo.Context, creds credentials) (Account, error) {
	ctx := c.Request().Context()
	keys := []string{"user:" + strings.ToLower(creds.Username), "ip:" + c.RealIP()}
	wait, err := a.limiter.Attempt(ctx, keys...)
	if err != nil {
		return Account{}, a.unavailable(ctx, "rate limit", err)
	}
	if wait > 0 {
		secs := int64(math.Ceil(wait.Seconds()))
		c.Response().Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		a.logger.WarnContext(ctx, "sign-in rate limited", slog.String("user_fp", fingerprint(creds.Username)),
			slog.String("remote", c.RealIP()), slog.String("request_id", api.RequestID(ctx)))
		return Account{}, &api.Problem{
			Status: http.StatusTooManyRequests, Code: CodeRateLimited,
			Detail:     fmt.Sprintf("Too many sign-in attempts; try again in %d seconds.", secs),
			Extensions: map[string]any{"retry_after_seconds": secs},
		}
	}
	acc, ok := a.local.authenticate(creds.Username, creds.Password)
	if !ok {
		// The attempted name is fingerprinted, not logged: people type
		// passwords into the user name field.
		a.logger.InfoContext(ctx, "sign-in failed", slog.String("user_fp", fingerprint(creds.Username)),
			slog.String("remote", c.RealIP()), slog.String("request_id", api.RequestID(ctx)))
		return Account{}, api.NewProblem(http.StatusUnauthorized, CodeInvalidCredentials, "Wrong user name or password.")
	}
	if err := a.limiter.Forgive(ctx, keys...); err != nil {
		a.logger.WarnContext(ctx, "forgive sign-in attempt", slog.Any("error", err))
	}
	return acc, nil
}

// fingerprint identifies a string in logs without revealing it.
func fingerprint(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}

// TokenResponse is the body of POST /api/auth/token.
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}

// token issues a short-lived JWT to an API client (local mode).
func (a *Authenticator) token(c echo.Context) error {
	if a.local == nil {
		return notAvailable("Tokens come from the identity provider's token endpoint in OIDC mode.")
	}
	if ct := mediaType(c.Request()); ct != echo.MIMEApplicationJSON {
		return api.NewProblem(http.StatusUnsupportedMediaType, api.CodeUnsupportedMediaType, "Send the credentials as application/json.")
	}
	body, err := readBody(c)
	if err != nil {
		return err
	}
	creds, err := decodeCredentials(body)
	if err != nil {
		return badRequest(err)
	}
	acc, err := a.checkPassword(c, creds)
	if err != nil {
		return err
	}
	tok, exp, err := a.local.issue(acc)
	if err != nil {
		return fmt.Errorf("issue token: %w", err)
	}
	ctx := c.Request().Context()
	a.logger.InfoContext(ctx, "token issued", slog.String("subject", acc.Username), slog.Time("expires_at", exp),
		slog.String("remote", c.RealIP()), slog.String("request_id", api.RequestID(ctx)))
	noStore(c)
	return c.JSON(http.StatusOK, TokenResponse{AccessToken: tok, TokenType: "Bearer", ExpiresIn: int64(exp.Sub(a.now()) / time.Second)})
}

// jwks serves the public keys of the local JWTs.
func (a *Authenticator) jwks(c echo.Context) error {
	if a.local == nil {
		return notAvailable("The provider publishes its keys in OIDC mode.")
	}
	keys := make([]map[string]string, 0, len(a.local.keys))
	for _, k := range a.local.keys {
		keys = append(keys, k.jwk())
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "public, max-age=300")
	return c.JSON(http.StatusOK, map[string]any{"keys": keys})
}

// sessionInfo reports the session without extending it. Without one it is
// {"authenticated": false}, never a 401.
func (a *Authenticator) sessionInfo(c echo.Context) error {
	noStore(c)
	cl, ok := callerFrom(c.Request().Context())
	if !ok || cl.via != viaSession {
		return c.JSON(http.StatusOK, map[string]bool{"authenticated": false})
	}
	return c.JSON(http.StatusOK, a.sessionInfoOf(cl.identity, cl.session))
}

// MeResponse is the body of GET /api/auth/me.
type MeResponse struct {
	Subject    string   `json:"subject"`
	Username   string   `json:"username"`
	Name       string   `json:"name"`
	Email      string   `json:"email"`
	Roles      []string `json:"roles"`
	Department string   `json:"department"`
	Auth       string   `json:"auth"`
}

func (a *Authenticator) me(c echo.Context) error {
	cl, ok := callerFrom(c.Request().Context())
	if !ok {
		return unauthenticated()
	}
	noStore(c)
	return c.JSON(http.StatusOK, MeResponse{
		Subject: cl.Subject, Username: cl.Username, Name: cl.Name, Email: cl.Email,
		Roles: cl.roleNames(), Department: cl.Department, Auth: cl.via,
	})
}

func unauthenticated() error {
	return api.NewProblem(http.StatusUnauthorized, CodeUnauthenticated, "Sign in first.")
}

// extendSession slides the idle expiry (never past the maximum lifetime).
func (a *Authenticator) extendSession(c echo.Context) error {
	ctx := c.Request().Context()
	cl, ok := callerFrom(ctx)
	if !ok || cl.via != viaSession {
		return unauthenticated()
	}
	s, err := a.store.Touch(ctx, cl.sessionID)
	if errors.Is(err, sessions.ErrNotFound) {
		a.clearSessionCookie(c)
		return unauthenticated()
	}
	if err != nil {
		return a.unavailable(ctx, "extend session", err)
	}
	noStore(c)
	return c.JSON(http.StatusOK, a.sessionInfoOf(cl.identity, s))
}

// LogoutResponse is the body of POST /api/auth/logout: where to send the
// browser to end the provider's session too (OIDC), else null.
type LogoutResponse struct {
	LogoutURL *string `json:"logout_url"`
}

// logout revokes the session and clears the cookie.
func (a *Authenticator) logout(c echo.Context) error {
	ctx := c.Request().Context()
	var out LogoutResponse
	if cl, ok := callerFrom(ctx); ok && cl.via == viaSession {
		if err := a.store.Delete(ctx, cl.sessionID); err != nil {
			return a.unavailable(ctx, "sign out", err)
		}
		if cl.session.Method == methodOIDC && a.oidc != nil {
			out.LogoutURL = a.endProviderSession(ctx, cl.session)
		}
		a.logger.InfoContext(ctx, "signed out", slog.String("subject", cl.Subject), slog.String("request_id", api.RequestID(ctx)))
	}
	a.clearSessionCookie(c)
	noStore(c)
	return c.JSON(http.StatusOK, out)
}

// mediaType is the request's media type without parameters.
func mediaType(r *http.Request) string {
	mt, _, err := mime.ParseMediaType(r.Header.Get(echo.HeaderContentType))
	if err != nil {
		return ""
	}
	return mt
}

// safeReturnTo keeps a same-origin relative path ("/workers?x=1") and
// replaces anything else ("//evil.example", "https://...", "/\\evil") with
// "/": an open redirect would let anyone borrow our sign-in page.
func safeReturnTo(s string) string {
	if !validReturnTo(s) {
		return "/"
	}
	return s
}

func validReturnTo(s string) bool {
	if len(s) == 0 || len(s) > 2048 || s[0] != '/' {
		return false
	}
	if len(s) > 1 && (s[1] == '/' || s[1] == '\\') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return false
		}
	}
	u, err := url.Parse(s)
	return err == nil && u.Scheme == "" && u.Host == "" && u.User == nil && u.Opaque == ""
}
