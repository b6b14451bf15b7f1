// Package groupcommit runs the write operations of many goroutines on one database connection, many
// operations to a transaction: one COMMIT (one fsync) answers every operation that was waiting.
//
// # Model
//
// A Writer owns one dedicated connection (a *sql.Conn: SQLite allows one writer at a time, and a
// pinned connection keeps its transaction state and its prepared statements) and one goroutine, the
// writer, that alone uses it. Operations are functions of the statements prepared on that connection
// (a value of any type S, typically a struct of *sql.Stmt). Callers queue operations; the writer takes
// the first waiting one and then every other one already waiting, up to MaxBatch, and runs them in ONE
// transaction (BEGIN IMMEDIATE … COMMIT), each inside its own SAVEPOINT:
//
//   - An operation that returns an error is rolled back to its savepoint and fails alone; the others of
//     the batch commit. If even the rollback fails (SQLite has rolled the whole transaction back after
//     a full disk or an I/O error), the batch is lost and every operation of it fails.
//   - If BEGIN, a savepoint or COMMIT fails, every operation of the batch fails with that error and
//     nothing of the batch is stored.
//   - Operations run in queue order, so an operation sees the effects of every operation queued before
//     it, including earlier ones of its own batch.
//   - There is no timer: a write that arrives alone is committed at once. Under load, batches grow by
//     themselves while the previous COMMIT is being flushed.
//
// # Three ways to queue
//
//   - Exec blocks until the operation's transaction committed (or failed) and returns its result.
//   - Submit queues the operation and returns at once (it blocks only while the queue is full, which is
//     the back-pressure); done(err) is called later with the result, after the COMMIT.
//   - A Seq is an ordered stream of Submits, one per producer (a network session, say), that must take
//     effect as a prefix: once one of its operations has failed, every later one fails with
//     ErrSeqBroken without running. Without it, an operation queued after a failed one could commit,
//     and a producer that retries the failed one would reorder its writes.
//
// Seq.SubmitNoSavepoint queues an operation that fails only when the database does, without a
// savepoint of its own; if it fails, its whole batch fails.
//
// Do runs an operation alone, outside any transaction (maintenance, tests).
//
// # Ordering guarantees
//
// The queue is one FIFO channel and the writer runs batches one after the other, each in queue order.
// So operations queued by one goroutine, by any of the methods, are applied in the order it queued
// them, and the done callbacks of Submit run in that order too: all of them on the writer goroutine,
// after the COMMIT of their batch (or its failure), in batch order, before the next batch starts.
//
// A done callback therefore runs on the writer goroutine with the writer waiting for it. It must be
// quick and must not block: hand the result to another goroutine (append to a list under a mutex and
// signal a channel with a non-blocking send). It must not call Exec, Do or Submit (the queue may be
// full: deadlock).
//
// # Contexts
//
// Exec's context counts until the writer takes the operation into a batch: cancelled before, the
// operation is not applied and Exec returns ctx.Err(). Once taken, the operation runs to the end and
// Exec waits for the COMMIT and returns the real result even if ctx is done meanwhile (a batch is never
// interrupted for one caller; this wait is one transaction, normally milliseconds). So an Exec that
// returned ctx.Err() was not applied, and one that returned nil is durable. Submit's context only
// bounds the wait for room in the queue: a submitted operation always runs.
//
// # Close
//
// Close stops accepting operations (ErrClosed), lets the writer finish every operation already queued
// (their callers get their real results, their callbacks run), and returns when the writer has exited.
package groupcommit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// ErrClosed is returned by Exec, Submit and Do after Close.
var ErrClosed = errors.New("groupcommit: writer closed")

// ErrSeqBroken is the error of an operation of a Seq that did not run because an earlier operation of
// the Seq failed.
var ErrSeqBroken = errors.New("groupcommit: an earlier operation of the sequence failed")

// DefaultMaxBatch is the default cap on the operations run in one transaction.
const DefaultMaxBatch = 512

// Config configures a Writer. The zero value works.
type Config struct {
	// MaxBatch caps the operations run in one transaction. 0 means DefaultMaxBatch; 1 disables
	// batching (one transaction per operation).
	MaxBatch int
	// QueueLen is the capacity of the queue of operations waiting for the writer; callers block while
	// it is full. 0 means 4 × MaxBatch.
	QueueLen int
	// Name prefixes the errors of the transaction itself ("<Name>: commit: …"). Default "groupcommit".
	Name string
	// BeforeCommit, if set, runs on the writer goroutine after the operations of a batch and before its
	// COMMIT, in the same transaction (outside any operation's savepoint): a place for bookkeeping
	// that every transaction must carry, such as a counter the operations advanced. Like an
	// operation it may use the statements prepared on the writer's connection (captured by the
	// closure). An error fails the whole batch. It is not called for batches of barriers only.
	BeforeCommit func() error
}

// Writer runs write operations on one dedicated connection; see the package documentation. Its
// methods are safe for concurrent use.
type Writer[S any] struct {
	conn     *sql.Conn
	stmts    S
	name     string
	maxBatch int
	before   func() error

	begin, commit, rollback, savepoint, release, rollbackTo *sql.Stmt

	mu      sync.RWMutex // held (read) while sending to ops; (write) by Close
	closed  bool         // under mu
	ops     chan *op[S]
	stopped chan struct{} // closed when the writer goroutine has returned

	commits   atomic.Uint64
	committed atomic.Uint64
	failed    atomic.Uint64
	maxSeen   atomic.Int64
}

// op is one operation waiting for the writer.
type op[S any] struct {
	ctx         context.Context // Exec and Do: counts until taken; nil for Submit (never cancelled)
	fn          func(S) error   // nil: a barrier, no database work (Submit only)
	seq         *Seq[S]         // Seq.Submit
	raw         bool            // Do: alone, outside a transaction
	state       atomic.Int32    // Exec and Do: see opQueued
	done        chan error      // Exec and Do: buffered(1), the result, sent once
	cb          func(error)     // Submit: called once with the result
	noSavepoint bool            // SubmitNoSavepoint
}

// Operation states (Exec and Do). queued → taken (by the writer) or queued → canceled (by the caller,
// or by the writer when it finds the context done); whoever wins the compare-and-swap decides.
const (
	opQueued int32 = iota
	opTaken
	opCanceled
)

// finish delivers the result of o.
func (o *op[S]) finish(err error) {
	if o.cb != nil {
		o.cb(err)
		return
	}
	o.done <- err
}

// New starts a Writer on conn, which it uses exclusively from now until Close returns: nobody else may
// use conn, or the statements in stmts (which must be prepared on conn), meanwhile. The writer prepares
// its own transaction statements on conn with ctx. Close does not close conn or stmts: the caller does,
// after Close.
func New[S any](ctx context.Context, conn *sql.Conn, stmts S, cfg Config) (*Writer[S], error) {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 4 * cfg.MaxBatch
	}
	if cfg.Name == "" {
		cfg.Name = "groupcommit"
	}
	w := &Writer[S]{
		conn:     conn,
		stmts:    stmts,
		name:     cfg.Name,
		maxBatch: cfg.MaxBatch,
		before:   cfg.BeforeCommit,
		ops:      make(chan *op[S], cfg.QueueLen),
		stopped:  make(chan struct{}),
	}
	for _, p := range []struct {
		st **sql.Stmt
		q  string
	}{
		{&w.begin, `BEGIN IMMEDIATE`},
		{&w.commit, `COMMIT`},
		{&w.rollback, `ROLLBACK`},
		{&w.savepoint, `SAVEPOINT groupcommit_op`},
		{&w.release, `RELEASE groupcommit_op`},
		{&w.rollbackTo, `ROLLBACK TO groupcommit_op`},
	} {
		st, err := conn.PrepareContext(ctx, p.q)
		if err != nil {
			w.closeStmts()
			return nil, fmt.Errorf("%s: prepare %q: %w", w.name, p.q, err)
		}
		*p.st = st
	}
	go w.run()
	return w, nil
}

// Exec queues fn and waits for the commit of the transaction that ran it; see the package
// documentation for what ctx means. It returns fn's error, or the transaction's, or ctx.Err() (fn was
// not applied), or ErrClosed.
func (w *Writer[S]) Exec(ctx context.Context, fn func(S) error) error {
	return w.wait(ctx, &op[S]{ctx: ctx, fn: fn, done: make(chan error, 1)})
}

// Do runs fn alone on the writer's connection, outside any transaction, after every operation queued
// before it has been committed and before any queued after it starts. fn may use the connection freely
// (its own transactions, PRAGMAs, VACUUM) but must leave no transaction open. ctx counts as for Exec.
func (w *Writer[S]) Do(ctx context.Context, fn func(S) error) error {
	return w.wait(ctx, &op[S]{ctx: ctx, fn: fn, raw: true, done: make(chan error, 1)})
}

func (w *Writer[S]) wait(ctx context.Context, o *op[S]) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := w.enqueue(ctx, o); err != nil {
		return err
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		if o.state.CompareAndSwap(opQueued, opCanceled) {
			return ctx.Err() // the writer will skip it
		}
		return <-o.done // taken: it runs; wait for the real result
	}
}

// Submit queues fn and returns without waiting for it: done(err) is called once, on the writer
// goroutine, after the COMMIT of the transaction that ran fn (err nil: fn's writes are durable), or
// with fn's error or the transaction's. fn may be nil: a barrier that writes nothing, whose done runs
// after everything queued before it has been committed. done may be nil.
//
// Submit blocks only while the queue is full; ctx bounds that wait. It returns ctx.Err() or ErrClosed
// if fn was not queued (done is then never called), nil otherwise. A queued operation always runs.
func (w *Writer[S]) Submit(ctx context.Context, fn func(S) error, done func(error)) error {
	return w.submit(ctx, nil, fn, done, false)
}

func (w *Writer[S]) submit(ctx context.Context, seq *Seq[S], fn func(S) error, done func(error), noSavepoint bool) error {
	if done == nil {
		done = func(error) {}
	}
	return w.enqueue(ctx, &op[S]{fn: fn, seq: seq, cb: done, noSavepoint: noSavepoint})
}

func (w *Writer[S]) enqueue(ctx context.Context, o *op[S]) error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return ErrClosed
	}
	select {
	case w.ops <- o:
		return nil
	default:
	}
	select {
	case w.ops <- o:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Seq is an ordered stream of asynchronous operations that take effect as a prefix: once one of them
// has failed (its own error, or its transaction's), every later one fails with ErrSeqBroken without
// running. Create one per producer with NewSeq. A Seq is meant for one submitting goroutine at a time:
// concurrent submitters get some interleaving of their operations.
type Seq[S any] struct {
	w   *Writer[S]
	err error // the first failure; only the writer goroutine reads and writes it
}

// NewSeq returns a new, empty sequence on w.
func (w *Writer[S]) NewSeq() *Seq[S] { return &Seq[S]{w: w} }

// Submit is Writer.Submit for an operation of the sequence.
func (q *Seq[S]) Submit(ctx context.Context, fn func(S) error, done func(error)) error {
	return q.w.submit(ctx, q, fn, done, false)
}

// SubmitNoSavepoint is Submit for an operation that fails only when the database does (a full disk,
// an I/O error), never for a reason of its own. It runs without a savepoint of its own, which saves
// two statements per operation. The price: when it fails, the writer cannot undo just its part, nor
// tell a statement SQLite undid from a transaction SQLite rolled back, so it fails the whole batch,
// which is rolled back and stores nothing.
func (q *Seq[S]) SubmitNoSavepoint(ctx context.Context, fn func(S) error, done func(error)) error {
	return q.w.submit(ctx, q, fn, done, true)
}

// Close stops accepting operations, lets the writer finish every operation already queued, and
// returns when it has exited. It closes the writer's own statements, not the connection. Idempotent.
func (w *Writer[S]) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.stopped
		return nil
	}
	w.closed = true
	close(w.ops) // no sender holds mu.RLock now, so none is blocked on ops
	w.mu.Unlock()
	<-w.stopped
	return w.closeStmts()
}

func (w *Writer[S]) closeStmts() error {
	var errs []error
	for _, st := range []*sql.Stmt{w.begin, w.commit, w.rollback, w.savepoint, w.release, w.rollbackTo} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

// Closed reports whether Close has been called.
func (w *Writer[S]) Closed() bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.closed
}

// Queued returns the number of operations waiting in the queue (not those of the running batch).
func (w *Writer[S]) Queued() int { return len(w.ops) }

// Stats counts the writer's work since New.
type Stats struct {
	Commits  uint64 // transactions committed
	Ops      uint64 // operations in committed transactions that succeeded
	Failed   uint64 // operations that returned an error (their own, their transaction's, or ErrSeqBroken)
	MaxBatch int    // the most operations seen in one committed transaction
}

// Stats reports how much group commit is batching (for metrics and tests). Operations run by Do are
// not counted.
func (w *Writer[S]) Stats() Stats {
	return Stats{
		Commits:  w.commits.Load(),
		Ops:      w.committed.Load(),
		Failed:   w.failed.Load(),
		MaxBatch: int(w.maxSeen.Load()),
	}
}

// run is the writer goroutine: it takes the first waiting operation, then every other one already
// waiting up to maxBatch, and commits them together. An operation of Do ends the batch before it and
// runs alone.
func (w *Writer[S]) run() {
	defer close(w.stopped)
	batch := make([]*op[S], 0, w.maxBatch)
	taken := make([]*op[S], 0, w.maxBatch)
	errs := make([]error, w.maxBatch)
	var next *op[S] // a Do operation that ended the previous batch
	for {
		o := next
		next = nil
		if o == nil {
			var ok bool
			if o, ok = <-w.ops; !ok {
				return
			}
		}
		if o.raw {
			w.runRaw(o)
			continue
		}
		batch = append(batch[:0], o)
	fill:
		for len(batch) < w.maxBatch {
			select {
			case o, ok := <-w.ops:
				if !ok {
					break fill
				}
				if o.raw {
					next = o
					break fill
				}
				batch = append(batch, o)
			default:
				break fill
			}
		}
		taken = taken[:0]
		for _, o := range batch {
			if o.ctx == nil { // Submit: always runs
				taken = append(taken, o)
				continue
			}
			if err := o.ctx.Err(); err != nil {
				if o.state.CompareAndSwap(opQueued, opCanceled) {
					o.done <- err
				}
				continue
			}
			if o.state.CompareAndSwap(opQueued, opTaken) {
				taken = append(taken, o)
			}
		}
		clear(batch) // drop references for the GC
		if len(taken) > 0 {
			w.runBatch(taken, errs[:len(taken)])
		}
		clear(taken)
	}
}

// runRaw runs a Do operation.
func (w *Writer[S]) runRaw(o *op[S]) {
	if err := o.ctx.Err(); err != nil {
		if o.state.CompareAndSwap(opQueued, opCanceled) {
			o.done <- err
		}
		return
	}
	if !o.state.CompareAndSwap(opQueued, opTaken) {
		return
	}
	o.done <- o.fn(w.stmts)
}

// bg is the context of every statement the writer runs: a batch is never interrupted for one caller,
// and a context without Done spares the driver its interrupt watcher.
var bg = context.Background()

func run(st *sql.Stmt) error {
	_, err := st.ExecContext(bg)
	return err
}

// abort rolls back the open transaction, if any (the error is that there is none).
func (w *Writer[S]) abort() {
	_ = run(w.rollback)
}

func brokenErr(first error) error { return fmt.Errorf("%w: %v", ErrSeqBroken, first) }

// runBatch runs ops in one transaction, each in a savepoint unless submitted without one, commits, and answers every caller in
// batch order.
func (w *Writer[S]) runBatch(ops []*op[S], errs []error) {
	answer := func(batchErr error) {
		var ok, bad uint64
		for i, o := range ops {
			if batchErr != nil {
				errs[i] = batchErr
			}
			if errs[i] == nil {
				ok++
			} else {
				bad++
				if o.seq != nil && o.seq.err == nil {
					o.seq.err = errs[i]
				}
			}
		}
		// Count first: a caller that has its answer sees it in Stats.
		w.committed.Add(ok)
		w.failed.Add(bad)
		for i, o := range ops {
			err := errs[i]
			errs[i] = nil
			o.finish(err)
		}
	}
	writes := false
	for _, o := range ops {
		writes = writes || (o.fn != nil && (o.seq == nil || o.seq.err == nil))
	}
	if !writes { // only barriers (or operations that will not run): no transaction needed
		for i, o := range ops {
			if o.seq != nil && o.seq.err != nil {
				errs[i] = brokenErr(o.seq.err)
			}
		}
		answer(nil)
		return
	}
	if err := run(w.begin); err != nil {
		answer(fmt.Errorf("%s: begin: %w", w.name, err))
		return
	}
	for i, o := range ops {
		if o.seq != nil && o.seq.err != nil {
			errs[i] = brokenErr(o.seq.err)
			continue
		}
		if o.fn == nil { // a barrier
			continue
		}
		if o.noSavepoint {
			if err := o.fn(w.stmts); err != nil {
				w.abort()
				// It gets its own error; the others one that does not wrap it (%v): its sentinel
				// errors are not theirs.
				batchErr := fmt.Errorf("%s: batch rolled back after an operation without a savepoint failed: %v", w.name, err)
				for j := range errs {
					errs[j] = batchErr
				}
				errs[i] = err
				answer(nil)
				return
			}
			continue
		}
		if err := run(w.savepoint); err != nil {
			w.abort()
			answer(fmt.Errorf("%s: savepoint: %w", w.name, err))
			return
		}
		err := o.fn(w.stmts)
		if err != nil {
			// Undo this operation only. If even that fails, SQLite has rolled back the whole
			// transaction (disk full, I/O error, …): the batch is lost. (%v, not %w: the other
			// callers must not see this operation's sentinel errors as theirs.)
			if rerr := run(w.rollbackTo); rerr != nil {
				w.abort()
				answer(fmt.Errorf("%s: transaction rolled back, batch lost (after: %v)", w.name, err))
				return
			}
			if o.seq != nil {
				o.seq.err = err // later operations of the sequence in this batch do not run
			}
		}
		if rerr := run(w.release); rerr != nil {
			w.abort()
			answer(fmt.Errorf("%s: release savepoint: %w", w.name, rerr))
			return
		}
		errs[i] = err
	}
	if w.before != nil {
		if err := w.before(); err != nil {
			w.abort()
			answer(fmt.Errorf("%s: before commit: %w", w.name, err))
			return
		}
	}
	if err := run(w.commit); err != nil {
		w.abort()
		answer(fmt.Errorf("%s: commit: %w", w.name, err))
		return
	}
	w.commits.Add(1)
	if n := int64(len(ops)); n > w.maxSeen.Load() {
		w.maxSeen.Store(n) // only the writer stores
	}
	answer(nil)
}
