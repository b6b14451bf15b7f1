package store

import "errors"

var (
	// ErrNotFound is returned by lookups of a missing user, token, account or message.
	ErrNotFound = errors.New("store: not found")
	// ErrDuplicate is returned by AddMessage for an ID that exists.
	ErrDuplicate = errors.New("store: duplicate id")
)
