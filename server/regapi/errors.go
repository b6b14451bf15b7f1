package regapi

import "errors"

var (
	// ErrSendRejected is returned by [HTTPSender.SendCode] when the gateway
	// answers with a status other than 2xx; the error text carries the
	// status (never the code).
	ErrSendRejected = errors.New("regapi: code sender rejected the request")

	// ErrSenderNotConfigured is returned by [HTTPSender.SendCode] when URL
	// is empty.
	ErrSenderNotConfigured = errors.New("regapi: code sender is not configured")

	// ErrBadPhone is returned by [DevSender.SendCode] when the phone is not
	// a normalized number (digits only), which it uses as a file name.
	ErrBadPhone = errors.New("regapi: phone is not a normalized number")
)
