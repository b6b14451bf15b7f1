-- 0001_init: admin users and tokens, settings, the account, the outbox, the inbox and the webhook
-- callback queue.
--
-- Every statement is idempotent (IF NOT EXISTS), so re-running this file against a database that
-- already has the schema changes nothing. Tables are STRICT: a value of the wrong type is an error,
-- not a silent conversion.
--
-- Times are INTEGER nanoseconds since the Unix epoch (UTC); NULL means "not yet" / "none".
-- Booleans are INTEGER 0/1.

CREATE TABLE IF NOT EXISTS users (
    name          TEXT    NOT NULL PRIMARY KEY,
    password_hash BLOB    NOT NULL,                 -- bcrypt
    must_change   INTEGER NOT NULL DEFAULT 0 CHECK (must_change IN (0, 1)),
    updated_at    INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Bearer tokens by the SHA-256 of their value. expires_at NULL: never expires. No foreign key to
-- users: PutUser replaces a user in place, and there is no DeleteUser in this version.
CREATE TABLE IF NOT EXISTS tokens (
    hash       BLOB    NOT NULL PRIMARY KEY,
    user       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
) STRICT, WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS tokens_by_user ON tokens (user);
CREATE INDEX IF NOT EXISTS tokens_by_expiry ON tokens (expires_at) WHERE expires_at IS NOT NULL;

-- The application settings document (JSON): at most one row.
CREATE TABLE IF NOT EXISTS settings (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    doc        BLOB,
    updated_at INTEGER NOT NULL
) STRICT;

-- The business number's registration: at most one row. device_priv is the X25519 private key:
-- the database file is created 0600.
CREATE TABLE IF NOT EXISTS account (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    phone        TEXT    NOT NULL,
    method       TEXT    NOT NULL DEFAULT '',
    cert         TEXT    NOT NULL DEFAULT '',
    vname        TEXT    NOT NULL DEFAULT '',
    registered   INTEGER NOT NULL DEFAULT 0 CHECK (registered IN (0, 1)),
    business     INTEGER NOT NULL DEFAULT 0 CHECK (business IN (0, 1)),
    display_name TEXT    NOT NULL DEFAULT '',
    device_priv  BLOB    NOT NULL CHECK (length(device_priv) = 32),
    server_key   BLOB    NOT NULL CHECK (length(server_key) = 32),
    config       BLOB,
    config_at    INTEGER,
    verified_at  INTEGER,
    updated_at   INTEGER NOT NULL
) STRICT;

-- The outbox. seq orders it and is the cursor of Unsent(afterSeq): AUTOINCREMENT so that a seq is
-- never handed out twice, even after the row holding the largest one is deleted (a retention job,
-- later), which would make a cursor skip a message. id is the API message id and the chatd client
-- id. Statuses only move forward: accepted < sent < delivered < read; failed is terminal.
CREATE TABLE IF NOT EXISTS messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT    NOT NULL UNIQUE,
    recipient     TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    preview_url   INTEGER NOT NULL DEFAULT 0 CHECK (preview_url IN (0, 1)),
    -- ORs, not IN (…): SQLite evaluates an IN list of more than two constants through a temporary
    -- b-tree built on every insert (this CHECK was 15% of AddMessage).
    status        TEXT    NOT NULL DEFAULT 'accepted'
                  CHECK (status = 'accepted' OR status = 'sent' OR status = 'delivered'
                         OR status = 'read' OR status = 'failed'),
    server_id     INTEGER,
    created_at    INTEGER NOT NULL,
    sent_at       INTEGER,
    delivered_at  INTEGER,
    read_at       INTEGER,
    failed_at     INTEGER,
    error_code    INTEGER,
    error_title   TEXT,
    error_details TEXT
) STRICT;

-- Unsent: only the messages still waiting for the server's ack are in this index, so the gateway's
-- scan costs O(unsent), not O(outbox). Queries must say status = 'accepted' literally (a bound
-- parameter cannot match a partial index).
CREATE INDEX IF NOT EXISTS messages_unsent ON messages (seq) WHERE status = 'accepted';

-- The inbox. server_id is chatd's message id, the dedup key of SaveInbound.
CREATE TABLE IF NOT EXISTS inbound (
    id             TEXT    NOT NULL PRIMARY KEY,
    server_id      INTEGER NOT NULL UNIQUE,
    sender         TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    body           TEXT    NOT NULL,
    content        BLOB,
    server_time    INTEGER,
    received_at    INTEGER NOT NULL,
    read_requested INTEGER NOT NULL DEFAULT 0 CHECK (read_requested IN (0, 1)),
    read_sent      INTEGER NOT NULL DEFAULT 0 CHECK (read_sent IN (0, 1))
) STRICT;

-- ReadPending: read receipts requested and not yet acknowledged, oldest first. Same literal-WHERE
-- rule as messages_unsent.
CREATE INDEX IF NOT EXISTS inbound_read_pending ON inbound (received_at)
    WHERE read_requested = 1 AND read_sent = 0;

-- Webhook callbacks waiting to be delivered. AUTOINCREMENT: a callback id is never reused, so a
-- dispatcher that deletes a stale id cannot hit a newer callback.
CREATE TABLE IF NOT EXISTS callbacks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    payload    BLOB    NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    last_error TEXT    NOT NULL DEFAULT ''
) STRICT;

-- DueCallbacks orders by (next_at, id); the index entries carry the rowid (= id), so the index
-- alone gives that order.
CREATE INDEX IF NOT EXISTS callbacks_by_next_at ON callbacks (next_at);
