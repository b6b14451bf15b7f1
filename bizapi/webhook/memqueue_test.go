package webhook

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/bizapi/store"
)

func TestMemQueueFull(t *testing.T) {
	ctx := context.Background()
	q := NewMemQueue(3)
	for i := range 3 {
		if err := q.EnqueueCallback(ctx, store.Callback{Payload: []byte(payloadN(i))}); err != nil {
			t.Fatalf("enqueue %d: %v", i, err)
		}
	}
	if err := q.EnqueueCallback(ctx, store.Callback{Payload: []byte(payloadN(3))}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("enqueue into a full queue: %v, want ErrQueueFull", err)
	}
	if q.Len() != 3 {
		t.Fatalf("Len %d", q.Len())
	}
	due, _ := q.DueCallbacks(ctx, time.Now(), 1, store.CallbackKey{})
	if err := q.DeleteCallback(ctx, due[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := q.EnqueueCallback(ctx, store.Callback{Payload: []byte(payloadN(3))}); err != nil {
		t.Fatalf("enqueue after a delete: %v", err)
	}
	if NewMemQueue(0).max != DefaultMemQueueMax || DefaultMemQueueMax != 100_000 {
		t.Error("default bound is not 100,000")
	}
}

// A full MemQueue behind the dispatcher: Enqueue fails, nothing queued is lost, and room comes back
// as callbacks are delivered.
func TestMemQueueFullWithDispatcher(t *testing.T) {
	q := NewMemQueue(2)
	h := start(t, q, Settings{})
	enqueueAt(t, q, payloadN(0), h.clock.Now())
	enqueueAt(t, q, payloadN(1), h.clock.Now())
	if err := q.EnqueueCallback(context.Background(), store.Callback{Payload: []byte(payloadN(2))}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("got %v, want ErrQueueFull", err)
	}
	rc := newReceiver(t, ok200)
	h.set.SetURL(rc.URL())
	h.d.Wake()
	eventually(t, "the two delivered", func() bool { return len(rc.statusIDs(t)) == 2 && q.Len() == 0 })
	h.enqueue(t, payloadN(2))
	eventually(t, "the third delivered", func() bool { return len(rc.statusIDs(t)) == 3 && q.Len() == 0 })
}

func TestMemQueueOrderAndTimes(t *testing.T) {
	ctx := context.Background()
	q := NewMemQueue(0)
	if next, err := q.NextCallbackAt(ctx); err != nil || !next.IsZero() {
		t.Fatalf("empty: NextCallbackAt = %v, %v", next, err)
	}
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	add := func(at time.Time) {
		if err := q.EnqueueCallback(ctx, store.Callback{Payload: []byte("{}"), NextAt: at, CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	add(t0.Add(5 * time.Second)) // 1
	add(t0)                      // 2
	add(t0)                      // 3
	add(t0.Add(time.Second))     // 4
	ids := func(cbs []store.Callback) (out []int64) {
		for _, cb := range cbs {
			out = append(out, cb.ID)
		}
		return out
	}
	eq := func(a, b []int64) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if a[i] != b[i] {
				return false
			}
		}
		return true
	}
	if next, _ := q.NextCallbackAt(ctx); !next.Equal(t0) {
		t.Errorf("NextCallbackAt %v, want %v", next, t0)
	}
	if got, _ := q.DueCallbacks(ctx, t0.Add(-time.Nanosecond), 10, store.CallbackKey{}); len(got) != 0 {
		t.Errorf("due before anything: %v", ids(got))
	}
	if got, _ := q.DueCallbacks(ctx, t0.Add(time.Second), 10, store.CallbackKey{}); !eq(ids(got), []int64{2, 3, 4}) {
		t.Errorf("due at t0+1s: %v, want [2 3 4]", ids(got))
	}
	if got, _ := q.DueCallbacks(ctx, t0.Add(time.Hour), 2, store.CallbackKey{}); !eq(ids(got), []int64{2, 3}) {
		t.Errorf("limit 2: %v, want [2 3]", ids(got))
	}
	if got, _ := q.DueCallbacks(ctx, t0.Add(time.Hour), 2, store.CallbackKey{NextAt: t0, ID: 2}); !eq(ids(got), []int64{3, 4}) {
		t.Errorf("after 2, limit 2: %v, want [3 4]", ids(got))
	}
	if got, _ := q.DueCallbacks(ctx, t0.Add(time.Hour), 10, store.CallbackKey{NextAt: t0, ID: 3}); !eq(ids(got), []int64{4, 1}) {
		t.Errorf("after 3: %v, want [4 1]", ids(got))
	}
	if got, _ := q.DueCallbacks(ctx, t0.Add(time.Hour), 0, store.CallbackKey{}); len(got) != 0 {
		t.Errorf("limit 0: %v", ids(got))
	}
	// Retrying 2 moves it behind the others; its fields are kept.
	if err := q.RetryCallback(ctx, 2, 1, t0.Add(10*time.Second), "HTTP 500"); err != nil {
		t.Fatal(err)
	}
	got, _ := q.DueCallbacks(ctx, t0.Add(time.Hour), 10, store.CallbackKey{})
	if !eq(ids(got), []int64{3, 4, 1, 2}) {
		t.Errorf("after retry: %v, want [3 4 1 2]", ids(got))
	}
	if last := got[3]; last.Attempts != 1 || last.LastError != "HTTP 500" || !last.NextAt.Equal(t0.Add(10*time.Second)) {
		t.Errorf("retried callback %+v", last)
	}
	if err := q.DeleteCallback(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if next, _ := q.NextCallbackAt(ctx); !next.Equal(t0.Add(time.Second)) {
		t.Errorf("NextCallbackAt after delete %v", next)
	}
	// Deleting an unknown id is not an error; retrying one is ErrNotFound (as in the store).
	if err := q.DeleteCallback(ctx, 99); err != nil {
		t.Error(err)
	}
	if err := q.RetryCallback(ctx, 99, 1, t0, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("retry of an unknown id: %v, want store.ErrNotFound", err)
	}
	// A zero NextAt is due at once; CreatedAt is filled in.
	q2 := NewMemQueue(0)
	before := time.Now()
	_ = q2.EnqueueCallback(ctx, store.Callback{Payload: []byte("{}")})
	got, _ = q2.DueCallbacks(ctx, time.Now(), 1, store.CallbackKey{})
	if len(got) != 1 || got[0].CreatedAt.Before(before) || !got[0].NextAt.Equal(got[0].CreatedAt) {
		t.Errorf("zero times: %+v", got)
	}
}

// A zero NextAt never goes below the one filled in before it, as in the store: callbacks queued
// that way sort in ID order even when their CreatedAt do not.
func TestMemQueueZeroNextAtNeverDecreases(t *testing.T) {
	ctx := context.Background()
	q := NewMemQueue(0)
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, created := range []time.Time{t0, t0.Add(-time.Second), t0.Add(time.Second)} {
		if err := q.EnqueueCallback(ctx, store.Callback{Payload: []byte("{}"), CreatedAt: created}); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := q.DueCallbacks(ctx, t0.Add(time.Hour), 10, store.CallbackKey{})
	if len(got) != 3 || got[0].ID != 1 || got[1].ID != 2 || got[2].ID != 3 {
		t.Fatalf("order %+v", got)
	}
	if !got[1].NextAt.Equal(t0) || !got[1].CreatedAt.Equal(t0.Add(-time.Second)) || !got[2].NextAt.Equal(t0.Add(time.Second)) {
		t.Errorf("NextAt/CreatedAt: %+v", got)
	}
}
