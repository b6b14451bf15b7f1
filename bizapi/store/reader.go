package store

import (
	"context"
	"database/sql"
)

// readStmts are the statements prepared on the query_only pool (database/sql prepares each one
// again, once, on every pool connection that runs it).
type readStmts struct {
	settings, user, token, account *sql.Stmt
	lastEndpoint, operatorKey      *sql.Stmt
	message, unsent                *sql.Stmt
	inbound, readPending           *sql.Stmt
	dueCallbacks, nextCallbackAt   *sql.Stmt
	stats                          *sql.Stmt
}

const messageCols = `seq, id, recipient, body, preview_url, status, server_id, created_at, sent_at,
	delivered_at, read_at, failed_at, error_code, error_title, error_details`

const inboundCols = `id, server_id, sender, type, body, content, server_time, received_at,
	read_requested, read_sent`

const callbackCols = `id, payload, attempts, next_at, created_at, last_error`

func (r *readStmts) prepare(ctx context.Context, s *SQLite) error {
	list := []struct {
		st **sql.Stmt
		q  string
	}{
		{&r.settings, `SELECT doc FROM settings WHERE id = 1`},
		{&r.user, `SELECT name, password_hash, must_change, updated_at FROM users WHERE name = ?`},
		{&r.token, `SELECT hash, user, created_at, expires_at FROM tokens WHERE hash = ?`},
		{&r.account, `SELECT phone, method, cert, vname, registered, business, display_name,
			device_priv, server_key, config, config_at, verified_at FROM account WHERE id = 1`},
		{&r.lastEndpoint, `SELECT last_endpoint FROM gateway_state WHERE id = 1`},
		{&r.operatorKey, `SELECT public_key FROM operator_key WHERE id = 1`},
		{&r.message, `SELECT ` + messageCols + ` FROM messages WHERE id = ?`},
		// status = 'accepted' literally: it selects the partial index messages_unsent.
		{&r.unsent, `SELECT ` + messageCols + ` FROM messages
			WHERE status = 'accepted' AND seq > ? ORDER BY seq LIMIT ?`},
		{&r.inbound, `SELECT ` + inboundCols + ` FROM inbound WHERE id = ?`},
		// The WHERE matches the partial index inbound_read_pending, whose order is received_at,
		// rowid.
		{&r.readPending, `SELECT ` + inboundCols + ` FROM inbound
			WHERE read_requested = 1 AND read_sent = 0 ORDER BY received_at, rowid LIMIT ?`},
		// Due (next_at ≤ ?1) and after the key (?3, ?4), by next_at then id: those with next_at
		// = ?3 and a larger id, then those with a later next_at. Two ranges of the index on
		// next_at (whose entries end with the id) merged in order, so the scan starts right after
		// the key even when many callbacks share its next_at (a retried batch), where "(next_at, id)
		// > (?3, ?4)" would step through them. "LIMIT ?2 + 0", not "LIMIT ?2": SQLite plans with the
		// value of a plain bound LIMIT, so it prepared the statement again whenever the limit
		// changed (at almost every dispatcher round: 40 µs instead of 14).
		{&r.dueCallbacks, `SELECT * FROM (SELECT ` + callbackCols + ` FROM callbacks
				WHERE next_at = ?3 AND id > ?4 AND next_at <= ?1 ORDER BY id)
			UNION ALL SELECT * FROM (SELECT ` + callbackCols + ` FROM callbacks
				WHERE next_at > ?3 AND next_at <= ?1 ORDER BY next_at, id)
			ORDER BY next_at, id LIMIT ?2 + 0`},
		{&r.nextCallbackAt, `SELECT min(next_at) FROM callbacks`},
		{&r.stats, `SELECT
			(SELECT count(*) FROM messages WHERE status = 'accepted'),
			(SELECT count(*) FROM callbacks),
			(SELECT count(*) FROM messages),
			(SELECT count(*) FROM inbound)`},
	}
	for _, p := range list {
		st, err := s.prepareOn(ctx, s.r, p.q)
		if err != nil {
			return err
		}
		*p.st = st
	}
	return nil
}

// readable returns ErrClosed after Close.
func (s *SQLite) readable() error {
	if s.isShut.Load() {
		return ErrClosed
	}
	return nil
}

type rowScanner interface {
	Scan(dest ...any) error
}
