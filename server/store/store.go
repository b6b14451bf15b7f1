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

// busyTimeoutMS is how long a connection waits for a lock held by another
// connection (in practice: another process on the same file, or a reader
// during WAL recovery) before failing with SQLITE_BUSY.
const busyTimeoutMS = 10000

// lookupChunk bounds the number of bound parameters in one IN (...) list.
// Far below SQLITE_MAX_VARIABLE_NUMBER in any SQLite build, including the
// historical 999.
const lookupChunk = 500

//go:embed migrations/*.sql
var migrationsFS embed.FS

// Store is the chatd server's persistent state. Its methods are safe for
// concurrent use. Create one with Open and release it with Close.
type Store struct {
	// Now returns the current time for every timestamp the store writes
	// (CreatedAt, DeliveredAt, ReadAt, receipt times, code expiry checks).
	// nil means time.Now. Set it before the Store is used concurrently.
	Now func() time.Time

	path    string
	w       *sql.DB                          // exactly one connection: the writer's
	wc      *sql.Conn                        // that connection, used only by gc's goroutine
	ws      writeStmts                       // prepared on wc
	gc      *groupcommit.Writer[*writeStmts] // the group-commit writer: every write goes through it
	r       *sql.DB                          // query_only pool: all reads
	rs      readStmts                        // prepared on r
	closing atomic.Bool
}

// Option configures Open.
type Option func(*options)

type options struct {
	maxBatch int
}

// WithMaxBatch caps the number of write operations committed in one
// transaction (default groupcommit.DefaultMaxBatch, 512). n < 1 means 1: no
// batching.
func WithMaxBatch(n int) Option {
	return func(o *options) { o.maxBatch = max(1, n) }
}

// Open opens the store at path, creating the file and its parent directory
// if missing, and applies pending migrations.
func Open(path string, opts ...Option) (*Store, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
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
	s := &Store{path: abs}
	if err := s.open(o); err != nil {
		s.closeDBs()
		return nil, err
	}
	return s, nil
}

func (s *Store) open(o options) error {
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
	if err := s.checkWAL(ctx); err != nil {
		return err
	}
	if err := migrate(ctx, s.w); err != nil {
		return err
	}

	s.r, err = sql.Open("sqlite", dsn(s.path, true))
	if err != nil {
		return fmt.Errorf("store: open %s: %w", s.path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	s.r.SetMaxOpenConns(n)
	s.r.SetMaxIdleConns(n)
	if err := s.r.PingContext(ctx); err != nil {
		return fmt.Errorf("store: open %s: %w", s.path, err)
	}
	if err := s.rs.prepare(ctx, s.r); err != nil {
		return err
	}

	// From here the writer goroutine owns the one write connection.
	if s.wc, err = s.w.Conn(ctx); err != nil {
		return fmt.Errorf("store: open %s: %w", s.path, err)
	}
	if err := s.ws.prepare(ctx, s.wc); err != nil {
		return err
	}
	s.gc, err = groupcommit.New(ctx, s.wc, &s.ws, groupcommit.Config{MaxBatch: o.maxBatch, Name: "store"})
	return err
}

// Close stops accepting writes (they fail with ErrClosed), lets the writer
// finish every write already queued (their callers get their real results,
// the callbacks of Pipeline writes run), and closes the database. The writer
// connection is closed last so that it, the last connection on the file,
// checkpoints the WAL. Close is idempotent.
func (s *Store) Close() error {
	if !s.closing.CompareAndSwap(false, true) {
		return nil
	}
	var err error
	if s.gc != nil {
		err = s.gc.Close()
	}
	return errors.Join(err, s.closeDBs())
}

func (s *Store) closeDBs() error {
	var errs []error
	errs = append(errs, s.ws.close(), s.rs.close())
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

// dsn builds the driver connection string. The path goes into a file: URI
// with percent-escaping, so names containing '?', '#' or '%' are safe.
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
		"_txlock=immediate",
	}
	if readOnly {
		q = append(q, "_pragma=query_only(1)")
	}
	return u.String() + "?" + strings.Join(q, "&")
}

// checkWAL makes sure the pragma took: on file systems without shared memory
// support SQLite silently keeps the rollback journal, and the reader/writer
// split above assumes WAL.
func (s *Store) checkWAL(ctx context.Context) error {
	var mode string
	if err := s.w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("store: open %s: %w", s.path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("store: open %s: journal_mode is %q, want wal (file system without WAL support?)", s.path, mode)
	}
	return nil
}

type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads migrations/NNNN_name.sql, sorted by NNNN, which must
// run 1, 2, 3, ... without gaps or duplicates.
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
			return nil, fmt.Errorf("store: migrations must be numbered 1, 2, ... without gaps; %q is #%d", m.name, i+1)
		}
	}
	return ms, nil
}

// txBeginner is what migrations need: a *sql.DB, or a *sql.Conn outside any
// transaction.
type txBeginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// migrate applies the migrations newer than the database's user_version, each
// in its own transaction together with the user_version bump (user_version is
// stored in the database header, so it commits or rolls back with the DDL).
func migrate(ctx context.Context, db txBeginner) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	return runMigrations(ctx, db, ms)
}

// runMigrations applies ms (versions 1..len(ms), in order) above the
// database's current user_version.
func runMigrations(ctx context.Context, db txBeginner, ms []migration) error {
	for _, m := range ms {
		if err := applyMigration(ctx, db, m, len(ms)); err != nil {
			return err
		}
	}
	return nil
}

func applyMigration(ctx context.Context, db txBeginner, m migration, latest int) error {
	tx, err := db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: re-read under the write lock
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
		return nil // already applied (possibly by another process meanwhile)
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

// now is the only place the store reads the clock.
func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Time encoding: INTEGER Unix nanoseconds, NULL for the zero time.

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

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// isUniqueViolation reports whether err is a UNIQUE or PRIMARY KEY
// constraint failure.
func isUniqueViolation(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	c := se.Code()
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// validPhone: E.164 without '+', 1 to 15 ASCII digits.
func validPhone(p string) bool {
	if len(p) == 0 || len(p) > 15 {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	return true
}

// notifier collects the phones whose queue grew: no duplicates, in order of
// first enqueue.
type notifier struct {
	list []string
	seen map[string]struct{}
}

func (n *notifier) add(p string) {
	if _, ok := n.seen[p]; ok {
		return
	}
	if n.seen == nil {
		n.seen = make(map[string]struct{})
	}
	n.seen[p] = struct{}{}
	n.list = append(n.list, p)
}
