package api

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/chatd-dev/chatd/bizapi/gateway"
	"github.com/chatd-dev/chatd/phone"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
)

type accountRequest struct {
	CC          string `json:"cc"`
	PhoneNumber string `json:"phone_number"`
	Method      string `json:"method"`
	Cert        string `json:"cert"`
	PIN         string `json:"pin"`
}

type accountResponse struct {
	Account []accountVName `json:"account"`
}

type accountVName struct {
	VName string `json:"vname"`
}

// register: POST /v1/account asks chatd for a verification code.
func (h *Handler) register(w http.ResponseWriter, r *http.Request, _ identity) error {
	var req accountRequest
	if err := h.decode(r, &req); err != nil {
		return err
	}
	req.CC, req.PhoneNumber = strings.TrimSpace(req.CC), strings.TrimSpace(req.PhoneNumber)
	switch {
	case req.CC == "":
		return errMissing("cc")
	case req.PhoneNumber == "":
		return errMissing("phone_number")
	case req.Method == "":
		return errMissing(`method ("sms" or "voice")`)
	case req.Method != "sms" && req.Method != "voice":
		return errInvalid(`method must be "sms" or "voice", got %q`, req.Method)
	case req.Cert == "":
		return errMissing("cert (the business certificate, base64)")
	}
	if req.PIN != "" && !isDigits(req.PIN, 6) {
		return errInvalid("pin must be 6 digits")
	}
	if _, err := phone.Join(req.CC, req.PhoneNumber); err != nil {
		return errInvalid("cc and phone_number: %s", reason(err))
	}
	res, err := h.gw.Register(r.Context(), gateway.RegisterRequest{
		CC: req.CC, PhoneNumber: req.PhoneNumber, Method: req.Method, Cert: req.Cert, PIN: req.PIN,
	})
	if err != nil {
		return h.gatewayError(err)
	}
	if res.AlreadyRegistered {
		h.writeMeta(w, http.StatusCreated)
		return nil
	}
	// A new registration replaced the number in use: sends wait for its verification again.
	h.registered.Store(false)
	return h.writeJSON(w, http.StatusAccepted, accountResponse{Account: []accountVName{{VName: res.VName}}})
}

type verifyRequest struct {
	Code string `json:"code"`
}

// verify: POST /v1/account/verify finishes the registration; 201 with an empty body.
func (h *Handler) verify(w http.ResponseWriter, r *http.Request, _ identity) error {
	var req verifyRequest
	if err := h.decode(r, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.Code) == "" {
		return errMissing("code")
	}
	if err := h.gw.Verify(r.Context(), req.Code); err != nil {
		return h.gatewayError(err)
	}
	w.WriteHeader(http.StatusCreated)
	return nil
}

// gatewayError maps the gateway's errors to On-Premises errors (the table is in the package comment).
func (h *Handler) gatewayError(err error) error {
	var re *gateway.RegistrationError
	if errors.As(err, &re) {
		switch re.Code {
		case regtypes.CodeInvalidPhone, regtypes.CodeInvalidMethod, regtypes.CodeInvalidCert,
			regtypes.CodeCertExpired, regtypes.CodeCertNotYetValid, regtypes.CodeCertPhoneMismatch,
			regtypes.CodeBusinessCertRequired, regtypes.CodeInvalidCode, regtypes.CodeWrongCode,
			regtypes.CodeCodeExpired:
			return errInvalid("%s: %s", re.Code, re.Message)
		case regtypes.CodeNoPendingCode:
			return apiErr(CodeNotFound, "%s: %s; request a code with POST /v1/account first", re.Code, re.Message)
		case regtypes.CodeBusinessDisabled:
			e := apiErr(CodeAccessDenied, "%s: %s", re.Code, re.Message)
			e.status = http.StatusForbidden
			return e
		case regtypes.CodeDeviceInUse:
			return apiErr(CodeExists, "%s: %s", re.Code, re.Message)
		case regtypes.CodeRateLimited, regtypes.CodeTooManyAttempts:
			return errTooMany(re.RetryAfter, "%s: %s", re.Code, re.Message)
		case regtypes.CodeSendFailed:
			return errNotReady("%s: %s; retry later", re.Code, re.Message)
		}
		// invalid_request, invalid_device_key, not_found, internal_error, …: a problem between
		// bizapi and chatd, not in the request.
		e := apiErr(CodeInternal, "chatd refused the registration: %s: %s", re.Code, re.Message)
		e.cause = err
		return e
	}
	switch {
	case errors.Is(err, gateway.ErrNoPendingRegistration):
		return apiErr(CodeNotFound, "no registration is in progress; request a code with POST /v1/account first")
	case errors.Is(err, gateway.ErrNotRegistered):
		return errNotReady("no number is registered; register with POST /v1/account and POST /v1/account/verify")
	case errors.Is(err, gateway.ErrNotConnected):
		return errNotReady("bizapi is not connected to chatd; see GET /v1/health")
	case errors.Is(err, context.Canceled):
		return errNotReady("the request was cancelled")
	}
	// Most often chatd's HTTPS API is unreachable (N7); the cause helps the network admin.
	h.log.Warn("api: gateway call failed", "err", err)
	return errNotReady("%v", err)
}

func isDigits(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// reason is the human part of a phone error.
func reason(err error) string {
	var ie *phone.InvalidError
	if errors.As(err, &ie) {
		return ie.Reason
	}
	return err.Error()
}
