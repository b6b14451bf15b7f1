package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestGroupCommitBatchesConcurrentWriters: 200 writers waiting together cost one transaction.
func TestGroupCommitBatchesConcurrentWriters(t *testing.T) {
	s, _ := openTest(t)
	release := holdWriter(t, s)
	base := s.WriterStats()
	const n = 200
	res := make([]<-chan result, n)
	for i := range n {
		res[i] = asyncErr(func() error { return s.AddMessage(bg0, msg(fmt.Sprintf("m%03d", i))) })
	}
	waitQueued(t, s, n)
	release()
	for i, r := range res {
		if r := <-r; r.err != nil {
			t.Fatalf("AddMessage %d: %v", i, r.err)
		}
	}
	st := s.WriterStats()
	// The held operation's own commit, then one for all 200.
	if got := st.Commits - base.Commits; got != 2 {
		t.Fatalf("%d concurrent AddMessage calls took %d commits, want 1 (+1 for the hold)", n, got-1)
	}
	if st.MaxBatch != n || st.Ops-base.Ops != n+1 {
		t.Fatalf("WriterStats %+v (base %+v)", st, base)
	}
	if got, _ := s.Unsent(bg0, 0, 1000); len(got) != n {
		t.Fatalf("%d unsent, want %d", len(got), n)
	}
}

// TestGroupCommitUnderLoad lets 200 writers race with no hold: they still share transactions.
func TestGroupCommitUnderLoad(t *testing.T) {
	s, _ := openTest(t)
	const n = 200
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs <- s.AddMessage(bg0, msg(fmt.Sprintf("m%03d", i)))
		}()
	}
	base := s.WriterStats().Commits
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	st := s.WriterStats()
	commits := st.Commits - base
	t.Logf("%d racing AddMessage calls: %d commits, largest batch %d", n, commits, st.MaxBatch)
	if commits >= n/2 {
		t.Fatalf("%d writers took %d commits: group commit is not batching", n, commits)
	}
}

func TestGroupCommitRespectsMaxBatch(t *testing.T) {
	s, _ := openTest(t, WithMaxBatch(10))
	release := holdWriter(t, s)
	base := s.WriterStats().Commits
	const n = 25
	res := make([]<-chan result, n)
	for i := range n {
		res[i] = asyncErr(func() error { return s.AddMessage(bg0, msg(fmt.Sprint(i))) })
	}
	waitQueued(t, s, n)
	release()
	for _, r := range res {
		if r := <-r; r.err != nil {
			t.Fatal(r.err)
		}
	}
	if st := s.WriterStats(); st.Commits-base != 1+3 || st.MaxBatch != 10 {
		t.Fatalf("25 ops with cap 10: %d commits (want 3 + the hold), max batch %d", st.Commits-base-1, st.MaxBatch)
	}
}

// TestGroupCommitFailingOpFailsAlone puts failing operations of every kind into one batch with
// good ones: each failure is rolled back to its savepoint and reported to its caller only.
func TestGroupCommitFailingOpFailsAlone(t *testing.T) {
	s, _ := openTest(t)
	addMsg(t, s, "old")
	if _, err := s.SaveInbound(bg0, inbound(1), nil); err != nil {
		t.Fatal(err)
	}
	release := holdWriter(t, s)
	base := s.WriterStats()
	boom := errors.New("boom")
	// The calls are queued one at a time so that their order in the batch is known.
	var res []<-chan result
	queue := func(f func() (bool, error)) {
		res = append(res, async(f))
		waitQueued(t, s, len(res))
	}
	queue(func() (bool, error) { return false, s.AddMessage(bg0, msg("a")) })
	queue(func() (bool, error) { return false, s.AddMessage(bg0, msg("old")) }) // ErrDuplicate
	// This one writes, then fails: its writes must be undone.
	queue(func() (bool, error) {
		return false, s.exec(bg0, func(w *writeStmts) error {
			if err := w.insertCallback(cbOf("from the failing op"), 1); err != nil {
				return err
			}
			if _, err := w.exec(w.addMessage, "ghost", "1", "", 0, 1); err != nil {
				return err
			}
			return boom
		})
	})
	queue(func() (bool, error) { return s.MarkStatus(bg0, "a", StatusDelivered, time.Time{}, cbOf("a delivered")) }) // sees a
	clash := inbound(2)
	clash.ID = inbound(1).ID
	queue(func() (bool, error) { return s.SaveInbound(bg0, clash, cbOf("clash")) }) // SQLite constraint error
	queue(func() (bool, error) { return s.MarkSent(bg0, "missing", 1, time.Time{}, cbOf("x")) })
	queue(func() (bool, error) { return false, s.AddMessage(bg0, msg("b")) })
	release()

	want := []struct {
		err  error
		flag bool
	}{{nil, false}, {ErrDuplicate, false}, {boom, false}, {nil, true}, {ErrDuplicate, false}, {ErrNotFound, false}, {nil, false}}
	for i, r := range res {
		got := <-r
		if (want[i].err == nil) != (got.err == nil) || (want[i].err != nil && !errors.Is(got.err, want[i].err)) || got.flag != want[i].flag {
			t.Errorf("op %d: %v, %v; want %v, %v", i, got.flag, got.err, want[i].flag, want[i].err)
		}
	}
	if st := s.WriterStats(); st.Commits-base.Commits != 2 || st.Failed-base.Failed != 4 || st.Ops-base.Ops != 4 {
		t.Fatalf("WriterStats %+v, base %+v: want one batch with 3 good ops and 4 failures", st, base)
	}
	for _, id := range []string{"a", "b", "old"} {
		mustMessage(t, s, id)
	}
	if m := mustMessage(t, s, "a"); m.Status != StatusDelivered {
		t.Fatalf("a = %+v", m)
	}
	if _, err := s.Message(bg0, "ghost"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the failed op's message was kept: %v", err)
	}
	if got := callbacks(t, s); len(got) != 1 || got[0] != "a delivered" {
		t.Fatalf("callbacks %v: the failed ops' callbacks must be rolled back", got)
	}
}

// TestGroupCommitLostTransactionFailsBatch: when the transaction itself is gone (here an
// operation rolls it back, as SQLite does after a full disk or an I/O error), every operation of
// the batch fails and none is stored, and the next batch works.
func TestGroupCommitLostTransactionFailsBatch(t *testing.T) {
	for _, opErr := range []error{errors.New("disk full"), nil} {
		t.Run(fmt.Sprint(opErr), func(t *testing.T) {
			s, _ := openTest(t)
			release := holdWriter(t, s)
			var res []<-chan result
			res = append(res, asyncErr(func() error { return s.AddMessage(bg0, msg("a")) }))
			waitQueued(t, s, 1)
			res = append(res, asyncErr(func() error {
				return s.exec(bg0, func(w *writeStmts) error {
					w.abort()
					return opErr
				})
			}))
			waitQueued(t, s, 2)
			res = append(res, asyncErr(func() error { return s.AddMessage(bg0, msg("b")) }))
			waitQueued(t, s, 3)
			release()
			for i, r := range res {
				if got := <-r; got.err == nil {
					t.Errorf("op %d succeeded in a lost transaction", i)
				}
			}
			for _, id := range []string{"a", "b"} {
				if _, err := s.Message(bg0, id); !errors.Is(err, ErrNotFound) {
					t.Errorf("%s stored from a lost transaction: %v", id, err)
				}
			}
			addMsg(t, s, "c")
			addMsg(t, s, "a") // a's failure left nothing behind
		})
	}
}

func TestGroupCommitOpsSeeEarlierOpsOfTheirBatch(t *testing.T) {
	s, _ := openTest(t)
	release := holdWriter(t, s)
	base := s.WriterStats().Commits
	r1 := asyncErr(func() error { return s.AddMessage(bg0, msg("x")) })
	waitQueued(t, s, 1)
	r2 := asyncErr(func() error { _, err := s.MarkSent(bg0, "x", 3, time.Time{}, cbOf("sent x")); return err })
	waitQueued(t, s, 2)
	r3 := async(func() (bool, error) { return s.MarkStatus(bg0, "x", StatusRead, time.Time{}, cbOf("read x")) })
	waitQueued(t, s, 3)
	release()
	for _, r := range []<-chan result{r1, r2, r3} {
		if got := <-r; got.err != nil {
			t.Fatal(got.err)
		}
	}
	if m := mustMessage(t, s, "x"); m.Status != StatusRead || m.ServerID != 3 {
		t.Fatalf("x = %+v", m)
	}
	if got := callbacks(t, s); len(got) != 2 {
		t.Fatalf("callbacks %v", got)
	}
	if c := s.WriterStats().Commits - base; c != 2 {
		t.Fatalf("%d commits, want 1 (+1 hold)", c-1)
	}
}

// TestContextCanceledBeforeTaken: a write cancelled while it waits for the writer returns at
// once with the context's error and is never applied.
func TestContextCanceledBeforeTaken(t *testing.T) {
	s, _ := openTest(t)
	release := holdWriter(t, s)
	ctx, cancel := context.WithCancel(bg0)
	r := asyncErr(func() error { return s.AddMessage(ctx, msg("c")) })
	waitQueued(t, s, 1)
	cancel()
	if got := <-r; !errors.Is(got.err, context.Canceled) { // returns while the writer is still held
		t.Fatalf("cancelled AddMessage = %v", got.err)
	}
	release()
	addMsg(t, s, "after") // the writer has passed the cancelled op
	if _, err := s.Message(bg0, "c"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("cancelled write was applied: %v", err)
	}
	// Already cancelled: not even queued.
	if err := s.AddMessage(ctx, msg("c")); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	// (The writer's own check, an expired deadline found in the queue, is tested in
	// internal/groupcommit: TestExecContextCanceledBeforeTaken.)
}

// TestContextCanceledAfterTaken: once the writer took the operation, cancelling the context does
// not abandon it: the caller gets the real result.
func TestContextCanceledAfterTaken(t *testing.T) {
	s, _ := openTest(t)
	hold := holdWriter(t, s)
	// Queue a second hold and our write behind it: both go into the next batch, and the write is
	// taken when the second hold starts running.
	started, rel := make(chan struct{}), make(chan struct{})
	h2 := asyncErr(func() error {
		return s.exec(bg0, func(*writeStmts) error { close(started); <-rel; return nil })
	})
	waitQueued(t, s, 1)
	ctx, cancel := context.WithCancel(bg0)
	r := asyncErr(func() error { return s.AddMessage(ctx, msg("t")) })
	waitQueued(t, s, 2)
	hold()
	<-started
	cancel()
	select {
	case got := <-r:
		t.Fatalf("AddMessage returned %v before its transaction committed", got.err)
	default:
	}
	close(rel)
	if got := <-r; got.err != nil {
		t.Fatalf("taken write returned %v, want its real result (nil)", got.err)
	}
	if got := <-h2; got.err != nil {
		t.Fatal(got.err)
	}
	mustMessage(t, s, "t")
}

// TestCloseDrainsQueuedWrites: Close lets every queued write finish, and they are durable.
func TestCloseDrainsQueuedWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bizapi.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	release := holdWriter(t, s)
	const n = 50
	res := make([]<-chan result, n)
	for i := range n {
		res[i] = asyncErr(func() error { return s.AddMessage(bg0, msg(fmt.Sprint(i))) })
	}
	waitQueued(t, s, n)
	closed := asyncErr(s.Close)
	// Close has marked the store closed (it needs the write lock, which no sender holds now).
	for !s.gc.Closed() {
		runtime.Gosched()
	}
	if err := s.AddMessage(bg0, msg("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("write during Close = %v", err)
	}
	release()
	if got := <-closed; got.err != nil {
		t.Fatal(got.err)
	}
	for i, r := range res {
		if got := <-r; got.err != nil {
			t.Fatalf("queued write %d: %v", i, got.err)
		}
	}
	s2, _ := openAt(t, path)
	if st, _ := s2.Stats(bg0); st.Messages != n {
		t.Fatalf("%d messages after reopen, want %d", st.Messages, n)
	}
}
