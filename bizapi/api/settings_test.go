package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/chatd-dev/chatd/bizapi/settings"
)

func TestSettingsEndpoints(t *testing.T) {
	live := settings.NewLive(settings.Defaults())
	e := newEnv(t, func(c *Config) { c.Settings = live })
	tok := bearer(e.token())
	ctx := context.Background()
	changes := live.Subscribe()

	getApp := func() map[string]any {
		t.Helper()
		var doc struct {
			Settings struct {
				Application map[string]any `json:"application"`
			} `json:"settings"`
			Meta map[string]string `json:"meta"`
		}
		e.do("GET", "/v1/settings/application", tok, "").wantStatus(http.StatusOK).decode(&doc)
		if doc.Meta["api_status"] != "stable" || doc.Settings.Application == nil {
			t.Fatalf("GET document %+v", doc)
		}
		return doc.Settings.Application
	}
	app := getApp()
	if app["callback_backoff_delay_ms"] != 3000.0 || app["callback_persist"] != true || app["max_callback_backoff_delay_ms"] != 900000.0 {
		t.Fatalf("defaults %v", app)
	}
	wh := app["webhooks"].(map[string]any)
	if wh["max_concurrent_requests"] != 12.0 || wh["url"] != "" {
		t.Fatalf("webhooks defaults %v", wh)
	}

	// PATCH changes only what it names, saves it, and makes it live.
	r := e.do("PATCH", "/v1/settings/application", tok,
		`{"webhooks":{"url":"https://hooks.example/wa","secret":"0123456789abcdef-secret","message":{"read":true}}}`).wantStatus(http.StatusOK)
	if strings.Contains(string(r.body), "0123456789abcdef") || !strings.Contains(string(r.body), `"secret":"***"`) {
		t.Fatalf("PATCH answer shows the secret or no mask: %s", r.body)
	}
	select {
	case <-changes:
	default:
		t.Fatal("PATCH did not signal the live settings")
	}
	got := live.Get()
	if got.Webhooks.URL != "https://hooks.example/wa" || got.Webhooks.Secret != "0123456789abcdef-secret" ||
		!got.Webhooks.Message.Read || got.Webhooks.MaxConcurrentRequests != 12 || !got.CallbackPersist {
		t.Fatalf("live settings %+v", got)
	}
	doc, err := e.st.Settings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stored, err := settings.Parse(doc); err != nil || stored != got {
		t.Fatalf("stored %s (%v), want %+v", doc, err, got)
	}
	wh = getApp()["webhooks"].(map[string]any)
	if wh["url"] != "https://hooks.example/wa" || wh["secret"] != "***" {
		t.Fatalf("GET after PATCH %v", wh)
	}

	// Refused patches name the key and change nothing.
	for _, tt := range []struct {
		body    string
		code    int
		details string
	}{
		{`{"pass_through":true}`, CodeInvalidParameter, "pass_through: unknown setting"},
		{`{"webhooks":{"max_concurrent_requests":0}}`, CodeInvalidParameter, "webhooks.max_concurrent_requests: 0 is out of range; allowed: a whole number from 1 to 100"},
		{`{"webhooks":{"max_concurrent_requests":"5"}}`, CodeInvalidParameter, "webhooks.max_concurrent_requests: must be a number"},
		{`{"callback_persist":"no"}`, CodeInvalidParameter, "callback_persist: must be true or false"},
		{`{"webhooks":{"url":"ftp://x.example"}}`, CodeInvalidParameter, "webhooks.url"},
		{`{"webhooks":{"secret":"short"}}`, CodeInvalidParameter, "webhooks.secret"},
		{`{"callback_backoff_delay_ms":100000,"max_callback_backoff_delay_ms":50000}`, CodeInvalidParameter, "max_callback_backoff_delay_ms"},
		{`{"webhooks":`, CodeInvalidRequest, "malformed JSON"},
		{`[1]`, CodeInvalidRequest, "must be a JSON object"},
		{``, CodeInvalidRequest, "empty"},
	} {
		e.do("PATCH", "/v1/settings/application", tok, tt.body).wantError(http.StatusBadRequest, tt.code, tt.details)
	}
	if live.Get() != got {
		t.Fatalf("a refused PATCH changed the settings: %+v", live.Get())
	}

	// A new handler on the same store (no Config.Settings) reads the saved settings.
	h2, err := New(Config{Store: e.st, Gateway: e.gw})
	if err != nil {
		t.Fatal(err)
	}
	h2.Close()
	if h2.Settings().Get() != got {
		t.Fatalf("reloaded %+v", h2.Settings().Get())
	}

	// DELETE resets everything, saved and live.
	r = e.do("DELETE", "/v1/settings/application", tok, "").wantStatus(http.StatusOK)
	if live.Get() != settings.Defaults() {
		t.Fatalf("after DELETE %+v", live.Get())
	}
	var back struct {
		Settings json.RawMessage `json:"settings"`
	}
	r.decode(&back)
	if want := `{"settings":` + string(back.Settings) + `}`; want != string(settings.Defaults().Public()) {
		t.Fatalf("DELETE answer %s", r.body)
	}
	doc, _ = e.st.Settings(ctx)
	if s, _ := settings.Parse(doc); s != settings.Defaults() {
		t.Fatalf("stored after DELETE %s", doc)
	}

	// The GET document can be edited and sent back whole.
	whole := `{"settings":{"application":{"callback_persist":false,"webhooks":{"url":"http://127.0.0.1:9/cb","secret":"***"}}},"meta":{"version":"x"}}`
	e.do("PATCH", "/v1/settings/application", tok, whole).wantStatus(http.StatusOK)
	if s := live.Get(); s.CallbackPersist || s.Webhooks.URL != "http://127.0.0.1:9/cb" {
		t.Fatalf("after wrapped PATCH %+v", s)
	}
}
