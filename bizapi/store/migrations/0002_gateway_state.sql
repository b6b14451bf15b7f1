-- 0002_gateway_state: what the gateway remembers about the network across restarts.
--
-- Idempotent like 0001 (IF NOT EXISTS). A table of its own, not a column of account: PutAccount
-- replaces the registration, and a new registration of the same bizapi still crosses the same
-- network, so the last good path outlives it.

-- At most one row. last_endpoint is the chat endpoint of the last login, "host:port/transport"
-- (transport.ParseEndpoint); '' when none is known.
CREATE TABLE IF NOT EXISTS gateway_state (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    last_endpoint TEXT    NOT NULL DEFAULT '',
    updated_at    INTEGER NOT NULL
) STRICT;
