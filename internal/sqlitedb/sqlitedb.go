// Package sqlitedb is what chatd's and bizapi's SQLite stores share: how a database file is opened
// (one writer connection, a read-only pool, WAL, synchronous=FULL), the embedded-migration runner
// keyed on PRAGMA user_version, and the column encodings both use.
package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// BusyTimeout is how long a connection waits for a lock held by another connection (another
// process on the same file, or a checkpoint) before failing with SQLITE_BUSY.
const BusyTimeout = 10 * time.Second

// ErrSchemaTooNew is returned (wrapped) by Migrate when the database was migrated by a newer binary.
var ErrSchemaTooNew = errors.New("store: database schema is newer than this binary")

// DSN builds the driver connection string. The path goes into a file: URI with percent-escaping,
// so names containing '?', '#' or '%' are safe.
func DSN(abs string, readOnly bool) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}
	if !strings.HasPrefix(u.Path, "/") { // Windows drive letters
		u.Path = "/" + u.Path
	}
	q := []string{
		"_pragma=busy_timeout(" + strconv.Itoa(int(BusyTimeout/time.Millisecond)) + ")",
		"_pragma=journal_mode(WAL)",
		"_pragma=synchronous(FULL)",
		"_pragma=foreign_keys(ON)",
		"_pragma=temp_store(MEMORY)", // savepoint journals and sorts in memory, not in temporary files
		"_txlock=immediate",          // migrations use database/sql transactions
	}
	if readOnly {
		q = append(q, "_pragma=query_only(1)")
	}
	return u.String() + "?" + strings.Join(q, "&")
}

// OpenWriter opens the single write connection of the file at abs and checks that WAL took: on file
// systems without shared-memory support SQLite silently keeps the rollback journal, and the
// writer/readers split assumes WAL.
func OpenWriter(ctx context.Context, abs string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", DSN(abs, false))
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", abs, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", abs, err)
	}
	if !strings.EqualFold(mode, "wal") {
		db.Close()
		return nil, fmt.Errorf("store: open %s: journal_mode is %q, want wal (file system without WAL support?)", abs, mode)
	}
	return db, nil
}

// OpenReaders opens the read-only connection pool of the file at abs (max(4, GOMAXPROCS)
// connections, kept open).
func OpenReaders(ctx context.Context, abs string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", DSN(abs, true))
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", abs, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", abs, err)
	}
	return db, nil
}

// Migration is one schema step: the file NNNN_name.sql becomes Version NNNN.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// LoadMigrations reads dir/NNNN_name.sql from fsys, sorted by NNNN, which must run 1, 2, 3, …
// without gaps or duplicates.
func LoadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var ms []Migration
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
		b, err := fs.ReadFile(fsys, dir+"/"+name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("store: migrations must be numbered 1, 2, … without gaps; %q is #%d", m.Name, i+1)
		}
	}
	return ms, nil
}

// DB is what Migrate needs: a *sql.DB, or a *sql.Conn outside any transaction.
type DB interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Migrate applies ms (versions 1..len(ms), in order) above the database's user_version, each in its
// own transaction together with the user_version bump (user_version lives in the database header,
// so it commits or rolls back with the DDL). A database newer than len(ms) is refused with
// ErrSchemaTooNew even when it needs nothing.
func Migrate(ctx context.Context, db DB, ms []Migration) error {
	var cur int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&cur); err != nil {
		return fmt.Errorf("store: read schema version: %w", err)
	}
	if cur > len(ms) {
		return fmt.Errorf("%w: database is at version %d, this binary knows %d", ErrSchemaTooNew, cur, len(ms))
	}
	for _, m := range ms[cur:] {
		if err := apply(ctx, db, m, len(ms)); err != nil {
			return err
		}
	}
	return nil
}

func apply(ctx context.Context, db DB, m Migration, latest int) error {
	tx, err := db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: re-read the version under the write lock
	if err != nil {
		return fmt.Errorf("store: migration %s: %w", m.Name, err)
	}
	defer tx.Rollback()
	var cur int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&cur); err != nil {
		return fmt.Errorf("store: migration %s: %w", m.Name, err)
	}
	if cur > latest {
		return fmt.Errorf("%w: database is at version %d, this binary knows %d", ErrSchemaTooNew, cur, latest)
	}
	if cur >= m.Version {
		return nil // applied meanwhile by another process
	}
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return fmt.Errorf("store: migration %s: %w", m.Name, err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", m.Version)); err != nil {
		return fmt.Errorf("store: migration %s: %w", m.Name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: migration %s: %w", m.Name, err)
	}
	return nil
}

// Column encodings. Times: INTEGER Unix nanoseconds, NULL for the zero time.

// TimeArg binds t; the zero time is NULL.
func TimeArg(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

// TimeFrom reads a TimeArg column, in UTC.
func TimeFrom(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

// IsUniqueViolation reports whether err is a UNIQUE or PRIMARY KEY constraint failure.
func IsUniqueViolation(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	c := se.Code()
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// IDList binds a list of ids as one parameter: a JSON array, which a statement reads with
// "IN (SELECT value FROM json_each(?))". nil binds "[]", the empty list.
func IDList(ids []int64) string {
	b := make([]byte, 0, 2+len(ids)*8)
	b = append(b, '[')
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, id, 10)
	}
	return string(append(b, ']'))
}
