package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"

	"github.com/golang-jwt/jwt/v5"
)

// signingKey is one key of the local JWTs.
type signingKey struct {
	kid     string // RFC 7638 thumbprint of the public key
	method  jwt.SigningMethod
	private crypto.Signer
	public  crypto.PublicKey
	// members are the public JWK members (kty, crv, x, y, n, e).
	members map[string]string
}

// jwk returns the public JWK as GET /api/auth/jwks.json serves it.
func (k *signingKey) jwk() map[string]string {
	out := maps.Clone(k.members)
	out["kid"] = k.kid
	out["alg"] = k.method.Alg()
	out["use"] = "sig"
	return out
}

var b64 = base64.RawURLEncoding

// newSigningKey wraps an Ed25519, RSA (2048 bits or more) or ECDSA P-256
// private key.
func newSigningKey(priv crypto.Signer) (*signingKey, error) {
	k := &signingKey{private: priv, public: priv.Public()}
	switch key := priv.(type) {
	case ed25519.PrivateKey:
		k.method = jwt.SigningMethodEdDSA
		k.members = map[string]string{"kty": "OKP", "crv": "Ed25519", "x": b64.EncodeToString(key.Public().(ed25519.PublicKey))}
	case *rsa.PrivateKey:
		if key.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits: at least 2048 are needed", key.N.BitLen())
		}
		k.method = jwt.SigningMethodRS256
		k.members = map[string]string{
			"kty": "RSA",
			"n":   b64.EncodeToString(key.N.Bytes()),
			"e":   b64.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
		}
	case *ecdsa.PrivateKey:
		if key.Curve != elliptic.P256() {
			return nil, errors.New("ECDSA keys must use the P-256 curve (ES256)")
		}
		pub, err := key.PublicKey.ECDH()
		if err != nil {
			return nil, fmt.Errorf("ECDSA key: %w", err)
		}
		xy := pub.Bytes()[1:] // uncompressed point: 0x04 || X || Y
		k.method = jwt.SigningMethodES256
		k.members = map[string]string{"kty": "EC", "crv": "P-256", "x": b64.EncodeToString(xy[:32]), "y": b64.EncodeToString(xy[32:])}
	default:
		return nil, fmt.Errorf("unsupported key type %T (want Ed25519, RSA or ECDSA P-256)", priv)
	}
	// RFC 7638: the SHA-256 of the required members, keys sorted, no
	// spaces, which is how encoding/json writes a map[string]string.
	canonical, err := json.Marshal(k.members)
	if err != nil {
		return nil, fmt.Errorf("key thumbprint: %w", err)
	}
	sum := sha256.Sum256(canonical)
	k.kid = b64.EncodeToString(sum[:])
	return k, nil
}

// generateSigningKey makes a new Ed25519 key.
func generateSigningKey() (*signingKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	return newSigningKey(priv)
}

// parseSigningKeys reads PEM private keys ("PRIVATE KEY" in PKCS#8, "RSA
// PRIVATE KEY", "EC PRIVATE KEY"), in order: the first signs, the others
// only verify (keys being rotated out).
func parseSigningKeys(data []byte) ([]*signingKey, error) {
	var keys []*signingKey
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			err = fmt.Errorf("PEM block %q is not a private key", block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", n, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("key %d: %T cannot sign", n, key)
		}
		k, err := newSigningKey(signer)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", n, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM private key found")
	}
	return keys, nil
}
