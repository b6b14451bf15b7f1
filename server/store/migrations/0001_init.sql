-- 0001_init: accounts, verification codes, messages and the delivery queue.
--
-- Every statement is idempotent (IF NOT EXISTS) so that re-running this file
-- against a database that already has the schema changes nothing.
--
-- Times are INTEGER nanoseconds since the Unix epoch, UTC. NULL means "not yet"
-- (delivered_at, read_at).

CREATE TABLE IF NOT EXISTS accounts (
    phone        TEXT    NOT NULL PRIMARY KEY,          -- E.164 digits, no '+'
    business     INTEGER NOT NULL DEFAULT 0 CHECK (business IN (0, 1)),
    display_name TEXT    NOT NULL DEFAULT '',
    device_pub   BLOB    NOT NULL UNIQUE CHECK (length(device_pub) = 32),
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS codes (
    phone        TEXT    NOT NULL PRIMARY KEY,
    hash         BLOB    NOT NULL,
    method       TEXT    NOT NULL CHECK (method IN ('sms', 'voice')),
    business     INTEGER NOT NULL DEFAULT 0 CHECK (business IN (0, 1)),
    display_name TEXT    NOT NULL DEFAULT '',
    expires_at   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS codes_by_expiry ON codes (expires_at);

-- AUTOINCREMENT (not just INTEGER PRIMARY KEY) so that an id is never reused,
-- even after the row holding the largest id is deleted: clients deduplicate
-- on the server message id.
CREATE TABLE IF NOT EXISTS messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    sender          TEXT    NOT NULL,
    recipient       TEXT    NOT NULL,
    client_id       TEXT    NOT NULL,
    content_version INTEGER NOT NULL,
    content         BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    read_at         INTEGER,
    UNIQUE (sender, client_id)
);

-- The delivery queue: one row per pending item. AUTOINCREMENT for the same
-- reason as above, and more critically: Pending(afterSeq) would skip an item
-- whose seq re-used one the client had already acknowledged.
--   kind 1 (message): message_id is the message addressed to recipient.
--   kind 2 (receipt): message_id is the message recipient sent; receipt_type
--                     1 = delivered, 2 = read; receipt_at is when it happened.
-- The receipt's client id and "by" phone are joined from messages at read
-- time (messages.client_id, messages.recipient).
CREATE TABLE IF NOT EXISTS queue (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient    TEXT    NOT NULL,
    kind         INTEGER NOT NULL CHECK (kind IN (1, 2)),
    message_id   INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    receipt_type INTEGER,
    receipt_at   INTEGER,
    CHECK ((kind = 1 AND receipt_type IS NULL AND receipt_at IS NULL)
        OR (kind = 2 AND receipt_type IN (1, 2) AND receipt_at IS NOT NULL))
);

CREATE INDEX IF NOT EXISTS queue_by_recipient ON queue (recipient, seq);
-- No index on queue(message_id): messages are never deleted by this schema
-- version. A future retention migration that deletes messages must add one,
-- or every cascaded delete scans the queue.
