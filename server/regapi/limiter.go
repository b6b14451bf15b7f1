package regapi

import (
	"time"

	"github.com/chatd-dev/chatd/internal/keyedlimit"
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

// newKeyedLimiter returns a limiter of l per key remembering at most maxKeys
// keys; nil (no limit) when l.Every < 0.
func newKeyedLimiter(l Limit, maxKeys int) *keyedlimit.Limiter {
	return keyedlimit.New(keyedlimit.Config{Every: l.Every, Burst: l.Burst, MaxKeys: maxKeys})
}
