package noisesock

import "errors"

var (
	// ErrServerKeyMismatch matches the *KeyMismatchError that Client returns when the server's proven
	// static key is not the pinned one.
	ErrServerKeyMismatch = errors.New("noisesock: server key mismatch")
	// ErrHandshake is returned (wrapped) by Client and Server when a handshake message fails to
	// decrypt or parse: the peer is not a chatd peer, or the stream was tampered with.
	ErrHandshake = errors.New("noisesock: handshake failed")
	// ErrDecrypt is returned by Conn.ReadFrame when a transport frame fails authentication. The
	// connection must be closed.
	ErrDecrypt = errors.New("noisesock: frame failed authentication")
)
