package store

import (
	"errors"

	"github.com/chatd-dev/chatd/internal/sqlitedb"
)

var (
	// ErrNotFound is returned by lookups of a missing user, token, account or message.
	ErrNotFound = errors.New("store: not found")
	// ErrDuplicate is returned by AddMessage for an ID that exists.
	ErrDuplicate = errors.New("store: duplicate id")

	// ErrInvalidArgument: an argument breaks the documented contract (an empty id, a non-positive
	// limit, an unknown status, an empty callback payload, …). It is a bug in the caller, not a
	// condition to retry; nothing was written.
	ErrInvalidArgument = errors.New("store: invalid argument")
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("store: closed")
	// ErrSchemaTooNew: the database was migrated by a newer bizapi; Open refuses to touch it.
	ErrSchemaTooNew = sqlitedb.ErrSchemaTooNew
)
