package gateway_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/base64"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/bizapi/gateway"
	"github.com/chatd-dev/chatd/bizapi/store"
	"github.com/chatd-dev/chatd/internal/sqlitedb"
	"github.com/chatd-dev/chatd/internal/testutil"
	"github.com/chatd-dev/chatd/server/node"
	"github.com/chatd-dev/chatd/server/node/nodetest"
)

// operatorKey returns the operator key pinned in e's store.
func (e *env) operatorKey() ed25519.PublicKey {
	e.t.Helper()
	k, err := e.st.OperatorKey(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

// restartChatd stops e's chatd and starts it again on the same data folder, after removing the key
// files named (chatd generates them anew): the same server, accounts and CA, with new keys.
func (e *env) restartChatd(newKeys ...string) {
	t := e.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.chatd.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, f := range newKeys {
		if err := os.Remove(filepath.Join(e.data, f)); err != nil {
			t.Fatal(err)
		}
	}
	e.chatd = nodetest.Start(t, node.Config{DataDir: e.data})
}

// forgetOperatorKey turns e's stopped store into the database of a bizapi from before operator keys
// were pinned: without the operator_key table, at the schema version before 0003_operator_key. The
// next open migrates it again, with no key pinned.
func (e *env) forgetOperatorKey() {
	t := e.t
	t.Helper()
	db, err := sql.Open("sqlite", sqlitedb.DSN(e.dbPath, false))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`DROP TABLE operator_key; PRAGMA user_version = 2`); err != nil {
		t.Fatal(err)
	}
}

// logTo has the gateway log at Debug into buf.
func logTo(buf *testutil.Buffer) func(*gateway.Config) {
	return func(c *gateway.Config) {
		c.Logger = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
}

// Verify pins the operator key of the server it registered with, and it stays pinned across a
// restart of bizapi.
func TestOperatorKeyPinnedAtRegistration(t *testing.T) {
	n, data := startChatd(t)
	e := &env{t: t, chatd: n, data: data, dbPath: filepath.Join(t.TempDir(), "bizapi.db")}
	var logs testutil.Buffer
	e.openGateway(n.HTTPSURL, logTo(&logs))
	if k := e.operatorKey(); k != nil {
		t.Fatalf("operator key pinned before registration: %x", k)
	}
	e.register()
	if k := e.operatorKey(); len(e.chatd.OperatorKey) != ed25519.PublicKeySize || !e.chatd.OperatorKey.Equal(k) {
		t.Fatalf("pinned operator key %x, want chatd's %x", k, e.chatd.OperatorKey)
	}
	if h := e.gw.Health(); h.ConfigError != "" {
		t.Fatalf("config error after registration: %q", h.ConfigError)
	}
	// Pinned by the verify itself, not on first use by the config fetch after it.
	if l := logs.String(); !strings.Contains(l, "msg=registered") ||
		!strings.Contains(l, `operator_key="`+base64.StdEncoding.EncodeToString(n.OperatorKey)+`"`) ||
		strings.Contains(l, "trust on first use") {
		t.Fatalf("the log does not show the key pinned at verify:\n%s", l)
	}

	e.stop()
	st, err := store.Open(e.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	k, err := st.OperatorKey(context.Background())
	st.Close()
	if err != nil || !bytes.Equal(k, e.chatd.OperatorKey) {
		t.Fatalf("after reopening the store: operator key %x, %v; want %x", k, err, e.chatd.OperatorKey)
	}
	e.openGateway(e.chatd.HTTPSURL)
	e.waitConnected()
	if h := e.gw.Health(); h.ConfigError != "" || !e.chatd.OperatorKey.Equal(e.operatorKey()) {
		t.Fatalf("after a restart: config error %q, operator key %x", h.ConfigError, e.operatorKey())
	}
}

// A server that publishes another operator key after registration does not get it pinned: the key
// pinned at registration stays, and health says why.
func TestOperatorKeyChangedKeepsPinned(t *testing.T) {
	e := newEnv(t)
	e.register()
	pinned := e.operatorKey()
	e.stop()
	e.restartChatd(node.OperatorKeyFile) // same static key, new operator key
	if e.chatd.OperatorKey.Equal(pinned) {
		t.Fatal("chatd kept its operator key")
	}
	var logs testutil.Buffer
	e.openGateway(e.chatd.HTTPSURL, logTo(&logs))
	e.waitConnected() // the static key is unchanged: chat works
	waitUntil(t, "the config error", func() bool { return e.gw.Health().ConfigError != "" })
	if ce := e.gw.Health().ConfigError; !strings.Contains(ce, "different operator key than the one pinned at registration") ||
		strings.Contains(ce, "static key") {
		t.Fatalf("config error %q", ce)
	}
	if k := e.operatorKey(); !bytes.Equal(k, pinned) {
		t.Fatalf("pinned operator key %x, want the one of the registration %x", k, pinned)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "keeping the pinned key") {
		t.Fatalf("no error logged:\n%s", logs.String())
	}

	// A restart of bizapi changes nothing: still the registration's key, still the error.
	e.stop()
	e.openGateway(e.chatd.HTTPSURL)
	e.waitConnected()
	waitUntil(t, "the config error", func() bool { return e.gw.Health().ConfigError != "" })
	if k := e.operatorKey(); !bytes.Equal(k, pinned) {
		t.Fatalf("after a restart: pinned operator key %x, want %x", k, pinned)
	}
}

// An account registered before operator keys were pinned pins the one of its first successful
// config fetch (trust on first use), at INFO, and keeps it.
func TestOperatorKeyTrustOnFirstUse(t *testing.T) {
	e := newEnv(t)
	e.register()
	e.stop()
	e.forgetOperatorKey()
	st, err := store.Open(e.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	k, err := st.OperatorKey(context.Background())
	st.Close()
	if err != nil || k != nil {
		t.Fatalf("the old account's store has operator key %x, %v", k, err)
	}

	var logs testutil.Buffer
	e.openGateway(e.chatd.HTTPSURL, logTo(&logs))
	e.waitConnected()
	waitUntil(t, "the operator key pinned", func() bool { return e.operatorKey() != nil })
	if k := e.operatorKey(); !e.chatd.OperatorKey.Equal(k) {
		t.Fatalf("pinned operator key %x, want chatd's %x", k, e.chatd.OperatorKey)
	}
	if h := e.gw.Health(); h.ConfigError != "" {
		t.Fatalf("config error %q", h.ConfigError)
	}
	var line string
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "trust on first use") {
			line = l
		}
	}
	if !strings.Contains(line, "level=INFO") || !strings.Contains(line, "operator_key=") {
		t.Fatalf("no INFO log of the pin on first use:\n%s", logs.String())
	}

	// From then on it is pinned like one of a registration: another key is not followed.
	first := e.operatorKey()
	e.stop()
	e.restartChatd(node.OperatorKeyFile)
	e.openGateway(e.chatd.HTTPSURL)
	waitUntil(t, "the config error", func() bool { return e.gw.Health().ConfigError != "" })
	if k := e.operatorKey(); !bytes.Equal(k, first) {
		t.Fatalf("pinned operator key %x, want the first one %x", k, first)
	}
}

// Trust on first use needs a config from the server the account trusts: one that publishes another
// static key pins nothing.
func TestOperatorKeyNoFirstUseFromAnotherServer(t *testing.T) {
	e := newEnv(t)
	e.register()
	e.stop()
	e.forgetOperatorKey()
	e.restartChatd(node.StaticKeyFile, node.OperatorKeyFile)
	e.openGateway(e.chatd.HTTPSURL)
	waitUntil(t, "the config error", func() bool { return e.gw.Health().ConfigError != "" })
	if ce := e.gw.Health().ConfigError; !strings.Contains(ce, "different static key") {
		t.Fatalf("config error %q", ce)
	}
	if k := e.operatorKey(); k != nil {
		t.Fatalf("the operator key %x of a server with another static key was pinned", k)
	}
}

// A new registration, here of another number with another server, is a new trust decision: it
// replaces the pinned operator key.
func TestOperatorKeyReplacedByNewRegistration(t *testing.T) {
	e := newEnv(t)
	e.register()
	first := e.operatorKey()
	e.stop()
	n2, data2 := startChatd(t)
	if n2.OperatorKey.Equal(first) {
		t.Fatal("two chatd servers with one operator key")
	}
	e.chatd, e.data = n2, data2
	e.openGateway(n2.HTTPSURL)
	e.registerAs("15550400009")
	if k := e.operatorKey(); !n2.OperatorKey.Equal(k) {
		t.Fatalf("pinned operator key %x, want the new server's %x (the first was %x)", k, n2.OperatorKey, first)
	}
	if h := e.gw.Health(); h.ConfigError != "" {
		t.Fatalf("config error %q", h.ConfigError)
	}
}
