package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"

	"github.com/chatd-dev/chatd/bizapi/store"
	"github.com/chatd-dev/chatd/internal/keyedlimit"
)

// AdminUser is the user EnsureAdmin creates, with DefaultAdminPassword unless told otherwise.
const (
	AdminUser            = "admin"
	DefaultAdminPassword = "secret"
)

// Password rules of On-Premises (checked on every new password).
const (
	MinPasswordChars = 8
	MaxPasswordChars = 64
)

// maxPasswordBytes is bcrypt's limit.
const maxPasswordBytes = 72

// maxCachedTokens bounds the token cache; past it the cache starts over (tokens reload from the store).
const maxCachedTokens = 10_000

// EnsureAdmin creates the user "admin" with initialPassword ("" → "secret") and MustChange set, so
// that the first login must choose a new password; it does nothing when the user exists.
func EnsureAdmin(ctx context.Context, st store.Store, initialPassword string) error {
	_, err := st.User(ctx, AdminUser)
	if err == nil {
		return nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("api: looking up the admin user: %w", err)
	}
	if initialPassword == "" {
		initialPassword = DefaultAdminPassword
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(initialPassword), BcryptCost)
	if err != nil {
		return fmt.Errorf("api: hashing the admin password: %w", err)
	}
	if err := st.PutUser(ctx, store.User{Name: AdminUser, PasswordHash: hash, MustChange: true, UpdatedAt: time.Now()}); err != nil {
		return fmt.Errorf("api: creating the admin user: %w", err)
	}
	return nil
}

// CheckPassword reports what a new password lacks under the On-Premises rules (8–64 characters,
// at least one digit, one upper-case letter, one lower-case letter and one special character —
// punctuation or a symbol), or nil when it is acceptable.
func CheckPassword(p string) error {
	var missing []string
	n := utf8.RuneCountInString(p)
	if n < MinPasswordChars || n > MaxPasswordChars {
		missing = append(missing, fmt.Sprintf("8 to 64 characters (it has %d)", n))
	} else if len(p) > maxPasswordBytes {
		missing = append(missing, fmt.Sprintf("at most %d bytes in UTF-8 (it has %d)", maxPasswordBytes, len(p)))
	}
	var digit, upper, lower, special bool
	for _, r := range p {
		switch {
		case unicode.IsDigit(r):
			digit = true
		case unicode.IsUpper(r):
			upper = true
		case unicode.IsLower(r):
			lower = true
		case unicode.IsPunct(r) || unicode.IsSymbol(r):
			special = true
		case unicode.IsControl(r):
			return errors.New("new_password contains a control character")
		}
	}
	if !digit {
		missing = append(missing, "a digit")
	}
	if !upper {
		missing = append(missing, "an upper-case letter")
	}
	if !lower {
		missing = append(missing, "a lower-case letter")
	}
	if !special {
		missing = append(missing, "a special character such as !@#$%&*")
	}
	if len(missing) == 0 {
		return nil
	}
	return errors.New("new_password needs " + strings.Join(missing, ", "))
}

// authenticate checks the request's credentials for the route's access.
func (h *Handler) authenticate(r *http.Request, a access) (identity, error) {
	if a == accessOpen {
		return identity{}, nil
	}
	hdr := r.Header.Get("Authorization")
	scheme, cred, _ := strings.Cut(hdr, " ")
	cred = strings.TrimSpace(cred)
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		return h.checkToken(r.Context(), cred)
	case strings.EqualFold(scheme, "Apikey"):
		if a != accessBearerOrAPIKey {
			return identity{}, errUnauthorized("Bearer", "an Apikey is accepted only by GET /v1/health and GET /v1/metrics; "+
				"log in with POST /v1/users/login and send Authorization: Bearer <token>")
		}
		if h.apiKey == nil {
			return identity{}, errUnauthorized("Bearer", "no API key is configured on this bizapi; send Authorization: Bearer <token>")
		}
		sum := sha256.Sum256([]byte(cred))
		if subtle.ConstantTimeCompare(sum[:], h.apiKey[:]) != 1 {
			return identity{}, errUnauthorized("Bearer", "wrong API key")
		}
		return identity{apiKey: true}, nil
	case hdr == "":
		return identity{}, errUnauthorized("Bearer", "the Authorization header is missing; log in with POST /v1/users/login and send Authorization: Bearer <token>")
	}
	return identity{}, errUnauthorized("Bearer", "unsupported Authorization scheme; send Authorization: Bearer <token>")
}

// checkToken accepts a bearer token that exists and has not expired. Validated tokens are cached
// in memory with their expiry, so the store is read once per token, not once per request.
func (h *Handler) checkToken(ctx context.Context, tok string) (identity, error) {
	if tok == "" || len(tok) > 512 {
		return identity{}, errUnauthorized("Bearer", "invalid token; log in again with POST /v1/users/login")
	}
	hash := sha256.Sum256([]byte(tok))
	now := h.now()
	if e, ok := h.tokens.get(hash); ok {
		if now.Before(e.expires) {
			return identity{user: e.user, token: hash}, nil
		}
		h.tokens.remove(hash)
		return identity{}, errUnauthorized("Bearer", "the token expired; log in again with POST /v1/users/login")
	}
	gen := h.tokens.generation()
	t, err := h.store.Token(ctx, hash[:])
	if errors.Is(err, store.ErrNotFound) {
		return identity{}, errUnauthorized("Bearer", "invalid token; log in again with POST /v1/users/login")
	}
	if err != nil {
		return identity{}, storeError("the token could not be checked; retry", fmt.Errorf("reading a token: %w", err))
	}
	if !now.Before(t.ExpiresAt) {
		return identity{}, errUnauthorized("Bearer", "the token expired; log in again with POST /v1/users/login")
	}
	h.tokens.put(hash, tokenEntry{user: t.User, expires: t.ExpiresAt}, gen)
	return identity{user: t.User, token: hash}, nil
}

type loginRequest struct {
	NewPassword *string `json:"new_password"`
}

type loginResponse struct {
	Users []loginUser `json:"users"`
}

type loginUser struct {
	Token        string `json:"token"`
	ExpiresAfter string `json:"expires_after"`
}

// expiresAfterLayout is the On-Premises form of expires_after: "2026-03-08 12:00:00+00:00".
const expiresAfterLayout = "2006-01-02 15:04:05-07:00"

// login: POST /v1/users/login.
func (h *Handler) login(w http.ResponseWriter, r *http.Request, _ identity) error {
	addr := keyedlimit.ClientKey(r.RemoteAddr)
	now := h.now()
	if blocked, wait := h.logins.Blocked(addr, now); blocked {
		return errTooMany(wait, "too many failed logins from this address; retry in %d s", keyedlimit.RetryAfterSeconds(wait))
	}
	name, password, ok := r.BasicAuth()
	if !ok {
		return errUnauthorized("Basic", "send the user name and password with HTTP Basic authentication")
	}
	var req loginRequest
	bp, err := h.readBody(r)
	if err != nil {
		return err
	}
	body := *bp
	if !isBlank(body) {
		err = decodeInto(body, &req)
	}
	putBody(bp)
	if err != nil {
		return err
	}

	// The password rules are public: check them before spending a bcrypt on the credentials.
	if req.NewPassword != nil && *req.NewPassword != "" {
		if err := CheckPassword(*req.NewPassword); err != nil {
			return errInvalid("%v", err)
		}
	}

	u, err := h.store.User(r.Context(), name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return storeError("the login could not be checked; retry", fmt.Errorf("reading user %q: %w", name, err))
	}
	match, err := h.comparePassword(r.Context(), u.PasswordHash, password) // a dummy hash for unknown users: same time
	if err != nil {
		return err
	}
	if u.Name == "" || !match {
		h.logins.Take(addr, now)
		return errUnauthorized("Basic", "wrong user name or password")
	}

	if req.NewPassword == nil || *req.NewPassword == "" {
		if u.MustChange {
			return apiErr(CodePasswordChange, `the password must be changed at the first login; send {"new_password":"…"} `+
				"with 8 to 64 characters including a digit, an upper-case letter, a lower-case letter and a special character")
		}
	} else {
		np := *req.NewPassword
		if np == password {
			return errInvalid("new_password must differ from the current password")
		}
		if err := h.changePassword(r.Context(), u, np); err != nil {
			return err
		}
	}
	return h.issueToken(w, r, u.Name, now)
}

// decodeInto is decode for a body already read.
func decodeInto(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return decodeError(err)
	}
	return nil
}

// dummyHash is compared against when the user does not exist, so that the answer takes as long.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("no such user, no such password"), BcryptCost)
	return h
})

// comparePassword runs bcrypt with at most cap(bcryptSem) comparisons at once.
func (h *Handler) comparePassword(ctx context.Context, hash []byte, password string) (bool, error) {
	if len(hash) == 0 {
		hash = dummyHash()
	}
	select {
	case h.bcryptSem <- struct{}{}:
	case <-ctx.Done():
		return false, errNotReady("the request was cancelled while waiting for a login slot")
	}
	defer func() { <-h.bcryptSem }()
	return bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil, nil
}

func (h *Handler) changePassword(ctx context.Context, u store.User, np string) error {
	select {
	case h.bcryptSem <- struct{}{}:
	case <-ctx.Done():
		return errNotReady("the request was cancelled while waiting for a login slot")
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(np), BcryptCost)
	<-h.bcryptSem
	if err != nil {
		return errInvalid("new_password cannot be used: %v", err)
	}
	u.PasswordHash, u.MustChange, u.UpdatedAt = hash, false, h.now()
	if err := h.store.PutUser(ctx, u); err != nil {
		return storeError("the password was not changed; retry", fmt.Errorf("saving the new password: %w", err))
	}
	// Tokens issued under the old password end with it.
	err = h.store.DeleteUserTokens(ctx, u.Name)
	h.tokens.removeUser(u.Name)
	if err != nil {
		return storeError("the password was changed but older tokens may still work; change it again", fmt.Errorf("deleting the old tokens: %w", err))
	}
	h.log.Info("api: password changed", "user", u.Name)
	return nil
}

func (h *Handler) issueToken(w http.ResponseWriter, r *http.Request, user string, now time.Time) error {
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	tok := base64.RawURLEncoding.EncodeToString(raw[:])
	hash := sha256.Sum256([]byte(tok))
	t := store.Token{Hash: hash[:], User: user, CreatedAt: now, ExpiresAt: now.Add(h.tokenTTL)}
	if err := h.store.PutToken(r.Context(), t); err != nil {
		return storeError("no token was issued; retry", fmt.Errorf("saving a token: %w", err))
	}
	h.tokens.put(hash, tokenEntry{user: user, expires: t.ExpiresAt}, h.tokens.generation())
	if n, err := h.store.DeleteExpiredTokens(r.Context(), now); err != nil {
		h.log.Warn("api: deleting expired tokens", "err", err)
	} else if n > 0 {
		h.log.Debug("api: deleted expired tokens", "count", n)
	}
	return h.writeJSON(w, http.StatusOK, loginResponse{Users: []loginUser{{
		Token: tok, ExpiresAfter: t.ExpiresAt.UTC().Format(expiresAfterLayout),
	}}})
}

// logout: POST /v1/users/logout deletes the token of the request.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request, id identity) error {
	if err := h.store.DeleteToken(r.Context(), id.token[:]); err != nil {
		return storeError("the token was not deleted; retry", fmt.Errorf("deleting a token: %w", err))
	}
	h.tokens.remove(id.token)
	h.writeMeta(w, http.StatusOK)
	return nil
}

// tokenCache holds validated tokens by hash. A removal bumps gen, and put refuses an entry read
// from the store before a removal: a logout racing with the first use of its token cannot leave
// the token cached.
type tokenCache struct {
	mu  sync.RWMutex
	gen uint64                  // guarded by mu
	m   map[[32]byte]tokenEntry // guarded by mu
}

type tokenEntry struct {
	user    string
	expires time.Time
}

func (c *tokenCache) get(k [32]byte) (tokenEntry, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	return e, ok
}

func (c *tokenCache) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

func (c *tokenCache) put(k [32]byte, e tokenEntry, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if len(c.m) >= maxCachedTokens {
		clear(c.m)
	}
	c.m[k] = e
}

func (c *tokenCache) remove(k [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, k)
	c.gen++
}

func (c *tokenCache) removeUser(user string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		if e.user == user {
			delete(c.m, k)
		}
	}
	c.gen++
}
