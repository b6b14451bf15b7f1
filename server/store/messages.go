package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Message is a message stored by the server. Content is opaque.
type Message struct {
	ID             int64  // server message id, assigned by the store, > 0, increasing
	From, To       string // phones
	ClientID       string // client message id chosen by the sender; (From, ClientID) is unique
	ContentVersion uint32
	Content        []byte    // opaque
	CreatedAt      time.Time // set by the store clock
	DeliveredAt    time.Time // zero until the recipient acked it
	ReadAt         time.Time // zero until read
}

// SaveMessage stores m (From, To, ClientID, ContentVersion, Content) and, in
// the same transaction, enqueues a delivery item for m.To. If (From, ClientID)
// already exists it stores nothing and returns the existing message with
// dup=true (the retry's To and Content are not compared). The returned
// message has ID and CreatedAt set. When SaveMessage returns without error,
// the message and its queue item are durable (fsynced).
//
// From, To and ClientID must be non-empty (ErrInvalidArgument). The store does
// not check that From or To are registered accounts; routing does.
func (s *Store) SaveMessage(ctx context.Context, m Message) (saved Message, dup bool, err error) {
	if m.From == "" || m.To == "" || m.ClientID == "" {
		return Message{}, false, fmt.Errorf("%w: message needs From, To and ClientID", ErrInvalidArgument)
	}
	content := m.Content
	if content == nil {
		content = []byte{} // the driver binds a nil slice as NULL
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		created := s.now().UnixNano()
		var id int64
		err := tx.QueryRowContext(ctx, `
			INSERT INTO messages (sender, recipient, client_id, content_version, content, created_at)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (sender, client_id) DO NOTHING
			RETURNING id`,
			m.From, m.To, m.ClientID, int64(m.ContentVersion), content, created).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) { // conflict: a retry of a send we already have
			dup = true
			saved, err = scanMessage(tx.QueryRowContext(ctx,
				selectMessage+` WHERE sender = ? AND client_id = ?`, m.From, m.ClientID))
			return err
		}
		if err != nil {
			return fmt.Errorf("store: save message: %w", err)
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO queue (recipient, kind, message_id) VALUES (?, ?, ?)`,
			m.To, ItemMessage, id); err != nil {
			return fmt.Errorf("store: enqueue message: %w", err)
		}
		saved = Message{
			ID:             id,
			From:           m.From,
			To:             m.To,
			ClientID:       m.ClientID,
			ContentVersion: m.ContentVersion,
			Content:        content,
			CreatedAt:      time.Unix(0, created).UTC(),
		}
		return nil
	})
	if err != nil {
		return Message{}, false, err
	}
	return saved, dup, nil
}

const selectMessage = `
	SELECT id, sender, recipient, client_id, content_version, content, created_at, delivered_at, read_at
	FROM messages`

func scanMessage(r rowScanner) (Message, error) {
	var (
		m                    Message
		version, created     int64
		delivered, readStamp sql.NullInt64
	)
	err := r.Scan(&m.ID, &m.From, &m.To, &m.ClientID, &version, &m.Content, &created, &delivered, &readStamp)
	if errors.Is(err, sql.ErrNoRows) {
		return Message{}, ErrNotFound
	}
	if err != nil {
		return Message{}, fmt.Errorf("store: message: %w", err)
	}
	m.ContentVersion = uint32(version)
	m.CreatedAt = time.Unix(0, created).UTC()
	m.DeliveredAt = timeFrom(delivered)
	m.ReadAt = timeFrom(readStamp)
	return m, nil
}

// Message returns the message with server id id, or ErrNotFound.
func (s *Store) Message(ctx context.Context, id int64) (Message, error) {
	return scanMessage(s.r.QueryRowContext(ctx, selectMessage+` WHERE id = ?`, id))
}

// Stats returns the number of accounts, stored messages and queued items,
// from one consistent snapshot.
func (s *Store) Stats(ctx context.Context) (accounts, messages, queued int64, err error) {
	err = s.r.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM accounts),
		(SELECT count(*) FROM messages),
		(SELECT count(*) FROM queue)`).Scan(&accounts, &messages, &queued)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("store: stats: %w", err)
	}
	return accounts, messages, queued, nil
}
