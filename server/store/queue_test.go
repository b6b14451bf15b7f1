package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

func eq(a, b []string) bool { return slices.Equal(a, b) }

func TestPendingOrderAndFields(t *testing.T) {
	s, c := openTest(t)
	ctx := context.Background()
	a, b := phone(1), phone(2)
	m1 := save(t, s, a, b, "a1") // seq 1 → b
	c.Advance(time.Second)
	m2 := save(t, s, b, a, "b1") // seq 2 → a
	c.Advance(time.Second)
	ackAt := c.Now()
	if notify, err := s.Ack(ctx, b, pending(t, s, b)[0].Seq); err != nil || !eq(notify, []string{a}) {
		t.Fatalf("Ack = %v, %v; want notify [%s]", notify, err, a)
	}
	// a's queue holds m2 then the receipt for the older m1: Seq order, not
	// message order.
	items := pending(t, s, a)
	if got, want := describe(items), []string{fmt.Sprintf("m:%d", m2.ID), fmt.Sprintf("r:delivered:%d", m1.ID)}; !eq(got, want) {
		t.Fatalf("Pending(a) = %v, want %v", got, want)
	}
	if items[0].Seq >= items[1].Seq {
		t.Fatalf("seqs not increasing: %v", seqs(items))
	}
	msg := items[0]
	if msg.Recipient != a || msg.Message.From != b || msg.Message.To != a || msg.Message.ClientID != "b1" ||
		string(msg.Message.Content) != "hello b1" || msg.Message.ContentVersion != 1 ||
		!msg.Message.CreatedAt.Equal(m2.CreatedAt) || msg.Receipt != (Receipt{}) {
		t.Fatalf("message item = %+v", msg)
	}
	rc := items[1]
	want := Receipt{MessageID: m1.ID, ClientID: "a1", Type: ReceiptDelivered, By: b, At: ackAt}
	if rc.Recipient != a || rc.Receipt.MessageID != want.MessageID || rc.Receipt.ClientID != want.ClientID ||
		rc.Receipt.Type != want.Type || rc.Receipt.By != want.By || !rc.Receipt.At.Equal(want.At) {
		t.Fatalf("receipt item = %+v, want %+v", rc.Receipt, want)
	}
	if rc.Message.ID != 0 || rc.Message.Content != nil {
		t.Fatalf("receipt item carries a message: %+v", rc.Message)
	}
}

func TestPendingAfterSeqAndLimit(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	a, b := phone(1), phone(2)
	var ids []int64
	for i := range 10 {
		ids = append(ids, save(t, s, a, b, fmt.Sprintf("c%d", i)).ID)
		save(t, s, a, phone(3), fmt.Sprintf("x%d", i)) // interleaved items for someone else
	}
	var got []int64
	var after int64
	for _, want := range []int{3, 3, 3, 1, 0} {
		items, err := s.Pending(ctx, b, after, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(items) != want {
			t.Fatalf("Pending(after %d, limit 3) returned %d items, want %d", after, len(items), want)
		}
		for _, it := range items {
			if it.Seq <= after || it.Recipient != b || it.Message.To != b {
				t.Fatalf("item %+v after %d", it, after)
			}
			after = it.Seq
			got = append(got, it.Message.ID)
		}
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("paged through %v, want %v", got, ids)
	}
	// Pending does not consume: from 0 again returns everything.
	if items := pending(t, s, b); len(items) != 10 {
		t.Fatalf("Pending from 0 after paging = %d items, want 10", len(items))
	}
	for _, limit := range []int{0, -1} {
		if _, err := s.Pending(ctx, b, 0, limit); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("Pending(limit %d) = %v, want ErrInvalidArgument", limit, err)
		}
	}
	if items := pending(t, s, phone(9)); len(items) != 0 {
		t.Fatalf("Pending(unknown recipient) = %+v", items)
	}
}

func TestAckDeliversAndEnqueuesReceiptOnce(t *testing.T) {
	s, c := openTest(t)
	ctx := context.Background()
	a, b := phone(1), phone(2)
	m := save(t, s, a, b, "a1")
	seq := pending(t, s, b)[0].Seq
	c.Advance(time.Minute)
	notify, err := s.Ack(ctx, b, seq)
	if err != nil || !eq(notify, []string{a}) {
		t.Fatalf("Ack = %v, %v; want [%s]", notify, err, a)
	}
	if got := mustMessage(t, s, m.ID); !got.DeliveredAt.Equal(c.Now()) || !got.ReadAt.IsZero() {
		t.Fatalf("after ack: DeliveredAt = %v ReadAt = %v; want %v, zero", got.DeliveredAt, got.ReadAt, c.Now())
	}
	if items := pending(t, s, b); len(items) != 0 {
		t.Fatalf("acked item still pending: %+v", items)
	}
	c.Advance(time.Minute)
	for i := range 3 { // idempotent: same seq again
		if notify, err := s.Ack(ctx, b, seq); err != nil || notify != nil {
			t.Fatalf("repeat Ack #%d = %v, %v; want nil, nil", i, notify, err)
		}
	}
	if got := describe(pending(t, s, a)); !eq(got, []string{fmt.Sprintf("r:delivered:%d", m.ID)}) {
		t.Fatalf("sender queue = %v, want exactly one delivered receipt", got)
	}
	if got := mustMessage(t, s, m.ID); !got.DeliveredAt.Equal(c.Now().Add(-time.Minute)) {
		t.Fatalf("repeat ack moved DeliveredAt to %v", got.DeliveredAt)
	}
}

func TestAckOfAnotherRecipientsSeqDoesNothing(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	a, b, mallory := phone(1), phone(2), phone(3)
	m := save(t, s, a, b, "a1")
	seq := pending(t, s, b)[0].Seq
	if notify, err := s.Ack(ctx, mallory, seq); err != nil || notify != nil {
		t.Fatalf("Ack by another recipient = %v, %v; want nil, nil", notify, err)
	}
	if notify, err := s.AckBatch(ctx, a, []int64{seq}); err != nil || notify != nil { // not even the sender
		t.Fatalf("AckBatch by the sender = %v, %v; want nil, nil", notify, err)
	}
	if items := pending(t, s, b); len(items) != 1 || items[0].Seq != seq {
		t.Fatalf("b's item was removed: %+v", items)
	}
	if got := mustMessage(t, s, m.ID); !got.DeliveredAt.IsZero() {
		t.Fatalf("message marked delivered by someone else's ack: %+v", got)
	}
	if items := pending(t, s, a); len(items) != 0 {
		t.Fatalf("receipt enqueued by someone else's ack: %+v", items)
	}
	if notify, err := s.Ack(ctx, b, seq+1000); err != nil || notify != nil {
		t.Fatalf("Ack of an unknown seq = %v, %v", notify, err)
	}
}

func TestAckOfReceiptEnqueuesNothing(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	a, b := phone(1), phone(2)
	save(t, s, a, b, "a1")
	if _, err := s.Ack(ctx, b, pending(t, s, b)[0].Seq); err != nil {
		t.Fatal(err)
	}
	rc := pending(t, s, a)[0]
	if notify, err := s.Ack(ctx, a, rc.Seq); err != nil || notify != nil {
		t.Fatalf("Ack(receipt) = %v, %v; want nil, nil", notify, err)
	}
	if n, _ := s.QueueDepth(ctx); n != 0 {
		t.Fatalf("queue depth after acking everything = %d", n)
	}
}

func TestAckBatch(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	a, b, c := phone(1), phone(2), phone(3)
	m1 := save(t, s, c, b, "c1")
	m2 := save(t, s, a, b, "a1")
	m3 := save(t, s, a, b, "a2")
	m4 := save(t, s, a, b, "a3") // stays pending
	items := pending(t, s, b)
	foreign := save(t, s, a, c, "to-c")
	cSeq := pending(t, s, c)[0].Seq
	batch := []int64{items[0].Seq, items[1].Seq, items[2].Seq, items[1].Seq, 999999, cSeq}

	notify, err := s.AckBatch(ctx, b, batch)
	if err != nil || !eq(notify, []string{c, a}) {
		t.Fatalf("AckBatch = %v, %v; want [%s %s] (deduplicated, in enqueue order)", notify, err, c, a)
	}
	if got := describe(pending(t, s, b)); !eq(got, []string{fmt.Sprintf("m:%d", m4.ID)}) {
		t.Fatalf("b's queue after batch = %v", got)
	}
	wantA := []string{fmt.Sprintf("r:delivered:%d", m2.ID), fmt.Sprintf("r:delivered:%d", m3.ID)}
	if got := describe(pending(t, s, a)); !eq(got, wantA) {
		t.Fatalf("a's queue = %v, want %v", got, wantA)
	}
	wantC := []string{fmt.Sprintf("m:%d", foreign.ID), fmt.Sprintf("r:delivered:%d", m1.ID)}
	if got := describe(pending(t, s, c)); !eq(got, wantC) {
		t.Fatalf("c's queue = %v, want %v (c's own item must survive b's batch)", got, wantC)
	}
	if notify, err := s.AckBatch(ctx, b, batch); err != nil || notify != nil {
		t.Fatalf("repeated AckBatch = %v, %v; want nil, nil", notify, err)
	}
	if got := describe(pending(t, s, a)); !eq(got, wantA) {
		t.Fatalf("a's queue after repeated batch = %v", got)
	}
	if notify, err := s.AckBatch(ctx, b, nil); err != nil || notify != nil {
		t.Fatalf("AckBatch(nil) = %v, %v", notify, err)
	}
}

func TestConcurrentAcksEnqueueOneReceipt(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	a, b := phone(1), phone(2)
	m := save(t, s, a, b, "a1")
	seq := pending(t, s, b)[0].Seq
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		notifys int
	)
	for range 16 {
		wg.Go(func() {
			notify, err := s.Ack(ctx, b, seq)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			notifys += len(notify)
			mu.Unlock()
		})
	}
	wg.Wait()
	if notifys != 1 {
		t.Fatalf("%d acks reported a notification, want exactly 1", notifys)
	}
	if got := describe(pending(t, s, a)); !eq(got, []string{fmt.Sprintf("r:delivered:%d", m.ID)}) {
		t.Fatalf("sender queue = %v", got)
	}
}

func TestMarkReadBeforeAck(t *testing.T) {
	s, c := openTest(t)
	ctx := context.Background()
	a, b := phone(1), phone(2)
	m := save(t, s, a, b, "a1")
	seq := pending(t, s, b)[0].Seq
	c.Advance(time.Minute)
	readAt := c.Now()
	notify, err := s.MarkRead(ctx, b, []int64{m.ID})
	if err != nil || !eq(notify, []string{a}) {
		t.Fatalf("MarkRead = %v, %v; want [%s]", notify, err, a)
	}
	got := mustMessage(t, s, m.ID)
	if !got.ReadAt.Equal(readAt) || !got.DeliveredAt.Equal(readAt) {
		t.Fatalf("after read-before-ack: DeliveredAt = %v, ReadAt = %v; want both %v", got.DeliveredAt, got.ReadAt, readAt)
	}
	items := pending(t, s, a)
	want := []string{fmt.Sprintf("r:delivered:%d", m.ID), fmt.Sprintf("r:read:%d", m.ID)}
	if g := describe(items); !eq(g, want) {
		t.Fatalf("sender queue = %v, want %v (delivered before read)", g, want)
	}
	for _, it := range items {
		if it.Receipt.ClientID != "a1" || it.Receipt.By != b || !it.Receipt.At.Equal(readAt) {
			t.Fatalf("receipt = %+v", it.Receipt)
		}
	}
	// The late delivery ack removes b's item but enqueues no second receipt.
	c.Advance(time.Minute)
	if notify, err := s.Ack(ctx, b, seq); err != nil || notify != nil {
		t.Fatalf("late Ack = %v, %v; want nil, nil", notify, err)
	}
	if g := describe(pending(t, s, a)); !eq(g, want) {
		t.Fatalf("sender queue after late ack = %v, want %v", g, want)
	}
	if got := mustMessage(t, s, m.ID); !got.DeliveredAt.Equal(readAt) {
		t.Fatalf("late ack moved DeliveredAt to %v", got.DeliveredAt)
	}
}

func TestMarkReadAfterAck(t *testing.T) {
	s, c := openTest(t)
	ctx := context.Background()
	a, b := phone(1), phone(2)
	m := save(t, s, a, b, "a1")
	c.Advance(time.Second)
	deliveredAt := c.Now()
	if _, err := s.Ack(ctx, b, pending(t, s, b)[0].Seq); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Second)
	if notify, err := s.MarkRead(ctx, b, []int64{m.ID}); err != nil || !eq(notify, []string{a}) {
		t.Fatalf("MarkRead = %v, %v", notify, err)
	}
	items := pending(t, s, a)
	if g, want := describe(items), []string{fmt.Sprintf("r:delivered:%d", m.ID), fmt.Sprintf("r:read:%d", m.ID)}; !eq(g, want) {
		t.Fatalf("sender queue = %v, want %v", g, want)
	}
	if !items[0].Receipt.At.Equal(deliveredAt) || !items[1].Receipt.At.Equal(c.Now()) {
		t.Fatalf("receipt times = %v, %v; want %v, %v", items[0].Receipt.At, items[1].Receipt.At, deliveredAt, c.Now())
	}
	if got := mustMessage(t, s, m.ID); !got.DeliveredAt.Equal(deliveredAt) || !got.ReadAt.Equal(c.Now()) {
		t.Fatalf("message = %+v", got)
	}
}

func TestMarkReadIgnoresOthersMessages(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	a, b, c := phone(1), phone(2), phone(3)
	toB := save(t, s, a, b, "a1")
	toC := save(t, s, a, c, "a2")
	// b cannot read c's message, the sender cannot read its own, unknown ids are skipped.
	if notify, err := s.MarkRead(ctx, b, []int64{toC.ID, toC.ID + 1000, -1}); err != nil || notify != nil {
		t.Fatalf("MarkRead(others') = %v, %v; want nil, nil", notify, err)
	}
	if notify, err := s.MarkRead(ctx, a, []int64{toB.ID}); err != nil || notify != nil {
		t.Fatalf("MarkRead by sender = %v, %v; want nil, nil", notify, err)
	}
	for _, id := range []int64{toB.ID, toC.ID} {
		if m := mustMessage(t, s, id); !m.ReadAt.IsZero() || !m.DeliveredAt.IsZero() {
			t.Fatalf("message %d changed: %+v", id, m)
		}
	}
	if items := pending(t, s, a); len(items) != 0 {
		t.Fatalf("receipts enqueued: %v", describe(items))
	}
	// A mixed list reads only b's own message.
	if notify, err := s.MarkRead(ctx, b, []int64{toC.ID, toB.ID}); err != nil || !eq(notify, []string{a}) {
		t.Fatalf("MarkRead(mixed) = %v, %v", notify, err)
	}
	if m := mustMessage(t, s, toC.ID); !m.ReadAt.IsZero() {
		t.Fatalf("c's message read by b")
	}
	if got := len(pending(t, s, a)); got != 2 {
		t.Fatalf("sender has %d receipts, want 2 (delivered+read of b's message)", got)
	}
}

func TestMarkReadIdempotent(t *testing.T) {
	s, c := openTest(t)
	ctx := context.Background()
	a, b := phone(1), phone(2)
	m := save(t, s, a, b, "a1")
	if _, err := s.MarkRead(ctx, b, []int64{m.ID, m.ID}); err != nil {
		t.Fatal(err)
	}
	first := mustMessage(t, s, m.ID)
	want := describe(pending(t, s, a))
	if len(want) != 2 {
		t.Fatalf("duplicate id in one call enqueued %v", want)
	}
	c.Advance(time.Hour)
	for range 2 {
		if notify, err := s.MarkRead(ctx, b, []int64{m.ID}); err != nil || notify != nil {
			t.Fatalf("repeat MarkRead = %v, %v; want nil, nil", notify, err)
		}
	}
	if got := mustMessage(t, s, m.ID); !got.ReadAt.Equal(first.ReadAt) {
		t.Fatalf("repeat MarkRead moved ReadAt %v → %v", first.ReadAt, got.ReadAt)
	}
	if got := describe(pending(t, s, a)); !eq(got, want) {
		t.Fatalf("sender queue = %v, want %v", got, want)
	}
	if notify, err := s.MarkRead(ctx, b, nil); err != nil || notify != nil {
		t.Fatalf("MarkRead(nil) = %v, %v", notify, err)
	}
}

func TestMarkReadManySenders(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	a, b, c := phone(1), phone(2), phone(3)
	m1 := save(t, s, a, b, "a1")
	m2 := save(t, s, c, b, "c1")
	m3 := save(t, s, a, b, "a2")
	notify, err := s.MarkRead(ctx, b, []int64{m3.ID, m2.ID, m1.ID})
	if err != nil || !eq(notify, []string{a, c}) {
		t.Fatalf("MarkRead = %v, %v; want [%s %s]", notify, err, a, c)
	}
	wantA := []string{
		fmt.Sprintf("r:delivered:%d", m1.ID), fmt.Sprintf("r:read:%d", m1.ID),
		fmt.Sprintf("r:delivered:%d", m3.ID), fmt.Sprintf("r:read:%d", m3.ID),
	}
	if got := describe(pending(t, s, a)); !eq(got, wantA) {
		t.Fatalf("a's queue = %v, want %v", got, wantA)
	}
	wantC := []string{fmt.Sprintf("r:delivered:%d", m2.ID), fmt.Sprintf("r:read:%d", m2.ID)}
	if got := describe(pending(t, s, c)); !eq(got, wantC) {
		t.Fatalf("c's queue = %v, want %v", got, wantC)
	}
}
