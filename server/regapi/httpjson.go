package regapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/chatd-dev/chatd/server/regapi/regtypes"
)

// apiError is an error answer: status, code and a sentence for people.
type apiError struct {
	status  int
	code    string
	message string
	header  http.Header // extra headers (Retry-After)
}

func newAPIError(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil { // only our own types are written; cannot happen
		http.Error(w, `{"error":{"code":"internal_error","message":"The server failed to encode its answer."}}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, regtypes.ErrorResponse{Error: regtypes.Error{Code: code, Message: message}})
}

func writeAPIError(w http.ResponseWriter, e *apiError) {
	for k, v := range e.header {
		w.Header()[k] = v
	}
	writeError(w, e.status, e.code, e.message)
}

func methodNotAllowed(allowed ...string) http.Handler {
	allow := strings.Join(allowed, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, regtypes.CodeMethodNotAllowed,
			fmt.Sprintf("%s %s is not supported; use %s.", r.Method, r.URL.Path, allowed[0]))
	})
}

// decodeJSON reads exactly one JSON object into v from a body of at most
// max bytes, rejecting unknown fields and trailing data. It requires
// Content-Type application/json, which also keeps browsers from posting
// here cross-site without a CORS preflight.
func decodeJSON(w http.ResponseWriter, r *http.Request, max int64, v any) *apiError {
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return newAPIError(http.StatusUnsupportedMediaType, regtypes.CodeUnsupportedMediaType,
			"The request body must be JSON sent with the header Content-Type: application/json (got %q).", ct)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, max))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if dec.Decode(&struct{}{}) != io.EOF {
			return newAPIError(http.StatusBadRequest, regtypes.CodeInvalidRequest,
				"The request body must hold exactly one JSON object; remove what follows it.")
		}
		return nil
	}
	var (
		tooLarge  *http.MaxBytesError
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooLarge):
		return newAPIError(http.StatusRequestEntityTooLarge, regtypes.CodeRequestTooLarge,
			"The request body is larger than %d bytes; send only the documented fields.", max)
	case errors.Is(err, io.EOF):
		return newAPIError(http.StatusBadRequest, regtypes.CodeInvalidRequest,
			"The request body is empty; send a JSON object.")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return newAPIError(http.StatusBadRequest, regtypes.CodeInvalidRequest,
			"The request body ends in the middle of the JSON object; send the complete object.")
	case errors.As(err, &syntaxErr):
		return newAPIError(http.StatusBadRequest, regtypes.CodeInvalidRequest,
			"The request body is not valid JSON (error at byte %d); send a JSON object.", syntaxErr.Offset)
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return newAPIError(http.StatusBadRequest, regtypes.CodeInvalidRequest,
				"The request body must be a JSON object.")
		}
		return newAPIError(http.StatusBadRequest, regtypes.CodeInvalidRequest,
			"The field %q must be a %s, not a %s.", typeErr.Field, typeErr.Type.Kind(), typeErr.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return newAPIError(http.StatusBadRequest, regtypes.CodeInvalidRequest,
			"The request has the %s; remove it.", strings.TrimPrefix(err.Error(), "json: "))
	default:
		return newAPIError(http.StatusBadRequest, regtypes.CodeInvalidRequest,
			"The request body could not be read as a JSON object; send a JSON object.")
	}
}
