package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatd-dev/chatd/bizapi/gateway"
	"github.com/chatd-dev/chatd/bizapi/store"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
)

func TestHealth(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Version = "2.1.0" })
	tok := bearer(e.token())
	e.gw.mu.Lock()
	e.gw.health = gateway.Health{
		GatewayStatus: gateway.StatusConnected, Phone: "15551234567",
		Addr: "chat.example:443", Port: 443, Transport: "tls", Proxy: "http://bob:xxxxx@proxy.corp:3128",
		DialTime: 250400 * time.Microsecond,
		Since:    time.Date(2026, 3, 1, 13, 0, 0, 0, time.FixedZone("x", 3600)), RTT: 1234567 * time.Nanosecond,
		Reconnects: 2, LastClose: "ping_timeout", LastError: "read: connection reset", ConfigError: "GET /v1/config: timeout",
	}
	e.gw.mu.Unlock()
	r := e.do("GET", "/v1/health", tok, "").wantStatus(http.StatusOK)
	want := `{"health":{"gateway_status":"connected","gateway":{"phone":"15551234567",` +
		`"path":{"addr":"chat.example:443","port":443,"transport":"tls","proxy":"http://bob:xxxxx@proxy.corp:3128"},` +
		`"network":"ok","network_problem":"","since":"2026-03-01T12:00:00Z","dial_ms":250.4,` +
		`"rtt_ms":1.235,"reconnects":2,"last_close":"ping_timeout","last_error":"read: connection reset",` +
		`"config_error":"GET /v1/config: timeout"}},"meta":{"api_status":"stable","version":"2.1.0"}}`
	if string(r.body) != want {
		t.Fatalf("health\n got %s\nwant %s", r.body, want)
	}

	// Connected on 5222 while 443 fails: unsupported, and health says so plainly.
	problem := "connected over chat.example:5222/tcp, but the 443 path fails (…). This network is unsupported: …"
	e.gw.mu.Lock()
	e.gw.health = gateway.Health{GatewayStatus: gateway.StatusConnected, Addr: "chat.example:5222", Port: 5222,
		Transport: "tcp", NetworkProblem: problem}
	e.gw.mu.Unlock()
	var h healthResponse
	r = e.do("GET", "/v1/health", tok, "").wantStatus(http.StatusOK)
	if err := json.Unmarshal(r.body, &h); err != nil {
		t.Fatal(err)
	}
	if g := h.Health.Gateway; h.Health.GatewayStatus != "connected" || g.Network != "unsupported" || g.NetworkProblem != problem ||
		g.Path.Proxy != "" || g.DialMS != 0 {
		t.Fatalf("health with a network problem: %s", r.body)
	}

	e.gw.mu.Lock()
	e.gw.health = gateway.Health{GatewayStatus: gateway.StatusUnregistered}
	e.gw.mu.Unlock()
	r = e.do("GET", "/v1/health", tok, "").wantStatus(http.StatusOK)
	for _, want := range []string{`"gateway_status":"unregistered"`, `"since":""`, `"network":""`, `"network_problem":""`} {
		if !strings.Contains(string(r.body), want) {
			t.Fatalf("health %s lacks %s", r.body, want)
		}
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(c *Config) { c.Registry = reg; c.APIKey = "monitoring-key-1" })
	tok := bearer(e.token())
	since := time.Date(2026, 3, 1, 12, 0, 0, 500e6, time.UTC)
	e.gw.mu.Lock()
	e.gw.health.Reconnects, e.gw.health.RTT = 3, 20*time.Millisecond
	e.gw.health.Addr, e.gw.health.Port, e.gw.health.Transport = "chat.example:443", 443, "ws"
	e.gw.health.Proxy, e.gw.health.DialTime, e.gw.health.Since = "http://bob:xxxxx@proxy.corp:3128", 1500*time.Millisecond, since
	e.gw.health.Closes = map[string]int64{"pong_timeout": 2, "server_shutdown": 1}
	e.gw.mu.Unlock()
	e.do("POST", "/v1/messages", tok, `{"to":"15551234567","text":{"body":"one"}}`).wantStatus(http.StatusCreated)
	e.do("POST", "/v1/messages", tok, `{"to":"15551234567","text":{"body":"two"}}`).wantStatus(http.StatusCreated)
	e.do("POST", "/v1/messages", tok, `{"to":"x"}`).wantStatus(http.StatusBadRequest)
	e.do("GET", "/v1/nowhere", tok, "").wantStatus(http.StatusNotFound)
	if err := e.st.EnqueueCallback(context.Background(), store.Callback{Payload: json.RawMessage(`{"statuses":[]}`)}); err != nil {
		t.Fatal(err)
	}

	r := e.do("GET", "/v1/metrics?format=prometheus", "Apikey monitoring-key-1", "").wantStatus(http.StatusOK)
	text := string(r.body)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type %q", ct)
	}
	for _, want := range []string{
		`bizapi_http_requests_total{code="201",endpoint="POST /v1/messages"} 2`,
		`bizapi_http_requests_total{code="400",endpoint="POST /v1/messages"} 1`,
		`bizapi_http_requests_total{code="404",endpoint="unmatched"} 1`,
		`bizapi_http_requests_total{code="200",endpoint="POST /v1/users/login"} 1`,
		`bizapi_http_request_duration_seconds_bucket{endpoint="POST /v1/messages",le="+Inf"} 3`,
		`bizapi_http_request_duration_seconds_count{endpoint="POST /v1/messages"} 3`,
		`bizapi_api_errors_total{code="1008"} 0`,
		`bizapi_api_errors_total{code="1009"} 1`,
		`bizapi_api_errors_total{code="1006"} 1`,
		"bizapi_outbox_unsent 2",
		"bizapi_callbacks_pending 1",
		"bizapi_messages_outbound 2",
		"bizapi_messages_inbound 0",
		`bizapi_gateway_status{status="connected"} 1`,
		`bizapi_gateway_status{status="disconnected"} 0`,
		`bizapi_gateway_status{status="unregistered"} 0`,
		"# TYPE bizapi_gateway_reconnects_total counter",
		"bizapi_gateway_reconnects_total 3",
		"bizapi_gateway_rtt_seconds 0.02",
		`bizapi_gateway_path_info{addr="chat.example:443",port="443",proxy="http://bob:xxxxx@proxy.corp:3128",transport="ws"} 1`,
		"bizapi_gateway_connected_since_seconds 1.7723664005e+09",
		"bizapi_gateway_dial_seconds 1.5",
		"# TYPE bizapi_gateway_closes_total counter",
		`bizapi_gateway_closes_total{reason="pong_timeout"} 2`,
		`bizapi_gateway_closes_total{reason="server_shutdown"} 1`,
		"bizapi_gateway_network_unsupported 0",
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", text)
	}
	// The families are in the caller's registry.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) < 10 {
		t.Fatalf("%d families in Config.Registry", len(mfs))
	}
	// A second handler in the same registry is refused, not a panic.
	if _, err := New(Config{Store: e.st, Gateway: e.gw, Registry: reg}); err == nil {
		t.Fatal("New registered the same metrics twice")
	}
}

// Not connected: connected_since is 0 and no path is reported; a known network problem shows.
func TestMetricsGatewayStates(t *testing.T) {
	e := newEnv(t, nil)
	tok := bearer(e.token())
	scrape := func() string {
		t.Helper()
		return string(e.do("GET", "/v1/metrics", tok, "").wantStatus(http.StatusOK).body)
	}
	e.gw.mu.Lock()
	e.gw.health = gateway.Health{GatewayStatus: gateway.StatusConnecting, Since: time.Now()}
	e.gw.mu.Unlock()
	text := scrape()
	for _, want := range []string{"bizapi_gateway_connected_since_seconds 0\n", "bizapi_gateway_dial_seconds 0\n",
		"bizapi_gateway_network_unsupported 0\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("connecting: metrics lack %q", want)
		}
	}
	for _, absent := range []string{"bizapi_gateway_path_info{", "bizapi_gateway_closes_total{"} {
		if strings.Contains(text, absent) {
			t.Errorf("connecting, nothing known: metrics have %q", absent)
		}
	}

	e.gw.mu.Lock()
	e.gw.health = gateway.Health{GatewayStatus: gateway.StatusConnected, Since: time.Unix(1772366400, 0),
		Addr: "chat.example:5222", Port: 5222, Transport: "tcp", NetworkProblem: "the 443 path fails"}
	e.gw.mu.Unlock()
	text = scrape()
	for _, want := range []string{"bizapi_gateway_connected_since_seconds 1.7723664e+09\n",
		`bizapi_gateway_path_info{addr="chat.example:5222",port="5222",proxy="",transport="tcp"} 1` + "\n",
		"bizapi_gateway_network_unsupported 1\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("connected, 443 failing: metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", text)
	}
}

// A failing Store.Stats leaves the rest of the metrics served.
func TestMetricsStoreStatsFails(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Store = &statsFailStore{Store: c.Store} })
	tok := bearer(e.token())
	r := e.do("GET", "/v1/metrics", tok, "").wantStatus(http.StatusOK)
	if !strings.Contains(string(r.body), `bizapi_gateway_status{status="connected"} 1`) || strings.Contains(string(r.body), "bizapi_outbox_unsent") {
		t.Fatalf("metrics %s", r.body)
	}
	if !strings.Contains(e.logs.String(), "stats unavailable") {
		t.Fatalf("the Stats error was not logged: %s", e.logs)
	}
}

type statsFailStore struct{ store.Store }

func (statsFailStore) Stats(context.Context) (store.Stats, error) {
	return store.Stats{}, errors.New("stats unavailable")
}

func TestPanicBecomes1014(t *testing.T) {
	e := newEnv(t, nil)
	tok := bearer(e.token())
	e.gw.mu.Lock()
	e.gw.panicHealth = true
	e.gw.mu.Unlock()
	r := e.do("GET", "/v1/health", tok, "")
	r.wantError(http.StatusInternalServerError, CodeInternal, "")
	if strings.Contains(string(r.body), "goroutine") || strings.Contains(string(r.body), "exploded") {
		t.Fatalf("panic details in the answer: %s", r.body)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "health exploded") || !strings.Contains(logs, "goroutine") {
		t.Fatalf("panic not logged with its stack: %s", logs)
	}
	// The server goes on.
	e.gw.mu.Lock()
	e.gw.panicHealth = false
	e.gw.mu.Unlock()
	e.do("GET", "/v1/health", tok, "").wantStatus(http.StatusOK)
}

func TestUnmatched(t *testing.T) {
	e := newEnv(t, nil)
	tok := bearer(e.token())
	e.do("GET", "/v1/nope", "", "").wantError(http.StatusNotFound, CodeNotFound, "no endpoint /v1/nope")
	e.do("GET", "/v1/messages/", tok, "").wantError(http.StatusNotFound, CodeNotFound, "")
	r := e.do("GET", "/v1/messages", tok, "")
	r.wantError(http.StatusMethodNotAllowed, CodeInvalidRequest, "method GET is not allowed")
	if got := r.header.Get("Allow"); got != "POST" {
		t.Fatalf("Allow %q", got)
	}
	r = e.do("POST", "/v1/settings/application", tok, "{}")
	r.wantError(http.StatusMethodNotAllowed, CodeInvalidRequest, "")
	if got := r.header.Get("Allow"); got != "GET, PATCH, DELETE" {
		t.Fatalf("Allow %q", got)
	}
}

func TestRegisterAndVerify(t *testing.T) {
	e := newEnv(t, nil)
	tok := bearer(e.token())
	const good = `{"cc":"1","phone_number":"555 123 4567","method":"sms","cert":"Q0VSVA==","pin":"123456"}`

	e.gw.regResult = gateway.RegisterResult{VName: "Acme Inc"}
	r := e.do("POST", "/v1/account", tok, good).wantStatus(http.StatusAccepted)
	if want := `{"account":[{"vname":"Acme Inc"}],"meta":{"api_status":"stable","version":"dev"}}`; string(r.body) != want {
		t.Fatalf("202 body %s", r.body)
	}
	if got := e.gw.registers; len(got) != 1 || got[0] != (gateway.RegisterRequest{CC: "1", PhoneNumber: "555 123 4567", Method: "sms", Cert: "Q0VSVA==", PIN: "123456"}) {
		t.Fatalf("Register calls %+v", got)
	}
	e.gw.regResult = gateway.RegisterResult{AlreadyRegistered: true, VName: "Acme Inc"}
	e.do("POST", "/v1/account", tok, good).wantStatus(http.StatusCreated)

	for _, tt := range []struct {
		body    string
		code    int
		details string
	}{
		{`{"phone_number":"5551234567","method":"sms","cert":"x"}`, CodeMissingParameter, "cc"},
		{`{"cc":"1","method":"sms","cert":"x"}`, CodeMissingParameter, "phone_number"},
		{`{"cc":"1","phone_number":"5551234567","cert":"x"}`, CodeMissingParameter, "method"},
		{`{"cc":"1","phone_number":"5551234567","method":"fax","cert":"x"}`, CodeInvalidParameter, `method must be "sms" or "voice"`},
		{`{"cc":"1","phone_number":"5551234567","method":"voice"}`, CodeMissingParameter, "cert"},
		{`{"cc":"1","phone_number":"5551234567","method":"voice","cert":"x","pin":"12"}`, CodeInvalidParameter, "pin"},
		{`{"cc":"1a","phone_number":"5551234567","method":"voice","cert":"x"}`, CodeInvalidParameter, "country code contains 'a'"},
		{`{"cc":1,"phone_number":"5551234567","method":"voice","cert":"x"}`, CodeInvalidParameter, "cc: expected a string"},
	} {
		e.do("POST", "/v1/account", tok, tt.body).wantError(http.StatusBadRequest, tt.code, tt.details)
	}
	if n := len(e.gw.registers); n != 2 {
		t.Fatalf("%d Register calls; refused requests must not reach the gateway", n)
	}

	// chatd's refusals, mapped.
	for _, tt := range []struct {
		err     error
		status  int
		code    int
		details string
		retry   string
	}{
		{&gateway.RegistrationError{Code: regtypes.CodeInvalidCert, Message: "forged"}, 400, CodeInvalidParameter, "invalid_cert: forged", ""},
		{&gateway.RegistrationError{Code: regtypes.CodeCertExpired, Message: "expired 2026-01-01"}, 400, CodeInvalidParameter, "cert_expired", ""},
		{&gateway.RegistrationError{Code: regtypes.CodeRateLimited, Message: "slow down", RetryAfter: 30 * time.Second}, 429, CodeTooManyRequests, "rate_limited: slow down", "30"},
		{&gateway.RegistrationError{Code: regtypes.CodeBusinessDisabled, Message: "no operator key"}, 403, CodeAccessDenied, "business_disabled", ""},
		{&gateway.RegistrationError{Code: regtypes.CodeSendFailed, Message: "sms gateway down"}, 503, CodeNotReady, "send_failed", ""},
		{&gateway.RegistrationError{Code: regtypes.CodeInternal, Message: "see log"}, 500, CodeInternal, "internal_error", ""},
		{&gateway.RegistrationError{Code: "brand_new_code", Message: "?"}, 500, CodeInternal, "brand_new_code", ""},
		{errors.New("gateway: chatd registration API: dial tcp 10.0.0.1:443: connection refused"), 503, CodeNotReady, "connection refused", ""},
	} {
		e.gw.regErr = tt.err
		r := e.do("POST", "/v1/account", tok, good)
		r.wantError(tt.status, tt.code, tt.details)
		if got := r.header.Get("Retry-After"); got != tt.retry {
			t.Fatalf("%v: Retry-After %q", tt.err, got)
		}
	}

	// Verify.
	e.do("POST", "/v1/account/verify", tok, `{}`).wantError(http.StatusBadRequest, CodeMissingParameter, "code")
	r = e.do("POST", "/v1/account/verify", tok, `{"code":"123-456"}`).wantStatus(http.StatusCreated)
	if len(r.body) != 0 {
		t.Fatalf("verify body %q, want empty", r.body)
	}
	if got := e.gw.codes; len(got) != 1 || got[0] != "123-456" {
		t.Fatalf("Verify calls %q", got)
	}
	for _, tt := range []struct {
		err     error
		status  int
		code    int
		details string
	}{
		{&gateway.RegistrationError{Code: regtypes.CodeWrongCode, Message: "wrong code, 4 attempts left"}, 400, CodeInvalidParameter, "wrong_code: wrong code, 4 attempts left"},
		{&gateway.RegistrationError{Code: regtypes.CodeCodeExpired, Message: "the code expired"}, 400, CodeInvalidParameter, "code_expired: the code expired"},
		{&gateway.RegistrationError{Code: regtypes.CodeTooManyAttempts, Message: "request a new code"}, 429, CodeTooManyRequests, "too_many_attempts"},
		{&gateway.RegistrationError{Code: regtypes.CodeNoPendingCode, Message: "no code"}, 404, CodeNotFound, "POST /v1/account first"},
		{&gateway.RegistrationError{Code: regtypes.CodeDeviceInUse, Message: "key bound"}, 409, CodeExists, "device_in_use"},
		{gateway.ErrNoPendingRegistration, 404, CodeNotFound, "no registration is in progress"},
	} {
		e.gw.verifyErr = tt.err
		e.do("POST", "/v1/account/verify", tok, `{"code":"123456"}`).wantError(tt.status, tt.code, tt.details)
	}
}

// Malformed input of every kind on every endpoint: never a 5xx, always an On-Premises error (or a
// success for the odd valid body).
func TestBadBodiesNever500(t *testing.T) {
	e := newEnv(t, nil)
	tok := bearer(e.token())
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	bodies := []string{
		"", " ", "{", "}", "[]", "null", `"str"`, "123", "true", "{}", "{}{}", `{"a":}`, `{"to":{}}`,
		`{"text":[]}`, `{"text":{"body":{}}}`, `{"contacts":{}}`, `{"status":1}`, `{"code":[]}`,
		`{"webhooks":[]}`, `{"new_password":{}}`, "\x00\x01\x02", "\xff\xfe{}", `{"to":"\xff\xfe","text":{"body":"\xff"}}`,
		`{"to":"15551234567","text":{"body":"\u0000"}}`, deep, `{"a":` + deep + `}`,
		strings.Repeat(`{"a":1,`, 5000) + `"b":2}`, `{"to":"` + strings.Repeat("9", 100000) + `"}`,
		"\xef\xbb\xbf{}", // BOM
	}
	endpoints := []struct {
		method, path string
		auth         string
	}{
		{"POST", "/v1/messages", tok},
		{"PUT", "/v1/messages/ABGGx", tok},
		{"POST", "/v1/contacts", tok},
		{"POST", "/v1/account", tok},
		{"POST", "/v1/account/verify", tok},
		{"PATCH", "/v1/settings/application", tok},
		{"POST", "/v1/users/login", basic(testUser, testPassword)},
		{"POST", "/v1/users/login", basic(testUser, "wrong")},
	}
	e.gw.regErr = errors.New("unreachable")
	e.gw.verifyErr = gateway.ErrNoPendingRegistration
	for _, ep := range endpoints {
		for _, b := range bodies {
			r := e.do(ep.method, ep.path, ep.auth, b)
			if r.status >= 500 {
				t.Errorf("%s %s %.40q: status %d %s", ep.method, ep.path, b, r.status, r.body)
				continue
			}
			if r.status >= 300 {
				var er struct {
					Errors []Error `json:"errors"`
				}
				if err := json.Unmarshal(r.body, &er); err != nil || len(er.Errors) != 1 || er.Errors[0].Code < 1000 || er.Errors[0].Code > 1031 {
					t.Errorf("%s %s %.40q: %d %s is not an On-Premises error", ep.method, ep.path, b, r.status, r.body)
				}
			}
		}
	}
}

// FuzzRequestBodies sends arbitrary bodies to the JSON endpoints: never a 5xx, always JSON.
//
//	go test -run '^$' -fuzz FuzzRequestBodies -fuzztime 30s ./bizapi/api/
func FuzzRequestBodies(f *testing.F) {
	for _, s := range []string{
		`{"to":"15551234567","text":{"body":"hi"}}`, `{"status":"read"}`, `{"blocking":"wait","contacts":["+15551234568"]}`,
		`{"cc":"1","phone_number":"5551234567","method":"sms","cert":"x"}`, `{"code":"123456"}`,
		`{"webhooks":{"url":"https://a.example","max_concurrent_requests":5}}`, `{"new_password":"Abcdef1!"}`,
		"", "{", "null", `{"text":{"body":` + strings.Repeat("[", 100) + `}}`,
	} {
		f.Add(uint8(0), s)
	}
	e := newEnv(f, nil)
	tok := bearer(e.token())
	endpoints := []struct{ method, path, auth string }{
		{"POST", "/v1/messages", tok},
		{"PUT", "/v1/messages/ABGGx", tok},
		{"POST", "/v1/contacts", tok},
		{"POST", "/v1/account", tok},
		{"POST", "/v1/account/verify", tok},
		{"PATCH", "/v1/settings/application", tok},
		{"POST", "/v1/users/login", basic(testUser, testPassword)},
	}
	f.Fuzz(func(t *testing.T, which uint8, body string) {
		ep := endpoints[int(which)%len(endpoints)]
		req := httptest.NewRequest(ep.method, ep.path, strings.NewReader(body))
		req.Header.Set("Authorization", ep.auth)
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", ep.method, ep.path, body, rec.Code, rec.Body)
		}
		if !json.Valid(rec.Body.Bytes()) && rec.Body.Len() > 0 {
			t.Fatalf("%s %s %q: not JSON: %s", ep.method, ep.path, body, rec.Body)
		}
	})
}
