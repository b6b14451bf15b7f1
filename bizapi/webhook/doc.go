// Package webhook builds the On-Premises webhook payloads and delivers them: a Dispatcher posts
// queued callbacks to the configured URL, signs them, retries with growing backoff, and deletes them
// once the receiver answered 2xx.
//
// # Payloads
//
// ForInbound and ForStatus build the On-Premises shapes ({"contacts","messages"} and
// {"statuses"}). The gateway queues them (store.Store with the status change that caused them, or
// MemQueue when callback_persist is false) and calls Dispatcher.Wake.
//
// # Delivery
//
// A request carries one callback, or several (a batch, below):
//
//	POST <webhooks.url>
//	Content-Type: application/json
//	User-Agent: bizapi/<version>
//	X-Chatd-Callback-Attempt: <n>        1 for the first attempt, 2 for the first retry, …
//	X-Chatd-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>   (when a secret is set)
//
//	<the payload, or the batch's payloads merged>
//
// Only a 2xx response counts as delivered; the request's callbacks are then deleted from the queue.
// Anything else — another status, a redirect (never followed), a timeout (Settings.Timeout, 10 s by
// default), a refused or broken connection — is a failed attempt of every callback in the request:
// each stays queued with its attempt count, the error (the status code or the error text; never the
// URL's query or the secret), and a next time of now + min(attempts × callback_backoff_delay,
// max_callback_backoff_delay): 3 s, 6 s, 9 s, … up to 15 min with the defaults, then every 15 min,
// forever. The callbacks of a failed request share their next time, so they are retried together.
//
// At most Settings.MaxConcurrent requests are open at once; the Dispatcher starts a goroutine per
// request in flight, never per queued callback, so a queue of 100,000 behind a dead receiver costs
// nothing but the queue. Between rounds it sleeps until the next callback falls due or Wake is
// called (no polling; it does look again at least once a minute). When no URL is set, callbacks wait
// in the queue — On-Premises drops them — and are sent once a URL is configured (call Wake).
//
// # Batches
//
// The On-Premises payloads are arrays, so one request can carry several callbacks: up to
// Settings.MaxBatch (webhooks.max_callbacks_per_request, 100 by default) whose payloads are objects
// of the same keys, each an array ({"statuses":[…]}, or {"contacts":[…],"messages":[…]}), and that
// failed the same number of times, with at most MaxBatchBytes of payloads. The body is one object
// with each key's arrays concatenated in queue order; a lone callback is sent as queued, byte for
// byte, and so is a payload of another shape. MaxBatch 1 sends every callback alone.
//
// The Dispatcher never waits to fill a batch. A request with less than a full batch starts at once
// while fewer than two such requests are open; while two are, new callbacks wait for one of them to
// finish (its completion starts the next round) or for a full batch to be queued. At a low rate
// every callback is posted at once, alone; under load the requests grow instead of multiplying, and
// a slow receiver gets larger batches rather than a longer queue. Full batches start whenever a slot
// (MaxConcurrent) is free.
//
// # Guarantees
//
// At least once: a callback is deleted only after its 2xx arrived. If the response is lost (the
// connection breaks, the timeout strikes after the receiver acted, bizapi stops or crashes with the
// request in flight), the callback is sent again — after a restart too, with a persistent queue.
// Receivers must deduplicate: by the message id, and for statuses by (id, status).
//
// No ordering between requests: callbacks are started oldest (longest due) first, but up to
// MaxConcurrent requests are in flight at once and a failed one is retried later while the others
// go on, so a receiver can see "delivered" before "sent", or a reply before the message it answers.
// On-Premises gives no ordering guarantee either; use the timestamps in the payloads, and let a
// status never go backwards. Within one request the callbacks are in queue order.
//
// # Signature
//
// With a secret set (Settings.Secret) every request carries X-Chatd-Signature, computed by Sign over
// the timestamp and the exact body bytes. Receivers check it with Verify, or the same few lines in
// any language: HMAC-SHA256 with the secret as key over "<t>." + raw body, hex, constant-time
// compare with v1, and refuse a t too far from their clock (a replayed request). The timestamp is
// the time of the attempt, so a retry carries a fresh one.
package webhook
