package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/chatd-dev/chatd/internal/sqlitedb"
)

// Settings returns the stored settings document, nil when never saved (or saved as nil).
func (s *SQLite) Settings(ctx context.Context) (json.RawMessage, error) {
	if err := s.readable(); err != nil {
		return nil, err
	}
	var doc []byte
	err := s.rs.settings.QueryRowContext(ctx).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, s.readErr("settings", err)
	}
	if doc == nil {
		return nil, nil
	}
	return json.RawMessage(doc), nil
}

// SaveSettings replaces the settings document. A non-empty doc must be valid JSON
// (ErrInvalidArgument); nil clears it.
func (s *SQLite) SaveSettings(ctx context.Context, doc json.RawMessage) error {
	if len(doc) > 0 && !json.Valid(doc) {
		return fmt.Errorf("%w: settings document is not valid JSON", ErrInvalidArgument)
	}
	now := s.now().UnixNano()
	return s.exec(ctx, func(w *writeStmts) error {
		if _, err := w.exec(w.saveSettings, nullBytes(doc), now); err != nil {
			return fmt.Errorf("store: save settings: %w", err)
		}
		return nil
	})
}

// User returns a user by name (ErrNotFound).
func (s *SQLite) User(ctx context.Context, name string) (User, error) {
	if err := s.readable(); err != nil {
		return User{}, err
	}
	var (
		u       User
		must    int64
		updated sql.NullInt64
	)
	err := s.rs.user.QueryRowContext(ctx, name).Scan(&u.Name, &u.PasswordHash, &must, &updated)
	if err != nil {
		return User{}, s.readErr("user", err)
	}
	u.MustChange = must != 0
	u.UpdatedAt = sqlitedb.TimeFrom(updated)
	return u, nil
}

// PutUser creates or replaces a user. Name must not be empty; a zero UpdatedAt is set to now.
func (s *SQLite) PutUser(ctx context.Context, u User) error {
	if u.Name == "" {
		return fmt.Errorf("%w: user without name", ErrInvalidArgument)
	}
	updated := s.orNow(u.UpdatedAt).UnixNano()
	return s.exec(ctx, func(w *writeStmts) error {
		if _, err := w.exec(w.putUser, u.Name, bytesArg(u.PasswordHash), boolInt(u.MustChange), updated); err != nil {
			return fmt.Errorf("store: put user: %w", err)
		}
		return nil
	})
}

// PutToken stores a token (replacing one with the same hash). Hash and User must not be empty; a
// zero CreatedAt is set to now; a zero ExpiresAt means the token never expires.
func (s *SQLite) PutToken(ctx context.Context, t Token) error {
	if len(t.Hash) == 0 || t.User == "" {
		return fmt.Errorf("%w: token needs Hash and User", ErrInvalidArgument)
	}
	created := s.orNow(t.CreatedAt).UnixNano()
	return s.exec(ctx, func(w *writeStmts) error {
		if _, err := w.exec(w.putToken, t.Hash, t.User, created, sqlitedb.TimeArg(t.ExpiresAt)); err != nil {
			return fmt.Errorf("store: put token: %w", err)
		}
		return nil
	})
}

// Token returns the token with this hash (ErrNotFound), expired or not.
func (s *SQLite) Token(ctx context.Context, hash []byte) (Token, error) {
	if err := s.readable(); err != nil {
		return Token{}, err
	}
	var (
		t                Token
		created, expires sql.NullInt64
	)
	err := s.rs.token.QueryRowContext(ctx, bytesArg(hash)).Scan(&t.Hash, &t.User, &created, &expires)
	if err != nil {
		return Token{}, s.readErr("token", err)
	}
	t.CreatedAt = sqlitedb.TimeFrom(created)
	t.ExpiresAt = sqlitedb.TimeFrom(expires)
	return t, nil
}

// DeleteToken removes one token; no error if there is none.
func (s *SQLite) DeleteToken(ctx context.Context, hash []byte) error {
	return s.exec(ctx, func(w *writeStmts) error {
		if _, err := w.exec(w.deleteToken, bytesArg(hash)); err != nil {
			return fmt.Errorf("store: delete token: %w", err)
		}
		return nil
	})
}

// DeleteUserTokens removes all of user's tokens.
func (s *SQLite) DeleteUserTokens(ctx context.Context, user string) error {
	return s.exec(ctx, func(w *writeStmts) error {
		if _, err := w.exec(w.deleteUserTokens, user); err != nil {
			return fmt.Errorf("store: delete user tokens: %w", err)
		}
		return nil
	})
}

// DeleteExpiredTokens removes the tokens with ExpiresAt before now and returns how many.
// Tokens without expiry are kept.
func (s *SQLite) DeleteExpiredTokens(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	cut := now.UnixNano()
	err := s.exec(ctx, func(w *writeStmts) error {
		var err error
		if n, err = w.exec(w.deleteExpiredToken, cut); err != nil {
			return fmt.Errorf("store: delete expired tokens: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// Account returns the registration state (ErrNotFound before the first PutAccount).
func (s *SQLite) Account(ctx context.Context) (Account, error) {
	if err := s.readable(); err != nil {
		return Account{}, err
	}
	var (
		a                             Account
		registered, business          int64
		devicePriv, serverKey, config []byte
		configAt, verifiedAt          sql.NullInt64
	)
	err := s.rs.account.QueryRowContext(ctx).Scan(&a.Phone, &a.Method, &a.Cert, &a.VName,
		&registered, &business, &a.DisplayName, &devicePriv, &serverKey, &config, &configAt, &verifiedAt)
	if err != nil {
		return Account{}, s.readErr("account", err)
	}
	if len(devicePriv) != len(a.DevicePriv) || len(serverKey) != len(a.ServerKey) {
		return Account{}, fmt.Errorf("store: account: key of %d/%d bytes, want 32", len(devicePriv), len(serverKey))
	}
	a.Registered = registered != 0
	a.Business = business != 0
	copy(a.DevicePriv[:], devicePriv)
	copy(a.ServerKey[:], serverKey)
	if config != nil {
		a.Config = json.RawMessage(config)
	}
	a.ConfigAt = sqlitedb.TimeFrom(configAt)
	a.VerifiedAt = sqlitedb.TimeFrom(verifiedAt)
	return a, nil
}

// PutAccount replaces the registration state.
func (s *SQLite) PutAccount(ctx context.Context, a Account) error {
	now := s.now().UnixNano()
	return s.exec(ctx, func(w *writeStmts) error {
		_, err := w.exec(w.putAccount, a.Phone, a.Method, a.Cert, a.VName, boolInt(a.Registered),
			boolInt(a.Business), a.DisplayName, a.DevicePriv[:], a.ServerKey[:], nullBytes(a.Config),
			sqlitedb.TimeArg(a.ConfigAt), sqlitedb.TimeArg(a.VerifiedAt), now)
		if err != nil {
			return fmt.Errorf("store: put account: %w", err)
		}
		return nil
	})
}

// LastEndpoint returns the gateway's last good chat endpoint ("" when none was saved).
func (s *SQLite) LastEndpoint(ctx context.Context) (string, error) {
	if err := s.readable(); err != nil {
		return "", err
	}
	var ep string
	err := s.rs.lastEndpoint.QueryRowContext(ctx).Scan(&ep)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", s.readErr("last endpoint", err)
	}
	return ep, nil
}

// SaveLastEndpoint records the gateway's last good chat endpoint.
func (s *SQLite) SaveLastEndpoint(ctx context.Context, endpoint string) error {
	now := s.now().UnixNano()
	return s.exec(ctx, func(w *writeStmts) error {
		if _, err := w.exec(w.saveLastEndpoint, endpoint, now); err != nil {
			return fmt.Errorf("store: save last endpoint: %w", err)
		}
		return nil
	})
}

// operatorKeySize is the length of an Ed25519 public key (ed25519.PublicKeySize).
const operatorKeySize = 32

// OperatorKey returns the pinned operator key, nil when none is pinned.
func (s *SQLite) OperatorKey(ctx context.Context) ([]byte, error) {
	if err := s.readable(); err != nil {
		return nil, err
	}
	var key []byte
	err := s.rs.operatorKey.QueryRowContext(ctx).Scan(&key)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, s.readErr("operator key", err)
	}
	return key, nil
}

// PinOperatorKey replaces the pinned operator key (a new registration); an empty key removes it.
func (s *SQLite) PinOperatorKey(ctx context.Context, key []byte) error {
	if len(key) != 0 && len(key) != operatorKeySize {
		return fmt.Errorf("%w: operator key of %d bytes, want %d", ErrInvalidArgument, len(key), operatorKeySize)
	}
	now := s.now().UnixNano()
	return s.exec(ctx, func(w *writeStmts) error {
		var err error
		if len(key) == 0 {
			_, err = w.exec(w.unpinOperatorKey)
		} else {
			_, err = w.exec(w.pinOperatorKey, key, now)
		}
		if err != nil {
			return fmt.Errorf("store: pin operator key: %w", err)
		}
		return nil
	})
}

// PinOperatorKeyIfNone pins key unless a key is pinned already, and returns the pinned key. The
// check and the insert are one statement, so a concurrent PinOperatorKey is never overwritten.
func (s *SQLite) PinOperatorKeyIfNone(ctx context.Context, key []byte) (pinned []byte, created bool, err error) {
	if len(key) != operatorKeySize {
		return nil, false, fmt.Errorf("%w: operator key of %d bytes, want %d", ErrInvalidArgument, len(key), operatorKeySize)
	}
	now := s.now().UnixNano()
	err = s.exec(ctx, func(w *writeStmts) error {
		n, err := w.exec(w.pinOperatorKeyIfNone, key, now)
		if err != nil {
			return fmt.Errorf("store: pin operator key: %w", err)
		}
		created = n == 1
		if err := w.pinnedOperatorKey.QueryRowContext(bg).Scan(&pinned); err != nil {
			return fmt.Errorf("store: pinned operator key: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return pinned, created, nil
}
