package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/chatd-dev/chatd/internal/sqlitedb"
)

// AddMessage stores m as StatusAccepted with the next Seq. ID and To must not be empty
// (ErrInvalidArgument); ErrDuplicate if ID exists. Only ID, To, Body, PreviewURL and CreatedAt
// (zero: now) are taken from m.
func (s *SQLite) AddMessage(ctx context.Context, m Message) error {
	if m.ID == "" || m.To == "" {
		return fmt.Errorf("%w: message needs ID and To", ErrInvalidArgument)
	}
	created := s.orNow(m.CreatedAt).UnixNano()
	return s.exec(ctx, func(w *writeStmts) error {
		n, err := w.exec(w.addMessage, m.ID, m.To, m.Body, boolInt(m.PreviewURL), created)
		if err != nil {
			return fmt.Errorf("store: add message: %w", err)
		}
		if n == 0 { // ON CONFLICT (id) DO NOTHING
			return ErrDuplicate
		}
		return nil
	})
}

// Message returns an outbound message by ID (ErrNotFound).
func (s *SQLite) Message(ctx context.Context, id string) (Message, error) {
	if err := s.readable(); err != nil {
		return Message{}, err
	}
	m, err := scanMessage(s.rs.message.QueryRowContext(ctx, id))
	if err != nil {
		return Message{}, s.readErr("message", err)
	}
	return m, nil
}

// Unsent returns the messages still in StatusAccepted with Seq > afterSeq, in Seq order, at most
// limit (> 0, else ErrInvalidArgument).
func (s *SQLite) Unsent(ctx context.Context, afterSeq int64, limit int) ([]Message, error) {
	if err := checkLimit(limit); err != nil {
		return nil, err
	}
	if err := s.readable(); err != nil {
		return nil, err
	}
	rows, err := s.rs.unsent.QueryContext(ctx, afterSeq, int64(limit))
	if err != nil {
		return nil, s.readErr("unsent", err)
	}
	defer rows.Close()
	var out []Message
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, s.readErr("unsent", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, s.readErr("unsent", err)
	}
	return out, nil
}

func scanMessage(r rowScanner) (Message, error) {
	var (
		m                               Message
		preview                         int64
		serverID, created               sql.NullInt64
		sent, delivered, readAt, failed sql.NullInt64
		errCode                         sql.NullInt64
		errTitle, errDetails            sql.NullString
	)
	if err := r.Scan(&m.Seq, &m.ID, &m.To, &m.Body, &preview, &m.Status, &serverID, &created, &sent,
		&delivered, &readAt, &failed, &errCode, &errTitle, &errDetails); err != nil {
		return Message{}, err
	}
	m.PreviewURL = preview != 0
	m.ServerID = uint64(serverID.Int64)
	m.CreatedAt = sqlitedb.TimeFrom(created)
	m.SentAt = sqlitedb.TimeFrom(sent)
	m.DeliveredAt = sqlitedb.TimeFrom(delivered)
	m.ReadAt = sqlitedb.TimeFrom(readAt)
	m.FailedAt = sqlitedb.TimeFrom(failed)
	if errCode.Valid || errTitle.Valid || errDetails.Valid {
		m.Error = &ErrorInfo{Code: int(errCode.Int64), Title: errTitle.String, Details: errDetails.String}
	}
	return m, nil
}

// MarkSent records the server's acknowledgement of id.
//
// From StatusAccepted: Status becomes StatusSent, ServerID and SentAt are set and cb is queued.
// Already further (delivered or read because a receipt overtook the ack, sent by a repeated ack,
// or failed): the status stays, ServerID and SentAt are filled in only where still missing, and cb
// is NOT queued — nothing a webhook receiver has not seen changed. ErrNotFound if there is no such
// message. A zero at means now; serverID 0 stores none.
func (s *SQLite) MarkSent(ctx context.Context, id string, serverID uint64, at time.Time, cb *Callback) (changed bool, err error) {
	if err := checkCallback(cb); err != nil {
		return false, err
	}
	now := s.now().UnixNano()
	err = s.exec(ctx, func(w *writeStmts) error {
		changed, err = w.markSentOp(id, serverID, at, cb, now)
		return err
	})
	return changed && err == nil, err
}

// markSentOp is the write of MarkSent.
func (w *writeStmts) markSentOp(id string, serverID uint64, at time.Time, cb *Callback, now int64) (changed bool, err error) {
	sentAt := now
	if !at.IsZero() {
		sentAt = at.UnixNano()
	}
	sid := serverIDArg(serverID)
	n, err := w.exec(w.markSent, sid, sentAt, id)
	if err != nil {
		return false, fmt.Errorf("store: mark sent: %w", err)
	}
	if n == 1 {
		return true, w.insertCallback(cb, now)
	}
	if n, err = w.exec(w.markSentFill, sid, sentAt, id); err != nil {
		return false, fmt.Errorf("store: mark sent: %w", err)
	}
	if n == 0 {
		return false, ErrNotFound
	}
	return false, nil
}

// MarkStatus advances id to StatusDelivered or StatusRead (any other status: ErrInvalidArgument).
// A status never goes backwards and failed is terminal: when the message is already at or past
// status (or failed), nothing changes, cb is not queued and changed is false. Read implies
// delivered: DeliveredAt is set too if it was missing. ErrNotFound if there is no such message. A
// zero at means now.
func (s *SQLite) MarkStatus(ctx context.Context, id string, status string, at time.Time, cb *Callback) (changed bool, err error) {
	if err := checkStatus(status); err != nil {
		return false, err
	}
	if err := checkCallback(cb); err != nil {
		return false, err
	}
	now := s.now().UnixNano()
	err = s.exec(ctx, func(w *writeStmts) error {
		changed, err = w.markStatusOp(id, status, at, cb, now)
		return err
	})
	if err != nil {
		return false, err
	}
	return changed, nil
}

func checkStatus(status string) error {
	if status != StatusDelivered && status != StatusRead {
		return fmt.Errorf("%w: MarkStatus to %q (want %q or %q)", ErrInvalidArgument, status, StatusDelivered, StatusRead)
	}
	return nil
}

// markStatusOp is the write of MarkStatus (status checked by the caller).
func (w *writeStmts) markStatusOp(id string, status string, at time.Time, cb *Callback, now int64) (changed bool, err error) {
	st := w.markDelivered
	if status == StatusRead {
		st = w.markRead
	}
	stamp := now
	if !at.IsZero() {
		stamp = at.UnixNano()
	}
	n, err := w.exec(st, stamp, id)
	if err != nil {
		return false, fmt.Errorf("store: mark %s: %w", status, err)
	}
	if n == 0 {
		return false, w.mustExist(id)
	}
	return true, w.insertCallback(cb, now)
}

// MarkReceipt is MarkSent(id, serverID, at, sentCb) followed by MarkStatus(id, status, at, cb) in
// one transaction (one commit instead of two): what a delivered or read receipt does, since it may
// overtake the recording of the send's ack. It returns each step's changed. ErrNotFound (nothing
// changes) if there is no such message; on any error neither step is applied.
func (s *SQLite) MarkReceipt(ctx context.Context, id string, serverID uint64, status string, at time.Time,
	sentCb, cb *Callback) (sentChanged, changed bool, err error) {
	if err := checkStatus(status); err != nil {
		return false, false, err
	}
	if err := checkCallback(sentCb); err != nil {
		return false, false, err
	}
	if err := checkCallback(cb); err != nil {
		return false, false, err
	}
	now := s.now().UnixNano()
	err = s.exec(ctx, markReceiptOp(id, serverID, status, at, sentCb, cb, now, &sentChanged, &changed))
	if err != nil {
		return false, false, err
	}
	return sentChanged, changed, nil
}

// MarkReceiptAsync is MarkReceipt without waiting: done runs after the commit, on the store's writer
// goroutine (it must not block), in submission order. It returns an error (and done is never called)
// only if the operation could not be queued.
func (s *SQLite) MarkReceiptAsync(ctx context.Context, id string, serverID uint64, status string, at time.Time,
	sentCb, cb *Callback, done func(sentChanged, changed bool, err error)) error {
	if err := checkStatus(status); err != nil {
		return err
	}
	if err := checkCallback(sentCb); err != nil {
		return err
	}
	if err := checkCallback(cb); err != nil {
		return err
	}
	var sentChanged, changed bool
	op := markReceiptOp(id, serverID, status, at, sentCb, cb, s.now().UnixNano(), &sentChanged, &changed)
	return s.submitLean(ctx, func(w *writeStmts) (own, err error) {
		// ErrNotFound comes before any write: an outcome of this receipt, not a failure of the batch.
		err = op(w)
		if errors.Is(err, ErrNotFound) {
			return err, nil
		}
		return nil, err
	}, func(err error) {
		if err != nil {
			sentChanged, changed = false, false
		}
		done(sentChanged, changed, err)
	})
}

// MarkSentAsync is MarkSent without waiting: done runs after the commit, on the store's writer
// goroutine (it must not block), in submission order. It returns an error (and done is never
// called) only if the operation could not be queued; once queued it runs whatever ctx does.
func (s *SQLite) MarkSentAsync(ctx context.Context, id string, serverID uint64, at time.Time, cb *Callback,
	done func(changed bool, err error)) error {
	if err := checkCallback(cb); err != nil {
		return err
	}
	now := s.now().UnixNano()
	var changed bool
	return s.submitLean(ctx, func(w *writeStmts) (own, err error) {
		// markSentOp's ErrNotFound comes before any write (see submitLean).
		c, err := w.markSentOp(id, serverID, at, cb, now)
		if errors.Is(err, ErrNotFound) {
			return err, nil
		}
		changed = c
		return nil, err
	}, func(err error) { done(changed && err == nil, err) })
}

// markReceiptOp is markSentOp then markStatusOp, with the outcome of both decided from the
// message's state read first, and at most one write of the row (the two steps took three
// statements, two of them writes, for a receipt of a message already sent: the common case).
func markReceiptOp(id string, serverID uint64, status string, at time.Time, sentCb, cb *Callback, now int64,
	sentChanged, changed *bool) func(w *writeStmts) error {
	return func(w *writeStmts) error {
		var cur string
		var missing bool // server_id or sent_at not set yet
		err := w.receiptState.QueryRowContext(bg, id).Scan(&cur, &missing)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("store: receipt: %w", err)
		}
		stamp := now
		if !at.IsZero() {
			stamp = at.UnixNano()
		}
		sid := serverIDArg(serverID)
		// The steps' conditions, as markSentOp and markStatusOp apply them in turn.
		*sentChanged = cur == StatusAccepted
		after := cur
		if *sentChanged {
			after = StatusSent
		}
		switch status {
		case StatusDelivered:
			*changed = after == StatusSent
		case StatusRead:
			*changed = after == StatusSent || after == StatusDelivered
		}
		var st *sql.Stmt
		switch {
		case *changed && status == StatusRead:
			st = w.receiptRead
		case *changed:
			st = w.receiptDelivered
		case *sentChanged:
			// Sent, and already at or past status: cannot happen (accepted is before both).
			return fmt.Errorf("store: receipt: unexpected state %q for %q", cur, status)
		case missing:
			st = w.markSentFill // the status stays; fill in server_id and sent_at
		}
		if st != nil {
			if _, err := w.exec(st, sid, stamp, id); err != nil {
				return fmt.Errorf("store: mark %s: %w", status, err)
			}
		}
		if *sentChanged {
			if err := w.insertCallback(sentCb, now); err != nil {
				return err
			}
		}
		if *changed {
			return w.insertCallback(cb, now)
		}
		return nil
	}
}

// MarkFailed ends id with StatusFailed, FailedAt and the error, and queues cb. Only a message not
// yet delivered can fail (accepted or sent); on a delivered, read or already failed message it
// changes nothing and queues nothing (the first failure is kept). ErrNotFound if there is no such
// message. A zero at means now.
func (s *SQLite) MarkFailed(ctx context.Context, id string, e ErrorInfo, at time.Time, cb *Callback) error {
	if err := checkCallback(cb); err != nil {
		return err
	}
	now := s.now().UnixNano()
	stamp := now
	if !at.IsZero() {
		stamp = at.UnixNano()
	}
	return s.exec(ctx, func(w *writeStmts) error {
		n, err := w.exec(w.markFailed, stamp, int64(e.Code), e.Title, e.Details, id)
		if err != nil {
			return fmt.Errorf("store: mark failed: %w", err)
		}
		if n == 0 {
			return w.mustExist(id)
		}
		return w.insertCallback(cb, now)
	})
}
