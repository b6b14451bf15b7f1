package store

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestCallbackQueue(t *testing.T) {
	s, c := openTest(t)
	t0 := c.Now()
	if next, err := s.NextCallbackAt(bg0); err != nil || !next.IsZero() {
		t.Fatalf("NextCallbackAt(empty) = %v, %v", next, err)
	}
	if due, err := s.DueCallbacks(bg0, farFuture, 10, CallbackKey{}); err != nil || len(due) != 0 {
		t.Fatalf("DueCallbacks(empty) = %v, %v", due, err)
	}
	if err := s.EnqueueCallback(bg0, Callback{}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty payload: %v", err)
	}
	// Queued out of NextAt order; b and d share a NextAt, so id breaks the tie.
	for _, cb := range []Callback{
		{Payload: payload("a"), NextAt: t0.Add(3 * time.Second)},
		{Payload: payload("b"), NextAt: t0.Add(time.Second), Attempts: 2, LastError: "503", CreatedAt: t0.Add(-time.Hour)},
		{Payload: payload("c"), ID: 999}, // zero NextAt: now; the ID is the store's
		{Payload: payload("d"), NextAt: t0.Add(time.Second)},
		{Payload: payload("e"), NextAt: t0.Add(time.Hour)},
	} {
		if err := s.EnqueueCallback(bg0, cb); err != nil {
			t.Fatal(err)
		}
	}
	if got := callbacks(t, s); !slices.Equal(got, []string{"c", "b", "d", "a", "e"}) {
		t.Fatalf("order %v", got)
	}
	due, err := s.DueCallbacks(bg0, t0.Add(time.Second), 10, CallbackKey{}) // NextAt == now is due
	if err != nil || len(due) != 3 {
		t.Fatalf("DueCallbacks = %v, %v", due, err)
	}
	c0, b, d := due[0], due[1], due[2]
	if c0.ID == 999 || c0.ID <= 0 || !c0.NextAt.Equal(t0) || !c0.CreatedAt.Equal(t0) || c0.Attempts != 0 || c0.LastError != "" {
		t.Fatalf("c = %+v", c0)
	}
	if string(b.Payload) != string(payload("b")) || b.Attempts != 2 || b.LastError != "503" ||
		!b.CreatedAt.Equal(t0.Add(-time.Hour)) || !b.NextAt.Equal(t0.Add(time.Second)) || b.ID >= d.ID {
		t.Fatalf("b = %+v, d = %+v", b, d)
	}
	if due, _ := s.DueCallbacks(bg0, t0.Add(time.Second), 2, CallbackKey{}); len(due) != 2 || due[1].ID != b.ID {
		t.Fatalf("limit 2: %+v", due)
	}
	// After a key: only the callbacks past it, and the limit counts those.
	if due, _ := s.DueCallbacks(bg0, t0.Add(time.Hour), 2, b.Key()); len(due) != 2 ||
		due[0].ID != d.ID || string(due[1].Payload) != string(payload("a")) {
		t.Fatalf("after b, limit 2: %+v", due)
	}
	if due, _ := s.DueCallbacks(bg0, t0.Add(time.Hour), 10, c0.Key()); len(due) != 4 || due[0].ID != b.ID {
		t.Fatalf("after c: %+v", due)
	}
	if due, _ := s.DueCallbacks(bg0, t0.Add(time.Minute), 10, CallbackKey{NextAt: t0.Add(time.Second), ID: d.ID + 1}); len(due) != 1 ||
		string(due[0].Payload) != string(payload("a")) {
		t.Fatalf("after (b's NextAt, d.ID+1): %+v", due)
	}
	if due, _ := s.DueCallbacks(bg0, t0.Add(-time.Nanosecond), 10, CallbackKey{}); len(due) != 0 {
		t.Fatalf("nothing is due before now: %+v", due)
	}
	for _, limit := range []int{0, -3} {
		if _, err := s.DueCallbacks(bg0, t0, limit, CallbackKey{}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("limit %d: %v", limit, err)
		}
	}
	if next, _ := s.NextCallbackAt(bg0); !next.Equal(t0) {
		t.Fatalf("NextCallbackAt = %v, want %v", next, t0)
	}

	// Delivered: delete (twice is fine). Failed: retry later.
	if err := s.DeleteCallback(bg0, c0.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteCallback(bg0, c0.ID); err != nil {
		t.Fatalf("deleting an absent callback: %v", err)
	}
	if next, _ := s.NextCallbackAt(bg0); !next.Equal(t0.Add(time.Second)) {
		t.Fatalf("NextCallbackAt after delete = %v", next)
	}
	if err := s.RetryCallback(bg0, b.ID, 3, t0.Add(2*time.Hour), "connection refused"); err != nil {
		t.Fatal(err)
	}
	if got := callbacks(t, s); !slices.Equal(got, []string{"d", "a", "e", "b"}) {
		t.Fatalf("after retry: %v", got)
	}
	all, _ := s.DueCallbacks(bg0, farFuture, 10, CallbackKey{})
	rb := all[3]
	if rb.ID != b.ID || rb.Attempts != 3 || rb.LastError != "connection refused" || !rb.NextAt.Equal(t0.Add(2*time.Hour)) ||
		!rb.CreatedAt.Equal(b.CreatedAt) || string(rb.Payload) != string(b.Payload) {
		t.Fatalf("retried = %+v", rb)
	}
	if err := s.RetryCallback(bg0, c0.ID, 1, t0, "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RetryCallback(deleted) = %v", err)
	}
	// A zero next is now.
	c.Advance(time.Minute)
	if err := s.RetryCallback(bg0, d.ID, 1, time.Time{}, ""); err != nil {
		t.Fatal(err)
	}
	if next, _ := s.NextCallbackAt(bg0); !next.Equal(t0.Add(3 * time.Second)) {
		t.Fatalf("NextCallbackAt = %v", next)
	}
	if due, _ := s.DueCallbacks(bg0, time.Time{}, 10, CallbackKey{}); len(due) != 2 { // zero now: the clock (a and d)
		t.Fatalf("DueCallbacks(zero) = %+v", due)
	}
	// Ids are never reused, even for the largest one deleted.
	last := all[2].ID // e
	for _, cb := range all {
		s.DeleteCallback(bg0, cb.ID)
	}
	s.EnqueueCallback(bg0, Callback{Payload: payload("f")})
	if due, _ := s.DueCallbacks(bg0, farFuture, 10, CallbackKey{}); len(due) != 1 || due[0].ID <= max(last, b.ID) {
		t.Fatalf("after deleting all: %+v", due)
	}
	if st, _ := s.Stats(bg0); st.PendingCallbacks != 1 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestStats(t *testing.T) {
	s, _ := openTest(t)
	if st, err := s.Stats(bg0); err != nil || st != (Stats{}) {
		t.Fatalf("empty Stats = %+v, %v", st, err)
	}
	for _, id := range []string{"a", "b", "c", "d"} {
		addMsg(t, s, id)
	}
	s.MarkSent(bg0, "a", 1, time.Time{}, cbOf("sent a"))
	s.MarkStatus(bg0, "b", StatusRead, time.Time{}, cbOf("read b"))
	s.SaveInbound(bg0, inbound(1), cbOf("in 1"))
	s.SaveInbound(bg0, inbound(1), cbOf("dup"))
	if st, err := s.Stats(bg0); err != nil || st != (Stats{Unsent: 2, PendingCallbacks: 3, Messages: 4, Inbound: 1}) {
		t.Fatalf("Stats = %+v, %v", st, err)
	}
}

// DeleteCallbacks and RetryCallbacks change several callbacks at once; ids already gone are skipped.
func TestCallbacksInBulk(t *testing.T) {
	s, c := openTest(t)
	t0 := c.Now()
	for _, p := range []string{"a", "b", "c", "d"} {
		if err := s.EnqueueCallback(bg0, Callback{Payload: payload(p)}); err != nil {
			t.Fatal(err)
		}
	}
	all, _ := s.DueCallbacks(bg0, farFuture, 10, CallbackKey{})
	a, b, cc, d := all[0].ID, all[1].ID, all[2].ID, all[3].ID
	if err := s.DeleteCallbacks(bg0, []int64{a, cc, 9999}); err != nil {
		t.Fatal(err)
	}
	if got := callbacks(t, s); !slices.Equal(got, []string{"b", "d"}) {
		t.Fatalf("after deleting a and c: %v", got)
	}
	if err := s.RetryCallbacks(bg0, []int64{d, b, a}, 4, t0.Add(time.Minute), "HTTP 502"); err != nil {
		t.Fatalf("RetryCallbacks with a deleted id: %v", err)
	}
	left, _ := s.DueCallbacks(bg0, farFuture, 10, CallbackKey{})
	if len(left) != 2 || left[0].ID != b || left[1].ID != d {
		t.Fatalf("after the retry: %+v", left)
	}
	for _, cb := range left {
		if cb.Attempts != 4 || !cb.NextAt.Equal(t0.Add(time.Minute)) || cb.LastError != "HTTP 502" {
			t.Errorf("retried %+v", cb)
		}
	}
	if err := s.DeleteCallbacks(bg0, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.RetryCallbacks(bg0, nil, 1, t0, ""); err != nil {
		t.Fatal(err)
	}
}

// A zero NextAt is the clock when the write runs, and never earlier than the one filled in before:
// callbacks queued that way sort in ID (commit) order, so a reader past one of them does not miss a
// later one, even when the clock went back in between.
func TestZeroNextAtNeverDecreases(t *testing.T) {
	s, c := openTest(t)
	t0 := c.Now()
	enqueue := func(p string) {
		t.Helper()
		if err := s.EnqueueCallback(bg0, Callback{Payload: payload(p)}); err != nil {
			t.Fatal(err)
		}
	}
	enqueue("a")
	c.Set(t0.Add(-time.Second)) // the clock steps back
	enqueue("b")
	c.Set(t0.Add(time.Second))
	enqueue("c")
	// An explicit NextAt is kept as given.
	if err := s.EnqueueCallback(bg0, Callback{Payload: payload("x"), NextAt: t0.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	all, _ := s.DueCallbacks(bg0, farFuture, 10, CallbackKey{})
	if got := callbacks(t, s); !slices.Equal(got, []string{"x", "a", "b", "c"}) {
		t.Fatalf("order %v", got)
	}
	if !all[1].NextAt.Equal(t0) || !all[2].NextAt.Equal(t0) || !all[3].NextAt.Equal(t0.Add(time.Second)) {
		t.Errorf("NextAt a %v, b %v, c %v", all[1].NextAt, all[2].NextAt, all[3].NextAt)
	}
	if after, _ := s.DueCallbacks(bg0, farFuture, 10, all[1].Key()); len(after) != 2 || after[0].ID != all[2].ID {
		t.Errorf("after a: %+v", after)
	}
}
