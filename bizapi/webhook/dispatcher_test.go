package webhook

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/bizapi/store"
)

// With MaxBatch 1 every callback is a request of its own, its payload the body.
func TestDeliveredIsDeleted(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		rc := newReceiver(t, ok200)
		h := start(t, q, Settings{URL: rc.URL(), MaxBatch: 1})
		for i := range 3 {
			h.enqueue(t, payloadN(i))
		}
		eventually(t, "3 requests and an empty queue", func() bool {
			return rc.count() == 3 && len(pending(t, q)) == 0
		})
		var got []string
		for _, r := range rc.requests() {
			got = append(got, r.body)
			if r.path != "/hook" {
				t.Errorf("path %q", r.path)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if ua := r.header.Get("User-Agent"); ua != "bizapi/test" {
				t.Errorf("User-Agent %q", ua)
			}
			if a := r.header.Get(HeaderAttempt); a != "1" {
				t.Errorf("%s %q, want 1", HeaderAttempt, a)
			}
			if s, ok := r.header[HeaderSignature]; ok {
				t.Errorf("unsigned request has %s %q", HeaderSignature, s)
			}
		}
		slices.Sort(got)
		want := []string{payloadN(0), payloadN(1), payloadN(2)}
		if !slices.Equal(got, want) {
			t.Errorf("bodies %q, want %q", got, want)
		}
		eventually(t, "3 results", func() bool { return len(h.resultsCopy()) == 3 })
		for _, r := range h.resultsCopy() {
			if !r.ok || r.status != 200 {
				t.Errorf("OnResult(%v, %d), want (true, 200)", r.ok, r.status)
			}
		}
	})
}

// Any 2xx is delivered, not only 200.
func TestAny2xxIsDelivered(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		rc := newReceiver(t, func(int, *http.Request, []byte) int { return http.StatusNoContent })
		h := start(t, q, Settings{URL: rc.URL()})
		h.enqueue(t, payloadN(1))
		eventually(t, "delivery", func() bool { return rc.count() == 1 && len(pending(t, q)) == 0 })
	})
}

// The receiver answers 500 five times, then 200: each failure is recorded with attempts+1 and the
// next attempt exactly min(attempts × delay, max) later, not a moment earlier.
func TestRetryBackoffSchedule(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		const failures = 5
		rc := newReceiver(t, func(n int, _ *http.Request, _ []byte) int {
			if n <= failures {
				return http.StatusInternalServerError
			}
			return http.StatusOK
		})
		h := start(t, q, Settings{URL: rc.URL(), BackoffDelay: 3 * time.Second, MaxBackoffDelay: 10 * time.Second, Secret: "topsecret"})
		h.enqueue(t, payloadN(7))
		wantDelays := []time.Duration{3 * time.Second, 6 * time.Second, 9 * time.Second, 10 * time.Second, 10 * time.Second}
		for k := 1; k <= failures; k++ {
			eventually(t, "attempt "+strconv.Itoa(k)+" recorded", func() bool {
				p := pending(t, q)
				return len(p) == 1 && p[0].Attempts == k
			})
			cb := pending(t, q)[0]
			wantNext := h.clock.Now().Add(wantDelays[k-1])
			if !cb.NextAt.Equal(wantNext) {
				t.Fatalf("after %d failures NextAt = now+%v, want now+%v", k, cb.NextAt.Sub(h.clock.Now()), wantDelays[k-1])
			}
			if cb.LastError != "HTTP 500" {
				t.Errorf("LastError %q, want %q", cb.LastError, "HTTP 500")
			}
			// Not before it is due.
			before := h.d.started.Load()
			h.clock.Set(wantNext.Add(-time.Millisecond))
			h.round(t)
			if n := h.d.started.Load(); n != before {
				t.Fatalf("attempt %d started 1ms before it was due", k+1)
			}
			h.clock.Set(wantNext)
			h.round(t)
		}
		eventually(t, "delivery after the retries", func() bool { return len(pending(t, q)) == 0 })
		reqs := rc.requests()
		if len(reqs) != failures+1 {
			t.Fatalf("%d requests, want %d", len(reqs), failures+1)
		}
		for i, r := range reqs {
			if a := r.header.Get(HeaderAttempt); a != strconv.Itoa(i+1) {
				t.Errorf("request %d: %s %q, want %d", i+1, HeaderAttempt, a, i+1)
			}
			if r.body != payloadN(7) {
				t.Errorf("request %d: body %q", i+1, r.body)
			}
		}
		eventually(t, "all results", func() bool { return len(h.resultsCopy()) == failures+1 })
		res := h.resultsCopy()
		for i, r := range res {
			want := result{false, 500}
			if i == failures {
				want = result{true, 200}
			}
			if r != want {
				t.Errorf("result %d = %+v, want %+v", i, r, want)
			}
		}
	})
}

// Non-2xx answers of every kind are failures; a redirect is not followed.
func TestFailureKinds(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		var otherHits sync.Map
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			otherHits.Store(r.URL.Path, true)
		}))
		t.Cleanup(other.Close)
		mux := http.NewServeMux()
		mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+"/elsewhere", http.StatusFound)
		})
		mux.HandleFunc("/perm", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+"/elsewhere", http.StatusPermanentRedirect)
		})
		mux.HandleFunc("/notfound", http.NotFound)
		mux.HandleFunc("/multiple-choices", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusMultipleChoices)
		})
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)

		cases := []struct{ path, lastErr string }{
			{"/redirect", "HTTP 302 (redirects are not followed)"},
			{"/perm", "HTTP 308 (redirects are not followed)"},
			{"/notfound", "HTTP 404"},
			{"/multiple-choices", "HTTP 300 (redirects are not followed)"},
		}
		h := start(t, q, Settings{URL: srv.URL + cases[0].path})
		for i, c := range cases {
			h.set.SetURL(srv.URL + c.path)
			h.round(t) // from now on rounds use the new URL
			h.enqueue(t, payloadN(i))
			newest := func() store.Callback {
				p := pending(t, q)
				return slices.MaxFunc(p, func(a, b store.Callback) int { return cmp.Compare(a.ID, b.ID) })
			}
			eventually(t, c.path+" failure recorded", func() bool {
				return len(pending(t, q)) == i+1 && newest().Attempts == 1
			})
			if got := newest().LastError; got != c.lastErr {
				t.Errorf("%s: LastError %q, want %q", c.path, got, c.lastErr)
			}
		}
		if _, hit := otherHits.Load("/elsewhere"); hit {
			t.Error("a redirect was followed")
		}
	})
}

// A receiver slower than Settings.Timeout is a failure with a clear error, and OnResult sees
// status 0.
func TestTimeout(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		release := make(chan struct{})
		t.Cleanup(func() { close(release) })
		rc := newReceiver(t, func(_ int, r *http.Request, _ []byte) int {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return http.StatusOK
		})
		h := start(t, q, Settings{URL: rc.URL(), Timeout: 50 * time.Millisecond})
		h.enqueue(t, payloadN(1))
		eventually(t, "timeout recorded", func() bool {
			p := pending(t, q)
			return len(p) == 1 && p[0].Attempts == 1
		})
		if got := pending(t, q)[0].LastError; got != "timeout after 50ms" {
			t.Errorf("LastError %q", got)
		}
		eventually(t, "result", func() bool { return len(h.resultsCopy()) == 1 })
		if r := h.resultsCopy()[0]; r != (result{false, 0}) {
			t.Errorf("OnResult %+v, want {false 0}", r)
		}
	})
}

// The receiver is down (nothing listens) for a while, then comes up on the same address: every
// callback arrives, exactly once, and the attempts while it was down were counted — for every
// callback of a failed request (they travel in batches of up to MaxBatch).
func TestReceiverDownThenUp(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close() // down: connection refused

		const n = 20
		h := start(t, q, Settings{URL: "http://" + addr + "/hook", BackoffDelay: time.Second, MaxConcurrent: 4, MaxBatch: 8})
		for i := range n {
			enqueueAt(t, q, payloadN(i), h.clock.Now())
		}
		h.d.Wake()
		for attempt := 1; attempt <= 3; attempt++ {
			eventually(t, "failed attempt "+strconv.Itoa(attempt)+" of every callback", func() bool {
				p := pending(t, q)
				if len(p) != n {
					return false
				}
				for _, cb := range p {
					if cb.Attempts != attempt {
						return false
					}
				}
				return true
			})
			if attempt == 1 {
				cb := pending(t, q)[0]
				if !strings.Contains(cb.LastError, "connection refused") {
					t.Errorf("LastError %q, want a connection refused", cb.LastError)
				}
				if strings.Contains(cb.LastError, "http://") {
					t.Errorf("LastError %q carries the URL", cb.LastError)
				}
			}
			h.clock.Set(h.clock.Now().Add(time.Duration(attempt) * time.Second))
			if attempt < 3 {
				h.round(t)
			}
		}

		// Up again, on the same address.
		ln, err = net.Listen("tcp", addr)
		if err != nil {
			t.Skipf("cannot listen on %s again: %v", addr, err)
		}
		rc := &receiver{}
		rc.srv = httptest.NewUnstartedServer(http.HandlerFunc(rc.serve))
		rc.srv.Listener.Close()
		rc.srv.Listener = ln
		rc.srv.Start()
		t.Cleanup(rc.srv.Close)
		h.round(t)

		eventually(t, "every callback delivered", func() bool { return len(pending(t, q)) == 0 })
		seen := map[string]int{}
		for _, id := range rc.statusIDs(t) {
			seen[id]++
		}
		for _, r := range rc.requests() {
			if a := r.header.Get(HeaderAttempt); a != "4" {
				t.Errorf("%s %q, want 4", HeaderAttempt, a)
			}
		}
		for i := range n {
			if seen[idN(i)] != 1 {
				t.Errorf("callback %d arrived %d times", i, seen[idN(i)])
			}
		}
		if got := rc.count(); got != 3 {
			t.Errorf("%d requests for %d callbacks in batches of 8, want 3", got, n)
		}
	})
}

// At most MaxConcurrent requests are open at once, and queued callbacks cost no goroutines: one
// callback per request (MaxBatch 1), or the 300 in three full batches of 100 (the default).
func TestMaxConcurrent(t *testing.T) {
	for _, c := range []struct {
		maxBatch, wantRequests int
	}{{1, 300}, {0, 3}} {
		t.Run(fmt.Sprint("batch", c.maxBatch), func(t *testing.T) {
			testMaxConcurrent(t, c.maxBatch, c.wantRequests)
		})
	}
}

func testMaxConcurrent(t *testing.T, maxBatch, wantRequests int) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		const limit, n = 3, 300
		var mu sync.Mutex
		cur, peak := 0, 0
		gate := make(chan struct{})
		rc := newReceiver(t, func(_ int, r *http.Request, _ []byte) int {
			mu.Lock()
			cur++
			peak = max(peak, cur)
			mu.Unlock()
			defer func() {
				mu.Lock()
				cur--
				mu.Unlock()
			}()
			select {
			case <-gate:
			case <-r.Context().Done():
			}
			return http.StatusOK
		})
		current := func() int { mu.Lock(); defer mu.Unlock(); return cur }

		h := start(t, q, Settings{URL: rc.URL(), MaxConcurrent: limit, MaxBatch: maxBatch, Timeout: time.Minute})
		h.round(t) // the first round is over: the callbacks below are all queued when the next reads
		baseline := runtime.NumGoroutine()
		for i := range n {
			enqueueAt(t, q, payloadN(i), h.clock.Now())
		}
		h.d.Wake()
		eventually(t, "limit requests open", func() bool { return current() == limit })
		h.round(t)
		h.round(t)
		if s := h.d.started.Load(); s != limit {
			t.Errorf("%d requests started with %d slots", s, limit)
		}
		// Per request in flight: the deliver goroutine, client connection goroutines, the server's
		// connection and handler. Nothing per queued callback.
		if g := runtime.NumGoroutine() - baseline; g > 10*limit {
			t.Errorf("%d more goroutines with %d callbacks queued and %d in flight", g, n, limit)
		}
		close(gate)
		eventually(t, "everything delivered", func() bool { return len(pending(t, q)) == 0 })
		if rc.count() != wantRequests {
			t.Errorf("%d requests, want %d", rc.count(), wantRequests)
		}
		if ids := rc.statusIDs(t); len(ids) != n {
			t.Errorf("%d statuses arrived, want %d", len(ids), n)
		}
		mu.Lock()
		defer mu.Unlock()
		if peak != limit {
			t.Errorf("peak concurrency %d, want %d", peak, limit)
		}
	})
}

// MaxConcurrent changes at run time: a lower limit holds back new requests until enough finished.
func TestMaxConcurrentLowered(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		var mu sync.Mutex
		cur, peakAfter := 0, 0
		lowered := false
		gate := make(chan struct{}, 100)
		rc := newReceiver(t, func(_ int, r *http.Request, _ []byte) int {
			mu.Lock()
			cur++
			if lowered {
				peakAfter = max(peakAfter, cur)
			}
			mu.Unlock()
			select {
			case <-gate:
			case <-r.Context().Done():
			}
			mu.Lock()
			cur--
			mu.Unlock()
			return http.StatusOK
		})
		current := func() int { mu.Lock(); defer mu.Unlock(); return cur }
		h := start(t, q, Settings{URL: rc.URL(), MaxConcurrent: 4, MaxBatch: 1, Timeout: time.Minute})
		for i := range 10 {
			enqueueAt(t, q, payloadN(i), h.clock.Now())
		}
		h.d.Wake()
		eventually(t, "4 open", func() bool { return current() == 4 })
		mu.Lock()
		lowered = true
		mu.Unlock()
		h.set.Set(Settings{URL: rc.URL(), MaxConcurrent: 1, MaxBatch: 1, Timeout: time.Minute})
		h.round(t)
		for range 10 {
			gate <- struct{}{}
		}
		eventually(t, "everything delivered", func() bool { return len(pending(t, q)) == 0 })
		mu.Lock()
		defer mu.Unlock()
		// A new request starts only once the 4 open ones ended: one at a time from then on.
		if peakAfter != 1 {
			t.Errorf("peak %d after lowering", peakAfter)
		}
	})
}

// With one slot and one callback per request, callbacks go out oldest first.
func TestOldestFirst(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		rc := newReceiver(t, ok200)
		s := Settings{MaxConcurrent: 1, MaxBatch: 1}
		h := start(t, q, s)
		t0 := h.clock.Now()
		for i := range 6 {
			at := t0.Add(-time.Minute) // the first three: same due time, enqueue order
			if i >= 3 {
				at = t0.Add(time.Duration(i-10) * time.Second)
			}
			enqueueAt(t, q, payloadN(i), at)
		}
		s.URL = rc.URL()
		h.set.Set(s)
		h.d.Wake()
		eventually(t, "6 deliveries", func() bool { return rc.count() == 6 && len(pending(t, q)) == 0 })
		for i, r := range rc.requests() {
			if r.body != payloadN(i) {
				t.Errorf("request %d: %q, want %q", i, r.body, payloadN(i))
			}
		}
	})
}

// Signed requests verify with the secret; a tampered body, another secret or an old timestamp fail.
func TestSignature(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		const secret = "whsec_0123456789"
		var h *harness
		verified := make(chan error, 10)
		rc := newReceiver(t, func(_ int, r *http.Request, body []byte) int {
			err := Verify(secret, r.Header.Get(HeaderSignature), body, h.clock.Now(), 5*time.Minute)
			verified <- err
			if err != nil {
				return http.StatusUnauthorized
			}
			return http.StatusOK
		})
		h = start(t, q, Settings{URL: rc.URL(), Secret: secret})
		h.enqueue(t, payloadN(3))
		select {
		case err := <-verified:
			if err != nil {
				t.Fatalf("receiver: Verify: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("no request")
		}
		eventually(t, "delivery", func() bool { return len(pending(t, q)) == 0 })

		r := rc.requests()[0]
		sig := r.header.Get(HeaderSignature)
		body := []byte(r.body)
		now := h.clock.Now()
		if want := "t=" + strconv.FormatInt(now.Unix(), 10) + ",v1="; !strings.HasPrefix(sig, want) {
			t.Errorf("header %q, want prefix %q", sig, want)
		}
		if sig != Sign(secret, now, body) {
			t.Errorf("header %q, Sign gives %q", sig, Sign(secret, now, body))
		}
		tampered := []byte(strings.Replace(r.body, "sent", "read", 1))
		if err := Verify(secret, sig, tampered, now, time.Minute); !errors.Is(err, ErrSignatureMismatch) {
			t.Errorf("tampered body: %v, want ErrSignatureMismatch", err)
		}
		if err := Verify("other", sig, body, now, time.Minute); !errors.Is(err, ErrSignatureMismatch) {
			t.Errorf("other secret: %v, want ErrSignatureMismatch", err)
		}
		if err := Verify(secret, sig, body, now.Add(6*time.Minute), 5*time.Minute); !errors.Is(err, ErrSignatureTimestamp) {
			t.Errorf("6 min later: %v, want ErrSignatureTimestamp", err)
		}
	})
}

// The secret never ends up in the stored error.
func TestSecretNotInLastError(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		const secret = "whsec_SHOULD_NOT_LEAK"
		rc := newReceiver(t, func(int, *http.Request, []byte) int { return http.StatusUnauthorized })
		h := start(t, q, Settings{URL: rc.URL() + "?token=qs_SHOULD_NOT_LEAK", Secret: secret})
		h.enqueue(t, payloadN(1))
		eventually(t, "failure", func() bool { p := pending(t, q); return len(p) == 1 && p[0].Attempts == 1 })
		if le := pending(t, q)[0].LastError; strings.Contains(le, "SHOULD_NOT_LEAK") {
			t.Errorf("LastError %q leaks", le)
		}
		// And a transport error, whose text would name the URL.
		h.set.SetURL("http://127.0.0.1:1/hook?token=qs_SHOULD_NOT_LEAK")
		h.round(t)
		h.clock.Set(h.clock.Now().Add(time.Hour))
		h.round(t)
		eventually(t, "second failure", func() bool { p := pending(t, q); return len(p) == 1 && p[0].Attempts == 2 })
		if le := pending(t, q)[0].LastError; strings.Contains(le, "SHOULD_NOT_LEAK") || !strings.Contains(le, "connection refused") {
			t.Errorf("LastError %q", le)
		}
	})
}

// Without a URL callbacks wait in the queue, untouched, and go out once a URL is set.
func TestNoURLKeepsCallbacks(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		rc := newReceiver(t, ok200)
		h := start(t, q, Settings{})
		for i := range 3 {
			h.enqueue(t, payloadN(i))
		}
		h.round(t)
		h.clock.Set(h.clock.Now().Add(time.Hour))
		h.round(t)
		if s := h.d.started.Load(); s != 0 {
			t.Errorf("%d requests started without a URL", s)
		}
		p := pending(t, q)
		if len(p) != 3 {
			t.Fatalf("%d queued, want 3", len(p))
		}
		for _, cb := range p {
			if cb.Attempts != 0 || cb.LastError != "" {
				t.Errorf("callback %d: attempts %d, LastError %q", cb.ID, cb.Attempts, cb.LastError)
			}
		}
		h.set.SetURL(rc.URL())
		h.d.Wake()
		eventually(t, "delivery once the URL is set", func() bool { return len(pending(t, q)) == 0 })
		if ids := rc.statusIDs(t); !slices.Equal(ids, []string{idN(0), idN(1), idN(2)}) {
			t.Errorf("statuses %v", ids)
		}
	})
}

// With the real clock and short delays: a callback due in the future is sent at its due time, and a
// failed one is retried after the backoff, without any Wake — the dispatcher sleeps until
// NextCallbackAt.
func TestSleepsUntilDue(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		rc := newReceiver(t, failRequest(2))
		set := newSettings(Settings{URL: rc.URL(), BackoffDelay: 10 * time.Millisecond})
		h := &harness{q: q, set: set}
		h.d = New(Config{Queue: q, Settings: set.Get}) // real clock
		h.run(t)

		at := time.Now().Add(30 * time.Millisecond)
		enqueueAt(t, q, payloadN(1), at)
		h.d.Wake()
		eventually(t, "delivery at the due time", func() bool { return rc.count() == 1 })
		if time.Now().Before(at) {
			t.Error("sent before its due time")
		}

		failedAt := time.Now()
		enqueueAt(t, q, payloadN(2), failedAt)
		h.d.Wake()
		eventually(t, "retry after the backoff, no Wake", func() bool { return rc.count() == 3 && len(pending(t, q)) == 0 })
		if d := time.Since(failedAt); d < 10*time.Millisecond {
			t.Errorf("retried after %v, backoff 10ms", d)
		}
		if a := rc.requests()[2].header.Get(HeaderAttempt); a != "2" {
			t.Errorf("retry: %s %q", HeaderAttempt, a)
		}
	})
}

// Stopping Run while requests are in flight abandons them: they stay queued, uncounted, and the next
// Run sends them again — a receiver that already acted on one sees it twice (at-least-once).
func TestStopMidFlightThenRestart(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		testStopRestart(t, q, func(t *testing.T) Queue { return q })
	})
}

// testStopRestart runs the stop/restart scenario; reopen returns the queue for the second run (the
// same one, or the store reopened from its file).
func testStopRestart(t *testing.T, q Queue, reopen func(t *testing.T) Queue) {
	const n, slots = 5, 2
	var mu sync.Mutex
	hold := true
	rc := newReceiver(t, func(_ int, r *http.Request, _ []byte) int {
		mu.Lock()
		h := hold
		mu.Unlock()
		if h {
			<-r.Context().Done() // acts on the request, but the answer never reaches bizapi
		}
		return http.StatusOK
	})
	h := start(t, q, Settings{URL: rc.URL(), MaxConcurrent: slots, MaxBatch: 1, Timeout: time.Minute})
	for i := range n {
		enqueueAt(t, q, payloadN(i), h.clock.Now())
	}
	h.d.Wake()
	eventually(t, "requests in flight", func() bool { return rc.count() == slots })
	h.stop(t)
	if r := h.resultsCopy(); len(r) != 0 {
		t.Errorf("abandoned requests reported: %+v", r)
	}
	p := pending(t, q)
	if len(p) != n {
		t.Fatalf("%d queued after stop, want %d", len(p), n)
	}
	for _, cb := range p {
		if cb.Attempts != 0 {
			t.Errorf("abandoned callback %d counted: attempts %d (%q)", cb.ID, cb.Attempts, cb.LastError)
		}
	}
	firstRound := rc.requests()

	mu.Lock()
	hold = false
	mu.Unlock()
	q2 := reopen(t)
	h2 := start(t, q2, Settings{URL: rc.URL(), MaxConcurrent: slots, MaxBatch: 1})
	h2.d.Wake()
	eventually(t, "everything delivered after the restart", func() bool { return len(pending(t, q2)) == 0 })
	seen := map[string]int{}
	for _, r := range rc.requests() {
		seen[r.body]++
	}
	for i := range n {
		want := 1
		for _, r := range firstRound {
			if r.body == payloadN(i) {
				want = 2 // it reached the receiver before the stop: sent again
			}
		}
		if seen[payloadN(i)] != want {
			t.Errorf("callback %d arrived %d times, want %d", i, seen[payloadN(i)], want)
		}
	}
	if len(rc.requests()) != n+slots {
		t.Errorf("%d requests, want %d", len(rc.requests()), n+slots)
	}
}

// The same Dispatcher runs again after a stop and sends what the stop abandoned.
func TestRunAgainAfterStop(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		var hold atomic.Bool
		hold.Store(true)
		rc := newReceiver(t, func(_ int, r *http.Request, _ []byte) int {
			if hold.Load() {
				<-r.Context().Done()
			}
			return http.StatusOK
		})
		h := start(t, q, Settings{URL: rc.URL(), Timeout: time.Minute})
		h.enqueue(t, payloadN(1))
		eventually(t, "request in flight", func() bool { return rc.count() == 1 })
		h.stop(t)
		hold.Store(false)
		h.run(t)
		h.d.Wake()
		eventually(t, "delivery by the second Run", func() bool { return rc.count() == 2 && len(pending(t, q)) == 0 })
	})
}

// A queue that fails makes Run pause and retry, not spin or exit.
func TestQueueErrorsPause(t *testing.T) {
	rc := newReceiver(t, ok200)
	fq := &flakyQueue{MemQueue: NewMemQueue(0)}
	fq.fail.Store(true)
	h := start(t, fq, Settings{URL: rc.URL()})
	h.enqueue(t, payloadN(1))
	eventually(t, "a failed read", func() bool { return fq.calls.Load() >= 1 })
	fq.fail.Store(false)
	eventually(t, "delivery after the queue recovered", func() bool { return rc.count() == 1 && fq.Len() == 0 })
	if c := fq.calls.Load(); c > 20 {
		t.Errorf("%d queue reads: spinning", c)
	}
}

// When recording a delivery fails, the callback is still queued: it is sent again after a pause
// (at-least-once), not lost and not sent in a tight loop.
func TestDeleteFailsResends(t *testing.T) {
	rc := newReceiver(t, ok200)
	fq := &flakyQueue{MemQueue: NewMemQueue(0)}
	fq.failDeletes.Store(1)
	h := start(t, fq, Settings{URL: rc.URL()})
	h.enqueue(t, payloadN(1))
	eventually(t, "delivery", func() bool { return fq.Len() == 0 })
	if n := rc.count(); n != 2 {
		t.Errorf("%d requests, want 2 (the first delete failed)", n)
	}
}

func TestRunTwice(t *testing.T) {
	rc := newReceiver(t, ok200)
	h := start(t, NewMemQueue(0), Settings{URL: rc.URL()})
	h.round(t)
	if err := h.d.Run(context.Background()); err == nil {
		t.Error("a second concurrent Run started")
	}
	if err := New(Config{}).Run(context.Background()); err == nil {
		t.Error("Run without a queue")
	}
}

func TestRetryDelay(t *testing.T) {
	s := Settings{BackoffDelay: 3 * time.Second, MaxBackoffDelay: 10 * time.Second}
	for _, c := range []struct {
		attempts int
		want     time.Duration
	}{{1, 3 * time.Second}, {2, 6 * time.Second}, {3, 9 * time.Second}, {4, 10 * time.Second}, {1 << 40, 10 * time.Second}, {0, 3 * time.Second}} {
		if got := s.RetryDelay(c.attempts); got != c.want {
			t.Errorf("RetryDelay(%d) = %v, want %v", c.attempts, got, c.want)
		}
	}
	d := Settings{}
	if got := d.RetryDelay(1); got != 3*time.Second {
		t.Errorf("default RetryDelay(1) = %v", got)
	}
	if got := d.RetryDelay(299); got != 897*time.Second {
		t.Errorf("default RetryDelay(299) = %v", got)
	}
	if got := d.RetryDelay(301); got != 15*time.Minute {
		t.Errorf("default RetryDelay(301) = %v", got)
	}
}

// flakyQueue is a MemQueue whose DueCallbacks fails while fail is set.
type flakyQueue struct {
	*MemQueue
	fail        atomic.Bool
	calls       atomic.Int64
	failDeletes atomic.Int64 // this many DeleteCallbacks calls fail
}

func (f *flakyQueue) DeleteCallbacks(ctx context.Context, ids []int64) error {
	if f.failDeletes.Add(-1) >= 0 {
		return errors.New("disk full")
	}
	return f.MemQueue.DeleteCallbacks(ctx, ids)
}

func (f *flakyQueue) DueCallbacks(ctx context.Context, now time.Time, limit int, after store.CallbackKey) ([]store.Callback, error) {
	if f.fail.Load() {
		f.calls.Add(1)
		return nil, errors.New("disk on fire")
	}
	return f.MemQueue.DueCallbacks(ctx, now, limit, after)
}
