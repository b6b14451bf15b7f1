// Package store is the chatd server's embedded SQLite store: accounts and
// their device keys, pending verification codes, messages, and the
// per-recipient delivery queue.
//
// # Durability and connections
//
// The database is one SQLite file opened with modernc.org/sqlite (pure Go,
// driver name "sqlite") in WAL mode with synchronous=FULL: every write
// transaction fsyncs the WAL before Commit returns, so a message whose
// SaveMessage has returned survives SIGKILL and power loss. foreign_keys=ON
// and a busy_timeout are set on every connection.
//
// The Store holds two *sql.DB handles on the same file:
//
//   - a writer limited to exactly one connection (SetMaxOpenConns(1)). SQLite
//     allows one writer at a time anyway; funnelling every write through one
//     connection makes writers queue in Go (cheap, fair, context-aware)
//     instead of spinning on SQLITE_BUSY, and it rules out the deferred-
//     transaction lock-upgrade deadlock. Write transactions also start with
//     BEGIN IMMEDIATE (_txlock=immediate) so that a second process on the same
//     file waits on busy_timeout rather than failing mid-transaction.
//   - a reader pool of several connections with query_only=1. In WAL mode
//     readers never block the writer nor each other, and each read sees the
//     latest committed transaction, so reads (Pending, Account, lookups,
//     Stats) scale across cores while a write is in flight.
//
// A single-connection design would also be correct, but every Pending call
// would then wait behind every fsync.
//
// # Schema
//
// Migrations live in migrations/NNNN_name.sql (embedded), are applied in
// order at Open, one transaction each, and the schema version is PRAGMA
// user_version. Re-opening an up-to-date database runs nothing; a database
// with a newer version than this binary knows is refused (ErrSchemaTooNew).
// All times are stored as INTEGER Unix nanoseconds (UTC); NULL means "not
// yet". Times returned by the Store are in UTC.
//
//	accounts(phone PK, business, display_name, device_pub UNIQUE, created_at)
//	codes(phone PK, hash, method, business, display_name, expires_at,
//	      attempts, created_at)
//	messages(id PK AUTOINCREMENT, sender, recipient, client_id,
//	         content_version, content, created_at, delivered_at, read_at,
//	         UNIQUE(sender, client_id))
//	queue(seq PK AUTOINCREMENT, recipient, kind, message_id -> messages(id),
//	      receipt_type, receipt_at), index (recipient, seq)
//
// An account has exactly one device: device_pub is a column of accounts, and
// its UNIQUE constraint is what makes a key belong to at most one account.
// Binding a new key overwrites the old one, which therefore stops resolving.
//
// Message ids and queue seqs use AUTOINCREMENT so that a value is never
// handed out twice, even after the row holding the largest value is deleted
// (acknowledged queue items are deleted). Clients deduplicate on message ids
// and resume with Pending(afterSeq), so re-use would lose or drop items.
//
// # Delivery-queue model
//
// Messages are kept; the queue holds what still has to be pushed to someone.
// Each queue row is an Item for one recipient phone, with a store-wide,
// strictly increasing Seq:
//
//   - ItemMessage: a message addressed to the recipient. Enqueued by
//     SaveMessage in the same transaction that stores the message, so an
//     acknowledged send is always queued.
//   - ItemReceipt: a delivered or read receipt for a message the recipient
//     sent. The receipt's ClientID (the sender's own client message id) and
//     By (the message's recipient) are joined from the message row.
//
// The session layer pushes Pending(recipient, afterSeq, limit) and the client
// acknowledges each item after storing it; Ack/AckBatch delete the rows.
// Acks are idempotent and scoped to the acknowledging recipient: acking an
// unknown seq, an already-acked seq, or someone else's seq changes nothing.
//
// Receipts are driven by the message's delivered_at and read_at columns, which
// are set at most once, so each receipt is enqueued exactly once:
//
//   - Acking an ItemMessage whose delivered_at is NULL sets it and enqueues a
//     ReceiptDelivered item for the sender.
//   - MarkRead sets read_at on the reader's unread messages and enqueues a
//     ReceiptRead item for each. If the message had not been acknowledged
//     yet, it is marked delivered too and its ReceiptDelivered item is
//     enqueued first, so the sender always sees delivered before read. A
//     later Ack of the message item then enqueues nothing more.
//
// Methods that grow someone's queue return notify: the phones whose sessions
// should be woken, without duplicates, in the order their items were
// enqueued. SaveMessage does not: the caller knows m.To.
//
// # Clock
//
// Store.Now supplies every timestamp the store writes (nil means time.Now),
// so tests can drive time. Set it right after Open, before concurrent use.
package store
