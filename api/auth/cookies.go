package auth

import (
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sessions"
)

// setSessionCookie gives the browser the session id. The cookie lives until
// the session's maximum lifetime; the store decides whether it is still
// valid before that.
func (a *Authenticator) setSessionCookie(c echo.Context, id string, s sessions.Session) {
	c.SetCookie(&http.Cookie{
		Name:     SessionCookie,
		Value:    id,
		Path:     "/",
		Expires:  s.MaxExpiresAt,
		MaxAge:   max(1, int(s.MaxExpiresAt.Sub(a.now())/time.Second)),
		HttpOnly: true,
		Secure:   a.secure,
		SameSite: http.SameSiteLaxMode,
	})
}

func (a *Authenticator) clearSessionCookie(c echo.Context) {
	c.SetCookie(&http.Cookie{
		Name:     SessionCookie,
		Value:    "",
		Path:     "/",
		MaxAge:   -1,
		HttpOnly: true,
		Secure:   a.secure,
		SameSite: http.SameSiteLaxMode,
	})
}

// loginCookiePath scopes the login cookie to the callback, under the public
// URL's path.
func (a *Authenticator) loginCookiePath() string {
	return strings.TrimSuffix(a.public.Path, "/") + a.callbackPath
}

// setLoginCookie binds a pending OIDC login to this browser. SameSite=Lax
// lets the provider's top-level redirect back to the callback carry it.
func (a *Authenticator) setLoginCookie(c echo.Context, binding string) {
	c.SetCookie(&http.Cookie{
		Name:     LoginCookie,
		Value:    binding,
		Path:     a.loginCookiePath(),
		MaxAge:   int(loginStateTTL / time.Second),
		HttpOnly: true,
		Secure:   a.secure,
		SameSite: http.SameSiteLaxMode,
	})
}

func (a *Authenticator) clearLoginCookie(c echo.Context) {
	c.SetCookie(&http.Cookie{
		Name:     LoginCookie,
		Value:    "",
		Path:     a.loginCookiePath(),
		MaxAge:   -1,
		HttpOnly: true,
		Secure:   a.secure,
		SameSite: http.SameSiteLaxMode,
	})
}
