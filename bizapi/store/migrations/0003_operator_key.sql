-- 0003_operator_key: the chatd operator's Ed25519 public key, pinned at registration. It verifies
-- the signed IP address list (package iplist), so it must be a key the business trusted when it
-- registered, never one fetched along with the list.
--
-- Idempotent like 0001 (IF NOT EXISTS). A table of its own, not a column of account: an existing
-- account row gains no column (ALTER TABLE cannot be re-run), and the key is written apart from
-- the account (PinOperatorKey at verify, PinOperatorKeyIfNone for trust on first use), never by the
-- config cache's PutAccount.

-- At most one row; no row: no operator key is pinned. public_key is the raw 32-byte Ed25519 key.
CREATE TABLE IF NOT EXISTS operator_key (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    public_key BLOB    NOT NULL CHECK (length(public_key) = 32),
    pinned_at  INTEGER NOT NULL
) STRICT;
