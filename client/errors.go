package client

import (
	"errors"
	"fmt"
	"time"

	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

var (
	// ErrUnknownDevice is returned by Run when the server does not know the device key: the number
	// is not registered (or was registered again with another device).
	ErrUnknownDevice = errors.New("client: device not registered with the server (register first)")
	// ErrUnsupportedVersion is returned by Run when the server does not speak this protocol version.
	ErrUnsupportedVersion = errors.New("client: server does not support this protocol version")
	// ErrUnknownRecipient is returned by Send when the recipient is not a registered account.
	ErrUnknownRecipient = errors.New("client: recipient is not registered")
	// ErrRejected is returned (wrapped, with the server's detail) by Send for a send the server
	// refused as invalid, and by Lookup for a refused query.
	ErrRejected = errors.New("client: request rejected by the server")
	// ErrPongTimeout ends a connection on which nothing arrived within the pong timeout after a ping.
	ErrPongTimeout = errors.New("client: no answer to ping (connection dead)")
)

// CloseError is how a connection ended when the server said why (a Close frame).
type CloseError struct {
	Reason     chatdpb.CloseReason
	Detail     string
	RetryAfter time.Duration
}

func (e *CloseError) Error() string {
	s := "server closed the connection: " + wire.CloseReasonName(e.Reason)
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	if e.RetryAfter > 0 {
		s += fmt.Sprintf("; retry after %v", e.RetryAfter)
	}
	return s
}

// closeName is the close reason name for a connection that ended with err.
func closeName(err error) string {
	var ce *CloseError
	switch {
	case err == nil, errors.Is(err, errMoving):
		return "client_closed"
	case errors.As(err, &ce):
		return wire.CloseReasonName(ce.Reason)
	case errors.Is(err, ErrPongTimeout):
		return wire.CloseReasonName(chatdpb.CloseReason_PONG_TIMEOUT)
	case errors.Is(err, ErrUnknownDevice):
		return wire.CloseReasonName(chatdpb.CloseReason_UNKNOWN_DEVICE)
	case errors.Is(err, ErrUnsupportedVersion):
		return wire.CloseReasonName(chatdpb.CloseReason_UNSUPPORTED_VERSION)
	case errors.Is(err, noisesock.ErrServerKeyMismatch), errors.Is(err, noisesock.ErrHandshake):
		return wire.CloseReasonName(chatdpb.CloseReason_HANDSHAKE_FAILED)
	case errors.Is(err, noisesock.ErrDecrypt):
		return wire.CloseReasonName(chatdpb.CloseReason_DECRYPT_FAILED)
	}
	return wire.CloseReasonName(chatdpb.CloseReason_CONNECTION_LOST)
}
