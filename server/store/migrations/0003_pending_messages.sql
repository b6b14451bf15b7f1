-- 0003_pending_messages: the delivery queue of messages becomes a flag on the message row, receipts get a
-- table of their own, and ids come from one counter the store keeps.
--
-- Every message used to cost seven B-tree writes before its receipt was acknowledged: the message row and
-- its (sender, client_id) index, the queue row and its (recipient, seq) index, two AUTOINCREMENT
-- counter updates (sqlite_sequence) and a foreign-key lookup; then as many again to take the queue
-- row out and queue the receipt. Now:
--
--   messages.pending = 1   the message is queued for its recipient; a partial index on (recipient, id)
--                          holds exactly the pending messages, so setting pending = 0 dequeues it.
--                          The queue item's seq is the message id.
--   receipts               one row per receipt not yet acknowledged by the message's sender,
--                          WITHOUT ROWID on (recipient, seq): one B-tree.
--   store_meta 'next_seq'  the next message id or receipt seq. The store hands both out from this one
--                          counter (so a seq never names two items) and writes it in every transaction
--                          that used it, so a value is never handed out twice, even after the row that
--                          held the largest one is gone (what AUTOINCREMENT was for).
--
-- Existing data: pending messages keep their ids (their seq becomes the id: a client deduplicates on the
-- message id, and its cursor starts afresh with each connection); queued receipts get new seqs above
-- every id and seq handed out so far, in their old order.

CREATE TABLE store_meta (
    key   TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO store_meta (key, value) VALUES ('next_seq', 1 + max(
    coalesce((SELECT max(id) FROM messages), 0),
    coalesce((SELECT max(seq) FROM queue), 0),
    coalesce((SELECT max(seq) FROM sqlite_sequence WHERE name IN ('messages', 'queue')), 0)));

CREATE TABLE receipts (
    recipient  TEXT    NOT NULL,  -- the message's sender, who is told
    seq        INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    type       INTEGER NOT NULL CHECK (type IN (1, 2)),  -- 1 delivered, 2 read
    at         INTEGER NOT NULL,
    PRIMARY KEY (recipient, seq)
) WITHOUT ROWID;

INSERT INTO receipts (recipient, seq, message_id, type, at)
    SELECT recipient,
           (SELECT value FROM store_meta WHERE key = 'next_seq') + row_number() OVER (ORDER BY seq) - 1,
           message_id, receipt_type, receipt_at
    FROM queue WHERE kind = 2;

UPDATE store_meta SET value = value + (SELECT count(*) FROM receipts) WHERE key = 'next_seq';

CREATE TABLE messages_v3 (
    id              INTEGER PRIMARY KEY,  -- from store_meta 'next_seq'
    sender          TEXT    NOT NULL,
    recipient       TEXT    NOT NULL,
    client_id       TEXT    NOT NULL,
    content_version INTEGER NOT NULL,
    content         BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    read_at         INTEGER,
    pending         INTEGER NOT NULL DEFAULT 0 CHECK (pending IN (0, 1)),
    UNIQUE (sender, client_id)
);

INSERT INTO messages_v3 (id, sender, recipient, client_id, content_version, content, created_at,
                         delivered_at, read_at, pending)
    SELECT id, sender, recipient, client_id, content_version, content, created_at, delivered_at, read_at,
           id IN (SELECT message_id FROM queue WHERE kind = 1)
    FROM messages;

DROP TRIGGER messages_enqueue;
DROP TRIGGER messages_receipts;
DROP TABLE queue;
DROP TABLE messages;
ALTER TABLE messages_v3 RENAME TO messages;

CREATE INDEX messages_pending ON messages (recipient, id) WHERE pending = 1;
