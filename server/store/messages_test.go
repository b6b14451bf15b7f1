package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"
)

func TestSaveMessage(t *testing.T) {
	s, c := openTest(t)
	ctx := context.Background()
	a, b := phone(1), phone(2)
	in := Message{From: a, To: b, ClientID: "cid-1", ContentVersion: 7, Content: []byte{0, 1, 2, 0xff},
		ID: 12345, CreatedAt: time.Unix(1, 0)} // ID and CreatedAt are assigned by the store
	m, dup, err := s.SaveMessage(ctx, in)
	if err != nil || dup {
		t.Fatalf("SaveMessage = %+v, %v, %v", m, dup, err)
	}
	if m.ID <= 0 || m.ID == 12345 {
		t.Fatalf("ID = %d, want a store-assigned id > 0", m.ID)
	}
	if !m.CreatedAt.Equal(c.Now()) {
		t.Fatalf("CreatedAt = %v, want the store clock %v", m.CreatedAt, c.Now())
	}
	got := mustMessage(t, s, m.ID)
	if got.From != a || got.To != b || got.ClientID != "cid-1" || got.ContentVersion != 7 ||
		!bytes.Equal(got.Content, in.Content) || !got.CreatedAt.Equal(c.Now()) ||
		!got.DeliveredAt.IsZero() || !got.ReadAt.IsZero() {
		t.Fatalf("Message(%d) = %+v", m.ID, got)
	}
	// Enqueued for the recipient, in the same call; nothing for the sender.
	items := pending(t, s, b)
	if len(items) != 1 || items[0].Kind != ItemMessage || items[0].Message.ID != m.ID || items[0].Recipient != b {
		t.Fatalf("recipient queue = %+v", items)
	}
	if items := pending(t, s, a); len(items) != 0 {
		t.Fatalf("sender queue = %+v, want empty", items)
	}
	// IDs increase.
	prev := m.ID
	for i := range 5 {
		c.Advance(time.Millisecond)
		m := save(t, s, a, b, fmt.Sprintf("next-%d", i))
		if m.ID <= prev {
			t.Fatalf("ID %d after %d: not increasing", m.ID, prev)
		}
		prev = m.ID
	}
}

func TestSaveMessageDedup(t *testing.T) {
	s, c := openTest(t)
	ctx := context.Background()
	a, b := phone(1), phone(2)
	orig := save(t, s, a, b, "same")
	c.Advance(time.Minute)

	// A retry (even with different content or recipient) returns the original.
	again, dup, err := s.SaveMessage(ctx, Message{From: a, To: phone(3), ClientID: "same", Content: []byte("other")})
	if err != nil || !dup {
		t.Fatalf("retry: dup = %v, err = %v; want dup", dup, err)
	}
	if again.ID != orig.ID || !again.CreatedAt.Equal(orig.CreatedAt) || again.To != b ||
		!bytes.Equal(again.Content, orig.Content) {
		t.Fatalf("retry returned %+v, want the original %+v", again, orig)
	}
	if _, msgs, queued, _ := s.Stats(ctx); msgs != 1 || queued != 1 {
		t.Fatalf("after retry: messages = %d, queued = %d; want 1, 1 (nothing stored or enqueued)", msgs, queued)
	}
	if items := pending(t, s, phone(3)); len(items) != 0 {
		t.Fatalf("retry enqueued for the new recipient: %+v", items)
	}

	// The same client id from another sender is a different message.
	other, dup, err := s.SaveMessage(ctx, Message{From: phone(4), To: b, ClientID: "same"})
	if err != nil || dup || other.ID == orig.ID {
		t.Fatalf("other sender: %+v, dup = %v, err = %v", other, dup, err)
	}

	// A retry after delivery reports the current state.
	items := pending(t, s, b)
	if _, err := s.Ack(ctx, b, items[0].Seq); err != nil {
		t.Fatal(err)
	}
	again, dup, err = s.SaveMessage(ctx, Message{From: a, To: b, ClientID: "same"})
	if err != nil || !dup || again.DeliveredAt.IsZero() {
		t.Fatalf("retry after delivery = %+v, dup = %v, err = %v; want dup with DeliveredAt", again, dup, err)
	}
}

func TestSaveMessageConcurrentDedup(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	const workers, ids = 8, 40
	type result struct {
		cid string
		id  int64
		dup bool
	}
	results := make(chan result, workers*ids)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range ids {
				cid := fmt.Sprintf("c%d", i)
				m, dup, err := s.SaveMessage(ctx, Message{From: phone(1), To: phone(2), ClientID: cid, Content: []byte(cid)})
				if err != nil {
					t.Error(err)
					return
				}
				results <- result{cid, m.ID, dup}
			}
		})
	}
	wg.Wait()
	close(results)
	firsts := map[string]int{}
	idOf := map[string]int64{}
	for r := range results {
		if !r.dup {
			firsts[r.cid]++
		}
		if prev, ok := idOf[r.cid]; ok && prev != r.id {
			t.Fatalf("client id %s got two server ids %d and %d", r.cid, prev, r.id)
		}
		idOf[r.cid] = r.id
	}
	for i := range ids {
		if n := firsts[fmt.Sprintf("c%d", i)]; n != 1 {
			t.Fatalf("client id c%d stored as new %d times, want exactly 1", i, n)
		}
	}
	if _, msgs, queued, _ := s.Stats(ctx); msgs != ids || queued != ids {
		t.Fatalf("messages = %d, queued = %d; want %d each", msgs, queued, ids)
	}
}

func TestSaveMessageContentEdgeCases(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	m, _, err := s.SaveMessage(ctx, Message{From: phone(1), To: phone(2), ClientID: "nil-content", ContentVersion: math.MaxUint32})
	if err != nil {
		t.Fatalf("nil content: %v", err)
	}
	got := mustMessage(t, s, m.ID)
	if len(got.Content) != 0 || got.ContentVersion != math.MaxUint32 {
		t.Fatalf("got %+v, want empty content and version %d", got, uint32(math.MaxUint32))
	}
	big := bytes.Repeat([]byte{0xAB}, 256<<10)
	m, _, err = s.SaveMessage(ctx, Message{From: phone(1), To: phone(2), ClientID: "big", Content: big})
	if err != nil {
		t.Fatal(err)
	}
	if got := mustMessage(t, s, m.ID); !bytes.Equal(got.Content, big) {
		t.Fatalf("256 KiB content did not round-trip (%d bytes)", len(got.Content))
	}
}

func TestSaveMessageInvalid(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	for _, m := range []Message{
		{To: phone(2), ClientID: "c"},
		{From: phone(1), ClientID: "c"},
		{From: phone(1), To: phone(2)},
	} {
		if _, _, err := s.SaveMessage(ctx, m); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("SaveMessage(%+v) = %v, want ErrInvalidArgument", m, err)
		}
	}
}

func TestMessageNotFound(t *testing.T) {
	s, _ := openTest(t)
	m := save(t, s, phone(1), phone(2), "c")
	if _, err := s.Message(context.Background(), m.ID+1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Message(missing) = %v, want ErrNotFound", err)
	}
}

func TestStatsAndQueueDepth(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	check := func(wantA, wantM, wantQ int64) {
		t.Helper()
		a, m, q, err := s.Stats(ctx)
		if err != nil || a != wantA || m != wantM || q != wantQ {
			t.Fatalf("Stats = %d, %d, %d, %v; want %d, %d, %d", a, m, q, err, wantA, wantM, wantQ)
		}
		if d, err := s.QueueDepth(ctx); err != nil || d != wantQ {
			t.Fatalf("QueueDepth = %d, %v; want %d", d, err, wantQ)
		}
	}
	check(0, 0, 0)
	register(t, s, phone(1), key(1))
	register(t, s, phone(2), key(2))
	check(2, 0, 0)
	save(t, s, phone(1), phone(2), "a")
	save(t, s, phone(2), phone(1), "b")
	save(t, s, phone(1), phone(3), "c")
	check(2, 3, 3)
	it := pending(t, s, phone(2))[0]
	if _, err := s.Ack(ctx, phone(2), it.Seq); err != nil { // −1 message item, +1 receipt item
		t.Fatal(err)
	}
	check(2, 3, 3)
	rc := pending(t, s, phone(1))
	if _, err := s.AckBatch(ctx, phone(1), seqs(rc)); err != nil { // message b and the receipt
		t.Fatal(err)
	}
	check(2, 3, 2) // + delivered receipt for phone(2)
}

func TestCanceledContextStoresNothing(t *testing.T) {
	s, _ := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := s.SaveMessage(ctx, Message{From: phone(1), To: phone(2), ClientID: "c"}); err == nil {
		t.Fatal("SaveMessage with a canceled context succeeded")
	}
	if _, err := s.MarkRead(ctx, phone(2), []int64{1}); err == nil {
		t.Fatal("MarkRead with a canceled context succeeded")
	}
	if _, msgs, queued, _ := s.Stats(context.Background()); msgs != 0 || queued != 0 {
		t.Fatalf("canceled save stored %d messages, %d items", msgs, queued)
	}
	// The writer connection is still usable afterwards.
	m := save(t, s, phone(1), phone(2), "c")
	if got := pending(t, s, phone(2)); len(got) != 1 || got[0].Message.ID != m.ID {
		t.Fatalf("after cancellation: %+v", got)
	}
}
