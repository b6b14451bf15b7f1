package regapi

import (
	"container/list"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limit is a token bucket: Burst requests at once, then one more every
// Every. The zero Limit means the default documented on the Config field;
// a negative Every disables the limit. Burst < 1 with a positive Every is
// treated as 1.
type Limit struct {
	Every time.Duration
	Burst int
}

func (l Limit) orDefault(def Limit) Limit {
	if l == (Limit{}) {
		return def
	}
	if l.Every > 0 && l.Burst < 1 {
		l.Burst = 1
	}
	return l
}

// keyedLimiter is one token bucket per key with bounded memory. Keys are
// kept in least-recently-used order; a key unused for long enough that its
// bucket is full again is dropped (nothing is lost: a new bucket starts
// full), and when maxKeys are held the least recently used key is dropped.
type keyedLimiter struct {
	// static after construction
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

// newKeyedLimiter returns nil (no limit) when l.Every < 0.
func newKeyedLimiter(l Limit, maxKeys int) *keyedLimiter {
	if l.Every < 0 {
		return nil
	}
	return &keyedLimiter{
		limit:   rate.Every(l.Every),
		burst:   l.Burst,
		idle:    l.Every * time.Duration(l.Burst),
		maxKeys: maxKeys,
		keys:    make(map[string]*list.Element),
	}
}

// allow takes one token from key's bucket at now. When the bucket is empty
// it takes nothing and returns how long until a token is available.
func (k *keyedLimiter) allow(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	if k == nil {
		return true, 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.pruneLocked(now)
	var e *limiterEntry
	if el, found := k.keys[key]; found {
		e = el.Value.(*limiterEntry)
		k.lru.MoveToFront(el)
	} else {
		for len(k.keys) >= k.maxKeys {
			k.removeLocked(k.lru.Back())
		}
		e = &limiterEntry{key: key, lim: rate.NewLimiter(k.limit, k.burst)}
		k.keys[key] = k.lru.PushFront(e)
	}
	e.last = now
	r := e.lim.ReserveN(now, 1)
	if !r.OK() {
		return false, k.idle
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// prune drops the buckets that are full again.
func (k *keyedLimiter) prune(now time.Time) {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.pruneLocked(now)
}

func (k *keyedLimiter) pruneLocked(now time.Time) {
	for el := k.lru.Back(); el != nil; el = k.lru.Back() {
		if now.Sub(el.Value.(*limiterEntry).last) < k.idle {
			return
		}
		k.removeLocked(el)
	}
}

func (k *keyedLimiter) removeLocked(el *list.Element) {
	delete(k.keys, el.Value.(*limiterEntry).key)
	k.lru.Remove(el)
}

func (k *keyedLimiter) len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.keys)
}

// clientKey is the rate-limit key of a request's peer, taken from
// r.RemoteAddr only: an IPv4 address, or the /64 prefix of an IPv6 address
// (one subscriber usually holds a whole /64).
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
	s := int(math.Ceil(d.Seconds()))
	return max(s, 1)
}
