// Package sealing encrypts secrets that must travel through the event log,
// such as CML licence tokens, with AES-256-GCM. The log keeps only the sealed
// form; the job that needs the secret opens it.
package sealing

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/cmlcloud/cml-cloud-manager/application"
)

// KeySize is the key length in bytes (AES-256).
const KeySize = 32

// prefix versions the sealed format.
const prefix = "v1:"

// ErrOpen is returned when a sealed value cannot be opened: it was sealed
// with another key, or it was tampered with.
var ErrOpen = errors.New("cannot open sealed value")

// Sealer seals and opens secrets with one key.
type Sealer struct {
	aead cipher.AEAD
}

var _ application.TokenSealer = (*Sealer)(nil)

// New returns a Sealer for a 32-byte key.
func New(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("sealing key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("sealing key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("sealing key: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// ParseKey decodes a base64 (standard or URL alphabet, padded or not) key.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("key decodes to %d bytes; want %d", len(b), KeySize)
			}
			return b, nil
		}
	}
	return nil, errors.New("key is not base64")
}

// RandomKey returns a new random key.
func RandomKey() []byte {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		panic("sealing: no randomness: " + err.Error())
	}
	return k
}

// Seal encrypts plaintext with a random nonce.
func (s *Sealer) Seal(plaintext string) (string, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	out := s.aead.Seal(nonce, nonce, []byte(plaintext), []byte(prefix))
	return prefix + base64.RawURLEncoding.EncodeToString(out), nil
}

// Open decrypts a value made by Seal with the same key.
func (s *Sealer) Open(sealed string) (string, error) {
	body, ok := strings.CutPrefix(sealed, prefix)
	if !ok {
		return "", fmt.Errorf("%w: unknown format", ErrOpen)
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return "", fmt.Errorf("%w: malformed", ErrOpen)
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte(prefix))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrOpen, err)
	}
	return string(plain), nil
}

// Fingerprint identifies a secret without revealing it: the first 12 hex
// digits of its SHA-256, stable across key changes.
func (s *Sealer) Fingerprint(plaintext string) string {
	sum := sha256.Sum256([]byte(plaintext))
	return "sha256:" + hex.EncodeToString(sum[:6])
}
