package auth

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"golang.org/x/crypto/bcrypt"
)

// tokenLeeway absorbs clock skew between instances when checking exp, nbf
// and iat of local JWTs.
const tokenLeeway = 30 * time.Second

// localAuth is local mode: accounts and the JWTs issued to their API
// clients.
type localAuth struct {
	accounts  map[string]Account // by lower-case username
	dummyHash []byte             // compared for unknown users, so they take as long
	keys      []*signingKey      // keys[0] signs
	byKID     map[string]*signingKey
	methods   []string // the JWS algorithms of keys
	issuer    string
	ttl       time.Duration
	now       func() time.Time
}

func newLocalAuth(opts LocalOptions, issuer string, production bool, now func() time.Time, logger *slog.Logger) (*localAuth, error) {
	l := &localAuth{
		accounts: map[string]Account{},
		byKID:    map[string]*signingKey{},
		issuer:   issuer,
		ttl:      orDefault(opts.TokenTTL, DefaultTokenTTL),
		now:      now,
	}
	var errs []error
	if l.ttl < time.Minute || l.ttl > 24*time.Hour {
		errs = append(errs, fmt.Errorf("the local token lifetime %s must be between 1m and 24h", l.ttl))
	}

	var accounts []Account
	var err error
	switch {
	case opts.AccountsFile != "":
		accounts, err = LoadAccounts(opts.AccountsFile)
	case production:
		err = errors.New("local mode in production needs an accounts file: the development accounts are refused")
	default:
		accounts, err = devAccounts()
		logger.Warn("local mode without an accounts file: the development accounts admin, manager, user, auditor and integrator exist with the documented development password; never use this outside development")
	}
	if err != nil {
		errs = append(errs, err)
	}
	cost := bcrypt.MinCost
	for _, acc := range accounts {
		l.accounts[strings.ToLower(acc.Username)] = acc
		if c, err := bcrypt.Cost(acc.PasswordHash); err == nil {
			cost = max(cost, c)
		}
	}
	// The dummy costs as much as the dearest real hash, so an unknown user
	// name takes no less time than a known one.
	if len(accounts) > 0 {
		secret := make([]byte, 16)
		_, _ = rand.Read(secret)
		if l.dummyHash, err = bcrypt.GenerateFromPassword(secret, cost); err != nil {
			errs = append(errs, fmt.Errorf("make the dummy password hash: %w", err))
		}
	}

	switch {
	case opts.SigningKeyFile != "":
		data, err := os.ReadFile(opts.SigningKeyFile)
		if err == nil {
			l.keys, err = parseSigningKeys(data)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("signing key file: %w", err))
		}
	case production:
		errs = append(errs, errors.New("local mode in production needs a signing key file"))
	default:
		k, err := generateSigningKey()
		if err != nil {
			errs = append(errs, err)
		} else {
			l.keys = []*signingKey{k}
			logger.Warn("local mode without a signing key file: tokens are signed with a key made at start, so they stop verifying after a restart and on other instances")
		}
	}
	for _, k := range l.keys {
		if _, dup := l.byKID[k.kid]; dup {
			errs = append(errs, fmt.Errorf("signing key %s appears twice", k.kid))
		}
		l.byKID[k.kid] = k
		if !slices.Contains(l.methods, k.method.Alg()) {
			l.methods = append(l.methods, k.method.Alg())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return l, nil
}

// account returns the account of a username, ignoring case.
func (l *localAuth) account(username string) (Account, bool) {
	acc, ok := l.accounts[strings.ToLower(username)]
	return acc, ok
}

// authenticate checks a password. Unknown users cost one bcrypt comparison
// too, against the dummy hash.
func (l *localAuth) authenticate(username, password string) (Account, bool) {
	acc, known := l.account(username)
	hash := l.dummyHash
	if known {
		hash = acc.PasswordHash
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	return acc, known && err == nil
}

// issue signs a JWT for the account. Its claims are those an OIDC provider
// would give: iss, aud, sub, preferred_username, realm_access.roles,
// department, name, email, iat, nbf, exp and jti.
func (l *localAuth) issue(acc Account) (string, time.Time, error) {
	now := l.now()
	exp := now.Add(l.ttl)
	roles := acc.identity().roleNames()
	claims := jwt.MapClaims{
		"iss":                l.issuer,
		"aud":                Audience,
		"sub":                acc.Username,
		"preferred_username": acc.Username,
		"realm_access":       map[string]any{"roles": roles},
		"iat":                now.Unix(),
		"nbf":                now.Unix(),
		"exp":                exp.Unix(),
		"jti":                uuid.NewString(),
	}
	for k, v := range map[string]string{"department": acc.Department, "name": acc.Name, "email": acc.Email} {
		if v != "" {
			claims[k] = v
		}
	}
	k := l.keys[0]
	tok := jwt.NewWithClaims(k.method, claims)
	tok.Header["kid"] = k.kid
	signed, err := tok.SignedString(k.private)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	return signed, exp, nil
}

// verify checks a local JWT: signature by one of our keys (chosen by kid,
// with the key's own algorithm), issuer, audience, exp (required), nbf and
// iat; and that its account still exists.
func (l *localAuth) verify(token string) (identity, error) {
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		k, ok := l.byKID[kid]
		if !ok {
			return nil, fmt.Errorf("unknown key id %q", truncate(kid, 64))
		}
		if t.Method.Alg() != k.method.Alg() {
			return nil, fmt.Errorf("algorithm %s does not belong to key %s", t.Method.Alg(), k.kid)
		}
		return k.public, nil
	},
		jwt.WithValidMethods(l.methods),
		jwt.WithIssuer(l.issuer),
		jwt.WithAudience(Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(tokenLeeway),
		jwt.WithTimeFunc(l.now),
	)
	if err != nil {
		return identity{}, fmt.Errorf("local token: %w", err)
	}
	id := identityFromClaims(claims, []string{"realm_access.roles"})
	acc, ok := l.account(id.Username)
	if !ok || id.Subject != acc.Username {
		return identity{}, errors.New("local token: the account no longer exists")
	}
	return id, nil
}

// truncate shortens attacker-controlled strings before they reach a log.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
