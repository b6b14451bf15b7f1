package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Signature errors returned by Verify.
var (
	// ErrSignatureHeader: the header is missing or not of the form t=<unix seconds>,v1=<hex>.
	ErrSignatureHeader = errors.New("webhook: missing or malformed signature header")
	// ErrSignatureMismatch: no v1 value is the HMAC of this body under this secret.
	ErrSignatureMismatch = errors.New("webhook: signature mismatch")
	// ErrSignatureTimestamp: the signature's time is further from now than the tolerance.
	ErrSignatureTimestamp = errors.New("webhook: signature timestamp outside tolerance")
)

// Sign returns the X-Chatd-Signature header value for body sent at t:
//
//	t=<unix seconds>,v1=<lower-case hex of HMAC-SHA256(secret, "<unix seconds>." + body)>
//
// The signed message is the decimal timestamp, a dot, and the exact request body bytes. Signing the
// time with the body lets a receiver refuse replays of an old request (see Verify).
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks an X-Chatd-Signature header against the raw request body, for receivers (and
// tests). It returns nil when a v1 value matches (several v1 values are accepted, so a receiver
// keeps working while a sender changes its secret) and the timestamp is within tolerance of now in
// either direction; tolerance ≤ 0 skips the time check. Errors: ErrSignatureHeader,
// ErrSignatureMismatch, ErrSignatureTimestamp. The comparison is constant-time.
//
// Verify the bytes as received, before decoding the JSON: re-encoding changes them.
//
//	func handler(w http.ResponseWriter, r *http.Request) {
//		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
//		if err != nil {
//			http.Error(w, "read error", http.StatusBadRequest)
//			return
//		}
//		sig := r.Header.Get("X-Chatd-Signature")
//		if err := webhook.Verify(secret, sig, body, time.Now(), 5*time.Minute); err != nil {
//			http.Error(w, "bad signature", http.StatusUnauthorized)
//			return
//		}
//		w.WriteHeader(http.StatusOK) // acknowledge first, then process (deduplicating: at-least-once)
//		go process(body)
//	}
//
// Elsewhere: split the header at commas into key=value pairs, compute HMAC-SHA256 with the secret as
// key over t + "." + body, hex-encode it, and compare it in constant time with each v1 value.
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrSignatureHeader
		}
		switch k {
		case "t":
			if ts != "" {
				return ErrSignatureHeader
			}
			ts = v
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != sha256.Size {
				return ErrSignatureHeader
			}
			sigs = append(sigs, b)
		}
		// Other keys (later schemes) are ignored.
	}
	if ts == "" || len(sigs) == 0 {
		return ErrSignatureHeader
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ErrSignatureHeader
	}
	want := mac(secret, ts, body)
	ok := false
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			ok = true
		}
	}
	if !ok {
		return ErrSignatureMismatch
	}
	if tolerance > 0 {
		age := now.Sub(time.Unix(sec, 0))
		if age > tolerance || age < -tolerance {
			return ErrSignatureTimestamp
		}
	}
	return nil
}
