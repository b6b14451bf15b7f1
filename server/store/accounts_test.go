package store

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

func TestRegisterDeviceCreatesAccount(t *testing.T) {
	s, c := openTest(t)
	ctx := context.Background()
	a, err := s.RegisterDevice(ctx, Account{
		Phone: "15551234567", Business: true, DisplayName: "Acme", DevicePub: key(1),
		CreatedAt: time.Unix(1, 0), // ignored
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Account{Phone: "15551234567", Business: true, DisplayName: "Acme", DevicePub: key(1), CreatedAt: c.Now()}
	if a.Phone != want.Phone || a.Business != want.Business || a.DisplayName != want.DisplayName ||
		!bytes.Equal(a.DevicePub, want.DevicePub) || !a.CreatedAt.Equal(want.CreatedAt) {
		t.Fatalf("RegisterDevice = %+v, want %+v", a, want)
	}
	for name, get := range map[string]func() (Account, error){
		"Account":         func() (Account, error) { return s.Account(ctx, "15551234567") },
		"AccountByDevice": func() (Account, error) { return s.AccountByDevice(ctx, key(1)) },
	} {
		got, err := get()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.Phone != a.Phone || got.Business != a.Business || got.DisplayName != a.DisplayName ||
			!bytes.Equal(got.DevicePub, a.DevicePub) || !got.CreatedAt.Equal(a.CreatedAt) {
			t.Fatalf("%s = %+v, want %+v", name, got, a)
		}
	}
	if a.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt location = %v, want UTC", a.CreatedAt.Location())
	}
}

func TestRegisterDeviceReplacesDevice(t *testing.T) {
	s, c := openTest(t)
	ctx := context.Background()
	first := register(t, s, phone(1), key(1))
	c.Advance(time.Hour)
	second, err := s.RegisterDevice(ctx, Account{Phone: phone(1), Business: true, DisplayName: "New Name", DevicePub: key(2)})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(second.DevicePub, key(2)) || !second.Business || second.DisplayName != "New Name" {
		t.Fatalf("updated account = %+v", second)
	}
	if !second.CreatedAt.Equal(first.CreatedAt) {
		t.Fatalf("CreatedAt changed on update: %v → %v", first.CreatedAt, second.CreatedAt)
	}
	if _, err := s.AccountByDevice(ctx, key(1)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old device key still resolves: err = %v", err)
	}
	if got, err := s.AccountByDevice(ctx, key(2)); err != nil || got.Phone != phone(1) {
		t.Fatalf("new device key = %+v, %v", got, err)
	}
	// The released key can now be bound by another account.
	if a := register(t, s, phone(2), key(1)); a.Phone != phone(2) {
		t.Fatalf("rebinding released key: %+v", a)
	}
	if accts, _, _, _ := s.Stats(ctx); accts != 2 {
		t.Fatalf("accounts = %d, want 2", accts)
	}
}

func TestRegisterDeviceSameKeyAgainIsUpdate(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	register(t, s, phone(1), key(1))
	a, err := s.RegisterDevice(ctx, Account{Phone: phone(1), DevicePub: key(1)})
	if err != nil {
		t.Fatalf("re-registering the same key: %v", err)
	}
	if !bytes.Equal(a.DevicePub, key(1)) {
		t.Fatalf("account = %+v", a)
	}
}

func TestRegisterDeviceInUse(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	register(t, s, phone(1), key(1))
	_, err := s.RegisterDevice(ctx, Account{Phone: phone(2), DevicePub: key(1)})
	if !errors.Is(err, ErrDeviceInUse) {
		t.Fatalf("binding another account's key: err = %v, want ErrDeviceInUse", err)
	}
	if _, err := s.Account(ctx, phone(2)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("failed registration created the account: %v", err)
	}
	// Also when the second account exists already: it keeps its own key.
	register(t, s, phone(2), key(2))
	if _, err := s.RegisterDevice(ctx, Account{Phone: phone(2), DevicePub: key(1)}); !errors.Is(err, ErrDeviceInUse) {
		t.Fatalf("err = %v, want ErrDeviceInUse", err)
	}
	if a, _ := s.Account(ctx, phone(2)); !bytes.Equal(a.DevicePub, key(2)) {
		t.Fatalf("failed rebind changed the key: %x", a.DevicePub)
	}
	if a, _ := s.AccountByDevice(ctx, key(1)); a.Phone != phone(1) {
		t.Fatalf("key(1) now belongs to %q", a.Phone)
	}
}

func TestRegisterDeviceInvalid(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	for name, a := range map[string]Account{
		"empty phone":          {Phone: "", DevicePub: key(1)},
		"plus sign":            {Phone: "+15551234567", DevicePub: key(1)},
		"letters":              {Phone: "1555abc", DevicePub: key(1)},
		"16 digits":            {Phone: "1234567890123456", DevicePub: key(1)},
		"short key":            {Phone: phone(1), DevicePub: key(1)[:31]},
		"nil key":              {Phone: phone(1)},
		"consumer displayname": {Phone: phone(1), DevicePub: key(1), DisplayName: "Bob"},
	} {
		if _, err := s.RegisterDevice(ctx, a); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", name, err)
		}
	}
	if n, _, _, _ := s.Stats(ctx); n != 0 {
		t.Fatalf("invalid registrations created %d accounts", n)
	}
}

func TestAccountNotFound(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	register(t, s, phone(1), key(1))
	if _, err := s.Account(ctx, phone(2)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Account(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := s.AccountByDevice(ctx, key(2)); !errors.Is(err, ErrNotFound) {
		t.Errorf("AccountByDevice(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := s.AccountByDevice(ctx, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("AccountByDevice(nil) = %v, want ErrNotFound", err)
	}
}

func TestLookupAccounts2000(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	// Register every third phone of 2,000 (in one transaction would be
	// faster, but this exercises RegisterDevice as callers use it).
	const n = 2000
	var phones []string
	registered := map[string]bool{}
	for i := range n {
		p := phone(i)
		phones = append(phones, p)
		if i%3 == 0 {
			register(t, s, p, key(i))
			registered[p] = true
		}
	}
	phones = append(phones, phone(0), "not-a-phone", "") // duplicates and junk are tolerated

	// Pin the reader pool to one connection limited to 999 bound variables
	// (the historical SQLITE_MAX_VARIABLE_NUMBER), so an unchunked IN list
	// of 2,000 phones would fail.
	s.r.SetMaxOpenConns(1)
	conn, err := s.r.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sqlite.Limit(conn, sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	got, err := s.LookupAccounts(ctx, phones)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(registered) {
		t.Fatalf("LookupAccounts returned %d accounts, want %d", len(got), len(registered))
	}
	for p := range registered {
		a, ok := got[p]
		if !ok {
			t.Fatalf("registered %s missing", p)
		}
		if a.Phone != p || len(a.DevicePub) != DevicePubSize {
			t.Fatalf("got[%s] = %+v", p, a)
		}
	}
	// The last registered phone sits in the last chunk.
	if _, ok := got[phone(1998)]; !ok {
		t.Fatal("phone in the last chunk missing")
	}
	empty, err := s.LookupAccounts(ctx, nil)
	if err != nil || len(empty) != 0 {
		t.Fatalf("LookupAccounts(nil) = %v, %v", empty, err)
	}
}
