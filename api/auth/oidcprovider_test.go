package auth

// A real OpenID provider for the tests: zitadel/oidc's op package (the
// protocol: discovery, authorize, token, refresh, keys, end-session,
// revocation, client credentials) over a small in-memory storage. Users sign
// in without a password: the test names the next user with loginAs.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

const (
	opClientID         = "cml-cloud-manager-web"
	opClientSecret     = "web-client-secret-0123456789"
	opIntegratorID     = "cml-cloud-manager-integrator"
	opIntegratorSecret = "integrator-secret-9876543210"
)

type opUser struct {
	ID, Username, Name, Email, Department string
	Roles                                 []string
}

// testProvider is a running OpenID provider.
type testProvider struct {
	srv    *httptest.Server
	issuer string
	st     *opStorage

	mu sync.Mutex
	// secrets are every token, code and client secret the provider handed
	// out or knows, for the log test.
	secrets []string
}

// newTestProvider starts a provider whose web client redirects to
// redirectURI and may return to postLogoutURI after logout.
func newTestProvider(t testing.TB, redirectURI, postLogoutURI string) *testProvider {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	issuer := "http://" + srv.Listener.Addr().String()
	st := newOPStorage()
	st.clients[opClientID] = &opClient{
		id: opClientID, secret: opClientSecret,
		redirectURIs: []string{redirectURI}, postLogoutURIs: []string{postLogoutURI},
		grantTypes: []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken},
	}
	st.clients[opIntegratorID] = &opClient{
		id: opIntegratorID, secret: opIntegratorSecret,
		grantTypes: []oidc.GrantType{oidc.GrantTypeClientCredentials},
	}
	st.serviceAccounts[opIntegratorID] = &opUser{
		ID: "sa-integrator", Username: "service-account-" + opIntegratorID, Roles: []string{"integrator", "offline_access"},
	}
	for _, u := range []*opUser{
		{ID: "u-admin", Username: "admin", Name: "Ada Admin", Email: "admin@example.com", Department: "platform",
			Roles: []string{"admin", "manager", "user", "offline_access", "default-roles-cml-cloud-manager"}},
		{ID: "u-manager", Username: "manager", Name: "Max Manager", Email: "manager@example.com", Department: "engineering", Roles: []string{"manager"}},
		{ID: "u-user", Username: "user", Name: "Uma User", Email: "user@example.com", Department: "engineering", Roles: []string{"user"}},
		{ID: "u-auditor", Username: "auditor", Name: "Aud Auditor", Email: "auditor@example.com", Roles: []string{"auditor"}},
		{ID: "u-sneaky", Username: "sneaky", Name: "Sneaky", Email: "sneaky@example.com", Roles: []string{"system", "superuser"}},
	} {
		st.users[u.ID] = u
	}

	provider, err := op.NewProvider(&op.Config{
		CryptoKey:                sha256.Sum256([]byte("test provider")),
		DefaultLogoutRedirectURI: "/logged-out",
		CodeMethodS256:           true,
		AuthMethodPost:           true,
		GrantTypeRefreshToken:    true,
	}, st, op.StaticIssuer(issuer), op.WithAllowInsecure(), op.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatalf("start the test provider: %v", err)
	}
	p := &testProvider{srv: srv, issuer: issuer, st: st}
	p.secrets = append(p.secrets, opClientSecret, opIntegratorSecret)
	callback := op.AuthCallbackURL(provider)
	interceptor := op.NewIssuerInterceptor(provider.IssuerFromRequest)

	mux := http.NewServeMux()
	mux.Handle("/login", interceptor.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("authRequestID")
		if err := st.completeLogin(id); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		http.Redirect(w, r, callback(r.Context(), id), http.StatusFound)
	}))
	mux.HandleFunc("/logged-out", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "signed out") })
	mux.Handle("/", provider)
	srv.Config.Handler = p.record(mux)
	srv.Start()
	t.Cleanup(srv.Close)
	return p
}

// record notes every token and code the provider sends.
func (p *testProvider) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &recordingWriter{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		p.mu.Lock()
		defer p.mu.Unlock()
		if loc, err := url.Parse(w.Header().Get("Location")); err == nil {
			if code := loc.Query().Get("code"); code != "" {
				p.secrets = append(p.secrets, code)
			}
		}
		var body map[string]any
		if json.Unmarshal(rec.body.Bytes(), &body) == nil {
			for _, k := range []string{"access_token", "id_token", "refresh_token"} {
				if s, _ := body[k].(string); s != "" {
					p.secrets = append(p.secrets, s)
				}
			}
		}
	})
}

// issuedSecrets returns the tokens, codes and client secrets so far.
func (p *testProvider) issuedSecrets() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.secrets)
}

type recordingWriter struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (w *recordingWriter) Write(b []byte) (int, error) {
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

// clientCredentialsToken gets an access token for the integrator client.
func (p *testProvider) clientCredentialsToken(t *testing.T) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"openid"}}
	req, err := http.NewRequest(http.MethodPost, p.issuer+"/oauth/token", bytes.NewBufferString(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(opIntegratorID, opIntegratorSecret)
	resp, err := p.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil || out.AccessToken == "" {
		t.Fatalf("client credentials grant: status %d", resp.StatusCode)
	}
	p.mu.Lock()
	p.secrets = append(p.secrets, out.AccessToken)
	p.mu.Unlock()
	return out.AccessToken
}

// opStorage implements op.Storage and op.ClientCredentialsStorage in memory.
type opStorage struct {
	mu              sync.Mutex
	users           map[string]*opUser // by id
	serviceAccounts map[string]*opUser // by client id
	clients         map[string]*opClient
	authRequests    map[string]*opAuthRequest
	codes           map[string]string // code → auth request id
	refreshTokens   map[string]*opRefreshToken
	keys            []*opKey // keys[0] signs
	accessTTL       time.Duration
	nextUser        string
	refreshGrants   int
	revocations     int
}

func newOPStorage() *opStorage {
	return &opStorage{
		users:           map[string]*opUser{},
		serviceAccounts: map[string]*opUser{},
		clients:         map[string]*opClient{},
		authRequests:    map[string]*opAuthRequest{},
		codes:           map[string]string{},
		refreshTokens:   map[string]*opRefreshToken{},
		keys:            []*opKey{newOPKey()},
		accessTTL:       5 * time.Minute,
	}
}

// loginAs names the user the next login completes for.
func (s *opStorage) loginAs(username string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, u := range s.users {
		if u.Username == username {
			s.nextUser = id
			return
		}
	}
	panic("no test user " + username)
}

func (s *opStorage) setRoles(username string, roles ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range s.users {
		if u.Username == username {
			u.Roles = roles
		}
	}
}

// revokeAll drops every refresh token, as when an administrator ends the
// user's sessions at the provider.
func (s *opStorage) revokeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.refreshTokens)
}

// rotateKey makes a new signing key; the old one stays published.
func (s *opStorage) rotateKey() *opKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := newOPKey()
	s.keys = append([]*opKey{k}, s.keys...)
	return k
}

func (s *opStorage) signingKey() *opKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[0]
}

func (s *opStorage) counts() (refreshGrants, revocations, liveRefreshTokens int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshGrants, s.revocations, len(s.refreshTokens)
}

func (s *opStorage) completeLogin(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	req, ok := s.authRequests[id]
	if !ok || s.nextUser == "" {
		return errors.New("no such auth request or no user chosen")
	}
	req.userID, req.done, req.authTime = s.nextUser, true, time.Now()
	return nil
}

func (s *opStorage) user(id string) *opUser {
	if u, ok := s.users[id]; ok {
		return u
	}
	for _, u := range s.serviceAccounts {
		if u.ID == id {
			return u
		}
	}
	return nil
}

func (s *opStorage) CreateAuthRequest(_ context.Context, r *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	req := &opAuthRequest{
		id: uuid.NewString(), clientID: r.ClientID, redirectURI: r.RedirectURI, state: r.State, nonce: r.Nonce,
		scopes: r.Scopes, responseType: r.ResponseType,
	}
	if r.CodeChallenge != "" {
		req.challenge = &oidc.CodeChallenge{Challenge: r.CodeChallenge, Method: r.CodeChallengeMethod}
	}
	s.authRequests[req.id] = req
	return req, nil
}

func (s *opStorage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.authRequests[id]; ok {
		return r, nil
	}
	return nil, errors.New("auth request not found")
}

func (s *opStorage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	id, ok := s.codes[code]
	s.mu.Unlock()
	if !ok {
		return nil, errors.New("code not found")
	}
	return s.AuthRequestByID(ctx, id)
}

func (s *opStorage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[code] = id
	return nil
}

func (s *opStorage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.authRequests, id)
	for code, rid := range s.codes {
		if rid == id {
			delete(s.codes, code)
		}
	}
	return nil
}

func (s *opStorage) CreateAccessToken(context.Context, op.TokenRequest) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return uuid.NewString(), time.Now().Add(s.accessTTL), nil
}

func (s *opStorage) CreateAccessAndRefreshTokens(_ context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := &opRefreshToken{token: uuid.NewString(), userID: req.GetSubject(), scopes: req.GetScopes(), audience: req.GetAudience()}
	switch r := req.(type) {
	case *opAuthRequest:
		rt.clientID, rt.authTime = r.clientID, r.authTime
	case *opRefreshToken:
		rt.clientID, rt.authTime = r.clientID, r.authTime
	}
	if current != "" {
		if _, ok := s.refreshTokens[current]; !ok {
			return "", "", time.Time{}, errors.New("refresh token not found")
		}
		delete(s.refreshTokens, current) // rotation
		s.refreshGrants++
	}
	s.refreshTokens[rt.token] = rt
	return uuid.NewString(), rt.token, time.Now().Add(s.accessTTL), nil
}

func (s *opStorage) TokenRequestByRefreshToken(_ context.Context, token string) (op.RefreshTokenRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.refreshTokens[token]
	if !ok {
		return nil, op.ErrInvalidRefreshToken
	}
	cp := *rt
	return &cp, nil
}

func (s *opStorage) TerminateSession(_ context.Context, userID, clientID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, rt := range s.refreshTokens {
		if rt.userID == userID && rt.clientID == clientID {
			delete(s.refreshTokens, k)
		}
	}
	return nil
}

func (s *opStorage) GetRefreshTokenInfo(_ context.Context, _ string, token string) (string, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rt, ok := s.refreshTokens[token]; ok {
		return rt.userID, rt.token, nil
	}
	return "", "", op.ErrInvalidRefreshToken
}

func (s *opStorage) RevokeToken(_ context.Context, token, _, clientID string) *oidc.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rt, ok := s.refreshTokens[token]; ok {
		if rt.clientID != clientID {
			return oidc.ErrInvalidClient().WithDescription("token was not issued to this client")
		}
		delete(s.refreshTokens, token)
		s.revocations++
	}
	return nil
}

func (s *opStorage) SigningKey(context.Context) (op.SigningKey, error) { return s.signingKey(), nil }

func (s *opStorage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *opStorage) KeySet(context.Context) ([]op.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]op.Key, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, opPublicKey{k})
	}
	return out, nil
}

func (s *opStorage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[id]; ok {
		return c, nil
	}
	return nil, errors.New("client not found")
}

func (s *opStorage) AuthorizeClientIDSecret(_ context.Context, id, secret string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[id]; ok && c.secret == secret {
		return nil
	}
	return errors.New("wrong client credentials")
}

func (s *opStorage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

// SetUserinfoFromRequest fills the ID token. Like Keycloak's default, it
// carries no roles: those are in the access token only.
func (s *opStorage) SetUserinfoFromRequest(_ context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	return s.setUserinfo(info, req.GetSubject(), scopes)
}

func (s *opStorage) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, _, subject, _ string) error {
	return s.setUserinfo(info, subject, []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail})
}

func (s *opStorage) setUserinfo(info *oidc.UserInfo, subject string, scopes []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.user(subject)
	if u == nil {
		return errors.New("user not found")
	}
	info.Subject = u.ID
	if slices.Contains(scopes, oidc.ScopeProfile) {
		info.PreferredUsername, info.Name = u.Username, u.Name
	}
	if slices.Contains(scopes, oidc.ScopeEmail) {
		info.Email = u.Email
	}
	return nil
}

func (s *opStorage) SetIntrospectionFromToken(context.Context, *oidc.IntrospectionResponse, string, string, string) error {
	return errors.New("introspection is not supported")
}

// GetPrivateClaimsFromScopes fills the JWT access token: Keycloak-style
// realm_access.roles, department and preferred_username.
func (s *opStorage) GetPrivateClaimsFromScopes(_ context.Context, userID, _ string, _ []string) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.user(userID)
	if u == nil {
		return nil, errors.New("user not found")
	}
	claims := map[string]any{
		"realm_access":       map[string]any{"roles": slices.Clone(u.Roles)},
		"preferred_username": u.Username,
		"typ":                "Bearer",
	}
	if u.Department != "" {
		claims["department"] = u.Department
	}
	return claims, nil
}

func (s *opStorage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("JWT profile is not supported")
}

func (s *opStorage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("JWT profile is not supported")
}

func (s *opStorage) Health(context.Context) error { return nil }

func (s *opStorage) ClientCredentials(_ context.Context, id, secret string) (op.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok || c.secret != secret || !slices.Contains(c.grantTypes, oidc.GrantTypeClientCredentials) {
		return nil, errors.New("wrong client credentials")
	}
	return c, nil
}

func (s *opStorage) ClientCredentialsTokenRequest(_ context.Context, id string, scopes []string) (op.TokenRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sa, ok := s.serviceAccounts[id]
	if !ok {
		return nil, errors.New("no service account")
	}
	return &opTokenRequest{subject: sa.ID, audience: []string{id, Audience}, scopes: scopes}, nil
}

type opClient struct {
	id, secret     string
	redirectURIs   []string
	postLogoutURIs []string
	grantTypes     []oidc.GrantType
}

func (c *opClient) GetID() string                       { return c.id }
func (c *opClient) RedirectURIs() []string              { return c.redirectURIs }
func (c *opClient) PostLogoutRedirectURIs() []string    { return c.postLogoutURIs }
func (c *opClient) ApplicationType() op.ApplicationType { return op.ApplicationTypeWeb }
func (c *opClient) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethodBasic }
func (c *opClient) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c *opClient) GrantTypes() []oidc.GrantType         { return c.grantTypes }
func (c *opClient) LoginURL(id string) string            { return "/login?authRequestID=" + url.QueryEscape(id) }
func (c *opClient) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeJWT }
func (c *opClient) IDTokenLifetime() time.Duration       { return time.Hour }
func (c *opClient) DevMode() bool                        { return true }
func (c *opClient) IsScopeAllowed(string) bool           { return false }
func (c *opClient) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c *opClient) ClockSkew() time.Duration             { return 0 }
func (c *opClient) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *opClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

type opAuthRequest struct {
	id, clientID, redirectURI, state, nonce string
	scopes                                  []string
	responseType                            oidc.ResponseType
	challenge                               *oidc.CodeChallenge
	userID                                  string
	done                                    bool
	authTime                                time.Time
}

func (r *opAuthRequest) GetID() string                         { return r.id }
func (r *opAuthRequest) GetACR() string                        { return "" }
func (r *opAuthRequest) GetAMR() []string                      { return []string{"pwd"} }
func (r *opAuthRequest) GetAudience() []string                 { return []string{r.clientID, Audience} }
func (r *opAuthRequest) GetAuthTime() time.Time                { return r.authTime }
func (r *opAuthRequest) GetClientID() string                   { return r.clientID }
func (r *opAuthRequest) GetCodeChallenge() *oidc.CodeChallenge { return r.challenge }
func (r *opAuthRequest) GetNonce() string                      { return r.nonce }
func (r *opAuthRequest) GetRedirectURI() string                { return r.redirectURI }
func (r *opAuthRequest) GetResponseType() oidc.ResponseType    { return r.responseType }
func (r *opAuthRequest) GetResponseMode() oidc.ResponseMode    { return "" }
func (r *opAuthRequest) GetScopes() []string                   { return r.scopes }
func (r *opAuthRequest) GetState() string                      { return r.state }
func (r *opAuthRequest) GetSubject() string                    { return r.userID }
func (r *opAuthRequest) Done() bool                            { return r.done }

type opRefreshToken struct {
	token, userID, clientID string
	scopes, audience        []string
	authTime                time.Time
}

func (r *opRefreshToken) GetAMR() []string            { return []string{"pwd"} }
func (r *opRefreshToken) GetAudience() []string       { return r.audience }
func (r *opRefreshToken) GetAuthTime() time.Time      { return r.authTime }
func (r *opRefreshToken) GetClientID() string         { return r.clientID }
func (r *opRefreshToken) GetScopes() []string         { return r.scopes }
func (r *opRefreshToken) GetSubject() string          { return r.userID }
func (r *opRefreshToken) SetCurrentScopes(s []string) { r.scopes = s }

type opTokenRequest struct {
	subject          string
	audience, scopes []string
}

func (r *opTokenRequest) GetSubject() string    { return r.subject }
func (r *opTokenRequest) GetAudience() []string { return r.audience }
func (r *opTokenRequest) GetScopes() []string   { return r.scopes }

type opKey struct {
	id  string
	key *rsa.PrivateKey
}

func newOPKey() *opKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(fmt.Sprintf("generate RSA key: %v", err))
	}
	return &opKey{id: uuid.NewString(), key: k}
}

func (k *opKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *opKey) Key() any                                    { return k.key }
func (k *opKey) ID() string                                  { return k.id }

type opPublicKey struct{ k *opKey }

func (p opPublicKey) ID() string                         { return p.k.id }
func (p opPublicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (p opPublicKey) Use() string                        { return "sig" }
func (p opPublicKey) Key() any                           { return &p.k.key.PublicKey }
