package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"time"
)

// On-Premises API error codes that this API answers with (see the package comment for when).
const (
	CodeGeneric          = 1000
	CodeTooLong          = 1001
	CodeBadRecipientType = 1002
	CodeExists           = 1004
	CodeAccessDenied     = 1005
	CodeNotFound         = 1006
	CodeMissingParameter = 1008
	CodeInvalidParameter = 1009
	CodeNotReady         = 1011
	CodeInternal         = 1014
	CodeTooManyRequests  = 1015
	CodePasswordChange   = 1024
	CodeInvalidRequest   = 1025
)

// codeInfo is the title and HTTP status of each code.
var codeInfo = map[int]struct {
	title  string
	status int
}{
	CodeGeneric:          {"Generic error", http.StatusBadRequest},
	CodeTooLong:          {"Message too long", http.StatusBadRequest},
	CodeBadRecipientType: {"Invalid recipient type", http.StatusBadRequest},
	CodeExists:           {"Resource already exists", http.StatusConflict},
	CodeAccessDenied:     {"Access denied", http.StatusUnauthorized},
	CodeNotFound:         {"Resource not found", http.StatusNotFound},
	CodeMissingParameter: {"Required parameter is missing", http.StatusBadRequest},
	CodeInvalidParameter: {"Parameter value is not valid", http.StatusBadRequest},
	CodeNotReady:         {"Service not ready", http.StatusServiceUnavailable},
	CodeInternal:         {"Internal error", http.StatusInternalServerError},
	CodeTooManyRequests:  {"Too many requests", http.StatusTooManyRequests},
	CodePasswordChange:   {"Password change required", http.StatusForbidden},
	CodeInvalidRequest:   {"Invalid request", http.StatusBadRequest},
}

// Error is an On-Premises error object as the API sends it. Handlers return *Error to answer with
// it; any other error becomes a 1014 whose cause goes only to the log.
type Error struct {
	Code    int    `json:"code"`
	Title   string `json:"title"`
	Details string `json:"details,omitempty"`

	status     int           // HTTP status; 0 → the code's
	retryAfter time.Duration // > 0 → a Retry-After header (whole seconds, rounded up)
	header     [2]string     // an extra response header (name, value), e.g. WWW-Authenticate
	cause      error         // logged, never sent
}

func (e *Error) Error() string {
	s := strconv.Itoa(e.Code) + " " + e.Title
	if e.Details != "" {
		s += ": " + e.Details
	}
	return s
}

func (e *Error) httpStatus() int {
	if e.status != 0 {
		return e.status
	}
	if ci, ok := codeInfo[e.Code]; ok {
		return ci.status
	}
	return http.StatusBadRequest
}

func apiErr(code int, format string, args ...any) *Error {
	details := format
	if len(args) > 0 {
		details = fmt.Sprintf(format, args...)
	}
	return &Error{Code: code, Title: codeInfo[code].title, Details: details}
}

func errMissing(param string) *Error {
	return apiErr(CodeMissingParameter, "%s is required", param)
}

func errInvalid(format string, args ...any) *Error {
	return apiErr(CodeInvalidParameter, format, args...)
}

func errInternal(cause error) *Error {
	e := apiErr(CodeInternal, "an internal error occurred; it was logged, retry later")
	e.cause = cause
	return e
}

func errNotReady(format string, args ...any) *Error {
	return apiErr(CodeNotReady, format, args...)
}

func errTooMany(retry time.Duration, format string, args ...any) *Error {
	e := apiErr(CodeTooManyRequests, format, args...)
	e.retryAfter = retry
	return e
}

func errUnauthorized(scheme, format string, args ...any) *Error {
	e := apiErr(CodeAccessDenied, format, args...)
	e.header = [2]string{"WWW-Authenticate", scheme + ` realm="bizapi"`}
	return e
}

var errBodyTooLarge = &Error{Code: CodeTooLong, Title: codeInfo[CodeTooLong].title, status: http.StatusRequestEntityTooLarge}

// decodeError turns an encoding/json error into 1025 (not JSON, not an object) or 1009 (a member
// of the wrong type).
func decodeError(err error) *Error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return apiErr(CodeInvalidRequest, "the body is not valid JSON: %v (at byte %d)", se, se.Offset)
	case errors.As(err, &te) && te.Field == "":
		return apiErr(CodeInvalidRequest, "the body must be a JSON object, got %s", jsonKind(te.Value))
	case errors.As(err, &te):
		return errInvalid("%s: expected %s, got %s", te.Field, typeName(te.Type), jsonKind(te.Value))
	}
	return apiErr(CodeInvalidRequest, "the body could not be decoded: %v", err)
}

func jsonKind(v string) string {
	switch v {
	case "array", "object":
		return "an " + v
	case "bool":
		return "a boolean"
	case "number", "string":
		return "a " + v
	}
	return v // "number 1.5" and the like
}

func typeName(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Float64:
		return "a number"
	case reflect.Slice:
		return "an array"
	case reflect.Struct, reflect.Map, reflect.Pointer:
		return "an object"
	}
	return t.String()
}
