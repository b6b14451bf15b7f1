package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/chatd-dev/chatd/internal/groupcommit"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
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

// busyTimeoutMS is how long a connection waits for a lock held by another connection (another
// process on the same file, or a reader during WAL recovery) before failing with SQLITE_BUSY.
const busyTimeoutMS = 10000

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
	s.w, err = sql.Open("sqlite", dsn(s.path, false))
	if err != nil {
		return fmt.Errorf("store: open %s: %w", s.path, err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)

	var mode string
	if err := s.w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("store: open %s: %w", s.path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("store: open %s: journal_mode is %q, want wal (file system without WAL support?)", s.path, mode)
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

	s.r, err = sql.Open("sqlite", dsn(s.path, true))
	if err != nil {
		return fmt.Errorf("store: open %s: %w", s.path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	s.r.SetMaxOpenConns(n)
	s.r.SetMaxIdleConns(n)
	s.r.SetConnMaxLifetime(0)
	s.r.SetConnMaxIdleTime(0)
	if err := s.r.PingContext(ctx); err != nil {
		return fmt.Errorf("store: open %s: %w", s.path, err)
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

// dsn builds the driver connection string. The path goes into a file: URI with percent-escaping,
// so names containing '?', '#' or '%' are safe.
func dsn(abs string, readOnly bool) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}
	if !strings.HasPrefix(u.Path, "/") { // Windows drive letters
		u.Path = "/" + u.Path
	}
	q := []string{
		"_pragma=busy_timeout(" + strconv.Itoa(busyTimeoutMS) + ")",
		"_pragma=journal_mode(WAL)",
		"_pragma=synchronous(FULL)",
		"_pragma=foreign_keys(ON)",
		"_txlock=immediate", // migrations use database/sql transactions
	}
	if readOnly {
		q = append(q, "_pragma=query_only(1)")
	}
	return u.String() + "?" + strings.Join(q, "&")
}

type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads migrations/NNNN_name.sql, sorted by NNNN, which must run 1, 2, 3, … without
// gaps or duplicates.
func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationsFS, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("store: bad migration file name %q (want NNNN_name.sql)", name)
		}
		b, err := migrationsFS.ReadFile("migrations/" + name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("store: migrations must be numbered 1, 2, … without gaps; %q is #%d", m.name, i+1)
		}
	}
	return ms, nil
}

func migrate(ctx context.Context, db *sql.DB) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	return runMigrations(ctx, db, ms)
}

// runMigrations applies ms (versions 1..len(ms), in order) above the database's user_version. A
// database newer than len(ms) is refused even when it needs nothing.
func runMigrations(ctx context.Context, db *sql.DB, ms []migration) error {
	var cur int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&cur); err != nil {
		return fmt.Errorf("store: read schema version: %w", err)
	}
	if cur > len(ms) {
		return fmt.Errorf("%w: database is at version %d, this binary knows %d", ErrSchemaTooNew, cur, len(ms))
	}
	for _, m := range ms[cur:] {
		if err := applyMigration(ctx, db, m, len(ms)); err != nil {
			return err
		}
	}
	return nil
}

// applyMigration runs m and the user_version bump in one transaction (user_version lives in the
// database header, so it commits or rolls back with the DDL).
func applyMigration(ctx context.Context, db *sql.DB, m migration, latest int) error {
	tx, err := db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: re-read the version under the write lock
	if err != nil {
		return fmt.Errorf("store: migration %s: %w", m.name, err)
	}
	defer tx.Rollback()
	var cur int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&cur); err != nil {
		return fmt.Errorf("store: migration %s: %w", m.name, err)
	}
	if cur > latest {
		return fmt.Errorf("%w: database is at version %d, this binary knows %d", ErrSchemaTooNew, cur, latest)
	}
	if cur >= m.version {
		return nil // applied meanwhile by another process
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return fmt.Errorf("store: migration %s: %w", m.name, err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", m.version)); err != nil {
		return fmt.Errorf("store: migration %s: %w", m.name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: migration %s: %w", m.name, err)
	}
	return nil
}

// Encoding helpers. Times: INTEGER Unix nanoseconds, NULL for the zero time.

func timeArg(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func timeFrom(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

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

// isUniqueViolation reports whether err is a UNIQUE or PRIMARY KEY constraint failure.
func isUniqueViolation(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	c := se.Code()
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
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
