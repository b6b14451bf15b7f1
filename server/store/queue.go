package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/chatd-dev/chatd/internal/sqlitedb"
)

// ReceiptType says what happened to a message.
type ReceiptType int

const (
	ReceiptDelivered ReceiptType = 1 // the recipient's client stored it (acked the delivery)
	ReceiptRead      ReceiptType = 2 // the recipient read it
)

func (t ReceiptType) String() string {
	switch t {
	case ReceiptDelivered:
		return "delivered"
	case ReceiptRead:
		return "read"
	}
	return fmt.Sprintf("ReceiptType(%d)", int(t))
}

// Receipt tells a sender what happened to one of its messages.
type Receipt struct {
	MessageID int64
	ClientID  string // the original sender's client message id
	Type      ReceiptType
	By        string // the phone that received / read the message
	At        time.Time
}

// ItemKind is the kind of a queued delivery item.
type ItemKind int

const (
	ItemMessage ItemKind = 1 // a message addressed to the recipient
	ItemReceipt ItemKind = 2 // a receipt about a message the recipient sent
)

func (k ItemKind) String() string {
	switch k {
	case ItemMessage:
		return "message"
	case ItemReceipt:
		return "receipt"
	}
	return fmt.Sprintf("ItemKind(%d)", int(k))
}

// Item is one pending delivery to Recipient: a message addressed to them, or
// a receipt about a message they sent.
type Item struct {
	Seq       int64 // delivery id, unique store-wide, increasing in enqueue order
	Recipient string
	Kind      ItemKind
	Message   Message // when Kind == ItemMessage (zero otherwise)
	Receipt   Receipt // when Kind == ItemReceipt (zero otherwise)
}

// selectPending merges recipient's two queues in seq order: pending messages (their seq is their id,
// from the partial index messages_pending) and receipts; each side is cut at the limit first.
const selectPending = `
	SELECT q.seq, q.kind, q.rtype, q.rat,
	       m.id, m.sender, m.recipient, m.client_id, m.content_version,
	       CASE WHEN q.kind = 1 THEN m.content END,
	       m.created_at, m.delivered_at, m.read_at, coalesce(a.business, 0)
	FROM (
		SELECT * FROM (SELECT id AS seq, 1 AS kind, NULL AS rtype, NULL AS rat, id AS mid FROM messages
			WHERE recipient = ?1 AND pending = 1 AND id > ?2 ORDER BY id LIMIT ?3)
		UNION ALL
		SELECT * FROM (SELECT seq, 2, type, at, message_id FROM receipts
			WHERE recipient = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3)
	) q
	JOIN messages m ON m.id = q.mid
	LEFT JOIN accounts a ON a.phone = m.sender
	ORDER BY q.seq
	LIMIT ?3`

// Pending returns recipient's queued items with Seq > afterSeq in Seq order,
// at most limit. limit must be positive (ErrInvalidArgument otherwise).
func (s *Store) Pending(ctx context.Context, recipient string, afterSeq int64, limit int) ([]Item, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: limit %d", ErrInvalidArgument, limit)
	}
	rows, err := s.rs.pending.QueryContext(ctx, recipient, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("store: pending: %w", err)
	}
	defer rows.Close()
	var items []Item
	for rows.Next() {
		var (
			it                     Item
			rtype, rat             sql.NullInt64
			m                      Message
			version, created       int64
			delivered, readStamped sql.NullInt64
		)
		if err := rows.Scan(&it.Seq, &it.Kind, &rtype, &rat,
			&m.ID, &m.From, &m.To, &m.ClientID, &version, &m.Content,
			&created, &delivered, &readStamped, &m.FromBusiness); err != nil {
			return nil, fmt.Errorf("store: pending: %w", err)
		}
		it.Recipient = recipient
		switch it.Kind {
		case ItemMessage:
			m.ContentVersion = uint32(version)
			m.CreatedAt = time.Unix(0, created).UTC()
			m.DeliveredAt = sqlitedb.TimeFrom(delivered)
			m.ReadAt = sqlitedb.TimeFrom(readStamped)
			it.Message = m
		case ItemReceipt:
			it.Receipt = Receipt{
				MessageID: m.ID,
				ClientID:  m.ClientID,
				Type:      ReceiptType(rtype.Int64),
				By:        m.To,
				At:        sqlitedb.TimeFrom(rat),
			}
		}
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: pending: %w", err)
	}
	return items, nil
}

// QueueDepth returns the number of pending items of all recipients.
func (s *Store) QueueDepth(ctx context.Context) (int64, error) {
	var n int64
	if err := s.r.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM messages WHERE pending = 1) + (SELECT count(*) FROM receipts)`).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: queue depth: %w", err)
	}
	return n, nil
}

// Ack removes recipient's item seq from the queue (no-op returning nil notify
// if it is not there or belongs to someone else — acks are idempotent). If the
// item was a message not yet delivered, it sets DeliveredAt and enqueues a
// ReceiptDelivered item for the message's sender, in the same transaction.
// notify lists the phones whose queue grew (to wake their sessions).
func (s *Store) Ack(ctx context.Context, recipient string, seq int64) (notify []string, err error) {
	return s.AckBatch(ctx, recipient, []int64{seq})
}

// AckBatch is Ack for many seqs in one transaction. notify has no duplicates.
func (s *Store) AckBatch(ctx context.Context, recipient string, seqs []int64) (notify []string, err error) {
	if len(seqs) == 0 {
		return nil, nil
	}
	var queued []Item
	if err := s.exec(ctx, s.ackOp(recipient, seqs, seqs, &queued)); err != nil {
		return nil, err
	}
	return recipients(queued), nil
}

// AckBatchAsync is AckBatch through the pipeline: done(queued, err) runs
// after the COMMIT (see Pipeline) with the receipt items the ack queued, in
// Seq order (recipients(queued) is AckBatch's notify). An empty seqs writes
// nothing; done still runs in pipeline order.
func (p *Pipeline) AckBatchAsync(ctx context.Context, recipient string, seqs []int64,
	done func(queued []Item, err error)) error {
	seqs = slices.Clone(seqs)
	return p.AckItemsAsync(ctx, recipient, seqs, seqs, done)
}

// AckItemsAsync is AckBatchAsync for a caller that knows which of the acknowledged seqs are messages
// and which receipts (a seq it cannot tell may be in both lists): a kind with no seqs costs no
// statement. It keeps the slices until done.
func (p *Pipeline) AckItemsAsync(ctx context.Context, recipient string, messages, receipts []int64,
	done func(queued []Item, err error)) error {
	if len(messages) == 0 && len(receipts) == 0 {
		return p.Barrier(ctx, func(err error) { done(nil, err) })
	}
	queued := new([]Item)
	return p.submit(ctx, p.s.ackOp(recipient, messages, receipts, queued), func(err error) {
		if err != nil {
			done(nil, err)
			return
		}
		done(*queued, nil)
	})
}

// recipients lists the recipients of items without duplicates, in order of first appearance: the
// phones whose sessions a write that queued items should wake.
func recipients(items []Item) []string {
	var ps []string
	for _, it := range items {
		if !slices.Contains(ps, it.Recipient) { // a write queues for few distinct phones
			ps = append(ps, it.Recipient)
		}
	}
	return ps
}

// ackOp is the write operation of AckBatch; it sets *queued to the receipts it queues. msgs are the
// acknowledged seqs that may be messages (their ids), rcpts those that may be receipts: one statement
// dequeues the messages among msgs and returns the ones this ack delivers, one queues their delivered
// receipts, in message id order, and one deletes the receipts among rcpts.
func (s *Store) ackOp(recipient string, msgs, rcpts []int64, queued *[]Item) func(w *writeStmts) error {
	return func(w *writeStmts) error {
		*queued = nil // empty if a batch is ever retried
		if len(rcpts) > 0 {
			if _, err := w.ackReceipts.ExecContext(bg, recipient, sqlitedb.IDList(rcpts)); err != nil {
				return fmt.Errorf("store: ack: %w", err)
			}
		}
		if len(msgs) == 0 {
			return nil
		}
		now := s.now().UnixNano()
		rows, err := w.ackMessages.QueryContext(bg, now, recipient, sqlitedb.IDList(msgs))
		if err != nil {
			return fmt.Errorf("store: ack: %w", err)
		}
		rl := receiptList{by: recipient}
		for rows.Next() {
			var r receiptFor
			if err := rows.Scan(&r.mid, &r.to, &r.clientID, &r.delivered); err != nil {
				rows.Close()
				return fmt.Errorf("store: ack: %w", err)
			}
			if r.delivered { // not read before the ack, which delivers it now
				rl.ms = append(rl.ms, r)
			}
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return fmt.Errorf("store: ack: %w", err)
		}
		if *queued, err = rl.insert(w, now); err != nil {
			return fmt.Errorf("store: ack: %w", err)
		}
		return nil
	}
}

// receiptList collects the messages an operation queues receipts for, to insert them with one
// statement per receipt type.
type receiptList struct {
	by string // the messages' recipient
	ms []receiptFor
}

// receiptFor is a message that gets a delivered receipt, a read receipt, or both (delivered first).
type receiptFor struct {
	mid             int64
	to              string // the message's sender, who gets the receipts
	clientID        string
	delivered, read bool
}

// insert queues the receipts in message id order, each with a new seq, and returns them as items in
// seq order. The i-th message's delivered receipt gets seq base+stride·i, its read receipt the next
// (stride is 2 when there are read receipts): the seqs the statement computes from the position in
// the JSON list, the same as the items say.
//
// A delivered receipt is written for every message in the list when all of them get one (an ack),
// and otherwise for those still pending (a read mark: messages not acknowledged yet).
func (l *receiptList) insert(w *writeStmts, at int64) ([]Item, error) {
	if len(l.ms) == 0 {
		return nil, nil
	}
	slices.SortFunc(l.ms, func(a, b receiptFor) int { return cmp.Compare(a.mid, b.mid) })
	var nDelivered, nRead int
	for _, m := range l.ms {
		if m.delivered {
			nDelivered++
		}
		if m.read {
			nRead++
		}
	}
	stride := 1
	if nRead > 0 {
		stride = 2
	}
	base := w.takeSeqs(stride * len(l.ms))
	when := time.Unix(0, at).UTC()
	items := make([]Item, 0, nDelivered+nRead)
	ids := make([]int64, len(l.ms))
	for i, m := range l.ms {
		ids[i] = m.mid
		seq := base + int64(stride*i)
		if m.delivered {
			items = append(items, Item{Seq: seq, Recipient: m.to, Kind: ItemReceipt, Receipt: Receipt{
				MessageID: m.mid, ClientID: m.clientID, Type: ReceiptDelivered, By: l.by, At: when}})
		}
		if m.read {
			items = append(items, Item{Seq: seq + 1, Recipient: m.to, Kind: ItemReceipt, Receipt: Receipt{
				MessageID: m.mid, ClientID: m.clientID, Type: ReceiptRead, By: l.by, At: when}})
		}
	}
	list := sqlitedb.IDList(ids)
	if nDelivered > 0 {
		onlyPending := 0
		if nDelivered < len(l.ms) {
			onlyPending = 1
		}
		if _, err := w.insertReceipts.ExecContext(bg, base, stride, int(ReceiptDelivered), at, list, onlyPending); err != nil {
			return nil, err
		}
	}
	if nRead > 0 { // every message of a read mark gets a read receipt
		if _, err := w.insertReceipts.ExecContext(bg, base+1, stride, int(ReceiptRead), at, list, 0); err != nil {
			return nil, err
		}
	}
	return items, nil
}

// MarkRead marks messages addressed to reader as read (only those with ReadAt
// zero; ids of other recipients and unknown ids are ignored), enqueues one
// ReceiptRead item per newly-read message for its sender, and returns the
// senders to wake. A message read before its delivery ack also counts as
// delivered: DeliveredAt is set and the ReceiptDelivered item is enqueued
// first, so the sender always sees delivered before read (a later Ack of the
// message item then enqueues nothing). Messages are processed in ascending id
// order. Idempotent: marking a read message again does nothing.
func (s *Store) MarkRead(ctx context.Context, reader string, ids []int64) (notify []string, err error) {
	ids = readIDs(ids)
	if len(ids) == 0 {
		return nil, nil
	}
	var queued []Item
	if err := s.exec(ctx, s.readOp(reader, ids, &queued)); err != nil {
		return nil, err
	}
	return recipients(queued), nil
}

// MarkReadAsync is MarkRead through the pipeline: done(queued, err) runs after
// the COMMIT (see Pipeline) with the receipt items it queued, in Seq order. An
// empty ids writes nothing; done still runs in pipeline order.
func (p *Pipeline) MarkReadAsync(ctx context.Context, reader string, ids []int64,
	done func(queued []Item, err error)) error {
	ids = readIDs(ids)
	if len(ids) == 0 {
		return p.Barrier(ctx, func(err error) { done(nil, err) })
	}
	queued := new([]Item)
	return p.submit(ctx, p.s.readOp(reader, ids, queued), func(err error) {
		if err != nil {
			done(nil, err)
			return
		}
		done(*queued, nil)
	})
}

// readIDs returns ids sorted and without duplicates, in a new slice.
func readIDs(ids []int64) []int64 {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	return slices.Compact(ids)
}

// readOp is the write operation of MarkRead; it sets *queued to the receipts it queues. One statement marks the
// messages read and returns them; one queues their receipts: a delivered one first for a message not
// acknowledged yet (still pending), then the read one.
func (s *Store) readOp(reader string, ids []int64, queued *[]Item) func(w *writeStmts) error {
	return func(w *writeStmts) error {
		*queued = nil
		now := s.now().UnixNano()
		rows, err := w.markRead.QueryContext(bg, now, sqlitedb.IDList(ids), reader)
		if err != nil {
			return fmt.Errorf("store: mark read: %w", err)
		}
		rl := receiptList{by: reader}
		for rows.Next() {
			r := receiptFor{read: true}
			// Still pending: not acknowledged, so not delivered either until now.
			if err := rows.Scan(&r.mid, &r.to, &r.clientID, &r.delivered); err != nil {
				rows.Close()
				return fmt.Errorf("store: mark read: %w", err)
			}
			rl.ms = append(rl.ms, r)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return fmt.Errorf("store: mark read: %w", err)
		}
		if *queued, err = rl.insert(w, now); err != nil {
			return fmt.Errorf("store: mark read: %w", err)
		}
		return nil
	}
}
