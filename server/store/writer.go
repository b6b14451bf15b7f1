package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/chatd-dev/chatd/internal/groupcommit"
)

// writeStmts are the statements prepared on the writer connection: the S of the group-commit writer.
// Only the writer goroutine uses them (and Open, before it starts).
type writeStmts struct {
	conn *sql.Conn // the writer connection itself, for tests and maintenance (Do)

	// messages, their queue (messages.pending) and receipts (migrations/0003_pending_messages.sql).
	// Lists are bound as one JSON array.
	insertMessage        *sql.Stmt
	insertMessageChecked *sql.Stmt // only if the recipient is registered
	messageByClient      *sql.Stmt
	accountExists        *sql.Stmt
	ackMessages          *sql.Stmt
	ackReceipts          *sql.Stmt
	insertReceipts       *sql.Stmt
	markRead             *sql.Stmt
	saveNextSeq          *sql.Stmt

	// nextSeq is the next message id or receipt seq to hand out; savedSeq the value store_meta holds
	// as of the last transaction that wrote it (writeNextSeq, before every COMMIT that used one).
	nextSeq, savedSeq int64

	// accounts and codes
	deviceOwner      *sql.Stmt
	upsertAccount    *sql.Stmt
	accountByPhone   *sql.Stmt
	putCode          *sql.Stmt
	incCodeAttempts  *sql.Stmt
	deleteCode       *sql.Stmt
	deleteExpiredCds *sql.Stmt

	all []*sql.Stmt // for close
}

// selectReceipts computes the rows of insertReceipts.
const selectReceipts = `
	SELECT m.sender, ?1 + ?2 * j.key, m.id, ?3, ?4
	FROM json_each(?5) AS j JOIN messages AS m ON m.id = j.value
	WHERE m.pending >= ?6`

func (w *writeStmts) prepare(ctx context.Context, c *sql.Conn) error {
	w.conn = c
	for _, p := range []struct {
		st **sql.Stmt
		q  string
	}{
		{&w.insertMessage, `INSERT INTO messages (id, sender, recipient, client_id, content_version, content, created_at, pending)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)
			ON CONFLICT (sender, client_id) DO NOTHING`},
		{&w.insertMessageChecked, `INSERT INTO messages (id, sender, recipient, client_id, content_version, content, created_at, pending)
			SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, 1 WHERE EXISTS (SELECT 1 FROM accounts WHERE phone = ?3)
			ON CONFLICT (sender, client_id) DO NOTHING`},
		{&w.messageByClient, selectMessage + ` WHERE sender = ? AND client_id = ?`},
		{&w.accountExists, `SELECT 1 FROM accounts WHERE phone = ?`},
		// A pending message whose read_at is set was marked read before this ack, which already set
		// delivered_at and queued its delivered receipt; for the others the ack delivers it now.
		{&w.ackMessages, `UPDATE messages SET pending = 0, delivered_at = coalesce(delivered_at, ?1)
			WHERE recipient = ?2 AND pending = 1 AND id IN (SELECT value FROM json_each(?3))
			RETURNING id, sender, client_id, read_at IS NULL`},
		{&w.ackReceipts, `DELETE FROM receipts
			WHERE recipient = ?1 AND seq IN (SELECT value FROM json_each(?2))`},
		// Receipts for the messages in the JSON array ?5, the i-th with seq ?1 + ?2·i; only for
		// messages still pending when ?6 is 1 (receiptList.insert).
		{&w.insertReceipts, `INSERT INTO receipts (recipient, seq, message_id, type, at) ` + selectReceipts},
		// pending = 1 (not acked yet) means delivered_at was NULL: the read also delivers it.
		{&w.markRead, `UPDATE messages SET read_at = ?1, delivered_at = coalesce(delivered_at, ?1)
			WHERE id IN (SELECT value FROM json_each(?2)) AND recipient = ?3 AND read_at IS NULL
			RETURNING id, sender, client_id, pending`},
		{&w.saveNextSeq, `UPDATE store_meta SET value = ?1 WHERE key = 'next_seq'`},

		{&w.deviceOwner, `SELECT phone FROM accounts WHERE device_pub = ?`},
		{&w.upsertAccount, `INSERT INTO accounts (phone, business, display_name, device_pub, created_at)
			VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (phone) DO UPDATE SET
				business = excluded.business,
				display_name = excluded.display_name,
				device_pub = excluded.device_pub`},
		{&w.accountByPhone, selectAccount + ` WHERE phone = ?`},
		{&w.putCode, `INSERT OR REPLACE INTO codes
				(phone, hash, method, business, display_name, expires_at, attempts, created_at)
			VALUES (?, ?, ?, ?, ?, ?, 0, ?)`},
		{&w.incCodeAttempts, `UPDATE codes SET attempts = attempts + 1 WHERE phone = ? RETURNING attempts`},
		{&w.deleteCode, `DELETE FROM codes WHERE phone = ?`},
		{&w.deleteExpiredCds, `DELETE FROM codes WHERE expires_at <= ?`},
	} {
		st, err := c.PrepareContext(ctx, p.q)
		if err != nil {
			return fmt.Errorf("store: prepare %q: %w", strings.Join(strings.Fields(p.q), " "), err)
		}
		*p.st = st
		w.all = append(w.all, st)
	}
	return nil
}

// loadNextSeq reads the counter of ids and seqs (at Open, before the writer starts). It also looks at
// the largest id and seq stored, so that no value in use is handed out again whatever the counter
// says.
func (w *writeStmts) loadNextSeq(ctx context.Context) error {
	err := w.conn.QueryRowContext(ctx, `SELECT value FROM store_meta WHERE key = 'next_seq'`).Scan(&w.savedSeq)
	if err != nil {
		return fmt.Errorf("store: read the id counter: %w", err)
	}
	err = w.conn.QueryRowContext(ctx, `SELECT max(?1,
		coalesce((SELECT max(id) FROM messages), 0) + 1,
		coalesce((SELECT max(seq) FROM receipts), 0) + 1)`, w.savedSeq).Scan(&w.nextSeq)
	if err != nil {
		return fmt.Errorf("store: read the id counter: %w", err)
	}
	return nil
}

// takeSeq hands out the next id or seq (writer).
func (w *writeStmts) takeSeq() int64 { return w.takeSeqs(1) }

// takeSeqs hands out n consecutive ids or seqs and returns the first (writer).
func (w *writeStmts) takeSeqs(n int) int64 {
	v := w.nextSeq
	w.nextSeq += int64(n)
	return v
}

// writeNextSeq records the counter in the transaction about to commit, if it moved (the writer's
// BeforeCommit). If that COMMIT fails, the values it handed out were stored nowhere, so the counter
// on disk being behind them is harmless; the next transaction that takes one writes it again.
func (w *writeStmts) writeNextSeq() error {
	if w.nextSeq == w.savedSeq {
		return nil
	}
	if _, err := w.saveNextSeq.ExecContext(bg, w.nextSeq); err != nil {
		return fmt.Errorf("store: save the id counter: %w", err)
	}
	w.savedSeq = w.nextSeq
	return nil
}

func (w *writeStmts) close() error {
	var err error
	for _, st := range w.all {
		if cerr := st.Close(); err == nil {
			err = cerr
		}
	}
	w.all = nil
	return err
}

// readStmts are the hot reads, prepared on the query_only pool (database/sql
// prepares each again, once, on every pool connection that runs it).
type readStmts struct {
	pending, accountByPhone, accountByDevice *sql.Stmt

	all []*sql.Stmt
}

func (r *readStmts) prepare(ctx context.Context, db *sql.DB) error {
	for _, p := range []struct {
		st **sql.Stmt
		q  string
	}{
		{&r.pending, selectPending},
		{&r.accountByPhone, selectAccount + ` WHERE phone = ?`},
		{&r.accountByDevice, selectAccount + ` WHERE device_pub = ?`},
	} {
		st, err := db.PrepareContext(ctx, p.q)
		if err != nil {
			return fmt.Errorf("store: prepare %q: %w", strings.Join(strings.Fields(p.q), " "), err)
		}
		*p.st = st
		r.all = append(r.all, st)
	}
	return nil
}

func (r *readStmts) close() error {
	var err error
	for _, st := range r.all {
		if cerr := st.Close(); err == nil {
			err = cerr
		}
	}
	r.all = nil
	return err
}

// bg is the context of every statement the writer runs: a batch is never interrupted for one caller
// (see Store's Contexts section), and a context without Done spares the driver its interrupt watcher.
var bg = context.Background()

// exec runs fn through the group-commit writer and waits for the commit of its transaction.
func (s *Store) exec(ctx context.Context, fn func(w *writeStmts) error) error {
	return closedErr(s.gc.Exec(ctx, fn))
}

// closedErr maps the writer's ErrClosed to the store's.
func closedErr(err error) error {
	if err == groupcommit.ErrClosed {
		return ErrClosed
	}
	return err
}

// WriterStats counts the group-commit writer's work since Open.
type WriterStats struct {
	Commits  uint64 // transactions committed
	Ops      uint64 // write operations in committed transactions that succeeded
	Failed   uint64 // write operations that failed (their own error, or their transaction's)
	MaxBatch int    // the most operations seen in one transaction
}

// WriterStats reports how much group commit is batching (for metrics and tests).
func (s *Store) WriterStats() WriterStats {
	st := s.gc.Stats()
	return WriterStats{Commits: st.Commits, Ops: st.Ops, Failed: st.Failed, MaxBatch: st.MaxBatch}
}

// Pipeline queues one producer's writes (a chat session's sends, acks and read marks) without waiting
// for them. Its operations are applied in the order they were submitted, each one's done callback
// runs after the COMMIT that made it durable, in that same order, and they take effect as a prefix:
// once one has failed, every later one of the pipeline fails too (with an error wrapping the writer's
// ErrSeqBroken) without running, so a producer that retries the failed one after a reconnect cannot
// reorder its writes. A pipeline write fails only when the database does, and then every write of its
// transaction fails with it (they run without savepoints of their own).
//
// The done callbacks run on the store's writer goroutine while it waits: they must be quick, must not
// block, and must not call the Store's write methods. The async methods block only while the
// writer's queue is full (ctx bounds that wait) and return an error — ErrInvalidArgument, ErrClosed or
// ctx.Err() — only when nothing was queued; done is then never called. Otherwise done is called
// exactly once. A Pipeline is for one submitting goroutine at a time.
type Pipeline struct {
	s   *Store
	seq *groupcommit.Seq[*writeStmts]
}

// NewPipeline returns a new, empty pipeline.
func (s *Store) NewPipeline() *Pipeline {
	return &Pipeline{s: s, seq: s.gc.NewSeq()}
}

// submit queues fn without a savepoint (groupcommit.Seq.SubmitNoSavepoint): the pipeline's writes fail
// only when the database does, never for a reason of their own (an unknown recipient or a duplicate is
// a result), so a failure of one may as well fail its whole transaction.
func (p *Pipeline) submit(ctx context.Context, fn func(w *writeStmts) error, done func(error)) error {
	return closedErr(p.seq.SubmitNoSavepoint(ctx, fn, done))
}

// Barrier queues nothing but a callback: done runs, in pipeline order, once every operation submitted
// before it has been committed (err nil), or with ErrSeqBroken if one of them failed. A producer uses
// it to answer, in order, a request that needs no write.
func (p *Pipeline) Barrier(ctx context.Context, done func(err error)) error {
	return p.submit(ctx, nil, done)
}
