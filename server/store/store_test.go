package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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

// Migration 0003 turns a version-2 database (a queue table with message and receipt rows, triggers,
// AUTOINCREMENT) into pending flags and a receipts table without losing or reordering anything: a
// pending message stays pending under its id, a message read before its ack stays pending and its ack
// queues no receipt, queued receipts keep their order under new seqs above every old id and seq, and
// new ids go on above them.
func TestMigration0003KeepsQueues(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "chatd.db")
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	db, err := sqlitedb.OpenWriter(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := sqlitedb.Migrate(ctx, db, ms[:2]); err != nil {
		t.Fatal(err)
	}
	a, b := phone(1), phone(2)
	for _, q := range []string{
		`INSERT INTO accounts (phone, device_pub, created_at) VALUES ('` + a + `', randomblob(32), 1)`,
		`INSERT INTO accounts (phone, device_pub, created_at) VALUES ('` + b + `', randomblob(32), 1)`,
		// Ids 1 to 4 are used and the queue's seqs are ahead of them; message 4 is gone from neither.
		`INSERT INTO messages (sender, recipient, client_id, content_version, content, created_at) VALUES ('` + a + `', '` + b + `', 'm1', 1, x'01', 10)`,
		`INSERT INTO messages (sender, recipient, client_id, content_version, content, created_at) VALUES ('` + a + `', '` + b + `', 'm2', 1, x'02', 11)`,
		`INSERT INTO messages (sender, recipient, client_id, content_version, content, created_at) VALUES ('` + b + `', '` + a + `', 'm3', 1, x'03', 12)`,
		// m2 delivered and acked: its item is gone, a delivered receipt for a is queued.
		`UPDATE messages SET delivered_at = 20 WHERE client_id = 'm2'`,
		`DELETE FROM queue WHERE kind = 1 AND message_id = (SELECT id FROM messages WHERE client_id = 'm2')`,
		// m3 read before its ack: still queued for a; delivered and read receipts for b.
		`UPDATE messages SET read_at = 30, delivered_at = 30 WHERE client_id = 'm3'`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var oldMax int64
	if err := db.QueryRowContext(ctx, `SELECT max(seq) FROM queue`).Scan(&oldMax); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, _ := openAt(t, path)
	kinds := func(items []Item) string {
		var b strings.Builder
		for _, it := range items {
			if it.Kind == ItemMessage {
				fmt.Fprintf(&b, "msg %s; ", it.Message.ClientID)
			} else {
				fmt.Fprintf(&b, "%s %s; ", it.Receipt.Type, it.Receipt.ClientID)
			}
		}
		return b.String()
	}
	pa, err := s.Pending(ctx, a, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := s.Pending(ctx, b, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := kinds(pa), "msg m3; delivered m2; "; got != want {
		t.Fatalf("a's queue after the migration: %s, want %s", got, want)
	}
	if got, want := kinds(pb), "msg m1; delivered m3; read m3; "; got != want {
		t.Fatalf("b's queue after the migration: %s, want %s", got, want)
	}
	if pa[0].Seq != pa[0].Message.ID || pb[0].Seq != pb[0].Message.ID {
		t.Fatalf("a pending message's seq is not its id: %+v, %+v", pa[0], pb[0])
	}
	if pa[1].Seq <= oldMax || pb[1].Seq <= oldMax || pb[2].Seq <= pb[1].Seq {
		t.Fatalf("receipt seqs %d, %d, %d: want above %d (every old seq) and in their old order", pa[1].Seq, pb[1].Seq, pb[2].Seq, oldMax)
	}
	if pa[1].Receipt.At.UnixNano() != 20 || pb[2].Receipt.At.UnixNano() != 30 {
		t.Fatalf("receipt times changed: %v, %v", pa[1].Receipt.At, pb[2].Receipt.At)
	}
	m := save(t, s, a, b, "m4")
	if m.ID <= max(pa[1].Seq, pb[2].Seq) {
		t.Fatalf("new message id %d not above the migrated seqs", m.ID)
	}
	// m3 was read before its ack: the ack dequeues it and queues nothing.
	notify, err := s.AckBatch(ctx, a, []int64{pa[0].Seq, pa[1].Seq})
	if err != nil || len(notify) != 0 {
		t.Fatalf("ack of m3 and the m2 receipt = %v, %v; want no new receipts", notify, err)
	}
	if pa, _ = s.Pending(ctx, a, 0, 10); len(pa) != 0 {
		t.Fatalf("a's queue after acking everything: %s", kinds(pa))
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

// queryPlan returns SQLite's EXPLAIN QUERY PLAN for q, one step per line.
func queryPlan(t *testing.T, db *sql.DB, q string, args ...any) string {
	t.Helper()
	rows, err := db.Query(`EXPLAIN QUERY PLAN `+q, args...)
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
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return plan.String()
}

func TestPendingQueryUsesIndexes(t *testing.T) {
	s, _ := openTest(t)
	p := queryPlan(t, s.r, selectPending, "1", 0, 10)
	if !strings.Contains(p, "messages USING COVERING INDEX messages_pending") && !strings.Contains(p, "messages USING INDEX messages_pending") ||
		!strings.Contains(p, "SEARCH receipts USING PRIMARY KEY") || strings.Contains(p, "SCAN m") || strings.Contains(p, "SCAN receipts") {
		t.Fatalf("Pending does not search messages_pending and the receipts' key:\n%s", p)
	}
}

// Queuing receipts walks the JSON list and looks each message up by id, never scanning messages.
func TestReceiptInsertLooksUpMessagesByID(t *testing.T) {
	s, _ := openTest(t)
	if p := queryPlan(t, s.r, selectReceipts, 1, 1, 1, 1, "[1,2]", 0); !strings.Contains(p, "SEARCH m USING INTEGER PRIMARY KEY") || strings.Contains(p, "SCAN m") {
		t.Fatalf("the receipts' insert does not look messages up by id:\n%s", p)
	}
}
