package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/chatd-dev/chatd/internal/groupcommit"
	"github.com/chatd-dev/chatd/internal/sqlitedb"
)

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
	if s.w, err = sqlitedb.OpenWriter(ctx, s.path); err != nil {
		return err
	}
	if err := migrate(ctx, s.w); err != nil {
		return err
	}
	if s.r, err = sqlitedb.OpenReaders(ctx, s.path); err != nil {
		return err
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
	if err := s.ws.loadNextSeq(ctx); err != nil {
		return err
	}
	s.gc, err = groupcommit.New(ctx, s.wc, &s.ws, groupcommit.Config{
		MaxBatch: o.maxBatch, Name: "store", BeforeCommit: s.ws.writeNextSeq})
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

// now is the only place the store reads the clock.
func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
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
