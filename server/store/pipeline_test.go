package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/internal/groupcommit"
)

// holdWriter occupies the writer goroutine with an operation that blocks until release is called,
// and returns once the writer is running it. release waits for that operation's commit.
func holdWriter(t testing.TB, s *Store) (release func()) {
	t.Helper()
	started, rel := make(chan struct{}), make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- s.exec(context.Background(), func(*writeStmts) error { close(started); <-rel; return nil })
	}()
	<-started
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(rel)
			if err := <-errc; err != nil {
				t.Errorf("writer hold: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

// waitQueued waits until n operations wait for the (held) writer.
func waitQueued(t testing.TB, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for s.gc.Queued() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d operations queued, want %d", s.gc.Queued(), n)
		}
		runtime.Gosched()
	}
}

type saveRes struct {
	m   Message
	dup bool
	err error
}

// saveAsync submits a save on p and returns the channel of its result.
func saveAsync(t testing.TB, p *Pipeline, m Message, check RecipientCheck) <-chan saveRes {
	t.Helper()
	c := make(chan saveRes, 1)
	if err := p.SaveMessageAsync(context.Background(), m, check, func(saved Message, dup bool, err error) {
		c <- saveRes{saved, dup, err}
	}); err != nil {
		t.Fatalf("SaveMessageAsync: %v", err)
	}
	return c
}

func msgOf(from, to, clientID string) Message {
	return Message{From: from, To: to, ClientID: clientID, ContentVersion: 1, Content: []byte("hello " + clientID)}
}

// TestConcurrentWritesShareCommits: concurrent SaveMessage callers are committed together.
func TestConcurrentWritesShareCommits(t *testing.T) {
	s, _ := openTest(t)
	release := holdWriter(t, s)
	base := s.WriterStats()
	const n = 100
	errc := make(chan error, n)
	for i := range n {
		go func() {
			_, _, err := s.SaveMessage(context.Background(), msgOf(phone(i), phone(0), "c"))
			errc <- err
		}()
	}
	waitQueued(t, s, n)
	release()
	for range n {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if st := s.WriterStats(); st.Commits-base.Commits != 2 || st.MaxBatch != n {
		t.Fatalf("WriterStats %+v (base %+v): want the %d saves in one commit (+1 for the hold)", st, base, n)
	}
	if got := pending(t, s, phone(0)); len(got) != n {
		t.Fatalf("%d queued, want %d", len(got), n)
	}
}

// TestPipelineSavesInOrder: saves pipelined across many batches get increasing ids in submission
// order, their callbacks run in that order, and each runs after its message is committed.
func TestPipelineSavesInOrder(t *testing.T) {
	s, _ := openTest(t)
	p := s.NewPipeline()
	const n = 1000
	res := make([]<-chan saveRes, n)
	for i := range n {
		res[i] = saveAsync(t, p, msgOf(phone(1), phone(2), fmt.Sprint("c", i)), TrustRecipient)
	}
	var last int64
	for i, c := range res {
		r := <-c
		if r.err != nil || r.dup {
			t.Fatalf("save %d: %+v", i, r)
		}
		if r.m.ID <= last {
			t.Fatalf("save %d got id %d after %d", i, r.m.ID, last)
		}
		last = r.m.ID
		if got := mustMessage(t, s, r.m.ID); got.ClientID != fmt.Sprint("c", i) {
			t.Fatalf("message %d = %+v", r.m.ID, got)
		}
	}
	items := pending(t, s, phone(2))
	if len(items) != n {
		t.Fatalf("%d queued, want %d", len(items), n)
	}
	for i, it := range items {
		if it.Message.ClientID != fmt.Sprint("c", i) {
			t.Fatalf("queue item %d is %s", i, it.Message.ClientID)
		}
	}
}

// TestPipelineCallbackAfterCommit: the callback sees the message through the reader pool, which
// only sees committed transactions.
func TestPipelineCallbackAfterCommit(t *testing.T) {
	s, _ := openTest(t)
	p := s.NewPipeline()
	seen := make(chan error, 1)
	err := p.SaveMessageAsync(context.Background(), msgOf(phone(1), phone(2), "x"), TrustRecipient,
		func(m Message, _ bool, err error) {
			if err != nil {
				seen <- err
				return
			}
			_, err = s.Message(context.Background(), m.ID)
			seen <- err
		})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-seen; err != nil {
		t.Fatalf("in its callback, the message is not visible to readers: %v", err)
	}
}

// TestPipelineDuplicateInOneBatch: the same client id twice in one transaction stores one message;
// the second save is a duplicate with the first one's id and time.
func TestPipelineDuplicateInOneBatch(t *testing.T) {
	s, _ := openTest(t)
	release := holdWriter(t, s)
	p := s.NewPipeline()
	a := saveAsync(t, p, msgOf(phone(1), phone(2), "same"), TrustRecipient)
	b := saveAsync(t, p, msgOf(phone(1), phone(2), "same"), TrustRecipient)
	waitQueued(t, s, 2)
	base := s.WriterStats().Commits
	release()
	ra, rb := <-a, <-b
	if ra.err != nil || rb.err != nil || ra.dup || !rb.dup {
		t.Fatalf("saves: %+v, %+v; want stored, then duplicate", ra, rb)
	}
	if rb.m.ID != ra.m.ID || !rb.m.CreatedAt.Equal(ra.m.CreatedAt) {
		t.Fatalf("duplicate = %+v, want the first save's id and time %+v", rb.m, ra.m)
	}
	if c := s.WriterStats().Commits - base; c != 2 {
		t.Fatalf("%d commits, want 1 (+1 for the hold): not one batch", c-1)
	}
	if _, msgs, queued, _ := s.Stats(context.Background()); msgs != 1 || queued != 1 {
		t.Fatalf("%d messages, %d queued; want 1, 1", msgs, queued)
	}
}

// TestPipelineCheckRecipient: with CheckRecipient an unregistered recipient stores nothing and fails
// with ErrUnknownRecipient, and the pipeline goes on.
func TestPipelineCheckRecipient(t *testing.T) {
	s, _ := openTest(t)
	register(t, s, phone(2), key(2))
	p := s.NewPipeline()
	r1 := saveAsync(t, p, msgOf(phone(1), phone(2), "a"), CheckRecipient)
	r2 := saveAsync(t, p, msgOf(phone(1), phone(3), "b"), CheckRecipient)
	r3 := saveAsync(t, p, msgOf(phone(1), phone(2), "c"), CheckRecipient)
	if r := <-r1; r.err != nil {
		t.Fatal(r.err)
	}
	if r := <-r2; !errors.Is(r.err, ErrUnknownRecipient) {
		t.Fatalf("save to an unregistered phone: %+v", r)
	}
	if r := <-r3; r.err != nil {
		t.Fatalf("save after an unknown recipient: %v", r.err)
	}
	if _, msgs, _, _ := s.Stats(context.Background()); msgs != 2 {
		t.Fatalf("%d messages stored, want 2", msgs)
	}
}

// TestPipelineBrokenAfterFailure: pipeline writes fail only when the database does, and then their
// whole transaction fails: every write of the batch, of any pipeline, fails and nothing of it is
// stored; the failed pipeline's later writes fail without running, while new pipelines go on.
func TestPipelineBrokenAfterFailure(t *testing.T) {
	s, _ := openTest(t)
	release := holdWriter(t, s)
	p, other := s.NewPipeline(), s.NewPipeline()
	r1 := saveAsync(t, p, msgOf(phone(1), phone(2), "a"), TrustRecipient)
	boom := errors.New("disk on fire")
	failed := make(chan error, 1)
	if err := p.submit(context.Background(), func(*writeStmts) error { return boom }, func(err error) { failed <- err }); err != nil {
		t.Fatal(err)
	}
	r3 := saveAsync(t, p, msgOf(phone(1), phone(2), "c"), TrustRecipient)
	r4 := saveAsync(t, other, msgOf(phone(3), phone(2), "d"), TrustRecipient)
	acked := make(chan error, 1)
	if err := p.AckBatchAsync(context.Background(), phone(2), []int64{1}, func(_ []Item, err error) { acked <- err }); err != nil {
		t.Fatal(err)
	}
	waitQueued(t, s, 5)
	release()
	if err := <-failed; !errors.Is(err, boom) {
		t.Fatalf("failing op: %v", err)
	}
	for what, err := range map[string]error{"save before": (<-r1).err, "save after": (<-r3).err,
		"another pipeline's save": (<-r4).err, "ack after": <-acked} {
		if err == nil || errors.Is(err, boom) || !strings.Contains(err.Error(), "disk on fire") {
			t.Fatalf("%s, in the failed batch: %v; want the batch's failure (not wrapping the op's error)", what, err)
		}
	}
	if got := pending(t, s, phone(2)); len(got) != 0 {
		t.Fatalf("queue %v, want nothing stored", describe(got))
	}
	if r := <-saveAsync(t, p, msgOf(phone(1), phone(2), "e"), TrustRecipient); !errors.Is(r.err, groupcommit.ErrSeqBroken) {
		t.Fatalf("save on the failed pipeline: %+v, want ErrSeqBroken", r)
	}
	if r := <-saveAsync(t, s.NewPipeline(), msgOf(phone(3), phone(2), "f"), TrustRecipient); r.err != nil {
		t.Fatalf("a new pipeline: %v", r.err)
	}
}

// TestPipelineAckAndRead: AckBatchAsync and MarkReadAsync do what AckBatch and MarkRead do, in
// pipeline order, and hand their callbacks the receipt items they queued: exactly the items Pending
// returns for them afterwards (the server delivers these without reading them back).
func TestPipelineAckAndRead(t *testing.T) {
	s, _ := openTest(t)
	m1 := save(t, s, phone(1), phone(2), "a")
	m2 := save(t, s, phone(3), phone(2), "b")
	items := pending(t, s, phone(2))
	p := s.NewPipeline()
	type res struct {
		queued []Item
		err    error
	}
	ack, read, empty := make(chan res, 1), make(chan res, 1), make(chan res, 1)
	ctx := context.Background()
	if err := p.AckBatchAsync(ctx, phone(2), []int64{items[0].Seq}, func(q []Item, err error) { ack <- res{q, err} }); err != nil {
		t.Fatal(err)
	}
	// m1 was acked just before in the same pipeline: only its read receipt; m2 gets both.
	if err := p.MarkReadAsync(ctx, phone(2), []int64{m2.ID, m1.ID, m1.ID}, func(q []Item, err error) { read <- res{q, err} }); err != nil {
		t.Fatal(err)
	}
	if err := p.AckBatchAsync(ctx, phone(2), nil, func(q []Item, err error) { empty <- res{q, err} }); err != nil {
		t.Fatal(err)
	}
	ra, rr, re := <-ack, <-read, <-empty
	if ra.err != nil || fmt.Sprint(recipients(ra.queued)) != fmt.Sprint([]string{phone(1)}) {
		t.Fatalf("ack: %+v", ra)
	}
	if rr.err != nil || fmt.Sprint(recipients(rr.queued)) != fmt.Sprint([]string{phone(1), phone(3)}) {
		t.Fatalf("read: %+v", rr)
	}
	if re.err != nil || re.queued != nil {
		t.Fatalf("empty ack: %+v", re)
	}
	p1, p3 := pending(t, s, phone(1)), pending(t, s, phone(3))
	if got := describe(p1); fmt.Sprint(got) != fmt.Sprintf("[r:delivered:%d r:read:%d]", m1.ID, m1.ID) {
		t.Fatalf("sender 1 queue %v", got)
	}
	if got := describe(p3); fmt.Sprint(got) != fmt.Sprintf("[r:delivered:%d r:read:%d]", m2.ID, m2.ID) {
		t.Fatalf("sender 3 queue %v", got)
	}
	// A saved message's Item is what Pending returns for it (the sender is not a business).
	m3 := save(t, s, phone(1), phone(4), "c")
	if got := pending(t, s, phone(4)); len(got) != 1 || !reflect.DeepEqual(got[0], m3.Item()) {
		t.Fatalf("saved message's Item\n%+v\nPending returns\n%+v", m3.Item(), got)
	}
	handed := append(slices.Clone(ra.queued), rr.queued...)
	stored := append(p1, p3...)
	slices.SortFunc(stored, func(a, b Item) int { return cmp.Compare(a.Seq, b.Seq) })
	if !reflect.DeepEqual(handed, stored) {
		t.Fatalf("callbacks handed over\n%+v\nPending returns\n%+v", handed, stored)
	}
}

// TestPipelineAfterClose: Close runs every queued pipeline operation; later ones fail at once with
// ErrClosed and no callback.
func TestPipelineAfterClose(t *testing.T) {
	s, _ := openTest(t)
	release := holdWriter(t, s)
	p := s.NewPipeline()
	r := saveAsync(t, p, msgOf(phone(1), phone(2), "a"), TrustRecipient)
	waitQueued(t, s, 1)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	for !s.gc.Closed() {
		runtime.Gosched()
	}
	err := p.SaveMessageAsync(context.Background(), msgOf(phone(1), phone(2), "b"), TrustRecipient,
		func(Message, bool, error) { t.Error("callback of a save refused after Close") })
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("save after Close: %v", err)
	}
	if _, _, err := s.SaveMessage(context.Background(), msgOf(phone(1), phone(2), "b")); !errors.Is(err, ErrClosed) {
		t.Fatalf("SaveMessage after Close: %v", err)
	}
	release()
	if res := <-r; res.err != nil {
		t.Fatalf("save queued before Close: %v", res.err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}

// BenchmarkSaveMessageAsync: one producer pipelining durable saves (a busy chat session): the
// writer commits whatever has arrived while the previous commit was being flushed.
func BenchmarkSaveMessageAsync(b *testing.B) {
	s, _ := openTest(b)
	s.Now = nil
	p := s.NewPipeline()
	ctx := context.Background()
	// At most 1024 in flight, like a session.
	slots := make(chan struct{}, 1024)
	b.ReportAllocs()
	b.ResetTimer()
	base := s.WriterStats()
	for i := 0; i < b.N; i++ {
		slots <- struct{}{}
		err := p.SaveMessageAsync(ctx, Message{From: "15550000001", To: "15550000002", ClientID: fmt.Sprint(i),
			ContentVersion: 1, Content: benchContent}, TrustRecipient, func(_ Message, _ bool, err error) {
			if err != nil {
				b.Error(err)
			}
			<-slots
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	for range cap(slots) {
		slots <- struct{}{}
	}
	b.StopTimer()
	st := s.WriterStats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(st.Ops-base.Ops)/float64(max(1, st.Commits-base.Commits)), "ops/commit")
}

// BenchmarkMessageLifecycle is the store's share of one chat message end to end, as chatbench msgs
// drives it through a server: 16 senders pipeline durable saves (recipient checked) to 16 recipients,
// up to window at a time; each recipient reads its queue and acknowledges it (marking the messages
// delivered and enqueueing the delivered receipts); each sender reads and acknowledges its receipts.
// Reported per message. window1 is a light load (one item per save and ack), window128 a heavy one.
//
//	go test -run='^$' -bench=MessageLifecycle -benchtime=20000x -count=3 ./server/store/
func BenchmarkMessageLifecycle(b *testing.B) {
	for _, window := range []int{1, 128} {
		b.Run("window"+strconv.Itoa(window), func(b *testing.B) { benchLifecycle(b, 16, window) })
	}
}

func benchLifecycle(b *testing.B, pairs, window int) {
	s, _ := openTest(b)
	s.Now = nil
	ctx := context.Background()
	for i := range 2 * pairs {
		register(b, s, phone(i), append(make([]byte, 31), byte(i)+1))
	}
	base := s.WriterStats()
	b.ResetTimer()
	var wg sync.WaitGroup
	for p := range pairs {
		n := b.N / pairs
		if p < b.N%pairs {
			n++
		}
		sender, recipient := phone(2*p), phone(2*p+1)
		wg.Go(func() {
			sp, rp := s.NewPipeline(), s.NewPipeline()
			for done := 0; done < n; {
				k := min(window, n-done)
				saved := make(chan error, k)
				for i := range k {
					err := sp.SaveMessageAsync(ctx, Message{From: sender, To: recipient,
						ClientID: strconv.Itoa(done + i), ContentVersion: 1, Content: benchContent[:64]},
						CheckRecipient, func(_ Message, _ bool, err error) { saved <- err })
					if err != nil {
						b.Error(err)
						return
					}
				}
				for range k {
					if err := <-saved; err != nil {
						b.Error(err)
						return
					}
				}
				for _, who := range []struct {
					phone string
					pipe  *Pipeline
				}{{recipient, rp}, {sender, sp}} {
					for got := 0; got < k; {
						items, err := s.Pending(ctx, who.phone, 0, window)
						if err != nil || len(items) == 0 {
							b.Errorf("Pending(%s) = %d items, %v", who.phone, len(items), err)
							return
						}
						acked := make(chan error, 1)
						if err := who.pipe.AckBatchAsync(ctx, who.phone, seqs(items),
							func(_ []Item, err error) { acked <- err }); err != nil {
							b.Error(err)
							return
						}
						if err := <-acked; err != nil {
							b.Error(err)
							return
						}
						got += len(items)
					}
				}
				done += k
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	st := s.WriterStats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(st.Ops-base.Ops)/float64(max(1, st.Commits-base.Commits)), "ops/commit")
}
