package auth

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/labstack/echo/v4"
	"golang.org/x/oauth2"

	"github.com/cmlcloud/cml-cloud-manager/api"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sessions"
)

// errProviderUnavailable means the OIDC provider could not be reached or
// discovered.
var errProviderUnavailable = errors.New("identity provider unavailable")

// rediscoverAfter spaces out discovery attempts while the provider is down.
const rediscoverAfter = 5 * time.Second

// providerTimeout bounds each exchange with the provider.
const providerTimeout = 10 * time.Second

// DefaultSigningAlgorithms are the JWS algorithms accepted from the provider.
var DefaultSigningAlgorithms = []string{oidc.RS256, oidc.ES256, oidc.EdDSA}

// allowedAlgorithms are the asymmetric algorithms SigningAlgorithms may list
// ("none" and the HMAC ones never).
var allowedAlgorithms = []string{
	oidc.RS256, oidc.RS384, oidc.RS512, oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.PS256, oidc.PS384, oidc.PS512, oidc.EdDSA,
}

// oidcAuth is OIDC mode.
type oidcAuth struct {
	opts       OIDCOptions
	postLogout string
	now        func() time.Time
	logger     *slog.Logger

	mu       sync.Mutex
	disc     *discovery
	failedAt time.Time
}

// discovery is what the provider's metadata gives us.
type discovery struct {
	endpoint oauth2.Endpoint
	// idVerifier checks ID tokens (audience: our client id);
	// bearerVerifier checks access tokens (audience: opts.Audience). Both
	// share the provider's remote key set, which refetches the JWKS when it
	// meets an unknown key id (key rotation).
	idVerifier     *oidc.IDTokenVerifier
	bearerVerifier *oidc.IDTokenVerifier
	endSession     string
	revocation     string
}

// pendingLogin is the server side of a login between redirect and
// callback, kept sealed in the store under the login cookie's value.
type pendingLogin struct {
	State    string `json:"state"`
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"`
	ReturnTo string `json:"return_to"`
}

// tokenBundle is what a session keeps (sealed) of the provider's tokens.
type tokenBundle struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token,omitempty"`
	IDToken      string `json:"id_token,omitempty"`
}

func newOIDCAuth(opts OIDCOptions, publicBase string, now func() time.Time, logger *slog.Logger) (*oidcAuth, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if u, err := url.Parse(opts.IssuerURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("the OIDC issuer URL %q must be an absolute http(s) URL", opts.IssuerURL)
	}
	if opts.ClientID == "" {
		bad("the OIDC client id is required")
	}
	if opts.ClientSecret == "" {
		bad("the OIDC client secret is required (the service is a confidential client)")
	}
	if opts.Sealer == nil {
		bad("OIDC mode needs a sealer to encrypt the provider's tokens at rest")
	}
	if opts.Audience == "" {
		opts.Audience = Audience
	}
	if len(opts.Scopes) == 0 {
		opts.Scopes = []string{oidc.ScopeOpenID, "profile", "email"}
	}
	if !slices.Contains(opts.Scopes, oidc.ScopeOpenID) {
		opts.Scopes = append([]string{oidc.ScopeOpenID}, opts.Scopes...)
	}
	if len(opts.RolesClaims) == 0 {
		opts.RolesClaims = DefaultRolesClaims
	}
	if len(opts.SigningAlgorithms) == 0 {
		opts.SigningAlgorithms = DefaultSigningAlgorithms
	}
	for _, alg := range opts.SigningAlgorithms {
		if !slices.Contains(allowedAlgorithms, alg) {
			bad("signing algorithm %q is not allowed (want some of %s)", alg, strings.Join(allowedAlgorithms, ", "))
		}
	}
	opts.RefreshLeeway = orDefault(opts.RefreshLeeway, DefaultRefreshLeeway)
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: providerTimeout}
	}
	postLogout := opts.PostLogoutRedirectURL
	if postLogout == "" {
		postLogout = publicBase + "/"
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &oidcAuth{opts: opts, postLogout: postLogout, now: now, logger: logger}, nil
}

// clientContext carries our HTTP client to go-oidc and x/oauth2.
func (o *oidcAuth) clientContext(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, o.opts.HTTPClient)
}

// discover fetches the provider's metadata once; while the provider is
// down it retries at most every rediscoverAfter.
func (o *oidcAuth) discover(ctx context.Context) (*discovery, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.disc != nil {
		return o.disc, nil
	}
	if !o.failedAt.IsZero() && time.Since(o.failedAt) < rediscoverAfter {
		return nil, errProviderUnavailable
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), providerTimeout)
	defer cancel()
	p, err := oidc.NewProvider(o.clientContext(ctx), o.opts.IssuerURL)
	if err != nil {
		o.failedAt = time.Now()
		return nil, fmt.Errorf("%w: discovery: %v", errProviderUnavailable, err)
	}
	var meta struct {
		EndSession string `json:"end_session_endpoint"`
		Revocation string `json:"revocation_endpoint"`
	}
	if err := p.Claims(&meta); err != nil {
		o.failedAt = time.Now()
		return nil, fmt.Errorf("%w: discovery metadata: %v", errProviderUnavailable, err)
	}
	config := func(audience string) *oidc.Config {
		return &oidc.Config{ClientID: audience, SupportedSigningAlgs: o.opts.SigningAlgorithms, Now: o.now}
	}
	o.disc = &discovery{
		endpoint:       p.Endpoint(),
		idVerifier:     p.Verifier(config(o.opts.ClientID)),
		bearerVerifier: p.Verifier(config(o.opts.Audience)),
		endSession:     meta.EndSession,
		revocation:     meta.Revocation,
	}
	o.logger.Info("discovered the OIDC provider", slog.String("issuer", o.opts.IssuerURL))
	return o.disc, nil
}

func (o *oidcAuth) oauth2Config(d *discovery, redirectURL string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     o.opts.ClientID,
		ClientSecret: o.opts.ClientSecret,
		Endpoint:     d.endpoint,
		RedirectURL:  redirectURL,
		Scopes:       o.opts.Scopes,
	}
}

// verifyBearer checks an access token: signature by the provider's keys
// with an allowed algorithm, issuer, audience, expiry and not-before. ID and
// refresh tokens (Keycloak marks them with "typ") are refused.
func (o *oidcAuth) verifyBearer(ctx context.Context, token string) (identity, error) {
	d, err := o.discover(ctx)
	if err != nil {
		return identity{}, err
	}
	t, err := d.bearerVerifier.Verify(ctx, token)
	if err != nil {
		return identity{}, err
	}
	var claims map[string]any
	if err := t.Claims(&claims); err != nil {
		return identity{}, fmt.Errorf("decode claims: %w", err)
	}
	if typ, _ := claims["typ"].(string); typ != "" && !strings.EqualFold(typ, "Bearer") && !strings.EqualFold(typ, "at+jwt") {
		return identity{}, fmt.Errorf("a %q token is not an access token", truncate(typ, 32))
	}
	id := identityFromClaims(claims, o.opts.RolesClaims)
	if id.Subject == "" {
		return identity{}, errors.New("the token has no subject")
	}
	return id, nil
}

// identityFromTokens takes the identity from a verified ID token and, when
// the access token is a JWT for our audience (as Keycloak's are), the roles
// and department from it too: providers often put roles only there.
func (o *oidcAuth) identityFromTokens(ctx context.Context, d *discovery, idt *oidc.IDToken, accessToken string) (identity, error) {
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return identity{}, fmt.Errorf("decode ID token claims: %w", err)
	}
	id := identityFromClaims(claims, o.opts.RolesClaims)
	at, err := d.bearerVerifier.Verify(ctx, accessToken)
	if err != nil || at.Subject != idt.Subject {
		o.logger.DebugContext(ctx, "the access token is not a JWT for this audience; roles come from the ID token")
		return id, nil
	}
	var atClaims map[string]any
	if err := at.Claims(&atClaims); err != nil {
		return identity{}, fmt.Errorf("decode access token claims: %w", err)
	}
	if roles, ok := rolesFromClaims(atClaims, o.opts.RolesClaims); ok {
		id.Roles = roles
	}
	if dep, _ := atClaims["department"].(string); id.Department == "" {
		id.Department = dep
	}
	return id, nil
}

// redirectURL is the callback URL registered with the provider.
func (a *Authenticator) redirectURL() string {
	return a.publicBase + a.callbackPath
}

// startOIDCLogin redirects the browser to the provider. state, nonce and the
// PKCE verifier stay on the server, under a random key that only this
// browser's login cookie holds.
func (a *Authenticator) startOIDCLogin(c echo.Context, returnTo string) error {
	ctx := c.Request().Context()
	d, err := a.oidc.discover(ctx)
	if err != nil {
		return a.authErrorRedirect(c, AuthErrorUnavailable, err)
	}
	rec := pendingLogin{State: randomToken(), Nonce: randomToken(), Verifier: oauth2.GenerateVerifier(), ReturnTo: returnTo}
	plain, err := json.Marshal(rec)
	if err != nil {
		return a.authErrorRedirect(c, AuthErrorUnavailable, err)
	}
	sealed, err := a.oidc.opts.Sealer.Seal(string(plain))
	if err != nil {
		return a.authErrorRedirect(c, AuthErrorUnavailable, fmt.Errorf("seal login state: %w", err))
	}
	binding := randomToken()
	if err := a.store.PutLoginState(ctx, binding, []byte(sealed), loginStateTTL); err != nil {
		return a.authErrorRedirect(c, AuthErrorUnavailable, err)
	}
	a.setLoginCookie(c, binding)
	target := a.oidc.oauth2Config(d, a.redirectURL()).AuthCodeURL(rec.State,
		oidc.Nonce(rec.Nonce), oauth2.S256ChallengeOption(rec.Verifier))
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.Redirect(http.StatusFound, target)
}

// authErrorRedirect ends a failed browser sign-in: the reason is logged
// (never with secrets), the browser goes to /?auth_error=<code>.
func (a *Authenticator) authErrorRedirect(c echo.Context, code string, err error) error {
	ctx := c.Request().Context()
	a.logger.WarnContext(ctx, "oidc sign-in failed", slog.String("auth_error", code), slog.Any("error", err),
		slog.String("request_id", api.RequestID(ctx)))
	a.clearLoginCookie(c)
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.Redirect(http.StatusSeeOther, a.publicBase+"/?auth_error="+code)
}

// oidcCallback completes a sign-in: it checks the state against the
// server-side record bound to this browser (single use), exchanges the code
// with the PKCE verifier, verifies the ID token and its nonce, and opens the
// session.
func (a *Authenticator) oidcCallback(c echo.Context) error {
	ctx := c.Request().Context()
	q := c.QueryParams()
	a.clearLoginCookie(c)
	if e := q.Get("error"); e != "" {
		return a.authErrorRedirect(c, AuthErrorIdP, fmt.Errorf("the provider answered %q", truncate(e, 64)))
	}
	ck, err := c.Cookie(LoginCookie)
	if err != nil || ck.Value == "" {
		return a.authErrorRedirect(c, AuthErrorStateMismatch, errors.New("no login cookie"))
	}
	raw, err := a.store.TakeLoginState(ctx, ck.Value)
	if errors.Is(err, sessions.ErrNotFound) {
		return a.authErrorRedirect(c, AuthErrorStateMismatch, errors.New("no pending login for this browser (unknown, used or expired)"))
	}
	if err != nil {
		return a.authErrorRedirect(c, AuthErrorUnavailable, err)
	}
	var rec pendingLogin
	plain, err := a.oidc.opts.Sealer.Open(string(raw))
	if err == nil {
		err = json.Unmarshal([]byte(plain), &rec)
	}
	if err != nil {
		return a.authErrorRedirect(c, AuthErrorStateMismatch, fmt.Errorf("unreadable login state: %w", err))
	}
	if rec.State == "" || subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(rec.State)) != 1 {
		return a.authErrorRedirect(c, AuthErrorStateMismatch, errors.New("the state does not match this browser's login"))
	}
	code := q.Get("code")
	if code == "" {
		return a.authErrorRedirect(c, AuthErrorIdP, errors.New("the provider sent no code"))
	}
	d, err := a.oidc.discover(ctx)
	if err != nil {
		return a.authErrorRedirect(c, AuthErrorUnavailable, err)
	}
	xctx, cancel := context.WithTimeout(a.oidc.clientContext(ctx), providerTimeout)
	defer cancel()
	tok, err := a.oidc.oauth2Config(d, a.redirectURL()).Exchange(xctx, code, oauth2.VerifierOption(rec.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return a.authErrorRedirect(c, AuthErrorExchangeFailed, fmt.Errorf("token endpoint refused the code: %q", re.ErrorCode))
		}
		return a.authErrorRedirect(c, AuthErrorUnavailable, fmt.Errorf("token endpoint: %w", err))
	}
	rawID, _ := tok.Extra("id_token").(string)
	if rawID == "" {
		return a.authErrorRedirect(c, AuthErrorExchangeFailed, errors.New("the token response has no ID token"))
	}
	idt, err := d.idVerifier.Verify(ctx, rawID)
	if err != nil {
		return a.authErrorRedirect(c, AuthErrorExchangeFailed, fmt.Errorf("ID token: %w", err))
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(rec.Nonce)) != 1 {
		return a.authErrorRedirect(c, AuthErrorNonceMismatch, errors.New("the ID token's nonce is not this login's"))
	}
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			return a.authErrorRedirect(c, AuthErrorExchangeFailed, fmt.Errorf("access token hash: %w", err))
		}
	}
	ident, err := a.oidc.identityFromTokens(ctx, d, idt, tok.AccessToken)
	if err != nil {
		return a.authErrorRedirect(c, AuthErrorExchangeFailed, err)
	}
	if ident.Subject == "" {
		return a.authErrorRedirect(c, AuthErrorExchangeFailed, errors.New("the ID token has no subject"))
	}
	sealed, err := a.sealTokens(tokenBundle{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, IDToken: rawID})
	if err != nil {
		return a.authErrorRedirect(c, AuthErrorUnavailable, err)
	}
	if _, err := a.openSession(c, methodOIDC, ident, sealed, a.tokenExpiry(tok)); err != nil {
		return a.authErrorRedirect(c, AuthErrorUnavailable, err)
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.Redirect(http.StatusSeeOther, a.publicBase+rec.ReturnTo)
}

// tokenExpiry is when the access token expires by our clock (zero when the
// provider does not say).
func (a *Authenticator) tokenExpiry(tok *oauth2.Token) time.Time {
	if tok.ExpiresIn > 0 {
		return a.now().Add(time.Duration(tok.ExpiresIn) * time.Second)
	}
	return tok.Expiry
}

func (a *Authenticator) sealTokens(tb tokenBundle) (string, error) {
	plain, err := json.Marshal(tb)
	if err != nil {
		return "", fmt.Errorf("encode tokens: %w", err)
	}
	sealed, err := a.oidc.opts.Sealer.Seal(string(plain))
	if err != nil {
		return "", fmt.Errorf("seal tokens: %w", err)
	}
	return sealed, nil
}

func (a *Authenticator) openTokens(sealed string) (tokenBundle, error) {
	var tb tokenBundle
	plain, err := a.oidc.opts.Sealer.Open(sealed)
	if err != nil {
		return tb, fmt.Errorf("open tokens: %w", err)
	}
	if err := json.Unmarshal([]byte(plain), &tb); err != nil {
		return tb, fmt.Errorf("decode tokens: %w", err)
	}
	return tb, nil
}

// refreshIfDue refreshes the session's tokens when the access token expires
// within the leeway. Concurrent requests of one session share one refresh;
// instances racing each other are settled by the session's version.
func (a *Authenticator) refreshIfDue(ctx context.Context, id string, s sessions.Session) (sessions.Session, error) {
	if !a.refreshDue(s) {
		return s, nil
	}
	v, err, _ := a.refreshes.Do(id, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*providerTimeout)
		defer cancel()
		// s may have been read before a refresh that has finished since
		// (by a flight of this instance that ended a moment ago, or by
		// another instance): its refresh token may already be spent.
		// Refresh from the stored session, and only if still due.
		cur, err := a.store.Get(ctx, id)
		if errors.Is(err, sessions.ErrNotFound) {
			return sessions.Session{}, ErrSessionEnded
		}
		if err != nil {
			return sessions.Session{}, fmt.Errorf("get session: %w", err)
		}
		if !a.refreshDue(cur) {
			return cur, nil
		}
		return a.refresh(ctx, id, cur)
	})
	if err != nil {
		return sessions.Session{}, err
	}
	return v.(sessions.Session), nil
}

// refreshDue reports whether a session's access token expires within the
// refresh leeway.
func (a *Authenticator) refreshDue(s sessions.Session) bool {
	return !s.TokensExpireAt.IsZero() && !a.now().Before(s.TokensExpireAt.Add(-a.oidc.opts.RefreshLeeway))
}

// refresh uses the refresh token. A refusal by the provider (the user was
// disabled, the provider's session ended) ends our session too; a provider
// that cannot be reached leaves the session as it is until the next try.
func (a *Authenticator) refresh(ctx context.Context, id string, s sessions.Session) (sessions.Session, error) {
	tb, err := a.openTokens(s.Tokens)
	if err != nil {
		a.logger.WarnContext(ctx, "session tokens cannot be opened (the sealing key changed?); session ended", slog.Any("error", err))
		return sessions.Session{}, a.endSession(ctx, id)
	}
	next := s
	if tb.RefreshToken == "" {
		// Nothing to refresh with: the session lives by its own expiry.
		next.TokensExpireAt = time.Time{}
		return a.saveRefreshed(ctx, id, next)
	}
	d, err := a.oidc.discover(ctx)
	if err != nil {
		a.logger.WarnContext(ctx, "token refresh postponed", slog.Any("error", err))
		return s, nil
	}
	tok, err := a.oidc.oauth2Config(d, "").TokenSource(a.oidc.clientContext(ctx), &oauth2.Token{RefreshToken: tb.RefreshToken}).Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			// Another instance may have spent the refresh token first: then
			// its refreshed session stands.
			if cur, gerr := a.store.Get(ctx, id); gerr == nil && cur.Version != s.Version {
				return cur, nil
			}
			a.logger.InfoContext(ctx, "the provider refused the token refresh; session ended",
				slog.String("subject", s.Subject), slog.String("oauth_error", re.ErrorCode))
			return sessions.Session{}, a.endSession(ctx, id)
		}
		a.logger.WarnContext(ctx, "token refresh failed; retrying on a later request", slog.Any("error", err))
		return s, nil
	}
	tb.AccessToken = tok.AccessToken
	if tok.RefreshToken != "" {
		tb.RefreshToken = tok.RefreshToken
	}
	if rawID, _ := tok.Extra("id_token").(string); rawID != "" {
		idt, err := d.idVerifier.Verify(ctx, rawID)
		if err != nil || idt.Subject != s.Subject {
			a.logger.WarnContext(ctx, "the refreshed ID token does not verify; session ended", slog.Any("error", err))
			return sessions.Session{}, a.endSession(ctx, id)
		}
		ident, err := a.oidc.identityFromTokens(ctx, d, idt, tok.AccessToken)
		if err != nil {
			return sessions.Session{}, err
		}
		tb.IDToken = rawID
		next.Username, next.Name, next.Email, next.Department = ident.Username, ident.Name, ident.Email, ident.Department
		next.Roles = ident.roleNames()
	} else if at, err := d.bearerVerifier.Verify(ctx, tok.AccessToken); err == nil && at.Subject == s.Subject {
		var claims map[string]any
		if at.Claims(&claims) == nil {
			if roles, ok := rolesFromClaims(claims, a.oidc.opts.RolesClaims); ok {
				next.Roles = identity{Roles: roles}.roleNames()
			}
		}
	}
	if next.Tokens, err = a.sealTokens(tb); err != nil {
		return sessions.Session{}, err
	}
	next.TokensExpireAt = a.tokenExpiry(tok)
	return a.saveRefreshed(ctx, id, next)
}

// saveRefreshed stores refreshed tokens. When another instance refreshed
// the session first, its result wins and is returned.
func (a *Authenticator) saveRefreshed(ctx context.Context, id string, next sessions.Session) (sessions.Session, error) {
	updated, err := a.store.Update(ctx, id, next)
	if errors.Is(err, sessions.ErrConflict) {
		updated, err = a.store.Get(ctx, id)
	}
	if errors.Is(err, sessions.ErrNotFound) {
		return sessions.Session{}, ErrSessionEnded
	}
	if err != nil {
		return sessions.Session{}, fmt.Errorf("save refreshed tokens: %w", err)
	}
	a.logger.DebugContext(ctx, "session tokens refreshed", slog.String("subject", updated.Subject))
	return updated, nil
}

// endProviderSession returns the RP-initiated logout URL of an OIDC session
// (nil when the provider has no end-session endpoint) and revokes its
// refresh token at the provider, best effort.
func (a *Authenticator) endProviderSession(ctx context.Context, s sessions.Session) *string {
	tb, err := a.openTokens(s.Tokens)
	if err != nil {
		a.logger.WarnContext(ctx, "logout: session tokens cannot be opened", slog.Any("error", err))
		return nil
	}
	d, err := a.oidc.discover(ctx)
	if err != nil {
		a.logger.WarnContext(ctx, "logout: provider unavailable", slog.Any("error", err))
		return nil
	}
	if d.revocation != "" && tb.RefreshToken != "" {
		a.revoke(ctx, d.revocation, tb.RefreshToken)
	}
	if d.endSession == "" {
		return nil
	}
	q := url.Values{"post_logout_redirect_uri": {a.oidc.postLogout}, "client_id": {a.oidc.opts.ClientID}}
	if tb.IDToken != "" {
		q.Set("id_token_hint", tb.IDToken)
	}
	sep := "?"
	if strings.Contains(d.endSession, "?") {
		sep = "&"
	}
	u := d.endSession + sep + q.Encode()
	return &u
}

// revoke asks the provider to revoke a refresh token (RFC 7009).
func (a *Authenticator) revoke(ctx context.Context, endpoint, refreshToken string) {
	ctx, cancel := context.WithTimeout(ctx, providerTimeout)
	defer cancel()
	form := url.Values{"token": {refreshToken}, "token_type_hint": {"refresh_token"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		a.logger.WarnContext(ctx, "logout: revocation request", slog.Any("error", err))
		return
	}
	req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationForm)
	req.SetBasicAuth(url.QueryEscape(a.oidc.opts.ClientID), url.QueryEscape(a.oidc.opts.ClientSecret))
	resp, err := a.oidc.opts.HTTPClient.Do(req)
	if err != nil {
		a.logger.WarnContext(ctx, "logout: the refresh token could not be revoked", slog.Any("error", err))
		return
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		a.logger.WarnContext(ctx, "logout: the provider refused to revoke the refresh token", slog.Int("status", resp.StatusCode))
	}
}
