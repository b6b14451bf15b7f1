package store

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"time"

	"github.com/chatd-dev/chatd/internal/sqlitedb"
)

// EnqueueCallback queues cb on its own. Payload must not be empty (ErrInvalidArgument); a zero
// NextAt or CreatedAt means now; cb.ID is ignored (the store assigns it).
func (s *SQLite) EnqueueCallback(ctx context.Context, cb Callback) error {
	if err := checkCallback(&cb); err != nil {
		return err
	}
	now := s.now().UnixNano()
	return s.exec(ctx, func(w *writeStmts) error {
		return w.insertCallback(&cb, now)
	})
}

// DueCallbacks returns queued callbacks with NextAt ≤ now (zero: the store's clock) and a key after
// after, by NextAt then ID, at most limit (> 0, else ErrInvalidArgument). The callbacks at or before
// after cost nothing: the index on next_at (whose entries carry the id) starts the scan past them.
func (s *SQLite) DueCallbacks(ctx context.Context, now time.Time, limit int, after CallbackKey) ([]Callback, error) {
	if err := checkLimit(limit); err != nil {
		return nil, err
	}
	if err := s.readable(); err != nil {
		return nil, err
	}
	afterAt := int64(math.MinInt64)
	if !after.NextAt.IsZero() {
		afterAt = after.NextAt.UnixNano()
	}
	rows, err := s.rs.dueCallbacks.QueryContext(ctx, s.orNow(now).UnixNano(), int64(limit), afterAt, after.ID)
	if err != nil {
		return nil, s.readErr("due callbacks", err)
	}
	defer rows.Close()
	var out []Callback
	for rows.Next() {
		var (
			cb            Callback
			attempts      int64
			next, created sql.NullInt64
		)
		if err := rows.Scan(&cb.ID, &cb.Payload, &attempts, &next, &created, &cb.LastError); err != nil {
			return nil, s.readErr("due callbacks", err)
		}
		cb.Attempts = int(attempts)
		cb.NextAt = sqlitedb.TimeFrom(next)
		cb.CreatedAt = sqlitedb.TimeFrom(created)
		out = append(out, cb)
	}
	if err := rows.Err(); err != nil {
		return nil, s.readErr("due callbacks", err)
	}
	return out, nil
}

// NextCallbackAt returns the earliest NextAt of the queue, the zero time when it is empty.
func (s *SQLite) NextCallbackAt(ctx context.Context) (time.Time, error) {
	if err := s.readable(); err != nil {
		return time.Time{}, err
	}
	var next sql.NullInt64
	if err := s.rs.nextCallbackAt.QueryRowContext(ctx).Scan(&next); err != nil {
		return time.Time{}, s.readErr("next callback", err)
	}
	return sqlitedb.TimeFrom(next), nil
}

// DeleteCallback removes a callback; no error if there is none.
func (s *SQLite) DeleteCallback(ctx context.Context, id int64) error {
	return s.exec(ctx, func(w *writeStmts) error {
		if _, err := w.exec(w.deleteCallback, id); err != nil {
			return fmt.Errorf("store: delete callback: %w", err)
		}
		return nil
	})
}

// DeleteCallbacks removes several callbacks in one operation; absent ids are no error.
func (s *SQLite) DeleteCallbacks(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	list := sqlitedb.IDList(ids)
	return s.exec(ctx, func(w *writeStmts) error {
		if _, err := w.exec(w.deleteCallbacks, list); err != nil {
			return fmt.Errorf("store: delete callbacks: %w", err)
		}
		return nil
	})
}

// RetryCallbacks records the same failed attempt for several callbacks in one operation (see
// RetryCallback); ids no longer queued are skipped.
func (s *SQLite) RetryCallbacks(ctx context.Context, ids []int64, attempts int, next time.Time, lastErr string) error {
	if len(ids) == 0 {
		return nil
	}
	nextAt := s.orNow(next).UnixNano()
	return s.exec(ctx, func(w *writeStmts) error {
		for _, id := range ids {
			if _, err := w.exec(w.retryCallback, int64(attempts), nextAt, lastErr, id); err != nil {
				return fmt.Errorf("store: retry callback: %w", err)
			}
		}
		return nil
	})
}

// RetryCallback records a failed attempt: Attempts, NextAt (zero: now) and LastError are set.
// ErrNotFound if there is no such callback (it was deleted).
func (s *SQLite) RetryCallback(ctx context.Context, id int64, attempts int, next time.Time, lastErr string) error {
	nextAt := s.orNow(next).UnixNano()
	return s.exec(ctx, func(w *writeStmts) error {
		n, err := w.exec(w.retryCallback, int64(attempts), nextAt, lastErr, id)
		if err != nil {
			return fmt.Errorf("store: retry callback: %w", err)
		}
		if n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// Stats returns queue depths and counts from one snapshot. The counts are O(rows) (SQLite keeps no
// row counts); call it for metrics scrapes, not per request.
func (s *SQLite) Stats(ctx context.Context) (Stats, error) {
	if err := s.readable(); err != nil {
		return Stats{}, err
	}
	var st Stats
	if err := s.rs.stats.QueryRowContext(ctx).Scan(&st.Unsent, &st.PendingCallbacks, &st.Messages, &st.Inbound); err != nil {
		return Stats{}, s.readErr("stats", err)
	}
	return st, nil
}
