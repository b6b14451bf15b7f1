package pki

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// StaticKeyPEMType is the PEM block type of a static key file.
const StaticKeyPEMType = "CHATD X25519 PRIVATE KEY"

// StaticKey is an X25519 key pair: the long-term key with which a chatd
// server (or a device) authenticates in the Noise handshake.
type StaticKey struct {
	Private [32]byte
	Public  [32]byte
}

// String returns the public key in the format of [FormatPublic]; the private
// key never appears in logs or %v output.
func (k StaticKey) String() string { return FormatPublic(k.Public) }

// GoString is like String so that %#v does not print the private key either.
func (k StaticKey) GoString() string { return "pki.StaticKey{Public: " + FormatPublic(k.Public) + "}" }

// GenerateStaticKey returns a new random X25519 key pair.
func GenerateStaticKey() (StaticKey, error) {
	var k StaticKey
	if _, err := rand.Read(k.Private[:]); err != nil {
		return StaticKey{}, fmt.Errorf("pki: generate static key: %w", err)
	}
	return StaticKeyFromPrivate(k.Private)
}

// StaticKeyFromPrivate returns the key pair of an X25519 private key.
func StaticKeyFromPrivate(priv [32]byte) (StaticKey, error) {
	pub, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		return StaticKey{}, fmt.Errorf("pki: derive static public key: %w", err)
	}
	k := StaticKey{Private: priv}
	copy(k.Public[:], pub)
	return k, nil
}

// LoadOrCreateStaticKey loads the static key stored at path, or, when path
// does not exist, generates one, writes it (mode 0600, parent directories
// created with 0700) and reports created. The format is described in the
// package documentation. A file that exists but is not a valid key is an
// error wrapping [ErrKeyMalformed]; it is never overwritten.
func LoadOrCreateStaticKey(path string) (k StaticKey, created bool, err error) {
	k, created, err = loadOrCreate(path, parseStaticKeyFile, func() (StaticKey, []byte, error) {
		k, err := GenerateStaticKey()
		if err != nil {
			return StaticKey{}, nil, err
		}
		return k, pem.EncodeToMemory(&pem.Block{Type: StaticKeyPEMType, Bytes: k.Private[:]}), nil
	})
	if err != nil {
		return StaticKey{}, false, fmt.Errorf("pki: static key: %w", err)
	}
	return k, created, nil
}

func parseStaticKeyFile(data []byte) (StaticKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return StaticKey{}, fmt.Errorf("%w: no PEM block found; expected %q", ErrKeyMalformed, StaticKeyPEMType)
	}
	if block.Type != StaticKeyPEMType {
		return StaticKey{}, fmt.Errorf("%w: PEM block type is %q, expected %q", ErrKeyMalformed, block.Type, StaticKeyPEMType)
	}
	if len(block.Bytes) != 32 {
		return StaticKey{}, fmt.Errorf("%w: private key has %d bytes, expected 32", ErrKeyMalformed, len(block.Bytes))
	}
	return StaticKeyFromPrivate([32]byte(block.Bytes))
}

// FormatPublic returns the standard base64 encoding (with padding) of a
// public key: the form used to pin server keys in configs and to show them to
// people.
func FormatPublic(pub [32]byte) string {
	return base64.StdEncoding.EncodeToString(pub[:])
}

// ParseStaticPublic parses a public key written by [FormatPublic]. Surrounding
// white space is ignored. It fails with an error wrapping [ErrKeyMalformed]
// if s is not standard base64 of exactly 32 bytes, or if it is the all-zero
// key (a low-order point that would make every X25519 result zero).
func ParseStaticPublic(s string) ([32]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return [32]byte{}, fmt.Errorf("%w: public key is not standard base64: %v", ErrKeyMalformed, err)
	}
	if len(b) != 32 {
		return [32]byte{}, fmt.Errorf("%w: public key has %d bytes, expected 32", ErrKeyMalformed, len(b))
	}
	pub := [32]byte(b)
	if pub == ([32]byte{}) {
		return [32]byte{}, fmt.Errorf("%w: public key is all zeros", ErrKeyMalformed)
	}
	return pub, nil
}
