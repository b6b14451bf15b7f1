package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/chatd-dev/chatd/internal/sqlitedb"
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
	// FromBusiness is set in Pending items: the sender is a business account.
	FromBusiness bool
}

// SaveMessage stores m (From, To, ClientID, ContentVersion, Content) and, in
// the same transaction, enqueues a delivery item for m.To. If (From, ClientID)
// already exists it stores nothing and returns the existing message with
// dup=true (the retry's To and Content are not compared). The returned
// message has ID and CreatedAt set. When SaveMessage returns without error,
// the message and its queue item are durable (fsynced).
//
// From, To and ClientID must be non-empty (ErrInvalidArgument). The store does
// not check that From or To are registered accounts; routing does (or
// Pipeline.SaveMessageAsync with CheckRecipient).
func (s *Store) SaveMessage(ctx context.Context, m Message) (saved Message, dup bool, err error) {
	if err := checkMessage(m); err != nil {
		return Message{}, false, err
	}
	var res saveResult
	if err := s.exec(ctx, s.saveOp(m, TrustRecipient, &res)); err != nil {
		return Message{}, false, err
	}
	return res.saved, res.dup, nil
}

// RecipientCheck says whether Pipeline.SaveMessageAsync first checks, inside
// the write, that the recipient is a registered account.
type RecipientCheck bool

const (
	// CheckRecipient: an unregistered m.To stores nothing and fails the save
	// with ErrUnknownRecipient (a normal outcome: the pipeline goes on).
	CheckRecipient RecipientCheck = true
	// TrustRecipient: the caller already knows m.To is registered.
	TrustRecipient RecipientCheck = false
)

// SaveMessageAsync is SaveMessage through the pipeline: it queues the save
// and returns; done(saved, dup, err) runs after the COMMIT that made the
// message and its queue item durable (see Pipeline for the rules of done).
// With CheckRecipient the same write first checks that m.To is registered,
// and done gets ErrUnknownRecipient if not. Two saves with the same (From,
// ClientID) in one pipeline — even in one transaction — store one message:
// the second gets dup=true and the first one's ID.
func (p *Pipeline) SaveMessageAsync(ctx context.Context, m Message, check RecipientCheck,
	done func(saved Message, dup bool, err error)) error {
	if err := checkMessage(m); err != nil {
		return err
	}
	res := new(saveResult)
	return p.submit(ctx, p.s.saveOp(m, check, res), func(err error) {
		switch {
		case err != nil:
			done(Message{}, false, err)
		case res.unknown:
			done(Message{}, false, fmt.Errorf("%w: %s", ErrUnknownRecipient, m.To))
		default:
			done(res.saved, res.dup, nil)
		}
	})
}

// Item is the delivery item that saving m queued for m.To: its Seq is the message id. FromBusiness
// is the caller's to set (Pending joins it from the sender's account).
func (m Message) Item() Item {
	return Item{Seq: m.ID, Recipient: m.To, Kind: ItemMessage, Message: m}
}

func checkMessage(m Message) error {
	if m.From == "" || m.To == "" || m.ClientID == "" {
		return fmt.Errorf("%w: message needs From, To and ClientID", ErrInvalidArgument)
	}
	return nil
}

type saveResult struct {
	saved   Message
	dup     bool
	unknown bool // CheckRecipient found m.To unregistered
}

// saveOp is the write operation of SaveMessage; it leaves its outcome in res.
func (s *Store) saveOp(m Message, check RecipientCheck, res *saveResult) func(w *writeStmts) error {
	content := m.Content
	if content == nil {
		content = []byte{} // the driver binds a nil slice as NULL
	}
	return func(w *writeStmts) error {
		created := s.now().UnixNano()
		insert := w.insertMessage
		if check {
			insert = w.insertMessageChecked
		}
		id := w.nextSeq
		r, err := insert.ExecContext(bg,
			id, m.From, m.To, m.ClientID, int64(m.ContentVersion), content, created)
		if err != nil {
			return fmt.Errorf("store: save message: %w", err)
		}
		if n, err := r.RowsAffected(); err != nil {
			return fmt.Errorf("store: save message: %w", err)
		} else if n == 0 { // an unregistered recipient, or a retry of a send we already have
			if check {
				var one int
				err := w.accountExists.QueryRowContext(bg, m.To).Scan(&one)
				if errors.Is(err, sql.ErrNoRows) {
					res.unknown = true
					return nil
				}
				if err != nil {
					return fmt.Errorf("store: save message: recipient: %w", err)
				}
			}
			saved, err := scanMessage(w.messageByClient.QueryRowContext(bg, m.From, m.ClientID))
			if err != nil {
				return err
			}
			res.saved, res.dup = saved, true
			return nil
		}
		w.takeSeq()
		res.saved = Message{
			ID:             id,
			From:           m.From,
			To:             m.To,
			ClientID:       m.ClientID,
			ContentVersion: m.ContentVersion,
			Content:        content,
			CreatedAt:      time.Unix(0, created).UTC(),
		}
		return nil
	}
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
	m.DeliveredAt = sqlitedb.TimeFrom(delivered)
	m.ReadAt = sqlitedb.TimeFrom(readStamp)
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
		(SELECT count(*) FROM messages WHERE pending = 1) + (SELECT count(*) FROM receipts)`).Scan(&accounts, &messages, &queued)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("store: stats: %w", err)
	}
	return accounts, messages, queued, nil
}
