package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/chatd-dev/chatd/internal/groupcommit"
)

// exec sends fn to the group-commit writer and waits for the commit of the transaction that ran
// it; see the Contexts section of SQLite for what ctx means here.
func (s *SQLite) exec(ctx context.Context, fn func(w *writeStmts) error) error {
	err := s.gc.Exec(ctx, fn)
	if err == groupcommit.ErrClosed {
		return ErrClosed
	}
	return err
}

// submit queues fn without waiting; done runs after the commit on the writer goroutine.
func (s *SQLite) submit(ctx context.Context, fn func(w *writeStmts) error, done func(error)) error {
	err := s.gc.Submit(ctx, fn, func(err error) {
		if err == groupcommit.ErrClosed {
			err = ErrClosed
		}
		done(err)
	})
	if err == groupcommit.ErrClosed {
		return ErrClosed
	}
	return err
}

// submitLean queues fn like submit, without a savepoint of its own: two statements fewer per
// operation, on the store's busiest path (a receipt, a send's acknowledgement). The price: fn's
// error fails the whole batch (it is rolled back, every operation in it fails), so fn returns an
// error only when the database fails; its own outcome (ErrNotFound, decided before it writes
// anything) it returns as own, and done gets that. As with submit, a queued operation always runs:
// ctx bounds only the wait for room in the queue.
func (s *SQLite) submitLean(ctx context.Context, fn func(w *writeStmts) (own, err error), done func(error)) error {
	var own error
	err := s.gc.NewSeq().SubmitNoSavepoint(ctx, func(w *writeStmts) error {
		var err error
		own, err = fn(w)
		return err
	}, func(err error) {
		switch {
		case err == groupcommit.ErrClosed:
			err = ErrClosed
		case err == nil:
			err = own
		}
		done(err)
	})
	if err == groupcommit.ErrClosed {
		return ErrClosed
	}
	return err
}

// writeStmts are the statements prepared on the writer connection, the S of the group-commit
// writer. Only the writer goroutine uses them (and Open, before it starts).
type writeStmts struct {
	rollback *sql.Stmt // for abort

	saveSettings                                      *sql.Stmt
	putUser, putToken                                 *sql.Stmt
	deleteToken, deleteUserTokens, deleteExpiredToken *sql.Stmt
	putAccount, saveLastEndpoint                      *sql.Stmt
	pinOperatorKey, pinOperatorKeyIfNone              *sql.Stmt
	unpinOperatorKey, pinnedOperatorKey               *sql.Stmt

	addMessage, messageExists           *sql.Stmt
	markSent, markSentFill              *sql.Stmt
	markDelivered, markRead, markFailed *sql.Stmt
	receiptState                        *sql.Stmt
	receiptDelivered, receiptRead       *sql.Stmt
	saveInbound, requestRead, readSent  *sql.Stmt
	enqueueCallback, deleteCallback     *sql.Stmt
	deleteCallbacks                     *sql.Stmt
	retryCallback                       *sql.Stmt

	// clock is the store's clock. A zero NextAt is filled in from it when the write runs, not when
	// its caller queued it, and never below the last one filled in (lastNext): so callbacks queued
	// with a zero NextAt have non-decreasing NextAt in ID (commit) order, and each one's NextAt is no
	// earlier than any read that did not see it (see Callback.NextAt).
	clock    func() time.Time
	lastNext int64
}

func (w *writeStmts) prepare(ctx context.Context, s *SQLite) error {
	list := []struct {
		st **sql.Stmt
		q  string
	}{
		{&w.rollback, `ROLLBACK`},

		{&w.saveSettings, `INSERT INTO settings (id, doc, updated_at) VALUES (1, ?, ?)
			ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at`},
		{&w.putUser, `INSERT INTO users (name, password_hash, must_change, updated_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash,
				must_change = excluded.must_change, updated_at = excluded.updated_at`},
		{&w.putToken, `INSERT INTO tokens (hash, user, created_at, expires_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (hash) DO UPDATE SET user = excluded.user, created_at = excluded.created_at,
				expires_at = excluded.expires_at`},
		{&w.deleteToken, `DELETE FROM tokens WHERE hash = ?`},
		{&w.deleteUserTokens, `DELETE FROM tokens WHERE user = ?`},
		{&w.deleteExpiredToken, `DELETE FROM tokens WHERE expires_at < ?`},
		{&w.putAccount, `INSERT INTO account (id, phone, method, cert, vname, registered, business,
				display_name, device_priv, server_key, config, config_at, verified_at, updated_at)
			VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET phone = excluded.phone, method = excluded.method,
				cert = excluded.cert, vname = excluded.vname, registered = excluded.registered,
				business = excluded.business, display_name = excluded.display_name,
				device_priv = excluded.device_priv, server_key = excluded.server_key,
				config = excluded.config, config_at = excluded.config_at,
				verified_at = excluded.verified_at, updated_at = excluded.updated_at`},
		{&w.saveLastEndpoint, `INSERT INTO gateway_state (id, last_endpoint, updated_at) VALUES (1, ?, ?)
			ON CONFLICT (id) DO UPDATE SET last_endpoint = excluded.last_endpoint,
				updated_at = excluded.updated_at`},
		{&w.pinOperatorKey, `INSERT INTO operator_key (id, public_key, pinned_at) VALUES (1, ?, ?)
			ON CONFLICT (id) DO UPDATE SET public_key = excluded.public_key,
				pinned_at = excluded.pinned_at`},
		{&w.pinOperatorKeyIfNone, `INSERT INTO operator_key (id, public_key, pinned_at) VALUES (1, ?, ?)
			ON CONFLICT (id) DO NOTHING`},
		{&w.unpinOperatorKey, `DELETE FROM operator_key`},
		{&w.pinnedOperatorKey, `SELECT public_key FROM operator_key WHERE id = 1`},

		{&w.addMessage, `INSERT INTO messages (id, recipient, body, preview_url, status, created_at)
			VALUES (?, ?, ?, ?, 'accepted', ?) ON CONFLICT (id) DO NOTHING`},
		{&w.messageExists, `SELECT 1 FROM messages WHERE id = ?`},
		// accepted → sent: the common case, one statement.
		{&w.markSent, `UPDATE messages SET status = 'sent', server_id = coalesce(server_id, ?),
			sent_at = coalesce(sent_at, ?) WHERE id = ? AND status = 'accepted'`},
		// Already past accepted (a receipt overtook the ack, or a repeated ack): fill in what is
		// missing, leave the status.
		{&w.markSentFill, `UPDATE messages SET server_id = coalesce(server_id, ?),
			sent_at = coalesce(sent_at, ?) WHERE id = ?`},
		// The status conditions have at most two constants: a longer IN list costs a temporary
		// b-tree per execution.
		{&w.markDelivered, `UPDATE messages SET status = 'delivered', delivered_at = coalesce(delivered_at, ?)
			WHERE id = ? AND status IN ('accepted', 'sent')`},
		{&w.markRead, `UPDATE messages SET status = 'read', delivered_at = coalesce(delivered_at, ?1),
			read_at = coalesce(read_at, ?1) WHERE id = ?2 AND status NOT IN ('read', 'failed')`},
		// A receipt (markReceiptOp): the message's state, then at most one write that does both
		// steps (sent, then delivered or read).
		{&w.receiptState, `SELECT status, server_id IS NULL OR sent_at IS NULL FROM messages WHERE id = ?`},
		{&w.receiptDelivered, `UPDATE messages SET status = 'delivered', server_id = coalesce(server_id, ?1),
			sent_at = coalesce(sent_at, ?2), delivered_at = coalesce(delivered_at, ?2) WHERE id = ?3`},
		{&w.receiptRead, `UPDATE messages SET status = 'read', server_id = coalesce(server_id, ?1),
			sent_at = coalesce(sent_at, ?2), delivered_at = coalesce(delivered_at, ?2),
			read_at = coalesce(read_at, ?2) WHERE id = ?3`},
		{&w.markFailed, `UPDATE messages SET status = 'failed', failed_at = ?, error_code = ?,
			error_title = ?, error_details = ? WHERE id = ? AND status IN ('accepted', 'sent')`},

		{&w.saveInbound, `INSERT INTO inbound (id, server_id, sender, type, body, content, server_time,
				received_at, read_requested, read_sent)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (server_id) DO NOTHING`},
		{&w.requestRead, `UPDATE inbound SET read_requested = 1 WHERE id = ? RETURNING ` + inboundCols},
		{&w.readSent, `UPDATE inbound SET read_sent = 1 WHERE id = ? AND read_sent = 0`},

		{&w.enqueueCallback, `INSERT INTO callbacks (payload, attempts, next_at, created_at, last_error)
			VALUES (?, ?, ?, ?, ?)`},
		{&w.deleteCallback, `DELETE FROM callbacks WHERE id = ?`},
		// The callbacks of a webhook request (a JSON array of ids): one statement for all of them.
		{&w.deleteCallbacks, `DELETE FROM callbacks WHERE id IN (SELECT value FROM json_each(?))`},
		{&w.retryCallback, `UPDATE callbacks SET attempts = ?, next_at = ?, last_error = ? WHERE id = ?`},
	}
	for _, p := range list {
		st, err := s.prepareOn(ctx, s.wc, p.q)
		if err != nil {
			return err
		}
		*p.st = st
	}
	return nil
}

// bg is the context of every statement the writer runs: a batch is never interrupted for one
// caller, and a context without Done spares the driver its interrupt watcher.
var bg = context.Background()

// run executes a statement without arguments (BEGIN, SAVEPOINT, …).
func (w *writeStmts) run(st *sql.Stmt) error {
	_, err := st.ExecContext(bg)
	return err
}

// exec executes st and returns the number of rows it changed.
func (w *writeStmts) exec(st *sql.Stmt, args ...any) (int64, error) {
	res, err := st.ExecContext(bg, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// abort rolls back the open transaction, if any (the error is that there is none).
func (w *writeStmts) abort() {
	_ = w.run(w.rollback)
}

// insertCallback queues cb (nil: nothing). now fills a zero CreatedAt; a zero NextAt is the clock
// now (see writeStmts.clock).
func (w *writeStmts) insertCallback(cb *Callback, now int64) error {
	if cb == nil {
		return nil
	}
	var next int64
	created := now
	if cb.NextAt.IsZero() {
		next = max(w.clock().UnixNano(), w.lastNext)
		w.lastNext = next
	} else {
		next = cb.NextAt.UnixNano()
	}
	if !cb.CreatedAt.IsZero() {
		created = cb.CreatedAt.UnixNano()
	}
	if _, err := w.exec(w.enqueueCallback, []byte(cb.Payload), int64(cb.Attempts), next, created, cb.LastError); err != nil {
		return fmt.Errorf("store: queue callback: %w", err)
	}
	return nil
}

// mustExist returns ErrNotFound unless the outbox has id.
func (w *writeStmts) mustExist(id string) error {
	var one int
	err := w.messageExists.QueryRowContext(bg, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("store: message: %w", err)
	}
	return nil
}
