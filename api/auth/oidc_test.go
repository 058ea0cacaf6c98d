package auth

import (
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sessions"
)

// oidcHarness is an Authenticator in OIDC mode against a test provider.
type oidcHarness struct {
	*harness
	op *testProvider
}

func newOIDCHarness(t testing.TB, hc harnessConfig) *oidcHarness {
	t.Helper()
	var p *testProvider
	inner := hc.mutate
	hc.mutate = func(o *Options) {
		p = newTestProvider(t, o.PublicURL+"/api/auth/callback", o.PublicURL+"/")
		o.OIDC = OIDCOptions{
			IssuerURL:    p.issuer,
			ClientID:     opClientID,
			ClientSecret: opClientSecret,
			Scopes:       []string{"openid", "profile", "email", "offline_access"},
			Sealer:       newSealer(t),
		}
		if inner != nil {
			inner(o)
		}
	}
	h := newHarness(t, ModeOIDC, hc)
	return &oidcHarness{harness: h, op: p}
}

// follow requests target and the redirects after it until stop says a
// location is where to halt (it is not requested) or a response is not a
// redirect. It returns the last response and the location it stopped at.
func (h *harness) follow(b *http.Client, target string, stop func(*url.URL) bool) (response, *url.URL) {
	h.t.Helper()
	for range 10 {
		r := h.do(b, http.MethodGet, target, nil, nil)
		if r.StatusCode < 300 || r.StatusCode > 399 {
			return r, nil
		}
		next, err := r.Request.URL.Parse(r.Header.Get("Location"))
		require.NoError(h.t, err)
		if stop(next) {
			return r, next
		}
		target = next.String()
	}
	h.t.Fatal("too many redirects")
	return response{}, nil
}

// toCallback runs a browser from GET /api/auth/login through the provider
// and stops before our callback; it returns the callback URL. tamper may
// rewrite the provider's authorize URL on the way.
func (o *oidcHarness) toCallback(b *http.Client, user, returnTo string, tamper func(url.Values)) *url.URL {
	o.t.Helper()
	o.op.st.loginAs(user)
	r := o.do(b, http.MethodGet, "/api/auth/login?return_to="+url.QueryEscape(returnTo), nil, nil)
	require.Equal(o.t, http.StatusFound, r.StatusCode, "%s", r.body)
	authorize, err := url.Parse(r.Header.Get("Location"))
	require.NoError(o.t, err)
	require.True(o.t, strings.HasPrefix(authorize.String(), o.op.issuer), "redirected to the provider: %s", authorize)
	q := authorize.Query()
	require.Equal(o.t, "S256", q.Get("code_challenge_method"))
	require.NotEmpty(o.t, q.Get("code_challenge"))
	require.NotEmpty(o.t, q.Get("state"))
	require.NotEmpty(o.t, q.Get("nonce"))
	require.Equal(o.t, o.url+"/api/auth/callback", q.Get("redirect_uri"))
	if tamper != nil {
		tamper(q)
		authorize.RawQuery = q.Encode()
	}
	_, cb := o.follow(b, authorize.String(), func(u *url.URL) bool { return strings.HasPrefix(u.String(), o.url+"/api/auth/callback") })
	require.NotNil(o.t, cb, "the provider sent the browser back")
	return cb
}

// signIn completes a sign-in and returns where the browser is sent.
func (o *oidcHarness) signIn(b *http.Client, user, returnTo string) string {
	o.t.Helper()
	cb := o.toCallback(b, user, returnTo, nil)
	r := o.do(b, http.MethodGet, cb.String(), nil, nil)
	require.Equal(o.t, http.StatusSeeOther, r.StatusCode, "%s", r.body)
	return r.Header.Get("Location")
}

func (o *oidcHarness) sessionInfo(b *http.Client) SessionInfo {
	o.t.Helper()
	r := o.do(b, http.MethodGet, "/api/auth/session", nil, nil)
	require.Equal(o.t, http.StatusOK, r.StatusCode)
	var info SessionInfo
	r.json(o.t, &info)
	return info
}

func TestOIDCEndToEnd(t *testing.T) {
	t.Parallel()
	o := newOIDCHarness(t, harnessConfig{})
	b := o.client

	require.Equal(t, o.url+"/workers?region=us-east-1", o.signIn(b, "admin", "/workers?region=us-east-1"))

	// The browser holds the session cookie and nothing else of ours: no
	// token, no code.
	u, _ := url.Parse(o.url)
	for _, ck := range b.Jar.Cookies(u) {
		require.Contains(t, []string{SessionCookie}, ck.Name)
		for _, secret := range o.op.issuedSecrets() {
			require.NotEqual(t, secret, ck.Value)
		}
	}

	info := o.sessionInfo(b)
	require.True(t, info.Authenticated)
	require.Equal(t, "u-admin", info.Subject)
	require.Equal(t, "admin", info.Username)
	require.Equal(t, []string{"admin", "manager", "user"}, info.Roles, "roles from the access token; provider-internal roles dropped")
	for _, secret := range o.op.issuedSecrets() {
		require.NotContains(t, o.do(b, http.MethodGet, "/api/auth/session", nil, nil).body, secret)
	}

	r := o.do(b, http.MethodGet, "/api/auth/me", nil, nil)
	var me MeResponse
	r.json(t, &me)
	require.Equal(t, MeResponse{Subject: "u-admin", Username: "admin", Name: "Ada Admin", Email: "admin@example.com",
		Roles: []string{"admin", "manager", "user"}, Department: "platform", Auth: "session"}, me)

	status, p := o.probe(b, nil)
	require.Equal(t, http.StatusOK, status)
	require.True(t, p.Has(rbac.RoleAdmin))

	// Tokens are sealed at rest.
	st, err := o.store.Get(t.Context(), o.sessionCookie(b))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(st.Tokens, "v1:"))
	for _, secret := range o.op.issuedSecrets() {
		require.NotContains(t, st.Tokens, secret)
	}

	// Bearer access with the provider's tokens: a client-credentials token
	// of the integrator client.
	api := newBrowser(t)
	tok := o.op.clientCredentialsToken(t)
	status, p = o.probe(api, bearer(tok))
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, []rbac.Role{rbac.RoleIntegrator}, p.Roles)
	r = o.do(api, http.MethodGet, "/api/auth/me", nil, bearer(tok))
	r.json(t, &me)
	require.Equal(t, "bearer", me.Auth)
	require.Equal(t, "service-account-"+opIntegratorID, me.Username)

	// Silent refresh: near the access token's expiry the next request
	// refreshes, and picks up role changes made at the provider.
	o.op.st.setRoles("admin", "auditor")
	o.clock.Advance(4*time.Minute + 30*time.Second)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			r := doRequest(t, b, http.MethodGet, o.url+"/api/probe", nil, nil)
			if r.StatusCode != http.StatusOK {
				t.Errorf("probe during refresh: %d %s", r.StatusCode, r.body)
			}
		})
	}
	wg.Wait()
	grants, _, _ := o.op.st.counts()
	require.Equal(t, 1, grants, "concurrent requests share one refresh")
	status, p = o.probe(b, nil)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, []rbac.Role{rbac.RoleAuditor}, p.Roles)
	refreshed, err := o.store.Get(t.Context(), o.sessionCookie(b))
	require.NoError(t, err)
	require.Greater(t, refreshed.Version, st.Version)
	require.NotEqual(t, st.Tokens, refreshed.Tokens)
	require.WithinDuration(t, o.clock.Now().Add(5*time.Minute), refreshed.TokensExpireAt, 5*time.Second)
	o.clock.Advance(time.Minute)
	o.probe(b, nil)
	grants, _, _ = o.op.st.counts()
	require.Equal(t, 1, grants, "fresh tokens are not refreshed again")

	// Logout: the session is revoked, the refresh token too, and the
	// browser is given the provider's end-session URL.
	info = o.sessionInfo(b)
	r = o.do(b, http.MethodPost, "/api/auth/logout", nil, csrfHeader(info.CSRFToken))
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.body)
	var out struct {
		LogoutURL string `json:"logout_url"`
	}
	r.json(t, &out)
	lu, err := url.Parse(out.LogoutURL)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(out.LogoutURL, o.op.issuer+"/end_session"), out.LogoutURL)
	require.Equal(t, o.url+"/", lu.Query().Get("post_logout_redirect_uri"))
	require.Equal(t, opClientID, lu.Query().Get("client_id"))
	require.NotEmpty(t, lu.Query().Get("id_token_hint"))
	_, revocations, live := o.op.st.counts()
	require.Equal(t, 1, revocations)
	require.Zero(t, live, "no refresh token is left at the provider")
	status, _ = o.probe(b, nil)
	require.Equal(t, http.StatusUnauthorized, status)
	require.Empty(t, o.sessionCookie(b))

	// The provider accepts the end-session request and sends the browser
	// back to us.
	_, back := o.follow(b, out.LogoutURL, func(u *url.URL) bool { return strings.HasPrefix(u.String(), o.url) })
	require.NotNil(t, back)
	require.Equal(t, o.url+"/", back.String())
}

func TestOIDCCallbackRejections(t *testing.T) {
	t.Parallel()
	o := newOIDCHarness(t, harnessConfig{})
	authError := func(r response) string {
		t.Helper()
		require.Equal(t, http.StatusSeeOther, r.StatusCode, "%s", r.body)
		loc, err := url.Parse(r.Header.Get("Location"))
		require.NoError(t, err)
		require.Equal(t, "/", loc.Path)
		return loc.Query().Get("auth_error")
	}
	noSession := func(b *http.Client) {
		t.Helper()
		require.Empty(t, o.sessionCookie(b))
		require.False(t, o.sessionInfo(b).Authenticated)
	}

	t.Run("StateTampered", func(t *testing.T) {
		b := newBrowser(t)
		cb := o.toCallback(b, "user", "/", nil)
		q := cb.Query()
		q.Set("state", randomToken())
		cb.RawQuery = q.Encode()
		require.Equal(t, AuthErrorStateMismatch, authError(o.do(b, http.MethodGet, cb.String(), nil, nil)))
		noSession(b)
	})
	t.Run("OtherBrowser", func(t *testing.T) {
		// An attacker's callback URL opened in a victim's browser (login
		// CSRF): the victim has no login cookie for it.
		cb := o.toCallback(newBrowser(t), "user", "/", nil)
		victim := newBrowser(t)
		require.Equal(t, AuthErrorStateMismatch, authError(o.do(victim, http.MethodGet, cb.String(), nil, nil)))
		noSession(victim)
	})
	t.Run("SwappedLogins", func(t *testing.T) {
		// The victim started a login of their own: the attacker's state is
		// still not theirs.
		attackerCB := o.toCallback(newBrowser(t), "user", "/", nil)
		victim := newBrowser(t)
		o.toCallback(victim, "manager", "/", nil)
		require.Equal(t, AuthErrorStateMismatch, authError(o.do(victim, http.MethodGet, attackerCB.String(), nil, nil)))
		noSession(victim)
	})
	t.Run("Replay", func(t *testing.T) {
		b := newBrowser(t)
		cb := o.toCallback(b, "user", "/", nil)
		// The callback clears the browser's login cookie; a replay re-sends it.
		loginCookie := ""
		u, _ := url.Parse(o.url + "/api/auth/callback")
		for _, ck := range b.Jar.Cookies(u) {
			if ck.Name == LoginCookie {
				loginCookie = ck.Value
			}
		}
		require.NotEmpty(t, loginCookie)
		r := o.do(b, http.MethodGet, cb.String(), nil, nil)
		require.Equal(t, http.StatusSeeOther, r.StatusCode)
		require.NotContains(t, r.Header.Get("Location"), "auth_error")
		r = o.do(newBrowser(t), http.MethodGet, cb.String(), nil, http.Header{"Cookie": {LoginCookie + "=" + loginCookie}})
		require.Equal(t, AuthErrorStateMismatch, authError(r), "a login state is used once")
	})
	t.Run("Expired", func(t *testing.T) {
		clock := newTestClock()
		o := newOIDCHarness(t, harnessConfig{clock: clock})
		b := newBrowser(t)
		cb := o.toCallback(b, "user", "/", nil)
		clock.Advance(loginStateTTL + time.Second)
		require.Equal(t, AuthErrorStateMismatch, authError(o.do(b, http.MethodGet, cb.String(), nil, nil)))
	})
	t.Run("NonceTampered", func(t *testing.T) {
		b := newBrowser(t)
		cb := o.toCallback(b, "user", "/", func(q url.Values) { q.Set("nonce", randomToken()) })
		require.Equal(t, AuthErrorNonceMismatch, authError(o.do(b, http.MethodGet, cb.String(), nil, nil)))
		noSession(b)
	})
	t.Run("PKCEChallengeTampered", func(t *testing.T) {
		b := newBrowser(t)
		cb := o.toCallback(b, "user", "/", func(q url.Values) { q.Set("code_challenge", strings.Repeat("A", 43)) })
		require.Equal(t, AuthErrorExchangeFailed, authError(o.do(b, http.MethodGet, cb.String(), nil, nil)))
		noSession(b)
	})
	t.Run("CodeTampered", func(t *testing.T) {
		b := newBrowser(t)
		cb := o.toCallback(b, "user", "/", nil)
		q := cb.Query()
		q.Set("code", "forged-code")
		cb.RawQuery = q.Encode()
		require.Equal(t, AuthErrorExchangeFailed, authError(o.do(b, http.MethodGet, cb.String(), nil, nil)))
	})
	t.Run("ProviderError", func(t *testing.T) {
		b := newBrowser(t)
		cb := o.toCallback(b, "user", "/", nil)
		q := url.Values{"error": {"access_denied"}, "state": {cb.Query().Get("state")}}
		require.Equal(t, AuthErrorIdP, authError(o.do(b, http.MethodGet, "/api/auth/callback?"+q.Encode(), nil, nil)))
	})
	t.Run("OpenRedirect", func(t *testing.T) {
		for _, rt := range []string{"//evil.example", "https://evil.example", "/\\evil.example"} {
			require.Equal(t, o.url+"/", o.signIn(newBrowser(t), "user", rt), rt)
		}
	})
}

func TestOIDCRefreshRefusedEndsSession(t *testing.T) {
	t.Parallel()
	o := newOIDCHarness(t, harnessConfig{})
	o.signIn(o.client, "manager", "/")
	o.op.st.revokeAll()
	o.clock.Advance(4*time.Minute + 30*time.Second)
	r := o.do(o.client, http.MethodGet, "/api/probe", nil, nil)
	require.Equal(t, http.StatusUnauthorized, r.StatusCode)
	require.Equal(t, CodeSessionExpired, r.problemCode(t))
}

func TestOIDCRolesNeverIncludeSystem(t *testing.T) {
	t.Parallel()
	o := newOIDCHarness(t, harnessConfig{})
	o.signIn(o.client, "sneaky", "/")
	status, p := o.probe(o.client, nil)
	require.Equal(t, http.StatusOK, status, "signed in, without a role")
	require.Empty(t, p.Roles)
	require.False(t, p.IsSystem())
}

func TestOIDCModeRefusesLocalRoutes(t *testing.T) {
	t.Parallel()
	o := newOIDCHarness(t, harnessConfig{})
	for _, path := range []string{"/api/auth/login", "/api/auth/token"} {
		r := o.do(o.client, http.MethodPost, path, map[string]string{"username": "admin", "password": "test"}, nil)
		require.Equal(t, http.StatusNotFound, r.StatusCode, path)
		require.Equal(t, CodeNotAvailable, r.problemCode(t), path)
	}
	r := o.do(o.client, http.MethodGet, "/api/auth/jwks.json", nil, nil)
	require.Equal(t, http.StatusNotFound, r.StatusCode)
}

func TestOIDCProviderUnavailable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	down := "http://" + l.Addr().String()
	require.NoError(t, l.Close())
	h := newHarness(t, ModeOIDC, harnessConfig{mutate: func(o *Options) {
		o.OIDC = OIDCOptions{IssuerURL: down, ClientID: "c", ClientSecret: "s", Sealer: newSealer(t)}
	}})
	r := h.do(h.client, http.MethodGet, "/api/auth/login", nil, nil)
	require.Equal(t, http.StatusSeeOther, r.StatusCode)
	require.Equal(t, h.url+"/?auth_error="+AuthErrorUnavailable, r.Header.Get("Location"))
	r = h.do(h.client, http.MethodGet, "/api/probe", nil, bearer("a.b.c"))
	require.Equal(t, http.StatusServiceUnavailable, r.StatusCode)
	require.Equal(t, "unavailable", r.problemCode(t))
}

func TestOIDCWithRedisSessions(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	o := newOIDCHarness(t, harnessConfig{clock: clock, backend: redisBackend(t, clock)})
	require.Equal(t, o.url+"/", o.signIn(o.client, "user", "/"))
	status, p := o.probe(o.client, nil)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, []rbac.Role{rbac.RoleUser}, p.Roles)
	_, ok := o.store.(*sessions.Redis)
	require.True(t, ok)
}

func TestOIDCWithoutRefreshToken(t *testing.T) {
	t.Parallel()
	// Without offline_access this provider issues no refresh token: the
	// session then lives by its own idle and maximum expiry.
	o := newOIDCHarness(t, harnessConfig{mutate: func(opts *Options) { opts.OIDC.Scopes = []string{"openid", "profile", "email"} }})
	o.signIn(o.client, "user", "/")
	before, err := o.store.Get(t.Context(), o.sessionCookie(o.client))
	require.NoError(t, err)
	require.False(t, before.TokensExpireAt.IsZero())
	o.clock.Advance(6 * time.Minute)
	status, _ := o.probe(o.client, nil)
	require.Equal(t, http.StatusOK, status)
	after, err := o.store.Get(t.Context(), o.sessionCookie(o.client))
	require.NoError(t, err)
	require.True(t, after.TokensExpireAt.IsZero(), "nothing to refresh with: no more attempts")
	grants, _, _ := o.op.st.counts()
	require.Zero(t, grants)
}

// TestRefreshWithASessionReadBeforeTheLastRefresh: a request that read the
// session just before another one refreshed it must not refresh again with
// the spent refresh token (the provider rotates them and would refuse,
// which ends the session); it takes the stored, refreshed session.
func TestRefreshWithASessionReadBeforeTheLastRefresh(t *testing.T) {
	t.Parallel()
	o := newOIDCHarness(t, harnessConfig{})
	b := o.client
	o.signIn(b, "admin", "/")
	id := o.sessionCookie(b)

	o.clock.Advance(4*time.Minute + 30*time.Second) // within the refresh leeway
	stale, err := o.store.Get(t.Context(), id)
	require.NoError(t, err)
	status, _ := o.probe(b, nil) // refreshes and rotates the refresh token
	require.Equal(t, http.StatusOK, status)

	s, err := o.auth.refreshIfDue(t.Context(), id, stale)
	require.NoError(t, err, "a stale read ended the session")
	require.Greater(t, s.Version, stale.Version)
	grants, _, _ := o.op.st.counts()
	require.Equal(t, 1, grants, "one refresh, not two")
	status, _ = o.probe(b, nil)
	require.Equal(t, http.StatusOK, status)
}
