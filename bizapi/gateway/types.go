// Package gateway is bizapi's connection to chatd: it registers the business number over HTTPS, holds
// the chat connection (client library), sends the outbox, stores what arrives before acknowledging it,
// turns acks and receipts into statuses and webhook callbacks, sends read receipts, and answers
// contact lookups.
package gateway

import (
	"errors"
	"time"
)

// Gateway statuses of GET /v1/health, as in the On-Premises API.
const (
	StatusUnregistered  = "unregistered"  // no number registered yet
	StatusConnecting    = "connecting"    // registered; dialing, handshaking or waiting to retry
	StatusConnected     = "connected"     // logged in to chatd
	StatusDisconnected  = "disconnected"  // registered but stopped (a permanent error, e.g. the device was replaced)
	StatusUninitialized = "uninitialized" // starting up
)

// Health is the gateway's state for GET /v1/health. GatewayStatus is the On-Premises field; the rest
// is our documented extension.
type Health struct {
	GatewayStatus string
	Phone         string
	// The path in use (or last used): address, port, transport ("tcp", "tls" or "ws") and the HTTP
	// CONNECT proxy it goes through, without its password ("" when direct).
	Addr      string
	Port      int
	Transport string
	Proxy     string
	// DialTime is how long the last successful connect took: the race of the endpoints, the
	// handshake and the login.
	DialTime time.Duration
	// Since is when GatewayStatus last changed; while connected, that is when the connection
	// logged in.
	Since time.Time
	// RTT is the last ping round trip (0 before the first).
	RTT time.Duration
	// Reconnects counts connections after the first since start.
	Reconnects int
	// LastClose and LastError say why the last connection ended.
	LastClose string
	LastError string
	// Closes counts the ends of logged-in connections since start by close reason (LastClose;
	// "unknown" when none was given).
	Closes map[string]int64
	// NetworkProblem is set when the network does not meet the requirements although a connection
	// works: connected on 5222 while the 443 path fails, which is unsupported (N5). It says what
	// failed and what to open; "" when nothing is known to be wrong.
	NetworkProblem string
	// ConfigError is set when the start-up config fetch over HTTPS failed and the cached config is in
	// use (N7), and when the fetched config publishes a server static key or an operator key other
	// than the one pinned at registration (the pinned key stays in use), or a malformed operator key.
	ConfigError string
}

// RegisterRequest is POST /v1/account.
type RegisterRequest struct {
	CC          string // country code
	PhoneNumber string // national number
	Method      string // "sms" or "voice"
	Cert        string // business certificate (base64 line from chatd cert issue)
	PIN         string // two-step verification PIN (accepted, not used by chatd yet)
}

// RegisterResult answers POST /v1/account.
type RegisterResult struct {
	// AlreadyRegistered: this number is registered with this bizapi already (201); no code was
	// sent.
	AlreadyRegistered bool
	VName             string // the certificate's verified name
}

// LookupResult is one contact of POST /v1/contacts.
type LookupResult struct {
	Input  string
	Status string // "valid", "invalid", "failed"
	WaID   string // set when valid
}

var (
	// ErrNotRegistered: the operation needs a registered number (POST /v1/account first).
	ErrNotRegistered = errors.New("gateway: not registered")
	// ErrNoPendingRegistration: verify without a preceding POST /v1/account.
	ErrNoPendingRegistration = errors.New("gateway: no registration in progress")
	// ErrNotConnected: the operation needs the chat connection, which is down.
	ErrNotConnected = errors.New("gateway: not connected to chatd")
)

// RegistrationError is a refusal by chatd's registration API, with its error code (the regtypes
// Code* constants, e.g. "wrong_code", "rate_limited") and message.
type RegistrationError struct {
	Code       string
	Message    string
	RetryAfter time.Duration
}

func (e *RegistrationError) Error() string { return "registration: " + e.Code + ": " + e.Message }
