// Package store is bizapi's durable state: the admin users and their tokens, the application
// settings, the registered account, the operator key pinned at registration, the gateway's last good
// chat endpoint, the outbox of messages to send, the inbox of received messages, and the queue of
// webhook callbacks.
//
// Store is an interface so that a PostgreSQL implementation can follow for high availability (DESIGN
// §8); Open returns the SQLite one. Every write is durable when the method returns: the SQLite store
// batches concurrent writes into one transaction and one fsync (group commit), so many callers
// waiting at once cost one disk flush, not one each.
//
// Status changes and the callbacks they cause are written in one transaction: a crash can lose
// neither one without the other. Methods that take a Callback insert it when it is non-nil.
package store

import (
	"context"
	"encoding/json"
	"time"
)

// Store is bizapi's durable state. All methods are safe for concurrent use.
type Store interface {
	Close() error

	// Settings returns the stored application settings document (nil when never saved).
	Settings(ctx context.Context) (json.RawMessage, error)
	// SaveSettings replaces the settings document.
	SaveSettings(ctx context.Context, doc json.RawMessage) error

	// User returns a user by name (ErrNotFound).
	User(ctx context.Context, name string) (User, error)
	// PutUser creates or replaces a user.
	PutUser(ctx context.Context, u User) error
	// PutToken stores a login token (only its hash).
	PutToken(ctx context.Context, t Token) error
	// Token returns the token with this hash (ErrNotFound); expired tokens are returned too, the
	// caller checks ExpiresAt.
	Token(ctx context.Context, hash []byte) (Token, error)
	// DeleteToken removes one token (no error if absent); DeleteUserTokens all of a user's.
	DeleteToken(ctx context.Context, hash []byte) error
	DeleteUserTokens(ctx context.Context, user string) error
	// DeleteExpiredTokens removes tokens that expired before now.
	DeleteExpiredTokens(ctx context.Context, now time.Time) (int64, error)

	// Account returns the registration state (ErrNotFound before the first POST /v1/account).
	Account(ctx context.Context) (Account, error)
	// PutAccount replaces the registration state.
	PutAccount(ctx context.Context, a Account) error

	// LastEndpoint returns the chat endpoint of the gateway's last login, as saved by
	// SaveLastEndpoint ("host:port/transport"; "" when none was saved). The gateway tries it first
	// at the next start. It is kept apart from the Account: a new registration crosses the same
	// network.
	LastEndpoint(ctx context.Context) (string, error)
	// SaveLastEndpoint records the chat endpoint of a login.
	SaveLastEndpoint(ctx context.Context, endpoint string) error

	// OperatorKey returns the chatd operator's Ed25519 public key (32 bytes) pinned at
	// registration, which verifies the signed IP address list; nil when none is pinned. It is kept
	// apart from the Account: PutAccount never changes it.
	OperatorKey(ctx context.Context) ([]byte, error)
	// PinOperatorKey replaces the pinned operator key, whatever was pinned before: only a new
	// registration calls it, and a new registration is a new trust decision. nil (or empty) removes
	// the pinned key. A non-empty key must have 32 bytes (ErrInvalidArgument).
	PinOperatorKey(ctx context.Context, key []byte) error
	// PinOperatorKeyIfNone pins key only when no operator key is pinned (trust on first use, for an
	// account registered without one). It never replaces a pinned key: it returns the key pinned
	// after the call, and created is true when that is key, pinned by this call. key must have 32
	// bytes (ErrInvalidArgument).
	PinOperatorKeyIfNone(ctx context.Context, key []byte) (pinned []byte, created bool, err error)

	// AddMessage stores an accepted outbound message with Status StatusAccepted. When it returns nil
	// the message is durable. ErrDuplicate if m.ID exists.
	AddMessage(ctx context.Context, m Message) error
	// Message returns an outbound message by ID (ErrNotFound).
	Message(ctx context.Context, id string) (Message, error)
	// Unsent returns outbound messages still in StatusAccepted with Seq > afterSeq, in Seq order, at
	// most limit.
	Unsent(ctx context.Context, afterSeq int64, limit int) ([]Message, error)
	// MarkSent records the server's acknowledgement: a message still in StatusAccepted becomes
	// StatusSent and cb (if non-nil) is queued, and changed is true. A message that advanced already
	// (a receipt overtook the ack, or the ack is repeated) keeps its status and queues nothing; only
	// missing ServerID and SentAt are filled in. ErrNotFound if there is no such message.
	MarkSent(ctx context.Context, id string, serverID uint64, at time.Time, cb *Callback) (changed bool, err error)
	// MarkStatus advances a message to StatusDelivered or StatusRead. A status never goes backwards:
	// a delivered receipt after read changes nothing and queues nothing, and changed reports whether
	// anything changed (cb is queued only then). Read implies delivered (DeliveredAt is set too).
	MarkStatus(ctx context.Context, id string, status string, at time.Time, cb *Callback) (changed bool, err error)
	// MarkReceipt is MarkSent(id, serverID, at, sentCb) then MarkStatus(id, status, at, cb) in one
	// transaction, with one commit: what a receipt does. Either both steps apply or neither.
	MarkReceipt(ctx context.Context, id string, serverID uint64, status string, at time.Time, sentCb, cb *Callback) (sentChanged, changed bool, err error)
	// MarkReceiptAsync, MarkSentAsync and SaveInboundAsync do the same as MarkReceipt, MarkSent
	// and SaveInbound without waiting: done runs after the commit, in submission order, on the
	// store's writer (it must not block). They return an error, and done is never called, only when
	// the operation could not be queued; once queued, it runs whatever ctx does.
	MarkReceiptAsync(ctx context.Context, id string, serverID uint64, status string, at time.Time, sentCb, cb *Callback,
		done func(sentChanged, changed bool, err error)) error
	MarkSentAsync(ctx context.Context, id string, serverID uint64, at time.Time, cb *Callback,
		done func(changed bool, err error)) error
	// MarkFailed ends a message with StatusFailed and the error, and queues cb.
	MarkFailed(ctx context.Context, id string, e ErrorInfo, at time.Time, cb *Callback) error

	// SaveInbound stores a received message and queues cb, once: if ServerID is stored already it
	// does nothing and reports dup (the chat server redelivered a message bizapi had stored).
	SaveInbound(ctx context.Context, m Inbound, cb *Callback) (dup bool, err error)
	SaveInboundAsync(ctx context.Context, m Inbound, cb *Callback, done func(dup bool, err error)) error
	// Inbound returns a received message by ID (ErrNotFound).
	Inbound(ctx context.Context, id string) (Inbound, error)
	// RequestRead marks a received message to be reported read; it returns the message. Asking twice
	// is fine. ErrNotFound if there is no such message.
	RequestRead(ctx context.Context, id string) (Inbound, error)
	// ReadPending returns received messages whose read receipt was requested and not yet confirmed
	// by the server, oldest first, at most limit.
	ReadPending(ctx context.Context, limit int) ([]Inbound, error)
	// ReadSent records that the server acknowledged the read receipts of these messages.
	ReadSent(ctx context.Context, ids []string) error

	// EnqueueCallback queues a callback on its own.
	EnqueueCallback(ctx context.Context, cb Callback) error
	// DueCallbacks returns queued callbacks with NextAt ≤ now whose key (NextAt, ID) comes after
	// the key after, in key order (due longest first), at most limit. The zero key starts at the
	// beginning; the webhook dispatcher passes the key of the last callback it has in flight, so
	// that it does not read those again.
	DueCallbacks(ctx context.Context, now time.Time, limit int, after CallbackKey) ([]Callback, error)
	// NextCallbackAt returns the earliest NextAt of the queue (zero time and no error when empty).
	NextCallbackAt(ctx context.Context) (time.Time, error)
	// DeleteCallback removes a delivered callback; DeleteCallbacks several, in one transaction.
	// Absent ids are no error.
	DeleteCallback(ctx context.Context, id int64) error
	DeleteCallbacks(ctx context.Context, ids []int64) error
	// RetryCallback records a failed attempt: Attempts and NextAt are set, LastError kept.
	RetryCallback(ctx context.Context, id int64, attempts int, next time.Time, lastErr string) error
	// RetryCallbacks records the same failed attempt for several callbacks (the callbacks of one
	// webhook request), in one transaction; ids no longer queued are skipped.
	RetryCallbacks(ctx context.Context, ids []int64, attempts int, next time.Time, lastErr string) error

	// Stats returns queue depths and counts for health and metrics.
	Stats(ctx context.Context) (Stats, error)
}

// Message statuses, as in the On-Premises API's status webhooks.
const (
	StatusAccepted  = "accepted" // stored, not yet acknowledged by the chat server
	StatusSent      = "sent"
	StatusDelivered = "delivered"
	StatusRead      = "read"
	StatusFailed    = "failed"
)

// User is an admin user of the REST API.
type User struct {
	Name         string
	PasswordHash []byte // bcrypt
	// MustChange is true until the first login sets a new password (the default admin).
	MustChange bool
	UpdatedAt  time.Time
}

// Token is a bearer token, stored by the SHA-256 of its value.
type Token struct {
	Hash      []byte
	User      string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Account is the business number's registration with chatd.
type Account struct {
	// Phone is E.164 digits; set at POST /v1/account.
	Phone string
	// Method, Cert, VName: the pending code request (POST /v1/account) until verified.
	Method string
	Cert   string
	VName  string
	// Registered is true after a successful verify; the fields below are set then.
	Registered  bool
	Business    bool
	DisplayName string
	DevicePriv  [32]byte // X25519 device private key (the public half is derived)
	// ServerKey is the chat server's static key, pinned at verify.
	ServerKey [32]byte
	// Config is the last /v1/config document from the server (endpoints, ping interval, …), the
	// fallback when HTTPS is unreachable at start (N7).
	Config     json.RawMessage
	ConfigAt   time.Time
	VerifiedAt time.Time
}

// Message is an outbound (business → customer) text message.
type Message struct {
	// Seq orders the outbox; assigned by AddMessage.
	Seq int64
	// ID is the opaque message id returned by POST /v1/messages ("gBEG…"); it is also the chatd
	// client id, so a resend after a restart is deduplicated by the server.
	ID          string
	To          string // E.164 digits
	Body        string // the text
	PreviewURL  bool
	Status      string
	ServerID    uint64
	CreatedAt   time.Time
	SentAt      time.Time
	DeliveredAt time.Time
	ReadAt      time.Time
	FailedAt    time.Time
	Error       *ErrorInfo // for StatusFailed
}

// ErrorInfo is an On-Premises error object.
type ErrorInfo struct {
	Code    int    `json:"code"`
	Title   string `json:"title"`
	Details string `json:"details,omitempty"`
}

// Inbound is a received (customer → business) message.
type Inbound struct {
	// ID is the opaque id shown in webhooks and used by PUT /v1/messages/{id} ("ABGG…").
	ID       string
	ServerID uint64 // chatd's server message id: unique, the dedup key
	From     string
	Type     string // "text" for now
	Body     string
	// Content is the raw chatd content body (for types bizapi does not understand yet).
	Content       []byte
	Timestamp     time.Time // when chatd stored it
	ReceivedAt    time.Time
	ReadRequested bool
	ReadSent      bool
}

// Callback is one webhook callback waiting to be delivered.
type Callback struct {
	ID      int64 // assigned by the store
	Payload json.RawMessage
	// Attempts counts the failed attempts so far.
	Attempts int
	// NextAt is when the callback is due. Zero at enqueue means now, taken when the write runs: so
	// callbacks enqueued with a zero NextAt have non-decreasing NextAt in ID (commit) order, and a
	// reader that went past the key of one never misses a later one.
	NextAt    time.Time
	CreatedAt time.Time
	LastError string
}

// CallbackKey is a callback's place in the queue's due order: by NextAt, then ID.
type CallbackKey struct {
	NextAt time.Time
	ID     int64
}

// Key returns cb's CallbackKey.
func (cb Callback) Key() CallbackKey { return CallbackKey{NextAt: cb.NextAt, ID: cb.ID} }

// Less reports whether k comes before o in the due order. The zero key comes before every
// callback's.
func (k CallbackKey) Less(o CallbackKey) bool {
	switch {
	case k.NextAt.IsZero() && o.NextAt.IsZero():
		return k.ID < o.ID
	case k.NextAt.IsZero():
		return true
	case o.NextAt.IsZero():
		return false
	case !k.NextAt.Equal(o.NextAt):
		return k.NextAt.Before(o.NextAt)
	}
	return k.ID < o.ID
}

// Stats are depths and counts.
type Stats struct {
	Unsent           int64 // outbox messages not yet acknowledged by chatd
	PendingCallbacks int64
	Messages         int64 // outbound, all statuses
	Inbound          int64
}
