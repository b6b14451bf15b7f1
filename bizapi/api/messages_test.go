package api

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/bizapi/gateway"
	"github.com/chatd-dev/chatd/bizapi/store"
)

func TestSendMessageValidation(t *testing.T) {
	e := newEnv(t, nil)
	tok := bearer(e.token())
	body := func(s string) string {
		return `{"to":"+1 555 123 4567","type":"text","text":{"body":` + jsonString(s) + `}}`
	}
	tests := []struct {
		name    string
		body    string
		status  int
		code    int
		details string
	}{
		{"full On-Premises body", `{"preview_url":true,"recipient_type":"individual","to":"15551234567","type":"text","text":{"body":"hi"}}`, 201, 0, ""},
		{"minimal", `{"to":"15551234567","text":{"body":"hi"}}`, 201, 0, ""},
		{"unknown members ignored", `{"to":"15551234567","text":{"body":"hi","x":1},"ttl":5,"context":{"message_id":"x"}}`, 201, 0, ""},
		{"4096 ASCII", body(strings.Repeat("a", 4096)), 201, 0, ""},
		{"4096 two-byte", body(strings.Repeat("é", 4096)), 201, 0, ""},
		{"4096 four-byte", body(strings.Repeat("😀", 4096)), 201, 0, ""},
		{"4096 escaped surrogates", `{"to":"15551234567","text":{"body":"` + strings.Repeat(`\ud83d\ude00`, 4096) + `"}}`, 201, 0, ""},
		{"4097 ASCII", body(strings.Repeat("a", 4097)), 400, CodeTooLong, "text.body has 4097 characters; at most 4096"},
		{"4097 two-byte", body(strings.Repeat("é", 4097)), 400, CodeTooLong, "4097 characters"},
		{"4097 four-byte", body(strings.Repeat("😀", 4097)), 400, CodeTooLong, "4097 characters"},
		{"4097 mixed", body(strings.Repeat("a", 4000) + strings.Repeat("日", 97)), 400, CodeTooLong, "4097 characters"},

		{"recipient_type group", `{"recipient_type":"group","to":"15551234567","text":{"body":"hi"}}`, 400, CodeBadRecipientType, `"group"`},
		{"to missing", `{"text":{"body":"hi"}}`, 400, CodeMissingParameter, "to is required"},
		{"to empty", `{"to":"","text":{"body":"hi"}}`, 400, CodeMissingParameter, "to is required"},
		{"to letters", `{"to":"1-800-FLOWERS","text":{"body":"hi"}}`, 400, CodeInvalidParameter, "to contains the letter 'F'"},
		{"to short", `{"to":"12345","text":{"body":"hi"}}`, 400, CodeInvalidParameter, "has 5 digits"},
		{"to number", `{"to":15551234567,"text":{"body":"hi"}}`, 400, CodeInvalidParameter, "to: expected a string, got a number"},
		{"type image", `{"to":"15551234567","type":"image","image":{"id":"x"}}`, 400, CodeInvalidParameter, `type "image" is not supported`},
		{"text missing", `{"to":"15551234567","type":"text"}`, 400, CodeMissingParameter, "text"},
		{"text null", `{"to":"15551234567","text":null}`, 400, CodeMissingParameter, "text"},
		{"text string", `{"to":"15551234567","text":"hi"}`, 400, CodeInvalidParameter, "text: expected an object, got a string"},
		{"body missing", `{"to":"15551234567","text":{}}`, 400, CodeMissingParameter, "text.body is required"},
		{"body empty", body(""), 400, CodeMissingParameter, "text.body is required"},
		{"body number", `{"to":"15551234567","text":{"body":5}}`, 400, CodeInvalidParameter, "text.body: expected a string"},
		{"preview_url string", `{"preview_url":"yes","to":"15551234567","text":{"body":"hi"}}`, 400, CodeInvalidParameter, "preview_url: expected true or false"},
		{"empty body", ``, 400, CodeInvalidRequest, "empty"},
		{"blank body", " \n", 400, CodeInvalidRequest, "empty"},
		{"malformed", `{"to":`, 400, CodeInvalidRequest, "not valid JSON"},
		{"array", `[]`, 400, CodeInvalidRequest, "must be a JSON object, got an array"},
		{"string", `"hi"`, 400, CodeInvalidRequest, "must be a JSON object"},
		{"trailing data", `{"to":"15551234567","text":{"body":"hi"}} {}`, 400, CodeInvalidRequest, "not valid JSON"},
		{"null", `null`, 400, CodeMissingParameter, "to is required"},
		{"too large", `{"to":"15551234567","text":{"body":"` + strings.Repeat("a", 70_000) + `"}}`, 413, CodeTooLong, "larger than 65536 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.gw.wakeOutbox.Load()
			r := e.do("POST", "/v1/messages", tok, tt.body)
			r.t = t
			if tt.code == 0 {
				r.wantStatus(tt.status)
				return
			}
			r.wantError(tt.status, tt.code, tt.details)
			if e.gw.wakeOutbox.Load() != before {
				t.Fatal("a refused message woke the outbox")
			}
		})
	}
	st, err := e.st.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != 7 {
		t.Fatalf("%d messages stored, want the 7 accepted", st.Messages)
	}
}

// The message is in the store when the 201 arrives, and the gateway is woken after the store
// returned.
func TestSendMessageStoredBeforeAnswer(t *testing.T) {
	var events []string
	var mu sync.Mutex
	record := func(s string) {
		mu.Lock()
		events = append(events, s)
		mu.Unlock()
	}
	e := newEnv(t, func(c *Config) {
		c.Store = &orderStore{Store: c.Store, record: record}
	})
	e.gw.onWake = func() { record("wake") }
	tok := bearer(e.token())

	r := e.do("POST", "/v1/messages", tok, `{"preview_url":true,"to":"+44 20 7946 0018","text":{"body":"Grüße 👋"}}`).wantStatus(http.StatusCreated)
	var ans struct {
		Messages []struct {
			ID string `json:"id"`
		} `json:"messages"`
		Meta map[string]string `json:"meta"`
	}
	r.decode(&ans)
	if len(ans.Messages) != 1 || ans.Meta["api_status"] != "stable" {
		t.Fatalf("answer %s", r.body)
	}
	id := ans.Messages[0].ID
	if !regexp.MustCompile(`^gBEG[A-Za-z0-9_-]{23}$`).MatchString(id) {
		t.Fatalf("id %q is not gBEG + 23 base64url characters", id)
	}
	m, err := e.db.Message(context.Background(), id) // the real store, right after the 201
	if err != nil {
		t.Fatalf("the accepted message is not in the store: %v", err)
	}
	if m.To != "442079460018" || m.Body != "Grüße 👋" || !m.PreviewURL || m.Status != store.StatusAccepted || !m.CreatedAt.Equal(t0) {
		t.Fatalf("stored %+v", m)
	}
	mu.Lock()
	got := strings.Join(events, ",")
	mu.Unlock()
	if got != "add-start,add-done,wake" {
		t.Fatalf("events %q, want the store first, then the wake", got)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
}

// orderStore records when AddMessage starts and returns.
type orderStore struct {
	store.Store
	record func(string)
}

func (s *orderStore) AddMessage(ctx context.Context, m store.Message) error {
	s.record("add-start")
	err := s.Store.AddMessage(ctx, m)
	s.record("add-done")
	return err
}

// failStore fails AddMessage with err, and, with dupes > 0, returns ErrDuplicate that many times first.
type failStore struct {
	store.Store
	mu    sync.Mutex
	err   error
	dupes int
	ids   []string
}

func (s *failStore) AddMessage(ctx context.Context, m store.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids = append(s.ids, m.ID)
	if s.dupes > 0 {
		s.dupes--
		return store.ErrDuplicate
	}
	if s.err != nil {
		return s.err
	}
	return s.Store.AddMessage(ctx, m)
}

func TestSendMessageStoreFailures(t *testing.T) {
	fs := &failStore{}
	e := newEnv(t, func(c *Config) { fs.Store = c.Store; c.Store = fs })
	tok := bearer(e.token())
	send := func() *resp { return e.do("POST", "/v1/messages", tok, `{"to":"15551234567","text":{"body":"hi"}}`) }

	fs.err = errors.New("disk I/O error: /var/lib/bizapi/b.db")
	r := send()
	r.wantError(http.StatusInternalServerError, CodeInternal, "not stored (not accepted); retry")
	if strings.Contains(string(r.body), "disk I/O") || strings.Contains(string(r.body), "goroutine") {
		t.Fatalf("internals in the answer: %s", r.body)
	}
	if !strings.Contains(e.logs.String(), "disk I/O error") {
		t.Fatalf("cause not logged: %s", e.logs)
	}
	fs.err = store.ErrClosed
	send().wantError(http.StatusServiceUnavailable, CodeNotReady, "shutting down")
	if n := e.gw.wakeOutbox.Load(); n != 0 {
		t.Fatalf("failed sends woke the outbox %d times", n)
	}

	// An id collision draws another id.
	fs.err, fs.dupes, fs.ids = nil, 2, nil
	send().wantStatus(http.StatusCreated)
	if len(fs.ids) != 3 || fs.ids[0] == fs.ids[1] || fs.ids[1] == fs.ids[2] {
		t.Fatalf("ids tried: %q", fs.ids)
	}
	fs.dupes, fs.ids = 5, nil
	send().wantError(http.StatusInternalServerError, CodeInternal, "")
	if len(fs.ids) != 3 {
		t.Fatalf("%d attempts after collisions, want 3", len(fs.ids))
	}
}

func TestSendMessageNeedsRegistration(t *testing.T) {
	e := newEnv(t, nil)
	tok := bearer(e.token())
	send := func() *resp { return e.do("POST", "/v1/messages", tok, `{"to":"15551234567","text":{"body":"hi"}}`) }
	e.gw.setStatus(gateway.StatusUnregistered)
	send().wantError(http.StatusServiceUnavailable, CodeNotReady, "no number is registered")
	e.gw.setStatus(gateway.StatusUninitialized)
	send().wantStatus(http.StatusCreated) // starting up: the outbox waits
	e.gw.setStatus(gateway.StatusDisconnected)
	send().wantStatus(http.StatusCreated) // registered, not connected: sent later
	e.gw.setStatus(gateway.StatusConnecting)
	send().wantStatus(http.StatusCreated)
}

func TestSendMessageCustomID(t *testing.T) {
	n := 0
	e := newEnv(t, func(c *Config) {
		c.NewMessageID = func() string { n++; return `id"` + strings.Repeat("x", n) }
	})
	tok := bearer(e.token())
	r := e.do("POST", "/v1/messages", tok, `{"to":"15551234567","text":{"body":"hi"}}`).wantStatus(http.StatusCreated)
	var ans struct {
		Messages []struct{ ID string } `json:"messages"`
	}
	r.decode(&ans)
	if ans.Messages[0].ID != `id"x` {
		t.Fatalf("id %q", ans.Messages[0].ID)
	}
}

func TestMarkRead(t *testing.T) {
	e := newEnv(t, nil)
	tok := bearer(e.token())
	ctx := context.Background()
	in := store.Inbound{ID: "ABGGFlA5FpafAgo6tHcNmNjXmuSf", ServerID: 77, From: "15550001111", Type: "text", Body: "hello",
		Timestamp: t0, ReceivedAt: t0}
	if _, err := e.st.SaveInbound(ctx, in, nil); err != nil {
		t.Fatal(err)
	}
	e.do("PUT", "/v1/messages/ABGGnope", tok, `{"status":"read"}`).wantError(http.StatusNotFound, CodeNotFound, `no received message with id "ABGGnope"`)
	e.do("PUT", "/v1/messages/"+strings.Repeat("x", 200), tok, `{"status":"read"}`).wantError(http.StatusNotFound, CodeNotFound, "")
	e.do("PUT", "/v1/messages/"+in.ID, tok, `{}`).wantError(http.StatusBadRequest, CodeMissingParameter, "status")
	e.do("PUT", "/v1/messages/"+in.ID, tok, `{"status":"delivered"}`).wantError(http.StatusBadRequest, CodeInvalidParameter, `status must be "read"`)
	e.do("PUT", "/v1/messages/"+in.ID, tok, ``).wantError(http.StatusBadRequest, CodeInvalidRequest, "empty")
	if n := e.gw.wakeReads.Load(); n != 0 {
		t.Fatalf("refused requests woke the read sender %d times", n)
	}

	r := e.do("PUT", "/v1/messages/"+in.ID, tok, `{"status":"read"}`).wantStatus(http.StatusOK)
	if !strings.HasPrefix(string(r.body), `{"meta":`) {
		t.Fatalf("answer %s", r.body)
	}
	got, err := e.st.Inbound(ctx, in.ID)
	if err != nil || !got.ReadRequested {
		t.Fatalf("read not requested in the store: %+v %v", got, err)
	}
	if n := e.gw.wakeReads.Load(); n != 1 {
		t.Fatalf("WakeReads called %d times", n)
	}
	e.do("PUT", "/v1/messages/"+in.ID, tok, `{"status":"read"}`).wantStatus(http.StatusOK) // twice is fine

	// An outbound message id is not a received message.
	r = e.do("POST", "/v1/messages", tok, `{"to":"15551234567","text":{"body":"hi"}}`).wantStatus(http.StatusCreated)
	var ans struct {
		Messages []struct{ ID string } `json:"messages"`
	}
	r.decode(&ans)
	e.do("PUT", "/v1/messages/"+ans.Messages[0].ID, tok, `{"status":"read"}`).wantError(http.StatusNotFound, CodeNotFound, "")
}

func TestNewMessageID(t *testing.T) {
	seen := map[string]bool{}
	re := regexp.MustCompile(`^gBEG[A-Za-z0-9_-]{23}$`)
	prev := ""
	for i := range 1000 {
		id := newMessageID()
		if !re.MatchString(id) || seen[id] {
			t.Fatalf("id %q", id)
		}
		seen[id] = true
		// Ids sort by their millisecond: one made in a later millisecond sorts after.
		if i%100 == 0 {
			if id <= prev {
				t.Fatalf("id %q made after %q sorts before it", id, prev)
			}
			for ms := time.Now().UnixMilli(); time.Now().UnixMilli() == ms; {
				runtime.Gosched() // until the clock reaches the next millisecond
			}
			prev = id
		}
	}
}
