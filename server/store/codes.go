package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Code is a pending phone verification: the hash of the code sent to Phone
// and what the account will look like once verified.
type Code struct {
	Phone       string
	Hash        []byte // hash of the verification code (the caller hashes)
	Method      string // "sms" | "voice"
	Business    bool
	DisplayName string
	ExpiresAt   time.Time
	Attempts    int // failed verify attempts so far
	CreatedAt   time.Time
}

// PutCode stores c, replacing any previous code for c.Phone; Attempts is
// reset to 0 whatever c.Attempts says. A zero c.CreatedAt is set from the
// store clock. Returns ErrInvalidArgument unless Phone is 1–15 digits, Hash
// is non-empty, Method is "sms" or "voice", and ExpiresAt is set.
func (s *Store) PutCode(ctx context.Context, c Code) error {
	switch {
	case !validPhone(c.Phone):
		return fmt.Errorf("%w: phone %q is not 1-15 digits", ErrInvalidArgument, c.Phone)
	case len(c.Hash) == 0:
		return fmt.Errorf("%w: empty code hash", ErrInvalidArgument)
	case c.Method != "sms" && c.Method != "voice":
		return fmt.Errorf("%w: code method %q, want sms or voice", ErrInvalidArgument, c.Method)
	case c.ExpiresAt.IsZero():
		return fmt.Errorf("%w: code without expiry", ErrInvalidArgument)
	}
	created := c.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	return s.exec(ctx, func(w *writeStmts) error {
		_, err := w.putCode.ExecContext(bg, c.Phone, c.Hash, c.Method, boolInt(c.Business), c.DisplayName,
			c.ExpiresAt.UnixNano(), created.UnixNano())
		if err != nil {
			return fmt.Errorf("store: put code: %w", err)
		}
		return nil
	})
}

// GetCode returns the code pending for phone, or ErrNotFound. An expired code
// is still returned until DeleteCode or DeleteExpiredCodes removes it, so the
// caller can tell "expired" from "never requested".
func (s *Store) GetCode(ctx context.Context, phone string) (Code, error) {
	var (
		c                Code
		expires, created int64
	)
	err := s.r.QueryRowContext(ctx, `
		SELECT phone, hash, method, business, display_name, expires_at, attempts, created_at
		FROM codes WHERE phone = ?`, phone).
		Scan(&c.Phone, &c.Hash, &c.Method, &c.Business, &c.DisplayName, &expires, &c.Attempts, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Code{}, ErrNotFound
	}
	if err != nil {
		return Code{}, fmt.Errorf("store: get code: %w", err)
	}
	c.ExpiresAt = time.Unix(0, expires).UTC()
	c.CreatedAt = time.Unix(0, created).UTC()
	return c, nil
}

// IncCodeAttempts adds one failed attempt to phone's code and returns the new
// count, or ErrNotFound if there is no code.
func (s *Store) IncCodeAttempts(ctx context.Context, phone string) (int, error) {
	var n int
	err := s.exec(ctx, func(w *writeStmts) error {
		err := w.incCodeAttempts.QueryRowContext(bg, phone).Scan(&n)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("store: inc code attempts: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// DeleteCode removes phone's code. Deleting a missing code is not an error.
func (s *Store) DeleteCode(ctx context.Context, phone string) error {
	return s.exec(ctx, func(w *writeStmts) error {
		if _, err := w.deleteCode.ExecContext(bg, phone); err != nil {
			return fmt.Errorf("store: delete code: %w", err)
		}
		return nil
	})
}

// DeleteExpiredCodes removes every code whose ExpiresAt is at or before the
// store clock's now, and returns how many it removed.
func (s *Store) DeleteExpiredCodes(ctx context.Context) (int64, error) {
	var n int64
	err := s.exec(ctx, func(w *writeStmts) error {
		res, err := w.deleteExpiredCds.ExecContext(bg, s.now().UnixNano())
		if err != nil {
			return fmt.Errorf("store: delete expired codes: %w", err)
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
