package pki

import "errors"

var (
	// ErrKeyMalformed is returned by [LoadOrCreateStaticKey],
	// [LoadOrCreateOperatorKey], [EnsureDevTLS] and [ParseStaticPublic] when a
	// key or certificate (file or string) exists but cannot be decoded, has
	// the wrong type or the wrong length. Files are never replaced when this
	// happens; fix or remove them.
	ErrKeyMalformed = errors.New("pki: malformed key")

	// ErrCertMalformed is returned by [VerifyBusinessCert] when the string is
	// not a business certificate (wrong shape, bad base64, bad JSON, an
	// unsupported version, an invalid phone number or an empty display name)
	// and by [IssueBusinessCert] when the certificate to issue is invalid.
	ErrCertMalformed = errors.New("pki: malformed business certificate")

	// ErrCertSignature is returned by [VerifyBusinessCert] when the signature
	// does not verify with the operator key: the certificate was altered,
	// forged, or issued by another operator.
	ErrCertSignature = errors.New("pki: business certificate signature is not valid for this operator")

	// ErrCertExpired is returned by [VerifyBusinessCert] when now is at or
	// after the certificate's ExpiresAt.
	ErrCertExpired = errors.New("pki: business certificate has expired")

	// ErrCertNotYetValid is returned by [VerifyBusinessCert] when now is
	// before the certificate's IssuedAt minus [CertClockSkew].
	ErrCertNotYetValid = errors.New("pki: business certificate is not valid yet")
)
