package store

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

func TestPutAndGetCode(t *testing.T) {
	s, c := openTest(t)
	ctx := context.Background()
	exp := c.Now().Add(10 * time.Minute)
	in := Code{Phone: phone(1), Hash: []byte{1, 2, 3}, Method: "sms", Business: true, DisplayName: "Acme",
		ExpiresAt: exp, Attempts: 7}
	if err := s.PutCode(ctx, in); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetCode(ctx, phone(1))
	if err != nil {
		t.Fatal(err)
	}
	if got.Phone != in.Phone || !bytes.Equal(got.Hash, in.Hash) || got.Method != "sms" || !got.Business ||
		got.DisplayName != "Acme" || !got.ExpiresAt.Equal(exp) || got.Attempts != 0 || !got.CreatedAt.Equal(c.Now()) {
		t.Fatalf("GetCode = %+v, want %+v with Attempts 0 and CreatedAt %v", got, in, c.Now())
	}
	// An explicit CreatedAt is kept.
	in.Phone, in.CreatedAt = phone(2), c.Now().Add(-time.Minute)
	if err := s.PutCode(ctx, in); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetCode(ctx, phone(2)); !got.CreatedAt.Equal(in.CreatedAt) {
		t.Fatalf("CreatedAt = %v, want %v", got.CreatedAt, in.CreatedAt)
	}
}

func TestPutCodeReplacesAndResetsAttempts(t *testing.T) {
	s, c := openTest(t)
	ctx := context.Background()
	if err := s.PutCode(ctx, Code{Phone: phone(1), Hash: []byte("old"), Method: "sms", ExpiresAt: c.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.IncCodeAttempts(ctx, phone(1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutCode(ctx, Code{Phone: phone(1), Hash: []byte("new"), Method: "voice", ExpiresAt: c.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetCode(ctx, phone(1))
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Hash) != "new" || got.Method != "voice" || got.Attempts != 0 || !got.ExpiresAt.Equal(c.Now().Add(time.Hour)) {
		t.Fatalf("replaced code = %+v", got)
	}
}

func TestGetCodeNotFound(t *testing.T) {
	s, _ := openTest(t)
	if _, err := s.GetCode(context.Background(), phone(1)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetCode(missing) = %v, want ErrNotFound", err)
	}
}

func TestIncCodeAttempts(t *testing.T) {
	s, c := openTest(t)
	ctx := context.Background()
	if _, err := s.IncCodeAttempts(ctx, phone(1)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("IncCodeAttempts(missing) = %v, want ErrNotFound", err)
	}
	if err := s.PutCode(ctx, Code{Phone: phone(1), Hash: []byte("h"), Method: "sms", ExpiresAt: c.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 3; want++ {
		n, err := s.IncCodeAttempts(ctx, phone(1))
		if err != nil || n != want {
			t.Fatalf("IncCodeAttempts = %d, %v; want %d", n, err, want)
		}
	}
	if got, _ := s.GetCode(ctx, phone(1)); got.Attempts != 3 {
		t.Fatalf("stored Attempts = %d, want 3", got.Attempts)
	}
}

func TestDeleteCode(t *testing.T) {
	s, c := openTest(t)
	ctx := context.Background()
	for i := 1; i <= 2; i++ {
		if err := s.PutCode(ctx, Code{Phone: phone(i), Hash: []byte("h"), Method: "sms", ExpiresAt: c.Now().Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteCode(ctx, phone(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetCode(ctx, phone(1)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted code still there: %v", err)
	}
	if _, err := s.GetCode(ctx, phone(2)); err != nil {
		t.Fatalf("DeleteCode removed another phone's code: %v", err)
	}
	if err := s.DeleteCode(ctx, phone(1)); err != nil {
		t.Fatalf("deleting a missing code: %v", err)
	}
}

func TestDeleteExpiredCodes(t *testing.T) {
	s, c := openTest(t)
	ctx := context.Background()
	t0 := c.Now()
	put := func(i int, exp time.Time) {
		if err := s.PutCode(ctx, Code{Phone: phone(i), Hash: []byte("h"), Method: "sms", ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
	}
	put(1, t0.Add(-time.Second)) // already expired
	put(2, t0.Add(time.Minute))  // expires at exactly the clock below
	put(3, t0.Add(time.Minute+time.Nanosecond))
	put(4, t0.Add(time.Hour))

	if n, err := s.DeleteExpiredCodes(ctx); err != nil || n != 1 {
		t.Fatalf("DeleteExpiredCodes at t0 = %d, %v; want 1", n, err)
	}
	c.Advance(time.Minute)
	if n, err := s.DeleteExpiredCodes(ctx); err != nil || n != 1 {
		t.Fatalf("DeleteExpiredCodes at t0+1m = %d, %v; want 1 (expiry is inclusive)", n, err)
	}
	for i, want := range map[int]bool{1: false, 2: false, 3: true, 4: true} {
		_, err := s.GetCode(ctx, phone(i))
		if present := err == nil; present != want {
			t.Errorf("code %d present = %v, want %v (err %v)", i, present, want, err)
		}
	}
	if n, err := s.DeleteExpiredCodes(ctx); err != nil || n != 0 {
		t.Fatalf("second DeleteExpiredCodes = %d, %v; want 0", n, err)
	}
}

func TestPutCodeInvalid(t *testing.T) {
	s, c := openTest(t)
	ctx := context.Background()
	ok := Code{Phone: phone(1), Hash: []byte("h"), Method: "sms", ExpiresAt: c.Now().Add(time.Minute)}
	for name, mod := range map[string]func(*Code){
		"bad phone":  func(c *Code) { c.Phone = "+1" },
		"no hash":    func(c *Code) { c.Hash = nil },
		"bad method": func(c *Code) { c.Method = "email" },
		"no expiry":  func(c *Code) { c.ExpiresAt = time.Time{} },
	} {
		code := ok
		mod(&code)
		if err := s.PutCode(ctx, code); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", name, err)
		}
	}
}
