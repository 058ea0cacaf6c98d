// Package auth identifies the callers of the HTTP API and serves the
// /api/auth routes: local accounts (a bcrypt accounts file, a login form and
// short-lived signed JWTs for API clients) or OpenID Connect as a
// backend-for-frontend (authorization code with PKCE, tokens kept server
// side, silent refresh, RP-initiated logout), browser sessions in a shared
// sessions.Store, CSRF protection of cookie-authenticated requests, and a
// login rate limit shared by all instances. It implements api.Authenticator.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/cmlcloud/cml-cloud-manager/api"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sessions"
)

// Mode selects how people sign in.
type Mode string

// Modes.
const (
	// ModeLocal signs people in against an accounts file (or the
	// development accounts) and issues its own JWTs to API clients.
	ModeLocal Mode = "local"
	// ModeOIDC delegates sign-in to an OpenID Connect provider.
	ModeOIDC Mode = "oidc"
)

// Audience is the "aud" of the local JWTs, and the default audience that
// bearer tokens from the OIDC provider must carry.
const Audience = "cml-cloud-manager"

// Defaults of Options.
const (
	DefaultIdleTimeout   = 30 * time.Minute
	DefaultMaxLifetime   = 12 * time.Hour
	DefaultWarning       = 5 * time.Minute
	DefaultTokenTTL      = 15 * time.Minute
	DefaultRefreshLeeway = time.Minute
	// loginStateTTL bounds an OIDC login from redirect to callback.
	loginStateTTL = 10 * time.Minute
	// maxBodyBytes bounds the JSON and form bodies of the auth routes.
	maxBodyBytes = 16 << 10
)

// Stable problem codes of the auth routes and middleware, beside those of
// package api.
const (
	CodeInvalidCredentials = "invalid_credentials"
	CodeRateLimited        = "rate_limited"
	CodeNotAvailable       = "not_available"
	CodeUnauthenticated    = "unauthenticated"
	CodeCSRF               = "csrf"
	CodeInvalidToken       = "invalid_token"
	CodeSessionExpired     = "session_expired"
)

// Codes of GET /api/auth/callback failures, sent to the browser as
// /?auth_error=<code>.
const (
	AuthErrorStateMismatch  = "state_mismatch"
	AuthErrorNonceMismatch  = "nonce_mismatch"
	AuthErrorExchangeFailed = "exchange_failed"
	AuthErrorIdP            = "idp_error"
	AuthErrorUnavailable    = "unavailable"
)

// Cookie names.
const (
	// SessionCookie holds the random session id.
	SessionCookie = "cmlcm_session"
	// LoginCookie binds a pending OIDC login to the browser that started it.
	LoginCookie = "cmlcm_login"
)

// Sealer encrypts the provider's tokens before they are stored
// (*sealing.Sealer).
type Sealer interface {
	Seal(plaintext string) (string, error)
	Open(sealed string) (string, error)
}

// AttemptLimiter limits password attempts per key across all instances
// (*sessions.Limiter).
type AttemptLimiter interface {
	// Attempt counts an attempt for every key and returns how long to wait
	// when any has used up its window, else zero.
	Attempt(ctx context.Context, keys ...string) (time.Duration, error)
	// Forgive takes back the attempts of a successful sign-in.
	Forgive(ctx context.Context, keys ...string) error
}

// Options configure an Authenticator.
type Options struct {
	// Mode is ModeLocal or ModeOIDC.
	Mode Mode
	// Environment is ENVIRONMENT; "production" refuses the development
	// accounts and a generated signing key.
	Environment string
	// PublicURL is the absolute URL at which browsers reach the service. It
	// is the issuer of local JWTs, the origin CSRF checks compare with, the
	// base of redirects, and https makes the cookies Secure.
	PublicURL string
	// Logger receives sign-in events; nil discards them. Secrets are never
	// logged.
	Logger *slog.Logger
	// Sessions keeps sessions and pending logins (required).
	Sessions sessions.Store
	// Limiter limits password attempts (required in local mode).
	Limiter AttemptLimiter
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	// IdleTimeout ends a session without activity (default 30m).
	IdleTimeout time.Duration
	// MaxLifetime ends any session this long after sign-in (default 12h).
	MaxLifetime time.Duration
	// Warning is how long before the end the UI should warn (default 5m);
	// reported by GET /api/auth/session.
	Warning time.Duration

	// Local configures ModeLocal.
	Local LocalOptions
	// OIDC configures ModeOIDC.
	OIDC OIDCOptions
}

// LocalOptions configure local accounts and tokens.
type LocalOptions struct {
	// AccountsFile is a JSON accounts file (see LoadAccounts). Empty means
	// the development accounts, refused in production.
	AccountsFile string
	// SigningKeyFile is a PEM file of private keys (PKCS#8 Ed25519, RSA of at
	// least 2048 bits, or ECDSA P-256); the first signs, all verify. Empty
	// means a new Ed25519 key at every start, refused in production.
	SigningKeyFile string
	// TokenTTL is the lifetime of the JWTs POST /api/auth/token issues
	// (default 15m).
	TokenTTL time.Duration
}

// OIDCOptions configure the OpenID Connect provider.
type OIDCOptions struct {
	// IssuerURL is the provider's issuer; discovery reads
	// IssuerURL/.well-known/openid-configuration.
	IssuerURL string
	// ClientID and ClientSecret identify this service, a confidential
	// client.
	ClientID     string
	ClientSecret string
	// Audience is what bearer tokens must carry in "aud" (default
	// "cml-cloud-manager").
	Audience string
	// Scopes requested at sign-in (default openid, profile, email).
	Scopes []string
	// RolesClaims are the claim paths (dot-separated) searched for role
	// names, first match wins (default realm_access.roles, then roles).
	RolesClaims []string
	// PostLogoutRedirectURL is where the provider sends the browser after
	// logout (default PublicURL + "/").
	PostLogoutRedirectURL string
	// SigningAlgorithms are the JWS algorithms accepted (default RS256,
	// ES256, EdDSA).
	SigningAlgorithms []string
	// RefreshLeeway refreshes the access token this long before it expires
	// (default 1m).
	RefreshLeeway time.Duration
	// HTTPClient talks to the provider (default: a client with a 10s
	// timeout).
	HTTPClient *http.Client
	// Sealer encrypts the provider's tokens at rest (required).
	Sealer Sealer
}

// Authenticator implements api.Authenticator. Create it with New.
type Authenticator struct {
	logger     *slog.Logger
	now        func() time.Time
	store      sessions.Store
	limiter    AttemptLimiter
	public     *url.URL
	publicBase string // PublicURL without a trailing slash
	origin     string // scheme://host[:port] of PublicURL
	secure     bool
	idle       time.Duration
	maxLife    time.Duration
	warning    time.Duration
	touchEvery time.Duration

	local *localAuth
	oidc  *oidcAuth

	// routes classifies the registered /api/auth routes by "METHOD path".
	routes map[string]routeKind
	// callbackPath is the path of GET .../auth/callback once registered.
	callbackPath string
	// refreshes collapses concurrent token refreshes of one session.
	refreshes singleflight.Group
}

var _ api.Authenticator = (*Authenticator)(nil)

// New checks opts and returns an Authenticator. It does no network I/O: the
// OIDC provider is discovered on first use, so the service starts while the
// provider is down. In local mode it reads the accounts and key files.
func New(opts Options) (*Authenticator, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	a := &Authenticator{
		logger:  opts.Logger,
		now:     opts.Now,
		store:   opts.Sessions,
		limiter: opts.Limiter,
		idle:    orDefault(opts.IdleTimeout, DefaultIdleTimeout),
		maxLife: orDefault(opts.MaxLifetime, DefaultMaxLifetime),
		warning: orDefault(opts.Warning, DefaultWarning),
		routes:  map[string]routeKind{},
	}
	if a.logger == nil {
		a.logger = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.touchEvery = min(time.Minute, a.idle/10)
	if a.store == nil {
		bad("a session store is required")
	}
	if a.idle < 0 || a.maxLife < 0 || a.warning < 0 {
		bad("session durations must not be negative")
	}
	if a.idle > a.maxLife {
		bad("the session idle timeout (%s) exceeds the maximum lifetime (%s)", a.idle, a.maxLife)
	}
	u, err := url.Parse(opts.PublicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		bad("the public URL %q must be an absolute http(s) URL without query or fragment", opts.PublicURL)
	} else {
		a.public = u
		a.publicBase = strings.TrimSuffix(u.String(), "/")
		a.origin = u.Scheme + "://" + u.Host
		a.secure = u.Scheme == "https"
	}
	production := opts.Environment == "production"

	switch opts.Mode {
	case ModeLocal:
		if a.limiter == nil {
			bad("local mode needs a login rate limiter")
		}
		if a.public != nil {
			a.local, err = newLocalAuth(opts.Local, a.publicBase, production, a.now, a.logger)
			if err != nil {
				errs = append(errs, err)
			}
		}
	case ModeOIDC:
		if a.public != nil {
			a.oidc, err = newOIDCAuth(opts.OIDC, a.publicBase, a.now, a.logger)
			if err != nil {
				errs = append(errs, err)
			}
		}
	default:
		bad("unknown auth mode %q (want %q or %q)", opts.Mode, ModeLocal, ModeOIDC)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return a, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
