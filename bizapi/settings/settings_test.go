package settings

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPatch(t *testing.T) {
	def := Defaults()
	with := func(f func(*Settings)) Settings {
		s := Defaults()
		f(&s)
		return s
	}
	tests := []struct {
		name    string
		from    Settings
		body    string
		want    Settings
		wantKey string // KeyError.Key; "" and !malformed means success
		wantIn  string // substring of the error
		malform bool
	}{
		{name: "empty object changes nothing", from: def, body: `{}`, want: def},
		{name: "url", from: def, body: `{"webhooks":{"url":"https://hooks.example/x"}}`,
			want: with(func(s *Settings) { s.Webhooks.URL = "https://hooks.example/x" })},
		{name: "url http allowed", from: def, body: `{"webhooks":{"url":"http://127.0.0.1:9000/cb"}}`,
			want: with(func(s *Settings) { s.Webhooks.URL = "http://127.0.0.1:9000/cb" })},
		{name: "url only; other webhook keys kept",
			from: with(func(s *Settings) { s.Webhooks.MaxConcurrentRequests = 40; s.Webhooks.Secret = "0123456789abcdef" }),
			body: `{"webhooks":{"url":"https://a.example"}}`,
			want: with(func(s *Settings) {
				s.Webhooks.MaxConcurrentRequests = 40
				s.Webhooks.Secret = "0123456789abcdef"
				s.Webhooks.URL = "https://a.example"
			})},
		{name: "url cleared with empty", from: with(func(s *Settings) { s.Webhooks.URL = "https://a.example" }),
			body: `{"webhooks":{"url":""}}`, want: def},
		{name: "url cleared with null", from: with(func(s *Settings) { s.Webhooks.URL = "https://a.example" }),
			body: `{"webhooks":{"url":null}}`, want: def},
		{name: "whole webhooks null resets it", from: with(func(s *Settings) { s.Webhooks.URL = "https://a.example"; s.Webhooks.Message.Read = true }),
			body: `{"webhooks":null}`, want: def},
		{name: "wrapped GET shape with meta", from: def,
			body: `{"meta":{"version":"x"},"settings":{"application":{"callback_persist":false}}}`,
			want: with(func(s *Settings) { s.CallbackPersist = false })},
		{name: "whitespace everywhere", from: def,
			body: " {\n \"webhooks\" : { \"max_concurrent_requests\" :  50 , \"message\" : { \"read\" : true } } } \n",
			want: with(func(s *Settings) { s.Webhooks.MaxConcurrentRequests = 50; s.Webhooks.Message.Read = true })},
		{name: "max concurrent bounds low", from: def, body: `{"webhooks":{"max_concurrent_requests":1}}`,
			want: with(func(s *Settings) { s.Webhooks.MaxConcurrentRequests = 1 })},
		{name: "max concurrent bounds high", from: def, body: `{"webhooks":{"max_concurrent_requests":100}}`,
			want: with(func(s *Settings) { s.Webhooks.MaxConcurrentRequests = 100 })},
		{name: "max concurrent null → default", from: with(func(s *Settings) { s.Webhooks.MaxConcurrentRequests = 3 }),
			body: `{"webhooks":{"max_concurrent_requests":null}}`, want: def},
		{name: "callbacks per request 1", from: def, body: `{"webhooks":{"max_callbacks_per_request":1}}`,
			want: with(func(s *Settings) { s.Webhooks.MaxCallbacksPerRequest = 1 })},
		{name: "callbacks per request 1000", from: def, body: `{"webhooks":{"max_callbacks_per_request":1000}}`,
			want: with(func(s *Settings) { s.Webhooks.MaxCallbacksPerRequest = 1000 })},
		{name: "callbacks per request null → default", from: with(func(s *Settings) { s.Webhooks.MaxCallbacksPerRequest = 5 }),
			body: `{"webhooks":{"max_callbacks_per_request":null}}`, want: def},
		{name: "backoff", from: def, body: `{"callback_backoff_delay_ms":1000,"max_callback_backoff_delay_ms":60000}`,
			want: with(func(s *Settings) { s.CallbackBackoffDelayMS = 1000; s.MaxCallbackBackoffDelayMS = 60000 })},
		{name: "sent_status", from: def, body: `{"sent_status":false}`,
			want: with(func(s *Settings) { s.SentStatus = False })},
		{name: "message.sent", from: def, body: `{"webhooks":{"message":{"sent":false}}}`,
			want: with(func(s *Settings) { s.Webhooks.Message.Sent = False })},
		{name: "message.sent null unsets", from: with(func(s *Settings) { s.Webhooks.Message.Sent = False }),
			body: `{"webhooks":{"message":{"sent":null}}}`, want: def},
		{name: "secret", from: def, body: `{"webhooks":{"secret":"0123456789abcdef"}}`,
			want: with(func(s *Settings) { s.Webhooks.Secret = "0123456789abcdef" })},
		{name: "secret mask keeps it", from: with(func(s *Settings) { s.Webhooks.Secret = "0123456789abcdef" }),
			body: `{"webhooks":{"secret":"***"}}`, want: with(func(s *Settings) { s.Webhooks.Secret = "0123456789abcdef" })},
		{name: "secret cleared", from: with(func(s *Settings) { s.Webhooks.Secret = "0123456789abcdef" }),
			body: `{"webhooks":{"secret":""}}`, want: def},

		{name: "unknown top key", from: def, body: `{"pass_through":true}`, wantKey: "pass_through", wantIn: "unknown setting; bizapi supports webhooks.url"},
		{name: "typo webhook", from: def, body: `{"webhook":{"url":"https://a.example"}}`, wantKey: "webhook", wantIn: "unknown"},
		{name: "unknown webhooks key", from: def, body: `{"webhooks":{"uri":"x"}}`, wantKey: "webhooks.uri", wantIn: "unknown"},
		{name: "unknown message key", from: def, body: `{"webhooks":{"message":{"failed":true}}}`, wantKey: "webhooks.message.failed", wantIn: "unknown"},
		{name: "unknown group", from: def, body: `{"settings":{"media":{}}}`, wantKey: "settings.media"},
		{name: "settings without application", from: def, body: `{"settings":{}}`, wantKey: "settings.application", wantIn: "missing"},
		{name: "settings plus flat keys", from: def, body: `{"settings":{"application":{}},"callback_persist":true}`, wantKey: "callback_persist"},
		{name: "max concurrent 0", from: def, body: `{"webhooks":{"max_concurrent_requests":0}}`,
			wantKey: "webhooks.max_concurrent_requests", wantIn: "0 is out of range; allowed: a whole number from 1 to 100"},
		{name: "max concurrent 101", from: def, body: `{"webhooks":{"max_concurrent_requests":101}}`,
			wantKey: "webhooks.max_concurrent_requests", wantIn: "from 1 to 100"},
		{name: "max concurrent string", from: def, body: `{"webhooks":{"max_concurrent_requests":"12"}}`,
			wantKey: "webhooks.max_concurrent_requests", wantIn: `must be a number, got "12"`},
		{name: "max concurrent fraction", from: def, body: `{"webhooks":{"max_concurrent_requests":12.5}}`,
			wantKey: "webhooks.max_concurrent_requests", wantIn: "12.5 is not a whole number"},
		{name: "max concurrent exponent", from: def, body: `{"webhooks":{"max_concurrent_requests":1e1}}`,
			wantKey: "webhooks.max_concurrent_requests", wantIn: "not a whole number"},
		{name: "callbacks per request 0", from: def, body: `{"webhooks":{"max_callbacks_per_request":0}}`,
			wantKey: "webhooks.max_callbacks_per_request", wantIn: "0 is out of range; allowed: a whole number from 1 to 1000"},
		{name: "callbacks per request 1001", from: def, body: `{"webhooks":{"max_callbacks_per_request":1001}}`,
			wantKey: "webhooks.max_callbacks_per_request", wantIn: "from 1 to 1000"},
		{name: "bool as string", from: def, body: `{"callback_persist":"true"}`, wantKey: "callback_persist", wantIn: "must be true or false"},
		{name: "bool as number", from: def, body: `{"webhooks":{"message":{"read":1}}}`, wantKey: "webhooks.message.read", wantIn: "must be true or false, got 1"},
		{name: "webhooks not object", from: def, body: `{"webhooks":"https://a.example"}`, wantKey: "webhooks", wantIn: "must be an object"},
		{name: "message not object", from: def, body: `{"webhooks":{"message":[]}}`, wantKey: "webhooks.message", wantIn: "must be an object"},
		{name: "url not string", from: def, body: `{"webhooks":{"url":5}}`, wantKey: "webhooks.url", wantIn: "must be a string"},
		{name: "url relative", from: def, body: `{"webhooks":{"url":"/hook"}}`, wantKey: "webhooks.url", wantIn: `has scheme ""`},
		{name: "url ftp", from: def, body: `{"webhooks":{"url":"ftp://a.example/"}}`, wantKey: "webhooks.url", wantIn: `scheme "ftp"`},
		{name: "url no host", from: def, body: `{"webhooks":{"url":"https:///x"}}`, wantKey: "webhooks.url", wantIn: "no host"},
		{name: "url too long", from: def, body: `{"webhooks":{"url":"https://a.example/` + strings.Repeat("a", 2048) + `"}}`, wantKey: "webhooks.url", wantIn: "bytes long"},
		{name: "secret short", from: def, body: `{"webhooks":{"secret":"short"}}`, wantKey: "webhooks.secret", wantIn: "has 5 bytes"},
		{name: "backoff too small", from: def, body: `{"callback_backoff_delay_ms":10}`, wantKey: "callback_backoff_delay_ms", wantIn: "from 100 to 3600000"},
		{name: "cap below step", from: def, body: `{"callback_backoff_delay_ms":60000,"max_callback_backoff_delay_ms":30000}`,
			wantKey: "max_callback_backoff_delay_ms", wantIn: "less than callback_backoff_delay_ms"},
		{name: "first error in key order", from: def, body: `{"sent_status":1,"callback_persist":2}`, wantKey: "callback_persist"},

		{name: "not JSON", from: def, body: `{"webhooks":`, malform: true, wantIn: "malformed JSON"},
		{name: "array", from: def, body: `[]`, malform: true, wantIn: "must be a JSON object"},
		{name: "null", from: def, body: `null`, malform: true},
		{name: "empty", from: def, body: ``, malform: true, wantIn: "empty"},
		{name: "trailing data", from: def, body: `{} {}`, malform: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.from.Patch([]byte(tt.body))
			switch {
			case tt.malform:
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
			case tt.wantKey != "":
				var ke *KeyError
				if !errors.As(err, &ke) {
					t.Fatalf("err = %v, want a KeyError for %s", err, tt.wantKey)
				}
				if ke.Key != tt.wantKey {
					t.Fatalf("key = %q, want %q (%v)", ke.Key, tt.wantKey, err)
				}
			default:
				if err != nil {
					t.Fatalf("Patch: %v", err)
				}
				if got != tt.want {
					t.Fatalf("got  %+v\nwant %+v", got, tt.want)
				}
			}
			if err != nil {
				if tt.wantIn != "" && !strings.Contains(err.Error(), tt.wantIn) {
					t.Fatalf("error %q does not contain %q", err, tt.wantIn)
				}
				if got != tt.from {
					t.Fatalf("a failed Patch returned changed settings %+v", got)
				}
			}
		})
	}
}

func TestSendSentRule(t *testing.T) {
	tests := []struct {
		sentStatus, messageSent OptBool
		want                    bool
	}{
		{Unset, Unset, true},
		{False, Unset, false}, // the legacy switch alone turns them off
		{True, Unset, true},
		{False, True, true}, // an explicit webhooks.message.sent wins
		{True, False, false},
		{Unset, False, false},
	}
	for _, tt := range tests {
		s := Defaults()
		s.SentStatus, s.Webhooks.Message.Sent = tt.sentStatus, tt.messageSent
		if got := s.StatusCallback("sent"); got != tt.want {
			t.Errorf("sent_status=%v message.sent=%v: StatusCallback(sent) = %v, want %v", tt.sentStatus, tt.messageSent, got, tt.want)
		}
		var pub struct {
			Settings struct {
				Application struct {
					SentStatus *bool `json:"sent_status"`
					Webhooks   struct {
						Message struct{ Sent *bool }
					}
				}
			}
		}
		if err := json.Unmarshal(s.Public(), &pub); err != nil {
			t.Fatal(err)
		}
		app := pub.Settings.Application
		if app.Webhooks.Message.Sent == nil || *app.Webhooks.Message.Sent != tt.want {
			t.Errorf("GET shows webhooks.message.sent = %v, want the effective %v", app.Webhooks.Message.Sent, tt.want)
		}
		if (app.SentStatus != nil) != tt.sentStatus.Set() {
			t.Errorf("GET shows sent_status = %v for %v", app.SentStatus, tt.sentStatus)
		}
	}
	s := Defaults()
	for status, want := range map[string]bool{"delivered": true, "read": false, "failed": true} {
		if got := s.StatusCallback(status); got != want {
			t.Errorf("default StatusCallback(%s) = %v, want %v", status, got, want)
		}
	}
}

func TestPublicDefaults(t *testing.T) {
	want := `{"settings":{"application":{"callback_backoff_delay_ms":3000,"callback_persist":true,` +
		`"max_callback_backoff_delay_ms":900000,"webhooks":{"url":"","max_concurrent_requests":12,` +
		`"max_callbacks_per_request":100,"message":{"sent":true,"delivered":true,"read":false}}}}}`
	if got := string(Defaults().Public()); got != want {
		t.Fatalf("Public() =\n%s\nwant\n%s", got, want)
	}
}

func TestSecretIsWriteOnly(t *testing.T) {
	s, err := Defaults().Patch([]byte(`{"webhooks":{"secret":"very-secret-value-1234"}}`))
	if err != nil {
		t.Fatal(err)
	}
	pub := string(s.Public())
	if strings.Contains(pub, "very-secret") || !strings.Contains(pub, `"secret":"***"`) {
		t.Fatalf("Public() = %s", pub)
	}
	if str := s.String(); strings.Contains(str, "very-secret") {
		t.Fatalf("String() shows the secret: %s", str)
	}
	if !strings.Contains(string(s.Marshal()), "very-secret-value-1234") {
		t.Fatalf("Marshal() lost the secret: %s", s.Marshal())
	}
	// GET → edit → PATCH keeps the secret.
	back, err := s.Patch([]byte(strings.Replace(pub, `"read":false`, `"read":true`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if back.Webhooks.Secret != "very-secret-value-1234" || !back.Webhooks.Message.Read {
		t.Fatalf("round trip: %+v", back)
	}
}

func TestMarshalParseRoundTrip(t *testing.T) {
	cases := []Settings{Defaults()}
	s := Defaults()
	s.Webhooks = Webhooks{URL: "https://h.example/cb?x=1", Secret: "0123456789abcdefX", MaxConcurrentRequests: 7,
		MaxCallbacksPerRequest: 1, Message: MessageCallbacks{Sent: False, Delivered: false, Read: true}}
	s.SentStatus = True
	s.CallbackPersist = false
	s.CallbackBackoffDelayMS = 250
	s.MaxCallbackBackoffDelayMS = 1000
	cases = append(cases, s)
	for _, c := range cases {
		got, err := Parse(c.Marshal())
		if err != nil {
			t.Fatalf("Parse(%s): %v", c.Marshal(), err)
		}
		if got != c {
			t.Fatalf("round trip\n got %+v\nwant %+v", got, c)
		}
	}
}

func TestParse(t *testing.T) {
	for _, doc := range []string{"", "  ", "{}"} {
		s, err := Parse(json.RawMessage(doc))
		if err != nil || s != Defaults() {
			t.Fatalf("Parse(%q) = %+v, %v", doc, s, err)
		}
	}
	s, err := Parse(nil)
	if err != nil || s != Defaults() {
		t.Fatalf("Parse(nil) = %+v, %v", s, err)
	}
	// Keys written by a newer version are ignored; known keys are still checked.
	s, err = Parse(json.RawMessage(`{"future_key":1,"webhooks":{"new":true,"url":"https://a.example"}}`))
	if err != nil || s.Webhooks.URL != "https://a.example" {
		t.Fatalf("Parse with unknown keys = %+v, %v", s, err)
	}
	if _, err := Parse(json.RawMessage(`{"webhooks":{"max_concurrent_requests":1000}}`)); err == nil {
		t.Fatal("Parse accepted an out-of-range value")
	}
}

func TestBackoff(t *testing.T) {
	s := Defaults()
	for _, tt := range []struct {
		attempts int
		want     time.Duration
	}{
		{0, 3 * time.Second}, {1, 3 * time.Second}, {2, 6 * time.Second}, {10, 30 * time.Second},
		{300, 15 * time.Minute}, {301, 15 * time.Minute}, {1 << 62, 15 * time.Minute},
	} {
		if got := s.Backoff(tt.attempts); got != tt.want {
			t.Errorf("Backoff(%d) = %v, want %v", tt.attempts, got, tt.want)
		}
	}
}

func TestLive(t *testing.T) {
	l := NewLive(Defaults())
	ch := l.Subscribe()
	other := l.Subscribe()
	l.Unsubscribe(other)

	s := Defaults()
	s.Webhooks.URL = "https://one.example"
	l.Set(s)
	s.Webhooks.URL = "https://two.example"
	l.Set(s) // coalesces with the first signal
	select {
	case <-ch:
	default:
		t.Fatal("no signal after Set")
	}
	select {
	case <-ch:
		t.Fatal("signals did not coalesce")
	default:
	}
	select {
	case <-other:
		t.Fatal("signal after Unsubscribe")
	default:
	}
	if got := l.Get().Webhooks.URL; got != "https://two.example" {
		t.Fatalf("Get().Webhooks.URL = %q", got)
	}
}

func TestLiveConcurrent(t *testing.T) {
	l := NewLive(Defaults())
	ch := l.Subscribe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			s := Defaults()
			s.Webhooks.MaxConcurrentRequests = 1 + i%100
			l.Set(s)
		}
	}()
	for {
		select {
		case <-done:
			if got := l.Get().Webhooks.MaxConcurrentRequests; got != 1+999%100 {
				t.Fatalf("final value %d", got)
			}
			return
		case <-ch:
			if n := l.Get().Webhooks.MaxConcurrentRequests; n < 1 || n > 100 {
				t.Fatalf("torn read: %d", n)
			}
		}
	}
}
