package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/chatd-dev/chatd/internal/sqlitedb"
)

// SaveInbound stores a received message and queues cb, once: if m.ServerID is stored already it
// changes nothing, queues nothing and reports dup. ID must not be empty and ServerID not 0
// (ErrInvalidArgument); a different message with the same ID but another ServerID is
// ErrDuplicate. A zero ReceivedAt is set to now. ReadRequested and ReadSent are stored as given.
func (s *SQLite) SaveInbound(ctx context.Context, m Inbound, cb *Callback) (dup bool, err error) {
	if m.ID == "" || m.ServerID == 0 {
		return false, fmt.Errorf("%w: inbound message needs ID and ServerID", ErrInvalidArgument)
	}
	if err := checkCallback(cb); err != nil {
		return false, err
	}
	now := s.now().UnixNano()
	received := now
	if !m.ReceivedAt.IsZero() {
		received = m.ReceivedAt.UnixNano()
	}
	err = s.exec(ctx, saveInboundOp(m, cb, now, received, &dup))
	if err != nil {
		return false, err
	}
	return dup, nil
}

// SaveInboundAsync is SaveInbound without waiting: done runs after the commit, on the store's writer
// goroutine (it must not block), in submission order. It returns an error (and done is never called)
// only if the operation could not be queued.
func (s *SQLite) SaveInboundAsync(ctx context.Context, m Inbound, cb *Callback, done func(dup bool, err error)) error {
	if m.ID == "" || m.ServerID == 0 {
		return fmt.Errorf("%w: inbound message needs ID and ServerID", ErrInvalidArgument)
	}
	if err := checkCallback(cb); err != nil {
		return err
	}
	now := s.now().UnixNano()
	received := now
	if !m.ReceivedAt.IsZero() {
		received = m.ReceivedAt.UnixNano()
	}
	var dup bool
	return s.submit(ctx, saveInboundOp(m, cb, now, received, &dup), func(err error) { done(dup && err == nil, err) })
}

func saveInboundOp(m Inbound, cb *Callback, now, received int64, dup *bool) func(w *writeStmts) error {
	return func(w *writeStmts) error {
		n, err := w.exec(w.saveInbound, m.ID, int64(m.ServerID), m.From, m.Type, m.Body,
			nullBytes(m.Content), sqlitedb.TimeArg(m.Timestamp), received, boolInt(m.ReadRequested), boolInt(m.ReadSent))
		if err != nil {
			if sqlitedb.IsUniqueViolation(err) { // the id PRIMARY KEY; server_id conflicts are DO NOTHING
				return fmt.Errorf("%w: inbound id %q", ErrDuplicate, m.ID)
			}
			return fmt.Errorf("store: save inbound: %w", err)
		}
		if n == 0 {
			*dup = true
			return nil
		}
		return w.insertCallback(cb, now)
	}
}

// Inbound returns a received message by ID (ErrNotFound).
func (s *SQLite) Inbound(ctx context.Context, id string) (Inbound, error) {
	if err := s.readable(); err != nil {
		return Inbound{}, err
	}
	m, err := scanInbound(s.rs.inbound.QueryRowContext(ctx, id))
	if err != nil {
		return Inbound{}, s.readErr("inbound", err)
	}
	return m, nil
}

// RequestRead sets ReadRequested on a received message and returns it as stored after the
// change. Idempotent: asking again changes nothing, and a receipt already confirmed (ReadSent)
// stays confirmed. ErrNotFound if there is no such message.
func (s *SQLite) RequestRead(ctx context.Context, id string) (Inbound, error) {
	var m Inbound
	err := s.exec(ctx, func(w *writeStmts) error {
		var err error
		m, err = scanInbound(w.requestRead.QueryRowContext(bg, id))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("store: request read: %w", err)
		}
		return nil
	})
	if err != nil {
		return Inbound{}, err
	}
	return m, nil
}

// ReadPending returns received messages with ReadRequested and not ReadSent, oldest ReceivedAt
// first (ties in the order they were stored), at most limit (> 0, else ErrInvalidArgument).
func (s *SQLite) ReadPending(ctx context.Context, limit int) ([]Inbound, error) {
	if err := checkLimit(limit); err != nil {
		return nil, err
	}
	if err := s.readable(); err != nil {
		return nil, err
	}
	rows, err := s.rs.readPending.QueryContext(ctx, int64(limit))
	if err != nil {
		return nil, s.readErr("read pending", err)
	}
	defer rows.Close()
	var out []Inbound
	for rows.Next() {
		m, err := scanInbound(rows)
		if err != nil {
			return nil, s.readErr("read pending", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, s.readErr("read pending", err)
	}
	return out, nil
}

// ReadSent sets ReadSent on these received messages, in one transaction. Unknown ids are ignored.
func (s *SQLite) ReadSent(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	return s.exec(ctx, func(w *writeStmts) error {
		for _, id := range ids {
			if _, err := w.exec(w.readSent, id); err != nil {
				return fmt.Errorf("store: read sent: %w", err)
			}
		}
		return nil
	})
}

func scanInbound(r rowScanner) (Inbound, error) {
	var (
		m                   Inbound
		serverID            int64
		serverTime          sql.NullInt64
		received            sql.NullInt64
		requested, readSent int64
	)
	if err := r.Scan(&m.ID, &serverID, &m.From, &m.Type, &m.Body, &m.Content, &serverTime, &received,
		&requested, &readSent); err != nil {
		return Inbound{}, err
	}
	m.ServerID = uint64(serverID)
	m.Timestamp = sqlitedb.TimeFrom(serverTime)
	m.ReceivedAt = sqlitedb.TimeFrom(received)
	m.ReadRequested = requested != 0
	m.ReadSent = readSent != 0
	return m, nil
}
