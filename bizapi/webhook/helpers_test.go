package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/bizapi/store"
	"github.com/chatd-dev/chatd/internal/testutil"
)

// queueKind opens a fresh queue for a test. Every dispatcher test runs against each kind:
// MemQueue here, the SQLite store in store_backed_test.go.
type queueKind struct {
	name string
	open func(t *testing.T) Queue
}

var queueKinds = []queueKind{
	{"mem", func(*testing.T) Queue { return NewMemQueue(0) }},
}

func forEachQueue(t *testing.T, f func(t *testing.T, q Queue)) {
	for _, k := range queueKinds {
		t.Run(k.name, func(t *testing.T) { f(t, k.open(t)) })
	}
}

// eventually waits until cond holds, failing the test after a deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

type fakeClock = testutil.Clock

func newClock() *fakeClock {
	return testutil.NewClock(time.Now().Add(time.Minute).Truncate(time.Second))
}

// settingsVar holds settings that tests change while the dispatcher runs.
type settingsVar struct{ p atomic.Pointer[Settings] }

func (v *settingsVar) Set(s Settings)     { v.p.Store(&s) }
func (v *settingsVar) Get() Settings      { return *v.p.Load() }
func (v *settingsVar) SetURL(u string)    { s := v.Get(); s.URL = u; v.Set(s) }
func newSettings(s Settings) *settingsVar { v := &settingsVar{}; v.Set(s); return v }

// receiver is a real HTTP server recording every request on arrival; handle decides the answer
// (n counts requests from 1) and may block.
type receiver struct {
	srv    *httptest.Server
	handle func(n int, r *http.Request, body []byte) int

	mu   sync.Mutex
	reqs []request
}

type request struct {
	body   string
	header http.Header
	path   string
}

// failRequest is a receiver's handler that answers 503 to request number n (1-based) and 200 to
// every other.
func failRequest(n int) func(int, *http.Request, []byte) int {
	return func(i int, _ *http.Request, _ []byte) int {
		if i == n {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
}

func newReceiver(t *testing.T, handle func(n int, r *http.Request, body []byte) int) *receiver {
	rc := &receiver{handle: handle}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func ok200(int, *http.Request, []byte) int { return http.StatusOK }

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, request{body: string(body), header: r.Header.Clone(), path: r.URL.Path})
	n := len(rc.reqs)
	rc.mu.Unlock()
	status := http.StatusOK
	if rc.handle != nil {
		status = rc.handle(n, r, body)
	}
	w.WriteHeader(status)
}

func (rc *receiver) URL() string { return rc.srv.URL + "/hook" }

func (rc *receiver) requests() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]request(nil), rc.reqs...)
}

// statusIDs returns the ids of the statuses of every request, request by request in arrival order
// and in array order within one.
func (rc *receiver) statusIDs(t *testing.T) []string {
	t.Helper()
	var ids []string
	for _, r := range rc.requests() {
		ids = append(ids, statusIDsOf(t, r.body)...)
	}
	return ids
}

// statusIDsOf returns the status ids of a {"statuses":[…]} body; it fails the test on another shape.
func statusIDsOf(t *testing.T, body string) []string {
	t.Helper()
	var p map[string][]struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(body), &p); err != nil || len(p) != 1 || p["statuses"] == nil {
		t.Fatalf("body %q is not {\"statuses\":[…]} (%v)", body, err)
	}
	var ids []string
	for _, s := range p["statuses"] {
		ids = append(ids, s.ID)
	}
	return ids
}

// idN is the status id in payloadN(i).
func idN(i int) string { return fmt.Sprintf("gBEG%04d", i) }

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.reqs)
}

// result is one OnResult call.
type result struct {
	ok     bool
	status int
}

// harness runs a Dispatcher.
type harness struct {
	d     *Dispatcher
	q     Queue
	clock *fakeClock
	set   *settingsVar

	cancel context.CancelFunc
	done   chan error

	mu      sync.Mutex
	results []result
}

func start(t *testing.T, q Queue, s Settings) *harness {
	t.Helper()
	h := &harness{q: q, clock: newClock(), set: newSettings(s)}
	h.d = New(Config{
		Queue:    q,
		Settings: h.set.Get,
		Now:      h.clock.Now,
		Version:  "test",
		OnResult: func(ok bool, status int, _ time.Duration, _ int) {
			h.mu.Lock()
			h.results = append(h.results, result{ok, status})
			h.mu.Unlock()
		},
	})
	h.run(t)
	return h
}

// run starts Run; stop ends it.
func (h *harness) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	done := h.done
	go func() { done <- h.d.Run(ctx) }()
	t.Cleanup(func() { h.stop(t) })
}

func (h *harness) stop(t *testing.T) {
	t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		h.done <- nil // later stops return at once
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// round wakes the dispatcher and waits until a whole round ran after the wake.
func (h *harness) round(t *testing.T) {
	t.Helper()
	g := h.d.wakeGen.Add(1)
	h.d.pokeNow()
	eventually(t, "a dispatch round", func() bool { return h.d.roundGen.Load() >= g })
}

func (h *harness) resultsCopy() []result {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]result(nil), h.results...)
}

// enqueue queues a payload due now (dispatcher time).
func (h *harness) enqueue(t *testing.T, payload string) {
	t.Helper()
	now := h.clock.Now()
	enqueueAt(t, h.q, payload, now)
	h.d.Wake()
}

func enqueueAt(t *testing.T, q Queue, payload string, at time.Time) {
	t.Helper()
	if err := q.EnqueueCallback(context.Background(), store.Callback{Payload: []byte(payload), NextAt: at, CreatedAt: at}); err != nil {
		t.Fatalf("EnqueueCallback: %v", err)
	}
}

// pending returns every queued callback, whatever its due time.
func pending(t *testing.T, q Queue) []store.Callback {
	t.Helper()
	cbs, err := q.DueCallbacks(context.Background(), time.Now().Add(100*365*24*time.Hour), 1_000_000, store.CallbackKey{})
	if err != nil {
		t.Fatalf("DueCallbacks: %v", err)
	}
	return cbs
}

func payloadN(i int) string {
	return fmt.Sprintf(`{"statuses":[{"id":"gBEG%04d","recipient_id":"15550000001","status":"sent","timestamp":"1700000000"}]}`, i)
}
