package regapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
	"github.com/chatd-dev/chatd/server/store"
)

func TestUserRegistration(t *testing.T) {
	e := newEnv(t, func(c *Config) { // the default limits must let a normal registration through
		c.CodeRequestsPerNumber, c.CodeRequestsPerAddr, c.VerifyPerAddr, c.VerifyPerNumber = Limit{}, Limit{}, Limit{}, Limit{}
	})
	cr := e.requestCode("+1 (555) 123-4567", "")
	want := regtypes.CodeResponse{Status: "sent", Phone: "15551234567", Method: "sms", ExpiresIn: 600}
	if cr != want {
		t.Fatalf("code response %+v, want %+v", cr, want)
	}
	code := e.sender.code(t, "15551234567")
	if len(code) != 6 || !digitsOnly(code) {
		t.Fatalf("code %q is not 6 digits", code)
	}
	pending, err := e.st.GetCode(t.Context(), "15551234567")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(pending.Hash, []byte(code)) || pending.Method != "sms" || pending.Business || !pending.ExpiresAt.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("stored code %+v", pending)
	}

	devKey := newDeviceKey(t)
	r := e.post("/v1/register/verify", regtypes.VerifyRequest{Phone: "15551234567", Code: code[:3] + " " + code[3:], DevicePublicKey: devKey})
	if r.status != http.StatusOK {
		t.Fatalf("verify: %d %s", r.status, r.body)
	}
	var vr regtypes.VerifyResponse
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&vr); err != nil {
		t.Fatal(err)
	}
	if vr.Account != (regtypes.Account{Phone: "15551234567"}) {
		t.Fatalf("account %+v", vr.Account)
	}
	if vr.ServerStaticKey != pki.FormatPublic(e.static.Public) || vr.Config.ServerStaticKey != vr.ServerStaticKey {
		t.Fatalf("server key %q / %q", vr.ServerStaticKey, vr.Config.ServerStaticKey)
	}
	if vr.Config.Protocol != "chatd/1" || len(vr.Config.ChatEndpoints) != 2 {
		t.Fatalf("config %+v", vr.Config)
	}
	// The raw JSON has exactly the documented keys.
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(r.body, &raw)
	if len(raw) != 3 || string(raw["account"]) != `{"phone":"15551234567","business":false,"display_name":""}` {
		t.Fatalf("verify body %s", r.body)
	}

	acct, err := e.st.Account(t.Context(), "15551234567")
	if err != nil {
		t.Fatal(err)
	}
	if base64.StdEncoding.EncodeToString(acct.DevicePub) != devKey || acct.Business {
		t.Fatalf("stored account %+v", acct)
	}
	if _, err := e.st.GetCode(t.Context(), "15551234567"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("code not deleted after use: %v", err)
	}
	// The code is single-use.
	r = e.post("/v1/register/verify", regtypes.VerifyRequest{Phone: "15551234567", Code: code, DevicePublicKey: devKey})
	e.wantError(r, http.StatusNotFound, regtypes.CodeNoPendingCode)

	if logs := e.logs.String(); strings.Contains(logs, code) {
		t.Fatalf("the code appears in the log:\n%s", logs)
	}
}

func TestBusinessRegistration(t *testing.T) {
	e := newEnv(t, nil)
	cert := e.issueCert("+44 20 7946 0018", "Acme Widgets", t0.Add(-time.Hour), t0.AddDate(1, 0, 0))
	r := e.post("/v1/register/code", regtypes.CodeRequest{Phone: "+442079460018", Method: "voice", BusinessCert: cert})
	if r.status != http.StatusAccepted {
		t.Fatalf("code: %d %s", r.status, r.body)
	}
	var cr regtypes.CodeResponse
	_ = json.Unmarshal(r.body, &cr)
	if cr != (regtypes.CodeResponse{Status: "sent", Phone: "442079460018", Method: "voice", ExpiresIn: 600, VName: "Acme Widgets"}) {
		t.Fatalf("code response %s", r.body)
	}
	pending, err := e.st.GetCode(t.Context(), "442079460018")
	if err != nil || !pending.Business || pending.DisplayName != "Acme Widgets" || pending.Method != "voice" {
		t.Fatalf("pending code %+v %v", pending, err)
	}

	r = e.post("/v1/register/verify", regtypes.VerifyRequest{Phone: "442079460018", Code: e.sender.code(t, "442079460018"), DevicePublicKey: newDeviceKey(t)})
	if r.status != http.StatusOK {
		t.Fatalf("verify: %d %s", r.status, r.body)
	}
	var vr regtypes.VerifyResponse
	_ = json.Unmarshal(r.body, &vr)
	if vr.Account != (regtypes.Account{Phone: "442079460018", Business: true, DisplayName: "Acme Widgets"}) {
		t.Fatalf("account %+v", vr.Account)
	}
	acct, err := e.st.Account(t.Context(), "442079460018")
	if err != nil || !acct.Business || acct.DisplayName != "Acme Widgets" {
		t.Fatalf("stored account %+v %v", acct, err)
	}

	// Registering the business number again without its certificate would lose the verified name.
	r = e.post("/v1/register/code", regtypes.CodeRequest{Phone: "+442079460018"})
	e.wantError(r, http.StatusForbidden, regtypes.CodeBusinessCertRequired)
	if cr := e.requestCode("+442079460018", cert); cr.VName != "Acme Widgets" {
		t.Fatalf("re-registration with the certificate: %+v", cr)
	}
}

func TestConfigEndpoint(t *testing.T) {
	e := newEnv(t, nil)
	e.clk.Advance(1234567 * time.Nanosecond)
	r := e.do(http.MethodGet, "/v1/config", "", "")
	if r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	want := fmt.Sprintf(`{"protocol":"chatd/1","server_static_key":%q,"operator_key":%q,`+
		`"chat_endpoints":[{"host":"127.0.0.1","port":5222,"transport":"tcp"},{"host":"127.0.0.1","port":443,"transport":"tls"}],`+
		`"https_url":"https://127.0.0.1","iplist_version":"2026-03-01","ping_interval":25,"only_443":false,`+
		`"server_time":"2026-03-01T12:00:00.001234567Z"}`+"\n",
		pki.FormatPublic(e.static.Public), base64.StdEncoding.EncodeToString(e.opPub))
	if string(r.body) != want {
		t.Fatalf("got  %s\nwant %s", r.body, want)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", r.header.Get("Cache-Control"))
	}

	// Zero config: defaults, [] endpoints, no operator key.
	z := newEnv(t, func(c *Config) {
		*c = Config{Store: c.Store, Sender: c.Sender, Logger: c.Logger, Now: c.Now, Only443: true}
	})
	var cc map[string]any
	r = z.do(http.MethodGet, "/v1/config", "", "")
	_ = json.Unmarshal(r.body, &cc)
	if _, ok := cc["operator_key"]; ok {
		t.Errorf("operator_key present without an operator key: %s", r.body)
	}
	if eps, ok := cc["chat_endpoints"].([]any); !ok || len(eps) != 0 {
		t.Errorf("chat_endpoints = %v, want []", cc["chat_endpoints"])
	}
	if cc["ping_interval"] != float64(25) || cc["only_443"] != true {
		t.Errorf("config %s", r.body)
	}
}

func TestCodeRequestErrors(t *testing.T) {
	e := newEnv(t, nil)
	const num = "15551234567"
	otherOp := newEnv(t, nil) // another operator's key
	tests := []struct {
		name        string
		contentType string
		body        string
		status      int
		code        string
		msgContains string
	}{
		{"malformed JSON", "application/json", `{"phone":`, 400, regtypes.CodeInvalidRequest, "ends in the middle"},
		{"syntax error", "application/json", `{"phone" "x"}`, 400, regtypes.CodeInvalidRequest, "not valid JSON"},
		{"not an object", "application/json", `["x"]`, 400, regtypes.CodeInvalidRequest, "JSON object"},
		{"wrong type", "application/json", `{"phone":15551234567}`, 400, regtypes.CodeInvalidRequest, `"phone" must be a string`},
		{"unknown field", "application/json", `{"phone":"15551234567","pin":"1"}`, 400, regtypes.CodeInvalidRequest, `unknown field "pin"`},
		{"trailing data", "application/json", `{"phone":"15551234567"}{}`, 400, regtypes.CodeInvalidRequest, "exactly one JSON object"},
		{"empty body", "application/json", ``, 400, regtypes.CodeInvalidRequest, "empty"},
		{"too large", "application/json", `{"phone":"` + strings.Repeat("1", 20<<10) + `"}`, 413, regtypes.CodeRequestTooLarge, "16384 bytes"},
		{"form post", "application/x-www-form-urlencoded", `phone=1`, 415, regtypes.CodeUnsupportedMediaType, "Content-Type: application/json"},
		{"no content type", "", `{"phone":"15551234567"}`, 415, regtypes.CodeUnsupportedMediaType, "application/json"},
		{"invalid phone", "application/json", `{"phone":"555-1234"}`, 400, regtypes.CodeInvalidPhone, "has 7 digits"},
		{"phone with letters", "application/json", `{"phone":"1-800-FLOWERS"}`, 400, regtypes.CodeInvalidPhone, "letter 'F'"},
		{"missing phone", "application/json", `{}`, 400, regtypes.CodeInvalidPhone, "empty"},
		{"invalid method", "application/json", `{"phone":"15551234567","method":"fax"}`, 400, regtypes.CodeInvalidMethod, `"sms" or "voice"`},
		{"malformed cert", "application/json", `{"phone":"15551234567","business_cert":"not-a-cert"}`, 400, regtypes.CodeInvalidCert, "malformed"},
		{"forged cert", "application/json", certBody(num, otherOp.issueCert(num, "Acme", t0, t0.Add(time.Hour))), 400, regtypes.CodeInvalidCert, "operator"},
		{"expired cert", "application/json", certBody(num, e.issueCert(num, "Acme", t0.Add(-48*time.Hour), t0.Add(-time.Hour))), 400, regtypes.CodeCertExpired, "expired"},
		{"future cert", "application/json", certBody(num, e.issueCert(num, "Acme", t0.Add(time.Hour), t0.Add(48*time.Hour))), 400, regtypes.CodeCertNotYetValid, "not valid yet"},
		{"cert for another phone", "application/json", certBody(num, e.issueCert("15557654321", "Acme", t0, t0.Add(time.Hour))), 400, regtypes.CodeCertPhoneMismatch, "+15557654321"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(http.MethodPost, "/v1/register/code", tt.contentType, tt.body)
			msg := e.wantError(r, tt.status, tt.code)
			if !strings.Contains(msg, tt.msgContains) {
				t.Fatalf("message %q does not contain %q", msg, tt.msgContains)
			}
		})
	}
	if len(e.sender.codes) != 0 {
		t.Fatalf("codes were sent for rejected requests: %v", e.sender.codes)
	}
}

func certBody(phone, cert string) string {
	b, _ := json.Marshal(regtypes.CodeRequest{Phone: phone, BusinessCert: cert})
	return string(b)
}

func TestBusinessDisabled(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.OperatorKey = nil })
	cert := e.issueCert("15551234567", "Acme", t0, t0.Add(time.Hour))
	r := e.post("/v1/register/code", regtypes.CodeRequest{Phone: "15551234567", BusinessCert: cert})
	e.wantError(r, http.StatusForbidden, regtypes.CodeBusinessDisabled)
}

func TestSendFailed(t *testing.T) {
	e := newEnv(t, nil)
	e.sender.fail = errGateway
	r := e.post("/v1/register/code", regtypes.CodeRequest{Phone: "15551234567"})
	e.wantError(r, http.StatusBadGateway, regtypes.CodeSendFailed)
	if strings.Contains(string(r.body), "gateway down") {
		t.Fatalf("internal error leaked to the client: %s", r.body)
	}
	if !strings.Contains(e.logs.String(), "gateway down") {
		t.Fatalf("send failure not logged:\n%s", e.logs)
	}
	// The unsent code was dropped.
	r = e.post("/v1/register/verify", regtypes.VerifyRequest{Phone: "15551234567", Code: "123456", DevicePublicKey: newDeviceKey(t)})
	e.wantError(r, http.StatusNotFound, regtypes.CodeNoPendingCode)
}

func TestVerifyErrors(t *testing.T) {
	e := newEnv(t, nil)
	const num = "15551234567"
	key := newDeviceKey(t)
	verify := func(code, devKey string) result {
		t.Helper()
		return e.post("/v1/register/verify", regtypes.VerifyRequest{Phone: num, Code: code, DevicePublicKey: devKey})
	}

	e.wantError(verify("123456", key), http.StatusNotFound, regtypes.CodeNoPendingCode)
	e.requestCode(num, "")
	code := e.sender.code(t, num)
	wrong := fmt.Sprintf("%06d", (mustAtoi(t, code)+1)%1_000_000)

	e.wantError(e.post("/v1/register/verify", regtypes.VerifyRequest{Phone: "12", Code: code, DevicePublicKey: key}), 400, regtypes.CodeInvalidPhone)
	e.wantError(verify("12345", key), http.StatusBadRequest, regtypes.CodeInvalidCode)
	e.wantError(verify("12a456", key), http.StatusBadRequest, regtypes.CodeInvalidCode)
	e.wantError(verify(code, ""), http.StatusBadRequest, regtypes.CodeInvalidDeviceKey)
	e.wantError(verify(code, base64.StdEncoding.EncodeToString(make([]byte, 31))), http.StatusBadRequest, regtypes.CodeInvalidDeviceKey)
	e.wantError(verify(code, base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, 32))), http.StatusBadRequest, regtypes.CodeInvalidDeviceKey)
	e.wantError(verify(code, base64.StdEncoding.EncodeToString(make([]byte, 32))), http.StatusBadRequest, regtypes.CodeInvalidDeviceKey)
	// None of these used up an attempt.
	if c, _ := e.st.GetCode(t.Context(), num); c.Attempts != 0 {
		t.Fatalf("attempts = %d after malformed requests", c.Attempts)
	}

	for left := 4; left >= 1; left-- {
		msg := e.wantError(verify(wrong, key), http.StatusUnauthorized, regtypes.CodeWrongCode)
		if !strings.Contains(msg, fmt.Sprintf("%d attempt", left)) {
			t.Fatalf("message %q does not say %d attempts are left", msg, left)
		}
	}
	e.wantError(verify(wrong, key), http.StatusTooManyRequests, regtypes.CodeTooManyAttempts)
	if _, err := e.st.GetCode(t.Context(), num); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("code still stored after too many attempts: %v", err)
	}
	// Even the right code is useless now.
	e.wantError(verify(code, key), http.StatusNotFound, regtypes.CodeNoPendingCode)

	// Expiry, on the injected clock.
	e.requestCode(num, "")
	code = e.sender.code(t, num)
	e.clk.Advance(10 * time.Minute)
	e.wantError(verify(code, key), http.StatusGone, regtypes.CodeCodeExpired)
	if _, err := e.st.GetCode(t.Context(), num); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired code still stored: %v", err)
	}

	// A code one second before expiry still works.
	e.requestCode(num, "")
	code = e.sender.code(t, num)
	e.clk.Advance(10*time.Minute - time.Second)
	if r := verify(code, key); r.status != http.StatusOK {
		t.Fatalf("verify just before expiry: %d %s", r.status, r.body)
	}

	// The same device key for another number.
	const other = "15557654321"
	e.requestCode(other, "")
	otherCode := e.sender.code(t, other)
	r := e.post("/v1/register/verify", regtypes.VerifyRequest{Phone: other, Code: otherCode, DevicePublicKey: key})
	e.wantError(r, http.StatusConflict, regtypes.CodeDeviceInUse)
	// The code survives that, so a retry with a fresh key works.
	r = e.post("/v1/register/verify", regtypes.VerifyRequest{Phone: other, Code: otherCode, DevicePublicKey: newDeviceKey(t)})
	if r.status != http.StatusOK {
		t.Fatalf("retry with a new key: %d %s", r.status, r.body)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRateLimitPerNumber(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.CodeRequestsPerNumber = Limit{} }) // default: burst 3, 1/30 s
	for i := range 3 {
		if r := e.post("/v1/register/code", regtypes.CodeRequest{Phone: "15551234567"}); r.status != http.StatusAccepted {
			t.Fatalf("request %d: %d %s", i+1, r.status, r.body)
		}
	}
	r := e.post("/v1/register/code", regtypes.CodeRequest{Phone: "+1 555 123 4567"})
	msg := e.wantError(r, http.StatusTooManyRequests, regtypes.CodeRateLimited)
	if got := r.header.Get("Retry-After"); got != "30" || !strings.Contains(msg, "30 seconds") {
		t.Fatalf("Retry-After %q, message %q; want 30", got, msg)
	}
	// Other numbers are not affected.
	if r := e.post("/v1/register/code", regtypes.CodeRequest{Phone: "15557654321"}); r.status != http.StatusAccepted {
		t.Fatalf("other number: %d %s", r.status, r.body)
	}
	e.clk.Advance(20 * time.Second)
	r = e.post("/v1/register/code", regtypes.CodeRequest{Phone: "15551234567"})
	e.wantError(r, http.StatusTooManyRequests, regtypes.CodeRateLimited)
	if got := r.header.Get("Retry-After"); got != "10" {
		t.Fatalf("Retry-After %q after 20 s, want 10", got)
	}
	e.clk.Advance(10 * time.Second)
	if r := e.post("/v1/register/code", regtypes.CodeRequest{Phone: "15551234567"}); r.status != http.StatusAccepted {
		t.Fatalf("after 30 s: %d %s", r.status, r.body)
	}
}

func TestRateLimitCodePerAddr(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.CodeRequestsPerAddr = Limit{} }) // default: 20/min
	for i := range 20 {
		r := e.post("/v1/register/code", regtypes.CodeRequest{Phone: fmt.Sprintf("1555000%04d", i)})
		if r.status != http.StatusAccepted {
			t.Fatalf("request %d: %d %s", i+1, r.status, r.body)
		}
	}
	// Even a malformed request counts against the address.
	r := e.do(http.MethodPost, "/v1/register/code", "application/json", `{`)
	e.wantError(r, http.StatusTooManyRequests, regtypes.CodeRateLimited)
	if got := r.header.Get("Retry-After"); got != "3" {
		t.Fatalf("Retry-After %q, want 3", got)
	}
	e.clk.Advance(3 * time.Second)
	if r := e.post("/v1/register/code", regtypes.CodeRequest{Phone: "15559999999"}); r.status != http.StatusAccepted {
		t.Fatalf("after 3 s: %d %s", r.status, r.body)
	}
}

func TestRateLimitVerifyPerAddr(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.VerifyPerAddr = Limit{} }) // default: 30/min
	key := newDeviceKey(t)
	for i := range 30 {
		r := e.post("/v1/register/verify", regtypes.VerifyRequest{Phone: fmt.Sprintf("1555000%04d", i), Code: "123456", DevicePublicKey: key})
		e.wantError(r, http.StatusNotFound, regtypes.CodeNoPendingCode)
	}
	r := e.post("/v1/register/verify", regtypes.VerifyRequest{Phone: "15551234567", Code: "123456", DevicePublicKey: key})
	e.wantError(r, http.StatusTooManyRequests, regtypes.CodeRateLimited)
	if got := r.header.Get("Retry-After"); got != "2" {
		t.Fatalf("Retry-After %q, want 2", got)
	}
	// The code endpoint has its own bucket.
	if r := e.post("/v1/register/code", regtypes.CodeRequest{Phone: "15551234567"}); r.status != http.StatusAccepted {
		t.Fatalf("code request: %d %s", r.status, r.body)
	}
}

func TestRateLimitVerifyPerNumber(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.VerifyPerNumber = Limit{} }) // default: burst 10, 1 per 6 min
	const num = "15551234567"
	key := newDeviceKey(t)
	verify := func() result {
		return e.post("/v1/register/verify", regtypes.VerifyRequest{Phone: num, Code: "000000", DevicePublicKey: key})
	}
	for i := range 10 {
		if i%5 == 0 { // a guesser asking for code after code
			e.requestCode(num, "")
			if e.sender.code(t, num) == "000000" {
				t.Skip("the random code happens to be 000000")
			}
		}
		if r := verify(); r.status != http.StatusUnauthorized && r.status != http.StatusTooManyRequests {
			t.Fatalf("attempt %d: %d %s", i+1, r.status, r.body)
		}
	}
	e.requestCode(num, "")
	r := verify()
	msg := e.wantError(r, http.StatusTooManyRequests, regtypes.CodeRateLimited)
	if r.header.Get("Retry-After") != "360" || !strings.Contains(msg, "this number") {
		t.Fatalf("Retry-After %q, message %q", r.header.Get("Retry-After"), msg)
	}
	// The refused attempt was not counted against the pending code.
	if c, err := e.st.GetCode(t.Context(), num); err != nil || c.Attempts != 0 {
		t.Fatalf("pending code %+v %v", c, err)
	}
	e.clk.Advance(6 * time.Minute)
	e.wantError(verify(), http.StatusUnauthorized, regtypes.CodeWrongCode)
}

func TestRoutingErrors(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do(http.MethodGet, "/v1/register/code", "", "")
	e.wantError(r, http.StatusMethodNotAllowed, regtypes.CodeMethodNotAllowed)
	if r.header.Get("Allow") != "POST" {
		t.Fatalf("Allow %q", r.header.Get("Allow"))
	}
	r = e.do(http.MethodPost, "/v1/config", "application/json", "{}")
	e.wantError(r, http.StatusMethodNotAllowed, regtypes.CodeMethodNotAllowed)
	r = e.do(http.MethodGet, "/v1/nope", "", "")
	e.wantError(r, http.StatusNotFound, regtypes.CodeNotFound)
	if r := e.do(http.MethodHead, "/v1/config", "", ""); r.status != http.StatusOK {
		t.Fatalf("HEAD /v1/config: %d", r.status)
	}
}

func TestSweep(t *testing.T) {
	e := newEnv(t, nil)
	e.requestCode("15551234567", "")
	e.clk.Advance(5 * time.Minute)
	e.requestCode("15557654321", "")
	e.clk.Advance(5 * time.Minute) // the first code has expired, the second not
	if err := e.h.Sweep(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.GetCode(t.Context(), "15551234567"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired code survived Sweep: %v", err)
	}
	if _, err := e.st.GetCode(t.Context(), "15557654321"); err != nil {
		t.Fatalf("live code deleted by Sweep: %v", err)
	}
}

func TestConcurrentRegistrations(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.CodeRequestsPerNumber, c.VerifyPerAddr = Limit{}, Limit{} })
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			num := fmt.Sprintf("1555000%04d", i)
			b, _ := json.Marshal(regtypes.CodeRequest{Phone: num})
			resp, err := e.srv.Client().Post(e.srv.URL+"/v1/register/code", "application/json", bytes.NewReader(b))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				t.Errorf("%s: %d", num, resp.StatusCode)
				return
			}
			e.sender.mu.Lock()
			code := e.sender.codes[num]
			e.sender.mu.Unlock()
			key, _ := pki.GenerateStaticKey()
			b, _ = json.Marshal(regtypes.VerifyRequest{Phone: num, Code: code, DevicePublicKey: pki.FormatPublic(key.Public)})
			resp, err = e.srv.Client().Post(e.srv.URL+"/v1/register/verify", "application/json", bytes.NewReader(b))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("verify %s: %d", num, resp.StatusCode)
			}
		})
	}
	wg.Wait()
}

func TestStoreFailureIsOpaque(t *testing.T) {
	e := newEnv(t, nil)
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	r := e.post("/v1/register/code", regtypes.CodeRequest{Phone: "15551234567"})
	msg := e.wantError(r, http.StatusInternalServerError, regtypes.CodeInternal)
	if strings.Contains(msg, "store") || strings.Contains(msg, "sql") {
		t.Fatalf("internal details in the answer: %q", msg)
	}
	if !strings.Contains(e.logs.String(), "level=ERROR") {
		t.Fatalf("store failure not logged:\n%s", e.logs)
	}
	r = e.post("/v1/register/verify", regtypes.VerifyRequest{Phone: "15551234567", Code: "123456", DevicePublicKey: newDeviceKey(t)})
	e.wantError(r, http.StatusInternalServerError, regtypes.CodeInternal)
}

func TestRunStops(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := e.h.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}

func TestParallelGuessesShareTheAttemptBudget(t *testing.T) {
	e := newEnv(t, nil)
	const num = "15551234567"
	e.requestCode(num, "")
	code := e.sender.code(t, num)
	wrong := fmt.Sprintf("%06d", (mustAtoi(t, code)+1)%1_000_000)
	key := newDeviceKey(t)
	b, _ := json.Marshal(regtypes.VerifyRequest{Phone: num, Code: wrong, DevicePublicKey: key})

	const n = 20
	codes := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			resp, err := e.srv.Client().Post(e.srv.URL+"/v1/register/verify", "application/json", bytes.NewReader(b))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var er regtypes.ErrorResponse
			_ = json.NewDecoder(resp.Body).Decode(&er)
			codes[i] = er.Error.Code
		})
	}
	wg.Wait()
	count := map[string]int{}
	for _, c := range codes {
		count[c]++
	}
	if count[regtypes.CodeWrongCode] != DefaultMaxVerifyAttempts-1 ||
		count[regtypes.CodeWrongCode]+count[regtypes.CodeTooManyAttempts]+count[regtypes.CodeNoPendingCode] != n {
		t.Fatalf("answers %v: want exactly %d wrong_code, the rest too_many_attempts or no_pending_code", count, DefaultMaxVerifyAttempts-1)
	}
	r := e.post("/v1/register/verify", regtypes.VerifyRequest{Phone: num, Code: code, DevicePublicKey: key})
	e.wantError(r, http.StatusNotFound, regtypes.CodeNoPendingCode)
}
