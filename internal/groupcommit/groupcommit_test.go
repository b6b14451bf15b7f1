package groupcommit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

var bg0 = context.Background()

// stmts is the statement set of the tests: one table of integers.
type stmts struct {
	conn   *sql.Conn
	insert *sql.Stmt
}

func (s *stmts) add(v int) error {
	_, err := s.insert.ExecContext(bg, v)
	return err
}

type testDB struct {
	w    *Writer[*stmts]
	st   *stmts
	read *sql.DB // a separate connection pool: sees committed data only
}

func openTest(t testing.TB, cfg Config) *testDB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gc.db")
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE t (v INTEGER NOT NULL UNIQUE)`); err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(bg0)
	if err != nil {
		t.Fatal(err)
	}
	ins, err := conn.PrepareContext(bg0, `INSERT INTO t (v) VALUES (?)`)
	if err != nil {
		t.Fatal(err)
	}
	st := &stmts{conn: conn, insert: ins}
	w, err := New(bg0, conn, st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	read, err := sql.Open("sqlite", dsn+"&_pragma=query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.Close()
		ins.Close()
		conn.Close()
		db.Close()
		read.Close()
	})
	return &testDB{w: w, st: st, read: read}
}

// committed reports whether v is in the table, as another connection sees it.
func (d *testDB) committed(t testing.TB, v int) bool {
	t.Helper()
	var n int
	if err := d.read.QueryRow(`SELECT count(*) FROM t WHERE v = ?`, v).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

func (d *testDB) count(t testing.TB) int {
	t.Helper()
	var n int
	if err := d.read.QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// hold occupies the writer with an operation that blocks until release is called, and returns once
// the writer runs it. release waits for that operation's commit.
func (d *testDB) hold(t testing.TB) (release func()) {
	t.Helper()
	started, rel := make(chan struct{}), make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- d.w.Exec(bg0, func(*stmts) error { close(started); <-rel; return nil })
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

func (d *testDB) waitQueued(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for d.w.Queued() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d operations queued, want %d", d.w.Queued(), n)
		}
		runtime.Gosched()
	}
}

func add(v int) func(*stmts) error { return func(s *stmts) error { return s.add(v) } }

func TestExecBatchesConcurrentCallers(t *testing.T) {
	d := openTest(t, Config{})
	release := d.hold(t)
	base := d.w.Stats()
	const n = 100
	errc := make(chan error, n)
	for i := range n {
		go func() { errc <- d.w.Exec(bg0, add(i)) }()
	}
	d.waitQueued(t, n)
	release()
	for range n {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	st := d.w.Stats()
	if st.Commits-base.Commits != 2 || st.MaxBatch != n || st.Ops-base.Ops != n+1 {
		t.Fatalf("stats %+v, base %+v: want one commit for the %d callers (+1 for the hold)", st, base, n)
	}
	if got := d.count(t); got != n {
		t.Fatalf("%d rows, want %d", got, n)
	}
}

// TestSubmitOrderAcrossBatches: operations submitted by one goroutine are applied, and their
// callbacks run, in submission order across many small batches; each callback runs after its row is
// committed (visible to another connection).
func TestSubmitOrderAcrossBatches(t *testing.T) {
	d := openTest(t, Config{MaxBatch: 7, QueueLen: 16})
	const n = 2000
	var (
		mu       sync.Mutex
		order    []int
		notSeen  []int
		finished = make(chan struct{})
	)
	seq := d.w.NewSeq()
	for i := range n {
		var fn func(*stmts) error
		if i%3 == 0 {
			// The operation checks that every earlier one has been applied before it.
			fn = func(s *stmts) error {
				var c int
				if err := s.conn.QueryRowContext(bg, `SELECT count(*) FROM t`).Scan(&c); err != nil {
					return err
				}
				if c != i {
					return fmt.Errorf("op %d sees %d rows", i, c)
				}
				return s.add(i)
			}
		} else {
			fn = add(i)
		}
		submit := d.w.Submit
		if i%2 == 0 {
			submit = seq.Submit
		}
		err := submit(bg0, fn, func(err error) {
			if err != nil {
				t.Errorf("op %d: %v", i, err)
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			if i%50 == 0 && !d.committed(t, i) {
				mu.Lock()
				notSeen = append(notSeen, i)
				mu.Unlock()
			}
			if i == n-1 {
				close(finished)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	<-finished
	mu.Lock()
	defer mu.Unlock()
	if len(order) != n {
		t.Fatalf("%d callbacks, want %d", len(order), n)
	}
	for i, v := range order {
		if v != i {
			t.Fatalf("callback %d is for op %d: out of order", i, v)
		}
	}
	if len(notSeen) > 0 {
		t.Fatalf("callbacks ran before their commit for ops %v", notSeen)
	}
	if st := d.w.Stats(); st.MaxBatch > 7 || st.Commits < n/7 {
		t.Fatalf("stats %+v with MaxBatch 7", st)
	}
}

// TestSubmitFailingOpFailsAlone: one failing operation in a batch is rolled back alone; the others
// commit, and every callback runs after the commit.
func TestSubmitFailingOpFailsAlone(t *testing.T) {
	d := openTest(t, Config{})
	release := d.hold(t)
	boom := errors.New("boom")
	res := make([]chan error, 4)
	for i := range res {
		res[i] = make(chan error, 1)
	}
	done := func(i int) func(error) {
		return func(err error) { res[i] <- err }
	}
	d.w.Submit(bg0, add(1), done(0))
	d.w.Submit(bg0, func(s *stmts) error { // writes, then fails: its write must be undone
		if err := s.add(2); err != nil {
			return err
		}
		return boom
	}, done(1))
	d.w.Submit(bg0, add(1), done(2)) // UNIQUE violation (an SQLite error)
	d.w.Submit(bg0, add(3), done(3))
	d.waitQueued(t, 4)
	base := d.w.Stats()
	release()
	want := []error{nil, boom, errors.New("constraint"), nil}
	for i, c := range res {
		err := <-c
		if (err == nil) != (want[i] == nil) || (errors.Is(want[i], boom) && !errors.Is(err, boom)) {
			t.Errorf("op %d: %v, want %v", i, err, want[i])
		}
	}
	if st := d.w.Stats(); st.Commits-base.Commits != 2 || st.Failed-base.Failed != 2 || st.Ops-base.Ops != 3 {
		t.Fatalf("stats %+v, base %+v: want one batch with 2 good ops and 2 failures (+ the hold)", st, base)
	}
	for v, want := range map[int]bool{1: true, 2: false, 3: true} {
		if got := d.committed(t, v); got != want {
			t.Errorf("row %d committed = %v, want %v", v, got, want)
		}
	}
}

// TestSeqBreaksAfterFailure: after an operation of a Seq fails, the later ones of that Seq — in the
// same batch and in later ones — fail with ErrSeqBroken without running; other operations go on.
func TestSeqBreaksAfterFailure(t *testing.T) {
	d := openTest(t, Config{})
	release := d.hold(t)
	seq := d.w.NewSeq()
	boom := errors.New("boom")
	type res struct {
		i   int
		err error
	}
	got := make(chan res, 10)
	cb := func(i int) func(error) { return func(err error) { got <- res{i, err} } }
	seq.Submit(bg0, add(1), cb(0))
	seq.Submit(bg0, func(*stmts) error { return boom }, cb(1))
	seq.Submit(bg0, add(2), cb(2)) // same batch, after the failure: skipped
	d.w.Submit(bg0, add(3), cb(3)) // not of the sequence: runs
	seq.Submit(bg0, nil, cb(4))    // a barrier of the broken sequence
	d.w.NewSeq().Submit(bg0, add(5), cb(5))
	d.waitQueued(t, 6)
	release()
	want := []error{nil, boom, ErrSeqBroken, nil, ErrSeqBroken, nil}
	for i := range want {
		r := <-got
		if r.i != i {
			t.Fatalf("callback %d came as #%d", r.i, i)
		}
		if (r.err == nil) != (want[i] == nil) || (want[i] != nil && !errors.Is(r.err, want[i])) {
			t.Errorf("op %d: %v, want %v", i, r.err, want[i])
		}
	}
	// A later batch: still broken.
	seq.Submit(bg0, add(6), cb(6))
	if r := <-got; !errors.Is(r.err, ErrSeqBroken) {
		t.Fatalf("op of a broken sequence in a later batch: %v", r.err)
	}
	for v, want := range map[int]bool{1: true, 2: false, 3: true, 5: true, 6: false} {
		if got := d.committed(t, v); got != want {
			t.Errorf("row %d committed = %v, want %v", v, got, want)
		}
	}
}

// TestLostTransactionFailsBatch: when an operation rolls the whole transaction back (as SQLite does
// after a full disk), every operation of the batch fails, nothing is stored, a Seq with an operation
// in it is broken, and the next batch works.
func TestLostTransactionFailsBatch(t *testing.T) {
	d := openTest(t, Config{})
	release := d.hold(t)
	seq := d.w.NewSeq()
	errs := make(chan error, 3)
	cb := func(err error) { errs <- err }
	seq.Submit(bg0, add(1), cb)
	d.w.Submit(bg0, func(s *stmts) error {
		if _, err := s.conn.ExecContext(bg, `ROLLBACK`); err != nil {
			return err
		}
		return errors.New("disk full")
	}, cb)
	d.w.Submit(bg0, add(2), cb)
	d.waitQueued(t, 3)
	release()
	for i := range 3 {
		if err := <-errs; err == nil {
			t.Fatalf("op %d succeeded in a lost transaction", i)
		}
	}
	if n := d.count(t); n != 0 {
		t.Fatalf("%d rows stored from a lost transaction", n)
	}
	if err := d.w.Exec(bg0, add(1)); err != nil {
		t.Fatalf("next batch: %v", err)
	}
	seq.Submit(bg0, add(7), cb)
	if err := <-errs; !errors.Is(err, ErrSeqBroken) {
		t.Fatalf("sequence after a lost batch: %v", err)
	}
}

// TestBarrier: a nil operation writes nothing and its callback runs after the commit of what was
// queued before it.
func TestBarrier(t *testing.T) {
	d := openTest(t, Config{})
	release := d.hold(t)
	done := make(chan bool, 1)
	d.w.Submit(bg0, add(1), nil)
	d.w.Submit(bg0, nil, func(err error) { done <- err == nil && d.committed(t, 1) })
	d.waitQueued(t, 2)
	release()
	if !<-done {
		t.Fatal("barrier callback before the commit of the operation ahead of it")
	}
	// A barrier alone (nothing to commit).
	d.w.Submit(bg0, nil, func(err error) { done <- err == nil })
	if !<-done {
		t.Fatal("lone barrier failed")
	}
}

// TestDoRunsAloneInOrder: Do runs outside a transaction, after what was queued before it and before
// what was queued after it.
func TestDoRunsAloneInOrder(t *testing.T) {
	d := openTest(t, Config{})
	release := d.hold(t)
	d.w.Submit(bg0, add(1), nil)
	res := make(chan error, 1)
	go func() {
		res <- d.w.Do(bg0, func(s *stmts) error {
			var autocommit int
			// Inside a transaction, BEGIN fails; outside it works.
			tx, err := s.conn.BeginTx(bg, nil)
			if err != nil {
				return fmt.Errorf("Do is inside a transaction: %w", err)
			}
			defer tx.Rollback()
			if err := tx.QueryRow(`SELECT count(*) FROM t`).Scan(&autocommit); err != nil {
				return err
			}
			if autocommit != 1 {
				return fmt.Errorf("Do sees %d rows, want 1", autocommit)
			}
			return nil
		})
	}()
	d.waitQueued(t, 2)
	d.w.Submit(bg0, add(2), nil)
	d.waitQueued(t, 3)
	release()
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	if err := d.w.Exec(bg0, func(*stmts) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if !d.committed(t, 2) {
		t.Fatal("op after Do not applied")
	}
}

// TestExecContextCanceledBeforeTaken: cancelled while queued, Exec returns at once and the
// operation is never applied, whether the caller or the writer notices first.
func TestExecContextCanceledBeforeTaken(t *testing.T) {
	d := openTest(t, Config{})
	release := d.hold(t)
	ctx, cancel := context.WithCancel(bg0)
	res := make(chan error, 1)
	go func() { res <- d.w.Exec(ctx, add(1)) }()
	d.waitQueued(t, 1)
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Exec = %v", err)
	}
	release()
	if err := d.w.Exec(ctx, add(1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Exec with a done context = %v", err)
	}
	// Expired deadline in the queue: the writer finds it done and answers for it.
	dctx, dcancel := context.WithDeadline(bg0, time.Now().Add(-time.Second))
	defer dcancel()
	ran := false
	o := &op[*stmts]{ctx: dctx, fn: func(*stmts) error { ran = true; return nil }, done: make(chan error, 1)}
	d.w.ops <- o
	if err := <-o.done; !errors.Is(err, context.DeadlineExceeded) || ran {
		t.Fatalf("expired op: %v, ran %v", err, ran)
	}
	if err := d.w.Exec(bg0, add(9)); err != nil || d.committed(t, 1) {
		t.Fatalf("cancelled write applied (%v)", err)
	}
}

// TestSubmitBackPressure: Submit blocks while the queue is full, and its context bounds the wait.
func TestSubmitBackPressure(t *testing.T) {
	d := openTest(t, Config{MaxBatch: 2, QueueLen: 3})
	release := d.hold(t)
	for i := range 3 {
		if err := d.w.Submit(bg0, add(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(bg0, 50*time.Millisecond)
	defer cancel()
	if err := d.w.Submit(ctx, add(3), func(error) { t.Error("callback of an operation never queued") }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Submit to a full queue = %v, want to block until the deadline", err)
	}
	blocked := make(chan error, 1)
	go func() { blocked <- d.w.Submit(bg0, add(4), nil) }()
	select {
	case err := <-blocked:
		t.Fatalf("Submit to a full queue returned %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	release()
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	if err := d.w.Exec(bg0, add(5)); err != nil {
		t.Fatal(err)
	}
	if n := d.count(t); n != 5 {
		t.Fatalf("%d rows, want 5 (0, 1, 2, 4, 5)", n)
	}
}

// TestCloseDrainsQueued: Close runs every queued operation (callbacks included) and later calls
// fail with ErrClosed.
func TestCloseDrainsQueued(t *testing.T) {
	d := openTest(t, Config{})
	release := d.hold(t)
	const n = 50
	var wg sync.WaitGroup
	wg.Add(n)
	var failed sync.Map
	for i := range n {
		if err := d.w.Submit(bg0, add(i), func(err error) {
			if err != nil {
				failed.Store(i, err)
			}
			wg.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- d.w.Close() }()
	for !d.w.Closed() {
		runtime.Gosched()
	}
	if err := d.w.Submit(bg0, add(100), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit during Close = %v", err)
	}
	if err := d.w.Exec(bg0, add(100)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Exec during Close = %v", err)
	}
	release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	failed.Range(func(k, v any) bool { t.Errorf("op %v: %v", k, v); return true })
	if got := d.count(t); got != n {
		t.Fatalf("%d rows after Close, want %d", got, n)
	}
	if err := d.w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// BenchmarkSubmit measures the writer's own cost per operation (one INSERT each), pipelined from one
// goroutine: the ceiling of a Seq-driven producer.
func BenchmarkSubmit(b *testing.B) {
	d := openTest(b, Config{})
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		wg.Add(1)
		if err := d.w.Submit(bg0, add(i), func(error) { wg.Done() }); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.StopTimer()
	st := d.w.Stats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	b.ReportMetric(float64(st.Ops)/float64(max(1, st.Commits)), "ops/commit")
}

// BeforeCommit runs once per batch, inside its transaction: what it writes commits with the batch, and
// its error fails the whole batch, nothing of which is stored.
func TestBeforeCommit(t *testing.T) {
	var d *testDB
	calls, fail := 0, false
	d = openTest(t, Config{BeforeCommit: func() error {
		calls++
		if fail {
			return errors.New("bookkeeping failed")
		}
		return d.st.add(1000 + calls)
	}})
	if err := d.w.Exec(bg0, add(1)); err != nil {
		t.Fatal(err)
	}
	if calls != 1 || !d.committed(t, 1) || !d.committed(t, 1001) {
		t.Fatalf("after one Exec: %d calls, committed 1: %v, 1001: %v; want 1 call, both", calls, d.committed(t, 1), d.committed(t, 1001))
	}
	if err := d.w.Submit(bg0, nil, nil); err != nil { // a barrier alone: no transaction, no call
		t.Fatal(err)
	}
	if err := d.w.Exec(bg0, func(*stmts) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if calls != 2 {
		t.Fatalf("%d calls after a barrier and an Exec, want 2", calls)
	}
	fail = true
	err := d.w.Exec(bg0, add(2))
	if err == nil || !strings.Contains(err.Error(), "bookkeeping failed") {
		t.Fatalf("Exec with a failing BeforeCommit = %v, want its error", err)
	}
	if d.committed(t, 2) {
		t.Fatal("the batch of a failed BeforeCommit was committed")
	}
}

// An operation submitted without a savepoint: when it fails, the whole batch fails and nothing of it
// is stored, operations before it included; when it succeeds, it commits with the others.
func TestSubmitNoSavepoint(t *testing.T) {
	d := openTest(t, Config{})
	q := d.w.NewSeq()
	release := d.hold(t)
	results := make(chan error, 3)
	done := func(err error) { results <- err }
	if err := d.w.Submit(bg0, add(1), done); err != nil {
		t.Fatal(err)
	}
	if err := q.SubmitNoSavepoint(bg0, add(2), done); err != nil {
		t.Fatal(err)
	}
	if err := q.SubmitNoSavepoint(bg0, add(2), done); err != nil { // UNIQUE violation
		t.Fatal(err)
	}
	d.waitQueued(t, 3)
	release()
	for range 3 {
		if err := <-results; err == nil || !strings.Contains(err.Error(), "UNIQUE") {
			t.Fatalf("an operation of the failed batch got %v, want the failure (UNIQUE)", err)
		}
	}
	if err := q.Submit(bg0, add(4), done); err != nil {
		t.Fatal(err)
	}
	if err := <-results; !errors.Is(err, ErrSeqBroken) {
		t.Fatalf("the sequence's next operation: %v, want ErrSeqBroken", err)
	}
	if d.committed(t, 1) || d.committed(t, 2) {
		t.Fatal("a batch with a failed operation without a savepoint stored something")
	}
	q = d.w.NewSeq()
	if err := q.SubmitNoSavepoint(bg0, add(3), done); err != nil {
		t.Fatal(err)
	}
	if err := <-results; err != nil || !d.committed(t, 3) {
		t.Fatalf("an operation without a savepoint alone: %v, committed %v", err, d.committed(t, 3))
	}
}
