package auth

import (
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

// requireNoSecrets fails when any secret appears in the logs.
func requireNoSecrets(t *testing.T, logs string, secrets map[string]string) {
	t.Helper()
	require.NotEmpty(t, logs, "the flows must have logged something")
	for what, s := range secrets {
		require.NotEmpty(t, s, "secret %s was not captured", what)
		require.NotContains(t, logs, s, "the logs contain the %s", what)
	}
}

func TestLocalFlowsLogNoSecrets(t *testing.T) {
	t.Parallel()
	const (
		password      = "correct-horse-battery-9f3a"
		wrongPassword = "wrong-password-77c1"
		typedUsername = "hunter2-typed-into-username"
	)
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "accounts.json")
	writeAccounts(t, path, `{"accounts":[{"username":"alice","password_hash":"`+string(hash)+`","roles":["admin"]}]}`)
	logs := &syncBuffer{}
	h := newHarness(t, ModeLocal, harnessConfig{logs: logs, mutate: func(o *Options) { o.Local.AccountsFile = path }})
	secrets := map[string]string{"password": password, "wrong password": wrongPassword, "password typed as user name": typedUsername}

	// Failed and successful sign-ins, JSON and form.
	for _, creds := range []map[string]string{{"username": "alice", "password": wrongPassword}, {"username": typedUsername, "password": password}} {
		r := h.do(newBrowser(t), http.MethodPost, "/api/auth/login", creds, nil)
		require.Equal(t, http.StatusUnauthorized, r.StatusCode)
	}
	info := h.login(h.client, "alice", password)
	secrets["session cookie"] = h.sessionCookie(h.client)
	secrets["csrf token"] = info.CSRFToken
	form := newBrowser(t)
	r := h.do(form, http.MethodPost, "/api/auth/login", url.Values{"username": {"alice"}, "password": {password}}.Encode(),
		http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
	require.Equal(t, http.StatusSeeOther, r.StatusCode)
	secrets["form session cookie"] = h.sessionCookie(form)

	// Token issue and use, valid and tampered.
	r = h.do(newBrowser(t), http.MethodPost, "/api/auth/token", map[string]string{"username": "alice", "password": password}, nil)
	var tok TokenResponse
	r.json(t, &tok)
	secrets["access token"] = tok.AccessToken
	status, _ := h.probe(newBrowser(t), bearer(tok.AccessToken))
	require.Equal(t, http.StatusOK, status)
	forged := tok.AccessToken[:len(tok.AccessToken)-6] + "AAAAAA"
	secrets["forged token"] = forged
	status, _ = h.probe(newBrowser(t), bearer(forged))
	require.Equal(t, http.StatusUnauthorized, status)

	// Session use, a CSRF refusal, expiry and logout.
	h.probe(h.client, nil)
	r = h.do(h.client, http.MethodPost, "/api/probe", nil, nil)
	require.Equal(t, http.StatusForbidden, r.StatusCode)
	r = h.do(h.client, http.MethodPost, "/api/auth/logout", nil, csrfHeader(info.CSRFToken))
	require.Equal(t, http.StatusOK, r.StatusCode)
	h.clock.Advance(time.Hour)
	h.probe(form, nil)

	requireNoSecrets(t, logs.String(), secrets)
	require.Contains(t, logs.String(), "sign-in failed", "failures are logged, without what was typed")
}

func TestOIDCFlowsLogNoSecrets(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	o := newOIDCHarness(t, harnessConfig{logs: logs})
	b := o.client
	secrets := map[string]string{}

	// A good sign-in, then a replayed and a tampered callback.
	cb := o.toCallback(b, "admin", "/", nil)
	cbURL, _ := url.Parse(o.url + "/api/auth/callback")
	for _, ck := range b.Jar.Cookies(cbURL) {
		if ck.Name == LoginCookie {
			secrets["login cookie"] = ck.Value
		}
	}
	secrets["state"] = cb.Query().Get("state")
	r := o.do(b, http.MethodGet, cb.String(), nil, nil)
	require.Equal(t, http.StatusSeeOther, r.StatusCode)
	o.do(b, http.MethodGet, cb.String(), nil, nil)
	other := newBrowser(t)
	bad := o.toCallback(other, "user", "/", func(q url.Values) { q.Set("nonce", "n") })
	o.do(other, http.MethodGet, bad.String(), nil, nil)

	secrets["session cookie"] = o.sessionCookie(b)
	info := o.sessionInfo(b)
	secrets["csrf token"] = info.CSRFToken

	// Refresh, bearer use, logout.
	o.clock.Advance(4*time.Minute + 30*time.Second)
	status, _ := o.probe(b, nil)
	require.Equal(t, http.StatusOK, status)
	tok := o.op.clientCredentialsToken(t)
	status, _ = o.probe(newBrowser(t), bearer(tok))
	require.Equal(t, http.StatusOK, status)
	status, _ = o.probe(newBrowser(t), bearer(tok+"x"))
	require.Equal(t, http.StatusUnauthorized, status)
	r = o.do(b, http.MethodPost, "/api/auth/logout", nil, csrfHeader(info.CSRFToken))
	require.Equal(t, http.StatusOK, r.StatusCode)

	for i, s := range o.op.issuedSecrets() {
		secrets["provider secret "+string(rune('a'+i%26))+strings.Repeat("'", i/26)] = s
	}
	require.GreaterOrEqual(t, len(o.op.issuedSecrets()), 8, "client secrets, codes, access, ID and refresh tokens")
	requireNoSecrets(t, logs.String(), secrets)
	require.Contains(t, logs.String(), AuthErrorNonceMismatch)
	require.Contains(t, logs.String(), AuthErrorStateMismatch)
}
