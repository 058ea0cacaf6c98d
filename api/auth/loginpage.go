package auth

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"

	"github.com/labstack/echo/v4"
)

// loginScript posts the form as JSON so that a wrong password shows a
// message instead of a problem document; without JavaScript the form posts
// itself and the server redirects.
const loginScript = `
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target, msg = document.getElementById("msg");
  msg.textContent = "";
  try {
    const res = await fetch(location.pathname, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json"},
      body: JSON.stringify({username: f.username.value, password: f.password.value}),
    });
    if (res.ok) { location.assign(f.dataset.next); return; }
    const p = await res.json().catch(() => ({}));
    msg.textContent = p.detail || ("Sign-in failed (" + res.status + ").");
  } catch (e) {
    msg.textContent = "The server cannot be reached.";
  }
});
`

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · CML Cloud Manager</title>
<style>
body{font-family:system-ui,sans-serif;background:#f4f5f7;display:flex;justify-content:center;align-items:center;min-height:100vh;margin:0}
form{background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.15);width:18rem}
h1{font-size:1.2rem;margin:0 0 1rem}
label{display:block;margin:.6rem 0 .2rem;font-size:.9rem}
input{width:100%;box-sizing:border-box;padding:.45rem;border:1px solid #bbb;border-radius:4px}
button{margin-top:1rem;width:100%;padding:.55rem;border:0;border-radius:4px;background:#1f6feb;color:#fff;font-size:1rem;cursor:pointer}
#msg{color:#b42318;min-height:1.2em;margin-top:.8rem;font-size:.9rem}
</style>
</head>
<body>
<form id="login" method="post" data-next="{{.Next}}">
<h1>CML Cloud Manager</h1>
<input type="hidden" name="return_to" value="{{.ReturnTo}}">
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
<div id="msg" role="alert"></div>
</form>
<script>{{.Script}}</script>
</body>
</html>
`))

// loginPageCSP allows nothing but the page's own inline style and script
// (by hash), posting to itself and fetching from itself.
var loginPageCSP = func() string {
	sum := sha256.Sum256([]byte(loginScript))
	return fmt.Sprintf("default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-%s'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
		base64.StdEncoding.EncodeToString(sum[:]))
}()

// loginForm serves the local sign-in page.
func (a *Authenticator) loginForm(c echo.Context, returnTo string) error {
	var buf bytes.Buffer
	err := loginPage.Execute(&buf, struct {
		Next, ReturnTo string
		Script         template.JS
	}{Next: a.publicBase + returnTo, ReturnTo: returnTo, Script: template.JS(loginScript)})
	if err != nil {
		return fmt.Errorf("render login page: %w", err)
	}
	h := c.Response().Header()
	h.Set("Content-Security-Policy", loginPageCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set(echo.HeaderCacheControl, "no-store")
	return c.HTMLBlob(http.StatusOK, buf.Bytes())
}
