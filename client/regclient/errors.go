package regclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/chatd-dev/chatd/server/regapi/regtypes"
)

// APIError is an error answer of the server: every method returns one when the server answered with
// a status other than 2xx.
type APIError struct {
	// Status is the HTTP status.
	Status int
	// Code is one of the regtypes.Code* codes, or "" when the answer was not a chatd error body (a
	// proxy's or another server's page).
	Code string
	// Message is the server's sentence saying what to change (or, without Code, what came back).
	Message string
	// RetryAfter is the server's Retry-After (with 429 rate_limited), 0 if none.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("server refused the request: ")
	if e.Message != "" {
		b.WriteString(strings.TrimSuffix(e.Message, "."))
	} else {
		b.WriteString(http.StatusText(e.Status))
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " (%s, HTTP %d)", e.Code, e.Status)
	} else {
		fmt.Fprintf(&b, " (HTTP %d)", e.Status)
	}
	if e.RetryAfter > 0 && !strings.Contains(e.Message, "try again in") {
		fmt.Fprintf(&b, "; retry after %v", e.RetryAfter)
	}
	return b.String()
}

// Retryable reports whether the same request may succeed later without a change: rate limits, a
// failed code delivery and server-side failures.
func (e *APIError) Retryable() bool {
	switch e.Code {
	case regtypes.CodeRateLimited, regtypes.CodeSendFailed, regtypes.CodeInternal:
		return true
	}
	return e.Status >= 500
}

// Code returns the regtypes code of err if it is (or wraps) an *APIError, else "".
func Code(err error) string {
	var e *APIError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// TLSError is returned when the TLS connection to the server could not be set up safely: its
// certificate is not trusted, not valid for the host, expired, or the port does not speak TLS.
type TLSError struct {
	// Host is the host:port of the server URL.
	Host string
	// Problem says what is wrong, for people.
	Problem string
	// Fix says what to do about it.
	Fix string
	// Err is the error of crypto/tls or crypto/x509.
	Err error
}

func (e *TLSError) Error() string {
	return fmt.Sprintf("TLS with %s failed: %s (%v); %s", e.Host, e.Problem, e.Err, e.Fix)
}

func (e *TLSError) Unwrap() error { return e.Err }

// caFix is the advice for a certificate whose authority is not trusted.
const caFix = "if the server uses a private or development CA, give this client that CA's certificate file " +
	"(chat: --ca FILE; a chatd in dev mode writes it to DATA/tls/ca.pem and prints its path at start-up)"

// portFix is the advice for a port that does not speak TLS.
const portFix = "check the URL's port: it must be the server's HTTPS port (443, or 8443 for a chatd in dev mode)"

// tlsError classifies err as a TLS failure, or returns nil.
func tlsError(host string, err error) *TLSError {
	var (
		cve       *tls.CertificateVerificationError
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		record    tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &hostErr):
		return &TLSError{Host: host, Err: hostErr,
			Problem: "the server's certificate is not valid for " + hostErr.Host,
			Fix:     "use a server URL with a host name the certificate covers" + certNames(hostErr.Certificate)}
	case errors.As(err, &unknownCA):
		return &TLSError{Host: host, Err: unknownCA,
			Problem: "the server's certificate is signed by an authority this client does not trust",
			Fix:     caFix}
	case errors.As(err, &invalid):
		te := &TLSError{Host: host, Err: invalid, Problem: "the server's certificate is not valid",
			Fix: "ask the server operator to renew it, or check this machine's clock"}
		if invalid.Reason == x509.Expired {
			te.Problem = "the server's certificate has expired or is not valid yet"
		}
		return te
	case errors.As(err, &cve):
		return &TLSError{Host: host, Err: cve.Err, Problem: "the server's certificate could not be verified", Fix: caFix}
	case errors.As(err, &record):
		return &TLSError{Host: host, Err: record, Problem: "the server did not answer with TLS", Fix: portFix}
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"): // net/http's own error, not wrapped
		return &TLSError{Host: host, Err: unwrapURLError(err), Problem: "the server did not answer with TLS but plain HTTP", Fix: portFix}
	}
	return nil
}

func certNames(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	names := append([]string{}, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return ""
	}
	return " (" + strings.Join(names, ", ") + ")"
}
