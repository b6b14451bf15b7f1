// Package bizapi is the Business API client daemon: it holds the gateway connection to chatd for one
// business number and gives the business's developers the REST API and webhooks of the On-Premises
// Business API (DESIGN §5, ../shared/reference/onprem-api.md).
//
// Parts, each its own package:
//
//	store     durable state (SQLite now, PostgreSQL later): users, tokens, settings, account, the
//	          last good chat endpoint, outbox, inbox, webhook callbacks; group commit
//	settings  the application settings (GET/PATCH/DELETE /v1/settings/application) with defaults
//	webhook   the callback payloads (On-Premises shapes) and the dispatcher that posts them
//	gateway   the chatd connection: sends the outbox, stores what arrives, turns acks and receipts
//	          into statuses and callbacks, sends read receipts, answers contact lookups
//	api       the REST handlers, auth, errors with On-Premises codes, metrics
//
// Daemon (this package) assembles them; cmd/bizapi and cmd/quickstart start one.
//
// The path of a message: POST /v1/messages → store.AddMessage (durable, group-committed) → 201 with
// the id → gateway wakes, reads Unsent, client.Send → SendAck → store.MarkSent + "sent" callback →
// receipts → MarkStatus + "delivered"/"read" callbacks → webhook dispatcher posts them, retrying with
// backoff until the receiver answers 2xx.
package bizapi
