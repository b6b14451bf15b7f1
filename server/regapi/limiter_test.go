package regapi

import (
	"fmt"
	"testing"
	"time"
)

func TestKeyedLimiterEvictsIdleKeys(t *testing.T) {
	k := newKeyedLimiter(Limit{Every: time.Second, Burst: 2}, 100)
	now := time.Unix(0, 0)
	for i := range 10 {
		if ok, _ := k.allow(fmt.Sprint(i), now); !ok {
			t.Fatal("first request refused")
		}
	}
	if k.len() != 10 {
		t.Fatalf("%d keys, want 10", k.len())
	}
	k.prune(now.Add(1999 * time.Millisecond))
	if k.len() != 10 {
		t.Fatalf("keys dropped before their buckets refilled: %d left", k.len())
	}
	k.prune(now.Add(2 * time.Second))
	if k.len() != 0 {
		t.Fatalf("%d idle keys kept", k.len())
	}
}

func TestKeyedLimiterCap(t *testing.T) {
	k := newKeyedLimiter(Limit{Every: time.Hour, Burst: 1}, 3)
	now := time.Unix(0, 0)
	for _, key := range []string{"a", "b", "c"} {
		k.allow(key, now)
	}
	if ok, wait := k.allow("a", now); ok || wait != time.Hour {
		t.Fatalf("a: ok=%v wait=%v, want refused for 1h", ok, wait)
	}
	// "d" evicts the least recently used key, which is "b" ("a" was just used).
	k.allow("d", now)
	if k.len() != 3 {
		t.Fatalf("%d keys, cap is 3", k.len())
	}
	if ok, _ := k.allow("b", now); !ok {
		t.Fatal("b was not the evicted key")
	}
	if ok, _ := k.allow("a", now); ok {
		t.Fatal("a was evicted although recently used")
	}
}

func TestDisabledLimiter(t *testing.T) {
	k := newKeyedLimiter(Limit{Every: -1}, 10)
	for range 1000 {
		if ok, _ := k.allow("x", time.Unix(0, 0)); !ok {
			t.Fatal("disabled limiter refused")
		}
	}
	k.prune(time.Now())
}

func TestClientKey(t *testing.T) {
	tests := map[string]string{
		"127.0.0.1:1234":            "127.0.0.1",
		"[::ffff:10.0.0.1]:80":      "10.0.0.1",
		"[2001:db8:1:2:3:4:5:6]:80": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:80": "2001:db8:1:2::/64",
		"[fe80::1%eth0]:80":         "fe80::/64",
		"@":                         "@", // unix sockets and other oddities
	}
	for in, want := range tests {
		if got := clientKey(in); got != want {
			t.Errorf("clientKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 1, time.Millisecond: 1, time.Second: 1, 1001 * time.Millisecond: 2, 30 * time.Second: 30} {
		if got := retryAfterSeconds(d); got != want {
			t.Errorf("retryAfterSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}
