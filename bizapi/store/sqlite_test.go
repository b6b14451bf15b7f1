package store

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/internal/sqlitedb"
)

func TestOpenCreatesFile0600AndParentDirs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "bizapi.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	addMsg(t, s, "m1") // make the WAL exist
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s not created: %v", p, err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s mode %v, want 0600 (the account holds a private key)", p, perm)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenEmptyPath(t *testing.T) {
	if _, err := Open(""); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Open(\"\") = %v, want ErrInvalidArgument", err)
	}
}

func TestOpenPathWithURIMetacharacters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "we?ird #dir%20")
	path := filepath.Join(dir, "biz?api.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	addMsg(t, s, "m1")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at the exact path: %v", err)
	}
	s2, _ := openAt(t, path)
	mustMessage(t, s2, "m1")
}

func pragma(t *testing.T, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, name string) string {
	t.Helper()
	var v string
	if err := q.QueryRowContext(bg0, "PRAGMA "+name).Scan(&v); err != nil {
		t.Fatalf("PRAGMA %s: %v", name, err)
	}
	return v
}

func TestPragmasOnWriterAndReaders(t *testing.T) {
	s, _ := openTest(t)
	want := map[string]string{"journal_mode": "wal", "synchronous": "2", "foreign_keys": "1", "busy_timeout": "10000"}
	// The writer's connection is owned by the writer goroutine: look at it from inside an op.
	got := map[string]string{}
	if err := s.exec(bg0, func(w *writeStmts) error {
		for p := range want {
			got[p] = pragma(t, s.wc, p)
		}
		got["query_only"] = pragma(t, s.wc, "query_only")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for p, v := range want {
		if !strings.EqualFold(got[p], v) {
			t.Errorf("writer: PRAGMA %s = %s, want %s", p, got[p], v)
		}
		if r := pragma(t, s.r, p); !strings.EqualFold(r, v) {
			t.Errorf("reader: PRAGMA %s = %s, want %s", p, r, v)
		}
	}
	if got["query_only"] != "0" || pragma(t, s.r, "query_only") != "1" {
		t.Errorf("query_only writer=%s reader=%s, want 0 and 1", got["query_only"], pragma(t, s.r, "query_only"))
	}
}

func TestMigrationFilesAreNumberedContiguously(t *testing.T) {
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].Name != "0001_init.sql" {
		t.Fatalf("migrations = %v", ms)
	}
}

// schema returns the sqlite_master DDL, sorted.
func schema(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query(`SELECT type || ' ' || name || ': ' || coalesce(sql, '') FROM sqlite_master ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		rows.Scan(&s)
		out = append(out, s)
	}
	return out
}

func userVersion(t *testing.T, db *sql.DB) int {
	t.Helper()
	var v int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMigrationsReopenIsNoop(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bizapi.db")
	s, _ := openAt(t, path)
	ms, _ := loadMigrations()
	if v := userVersion(t, s.r); v != len(ms) {
		t.Fatalf("user_version = %d, want %d", v, len(ms))
	}
	before := schema(t, s.r)
	addMsg(t, s, "m1")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, _ := openAt(t, path)
	if v := userVersion(t, s2.r); v != len(ms) {
		t.Fatalf("reopened user_version = %d, want %d", v, len(ms))
	}
	if after := schema(t, s2.r); !slices.Equal(before, after) {
		t.Fatalf("schema changed on reopen:\n%v\n%v", before, after)
	}
	mustMessage(t, s2, "m1")
	// Running the migrations again commits nothing: data_version, as seen by one connection,
	// changes when another connection commits.
	conn, err := s2.r.Conn(bg0)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dv := func() int64 {
		var v int64
		if err := conn.QueryRowContext(bg0, `PRAGMA data_version`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	v0 := dv()
	if err := migrate(bg0, rawDB(t, path)); err != nil {
		t.Fatal(err)
	}
	if v1 := dv(); v1 != v0 {
		t.Fatalf("migrate on an up-to-date database committed something (data_version %d → %d)", v0, v1)
	}
	// …while a real commit does change it (the check above can fail).
	addMsg(t, s2, "m2")
	if dv() == v0 {
		t.Fatal("data_version did not move on a commit")
	}
}

// rawDB opens a second, independent connection pool on the store's file (the store's own writer
// connection belongs to its writer goroutine).
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", sqlitedb.DSN(path, false))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func TestMigrationsSQLIsIdempotent(t *testing.T) {
	s, _ := openTest(t)
	ms, _ := loadMigrations()
	before := schema(t, s.r)
	db := rawDB(t, s.path)
	for _, m := range ms {
		if _, err := db.Exec(m.SQL); err != nil {
			t.Fatalf("re-running %s: %v", m.Name, err)
		}
	}
	if after := schema(t, s.r); !slices.Equal(before, after) {
		t.Fatal("re-running the migrations changed the schema")
	}
}

func TestMigrationRunnerAppliesEachOnceInOrder(t *testing.T) {
	s, _ := openTest(t)
	base, _ := loadMigrations()
	extra := append(slices.Clone(base),
		migration{Version: len(base) + 1, Name: "x_a.sql", SQL: `CREATE TABLE t_a (x INTEGER); INSERT INTO t_a VALUES (1);`},
		migration{Version: len(base) + 2, Name: "x_b.sql", SQL: `INSERT INTO t_a SELECT x + 1 FROM t_a;`},
	)
	for range 2 { // the second run applies nothing
		if err := sqlitedb.Migrate(bg0, rawDB(t, s.path), extra); err != nil {
			t.Fatal(err)
		}
	}
	var sum int
	s.r.QueryRow(`SELECT sum(x) FROM t_a`).Scan(&sum)
	if sum != 3 || userVersion(t, s.r) != len(extra) {
		t.Fatalf("sum = %d (want 3: each once, in order), user_version = %d", sum, userVersion(t, s.r))
	}
	// A failing migration leaves the version and the schema as they were.
	bad := append(slices.Clone(extra), migration{Version: len(extra) + 1, Name: "x_bad.sql",
		SQL: `CREATE TABLE t_c (x INTEGER); INSERT INTO nope VALUES (1);`})
	if err := sqlitedb.Migrate(bg0, rawDB(t, s.path), bad); err == nil {
		t.Fatal("bad migration succeeded")
	}
	var n int
	s.r.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 't_c'`).Scan(&n)
	if n != 0 || userVersion(t, s.r) != len(extra) {
		t.Fatalf("after a failed migration: t_c exists=%d user_version=%d", n, userVersion(t, s.r))
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bizapi.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rawDB(t, path).Exec(`PRAGMA user_version = 999`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := Open(path)
	if err == nil {
		s2.Close()
	}
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open of a newer schema = %v, want ErrSchemaTooNew", err)
	}
}

func TestEverythingSurvivesCloseAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bizapi.db")
	s, c := openAt(t, path)
	ctx := bg0
	at := c.Now()
	if err := s.SaveSettings(ctx, []byte(`{"webhooks":{"url":"https://x"}}`)); err != nil {
		t.Fatal(err)
	}
	u := User{Name: "admin", PasswordHash: []byte("$2a$..."), MustChange: true}
	tok := Token{Hash: []byte("h1"), User: "admin", ExpiresAt: at.Add(time.Hour)}
	acct := Account{Phone: "15550000001", Registered: true, DevicePriv: [32]byte{1}, ServerKey: [32]byte{2},
		Config: []byte(`{"ping":25}`), ConfigAt: at, VerifiedAt: at}
	for _, err := range []error{s.PutUser(ctx, u), s.PutToken(ctx, tok), s.PutAccount(ctx, acct),
		s.AddMessage(ctx, msg("m1")), s.AddMessage(ctx, msg("m2"))} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.MarkSent(ctx, "m1", 77, at, cbOf("sent m1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SaveInbound(ctx, inbound(1), cbOf("in 1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RequestRead(ctx, inbound(1).ID); err != nil {
		t.Fatal(err)
	}
	type snap struct {
		settings string
		user     User
		token    Token
		account  Account
		m1, m2   Message
		in       Inbound
		pending  int
		cbs      []string
		stats    Stats
	}
	take := func(s *SQLite) snap {
		var sn snap
		doc, err := s.Settings(ctx)
		sn.settings = string(doc)
		errs := []error{err}
		sn.user, err = s.User(ctx, "admin")
		errs = append(errs, err)
		sn.token, err = s.Token(ctx, []byte("h1"))
		errs = append(errs, err)
		sn.account, err = s.Account(ctx)
		errs = append(errs, err)
		sn.m1, err = s.Message(ctx, "m1")
		errs = append(errs, err)
		sn.m2, err = s.Message(ctx, "m2")
		errs = append(errs, err)
		sn.in, err = s.Inbound(ctx, inbound(1).ID)
		errs = append(errs, err)
		p, err := s.ReadPending(ctx, 10)
		sn.pending = len(p)
		errs = append(errs, err)
		sn.stats, err = s.Stats(ctx)
		errs = append(errs, err)
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		sn.cbs = callbacks(t, s)
		return sn
	}
	before := take(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, _ := openAt(t, path)
	after := take(s2)
	if !snapEqual(before, after) {
		t.Fatalf("after reopen:\n%+v\nbefore:\n%+v", after, before)
	}
	if before.stats != (Stats{Unsent: 1, PendingCallbacks: 2, Messages: 2, Inbound: 1}) || before.pending != 1 {
		t.Fatalf("unexpected state %+v", before)
	}
	// Seq continues after reopen.
	m3 := addMsg(t, s2, "m3")
	if m3.Seq <= before.m2.Seq {
		t.Fatalf("seq after reopen %d, not above %d", m3.Seq, before.m2.Seq)
	}
}

func snapEqual[T any](a, b T) bool { return reflect.DeepEqual(a, b) }

func TestSeqNeverReusedAfterDelete(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bizapi.db")
	s, _ := openAt(t, path)
	m := addMsg(t, s, "m1")
	// No method deletes messages yet; a retention job would. AUTOINCREMENT must not hand out the
	// deleted row's seq again, or an Unsent cursor would skip the new message.
	if err := s.exec(bg0, func(w *writeStmts) error {
		_, err := s.wc.ExecContext(bg, `DELETE FROM messages WHERE id = 'm1'`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, _ := openAt(t, path)
	if m2 := addMsg(t, s2, "m2"); m2.Seq <= m.Seq {
		t.Fatalf("seq %d reused (deleted row had %d)", m2.Seq, m.Seq)
	}
}

// TestQueryPlansUseIndexes keeps the hot reads off full scans and temp sorts.
func TestQueryPlansUseIndexes(t *testing.T) {
	s, _ := openTest(t)
	for _, tc := range []struct {
		query, index string
	}{
		{`SELECT ` + messageCols + ` FROM messages WHERE status = 'accepted' AND seq > ? ORDER BY seq LIMIT ?`, "messages_unsent"},
		{`SELECT ` + messageCols + ` FROM messages WHERE id = ?`, "sqlite_autoindex_messages_1"},
		{`SELECT ` + inboundCols + ` FROM inbound WHERE read_requested = 1 AND read_sent = 0 ORDER BY received_at, rowid LIMIT ?`, "inbound_read_pending"},
		{`SELECT ` + callbackCols + ` FROM callbacks WHERE next_at <= ? ORDER BY next_at, id LIMIT ?`, "callbacks_by_next_at"},
		{`SELECT min(next_at) FROM callbacks`, "callbacks_by_next_at"},
		{`DELETE FROM tokens WHERE expires_at < ?`, "tokens_by_expiry"},
		{`DELETE FROM tokens WHERE user = ?`, "tokens_by_user"},
		{`SELECT count(*) FROM messages WHERE status = 'accepted'`, "messages_unsent"},
	} {
		rows, err := s.r.Query(`EXPLAIN QUERY PLAN `+tc.query, 1, 2)
		if err != nil {
			t.Fatalf("%s: %v", tc.query, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			rows.Scan(&id, &parent, &notused, &detail)
			plan = append(plan, detail)
		}
		rows.Close()
		all := strings.Join(plan, "; ")
		if !strings.Contains(all, tc.index) || strings.Contains(all, "TEMP B-TREE") {
			t.Errorf("%s\nplan: %s\nwant index %s and no temp b-tree", tc.query, all, tc.index)
		}
	}
}

func TestClosedStore(t *testing.T) {
	s, _ := openTest(t)
	addMsg(t, s, "m1")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if err := s.AddMessage(bg0, msg("m2")); !errors.Is(err, ErrClosed) {
		t.Errorf("AddMessage after Close = %v", err)
	}
	if _, err := s.Message(bg0, "m1"); !errors.Is(err, ErrClosed) {
		t.Errorf("Message after Close = %v", err)
	}
	if _, err := s.Stats(bg0); !errors.Is(err, ErrClosed) {
		t.Errorf("Stats after Close = %v", err)
	}
}
