// Package keyedlimit is a token-bucket rate limiter per key (a client address, a phone number) with
// bounded memory, built on golang.org/x/time/rate.
//
// Each key has its own bucket of Config.Burst tokens that refills at one token every Config.Every.
// Keys are kept in least-recently-used order. A key unused long enough for its bucket to be full
// again is forgotten (nothing is lost: a new bucket starts full); when Config.MaxKeys keys are held,
// the least recently used one is forgotten to make room.
//
// Every method takes the current time, so that callers with their own clock (tests) control it. A
// nil *Limiter has no limit: it allows everything and remembers nothing.
package keyedlimit

import (
	"container/list"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxKeys is the number of keys remembered when Config.MaxKeys is zero.
const DefaultMaxKeys = 10_000

// Config configures a Limiter. There is no default rate: the caller decides what is limited.
type Config struct {
	// Every is how often a key gets one more token once its burst is spent. Zero or negative means
	// no limit: New returns nil.
	Every time.Duration
	// Burst is how many tokens a key's bucket holds (and a new key starts with). If less than 1, 1.
	Burst int
	// MaxKeys bounds the keys remembered; past it the least recently used key is forgotten. If zero
	// or negative, DefaultMaxKeys.
	MaxKeys int
}

// Limiter holds one token bucket per key. It is safe for concurrent use.
type Limiter struct {
	// Static after New.
	limit   rate.Limit
	burst   int
	idle    time.Duration // time for an empty bucket to refill
	maxKeys int

	mu   sync.Mutex
	lru  list.List                // guarded by mu; of *entry, front = most recently used
	keys map[string]*list.Element // guarded by mu
}

type entry struct {
	key  string
	lim  *rate.Limiter
	last time.Time // last use: Allow or Take
}

// New returns a Limiter for c, or nil (no limit) when c.Every is zero or negative.
func New(c Config) *Limiter {
	if c.Every <= 0 {
		return nil
	}
	if c.Burst < 1 {
		c.Burst = 1
	}
	if c.MaxKeys <= 0 {
		c.MaxKeys = DefaultMaxKeys
	}
	return &Limiter{
		limit:   rate.Every(c.Every),
		burst:   c.Burst,
		idle:    c.Every * time.Duration(c.Burst),
		maxKeys: c.MaxKeys,
		keys:    make(map[string]*list.Element),
	}
}

// Allow takes one token from key's bucket at now. When the bucket is empty it takes nothing and
// returns false with how long until a token is available.
func (l *Limiter) Allow(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.useLocked(key, now)
	r := e.lim.ReserveN(now, 1)
	if !r.OK() {
		return false, l.idle
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// Take takes one token from key's bucket at now if it has one. With Blocked it limits only some
// events (failed logins, say) while every event is checked: call Blocked first, Take when the
// event turned out to count.
func (l *Limiter) Take(key string, now time.Time) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.useLocked(key, now).lim.AllowN(now, 1)
}

// Blocked reports whether key's bucket is empty at now, and if so how long until it has a token.
// It takes nothing and does not count as a use of key.
func (l *Limiter) Blocked(key string, now time.Time) (blocked bool, retryAfter time.Duration) {
	if l == nil {
		return false, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pruneLocked(now)
	el, ok := l.keys[key]
	if !ok {
		return false, 0
	}
	tokens := el.Value.(*entry).lim.TokensAt(now)
	if tokens >= 1 {
		return false, 0
	}
	wait := time.Duration((1 - tokens) / float64(l.limit) * float64(time.Second))
	return true, max(wait, time.Millisecond)
}

// Prune forgets the keys whose buckets are full again at now. Every other method does so too;
// call Prune periodically to free the memory of keys that are not used again.
func (l *Limiter) Prune(now time.Time) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pruneLocked(now)
}

// Len is the number of keys remembered.
func (l *Limiter) Len() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

// useLocked prunes, then returns key's entry, created (evicting the least recently used key if
// full) when missing, and marks it used at now.
func (l *Limiter) useLocked(key string, now time.Time) *entry {
	l.pruneLocked(now)
	var e *entry
	if el, ok := l.keys[key]; ok {
		e = el.Value.(*entry)
		l.lru.MoveToFront(el)
	} else {
		for len(l.keys) >= l.maxKeys {
			l.removeLocked(l.lru.Back())
		}
		e = &entry{key: key, lim: rate.NewLimiter(l.limit, l.burst)}
		l.keys[key] = l.lru.PushFront(e)
	}
	e.last = now
	return e
}

func (l *Limiter) pruneLocked(now time.Time) {
	for el := l.lru.Back(); el != nil; el = l.lru.Back() {
		if now.Sub(el.Value.(*entry).last) < l.idle {
			return
		}
		l.removeLocked(el)
	}
}

func (l *Limiter) removeLocked(el *list.Element) {
	delete(l.keys, el.Value.(*entry).key)
	l.lru.Remove(el)
}

// ClientKey is the key of a peer given its address (an http.Request's RemoteAddr, host:port): its
// IPv4 address, or the /64 prefix of its IPv6 address, since one subscriber usually holds a whole
// /64. An IPv4-mapped IPv6 address counts as IPv4; an address that does not parse is its own key.
func ClientKey(remoteAddr string) string {
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

// RetryAfterSeconds rounds d up to whole seconds, at least 1: the value of a Retry-After header.
func RetryAfterSeconds(d time.Duration) int {
	return max(int(math.Ceil(d.Seconds())), 1)
}
