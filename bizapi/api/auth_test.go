package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/chatd-dev/chatd/bizapi/store"
)

func TestEnsureAdmin(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if err := EnsureAdmin(ctx, e.st, ""); err != nil {
		t.Fatal(err)
	}
	u, err := e.st.User(ctx, AdminUser)
	if err != nil {
		t.Fatal(err)
	}
	if !u.MustChange {
		t.Fatal("the admin does not have to change the password")
	}
	if cost, _ := bcrypt.Cost(u.PasswordHash); cost < 10 {
		t.Fatalf("bcrypt cost %d", cost)
	}
	if bcrypt.CompareHashAndPassword(u.PasswordHash, []byte(DefaultAdminPassword)) != nil {
		t.Fatal("the admin password is not \"secret\"")
	}
	// EnsureAdmin leaves an existing admin alone.
	if err := EnsureAdmin(ctx, e.st, "other-password"); err != nil {
		t.Fatal(err)
	}
	if u2, _ := e.st.User(ctx, AdminUser); string(u2.PasswordHash) != string(u.PasswordHash) {
		t.Fatal("EnsureAdmin replaced an existing admin")
	}
}

func TestFirstLoginForcesPasswordChange(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	// As EnsureAdmin leaves it (TestEnsureAdmin), with a cheap hash: this test logs in many times.
	e.seedUser(AdminUser, DefaultAdminPassword, true)

	admin := basic(AdminUser, DefaultAdminPassword)
	e.do("POST", "/v1/users/login", admin, "").wantError(http.StatusForbidden, CodePasswordChange, "new_password")
	e.do("POST", "/v1/users/login", admin, `{}`).wantError(http.StatusForbidden, CodePasswordChange, "")
	e.do("POST", "/v1/users/login", admin, `{"new_password":""}`).wantError(http.StatusForbidden, CodePasswordChange, "")

	for _, tt := range []struct {
		password, missing string
	}{
		{"Ab1!", "8 to 64 characters (it has 4)"},
		{"Ab1!" + strings.Repeat("x", 61), "8 to 64 characters (it has 65)"},
		{"Abcdefg!", "a digit"},
		{"abcdef1!", "an upper-case letter"},
		{"ABCDEF1!", "a lower-case letter"},
		{"Abcdef12", "a special character"},
		{"abcdefgh", "a digit, an upper-case letter, a special character"},
		{"Äbcdéf1€", ""}, // non-ASCII letters and a symbol count: accepted (checked below)
		{"Ab1!" + strings.Repeat("é", 40), "at most 72 bytes"},
		{"Abc1!\x00xyz", "control character"},
	} {
		if tt.missing == "" {
			if err := CheckPassword(tt.password); err != nil {
				t.Errorf("CheckPassword(%q) = %v", tt.password, err)
			}
			continue
		}
		body := `{"new_password":` + jsonString(tt.password) + `}`
		e.do("POST", "/v1/users/login", admin, body).wantError(http.StatusBadRequest, CodeInvalidParameter, tt.missing)
	}
	e.do("POST", "/v1/users/login", admin, `{"new_password":12345678}`).wantError(http.StatusBadRequest, CodeInvalidParameter, "new_password")
	e.do("POST", "/v1/users/login", admin, `{"new_password":`).wantError(http.StatusBadRequest, CodeInvalidRequest, "not valid JSON")
	// A wrong password with a good new one changes nothing.
	e.do("POST", "/v1/users/login", basic(AdminUser, "guess"), `{"new_password":"N3w-Passw0rd"}`).
		wantError(http.StatusUnauthorized, CodeAccessDenied, "wrong user name or password")

	r := e.do("POST", "/v1/users/login", admin, `{"new_password":"N3w-Passw0rd"}`).wantStatus(http.StatusOK)
	var lr loginResponse
	r.decode(&lr)
	if len(lr.Users) != 1 || len(lr.Users[0].Token) != 43 {
		t.Fatalf("login answer %s", r.body)
	}
	if want := t0.Add(DefaultTokenTTL).Format("2006-01-02 15:04:05") + "+00:00"; lr.Users[0].ExpiresAfter != want {
		t.Fatalf("expires_after %q, want %q", lr.Users[0].ExpiresAfter, want)
	}
	if !regexp.MustCompile(`"meta":\{"api_status":"stable","version":"dev"\}`).Match(r.body) {
		t.Fatalf("no meta in %s", r.body)
	}
	tok1 := lr.Users[0].Token
	e.do("GET", "/v1/health", bearer(tok1), "").wantStatus(http.StatusOK)

	// The old password is gone; the new one works without a body now.
	e.do("POST", "/v1/users/login", admin, "").wantError(http.StatusUnauthorized, CodeAccessDenied, "")
	newAdmin := basic(AdminUser, "N3w-Passw0rd")
	e.do("POST", "/v1/users/login", newAdmin, "").wantStatus(http.StatusOK)
	u, _ := e.st.User(ctx, AdminUser)
	if u.MustChange {
		t.Fatal("MustChange still set")
	}
	if cost, _ := bcrypt.Cost(u.PasswordHash); cost != BcryptCost {
		t.Fatalf("new hash has cost %d", cost)
	}

	// Changing the password again: the same one is refused, a new one ends the earlier tokens.
	e.do("POST", "/v1/users/login", newAdmin, `{"new_password":"N3w-Passw0rd"}`).
		wantError(http.StatusBadRequest, CodeInvalidParameter, "must differ")
	e.do("POST", "/v1/users/login", newAdmin, `{"new_password":"Th1rd-Passw0rd"}`).wantStatus(http.StatusOK)
	e.do("GET", "/v1/health", bearer(tok1), "").wantError(http.StatusUnauthorized, CodeAccessDenied, "invalid token")
}

func TestLoginErrors(t *testing.T) {
	e := newEnv(t, nil)
	e.seedUser(testUser, testPassword, false)
	r := e.do("POST", "/v1/users/login", "", "")
	r.wantError(http.StatusUnauthorized, CodeAccessDenied, "Basic authentication")
	if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
		t.Fatalf("WWW-Authenticate %q", got)
	}
	e.do("POST", "/v1/users/login", bearer("x"), "").wantError(http.StatusUnauthorized, CodeAccessDenied, "Basic")
	e.do("POST", "/v1/users/login", basic("nobody", testPassword), "").wantError(http.StatusUnauthorized, CodeAccessDenied, "wrong user name or password")
	e.do("POST", "/v1/users/login", basic(testUser, "wrong"), "").wantError(http.StatusUnauthorized, CodeAccessDenied, "wrong user name or password")
}

func TestTokenExpiry(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.TokenTTL = time.Hour })
	tok := e.token()
	e.do("GET", "/v1/health", bearer(tok), "").wantStatus(http.StatusOK)
	e.clock.Advance(time.Hour - time.Second)
	e.do("GET", "/v1/health", bearer(tok), "").wantStatus(http.StatusOK)
	e.clock.Advance(time.Second)
	e.do("GET", "/v1/health", bearer(tok), "").wantError(http.StatusUnauthorized, CodeAccessDenied, "expired")

	// A handler with a cold cache reads the token from the store and refuses it too.
	h2, err := New(Config{Store: e.st, Gateway: e.gw, Now: e.clock.Now, TokenTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	try := func(tok string) int {
		req := httptest.NewRequest("GET", "/v1/health", nil)
		req.Header.Set("Authorization", bearer(tok))
		rec := httptest.NewRecorder()
		h2.ServeHTTP(rec, req)
		return rec.Code
	}
	if c := try(tok); c != http.StatusUnauthorized {
		t.Fatalf("expired token from the store: %d", c)
	}
	e.clock.Advance(time.Second)
	tok2 := e.token()
	if c := try(tok2); c != http.StatusOK {
		t.Fatalf("valid token from the store: %d", c)
	}
	// Logging in deleted the expired token from the store.
	sum := sha256Sum(tok)
	if _, err := e.st.Token(context.Background(), sum[:]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired token still stored: %v", err)
	}
}

func TestLogout(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.token()
	other := e.token()
	e.do("POST", "/v1/messages", bearer(tok), `{"to":"15551234567","text":{"body":"hi"}}`).wantStatus(http.StatusCreated)
	e.do("POST", "/v1/users/logout", bearer(tok), "").wantStatus(http.StatusOK)
	e.do("POST", "/v1/messages", bearer(tok), `{"to":"15551234567","text":{"body":"hi"}}`).
		wantError(http.StatusUnauthorized, CodeAccessDenied, "invalid token")
	e.do("POST", "/v1/users/logout", bearer(tok), "").wantError(http.StatusUnauthorized, CodeAccessDenied, "")
	e.do("GET", "/v1/health", bearer(other), "").wantStatus(http.StatusOK) // only that token ended
	sum := sha256Sum(tok)
	if _, err := e.st.Token(context.Background(), sum[:]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("token still stored after logout: %v", err)
	}
}

// A token read from the store before a logout must not be cached after it.
func TestTokenCacheGeneration(t *testing.T) {
	var c tokenCache
	c.m = make(map[[32]byte]tokenEntry)
	k := sha256Sum("t")
	gen := c.generation()
	c.remove(k) // a logout between the store read and the put
	c.put(k, tokenEntry{user: "u", expires: t0.Add(time.Hour)}, gen)
	if _, ok := c.get(k); ok {
		t.Fatal("a token removed during its lookup was cached")
	}
	c.put(k, tokenEntry{user: "u", expires: t0.Add(time.Hour)}, c.generation())
	c.removeUser("u")
	if _, ok := c.get(k); ok {
		t.Fatal("removeUser kept the token")
	}
}

func TestLoginRateLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LoginRate = LoginRate{Burst: 3, Every: time.Minute} })
	e.seedUser(testUser, testPassword, false)
	wrong, right := basic(testUser, "nope"), basic(testUser, testPassword)
	for range 3 {
		e.do("POST", "/v1/users/login", wrong, "").wantError(http.StatusUnauthorized, CodeAccessDenied, "")
	}
	r := e.do("POST", "/v1/users/login", right, "") // blocked even with the right password
	r.wantError(http.StatusTooManyRequests, CodeTooManyRequests, "too many failed logins")
	if got := r.header.Get("Retry-After"); got != "60" {
		t.Fatalf("Retry-After %q", got)
	}
	e.clock.Advance(30 * time.Second)
	if got := e.do("POST", "/v1/users/login", right, "").header.Get("Retry-After"); got != "30" {
		t.Fatalf("Retry-After after 30 s: %q", got)
	}
	e.clock.Advance(30 * time.Second)
	e.do("POST", "/v1/users/login", right, "").wantStatus(http.StatusOK)
	// Successful logins cost nothing; one failure is allowed again, the next is blocked.
	e.do("POST", "/v1/users/login", right, "").wantStatus(http.StatusOK)
	e.do("POST", "/v1/users/login", wrong, "").wantError(http.StatusUnauthorized, CodeAccessDenied, "")
	e.do("POST", "/v1/users/login", wrong, "").wantError(http.StatusTooManyRequests, CodeTooManyRequests, "")

	// Another address is not blocked.
	req := httptest.NewRequest("POST", "/v1/users/login", nil)
	req.RemoteAddr = "192.0.2.7:4000"
	req.Header.Set("Authorization", right)
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("other address: %d %s", rec.Code, rec.Body)
	}
}

func TestAPIKey(t *testing.T) {
	const key = "k3y-for-monitoring"
	e := newEnv(t, func(c *Config) { c.APIKey = key })
	e.do("GET", "/v1/health", "Apikey "+key, "").wantStatus(http.StatusOK)
	e.do("GET", "/v1/health", "apikey "+key, "").wantStatus(http.StatusOK) // the scheme is case-insensitive
	r := e.do("GET", "/v1/metrics", "Apikey "+key, "").wantStatus(http.StatusOK)
	if !strings.Contains(string(r.body), "bizapi_http_requests_total") {
		t.Fatalf("metrics: %s", r.body)
	}
	e.do("GET", "/v1/health", "Apikey wrong-key-1234567", "").wantError(http.StatusUnauthorized, CodeAccessDenied, "wrong API key")
	e.do("GET", "/v1/health", "", "").wantError(http.StatusUnauthorized, CodeAccessDenied, "missing")
	e.do("GET", "/v1/health", "Token abc", "").wantError(http.StatusUnauthorized, CodeAccessDenied, "unsupported")
	for _, ep := range []struct{ method, path, body string }{
		{"POST", "/v1/messages", `{"to":"15551234567","text":{"body":"hi"}}`},
		{"PUT", "/v1/messages/ABGGx", `{"status":"read"}`},
		{"POST", "/v1/contacts", `{"contacts":["+15551234568"]}`},
		{"GET", "/v1/settings/application", ""},
		{"POST", "/v1/account", `{}`},
		{"POST", "/v1/users/logout", ""},
	} {
		e.do(ep.method, ep.path, "Apikey "+key, ep.body).wantError(http.StatusUnauthorized, CodeAccessDenied, "accepted only by GET /v1/health and GET /v1/metrics")
	}
	if n := e.gw.wakeOutbox.Load(); n != 0 {
		t.Fatalf("an Apikey request reached the outbox (%d wakes)", n)
	}
	// Bearer tokens work on health and metrics too.
	tok := e.token()
	e.do("GET", "/v1/metrics", bearer(tok), "").wantStatus(http.StatusOK)

	// Without a configured key, Apikey is refused everywhere.
	e2 := newEnv(t, nil)
	e2.do("GET", "/v1/health", "Apikey "+key, "").wantError(http.StatusUnauthorized, CodeAccessDenied, "no API key is configured")

	for _, bad := range []string{"short", strings.Repeat("k", 129), "has space inside1", "tab\tinside-12345"} {
		if _, err := New(Config{Store: e.st, Gateway: e.gw, APIKey: bad}); err == nil {
			t.Errorf("New accepted API key %q", bad)
		}
	}
}
