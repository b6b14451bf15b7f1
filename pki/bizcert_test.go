package pki

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

var certTime = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newOperator(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func TestBusinessCertRoundTrip(t *testing.T) {
	pub, priv := newOperator(t)
	s, err := IssueBusinessCert(priv, BusinessCert{
		Phone:       "+1 (555) 123-4567",
		DisplayName: "  Acme & Sons  ",
		IssuedAt:    certTime,
		ExpiresAt:   certTime.AddDate(1, 0, 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(s, " \n=+/") || strings.Count(s, ".") != 1 {
		t.Fatalf("encoding is not compact base64url.base64url: %q", s)
	}
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(s, ".")[0])
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil || m["v"] != float64(1) {
		t.Fatalf("payload %s: v=%v err=%v", payload, m["v"], err)
	}

	// Wrapped over lines as when pasted from an e-mail.
	wrapped := s[:20] + "\n  " + s[20:]
	c, err := VerifyBusinessCert(wrapped, pub, certTime.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if c.Phone != "15551234567" || c.DisplayName != "Acme & Sons" || len(c.Serial) != 32 ||
		!c.IssuedAt.Equal(certTime) || !c.ExpiresAt.Equal(certTime.AddDate(1, 0, 0)) {
		t.Fatalf("got %+v", c)
	}

	// Defaults: IssuedAt now, one year validity.
	s, err = IssueBusinessCert(priv, BusinessCert{Phone: "15551234567", DisplayName: "Acme", Serial: "s-1"})
	if err != nil {
		t.Fatal(err)
	}
	c, err = VerifyBusinessCert(s, pub, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if c.Serial != "s-1" || c.ExpiresAt.Sub(c.IssuedAt) != DefaultBusinessCertValidity {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestVerifyBusinessCertErrors(t *testing.T) {
	pub, priv := newOperator(t)
	_, otherPriv := newOperator(t)
	valid := BusinessCert{Phone: "15551234567", DisplayName: "Acme", IssuedAt: certTime, ExpiresAt: certTime.Add(24 * time.Hour)}
	good := mustIssue(t, priv, valid)
	payload, sig, _ := strings.Cut(good, ".")

	flipped := func() string {
		p, _ := base64.RawURLEncoding.DecodeString(payload)
		p[len(p)/2] ^= 0x01
		return base64.RawURLEncoding.EncodeToString(p) + "." + sig
	}()
	// A correctly signed payload whose content is unusable.
	signRaw := func(raw string) string {
		return base64.RawURLEncoding.EncodeToString([]byte(raw)) + "." +
			base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(raw)))
	}

	tests := []struct {
		name string
		cert string
		pub  ed25519.PublicKey
		now  time.Time
		want error
	}{
		{"valid", good, pub, certTime, nil},
		{"valid within clock skew", good, pub, certTime.Add(-CertClockSkew), nil},
		{"empty", "", pub, certTime, ErrCertMalformed},
		{"no dot", payload, pub, certTime, ErrCertMalformed},
		{"two dots", good + ".x", pub, certTime, ErrCertMalformed},
		{"bad base64", "!!." + sig, pub, certTime, ErrCertMalformed},
		{"short signature", payload + "." + sig[:20], pub, certTime, ErrCertMalformed},
		{"too long", strings.Repeat("a", MaxBusinessCertLen) + "." + sig, pub, certTime, ErrCertMalformed},
		{"payload byte flipped", flipped, pub, certTime, ErrCertSignature},
		{"signed by another operator", mustIssue(t, otherPriv, valid), pub, certTime, ErrCertSignature},
		{"signature of another cert", payload + "." + strings.Split(mustIssue(t, priv, BusinessCert{Phone: "15551234568", DisplayName: "Acme", IssuedAt: certTime, ExpiresAt: certTime.Add(time.Hour)}), ".")[1], pub, certTime, ErrCertSignature},
		{"bad operator key", good, pub[:16], certTime, ErrKeyMalformed},
		{"expired", good, pub, valid.ExpiresAt, ErrCertExpired},
		{"not yet valid", good, pub, certTime.Add(-CertClockSkew - time.Second), ErrCertNotYetValid},
		{"signed junk", signRaw("hello"), pub, certTime, ErrCertMalformed},
		{"version 2", signRaw(`{"v":2,"phone":"15551234567","display_name":"Acme","serial":"1","issued_at":1,"expires_at":99999999999}`), pub, certTime, ErrCertMalformed},
		{"unknown field", signRaw(`{"v":1,"phone":"15551234567","display_name":"Acme","serial":"1","issued_at":1,"expires_at":99999999999,"admin":true}`), pub, certTime, ErrCertMalformed},
		{"phone not normalized", signRaw(`{"v":1,"phone":"+1 555 123 4567","display_name":"Acme","serial":"1","issued_at":1,"expires_at":99999999999}`), pub, certTime, ErrCertMalformed},
		{"empty display name", signRaw(`{"v":1,"phone":"15551234567","display_name":"","serial":"1","issued_at":1,"expires_at":99999999999}`), pub, certTime, ErrCertMalformed},
		{"trailing data", signRaw(`{"v":1,"phone":"15551234567","display_name":"A","serial":"1","issued_at":1,"expires_at":99999999999} {}`), pub, certTime, ErrCertMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := VerifyBusinessCert(tt.cert, tt.pub, tt.now)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if c != (BusinessCert{}) {
				t.Fatalf("returned %+v together with an error", c)
			}
		})
	}
}

func TestIssueBusinessCertErrors(t *testing.T) {
	_, priv := newOperator(t)
	tests := []struct {
		name string
		key  ed25519.PrivateKey
		c    BusinessCert
		want error
	}{
		{"bad key", priv[:10], BusinessCert{Phone: "15551234567", DisplayName: "Acme"}, ErrKeyMalformed},
		{"bad phone", priv, BusinessCert{Phone: "12", DisplayName: "Acme"}, ErrCertMalformed},
		{"empty display name", priv, BusinessCert{Phone: "15551234567", DisplayName: "   "}, ErrCertMalformed},
		{"control char", priv, BusinessCert{Phone: "15551234567", DisplayName: "Ac\x00me"}, ErrCertMalformed},
		{"long display name", priv, BusinessCert{Phone: "15551234567", DisplayName: strings.Repeat("é", MaxDisplayNameLen+1)}, ErrCertMalformed},
		{"serial with space", priv, BusinessCert{Phone: "15551234567", DisplayName: "Acme", Serial: "a b"}, ErrCertMalformed},
		{"expires before issued", priv, BusinessCert{Phone: "15551234567", DisplayName: "Acme", IssuedAt: certTime, ExpiresAt: certTime.Add(-time.Second)}, ErrCertMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := IssueBusinessCert(tt.key, tt.c); !errors.Is(err, tt.want) || s != "" {
				t.Fatalf("got %q, err = %v, want %v", s, err, tt.want)
			}
		})
	}
}

func mustIssue(t *testing.T, key ed25519.PrivateKey, c BusinessCert) string {
	t.Helper()
	s, err := IssueBusinessCert(key, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
