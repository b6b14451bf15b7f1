package api

import (
	"testing"
	"time"
)

// The limiter mechanics are tested in internal/keyedlimit; these check how LoginRate maps onto it.

func TestLoginLimiterMemoryBounded(t *testing.T) {
	l := newLoginLimiter(LoginRate{Burst: 1, Every: time.Minute, MaxAddresses: 3})
	for _, a := range []string{"a", "b", "c", "d"} {
		l.Take(a, t0)
	}
	if n := l.Len(); n != 3 {
		t.Fatalf("%d addresses kept, want 3", n)
	}
	if blocked, wait := l.Blocked("d", t0); !blocked || wait != time.Minute {
		t.Fatalf("d: blocked=%v wait=%v after its one failure, want blocked for 1m", blocked, wait)
	}
}

func TestLoginRateDefaults(t *testing.T) {
	l := newLoginLimiter(LoginRate{})
	for range 10 {
		l.Take("a", t0)
	}
	if blocked, wait := l.Blocked("a", t0); !blocked || wait != 6*time.Second {
		t.Fatalf("after 10 failures: blocked=%v wait=%v, want blocked for 6s", blocked, wait)
	}
	if newLoginLimiter(LoginRate{Every: -1}) != nil {
		t.Fatal("a negative Every did not disable the limit")
	}
}
