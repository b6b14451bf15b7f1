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
//   - a writer limited to exactly one connection (SetMaxOpenConns(1)), owned
//     by one goroutine: the group-commit writer (internal/groupcommit). SQLite
//     allows one writer at a time anyway; funnelling every write through one
//     connection makes writers queue in Go (cheap, fair) instead of spinning
//     on SQLITE_BUSY. Transactions start with BEGIN IMMEDIATE so that a second
//     process on the same file waits on busy_timeout rather than failing
//     mid-transaction. The hot statements are prepared once on it.
//   - a reader pool of several connections with query_only=1. In WAL mode
//     readers never block the writer nor each other, and each read sees the
//     latest committed transaction, so reads (Pending, Account, lookups,
//     Stats) scale across cores while a write is in flight.
//
// # Group commit
//
// Every write method is an operation queued to the writer goroutine. The
// writer takes the first waiting operation and every other one already
// waiting (up to WithMaxBatch, default 512), runs them in ONE transaction, and
// answers every caller after the one COMMIT (one fsync). The synchronous
// methods' operations run each inside its own SAVEPOINT: one that fails is
// rolled back to it and fails alone. A Pipeline's writes fail only when the
// database does, so they run without one (two statements fewer each): when
// one fails, the whole batch fails. If the transaction itself fails, every
// operation of the batch fails and nothing of it is stored. There is no
// timer: a write that arrives alone is committed at once, and under load
// batches grow by themselves while the previous COMMIT is flushed. Operations
// run in queue order and see the effects of the ones before them, including
// earlier ones of their own batch (so the same (sender, client id) saved
// twice in one batch is stored once). WriterStats counts commits and
// operations.
//
// The synchronous methods (SaveMessage, AckBatch, …) wait for their commit. A
// Pipeline (NewPipeline) queues one producer's writes without waiting —
// SaveMessageAsync, AckBatchAsync, MarkReadAsync, Barrier — applies them in
// submission order, calls each one's callback after its COMMIT in that same
// order (on the writer goroutine: callbacks must not block), and makes them
// take effect as a prefix: after a failure, the pipeline's later writes fail
// without running. A chat session uses one pipeline, so its client can have
// many sends in flight while each SendAck still follows its own fsync.
//
// # Contexts
//
// A write's context counts until the writer takes the operation into a batch:
// cancelled before, the operation is not applied and the method returns
// ctx.Err(). Once taken, it runs to the end and the method returns its real
// result even if ctx is done meanwhile (a batch is never interrupted for one
// caller). So a write that returned ctx.Err() was not applied, and one that
// returned nil is durable. A Pipeline's context only bounds the wait for room
// in the writer's queue. Reads use ctx as usual. Writes after Close fail with
// ErrClosed; Close lets every queued write finish first.
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
//	messages(id PK, sender, recipient, client_id, content_version, content,
//	         created_at, delivered_at, read_at, pending, UNIQUE(sender, client_id)),
//	         partial index (recipient, id) WHERE pending = 1
//	receipts(recipient, seq, message_id, type, at), PK (recipient, seq), WITHOUT ROWID
//	store_meta(key PK, value): 'next_seq'
//
// An account has exactly one device: device_pub is a column of accounts, and
// its UNIQUE constraint is what makes a key belong to at most one account.
// Binding a new key overwrites the old one, which therefore stops resolving.
//
// Message ids and receipt seqs come from one counter that the writer keeps in
// memory and writes to store_meta in every transaction that took a value
// (groupcommit's BeforeCommit), so a value is never handed out twice, even after
// the row holding the largest one is gone (acknowledged receipts are deleted),
// and never names both a message and a receipt. Clients deduplicate on message
// ids and resume with Pending(afterSeq), so re-use would lose or drop items.
// Values taken by a write that failed are skipped.
//
// # Delivery-queue model
//
// Messages are kept; the queue holds what still has to be pushed to someone.
// Each queued Item is for one recipient phone, with a store-wide, strictly
// increasing Seq:
//
//   - ItemMessage: a message addressed to the recipient, queued while its row
//     has pending = 1 (set by SaveMessage in the statement that stores it, so an
//     acknowledged send is always queued). Its Seq is the message id.
//   - ItemReceipt: a delivered or read receipt for a message the recipient
//     sent, a row of receipts. The receipt's ClientID (the sender's own client
//     message id) and By (the message's recipient) are joined from the message
//     row.
//
// The session layer pushes Pending(recipient, afterSeq, limit) and the client
// acknowledges each item after storing it; Ack/AckBatch dequeue them (pending =
// 0, the receipt row deleted). Acks are idempotent and scoped to the
// acknowledging recipient: acking an unknown seq, an already-acked seq, or
// someone else's seq changes nothing.
//
// Receipts follow the message's delivered_at and read_at columns, which are set
// at most once, so each receipt is enqueued exactly once:
//
//   - Acking a pending message whose delivered_at is NULL sets it and enqueues a
//     ReceiptDelivered item for the sender.
//   - MarkRead sets read_at on the reader's unread messages and enqueues a
//     ReceiptRead item for each. If the message had not been acknowledged
//     yet (still pending, so delivered_at is NULL), it is marked delivered too
//     and its ReceiptDelivered item is enqueued first, so the sender always sees
//     delivered before read. A later Ack of the message then enqueues nothing
//     more (read_at is set).
//
// A save is one statement; an ack batch three (dequeue the messages, delete
// the receipts, insert the delivered receipts) and a MarkRead two, whatever the
// number of items (lists are bound as one JSON array). Migration 0003 has the
// numbers that led here.
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
