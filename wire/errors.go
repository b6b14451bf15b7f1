package wire

import "errors"

var (
	// ErrBadPreamble is returned by ReadPreamble and CheckPreamble when a stream does not start with
	// the chatd magic: it is TLS, HTTP or garbage sent to a chat port.
	ErrBadPreamble = errors.New("wire: not a chatd stream (bad preamble)")
	// ErrUnsupportedVersion is returned (wrapped) by ReadPreamble when the magic is right but the
	// protocol version is not one this package speaks.
	ErrUnsupportedVersion = errors.New("wire: unsupported protocol version")
	// ErrFrameTooLarge matches every *FrameTooLargeError with errors.Is.
	ErrFrameTooLarge = errors.New("wire: frame too large")
	// ErrBadEnvelope is returned by DecodeEnvelope for bytes that are not a valid envelope, or an
	// envelope with no body.
	ErrBadEnvelope = errors.New("wire: malformed envelope")
)
