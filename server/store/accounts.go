package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/chatd-dev/chatd/internal/sqlitedb"
)

// DevicePubSize is the length of a device public key (X25519).
const DevicePubSize = 32

// Account is a registered phone number and its one device.
type Account struct {
	Phone       string // E.164 digits without '+', e.g. "15551234567" (primary key)
	Business    bool
	DisplayName string    // verified display name for businesses, "" otherwise
	DevicePub   []byte    // 32-byte X25519 public key of the account's one device
	CreatedAt   time.Time // set by the store when the account is first created
}

// RegisterDevice creates the account if missing, or updates it, and binds
// devicePub as its only device (a previous device key of that account stops
// working). devicePub must be unique across accounts: binding a key already
// bound to another account returns ErrDeviceInUse.
//
// a.CreatedAt is ignored: it is set from the store clock on creation and kept
// on update. Business and DisplayName are overwritten on update. Returns
// ErrInvalidArgument unless a.Phone is 1–15 digits, a.DevicePub is 32 bytes,
// and DisplayName is empty for a non-business account.
func (s *Store) RegisterDevice(ctx context.Context, a Account) (Account, error) {
	if !validPhone(a.Phone) {
		return Account{}, fmt.Errorf("%w: phone %q is not 1-15 digits", ErrInvalidArgument, a.Phone)
	}
	if len(a.DevicePub) != DevicePubSize {
		return Account{}, fmt.Errorf("%w: device key is %d bytes, want %d", ErrInvalidArgument, len(a.DevicePub), DevicePubSize)
	}
	if !a.Business && a.DisplayName != "" {
		return Account{}, fmt.Errorf("%w: display name is for business accounts only", ErrInvalidArgument)
	}
	var out Account
	err := s.exec(ctx, func(w *writeStmts) error {
		var owner string
		err := w.deviceOwner.QueryRowContext(bg, a.DevicePub).Scan(&owner)
		switch {
		case err == nil && owner != a.Phone:
			return ErrDeviceInUse
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("store: register device: %w", err)
		}
		_, err = w.upsertAccount.ExecContext(bg, a.Phone, boolInt(a.Business), a.DisplayName, a.DevicePub, s.now().UnixNano())
		if err != nil {
			if sqlitedb.IsUniqueViolation(err) { // belt and braces: the SELECT above runs under the write lock
				return ErrDeviceInUse
			}
			return fmt.Errorf("store: register device: %w", err)
		}
		out, err = scanAccount(w.accountByPhone.QueryRowContext(bg, a.Phone))
		return err
	})
	if err != nil {
		return Account{}, err
	}
	return out, nil
}

const selectAccount = `SELECT phone, business, display_name, device_pub, created_at FROM accounts`

type rowScanner interface{ Scan(dest ...any) error }

func scanAccount(r rowScanner) (Account, error) {
	var (
		a       Account
		created int64
	)
	err := r.Scan(&a.Phone, &a.Business, &a.DisplayName, &a.DevicePub, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Account{}, ErrNotFound
	}
	if err != nil {
		return Account{}, fmt.Errorf("store: account: %w", err)
	}
	a.CreatedAt = time.Unix(0, created).UTC()
	return a, nil
}

// AccountByDevice returns the account whose current device key is devicePub,
// or ErrNotFound.
func (s *Store) AccountByDevice(ctx context.Context, devicePub []byte) (Account, error) {
	if len(devicePub) != DevicePubSize {
		return Account{}, ErrNotFound
	}
	return scanAccount(s.rs.accountByDevice.QueryRowContext(ctx, devicePub))
}

// Account returns the account of phone, or ErrNotFound.
func (s *Store) Account(ctx context.Context, phone string) (Account, error) {
	return scanAccount(s.rs.accountByPhone.QueryRowContext(ctx, phone))
}

// LookupAccounts returns the registered accounts among phones, keyed by
// phone. Unregistered phones are absent from the map; duplicates are fine.
// Any number of phones is accepted: the query is split into chunks.
func (s *Store) LookupAccounts(ctx context.Context, phones []string) (map[string]Account, error) {
	out := make(map[string]Account)
	uniq := make([]string, 0, len(phones))
	seen := make(map[string]struct{}, len(phones))
	for _, p := range phones {
		if _, ok := seen[p]; ok || !validPhone(p) {
			continue
		}
		seen[p] = struct{}{}
		uniq = append(uniq, p)
	}
	if len(uniq) == 1 { // the common case (the sender of a batch of deliveries): a prepared statement
		a, err := s.Account(ctx, uniq[0])
		switch {
		case err == nil:
			out[a.Phone] = a
		case !errors.Is(err, ErrNotFound):
			return nil, err
		}
		return out, nil
	}
	for len(uniq) > 0 {
		n := min(len(uniq), lookupChunk)
		chunk := uniq[:n]
		uniq = uniq[n:]
		args := make([]any, len(chunk))
		for i, p := range chunk {
			args[i] = p
		}
		q := selectAccount + ` WHERE phone IN (?` + strings.Repeat(",?", len(chunk)-1) + `)`
		if err := func() error {
			rows, err := s.r.QueryContext(ctx, q, args...)
			if err != nil {
				return fmt.Errorf("store: lookup accounts: %w", err)
			}
			defer rows.Close()
			for rows.Next() {
				a, err := scanAccount(rows)
				if err != nil {
					return err
				}
				out[a.Phone] = a
			}
			return rows.Err()
		}(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
