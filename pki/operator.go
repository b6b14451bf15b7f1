package pki

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strings"
)

// LoadOrCreateOperatorKey loads the operator's Ed25519 signing key from path
// (one PEM "PRIVATE KEY" block, PKCS#8), or, when path does not exist,
// generates one, writes it with mode 0600 and reports created. A file that
// exists but does not hold an Ed25519 PKCS#8 key is an error wrapping
// [ErrKeyMalformed]; it is never overwritten.
func LoadOrCreateOperatorKey(path string) (ed25519.PrivateKey, bool, error) {
	key, created, err := loadOrCreate(path, parseOperatorKey, func() (ed25519.PrivateKey, []byte, error) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, nil, fmt.Errorf("generate: %w", err)
		}
		encoded, err := encodePKCS8(priv)
		if err != nil {
			return nil, nil, err
		}
		return priv, encoded, nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("pki: operator key: %w", err)
	}
	return key, created, nil
}

func parseOperatorKey(data []byte) (ed25519.PrivateKey, error) {
	key, err := parsePKCS8(data)
	if err != nil {
		return nil, err
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: key is a %T, expected an Ed25519 key", ErrKeyMalformed, key)
	}
	return priv, nil
}

func encodePKCS8(key any) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func parsePKCS8(data []byte) (any, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block found; expected \"PRIVATE KEY\"", ErrKeyMalformed)
	}
	if block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: PEM block type is %q, expected \"PRIVATE KEY\" (PKCS#8)", ErrKeyMalformed, block.Type)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyMalformed, err)
	}
	return key, nil
}

// ParseOperatorPublic parses an operator public key as /v1/config publishes it (operator_key): an
// Ed25519 public key in standard base64. It fails with an error wrapping [ErrKeyMalformed] otherwise.
func ParseOperatorPublic(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("%w: operator_key is not standard base64: %v", ErrKeyMalformed, err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: operator_key has %d bytes, want an Ed25519 public key of %d", ErrKeyMalformed, len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}
