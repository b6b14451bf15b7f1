package regapi

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/chatd-dev/chatd/internal/keyedlimit"
	"github.com/chatd-dev/chatd/phone"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
	"github.com/chatd-dev/chatd/server/store"
)

// Verification codes.
const (
	CodeDigits = 6
	saltSize   = 16
)

func (h *Handler) handleCode(w http.ResponseWriter, r *http.Request) {
	if e := h.codeRequest(w, r); e != nil {
		writeAPIError(w, e)
	}
}

func (h *Handler) codeRequest(w http.ResponseWriter, r *http.Request) *apiError {
	ctx := r.Context()
	now := h.cfg.Now()
	if e := limited(h.codeAddr, keyedlimit.ClientKey(r.RemoteAddr), now, "code requests from your address"); e != nil {
		return e
	}
	var req regtypes.CodeRequest
	if e := decodeJSON(w, r, h.cfg.MaxBodyBytes, &req); e != nil {
		return e
	}
	num, e := normalizePhone(req.Phone)
	if e != nil {
		return e
	}
	method := strings.ToLower(strings.TrimSpace(req.Method))
	if method == "" {
		method = regtypes.MethodSMS
	}
	if method != regtypes.MethodSMS && method != regtypes.MethodVoice {
		return newAPIError(http.StatusBadRequest, regtypes.CodeInvalidMethod,
			"The method must be %q or %q.", regtypes.MethodSMS, regtypes.MethodVoice)
	}

	var business bool
	var vname string
	if strings.TrimSpace(req.BusinessCert) != "" {
		cert, e := h.verifyCert(req.BusinessCert, now)
		if e != nil {
			return e
		}
		if cert.Phone != num {
			return newAPIError(http.StatusBadRequest, regtypes.CodeCertPhoneMismatch,
				"The business certificate is for +%s, not +%s; request the code for the certificate's number or use that number's certificate.", cert.Phone, num)
		}
		business, vname = true, cert.DisplayName
	} else {
		// A business account stays one: registering its number again (a new device) needs the
		// certificate, else the verified name would silently be lost.
		switch acct, err := h.cfg.Store.Account(ctx, num); {
		case err == nil && acct.Business:
			return newAPIError(http.StatusForbidden, regtypes.CodeBusinessCertRequired,
				"+%s is registered as a business; request the code with its business certificate.", num)
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return h.internal(ctx, "look up account", err)
		}
	}

	if e := limited(h.codeNumber, num, now, "code requests for this number"); e != nil {
		return e
	}

	code, err := newCode()
	if err != nil {
		return h.internal(ctx, "generate verification code", err)
	}
	hash, err := hashCode(num, code)
	if err != nil {
		return h.internal(ctx, "hash verification code", err)
	}
	err = h.cfg.Store.PutCode(ctx, store.Code{
		Phone:       num,
		Hash:        hash,
		Method:      method,
		Business:    business,
		DisplayName: vname,
		ExpiresAt:   now.Add(h.cfg.CodeTTL),
		CreatedAt:   now,
	})
	if err != nil {
		return h.internal(ctx, "store verification code", err)
	}
	if err := h.cfg.Sender.SendCode(ctx, num, code, method); err != nil {
		h.log.WarnContext(ctx, "regapi: sending verification code failed", "phone", num, "method", method, "err", err)
		// The code never reached anyone: drop it so that verify answers
		// no_pending_code rather than wrong_code.
		if err := h.cfg.Store.DeleteCode(context.WithoutCancel(ctx), num); err != nil {
			h.log.WarnContext(ctx, "regapi: deleting unsent code failed", "phone", num, "err", err)
		}
		return newAPIError(http.StatusBadGateway, regtypes.CodeSendFailed,
			"The verification code could not be sent by %s; check the number and try again in a minute.", method)
	}
	h.log.InfoContext(ctx, "verification code sent", "phone", num, "method", method, "business", business)
	writeJSON(w, http.StatusAccepted, regtypes.CodeResponse{
		Status:    "sent",
		Phone:     num,
		Method:    method,
		ExpiresIn: int(h.cfg.CodeTTL.Round(time.Second) / time.Second),
		VName:     vname,
	})
	return nil
}

func (h *Handler) verifyCert(s string, now time.Time) (pki.BusinessCert, *apiError) {
	if len(h.cfg.OperatorKey) == 0 {
		return pki.BusinessCert{}, newAPIError(http.StatusForbidden, regtypes.CodeBusinessDisabled,
			"This server does not register businesses (it has no operator key); leave out business_cert to register a personal account.")
	}
	cert, err := pki.VerifyBusinessCert(s, h.cfg.OperatorKey, now)
	switch {
	case err == nil:
		return cert, nil
	case errors.Is(err, pki.ErrCertExpired):
		return cert, newAPIError(http.StatusBadRequest, regtypes.CodeCertExpired,
			"The business certificate has expired; ask the server operator for a new one.")
	case errors.Is(err, pki.ErrCertNotYetValid):
		return cert, newAPIError(http.StatusBadRequest, regtypes.CodeCertNotYetValid,
			"The business certificate is not valid yet; check the clocks or wait until its start time.")
	case errors.Is(err, pki.ErrCertSignature):
		return cert, newAPIError(http.StatusBadRequest, regtypes.CodeInvalidCert,
			"The business certificate was not issued by this server's operator, or it was altered; paste it exactly as issued or ask the operator for one.")
	default:
		return cert, newAPIError(http.StatusBadRequest, regtypes.CodeInvalidCert,
			"The business certificate is malformed; paste the whole certificate exactly as issued.")
	}
}

func (h *Handler) handleVerify(w http.ResponseWriter, r *http.Request) {
	if e := h.verify(w, r); e != nil {
		writeAPIError(w, e)
	}
}

func (h *Handler) verify(w http.ResponseWriter, r *http.Request) *apiError {
	ctx := r.Context()
	now := h.cfg.Now()
	if e := limited(h.verifyAddr, keyedlimit.ClientKey(r.RemoteAddr), now, "verification attempts from your address"); e != nil {
		return e
	}
	var req regtypes.VerifyRequest
	if e := decodeJSON(w, r, h.cfg.MaxBodyBytes, &req); e != nil {
		return e
	}
	num, e := normalizePhone(req.Phone)
	if e != nil {
		return e
	}
	code := strings.NewReplacer(" ", "", "-", "").Replace(strings.TrimSpace(req.Code))
	if len(code) != CodeDigits || !digitsOnly(code) {
		return newAPIError(http.StatusBadRequest, regtypes.CodeInvalidCode,
			"The code must be the %d digits that were sent to you.", CodeDigits)
	}
	devKey, err := pki.ParseStaticPublic(req.DevicePublicKey)
	if err != nil {
		return newAPIError(http.StatusBadRequest, regtypes.CodeInvalidDeviceKey,
			"device_public_key must be the standard base64 encoding of a 32-byte X25519 public key.")
	}
	if e := limited(h.verifyNumber, num, now, "verification attempts for this number"); e != nil {
		return e
	}

	pending, err := h.cfg.Store.GetCode(ctx, num)
	if errors.Is(err, store.ErrNotFound) {
		return errNoPendingCode()
	}
	if err != nil {
		return h.internal(ctx, "read verification code", err)
	}
	if !now.Before(pending.ExpiresAt) {
		h.deleteCode(ctx, num)
		return newAPIError(http.StatusGone, regtypes.CodeCodeExpired,
			"The verification code has expired; request a new one with POST /v1/register/code.")
	}
	// Count the attempt before comparing: IncCodeAttempts is atomic, so
	// parallel guesses cannot get more than MaxVerifyAttempts comparisons.
	n, err := h.cfg.Store.IncCodeAttempts(ctx, num)
	if errors.Is(err, store.ErrNotFound) { // deleted meanwhile by a concurrent request
		return errNoPendingCode()
	}
	if err != nil {
		return h.internal(ctx, "count verification attempt", err)
	}
	if n > h.cfg.MaxVerifyAttempts {
		h.deleteCode(ctx, num)
		return errTooManyAttempts()
	}
	if !codeMatches(pending.Hash, num, code) {
		left := h.cfg.MaxVerifyAttempts - n
		if left <= 0 {
			h.deleteCode(ctx, num)
			h.log.InfoContext(ctx, "verification code deleted after too many wrong attempts", "phone", num)
			return errTooManyAttempts()
		}
		attempts := "attempts"
		if left == 1 {
			attempts = "attempt"
		}
		return newAPIError(http.StatusUnauthorized, regtypes.CodeWrongCode,
			"The code is wrong; check it and try again (%d %s left before the code is cancelled).", left, attempts)
	}

	acct := store.Account{Phone: num, Business: pending.Business, DevicePub: devKey[:], CreatedAt: now}
	if pending.Business {
		acct.DisplayName = pending.DisplayName
	}
	acct, err = h.cfg.Store.RegisterDevice(ctx, acct)
	if errors.Is(err, store.ErrDeviceInUse) {
		return newAPIError(http.StatusConflict, regtypes.CodeDeviceInUse,
			"This device key is already registered to another account; generate a new device key and verify again with the same code.")
	}
	if err != nil {
		return h.internal(ctx, "register device", err)
	}
	h.deleteCode(ctx, num)
	if h.cfg.OnDeviceRegistered != nil {
		h.cfg.OnDeviceRegistered(num, devKey)
	}
	h.log.InfoContext(ctx, "device registered", "phone", num, "business", acct.Business, "device_key", pki.FormatPublic(devKey))
	writeJSON(w, http.StatusOK, regtypes.VerifyResponse{
		Account: regtypes.Account{
			Phone:       acct.Phone,
			Business:    acct.Business,
			DisplayName: acct.DisplayName,
		},
		ServerStaticKey: h.serverKey,
		Config:          h.clientConfig(),
	})
	return nil
}

func errNoPendingCode() *apiError {
	return newAPIError(http.StatusNotFound, regtypes.CodeNoPendingCode,
		"No verification code is pending for this number; request one with POST /v1/register/code.")
}

func errTooManyAttempts() *apiError {
	return newAPIError(http.StatusTooManyRequests, regtypes.CodeTooManyAttempts,
		"Too many wrong codes; this code is cancelled. Request a new one with POST /v1/register/code.")
}

func (h *Handler) deleteCode(ctx context.Context, num string) {
	if err := h.cfg.Store.DeleteCode(context.WithoutCancel(ctx), num); err != nil {
		h.log.WarnContext(ctx, "regapi: deleting verification code failed", "phone", num, "err", err)
	}
}

// internal logs err and returns a 500 that does not reveal it.
func (h *Handler) internal(ctx context.Context, what string, err error) *apiError {
	h.log.ErrorContext(ctx, "regapi: "+what, "err", err)
	return newAPIError(http.StatusInternalServerError, regtypes.CodeInternal,
		"The server could not complete the request; try again later.")
}

func normalizePhone(s string) (string, *apiError) {
	num, err := phone.Normalize(s)
	if err == nil {
		return num, nil
	}
	reason := "is not valid; send it in international format, e.g. +15551234567"
	var ie *phone.InvalidError
	if errors.As(err, &ie) {
		reason = ie.Reason
	}
	return "", newAPIError(http.StatusBadRequest, regtypes.CodeInvalidPhone, "The phone number %s.", reason)
}

// limited takes a token from k for key and returns a rate_limited error with
// Retry-After when there is none.
func limited(k *keyedlimit.Limiter, key string, now time.Time, what string) *apiError {
	ok, wait := k.Allow(key, now)
	if ok {
		return nil
	}
	secs := keyedlimit.RetryAfterSeconds(wait)
	e := newAPIError(http.StatusTooManyRequests, regtypes.CodeRateLimited,
		"Too many %s; try again in %d seconds.", what, secs)
	e.header = http.Header{"Retry-After": {strconv.Itoa(secs)}}
	return e
}

// newCode returns CodeDigits uniformly random decimal digits.
func newCode() (string, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%06d", n), nil
}

// hashCode returns salt || HMAC-SHA256(salt, phone || 0 || code) with a new
// random salt. Binding the phone makes a hash useless for any other number.
func hashCode(num, code string) ([]byte, error) {
	salt := make([]byte, saltSize, saltSize+sha256.Size)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	return append(salt, codeMAC(salt, num, code)...), nil
}

func codeMAC(salt []byte, num, code string) []byte {
	m := hmac.New(sha256.New, salt)
	m.Write([]byte(num))
	m.Write([]byte{0})
	m.Write([]byte(code))
	return m.Sum(nil)
}

// codeMatches compares in constant time.
func codeMatches(stored []byte, num, code string) bool {
	if len(stored) != saltSize+sha256.Size {
		return false
	}
	return hmac.Equal(stored[saltSize:], codeMAC(stored[:saltSize], num, code))
}
