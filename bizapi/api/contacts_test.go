package api

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/bizapi/gateway"
)

type contactsAnswer struct {
	Contacts []contactResult `json:"contacts"`
}

func (e *env) contacts(tok, body string) contactsAnswer {
	e.t.Helper()
	r := e.do("POST", "/v1/contacts", tok, body).wantStatus(http.StatusOK)
	var a contactsAnswer
	r.decode(&a)
	return a
}

func TestContactsWait(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.TokenTTL = 30 * 24 * time.Hour }) // outlives the contact cache
	tok := bearer(e.token())
	a := e.contacts(tok, `{"blocking":"wait","contacts":["+1 555 123 4568","15551234567","not a number","+15551234568"]}`)
	want := []contactResult{
		{Input: "+1 555 123 4568", Status: ContactValid, WaID: "15551234568"},
		{Input: "15551234567", Status: ContactInvalid},
		{Input: "not a number", Status: ContactInvalid},
		{Input: "+15551234568", Status: ContactValid, WaID: "15551234568"},
	}
	if !reflect.DeepEqual(a.Contacts, want) {
		t.Fatalf("contacts\n got %+v\nwant %+v", a.Contacts, want)
	}
	calls := e.gw.lookupCalls()
	if !reflect.DeepEqual(calls, [][]string{{"15551234568", "15551234567"}}) {
		t.Fatalf("lookups %q: want one with each normalized number once", calls)
	}

	// Cached: no lookup, even while disconnected.
	e.gw.setStatus(gateway.StatusConnecting)
	a = e.contacts(tok, `{"blocking":"wait","contacts":["15551234568","15551234567"]}`)
	if a.Contacts[0].Status != ContactValid || a.Contacts[1].Status != ContactInvalid || len(e.gw.lookupCalls()) != 1 {
		t.Fatalf("cached answer %+v, lookups %d", a.Contacts, len(e.gw.lookupCalls()))
	}
	// Not cached and not connected → 1011.
	e.do("POST", "/v1/contacts", tok, `{"blocking":"wait","contacts":["15551230000"]}`).
		wantError(http.StatusServiceUnavailable, CodeNotReady, `gateway_status "connecting"`)
	e.do("POST", "/v1/contacts", tok, `{"blocking":"no_wait","contacts":["15551230000"]}`).
		wantError(http.StatusServiceUnavailable, CodeNotReady, "not connected")
	e.gw.setStatus(gateway.StatusConnected)

	// force_check asks again.
	e.contacts(tok, `{"blocking":"wait","contacts":["15551234568"],"force_check":true}`)
	if n := len(e.gw.lookupCalls()); n != 2 {
		t.Fatalf("force_check: %d lookups", n)
	}
	// After 7 days the cache has expired.
	e.clock.Advance(ContactCacheTTL)
	e.contacts(tok, `{"blocking":"wait","contacts":["15551234568"]}`)
	if n := len(e.gw.lookupCalls()); n != 3 {
		t.Fatalf("after 7 days: %d lookups", n)
	}

	// A failed lookup answers "failed" and caches nothing.
	e.gw.mu.Lock()
	e.gw.lookup = func(context.Context, []string) ([]gateway.LookupResult, error) { return nil, errors.New("timeout") }
	e.gw.mu.Unlock()
	a = e.contacts(tok, `{"blocking":"wait","contacts":["15559990000"]}`)
	if a.Contacts[0].Status != ContactFailed {
		t.Fatalf("failed lookup: %+v", a.Contacts)
	}
	// The gateway saying it is not connected → 1011.
	e.gw.mu.Lock()
	e.gw.lookup = func(context.Context, []string) ([]gateway.LookupResult, error) { return nil, gateway.ErrNotConnected }
	e.gw.mu.Unlock()
	e.do("POST", "/v1/contacts", tok, `{"blocking":"wait","contacts":["15559990000"]}`).wantError(http.StatusServiceUnavailable, CodeNotReady, "not connected")
}

func TestContactsNoWait(t *testing.T) {
	e := newEnv(t, nil)
	tok := bearer(e.token())
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	e.gw.mu.Lock()
	e.gw.lookup = func(ctx context.Context, phones []string) ([]gateway.LookupResult, error) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		out := make([]gateway.LookupResult, len(phones))
		for i, p := range phones {
			out[i] = gateway.LookupResult{Input: p, Status: ContactValid, WaID: p}
		}
		return out, nil
	}
	e.gw.mu.Unlock()

	// no_wait is the default.
	a := e.contacts(tok, `{"contacts":["+15551112222","bad"]}`)
	if a.Contacts[0].Status != ContactProcessing || a.Contacts[0].WaID != "" || a.Contacts[1].Status != ContactInvalid {
		t.Fatalf("first no_wait answer %+v", a.Contacts)
	}
	<-started
	// A second request while the lookup runs starts no second lookup for the same number, but one
	// for a new number.
	a = e.contacts(tok, `{"blocking":"no_wait","contacts":["15551112222","15553334444"]}`)
	if a.Contacts[0].Status != ContactProcessing || a.Contacts[1].Status != ContactProcessing {
		t.Fatalf("second no_wait answer %+v", a.Contacts)
	}
	<-started
	close(release)
	e.h.bgWG.Wait() // the background lookups have cached their answers
	calls := e.gw.lookupCalls()
	if !reflect.DeepEqual(calls, [][]string{{"15551112222"}, {"15553334444"}}) {
		t.Fatalf("lookups %q", calls)
	}
	a = e.contacts(tok, `{"blocking":"no_wait","contacts":["15551112222","+1 555 333 4444"]}`)
	want := []contactResult{
		{Input: "15551112222", Status: ContactValid, WaID: "15551112222"},
		{Input: "+1 555 333 4444", Status: ContactValid, WaID: "15553334444"},
	}
	if !reflect.DeepEqual(a.Contacts, want) {
		t.Fatalf("after the lookup: %+v", a.Contacts)
	}
	if n := len(e.gw.lookupCalls()); n != 2 {
		t.Fatalf("%d lookups, want the answers from the cache", n)
	}
}

// Close cancels a background lookup and waits for it.
func TestContactsCloseStopsLookups(t *testing.T) {
	e := newEnv(t, nil)
	tok := bearer(e.token())
	started := make(chan struct{})
	e.gw.mu.Lock()
	e.gw.lookup = func(ctx context.Context, phones []string) ([]gateway.LookupResult, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	e.gw.mu.Unlock()
	e.contacts(tok, `{"contacts":["15551112222"]}`)
	<-started
	done := make(chan struct{})
	go func() { e.h.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not stop the background lookup")
	}
}

func TestContactsValidation(t *testing.T) {
	e := newEnv(t, nil)
	tok := bearer(e.token())
	many := `["` + strings.Repeat(`15551234567","`, MaxContactsPerRequest) + `15551234567"]`
	for _, tt := range []struct {
		body    string
		status  int
		code    int
		details string
	}{
		{`{"blocking":"sometimes","contacts":["15551234567"]}`, 400, CodeInvalidParameter, `blocking must be "wait" or "no_wait"`},
		{`{"blocking":"wait"}`, 400, CodeMissingParameter, "contacts"},
		{`{"contacts":[]}`, 400, CodeMissingParameter, "contacts"},
		{`{"contacts":"15551234567"}`, 400, CodeInvalidParameter, "contacts: expected an array"},
		{`{"contacts":[15551234567]}`, 400, CodeInvalidParameter, "contacts: expected a string, got a number"},
		{`{"contacts":["15551234567"],"force_check":"yes"}`, 400, CodeInvalidParameter, "force_check"},
		{`{"contacts":` + many + `}`, 400, CodeInvalidParameter, "at most 1000"},
	} {
		e.do("POST", "/v1/contacts", tok, tt.body).wantError(tt.status, tt.code, tt.details)
	}
	if n := len(e.gw.lookupCalls()); n != 0 {
		t.Fatalf("%d lookups for refused requests", n)
	}
}

func TestContactCacheBounded(t *testing.T) {
	var c contactCache
	c.init()
	res := make([]gateway.LookupResult, maxCachedContacts+10)
	for i := range res {
		res[i] = gateway.LookupResult{Input: strings.Repeat("1", 8) + string(rune('a'+i%26)) + itoa(i), Status: ContactValid}
	}
	c.putLocked(res, t0)
	if n := len(c.m); n > maxCachedContacts {
		t.Fatalf("cache holds %d entries, limit %d", n, maxCachedContacts)
	}
}

func itoa(i int) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + i%10)}, b...)
		i /= 10
		if i == 0 {
			return string(b)
		}
	}
}
