package store

import (
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestSettings(t *testing.T) {
	s, _ := openTest(t)
	if doc, err := s.Settings(bg0); err != nil || doc != nil {
		t.Fatalf("fresh Settings = %q, %v; want nil, nil", doc, err)
	}
	for _, doc := range []string{`{"a":1}`, `{"b":[1,2]}`} {
		if err := s.SaveSettings(bg0, []byte(doc)); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Settings(bg0); err != nil || string(got) != doc {
			t.Fatalf("Settings = %q, %v; want %s", got, err, doc)
		}
	}
	if err := s.SaveSettings(bg0, []byte(`{"a":`)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("invalid JSON: %v", err)
	}
	if got, _ := s.Settings(bg0); string(got) != `{"b":[1,2]}` {
		t.Fatalf("invalid save changed the document to %q", got)
	}
	if err := s.SaveSettings(bg0, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Settings(bg0); err != nil || got != nil {
		t.Fatalf("after SaveSettings(nil): %q, %v", got, err)
	}
}

func TestUsers(t *testing.T) {
	s, c := openTest(t)
	if _, err := s.User(bg0, "admin"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing user: %v", err)
	}
	if err := s.PutUser(bg0, User{}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("nameless user: %v", err)
	}
	if err := s.PutUser(bg0, User{Name: "admin", PasswordHash: []byte("h1"), MustChange: true}); err != nil {
		t.Fatal(err)
	}
	u, err := s.User(bg0, "admin")
	if err != nil || u.Name != "admin" || string(u.PasswordHash) != "h1" || !u.MustChange || !u.UpdatedAt.Equal(c.Now()) {
		t.Fatalf("User = %+v, %v", u, err)
	}
	at := c.Advance(time.Minute).Add(time.Second)
	if err := s.PutUser(bg0, User{Name: "admin", PasswordHash: []byte("h2"), UpdatedAt: at}); err != nil {
		t.Fatal(err)
	}
	u, _ = s.User(bg0, "admin")
	if string(u.PasswordHash) != "h2" || u.MustChange || !u.UpdatedAt.Equal(at) {
		t.Fatalf("replaced User = %+v", u)
	}
	if _, err := s.User(bg0, "Admin"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("names are case-sensitive: %v", err)
	}
}

func TestTokens(t *testing.T) {
	s, c := openTest(t)
	now := c.Now()
	if _, err := s.Token(bg0, []byte("nope")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing token: %v", err)
	}
	if _, err := s.Token(bg0, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("nil hash: %v", err)
	}
	for _, bad := range []Token{{User: "a"}, {Hash: []byte("x")}} {
		if err := s.PutToken(bg0, bad); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("PutToken(%+v) = %v", bad, err)
		}
	}
	toks := []Token{
		{Hash: []byte("expired-a"), User: "a", ExpiresAt: now.Add(-time.Second)},
		{Hash: []byte("live-a"), User: "a", ExpiresAt: now.Add(time.Hour)},
		{Hash: []byte("forever-a"), User: "a"},
		{Hash: []byte("expired-b"), User: "b", ExpiresAt: now.Add(-time.Hour), CreatedAt: now.Add(-2 * time.Hour)},
		{Hash: []byte("live-b"), User: "b", ExpiresAt: now.Add(time.Hour)},
		{Hash: []byte("exact-b"), User: "b", ExpiresAt: now},
	}
	for _, tk := range toks {
		if err := s.PutToken(bg0, tk); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Token(bg0, []byte("expired-a")) // expired tokens are returned too
	if err != nil || got.User != "a" || !got.ExpiresAt.Equal(now.Add(-time.Second)) || !got.CreatedAt.Equal(now) ||
		!bytes.Equal(got.Hash, []byte("expired-a")) {
		t.Fatalf("Token = %+v, %v", got, err)
	}
	if got, _ := s.Token(bg0, []byte("forever-a")); !got.ExpiresAt.IsZero() {
		t.Fatalf("token without expiry came back with %v", got.ExpiresAt)
	}
	if got, _ := s.Token(bg0, []byte("expired-b")); !got.CreatedAt.Equal(now.Add(-2 * time.Hour)) {
		t.Fatalf("CreatedAt not kept: %v", got.CreatedAt)
	}
	// Expired: strictly before now. Not the one expiring exactly now, not the one without expiry.
	n, err := s.DeleteExpiredTokens(bg0, now)
	if err != nil || n != 2 {
		t.Fatalf("DeleteExpiredTokens = %d, %v; want 2", n, err)
	}
	exists := func(h string) bool {
		_, err := s.Token(bg0, []byte(h))
		if err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	for h, want := range map[string]bool{"expired-a": false, "expired-b": false, "live-a": true, "forever-a": true, "live-b": true, "exact-b": true} {
		if exists(h) != want {
			t.Errorf("after DeleteExpiredTokens: %s exists = %v, want %v", h, !want, want)
		}
	}
	if n, _ := s.DeleteExpiredTokens(bg0, now); n != 0 {
		t.Fatalf("second DeleteExpiredTokens = %d", n)
	}
	if err := s.DeleteToken(bg0, []byte("live-a")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteToken(bg0, []byte("live-a")); err != nil {
		t.Fatalf("deleting an absent token: %v", err)
	}
	if err := s.DeleteUserTokens(bg0, "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUserTokens(bg0, "nobody"); err != nil {
		t.Fatal(err)
	}
	for h, want := range map[string]bool{"live-a": false, "forever-a": true, "live-b": false, "exact-b": false} {
		if exists(h) != want {
			t.Errorf("after deletes: %s exists = %v, want %v", h, !want, want)
		}
	}
	// PutToken with an existing hash replaces it.
	if err := s.PutToken(bg0, Token{Hash: []byte("forever-a"), User: "c", ExpiresAt: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Token(bg0, []byte("forever-a")); got.User != "c" || !got.ExpiresAt.Equal(now.Add(time.Minute)) {
		t.Fatalf("replaced token = %+v", got)
	}
}

func TestAccount(t *testing.T) {
	s, c := openTest(t)
	if _, err := s.Account(bg0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Account before PutAccount: %v", err)
	}
	pending := Account{Phone: "15550000001", Method: "sms", Cert: "CERT", VName: "Acme"}
	if err := s.PutAccount(bg0, pending); err != nil {
		t.Fatal(err)
	}
	got, err := s.Account(bg0)
	if err != nil || !reflect.DeepEqual(got, pending) {
		t.Fatalf("Account = %+v, %v\nwant %+v", got, err, pending)
	}
	var priv, key [32]byte
	for i := range priv {
		priv[i], key[i] = byte(i), byte(255-i)
	}
	at := c.Now()
	done := Account{Phone: "15550000001", Registered: true, Business: true, DisplayName: "Acme Inc",
		DevicePriv: priv, ServerKey: key, Config: []byte(`{"endpoints":["a:5222"]}`), ConfigAt: at.Add(time.Second),
		VerifiedAt: at}
	if err := s.PutAccount(bg0, done); err != nil {
		t.Fatal(err)
	}
	got, err = s.Account(bg0)
	if err != nil || !reflect.DeepEqual(got, done) {
		t.Fatalf("Account = %+v, %v\nwant %+v", got, err, done)
	}
	var n int
	s.r.QueryRow(`SELECT count(*) FROM account`).Scan(&n)
	if n != 1 {
		t.Fatalf("%d account rows", n)
	}
}

func TestLastEndpoint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bizapi.db")
	s, _ := openAt(t, path)
	if ep, err := s.LastEndpoint(bg0); err != nil || ep != "" {
		t.Fatalf("LastEndpoint before any save = %q, %v", ep, err)
	}
	for _, ep := range []string{"chat.example:5222/tcp", "chat.example:443/tls"} {
		if err := s.SaveLastEndpoint(bg0, ep); err != nil {
			t.Fatal(err)
		}
		if got, err := s.LastEndpoint(bg0); err != nil || got != ep {
			t.Fatalf("LastEndpoint = %q, %v; want %q", got, err, ep)
		}
	}
	// A new registration leaves it: the network is the same.
	if err := s.PutAccount(bg0, Account{Phone: "15550000001"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LastEndpoint(bg0); !errors.Is(err, ErrClosed) {
		t.Fatalf("LastEndpoint after Close: %v", err)
	}
	s2, _ := openAt(t, path)
	if got, err := s2.LastEndpoint(bg0); err != nil || got != "chat.example:443/tls" {
		t.Fatalf("after reopen: LastEndpoint = %q, %v", got, err)
	}
	var n int
	s2.r.QueryRow(`SELECT count(*) FROM gateway_state`).Scan(&n)
	if n != 1 {
		t.Fatalf("%d gateway_state rows", n)
	}
}

func TestOperatorKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bizapi.db")
	s, _ := openAt(t, path)
	if k, err := s.OperatorKey(bg0); err != nil || k != nil {
		t.Fatalf("OperatorKey before any pin = %x, %v", k, err)
	}
	a, b := bytes.Repeat([]byte{0xaa}, 32), bytes.Repeat([]byte{0xbb}, 32)
	for _, bad := range [][]byte{{1, 2, 3}, make([]byte, 64)} {
		if err := s.PinOperatorKey(bg0, bad); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("PinOperatorKey(%d bytes) = %v", len(bad), err)
		}
		if _, _, err := s.PinOperatorKeyIfNone(bg0, bad); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("PinOperatorKeyIfNone(%d bytes) = %v", len(bad), err)
		}
	}
	if _, _, err := s.PinOperatorKeyIfNone(bg0, nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("PinOperatorKeyIfNone(nil) = %v", err)
	}

	// Trust on first use: the first key is pinned, a later one is not.
	if k, created, err := s.PinOperatorKeyIfNone(bg0, a); err != nil || !created || !bytes.Equal(k, a) {
		t.Fatalf("first PinOperatorKeyIfNone = %x, %v, %v", k, created, err)
	}
	if k, created, err := s.PinOperatorKeyIfNone(bg0, b); err != nil || created || !bytes.Equal(k, a) {
		t.Fatalf("second PinOperatorKeyIfNone = %x, %v, %v; want the first key kept", k, created, err)
	}
	// A registration replaces it; PutAccount (the config cache) does not touch it.
	if err := s.PinOperatorKey(bg0, b); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAccount(bg0, Account{Phone: "15550000001", Registered: true}); err != nil {
		t.Fatal(err)
	}
	if k, err := s.OperatorKey(bg0); err != nil || !bytes.Equal(k, b) {
		t.Fatalf("OperatorKey = %x, %v; want %x", k, err, b)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OperatorKey(bg0); !errors.Is(err, ErrClosed) {
		t.Fatalf("OperatorKey after Close: %v", err)
	}
	if err := s.PinOperatorKey(bg0, a); !errors.Is(err, ErrClosed) {
		t.Fatalf("PinOperatorKey after Close: %v", err)
	}

	// It survives a reopen; a registration without a key removes it.
	s2, _ := openAt(t, path)
	if k, err := s2.OperatorKey(bg0); err != nil || !bytes.Equal(k, b) {
		t.Fatalf("after reopen: OperatorKey = %x, %v; want %x", k, err, b)
	}
	if err := s2.PinOperatorKey(bg0, nil); err != nil {
		t.Fatal(err)
	}
	if k, err := s2.OperatorKey(bg0); err != nil || k != nil {
		t.Fatalf("after unpinning: OperatorKey = %x, %v", k, err)
	}
	var n int
	s2.r.QueryRow(`SELECT count(*) FROM operator_key`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d operator_key rows", n)
	}
}
