package api

import (
	"time"

	"github.com/chatd-dev/chatd/internal/keyedlimit"
)

// LoginRate limits failed logins per client address: Burst failures at once, then one more every
// Every. While an address has no failure left, every login from it — right or wrong — answers 429
// with code 1015 and Retry-After, so a password cannot be guessed faster than the rate. Successful
// logins cost nothing. The address is r.RemoteAddr only (X-Forwarded-For is not trusted); an IPv6
// client is keyed by its /64.
type LoginRate struct {
	// Burst is the failed logins allowed in a row. If zero, 10.
	Burst int
	// Every is how often one more failure is allowed once the burst is spent. If zero, 6 s (ten a
	// minute); negative disables the limit.
	Every time.Duration
	// MaxAddresses bounds the addresses remembered (the least recently failing is forgotten
	// first). If zero, 10,000.
	MaxAddresses int
}

// newLoginLimiter returns the limiter of failed logins per address (keyedlimit.ClientKey), nil if
// c disables it. A login checks it with Blocked; a failed one Takes a token.
func newLoginLimiter(c LoginRate) *keyedlimit.Limiter {
	if c.Every == 0 {
		c.Every = 6 * time.Second
	}
	if c.Burst <= 0 {
		c.Burst = 10
	}
	if c.MaxAddresses <= 0 {
		c.MaxAddresses = 10_000
	}
	return keyedlimit.New(keyedlimit.Config{Every: c.Every, Burst: c.Burst, MaxKeys: c.MaxAddresses})
}
