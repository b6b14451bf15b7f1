package api

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/chatd-dev/chatd/bizapi/gateway"
	"github.com/chatd-dev/chatd/bizapi/store"
	"github.com/chatd-dev/chatd/internal/testutil"
)

// The real gateway satisfies the interface.
var _ Gateway = (*gateway.Gateway)(nil)

type fakeClock = testutil.Clock

// fakeGateway stands in for *gateway.Gateway, which needs a chatd. It records what the API asked of
// it, so tests check the calls, not only the answers.
type fakeGateway struct {
	wakeOutbox atomic.Int64
	wakeReads  atomic.Int64

	mu          sync.Mutex
	health      gateway.Health
	panicHealth bool
	regResult   gateway.RegisterResult
	regErr      error
	registers   []gateway.RegisterRequest
	verifyErr   error
	codes       []string
	// lookup answers Lookup; nil → a number ending in an even digit is valid (wa_id = number),
	// others invalid.
	lookup  func(ctx context.Context, phones []string) ([]gateway.LookupResult, error)
	lookups [][]string
	// onWake is called by WakeOutbox (to check the order of events).
	onWake func()
}

func newFakeGateway() *fakeGateway {
	return &fakeGateway{health: gateway.Health{GatewayStatus: gateway.StatusConnected}}
}

func (g *fakeGateway) setStatus(s string) {
	g.mu.Lock()
	g.health.GatewayStatus = s
	g.mu.Unlock()
}

func (g *fakeGateway) Health() gateway.Health {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.panicHealth {
		panic("fake gateway: health exploded")
	}
	return g.health
}

func (g *fakeGateway) Register(_ context.Context, r gateway.RegisterRequest) (gateway.RegisterResult, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.registers = append(g.registers, r)
	return g.regResult, g.regErr
}

func (g *fakeGateway) Verify(_ context.Context, code string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.codes = append(g.codes, code)
	return g.verifyErr
}

func (g *fakeGateway) Lookup(ctx context.Context, phones []string) ([]gateway.LookupResult, error) {
	g.mu.Lock()
	g.lookups = append(g.lookups, append([]string(nil), phones...))
	fn := g.lookup
	g.mu.Unlock()
	if fn != nil {
		return fn(ctx, phones)
	}
	var out []gateway.LookupResult
	for _, p := range phones {
		r := gateway.LookupResult{Input: p, Status: "invalid"}
		if (p[len(p)-1]-'0')%2 == 0 {
			r.Status, r.WaID = "valid", p
		}
		out = append(out, r)
	}
	return out, nil
}

func (g *fakeGateway) lookupCalls() [][]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([][]string(nil), g.lookups...)
}

func (g *fakeGateway) WakeOutbox() {
	g.wakeOutbox.Add(1)
	g.mu.Lock()
	fn := g.onWake
	g.mu.Unlock()
	if fn != nil {
		fn()
	}
}

func (g *fakeGateway) WakeReads() { g.wakeReads.Add(1) }

// env is a Handler on a real SQLite store behind a real HTTP server.
type env struct {
	t     testing.TB
	h     *Handler
	srv   *httptest.Server
	st    store.Store
	db    *store.SQLite
	gw    *fakeGateway
	clock *fakeClock
	logs  *testutil.Buffer
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func openStore(t testing.TB, clock *fakeClock) *store.SQLite {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "b.db"), store.WithClock(clock.Now))
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// newEnv starts a handler; mod adjusts the Config (Store, Gateway, Now and Logger are set).
func newEnv(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	clock := testutil.NewClock(t0)
	e := &env{t: t, gw: newFakeGateway(), clock: clock, logs: &testutil.Buffer{}}
	e.db = openStore(t, clock)
	e.st = e.db
	cfg := Config{
		Store:   e.st,
		Gateway: e.gw,
		Now:     clock.Now,
		Logger:  slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.h = h
	e.srv = httptest.NewServer(h)
	t.Cleanup(func() {
		e.srv.Close()
		h.Close()
	})
	return e
}

// seedUser stores a user with a cheap bcrypt hash (logins in tests would otherwise spend most of
// their time in bcrypt under the race detector); hashes this package writes use BcryptCost.
func (e *env) seedUser(name, password string, mustChange bool) {
	e.t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.st.PutUser(context.Background(), store.User{Name: name, PasswordHash: hash, MustChange: mustChange}); err != nil {
		e.t.Fatal(err)
	}
}

const (
	testUser     = "ops"
	testPassword = "Corr3ct-Horse"
)

// token logs in a seeded user and returns the bearer token.
func (e *env) token() string {
	e.t.Helper()
	if _, err := e.st.User(context.Background(), testUser); err != nil {
		e.seedUser(testUser, testPassword, false)
	}
	r := e.do("POST", "/v1/users/login", basic(testUser, testPassword), "")
	r.wantStatus(http.StatusOK)
	var lr struct {
		Users []struct {
			Token        string `json:"token"`
			ExpiresAfter string `json:"expires_after"`
		} `json:"users"`
	}
	r.decode(&lr)
	if len(lr.Users) != 1 || lr.Users[0].Token == "" {
		e.t.Fatalf("login answer %s", r.body)
	}
	return lr.Users[0].Token
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func bearer(tok string) string { return "Bearer " + tok }

type resp struct {
	t      testing.TB
	status int
	header http.Header
	body   []byte
}

// do sends a request; auth is the Authorization header ("" for none).
func (e *env) do(method, path, auth, body string) *resp {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return &resp{t: e.t, status: res.StatusCode, header: res.Header, body: b}
}

func (r *resp) wantStatus(status int) *resp {
	r.t.Helper()
	if r.status != status {
		r.t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	return r
}

func (r *resp) decode(v any) {
	r.t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		r.t.Fatalf("answer is not JSON: %v: %q", err, r.body)
	}
}

// wantError checks an On-Premises error answer: HTTP status, code, and a substring of details.
func (r *resp) wantError(status, code int, details string) {
	r.t.Helper()
	if r.status != status {
		r.t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	var er struct {
		Errors []Error         `json:"errors"`
		Meta   json.RawMessage `json:"meta"`
	}
	r.decode(&er)
	if len(er.Errors) != 1 {
		r.t.Fatalf("want one error object, got %s", r.body)
	}
	got := er.Errors[0]
	if got.Code != code || got.Title != codeInfo[code].title {
		r.t.Fatalf("error %d %q, want %d %q; body %s", got.Code, got.Title, code, codeInfo[code].title, r.body)
	}
	if !strings.Contains(got.Details, details) {
		r.t.Fatalf("details %q do not contain %q", got.Details, details)
	}
	if len(er.Meta) == 0 {
		r.t.Fatalf("no meta in %s", r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		r.t.Fatalf("Content-Type %q", ct)
	}
}

func sha256Sum(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
