package webhook

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/bizapi/store"
)

// A burst of queued statuses arrives in fewer requests than statuses: full batches of MaxBatch, in
// queue order within and across requests (one slot), each request signed over its exact body.
func TestBatchBurst(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		const secret = "whsec_batch_0123456789"
		const n = 250
		var h *harness
		rc := newReceiver(t, func(_ int, r *http.Request, body []byte) int {
			if err := Verify(secret, r.Header.Get(HeaderSignature), body, h.clock.Now(), time.Minute); err != nil {
				t.Errorf("receiver: Verify: %v", err)
				return http.StatusUnauthorized
			}
			return http.StatusOK
		})
		s := Settings{MaxConcurrent: 1, Secret: secret}
		h = start(t, q, s)
		for i := range n {
			enqueueAt(t, q, payloadN(i), h.clock.Now())
		}
		s.URL = rc.URL()
		h.set.Set(s)
		h.d.Wake()
		eventually(t, "every status delivered", func() bool { return len(pending(t, q)) == 0 })

		reqs := rc.requests()
		if len(reqs) != 3 {
			var sizes []int
			for _, r := range reqs {
				sizes = append(sizes, len(statusIDsOf(t, r.body)))
			}
			t.Errorf("%d requests for %d statuses (%v), want 3 (100, 100, 50)", len(reqs), n, sizes)
		}
		var want []string
		for i := range n {
			want = append(want, idN(i))
		}
		if got := rc.statusIDs(t); !slices.Equal(got, want) {
			t.Errorf("statuses out of queue order or lost:\n got %v\nwant %v", got, want)
		}
		for i, r := range reqs {
			if a := r.header.Get(HeaderAttempt); a != "1" {
				t.Errorf("request %d: %s %q", i, HeaderAttempt, a)
			}
			// The signature covers the exact body; the body is the payloads' statuses, byte for byte.
			sig := r.header.Get(HeaderSignature)
			if sig != Sign(secret, h.clock.Now(), []byte(r.body)) {
				t.Errorf("request %d: signature %q does not match the body", i, sig)
			}
			var elems []string
			for _, id := range statusIDsOf(t, r.body) {
				i, _ := strconv.Atoi(strings.TrimPrefix(id, "gBEG"))
				elems = append(elems, strings.TrimSuffix(strings.TrimPrefix(payloadN(i), `{"statuses":[`), `]}`))
			}
			if want := `{"statuses":[` + strings.Join(elems, ",") + `]}`; r.body != want {
				t.Errorf("request %d: body\n%s\nwant\n%s", i, r.body, want)
			}
		}
	})
}

// Under load, callbacks gather while requests are open: with the first requests held by the
// receiver, at most maxPartial requests with less than a full batch are open, and the callbacks
// queued meanwhile (a Wake each, as the gateway does) go out together once one finishes.
func TestBatchGathersWhileBusy(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		const n = 60
		var mu sync.Mutex
		cur, peak := 0, 0
		gate := make(chan struct{})
		rc := newReceiver(t, func(_ int, r *http.Request, _ []byte) int {
			mu.Lock()
			cur++
			peak = max(peak, cur)
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
		open := func() int { mu.Lock(); defer mu.Unlock(); return cur }
		h := start(t, q, Settings{URL: rc.URL(), Timeout: time.Minute}) // 12 slots, batches of 100
		h.enqueue(t, payloadN(0))
		eventually(t, "the first request open", func() bool { return open() == 1 })
		for i := 1; i < n; i++ {
			h.enqueue(t, payloadN(i))
		}
		h.round(t)
		h.round(t)
		if o := open(); o > maxPartial {
			t.Errorf("%d requests open with less than a full batch each, want at most %d", o, maxPartial)
		}
		close(gate)
		eventually(t, "everything delivered", func() bool { return len(pending(t, q)) == 0 })
		ids := rc.statusIDs(t)
		slices.Sort(ids)
		if len(ids) != n || len(slices.Compact(ids)) != n {
			t.Fatalf("%d statuses (%d distinct) arrived, want %d once each", len(ids), len(slices.Compact(ids)), n)
		}
		if r := rc.count(); r > maxPartial+1 {
			t.Errorf("%d requests for %d callbacks queued while %d were open, want at most %d", r, n, maxPartial, maxPartial+1)
		}
		mu.Lock()
		defer mu.Unlock()
		if peak > maxPartial {
			t.Errorf("peak %d requests open", peak)
		}
	})
}

// A failed request retries all of its callbacks: every one counts the attempt and gets the same next
// time, and the retry carries the same callbacks, in the same order, as attempt 2.
func TestBatchFailureRetriesAll(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		rc := newReceiver(t, failRequest(1))
		s := Settings{BackoffDelay: 5 * time.Second}
		h := start(t, q, s)
		for i := range 7 {
			enqueueAt(t, q, payloadN(i), h.clock.Now())
		}
		s.URL = rc.URL()
		h.set.Set(s)
		h.d.Wake()
		eventually(t, "the failure recorded for all 7", func() bool {
			p := pending(t, q)
			if len(p) != 7 {
				return false
			}
			for _, cb := range p {
				if cb.Attempts != 1 {
					return false
				}
			}
			return true
		})
		wantNext := h.clock.Now().Add(5 * time.Second)
		for _, cb := range pending(t, q) {
			if !cb.NextAt.Equal(wantNext) || cb.LastError != "HTTP 503" {
				t.Errorf("callback %d: NextAt now+%v, LastError %q; want now+5s, HTTP 503", cb.ID, cb.NextAt.Sub(h.clock.Now()), cb.LastError)
			}
		}
		h.clock.Set(wantNext.Add(-time.Millisecond))
		h.round(t)
		if rc.count() != 1 {
			t.Fatalf("retried before the backoff ended")
		}
		h.clock.Set(wantNext)
		h.round(t)
		eventually(t, "delivery on the retry", func() bool { return len(pending(t, q)) == 0 })
		reqs := rc.requests()
		if len(reqs) != 2 || reqs[0].body != reqs[1].body {
			t.Fatalf("%d requests; the retry's body differs: %+v", len(reqs), reqs)
		}
		if len(statusIDsOf(t, reqs[0].body)) != 7 {
			t.Errorf("first request carried %v", statusIDsOf(t, reqs[0].body))
		}
		for i, want := range []string{"1", "2"} {
			if a := reqs[i].header.Get(HeaderAttempt); a != want {
				t.Errorf("request %d: %s %q, want %s", i, HeaderAttempt, a, want)
			}
		}
		eventually(t, "two results", func() bool { return len(h.resultsCopy()) == 2 })
		if r := h.resultsCopy(); r[0] != (result{false, 503}) || r[1] != (result{true, 200}) {
			t.Errorf("results %+v", r)
		}
	})
}

// Only callbacks of the same shape and attempt count share a request: statuses with statuses,
// messages with messages (contacts and messages concatenated alike, so that contacts[i] still goes
// with messages[i]); a payload that is not an object of arrays goes alone and unchanged; a retried
// callback is not merged with first attempts.
func TestBatchKindsAndAttempts(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		rc := newReceiver(t, ok200)
		s := Settings{}
		h := start(t, q, s)
		now := h.clock.Now()
		inbound := func(i int) string {
			return fmt.Sprintf(`{"contacts":[{"profile":{"name":""},"wa_id":"1555000%04d"}],"messages":[{"from":"1555000%04d","id":"ABGG%04d","timestamp":"1700000000","type":"text","text":{"body":"hi ] } [ \" %d"}}]}`, i, i, i, i)
		}
		odd := `{"errors":[{"code":1014}],"meta":{"version":"x"}}`
		payloads := []string{payloadN(0), inbound(1), payloadN(2), odd, inbound(3), payloadN(4)}
		for _, p := range payloads {
			enqueueAt(t, q, p, now)
		}
		if err := q.EnqueueCallback(t.Context(), store.Callback{Payload: []byte(payloadN(5)), NextAt: now, CreatedAt: now, Attempts: 2}); err != nil {
			t.Fatal(err)
		}
		s.URL = rc.URL()
		h.set.Set(s)
		h.d.Wake()
		eventually(t, "everything delivered", func() bool { return len(pending(t, q)) == 0 })

		got := map[string]string{} // body → attempt header
		for _, r := range rc.requests() {
			got[r.body] = r.header.Get(HeaderAttempt)
		}
		want := map[string]string{
			`{"statuses":[` + inner(payloadN(0)) + `,` + inner(payloadN(2)) + `,` + inner(payloadN(4)) + `]}`: "1",
			`{"contacts":[{"profile":{"name":""},"wa_id":"15550000001"},{"profile":{"name":""},"wa_id":"15550000003"}],` +
				`"messages":[` + member(inbound(1), "messages") + `,` + member(inbound(3), "messages") + `]}`: "1",
			odd:         "1",
			payloadN(5): "3",
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("requests (body → attempt):\n got %q\nwant %q", got, want)
		}
		for body := range got {
			if !json.Valid([]byte(body)) {
				t.Errorf("invalid JSON body %s", body)
			}
		}
	})
}

// A batch stops growing at MaxBatchBytes of payloads; a larger payload goes alone.
func TestBatchBytes(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		rc := newReceiver(t, ok200)
		s := Settings{MaxConcurrent: 1}
		h := start(t, q, s)
		big := func(i, size int) string {
			p := payloadN(i)
			return strings.Replace(p, `"status":"sent"`, `"status":"sent","pad":"`+strings.Repeat("x", size-len(p)-9)+`"`, 1)
		}
		sizes := []int{20 << 10, 20 << 10, 20 << 10, 20 << 10, 70 << 10, 1 << 10}
		for i, size := range sizes {
			p := big(i, size)
			if len(p) != size {
				t.Fatalf("payload of %d bytes, want %d", len(p), size)
			}
			enqueueAt(t, q, p, h.clock.Now())
		}
		s.URL = rc.URL()
		h.set.Set(s)
		h.d.Wake()
		eventually(t, "everything delivered", func() bool { return len(pending(t, q)) == 0 })
		var counts []int
		for _, r := range rc.requests() {
			counts = append(counts, len(statusIDsOf(t, r.body)))
			if len(r.body) > MaxBatchBytes && len(statusIDsOf(t, r.body)) > 1 {
				t.Errorf("a batch of %d bytes", len(r.body))
			}
		}
		// 3 × 20 KiB fit in 64 KiB, the fourth starts a batch that the 70 KiB one cannot join
		// (it goes alone), and the last 1 KiB one joins the fourth.
		if !slices.Equal(counts, []int{3, 2, 1}) {
			t.Errorf("statuses per request %v, want [3 2 1]", counts)
		}
	})
}

// A callback queued with a NextAt before the ones in flight (another writer, a clock stepped back)
// is behind the dispatcher's read position: the next full read finds it while the others are still
// in flight.
func TestQueuedBehindInFlightIsFound(t *testing.T) {
	forEachQueue(t, func(t *testing.T, q Queue) {
		gate := make(chan struct{})
		t.Cleanup(func() { close(gate) })
		rc := newReceiver(t, func(_ int, r *http.Request, body []byte) int {
			if strings.Contains(string(body), idN(0)) {
				select { // the first request stays open
				case <-gate:
				case <-r.Context().Done():
				}
			}
			return http.StatusOK
		})
		h := start(t, q, Settings{URL: rc.URL(), Timeout: time.Minute, MaxBatch: 1})
		h.enqueue(t, payloadN(0))
		eventually(t, "the first request open", func() bool { return rc.count() == 1 })
		h.enqueue(t, payloadN(1))
		eventually(t, "the second delivered", func() bool { return len(pending(t, q)) == 1 })
		enqueueAt(t, q, payloadN(2), h.clock.Now().Add(-time.Hour))
		h.d.Wake()
		eventually(t, "the one queued behind delivered", func() bool { return len(pending(t, q)) == 1 && rc.count() == 3 })
	})
}

func TestShapeAndBody(t *testing.T) {
	for _, c := range []struct {
		payload string
		kind    string
	}{
		{`{"statuses":[{"id":"a"}]}`, `"statuses"`},
		{` { "statuses" : [ {"id":"a"} , {"id":"b"} ] } `, `"statuses"`},
		{`{"statuses":[]}`, `"statuses"`},
		{`{"contacts":[{"wa_id":"1"}],"messages":[{"text":{"body":"] [ } { \" \\"}}]}`, `"contacts","messages"`},
		{`{"statuses":[[1,[2]],{"a":[3]}]}`, `"statuses"`},
		{`{"statuses":{"id":"a"}}`, ""},                           // not an array
		{`{"statuses":[1],"meta":{}}`, ""},                        // a member that is not an array
		{`{"statuses":[1],"statuses":[2]}`, ""},                   // a repeated key
		{`{}`, ""},                                                // nothing to merge
		{`[{"id":"a"}]`, ""},                                      // not an object
		{`{"statuses":[1]`, ""},                                   // not valid JSON
		{`{"statuses":[1]} x`, ""},                                // trailing data
		{`{"statuses":["]"]}`, `"statuses"`},                      // a bracket in a string
		{`{"st\"atuses":[1]}`, `"st\"atuses"`},                    // an escaped quote in the key
		{"{\"statuses\":[1]}\n", `"statuses"`},                    // a trailing newline
		{`{"statuses":[1], "errors":[2]}`, `"statuses","errors"`}, // key order as written
		{`{"a":[1],"b":[2],"c":[3],"d":[4]}`, `"a","b","c","d"`},
		{`{"a":[1],"b":[2],"c":[3],"d":[4],"e":[5]}`, ""}, // more members than maxShapeKeys
	} {
		sh := shapeOf([]byte(c.payload))
		var keys []string
		for _, k := range sh.keys[:sh.n] {
			keys = append(keys, string(k))
		}
		if kind := strings.Join(keys, ","); kind != c.kind {
			t.Errorf("shapeOf(%s) keys %q, want %q", c.payload, kind, c.kind)
			continue
		}
		if sh.n == 0 {
			continue
		}
		// Merging a payload with itself twice gives each array's elements three times over.
		cbs := []store.Callback{{Payload: []byte(c.payload)}, {Payload: []byte(c.payload)}, {Payload: []byte(c.payload)}}
		b := assemble(cbs, nil, 10)
		if len(b) != 1 || len(b[0].cbs) != 3 {
			t.Fatalf("%s: %d batches", c.payload, len(b))
		}
		body := b[0].body()
		var one, three map[string][]json.RawMessage
		if err := json.Unmarshal([]byte(c.payload), &one); err != nil {
			t.Fatalf("%s: %v", c.payload, err)
		}
		if err := json.Unmarshal(body, &three); err != nil {
			t.Fatalf("merged body %s: %v", body, err)
		}
		for k, v := range one {
			w := slices.Concat(v, v, v)
			if len(three[k]) != len(w) {
				t.Errorf("%s: merged %s has %d elements under %s, want %d", c.payload, body, len(three[k]), k, len(w))
				continue
			}
			for i := range w {
				if string(three[k][i]) != string(w[i]) {
					t.Errorf("%s: merged %s, element %d of %s", c.payload, body, i, k)
				}
			}
		}
		if len(three) != len(one) {
			t.Errorf("%s: merged %s has keys %v", c.payload, body, three)
		}
	}
}

// inner is a {"statuses":[X]} payload's X.
func inner(p string) string {
	return strings.TrimSuffix(strings.TrimPrefix(p, `{"statuses":[`), `]}`)
}

// member is the elements of a payload's array under key, as written.
func member(p, key string) string {
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(p), &m); err != nil {
		panic(err)
	}
	return strings.TrimSuffix(strings.TrimPrefix(string(m[key]), "["), "]")
}
