// Package regtypes holds the JSON request and response types of chatd's
// registration/config HTTPS API (package regapi), without its dependencies,
// so that clients can decode them without importing the server.
//
// Every error response has the shape
//
//	{"error":{"code":"<snake_case>","message":"<what to change>"}}
//
// where code is one of the Code* constants.
package regtypes

// Protocol is the value of ClientConfig.Protocol.
const Protocol = "chatd/1"

// Transports of an Endpoint.
const (
	TransportTCP = "tcp" // raw chatd (preamble, then Noise)
	TransportTLS = "tls" // chatd inside TLS 1.3 with ALPN "chatd/1"
	TransportWS  = "ws"  // chatd in binary WebSocket messages: wss://host:port/v1/chat
)

// Verification methods.
const (
	MethodSMS   = "sms"
	MethodVoice = "voice"
)

// Endpoint is one address where a chatd server accepts chat connections.
type Endpoint struct {
	Host      string `json:"host"`
	Port      int    `json:"port"`
	Transport string `json:"transport"` // TransportTCP, TransportTLS or TransportWS
}

// ClientConfig is the body of GET /v1/config and the "config" member of a
// successful verification.
type ClientConfig struct {
	Protocol        string     `json:"protocol"`               // always Protocol
	ServerStaticKey string     `json:"server_static_key"`      // X25519, standard base64; pin it
	OperatorKey     string     `json:"operator_key,omitempty"` // Ed25519, standard base64; absent when the server has none
	ChatEndpoints   []Endpoint `json:"chat_endpoints"`         // never null
	HTTPSURL        string     `json:"https_url"`
	IPListVersion   string     `json:"iplist_version"`       // of the published IP address list (iplist.List.Version); may be ""
	IPListURL       string     `json:"iplist_url,omitempty"` // the signed list as a ZIP (GET /v1/iplist.zip); absent when none is published
	PingInterval    int        `json:"ping_interval"`        // seconds
	Only443         bool       `json:"only_443"`
	ServerTime      string     `json:"server_time"` // RFC 3339 with nanoseconds, UTC
}

// CodeRequest is the body of POST /v1/register/code.
type CodeRequest struct {
	Phone        string `json:"phone"`                   // any form phone.Normalize accepts
	Method       string `json:"method,omitempty"`        // MethodSMS (default) or MethodVoice
	BusinessCert string `json:"business_cert,omitempty"` // registers a business with its verified name
}

// CodeResponse is the 202 body of POST /v1/register/code.
type CodeResponse struct {
	Status    string `json:"status"` // "sent"
	Phone     string `json:"phone"`  // normalized: E.164 digits without '+'
	Method    string `json:"method"`
	ExpiresIn int    `json:"expires_in"`      // seconds until the code expires
	VName     string `json:"vname,omitempty"` // the certificate's display name, for businesses
}

// VerifyRequest is the body of POST /v1/register/verify.
type VerifyRequest struct {
	Phone           string `json:"phone"`
	Code            string `json:"code"`              // 6 digits; spaces and '-' are ignored
	DevicePublicKey string `json:"device_public_key"` // X25519, standard base64 of 32 bytes
}

// Account is the registered account in a VerifyResponse.
type Account struct {
	Phone       string `json:"phone"`
	Business    bool   `json:"business"`
	DisplayName string `json:"display_name"` // "" for non-business accounts
}

// VerifyResponse is the 200 body of POST /v1/register/verify.
type VerifyResponse struct {
	Account         Account      `json:"account"`
	ServerStaticKey string       `json:"server_static_key"`
	Config          ClientConfig `json:"config"`
}

// ErrorResponse is the body of every error response.
type ErrorResponse struct {
	Error Error `json:"error"`
}

// Error is a machine-readable code and a sentence for people saying what to
// change.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes, with the HTTP status each is sent with.
const (
	CodeInvalidRequest       = "invalid_request"        // 400: malformed JSON, unknown field, trailing data
	CodeRequestTooLarge      = "request_too_large"      // 413
	CodeUnsupportedMediaType = "unsupported_media_type" // 415: Content-Type is not application/json
	CodeNotFound             = "not_found"              // 404: no such endpoint
	CodeNoIPList             = "no_iplist"              // 404: the server publishes no IP address list
	CodeMethodNotAllowed     = "method_not_allowed"     // 405
	CodeInvalidPhone         = "invalid_phone"          // 400
	CodeInvalidMethod        = "invalid_method"         // 400
	CodeInvalidCert          = "invalid_cert"           // 400: malformed, forged or from another operator
	CodeCertExpired          = "cert_expired"           // 400
	CodeCertNotYetValid      = "cert_not_yet_valid"     // 400
	CodeCertPhoneMismatch    = "cert_phone_mismatch"    // 400
	CodeBusinessDisabled     = "business_disabled"      // 403: the server has no operator key
	CodeBusinessCertRequired = "business_cert_required" // 403: the number is a business account; send its certificate
	CodeRateLimited          = "rate_limited"           // 429, with a Retry-After header in seconds
	CodeSendFailed           = "send_failed"            // 502
	CodeInvalidCode          = "invalid_code"           // 400: not 6 digits
	CodeInvalidDeviceKey     = "invalid_device_key"     // 400
	CodeNoPendingCode        = "no_pending_code"        // 404
	CodeCodeExpired          = "code_expired"           // 410
	CodeWrongCode            = "wrong_code"             // 401
	CodeTooManyAttempts      = "too_many_attempts"      // 429: the code was deleted
	CodeDeviceInUse          = "device_in_use"          // 409
	CodeInternal             = "internal_error"         // 500: details are only in the server log
)
