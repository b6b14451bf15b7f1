package store

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/chatd-dev/chatd/internal/sqlitedb"
)

func TestOpenCreatesFileAndParentDirs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "c", "chatd.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file not created: %v", err)
	}
}

func TestOpenPathWithURIMetacharacters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "we?ird #dir%20")
	path := filepath.Join(dir, "chat?d.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	register(t, s, phone(1), key(1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range entries {
		found = found || e.Name() == "chat?d.db"
	}
	if !found {
		t.Fatalf("database not created at the exact path; dir has %v", entries)
	}
	s2, _ := openAt(t, path)
	if _, err := s2.Account(context.Background(), phone(1)); err != nil {
		t.Fatalf("reopen: %v", err)
	}
}

func TestOpenEmptyPath(t *testing.T) {
	if _, err := Open(""); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Open(\"\") = %v, want ErrInvalidArgument", err)
	}
}

// queryer is a *sql.DB (the reader pool) or a *sql.Conn (the writer's
// connection, from withWriter).
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func pragmaString(t *testing.T, db queryer, name string) string {
	t.Helper()
	var v string
	if err := db.QueryRowContext(context.Background(), "PRAGMA "+name).Scan(&v); err != nil {
		t.Fatalf("PRAGMA %s: %v", name, err)
	}
	return v
}

func TestPragmasOnWriterAndReaders(t *testing.T) {
	s, _ := openTest(t)
	want := map[string]string{
		"journal_mode": "wal",
		"synchronous":  "2", // FULL
		"foreign_keys": "1",
		"busy_timeout": "10000",
	}
	check := func(name string, db queryer) {
		for p, v := range want {
			if got := pragmaString(t, db, p); !strings.EqualFold(got, v) {
				t.Errorf("%s: PRAGMA %s = %s, want %s", name, p, got, v)
			}
		}
	}
	check("reader", s.r)
	if got := pragmaString(t, s.r, "query_only"); got != "1" {
		t.Errorf("reader query_only = %s, want 1", got)
	}
	withWriter(t, s, func(c *sql.Conn) {
		check("writer", c)
		if got := pragmaString(t, c, "query_only"); got != "0" {
			t.Errorf("writer query_only = %s, want 0", got)
		}
	})
	if n := s.w.Stats().MaxOpenConnections; n != 1 {
		t.Errorf("writer MaxOpenConnections = %d, want 1", n)
	}
	if _, err := s.r.Exec(`DELETE FROM accounts`); err == nil {
		t.Error("reader pool accepted a write")
	}
}

func schemaDump(t *testing.T, db queryer) string {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), `SELECT type, name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var typ, name, q string
		if err := rows.Scan(&typ, &name, &q); err != nil {
			t.Fatal(err)
		}
		b.WriteString(typ + " " + name + "\n" + q + "\n")
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func pragmaInt(t *testing.T, db queryer, name string) int {
	t.Helper()
	var v int
	if err := db.QueryRowContext(context.Background(), "PRAGMA "+name).Scan(&v); err != nil {
		t.Fatalf("PRAGMA %s: %v", name, err)
	}
	return v
}

func TestMigrationFilesAreNumberedContiguously(t *testing.T) {
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].Name != "0001_init.sql" {
		t.Fatalf("migrations = %v, want 0001_init.sql first", ms)
	}
	for i, m := range ms {
		if m.Version != i+1 {
			t.Fatalf("migration %s has version %d at position %d", m.Name, m.Version, i)
		}
	}
}

func TestMigrationsReopenIsNoop(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chatd.db")
	s, _ := openAt(t, path)
	ms, _ := loadMigrations()
	withWriter(t, s, func(c *sql.Conn) {
		if v := pragmaInt(t, c, "user_version"); v != len(ms) {
			t.Fatalf("user_version after first Open = %d, want %d", v, len(ms))
		}
	})
	register(t, s, phone(1), key(1))
	var (
		schema        string
		schemaVersion int
	)
	withWriter(t, s, func(c *sql.Conn) {
		schema = schemaDump(t, c)
		// schema_version is bumped by SQLite on every schema change, so an
		// unchanged value proves the second Open executed no DDL.
		schemaVersion = pragmaInt(t, c, "schema_version")
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, _ := openAt(t, path)
	withWriter(t, s2, func(c *sql.Conn) {
		if v := pragmaInt(t, c, "user_version"); v != len(ms) {
			t.Fatalf("user_version after reopen = %d, want %d", v, len(ms))
		}
		if v := pragmaInt(t, c, "schema_version"); v != schemaVersion {
			t.Fatalf("schema_version changed on reopen: %d → %d (migrations re-ran)", schemaVersion, v)
		}
		if got := schemaDump(t, c); got != schema {
			t.Fatalf("schema changed on reopen:\n%s\nvs\n%s", schema, got)
		}
	})
	if _, err := s2.Account(context.Background(), phone(1)); err != nil {
		t.Fatalf("account lost on reopen: %v", err)
	}
	// Running migrate on an up-to-date database is a no-op as well.
	withWriter(t, s2, func(c *sql.Conn) {
		if err := migrate(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		if v := pragmaInt(t, c, "schema_version"); v != schemaVersion {
			t.Fatalf("schema_version changed by a second migrate: %d → %d", schemaVersion, v)
		}
	})
}

// Migration SQL itself is idempotent: re-applying every migration to a
// database that already has the schema (as if user_version had been lost)
// succeeds and changes neither schema nor data.
func TestMigrationsSQLIsIdempotent(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	register(t, s, phone(1), key(1))
	m := save(t, s, phone(1), phone(2), "c1")
	withWriter(t, s, func(c *sql.Conn) {
		schema := schemaDump(t, c)
		if _, err := c.ExecContext(ctx, `PRAGMA user_version = 0`); err != nil {
			t.Fatal(err)
		}
		if err := migrate(ctx, c); err != nil {
			t.Fatalf("re-applying migrations: %v", err)
		}
		ms, _ := loadMigrations()
		if v := pragmaInt(t, c, "user_version"); v != len(ms) {
			t.Fatalf("user_version = %d, want %d", v, len(ms))
		}
		if got := schemaDump(t, c); got != schema {
			t.Fatalf("schema changed:\n%s\nvs\n%s", schema, got)
		}
	})
	if got := mustMessage(t, s, m.ID); got.ClientID != "c1" {
		t.Fatalf("message changed: %+v", got)
	}
	if _, err := s.Account(ctx, phone(1)); err != nil {
		t.Fatal(err)
	}
}

// The runner applies each migration once, in order, and never again: checked
// with synthetic migrations that would fail if re-run or run out of order.
func TestMigrationRunnerAppliesEachOnceInOrder(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	base, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	n := len(base)
	ms := append(slices.Clone(base),
		migration{Version: n + 1, Name: "extra_table", SQL: `CREATE TABLE extra (x INTEGER)`},
		migration{Version: n + 2, Name: "extra_column", SQL: `ALTER TABLE extra ADD COLUMN y TEXT; INSERT INTO extra VALUES (1, 'a')`},
	)
	withWriter(t, s, func(c *sql.Conn) {
		if err := sqlitedb.Migrate(ctx, c, ms); err != nil {
			t.Fatalf("applying %d migrations: %v", len(ms), err)
		}
		if v := pragmaInt(t, c, "user_version"); v != n+2 {
			t.Fatalf("user_version = %d, want %d", v, n+2)
		}
		for i := range 2 { // re-running must not execute anything (both would fail or duplicate the row)
			if err := sqlitedb.Migrate(ctx, c, ms); err != nil {
				t.Fatalf("re-run #%d: %v", i, err)
			}
		}
		var rows int
		if err := c.QueryRowContext(ctx, `SELECT count(*) FROM extra`).Scan(&rows); err != nil || rows != 1 {
			t.Fatalf("extra has %d rows (%v), want 1: a migration ran twice", rows, err)
		}
		// A failing migration rolls back entirely, user_version included.
		bad := append(slices.Clone(ms), migration{Version: n + 3, Name: "bad",
			SQL: `CREATE TABLE half (x); INSERT INTO nosuchtable VALUES (1)`})
		if err := sqlitedb.Migrate(ctx, c, bad); err == nil {
			t.Fatal("failing migration reported success")
		}
		if v := pragmaInt(t, c, "user_version"); v != n+2 {
			t.Fatalf("user_version after failed migration = %d, want %d", v, n+2)
		}
		var half int
		c.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE name = 'half'`).Scan(&half)
		if half != 0 {
			t.Fatal("failed migration left a table behind")
		}
		// This binary only knows base: the database is now too new for it.
		if err := sqlitedb.Migrate(ctx, c, base); !errors.Is(err, ErrSchemaTooNew) {
			t.Fatalf("older binary: err = %v, want ErrSchemaTooNew", err)
		}
	})
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chatd.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	withWriter(t, s, func(c *sql.Conn) {
		if _, err := c.ExecContext(context.Background(), `PRAGMA user_version = 999`); err != nil {
			t.Fatal(err)
		}
	})
	s.Close()
	s2, err := Open(path)
	if err == nil {
		s2.Close()
	}
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open of a newer schema = %v, want ErrSchemaTooNew", err)
	}
}

func TestDataSurvivesCloseAndOpen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "chatd.db")
	s, c := openAt(t, path)
	a := register(t, s, phone(1), key(1))
	register(t, s, phone(2), key(2))
	code := Code{Phone: phone(3), Hash: []byte("h"), Method: "voice", ExpiresAt: c.Now().Add(10 * 60e9)}
	if err := s.PutCode(ctx, code); err != nil {
		t.Fatal(err)
	}
	m1 := save(t, s, phone(1), phone(2), "c1")
	m2 := save(t, s, phone(1), phone(2), "c2")
	before := pending(t, s, phone(2))
	if _, err := s.Ack(ctx, phone(2), before[0].Seq); err != nil { // m1 delivered
		t.Fatal(err)
	}
	if _, err := s.MarkRead(ctx, phone(2), []int64{m1.ID}); err != nil {
		t.Fatal(err)
	}
	wantP1 := describe(pending(t, s, phone(1)))
	wantP2 := pending(t, s, phone(2))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, _ := openAt(t, path)
	got, err := s2.AccountByDevice(ctx, key(1))
	if err != nil || got.Phone != a.Phone || !got.CreatedAt.Equal(a.CreatedAt) {
		t.Fatalf("account after reopen = %+v, %v; want %+v", got, err, a)
	}
	if gc, err := s2.GetCode(ctx, phone(3)); err != nil || gc.Method != "voice" || !gc.ExpiresAt.Equal(code.ExpiresAt) {
		t.Fatalf("code after reopen = %+v, %v", gc, err)
	}
	r1 := mustMessage(t, s2, m1.ID)
	if r1.DeliveredAt.IsZero() || r1.ReadAt.IsZero() || string(r1.Content) != "hello c1" {
		t.Fatalf("m1 after reopen = %+v", r1)
	}
	if r2 := mustMessage(t, s2, m2.ID); !r2.DeliveredAt.IsZero() {
		t.Fatalf("m2 delivered after reopen: %+v", r2)
	}
	if got := describe(pending(t, s2, phone(1))); strings.Join(got, ",") != strings.Join(wantP1, ",") {
		t.Fatalf("sender queue after reopen = %v, want %v", got, wantP1)
	}
	gotP2 := pending(t, s2, phone(2))
	if len(gotP2) != len(wantP2) || gotP2[0].Seq != wantP2[0].Seq || gotP2[0].Message.ID != m2.ID {
		t.Fatalf("recipient queue after reopen = %+v, want %+v", gotP2, wantP2)
	}
}

// Seqs must never be handed out twice, even when the item holding the
// largest seq was acked (deleted) and the store restarted: a client resuming
// with Pending(afterSeq) would otherwise skip the new item.
func TestSeqAndIDNeverReusedAfterAckAndReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "chatd.db")
	s, _ := openAt(t, path)
	m1 := save(t, s, phone(1), phone(2), "c1")
	it := pending(t, s, phone(2))[0]
	if _, err := s.Ack(ctx, phone(2), it.Seq); err != nil {
		t.Fatal(err)
	}
	rc := pending(t, s, phone(1))[0] // the delivered receipt, now the largest seq
	if _, err := s.Ack(ctx, phone(1), rc.Seq); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.QueueDepth(ctx); n != 0 {
		t.Fatalf("queue depth = %d, want 0", n)
	}
	s.Close()

	s2, _ := openAt(t, path)
	m2 := save(t, s2, phone(1), phone(2), "c2")
	if m2.ID <= m1.ID {
		t.Fatalf("message id reused: %d after %d", m2.ID, m1.ID)
	}
	items, err := s2.Pending(ctx, phone(2), rc.Seq, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].Seq <= rc.Seq {
		t.Fatalf("new item after seq %d: %+v (seq reused?)", rc.Seq, items)
	}
}

func TestPendingQueryUsesRecipientIndex(t *testing.T) {
	s, _ := openTest(t)
	rows, err := s.r.Query(`EXPLAIN QUERY PLAN
		SELECT q.seq FROM queue q JOIN messages m ON m.id = q.message_id
		WHERE q.recipient = ? AND q.seq > ? ORDER BY q.seq LIMIT ?`, "1", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan strings.Builder
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan.WriteString(detail + "\n")
	}
	if !strings.Contains(plan.String(), "queue_by_recipient") || strings.Contains(plan.String(), "TEMP B-TREE") {
		t.Fatalf("Pending does not walk queue_by_recipient in order:\n%s", plan.String())
	}
}
