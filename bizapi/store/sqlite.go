package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/chatd-dev/chatd/internal/groupcommit"
	"github.com/chatd-dev/chatd/internal/sqlitedb"
)

// SQLite is the Store on one SQLite file (modernc.org/sqlite, pure Go).
//
// # Durability
//
// The file is in WAL mode with synchronous=FULL: a COMMIT returns after the WAL is fsynced, so a
// write whose method returned nil survives SIGKILL and power loss. The file is created 0600 (it
// holds the device private key); SQLite gives the -wal and -shm files the same mode.
//
// # Group commit
//
// Every write is an operation sent to one writer goroutine (internal/groupcommit) that owns the only
// write connection.
// The writer takes the first waiting operation and then every other one already waiting (up to
// MaxBatch), runs them in ONE transaction (BEGIN IMMEDIATE … COMMIT), each inside its own SAVEPOINT,
// and answers every caller after the COMMIT. An operation that fails (ErrDuplicate, ErrNotFound, a
// constraint) is rolled back to its savepoint and fails alone; the others in the batch commit. So N
// concurrent writers cost one fsync, not N: while one batch is being flushed the next one piles up.
// A write that arrives alone is committed at once: there is no timer, so no added latency.
//
// If the transaction itself fails (BEGIN, COMMIT, or an error after which SQLite rolled the whole
// transaction back, such as a full disk), every operation of the batch fails with that error and
// nothing of it is stored.
//
// # Contexts
//
// A write's context counts until the writer takes the operation into a batch: cancelled before,
// the operation is not applied and the method returns ctx.Err(). Once taken, the operation runs to
// the end and the method waits for the COMMIT and returns its real result even if ctx is done
// meanwhile (a batch is never interrupted for one caller; this wait is one transaction, normally
// milliseconds). So a write that returned ctx.Err() was not applied, and one that returned nil is
// durable. Reads use ctx as usual.
//
// # Reads
//
// Reads go to a pool of query_only connections; in WAL mode they never wait for the writer and see
// every committed batch. The hot statements, reads and writes, are prepared once at Open.
//
// # Schema
//
// Embedded migrations (migrations/NNNN_name.sql) are applied at Open, each in one transaction with
// the PRAGMA user_version bump. Reopening an up-to-date file runs nothing; a file with a newer
// user_version than this binary knows is refused with ErrSchemaTooNew. Times are INTEGER Unix
// nanoseconds, NULL for the zero time; times returned are in UTC.
type SQLite struct {
	path string
	now  func() time.Time

	w    *sql.DB   // writer DB: exactly one connection, owned by the writer goroutine
	wc   *sql.Conn // that connection
	ws   writeStmts
	gc   *groupcommit.Writer[*writeStmts] // the writer goroutine, on wc
	r    *sql.DB                          // query_only pool
	rs   readStmts
	prep []*sql.Stmt // every prepared statement, for Close

	closing atomic.Bool // Close was called
	isShut  atomic.Bool // closed, for readers
}

var _ Store = (*SQLite)(nil)

// DefaultMaxBatch is the default cap on the operations committed in one transaction.
const DefaultMaxBatch = groupcommit.DefaultMaxBatch

//go:embed migrations/*.sql
var migrationsFS embed.FS

// Option configures Open.
type Option func(*options)

type options struct {
	now      func() time.Time
	maxBatch int
}

// WithClock sets the clock for every time the store fills in (CreatedAt, ReceivedAt, a zero at or
// NextAt, …). The default is time.Now.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// WithMaxBatch caps the number of write operations committed in one transaction (default
// DefaultMaxBatch). n < 1 means 1: no batching.
func WithMaxBatch(n int) Option {
	return func(o *options) { o.maxBatch = max(1, n) }
}

// Open opens the SQLite store at path, creating the file (0600) and its parent directory (0700) if
// missing, and applies pending migrations.
func Open(path string, opts ...Option) (*SQLite, error) {
	o := options{now: time.Now, maxBatch: DefaultMaxBatch}
	for _, opt := range opts {
		opt(&o)
	}
	if o.now == nil {
		o.now = time.Now
	}
	if path == "" {
		return nil, fmt.Errorf("%w: empty database path", ErrInvalidArgument)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("store: create directory: %w", err)
	}
	// Create the file ourselves so that it is 0600 (SQLite would use 0644); an existing file keeps
	// its mode.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", abs, err)
	}
	f.Close()

	s := &SQLite{path: abs, now: o.now}
	s.ws.clock = o.now
	if err := s.open(); err != nil {
		s.closeDBs()
		return nil, err
	}
	s.gc, err = groupcommit.New(context.Background(), s.wc, &s.ws, groupcommit.Config{MaxBatch: o.maxBatch, Name: "store"})
	if err != nil {
		s.closeDBs()
		return nil, err
	}
	return s, nil
}

func (s *SQLite) open() error {
	ctx := context.Background()
	var err error
	if s.w, err = sqlitedb.OpenWriter(ctx, s.path); err != nil {
		return err
	}
	if err := migrate(ctx, s.w); err != nil {
		return err
	}
	if s.wc, err = s.w.Conn(ctx); err != nil {
		return fmt.Errorf("store: open %s: %w", s.path, err)
	}
	if err := s.ws.prepare(ctx, s); err != nil {
		return err
	}

	if s.r, err = sqlitedb.OpenReaders(ctx, s.path); err != nil {
		return err
	}
	return s.rs.prepare(ctx, s)
}

// prepareOn prepares query with p (the writer's Conn or the reader pool) and remembers it for
// Close.
func (s *SQLite) prepareOn(ctx context.Context, p interface {
	PrepareContext(context.Context, string) (*sql.Stmt, error)
}, query string) (*sql.Stmt, error) {
	st, err := p.PrepareContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("store: prepare %q: %w", strings.Join(strings.Fields(query), " "), err)
	}
	s.prep = append(s.prep, st)
	return st, nil
}

// Close stops accepting writes, lets the writer finish every operation already sent to it (their
// callers get their real results), and closes the database. The writer connection is closed last
// so that it, the last connection on the file, checkpoints the WAL. Close is idempotent.
func (s *SQLite) Close() error {
	if !s.closing.CompareAndSwap(false, true) {
		return nil
	}
	s.isShut.Store(true)
	err := s.gc.Close()
	return errors.Join(err, s.closeDBs())
}

func (s *SQLite) closeDBs() error {
	var errs []error
	for _, st := range s.prep {
		errs = append(errs, st.Close())
	}
	s.prep = nil
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	if s.wc != nil {
		errs = append(errs, s.wc.Close())
	}
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	return errors.Join(errs...)
}

// WriterStats counts the writer's work since Open.
type WriterStats struct {
	Commits  uint64 // transactions committed
	Ops      uint64 // operations in committed transactions that succeeded
	Failed   uint64 // operations that returned an error (their own, or their transaction's)
	MaxBatch int    // the most operations seen in one transaction
}

// WriterStats reports how much group commit is batching (for metrics and tests).
func (s *SQLite) WriterStats() WriterStats {
	st := s.gc.Stats()
	return WriterStats{Commits: st.Commits, Ops: st.Ops, Failed: st.Failed, MaxBatch: st.MaxBatch}
}

type migration = sqlitedb.Migration

func loadMigrations() ([]migration, error) {
	return sqlitedb.LoadMigrations(migrationsFS, "migrations")
}

// migrate brings the database to this binary's schema (sqlitedb.Migrate).
func migrate(ctx context.Context, db sqlitedb.DB) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	return sqlitedb.Migrate(ctx, db, ms)
}

// Encoding helpers. Times: INTEGER Unix nanoseconds, NULL for the zero time.

// orNow returns t, or the store's clock when t is zero.
func (s *SQLite) orNow(t time.Time) time.Time {
	if t.IsZero() {
		return s.now()
	}
	return t
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// serverIDArg stores a uint64 id in an INTEGER column (bit-preserving); 0 is NULL.
func serverIDArg(id uint64) any {
	if id == 0 {
		return nil
	}
	return int64(id)
}

// bytesArg binds b as a BLOB, never as NULL (the driver binds a nil slice as NULL).
func bytesArg(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// nullBytes binds nil as NULL.
func nullBytes(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}

// readErr maps a read error: closed store → ErrClosed, no row → ErrNotFound, else wrapped.
func (s *SQLite) readErr(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sql.ErrNoRows):
		return ErrNotFound
	case s.isShut.Load():
		return ErrClosed
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return fmt.Errorf("store: %s: %w", what, err)
}

func checkLimit(limit int) error {
	if limit <= 0 {
		return fmt.Errorf("%w: limit %d", ErrInvalidArgument, limit)
	}
	return nil
}

func checkCallback(cb *Callback) error {
	if cb != nil && len(cb.Payload) == 0 {
		return fmt.Errorf("%w: callback without payload", ErrInvalidArgument)
	}
	return nil
}
