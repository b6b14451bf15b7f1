package pki

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/chatd-dev/chatd/phone"
)

// Business certificate limits and defaults.
const (
	// BusinessCertVersion is the "v" field of the payloads this package
	// writes and the only version it accepts.
	BusinessCertVersion = 1
	// DefaultBusinessCertValidity is used by IssueBusinessCert when
	// ExpiresAt is zero.
	DefaultBusinessCertValidity = 365 * 24 * time.Hour
	// CertClockSkew is how far before IssuedAt a certificate is already
	// accepted, so that an operator clock slightly ahead of the verifier's
	// does not reject a certificate issued a moment ago.
	CertClockSkew = 5 * time.Minute
	// MaxDisplayNameLen is the maximum display name length in runes.
	MaxDisplayNameLen = 128
	// MaxSerialLen is the maximum serial length in bytes.
	MaxSerialLen = 64
	// MaxBusinessCertLen is the maximum length of an encoded certificate.
	MaxBusinessCertLen = 2048
)

// BusinessCert is an operator's statement that the business phone number
// Phone is entitled to the verified display name DisplayName between IssuedAt
// and ExpiresAt.
//
// # Encoding
//
// A certificate is a single line of two base64url (no padding) parts joined
// by a dot:
//
//	base64url(payload) "." base64url(ed25519 signature over the payload bytes)
//
// The payload is JSON with exactly these fields, in this order, no white
// space (as Go's encoding/json writes the struct):
//
//	{"v":1,"phone":"15551234567","display_name":"Acme Ltd","serial":"…","issued_at":1767225600,"expires_at":1798761600}
//
// phone is normalized E.164 digits without '+'; times are Unix seconds. The
// signature covers the payload bytes exactly as transmitted, so a verifier
// never re-encodes anything.
type BusinessCert struct {
	Phone       string
	DisplayName string
	// Serial identifies the certificate (for revocation lists and logs).
	// IssueBusinessCert fills in 16 random bytes in hex when it is empty.
	Serial    string
	IssuedAt  time.Time // IssueBusinessCert uses time.Now() when zero
	ExpiresAt time.Time // IssueBusinessCert uses IssuedAt + DefaultBusinessCertValidity when zero
}

type certPayload struct {
	V           int    `json:"v"`
	Phone       string `json:"phone"`
	DisplayName string `json:"display_name"`
	Serial      string `json:"serial"`
	IssuedAt    int64  `json:"issued_at"`
	ExpiresAt   int64  `json:"expires_at"`
}

// IssueBusinessCert signs c with the operator key and returns the encoded
// certificate. The phone number is normalized with [phone.Normalize]; the
// display name is trimmed and must be non-empty, at most MaxDisplayNameLen
// runes and free of control characters; times are truncated to seconds and
// ExpiresAt must be after IssuedAt. An invalid c is an error wrapping
// [ErrCertMalformed]; a key of the wrong size wraps [ErrKeyMalformed].
func IssueBusinessCert(key ed25519.PrivateKey, c BusinessCert) (string, error) {
	if len(key) != ed25519.PrivateKeySize {
		return "", fmt.Errorf("pki: issue business certificate: %w: operator key has %d bytes, expected %d", ErrKeyMalformed, len(key), ed25519.PrivateKeySize)
	}
	if c.Serial == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("pki: issue business certificate: serial: %w", err)
		}
		c.Serial = hex.EncodeToString(b[:])
	}
	if c.IssuedAt.IsZero() {
		c.IssuedAt = time.Now()
	}
	if c.ExpiresAt.IsZero() {
		c.ExpiresAt = c.IssuedAt.Add(DefaultBusinessCertValidity)
	}
	p := certPayload{
		V:           BusinessCertVersion,
		Phone:       c.Phone,
		DisplayName: strings.TrimSpace(c.DisplayName),
		Serial:      c.Serial,
		IssuedAt:    c.IssuedAt.Unix(),
		ExpiresAt:   c.ExpiresAt.Unix(),
	}
	norm, err := phone.Normalize(p.Phone)
	if err != nil {
		return "", fmt.Errorf("pki: issue business certificate: %w: %w", ErrCertMalformed, err)
	}
	p.Phone = norm
	if err := p.validate(); err != nil {
		return "", fmt.Errorf("pki: issue business certificate: %w", err)
	}
	payload, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("pki: issue business certificate: %w", err)
	}
	sig := ed25519.Sign(key, payload)
	return base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// VerifyBusinessCert checks s, an encoded certificate, against the operator
// public key pub at time now and returns its contents. White space anywhere
// in s (line breaks from copy and paste) is ignored.
//
// Errors wrap, in the order checked: [ErrCertMalformed] (not a certificate),
// [ErrKeyMalformed] (pub is not an Ed25519 public key), [ErrCertSignature]
// (altered, forged, or signed by another operator), [ErrCertMalformed] (a
// signed payload with unusable content), [ErrCertNotYetValid] and
// [ErrCertExpired].
func VerifyBusinessCert(s string, pub ed25519.PublicKey, now time.Time) (BusinessCert, error) {
	c, err := verifyBusinessCert(s, pub, now)
	if err != nil {
		return BusinessCert{}, fmt.Errorf("pki: verify business certificate: %w", err)
	}
	return c, nil
}

func verifyBusinessCert(s string, pub ed25519.PublicKey, now time.Time) (BusinessCert, error) {
	s = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s)
	if s == "" {
		return BusinessCert{}, fmt.Errorf("%w: empty", ErrCertMalformed)
	}
	if len(s) > MaxBusinessCertLen {
		return BusinessCert{}, fmt.Errorf("%w: %d characters, more than the maximum of %d", ErrCertMalformed, len(s), MaxBusinessCertLen)
	}
	payloadB64, sigB64, ok := strings.Cut(s, ".")
	if !ok || strings.Contains(sigB64, ".") {
		return BusinessCert{}, fmt.Errorf("%w: expected two parts separated by one '.'", ErrCertMalformed)
	}
	payload, err := base64.RawURLEncoding.DecodeString(payloadB64)
	if err != nil {
		return BusinessCert{}, fmt.Errorf("%w: payload is not base64url: %v", ErrCertMalformed, err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(sigB64)
	if err != nil {
		return BusinessCert{}, fmt.Errorf("%w: signature is not base64url: %v", ErrCertMalformed, err)
	}
	if len(sig) != ed25519.SignatureSize {
		return BusinessCert{}, fmt.Errorf("%w: signature has %d bytes, expected %d", ErrCertMalformed, len(sig), ed25519.SignatureSize)
	}
	if len(pub) != ed25519.PublicKeySize {
		return BusinessCert{}, fmt.Errorf("%w: operator public key has %d bytes, expected %d", ErrKeyMalformed, len(pub), ed25519.PublicKeySize)
	}
	if !ed25519.Verify(pub, payload, sig) {
		return BusinessCert{}, ErrCertSignature
	}

	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	var p certPayload
	if err := dec.Decode(&p); err != nil {
		return BusinessCert{}, fmt.Errorf("%w: payload: %v", ErrCertMalformed, err)
	}
	if dec.More() {
		return BusinessCert{}, fmt.Errorf("%w: payload has trailing data", ErrCertMalformed)
	}
	if p.V != BusinessCertVersion {
		return BusinessCert{}, fmt.Errorf("%w: version %d is not supported (expected %d)", ErrCertMalformed, p.V, BusinessCertVersion)
	}
	if norm, err := phone.Normalize(p.Phone); err != nil || norm != p.Phone {
		return BusinessCert{}, fmt.Errorf("%w: phone %q is not a normalized number", ErrCertMalformed, p.Phone)
	}
	if err := p.validate(); err != nil {
		return BusinessCert{}, err
	}
	c := BusinessCert{
		Phone:       p.Phone,
		DisplayName: p.DisplayName,
		Serial:      p.Serial,
		IssuedAt:    time.Unix(p.IssuedAt, 0).UTC(),
		ExpiresAt:   time.Unix(p.ExpiresAt, 0).UTC(),
	}
	if now.Add(CertClockSkew).Before(c.IssuedAt) {
		return BusinessCert{}, fmt.Errorf("%w: valid from %s", ErrCertNotYetValid, c.IssuedAt.Format(time.RFC3339))
	}
	if !now.Before(c.ExpiresAt) {
		return BusinessCert{}, fmt.Errorf("%w: expired at %s", ErrCertExpired, c.ExpiresAt.Format(time.RFC3339))
	}
	return c, nil
}

// validate checks everything but the phone number.
func (p certPayload) validate() error {
	name := p.DisplayName
	switch {
	case name == "":
		return fmt.Errorf("%w: display name is empty", ErrCertMalformed)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: display name is not valid UTF-8", ErrCertMalformed)
	case utf8.RuneCountInString(name) > MaxDisplayNameLen:
		return fmt.Errorf("%w: display name has %d characters, more than the maximum of %d", ErrCertMalformed, utf8.RuneCountInString(name), MaxDisplayNameLen)
	case strings.TrimSpace(name) != name:
		return fmt.Errorf("%w: display name has leading or trailing white space", ErrCertMalformed)
	case strings.ContainsFunc(name, unicode.IsControl):
		return fmt.Errorf("%w: display name contains control characters", ErrCertMalformed)
	}
	if p.Serial == "" || len(p.Serial) > MaxSerialLen {
		return fmt.Errorf("%w: serial must have 1 to %d characters", ErrCertMalformed, MaxSerialLen)
	}
	for _, r := range p.Serial {
		if r <= ' ' || r > '~' {
			return fmt.Errorf("%w: serial must be printable ASCII without spaces", ErrCertMalformed)
		}
	}
	if p.ExpiresAt <= p.IssuedAt {
		return fmt.Errorf("%w: expires_at must be after issued_at", ErrCertMalformed)
	}
	return nil
}
