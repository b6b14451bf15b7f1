package api

import (
	"container/list"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
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

// loginLimiter is one token bucket per address with bounded memory. An address whose bucket is
// full again is forgotten (a new bucket starts full, so nothing is lost).
type loginLimiter struct {
	// Static after construction; nil *loginLimiter means no limit.
	limit   rate.Limit
	burst   int
	idle    time.Duration // time for an empty bucket to refill
	maxKeys int

	mu   sync.Mutex
	lru  list.List                // guarded by mu; of *limiterEntry, front = most recent
	keys map[string]*list.Element // guarded by mu
}

type limiterEntry struct {
	key  string
	lim  *rate.Limiter
	last time.Time
}

func newLoginLimiter(c LoginRate) *loginLimiter {
	if c.Every < 0 {
		return nil
	}
	if c.Every == 0 {
		c.Every = 6 * time.Second
	}
	if c.Burst <= 0 {
		c.Burst = 10
	}
	if c.MaxAddresses <= 0 {
		c.MaxAddresses = 10_000
	}
	return &loginLimiter{
		limit:   rate.Every(c.Every),
		burst:   c.Burst,
		idle:    c.Every * time.Duration(c.Burst),
		maxKeys: c.MaxAddresses,
		keys:    make(map[string]*list.Element),
	}
}

// blocked reports whether key has no failure left at now, and how long until it has one.
func (l *loginLimiter) blocked(key string, now time.Time) (time.Duration, bool) {
	if l == nil {
		return 0, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pruneLocked(now)
	el, ok := l.keys[key]
	if !ok {
		return 0, false
	}
	tokens := el.Value.(*limiterEntry).lim.TokensAt(now)
	if tokens >= 1 {
		return 0, false
	}
	wait := time.Duration((1 - tokens) / float64(l.limit) * float64(time.Second))
	return max(wait, time.Millisecond), true
}

// failed takes one failure from key's bucket.
func (l *loginLimiter) failed(key string, now time.Time) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pruneLocked(now)
	var e *limiterEntry
	if el, ok := l.keys[key]; ok {
		e = el.Value.(*limiterEntry)
		l.lru.MoveToFront(el)
	} else {
		for len(l.keys) >= l.maxKeys {
			l.removeLocked(l.lru.Back())
		}
		e = &limiterEntry{key: key, lim: rate.NewLimiter(l.limit, l.burst)}
		l.keys[key] = l.lru.PushFront(e)
	}
	e.last = now
	e.lim.AllowN(now, 1)
}

func (l *loginLimiter) pruneLocked(now time.Time) {
	for el := l.lru.Back(); el != nil; el = l.lru.Back() {
		if now.Sub(el.Value.(*limiterEntry).last) < l.idle {
			return
		}
		l.removeLocked(el)
	}
}

func (l *loginLimiter) removeLocked(el *list.Element) {
	delete(l.keys, el.Value.(*limiterEntry).key)
	l.lru.Remove(el)
}

// clientKey is the limiter key of a peer: its IPv4 address or the /64 of its IPv6 address.
func clientKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.String()
	}
	return addr.String()
}

// retryAfterSeconds rounds d up to whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) int {
	return max(int(math.Ceil(d.Seconds())), 1)
}
