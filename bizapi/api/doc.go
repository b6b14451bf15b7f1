// Package api is bizapi's REST API: the On-Premises Business API endpoints (DESIGN §5,
// reference/onprem-api.md §2) over a store.Store and the gateway, with bearer-token auth, On-Premises
// error objects and Prometheus metrics. Handler is an http.Handler built on net/http's ServeMux.
//
// # Endpoints
//
// Every answer with a body is JSON and carries "meta":{"api_status":"stable","version":Config.Version}
// next to its own members, as On-Premises answers do. "admin" is the only user, so every logged-in
// caller is an admin.
//
//	POST /v1/users/login            Basic auth; body optional {"new_password":"…"}
//	  200 {"users":[{"token":"<43 chars>","expires_after":"2026-03-08 12:00:00+00:00"}]}
//	  A user with MustChange (the default admin) must send new_password (else 1024); a new password
//	  needs 8–64 characters with a digit, an upper-case and a lower-case letter and a special
//	  character, must differ from the old one (else 1009 naming what is missing), and ends every
//	  token the user had. Any user may change its password this way.
//	POST /v1/users/logout           Bearer; 200 {"meta"}; the token stops working at once
//	POST /v1/account                {"cc","phone_number","method":"sms"|"voice","cert","pin"?}
//	  202 {"account":[{"vname":"…"}]} a code was sent; 201 {"meta"} already registered here
//	POST /v1/account/verify         {"code"} → 201, empty body
//	GET  /v1/health                 Bearer or Apikey; 200 (below)
//	GET  /v1/metrics                Bearer or Apikey; Prometheus text (below)
//	POST /v1/messages               {"preview_url"?,"recipient_type"?:"individual","to","type"?:"text","text":{"body"}}
//	  201 {"messages":[{"id":"gBEG…"}]} — sent only after the message is durably stored. Our
//	  reference does not record the status of a send; we answer 201 Created (the message is a new
//	  resource with an id) and clients should accept any 2xx. to is a phone number in international format
//	  (phone.Normalize); type defaults to text; body has 1–4096 characters (Unicode code points).
//	  While no number is registered the send is refused (1011): it could go nowhere.
//	PUT  /v1/messages/{id}          {"status":"read"} → 200 {"meta"}; the read receipt of a received
//	  message is sent when connected. 404/1006 for an id that is not a received message.
//	POST /v1/contacts               {"blocking":"wait"|"no_wait","contacts":["+1 555…",…],"force_check"?}
//	  200 {"contacts":[{"input","status","wa_id"?}]}; status valid, invalid, failed or (no_wait only)
//	  processing. blocking defaults to no_wait as in On-Premises. Valid and invalid answers are
//	  cached for 7 days (force_check skips the cache); no_wait answers from the cache and starts one
//	  background lookup for the rest, which later requests find in the cache. A number that is not
//	  a phone number is invalid at once. Needing chatd while not connected → 1011. At most 1000
//	  contacts per request.
//	GET|PATCH|DELETE /v1/settings/application
//	  200 {"settings":{"application":{…}}} (package settings): PATCH changes only the keys given and
//	  answers with the result; DELETE resets everything to the defaults, webhook URL and secret too.
//	  Changes are saved with Store.SaveSettings before they take effect.
//
// # Authentication
//
// Login takes HTTP Basic credentials (bcrypt hashes, cost BcryptCost) and returns a token: 32
// random bytes, base64url without padding. The store keeps only the SHA-256 of the token string.
// Every other endpoint needs "Authorization: Bearer <token>"; tokens expire after Config.TokenTTL
// (7 days) and then get 401. Validated tokens are cached in memory with their expiry, so a request
// costs one SHA-256 and a map lookup, not a store read or a bcrypt; logout and a password change
// remove them from the cache at once. GET /v1/health and GET /v1/metrics also accept
// "Authorization: Apikey <Config.APIKey>" (compared in constant time); every other endpoint refuses
// an Apikey with 401/1005. Failed logins are limited per client address (LoginRate; 10 in a row,
// then one per 6 s): while an address is blocked, its logins get 429/1015 with Retry-After.
//
// # GET /v1/health
//
//	{"health":{"gateway_status":"connected",
//	   "gateway":{"phone":"15551234567",
//	              "path":{"addr":"chat.example:5222","port":5222,"transport":"tcp","proxy":""},
//	              "network":"ok","network_problem":"",
//	              "since":"2026-03-01T12:00:00Z","dial_ms":12.5,"rtt_ms":1.234,"reconnects":0,
//	              "last_close":"","last_error":"","config_error":""}},
//	 "meta":{…}}
//
// gateway_status is the On-Premises field: connected, connecting, disconnected, uninitialized or
// unregistered. "gateway" is our extension (gateway.Health): the number; the path in use (or last
// used): address, port, transport (tcp, tls or ws) and the HTTP proxy it goes through, without its
// password ("" when direct); network, "unsupported" when network_problem is set (connected on 5222
// while the 443 path fails, N5: the text says what failed and what to open), "ok" while connected
// with nothing known to be wrong, "" when not connected; when the status last changed (while
// connected: when the connection logged in); how long the last successful connect took (dial_ms:
// the race of the endpoints, the handshake and the login); the last ping round trip in milliseconds;
// reconnects since start; why the last connection ended; and config_error when the start-up config
// fetch over HTTPS failed and the cached config is in use (N7). Empty strings and zeros mean "not
// known yet".
//
// # GET and POST /v1/support/network
//
// POST runs a network check (Config.Netcheck: netcheck.Run with bizapi's settings; ?idle=DURATION
// up to 15m adds the idle test) and answers {"network": netcheck.Report, "gateway_status",
// "gateway": the health extension}; one runs at a time (429/1015 while one runs). GET answers the
// latest, or 503/1011 before the first. Bearer only.
//
// # GET /v1/metrics
//
// Prometheus text of Config.Registry: bizapi_http_requests_total{endpoint,code},
// bizapi_http_request_duration_seconds{endpoint}, bizapi_api_errors_total{code} (On-Premises
// codes), and, read at scrape time, bizapi_outbox_unsent, bizapi_callbacks_pending,
// bizapi_messages_outbound, bizapi_messages_inbound (Store.Stats), and from Gateway.Health:
// bizapi_gateway_status{status} (1 for the current status, 0 for the others),
// bizapi_gateway_reconnects_total, bizapi_gateway_rtt_seconds,
// bizapi_gateway_path_info{addr,port,transport,proxy} (1 for the path in use or last used; absent
// before the first), bizapi_gateway_connected_since_seconds (Unix time of the current login, 0 when
// not connected), bizapi_gateway_dial_seconds (the last successful connect),
// bizapi_gateway_closes_total{reason} (ends of logged-in connections since start, by close reason)
// and bizapi_gateway_network_unsupported (1 while network_problem is set). A failing Store.Stats
// leaves the other metrics served and is logged.
//
// # Requests
//
// Bodies are limited to Config.MaxBodyBytes (64 KiB; more → 413/1001). Content-Type is not checked
// (curl -d sends a form type). Unknown JSON members are ignored, as On-Premises ignored fields it
// did not use, so integrations that send more (e.g. "ttl") keep working — except in PATCH
// /v1/settings/application, where a misspelt key would silently change nothing and is therefore
// an error naming it. A member of the wrong type is 1009 naming it.
//
// # Errors
//
// Every error is {"errors":[{"code","title","details"}],"meta":{…}} with an On-Premises code; a
// panic is recovered, logged with its stack and answered 1014; a 5xx never carries internals.
//
//	code  HTTP  title                          when
//	1001  400   Message too long               text.body over 4096 characters
//	1001  413   Message too long               request body over MaxBodyBytes
//	1002  400   Invalid recipient type         recipient_type other than "individual"
//	1004  409   Resource already exists        chatd: device_in_use
//	1005  401   Access denied                  no/unknown/expired token, wrong Apikey, Apikey on another
//	                                           endpoint, wrong user or password (WWW-Authenticate set)
//	1005  403   Access denied                  chatd: business_disabled (the server takes no businesses)
//	1006  404   Resource not found             unknown path; PUT of an unknown message id; verify
//	                                           without a code request (chatd: no_pending_code)
//	1008  400   Required parameter is missing  a required member absent or empty (details name it)
//	1009  400   Parameter value is not valid   a bad value or type (details name it and what is
//	                                           allowed); a weak new_password; settings errors; chatd:
//	                                           invalid_phone, invalid_method, invalid_cert,
//	                                           cert_expired, cert_not_yet_valid, cert_phone_mismatch,
//	                                           business_cert_required, invalid_code, wrong_code,
//	                                           code_expired (chatd's message in details)
//	1011  503   Service not ready              gateway not connected (contacts) or not registered
//	                                           (sends), chatd unreachable or send_failed, the store
//	                                           closed (shutting down)
//	1014  500   Internal error                 a store failure, a panic, chatd answering
//	                                           invalid_request/internal_error (a bizapi–chatd mismatch)
//	1015  429   Too many requests              failed-login limit; chatd: rate_limited,
//	                                           too_many_attempts (Retry-After from chatd)
//	1024  403   Password change required       first login without new_password
//	1025  400   Invalid request                body empty, not JSON, not an object
//	1025  405   Invalid request                method not allowed on an existing path (Allow set)
package api
