package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

// jwtAttack builds a token from valid claims (iss, aud, sub, exp, ...) and
// a header, to be refused.
type jwtAttack struct {
	name string
	make func(claims jwt.MapClaims) string
}

// unsigned encodes header and claims with the given signature segment.
func unsigned(t *testing.T, header map[string]any, claims jwt.MapClaims, sig string) string {
	t.Helper()
	h, err := json.Marshal(header)
	require.NoError(t, err)
	c, err := json.Marshal(claims)
	require.NoError(t, err)
	return b64.EncodeToString(h) + "." + b64.EncodeToString(c) + "." + sig
}

func sign(t *testing.T, method jwt.SigningMethod, kid string, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	require.NoError(t, err)
	return s
}

func clone(c jwt.MapClaims) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	return out
}

// publicPEM is the public key as a PEM document: the "HMAC with the public
// key" attack uses its bytes as the secret.
func publicPEM(t *testing.T, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// attacks are the forgeries every verifier must refuse. signValid signs
// claims the way the real issuer does; pub is its public key; kid its id.
func attacks(t *testing.T, signValid func(jwt.MapClaims) string, pub crypto.PublicKey, rawPub []byte, kid, alg string, now time.Time) []jwtAttack {
	with := func(base jwt.MapClaims, k string, v any) jwt.MapClaims {
		c := clone(base)
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	_, otherEd, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	otherRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	return []jwtAttack{
		{"alg none", func(c jwt.MapClaims) string {
			return unsigned(t, map[string]any{"alg": "none", "typ": "JWT", "kid": kid}, c, "")
		}},
		{"alg none with a signature", func(c jwt.MapClaims) string {
			valid := signValid(c)
			return unsigned(t, map[string]any{"alg": "none", "kid": kid}, c, strings.Split(valid, ".")[2])
		}},
		{"HS256 with the public key PEM", func(c jwt.MapClaims) string {
			return sign(t, jwt.SigningMethodHS256, kid, publicPEM(t, pub), c)
		}},
		{"HS256 with the raw public key", func(c jwt.MapClaims) string {
			return sign(t, jwt.SigningMethodHS256, kid, rawPub, c)
		}},
		{"expired", func(c jwt.MapClaims) string {
			return signValid(with(with(c, "exp", now.Add(-time.Hour).Unix()), "iat", now.Add(-2*time.Hour).Unix()))
		}},
		{"no expiry", func(c jwt.MapClaims) string { return signValid(with(c, "exp", nil)) }},
		{"not yet valid", func(c jwt.MapClaims) string { return signValid(with(c, "nbf", now.Add(time.Hour).Unix())) }},
		{"wrong issuer", func(c jwt.MapClaims) string { return signValid(with(c, "iss", "https://evil.example")) }},
		{"wrong audience", func(c jwt.MapClaims) string { return signValid(with(c, "aud", "another-service")) }},
		{"no audience", func(c jwt.MapClaims) string { return signValid(with(c, "aud", nil)) }},
		{"unknown kid, other Ed25519 key", func(c jwt.MapClaims) string {
			return sign(t, jwt.SigningMethodEdDSA, "unknown-kid", otherEd, c)
		}},
		{"unknown kid, other RSA key", func(c jwt.MapClaims) string {
			return sign(t, jwt.SigningMethodRS256, "unknown-kid", otherRSA, c)
		}},
		{"our kid, other key", func(c jwt.MapClaims) string {
			if alg == "EdDSA" {
				return sign(t, jwt.SigningMethodEdDSA, kid, otherEd, c)
			}
			return sign(t, jwt.SigningMethodRS256, kid, otherRSA, c)
		}},
		{"tampered payload", func(c jwt.MapClaims) string {
			valid := strings.Split(signValid(c), ".")
			forged := with(c, "realm_access", map[string]any{"roles": []string{"admin"}})
			forged["sub"] = "someone-else"
			body, err := json.Marshal(forged)
			require.NoError(t, err)
			return valid[0] + "." + b64.EncodeToString(body) + "." + valid[2]
		}},
		{"tampered header", func(c jwt.MapClaims) string {
			valid := strings.Split(signValid(c), ".")
			h, err := json.Marshal(map[string]any{"alg": alg, "kid": kid, "typ": "JWT", "x": 1})
			require.NoError(t, err)
			return b64.EncodeToString(h) + "." + valid[1] + "." + valid[2]
		}},
		{"truncated signature", func(c jwt.MapClaims) string {
			valid := signValid(c)
			return valid[:len(valid)-4]
		}},
		{"two dots only", func(jwt.MapClaims) string { return ".." }},
		{"garbage", func(jwt.MapClaims) string { return "not-a-jwt" }},
	}
}

func TestLocalJWTAttacksRejected(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ModeLocal, harnessConfig{})
	k := h.auth.local.keys[0]
	now := h.clock.Now()
	valid := jwt.MapClaims{
		"iss":                h.url,
		"aud":                Audience,
		"sub":                "user",
		"preferred_username": "user",
		"realm_access":       map[string]any{"roles": []string{"user"}},
		"iat":                now.Unix(),
		"nbf":                now.Unix(),
		"exp":                now.Add(10 * time.Minute).Unix(),
	}
	signValid := func(c jwt.MapClaims) string { return sign(t, k.method, k.kid, k.private, c) }

	// The baseline verifies, so each attack below fails for its own reason.
	status, p := h.probe(newBrowser(t), bearer(signValid(valid)))
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "user", p.Subject)

	for _, tt := range attacks(t, signValid, k.public, []byte(k.public.(ed25519.PublicKey)), k.kid, "EdDSA", now) {
		r := h.do(newBrowser(t), http.MethodGet, "/api/probe", nil, bearer(tt.make(valid)))
		require.Equal(t, http.StatusUnauthorized, r.StatusCode, "%s: %s", tt.name, r.body)
		require.Equal(t, CodeInvalidToken, r.problemCode(t), tt.name)
	}
	for _, header := range []string{"Basic dXNlcjp0ZXN0", "Bearer", "Bearer ", "Token abc", "Bearer " + strings.Repeat("a", maxBearerLen+1)} {
		r := h.do(newBrowser(t), http.MethodGet, "/api/probe", nil, http.Header{"Authorization": {header}})
		require.Equal(t, http.StatusUnauthorized, r.StatusCode, "%q", header)
	}
}

func TestOIDCBearerAttacksRejected(t *testing.T) {
	t.Parallel()
	o := newOIDCHarness(t, harnessConfig{})
	key := o.op.st.signingKey()
	now := o.clock.Now()
	valid := jwt.MapClaims{
		"iss":                o.op.issuer,
		"aud":                []string{"some-client", Audience},
		"sub":                "u-user",
		"preferred_username": "user",
		"realm_access":       map[string]any{"roles": []string{"user"}},
		"iat":                now.Unix(),
		"nbf":                now.Unix(),
		"exp":                now.Add(10 * time.Minute).Unix(),
		"typ":                "Bearer",
	}
	signValid := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodRS256, key.id, key.key, c) }
	status, p := o.probe(newBrowser(t), bearer(signValid(valid)))
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "u-user", p.Subject)

	rawPub := x509.MarshalPKCS1PublicKey(&key.key.PublicKey)
	cases := attacks(t, signValid, &key.key.PublicKey, rawPub, key.id, "RS256", now)
	cases = append(cases,
		jwtAttack{"an ID token (typ ID)", func(c jwt.MapClaims) string {
			c = clone(c)
			c["typ"] = "ID"
			return signValid(c)
		}},
		jwtAttack{"a refresh token (typ Refresh)", func(c jwt.MapClaims) string {
			c = clone(c)
			c["typ"] = "Refresh"
			return signValid(c)
		}},
		jwtAttack{"RS384 is not allowed", func(c jwt.MapClaims) string {
			return sign(t, jwt.SigningMethodRS384, key.id, key.key, c)
		}},
	)
	for _, tt := range cases {
		r := o.do(newBrowser(t), http.MethodGet, "/api/probe", nil, bearer(tt.make(valid)))
		require.Equal(t, http.StatusUnauthorized, r.StatusCode, "%s: %s", tt.name, r.body)
		require.Equal(t, CodeInvalidToken, r.problemCode(t), tt.name)
	}

	// Key rotation: a token signed with the provider's new key verifies once
	// the remote key set refetches the JWKS.
	next := o.op.st.rotateKey()
	status, _ = o.probe(newBrowser(t), bearer(sign(t, jwt.SigningMethodRS256, next.id, next.key, valid)))
	require.Equal(t, http.StatusOK, status)
	status, _ = o.probe(newBrowser(t), bearer(signValid(valid)))
	require.Equal(t, http.StatusOK, status, "the old key is still published")
}

func TestLocalSigningKeyFiles(t *testing.T) {
	t.Parallel()
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	smallRSA, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		require.NoError(t, err)
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})

	keys, err := parseSigningKeys(append(pkcs8(rsaKey), pkcs8(edPriv)...))
	require.NoError(t, err)
	require.Len(t, keys, 2)
	require.Equal(t, "RS256", keys[0].method.Alg(), "the first key signs")
	require.Equal(t, "EdDSA", keys[1].method.Alg())
	require.Equal(t, edPub, keys[1].public)
	// RFC 7638 thumbprint of an Ed25519 key, computed independently.
	want := thumbprintOf(t, `{"crv":"Ed25519","kty":"OKP","x":"`+b64.EncodeToString(edPub)+`"}`)
	require.Equal(t, want, keys[1].kid)

	keys, err = parseSigningKeys(pkcs1)
	require.NoError(t, err)
	require.Equal(t, keys[0].kid, mustKey(t, rsaKey).kid, "PKCS#1 and PKCS#8 give the same kid")

	for name, data := range map[string][]byte{
		"empty":       nil,
		"no pem":      []byte("hello"),
		"small rsa":   pkcs8(smallRSA),
		"certificate": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
		"corrupt":     pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
	} {
		_, err := parseSigningKeys(data)
		require.Error(t, err, name)
	}

	// Rotation: tokens of an old key still verify while it is listed second.
	dir := t.TempDir()
	oldPath := dir + "/old.pem"
	require.NoError(t, writeFile(oldPath, pkcs8(edPriv)))
	old := newHarness(t, ModeLocal, harnessConfig{mutate: func(o *Options) { o.Local.SigningKeyFile = oldPath }})
	r := old.do(newBrowser(t), http.MethodPost, "/api/auth/token", map[string]string{"username": "user", "password": DevPassword}, nil)
	var tok TokenResponse
	r.json(t, &tok)

	rotated := dir + "/rotated.pem"
	require.NoError(t, writeFile(rotated, append(pkcs8(rsaKey), pkcs8(edPriv)...)))
	h := newHarness(t, ModeLocal, harnessConfig{mutate: func(o *Options) {
		o.Local.SigningKeyFile = rotated
		o.PublicURL = old.url
	}})
	status, _ := h.probe(newBrowser(t), bearer(tok.AccessToken))
	require.Equal(t, http.StatusOK, status)
	r = h.do(newBrowser(t), http.MethodPost, "/api/auth/token", map[string]string{"username": "user", "password": DevPassword}, nil)
	r.json(t, &tok)
	require.Equal(t, "RS256", decodeJWTHeader(t, tok.AccessToken)["alg"])
	r = h.do(newBrowser(t), http.MethodGet, "/api/auth/jwks.json", nil, nil)
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	r.json(t, &set)
	require.Len(t, set.Keys, 2)
	require.Equal(t, "RSA", set.Keys[0]["kty"])
}

func thumbprintOf(t *testing.T, canonical string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(canonical))
	return b64.EncodeToString(sum[:])
}

func mustKey(t *testing.T, k crypto.Signer) *signingKey {
	t.Helper()
	sk, err := newSigningKey(k)
	require.NoError(t, err)
	return sk
}

func writeFile(path string, data []byte) error { return os.WriteFile(path, data, 0o600) }
