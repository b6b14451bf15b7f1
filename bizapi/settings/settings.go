// Package settings is bizapi's application settings: the On-Premises keys of
// /v1/settings/application that bizapi supports, their defaults and limits,
// PATCH semantics, and a [Live] holder the running parts read.
//
// # Keys
//
//	key                                 type     default   allowed
//	webhooks.url                        string   ""        "" (no callbacks) or an absolute http:// or https:// URL, ≤ 2048 bytes
//	webhooks.secret                     string   ""        "" (unsigned) or 16–512 bytes; write-only (GET shows "***" when set)
//	webhooks.max_concurrent_requests    integer  12        1–100
//	webhooks.max_callbacks_per_request  integer  100       1–1000 (bizapi's addition, see below)
//	webhooks.message.sent               boolean  true      see "Sent callbacks" below
//	webhooks.message.delivered          boolean  true
//	webhooks.message.read               boolean  false
//	sent_status                         boolean  (unset)   legacy, see below
//	callback_persist                    boolean  true
//	callback_backoff_delay_ms           integer  3000      100–3,600,000
//	max_callback_backoff_delay_ms       integer  900000    1,000–86,400,000, and ≥ callback_backoff_delay_ms
//
// Other On-Premises keys (pass_through, heartbeat_interval, media.*, …) are
// not supported: a PATCH naming one is refused with an error naming it.
// On-Premises required an HTTPS webhook; bizapi also accepts http:// so that a
// receiver on the same host or a test needs no certificate.
//
// # Callbacks per request
//
// webhooks.max_callbacks_per_request is not an On-Premises key: it bounds how many queued
// callbacks the dispatcher merges into one webhook request ({"statuses":[…]} with several
// statuses, or {"contacts":[…],"messages":[…]} with several messages), which the On-Premises
// payload format allows. 1 sends every callback in a request of its own. See package webhook.
//
// # Sent callbacks
//
// The "sent" status callback is wanted when webhooks.message.sent is true. When
// webhooks.message.sent was never set (or was reset with null), the legacy
// sent_status decides if it was set; when neither was set, the callback is
// sent (the default true of webhooks.message.sent). So sent_status=false alone
// turns "sent" callbacks off, and an explicit webhooks.message.sent always
// wins. GET shows the effective value under webhooks.message.sent, and
// sent_status only when it was set. "failed" callbacks are always sent.
//
// # Documents
//
// The JSON is the On-Premises shape. GET returns
//
//	{"settings":{"application":{"callback_backoff_delay_ms":3000,"callback_persist":true,
//	  "max_callback_backoff_delay_ms":900000,
//	  "webhooks":{"url":"","max_concurrent_requests":12,"message":{"sent":true,"delivered":true,"read":false}}}}}
//
// A PATCH body is the application object itself ({"webhooks":{"url":"…"}}) or
// the same wrapped as GET returns it ({"settings":{"application":{…}}}, a
// "meta" member is ignored), so a GET document can be edited and sent back.
// Only the keys present change; a key set to null returns to its default; a
// webhooks.secret of "***" (the mask GET shows) leaves the secret unchanged.
// Types are not converted: "12" is not an integer and 12.0 is not a whole
// number.
package settings

import (
	"sync"
	"sync/atomic"
	"time"
)

// Limits of the settings (see the package comment).
const (
	MinConcurrentRequests  = 1
	MaxConcurrentRequests  = 100
	MinCallbacksPerRequest = 1
	MaxCallbacksPerRequest = 1000
	MinBackoffDelayMS      = 100
	MaxBackoffDelayMS      = 3_600_000
	MinMaxBackoffDelayMS   = 1_000
	MaxMaxBackoffDelayMS   = 86_400_000
	MaxURLBytes            = 2048
	MinSecretBytes         = 16
	MaxSecretBytes         = 512

	// SecretMask is what GET shows in place of a set webhooks.secret.
	SecretMask = "***"
)

// OptBool is a boolean that may be unset. The zero value is Unset.
type OptBool int8

const (
	Unset OptBool = iota
	False
	True
)

// Or returns the value, or def when unset.
func (o OptBool) Or(def bool) bool {
	switch o {
	case True:
		return true
	case False:
		return false
	}
	return def
}

// Set reports whether a value was given.
func (o OptBool) Set() bool { return o != Unset }

// OptBoolOf returns True or False.
func OptBoolOf(b bool) OptBool {
	if b {
		return True
	}
	return False
}

// Settings are the application settings. The zero value is not the default:
// use [Defaults]. Settings is comparable with ==.
type Settings struct {
	Webhooks Webhooks
	// SentStatus is the legacy switch for "sent" callbacks (see [Settings.StatusCallback]).
	SentStatus OptBool
	// CallbackPersist keeps callbacks in the database until the receiver acknowledged them.
	CallbackPersist bool
	// CallbackBackoffDelayMS is the retry delay; it grows by this much after each failed attempt.
	CallbackBackoffDelayMS int
	// MaxCallbackBackoffDelayMS caps the delay; retries go on at this spacing.
	MaxCallbackBackoffDelayMS int
}

// Webhooks is the "webhooks" object.
type Webhooks struct {
	// URL receives the callbacks; "" means callbacks are not posted.
	URL string
	// Secret signs callbacks with an HMAC header when not ""; never shown by GET.
	Secret string
	// MaxConcurrentRequests bounds the callback requests open at once.
	MaxConcurrentRequests int
	// MaxCallbacksPerRequest bounds the callbacks merged into one request.
	MaxCallbacksPerRequest int
	Message                MessageCallbacks
}

// MessageCallbacks is "webhooks.message": which status callbacks are posted.
type MessageCallbacks struct {
	Sent      OptBool // Unset: see [Settings.StatusCallback]
	Delivered bool
	Read      bool
}

// Defaults returns the default settings (the values of Meta's sample GET output).
func Defaults() Settings {
	return Settings{
		Webhooks: Webhooks{
			MaxConcurrentRequests:  12,
			MaxCallbacksPerRequest: 100,
			Message:                MessageCallbacks{Delivered: true, Read: false},
		},
		CallbackPersist:           true,
		CallbackBackoffDelayMS:    3000,
		MaxCallbackBackoffDelayMS: 900_000,
	}
}

// StatusCallback reports whether a status callback ("sent", "delivered",
// "read", "failed") should be posted. "sent" follows the rule of the package
// comment; "failed" and unknown statuses are always posted.
func (s Settings) StatusCallback(status string) bool {
	switch status {
	case "sent":
		return s.SendSent()
	case "delivered":
		return s.Webhooks.Message.Delivered
	case "read":
		return s.Webhooks.Message.Read
	}
	return true
}

// SendSent reports whether "sent" callbacks are posted: webhooks.message.sent
// if set, else sent_status if set, else true.
func (s Settings) SendSent() bool {
	if s.Webhooks.Message.Sent.Set() {
		return s.Webhooks.Message.Sent.Or(true)
	}
	return s.SentStatus.Or(true)
}

// Backoff is the delay before the next attempt after attempts failed ones
// (1 after the first failure): attempts × callback_backoff_delay_ms, capped at
// max_callback_backoff_delay_ms. attempts < 1 is treated as 1.
func (s Settings) Backoff(attempts int) time.Duration {
	attempts = max(attempts, 1)
	step := time.Duration(s.CallbackBackoffDelayMS) * time.Millisecond
	limit := time.Duration(s.MaxCallbackBackoffDelayMS) * time.Millisecond
	if step <= 0 {
		return limit
	}
	if time.Duration(attempts) > limit/step {
		return limit
	}
	return min(time.Duration(attempts)*step, limit)
}

// Live holds the current settings for the parts that read them while running
// (the webhook dispatcher, the gateway). Get is a single atomic load; Set
// replaces the settings and wakes the subscribers. Create it with [NewLive].
type Live struct {
	cur atomic.Pointer[Settings]

	mu   sync.Mutex
	subs []chan struct{} // guarded by mu
}

// NewLive returns a holder with the initial settings.
func NewLive(initial Settings) *Live {
	l := &Live{}
	l.cur.Store(&initial)
	return l
}

// Get returns the current settings.
func (l *Live) Get() Settings { return *l.cur.Load() }

// Set replaces the current settings and signals every subscriber.
func (l *Live) Set(s Settings) {
	l.cur.Store(&s)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ch := range l.subs {
		select {
		case ch <- struct{}{}:
		default: // a signal is pending already; the subscriber will Get the newest
		}
	}
}

// Subscribe returns a channel that receives a value after each Set. Signals
// coalesce: a subscriber that is slow sees one signal for several changes and
// should call Get when it wakes. Call Unsubscribe when done.
func (l *Live) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.subs = append(l.subs, ch)
	return ch
}

// Unsubscribe stops the signals to a channel returned by Subscribe.
func (l *Live) Unsubscribe(c <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, ch := range l.subs {
		if ch == c {
			l.subs = append(l.subs[:i], l.subs[i+1:]...)
			return
		}
	}
}
