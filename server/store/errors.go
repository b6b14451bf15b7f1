package store

import (
	"errors"

	"github.com/chatd-dev/chatd/internal/sqlitedb"
)

// Sentinel errors. Compare with errors.Is: the Store may wrap them with
// context.
var (
	// ErrNotFound: the requested account, code or message does not exist.
	ErrNotFound = errors.New("store: not found")

	// ErrDeviceInUse: RegisterDevice was asked to bind a device key that is
	// already bound to a different account. A key belongs to at most one
	// account.
	ErrDeviceInUse = errors.New("store: device key already bound to another account")

	// ErrInvalidArgument: an argument violates the documented contract (for
	// example a phone that is not 1–15 ASCII digits, a device key that is not
	// 32 bytes, an empty client message id, a non-positive limit). It signals
	// a bug in the caller, not a condition to retry.
	ErrInvalidArgument = errors.New("store: invalid argument")

	// ErrClosed: a write after Close.
	ErrClosed = errors.New("store: closed")

	// ErrUnknownRecipient: Pipeline.SaveMessageAsync with CheckRecipient was
	// asked to store a message for a phone that is not a registered account.
	// Nothing was stored.
	ErrUnknownRecipient = errors.New("store: recipient is not a registered account")

	// ErrSchemaTooNew: the database file was migrated by a newer chatd than
	// this one; Open refuses to touch it.
	ErrSchemaTooNew = sqlitedb.ErrSchemaTooNew
)
