// Package regapi is chatd's registration/config HTTPS API, an http.Handler
// served on 443 next to the chat listeners.
//
// A device registers a phone number in two steps: POST /v1/register/code
// sends a 6-digit code by SMS or voice (through a [CodeSender]); POST
// /v1/register/verify proves the code and binds the device's X25519 public
// key to the account. A business registers the same way and adds a business
// certificate (see pki.BusinessCert) by which the server operator vouches
// for its number and display name. GET /v1/config tells clients where and
// how to connect. GET /v1/iplist.json and GET /v1/iplist.zip publish the
// deployment's IP address list signed by the operator key (package iplist).
// The JSON types are in package regtypes.
//
// # Requests and answers
//
//	POST /v1/register/code
//	  {"phone":"+1 555 123 4567","method":"sms","business_cert":"…"}   (method defaults to "sms"; business_cert optional)
//	  202 {"status":"sent","phone":"15551234567","method":"sms","expires_in":600,"vname":"Acme"}   (vname for businesses)
//
//	POST /v1/register/verify
//	  {"phone":"15551234567","code":"123456","device_public_key":"<std base64, 32 bytes>"}
//	  200 {"account":{"phone":"15551234567","business":false,"display_name":""},
//	       "server_static_key":"<std base64>","config":{…as GET /v1/config…}}
//
//	GET /v1/config
//	  200 {"protocol":"chatd/1","server_static_key":"…","operator_key":"…",
//	       "chat_endpoints":[{"host":"chat.example","port":5222,"transport":"tcp"}],
//	       "https_url":"https://chat.example","iplist_version":"2026-11-20.a79a0850",
//	       "iplist_url":"https://chat.example/v1/iplist.zip",
//	       "ping_interval":25,"only_443":false,"server_time":"2026-03-01T12:00:00.123456789Z"}
//
//	GET /v1/iplist.json
//	  200 {"format":"chatd-iplist/1","updated":"2026-11-20",…,"signature":"…"}   (iplist.Signed.MarshalJSON)
//	GET /v1/iplist.zip
//	  200 application/zip, Content-Disposition: attachment; filename="chatd-iplist-2026-11-20.zip"
//	  both: ETag "<iplist_version>", Cache-Control: no-cache; 404 no_iplist when no list is configured
//
// Request bodies must be sent with Content-Type: application/json, are
// limited to 16 KiB by default, and may hold no unknown fields. Every error
// is {"error":{"code":"…","message":"…"}} with one of the regtypes.Code*
// codes; a 500 never carries details (they go to the log), and 429
// rate_limited comes with Retry-After in seconds.
//
// # Codes
//
// Codes are 6 digits from crypto/rand, stored only as salt || HMAC-SHA256
// keyed with a 16-byte random salt over phone and code, and compared in
// constant time. A code expires after Config.CodeTTL; after
// Config.MaxVerifyAttempts wrong codes it is deleted. Every attempt is
// counted in the store before the comparison, so parallel guesses get no
// more comparisons than sequential ones. A code whose sending
// fails is deleted at once. A correct code is deleted after the device is
// bound.
//
// # Rate limits
//
// Token buckets (golang.org/x/time/rate) per phone number and per client
// address, for code requests and for verify attempts, with bounded
// memory: a key is forgotten once its bucket has refilled, and at most
// Config.MaxLimiterKeys keys are kept per limiter (least recently used
// first out). The client address is r.RemoteAddr only — X-Forwarded-For is
// not trusted — and an IPv6 client is keyed by its /64.
package regapi
