package keyedlimit

import (
	"fmt"
	"testing"
	"time"
)

var t0 = time.Unix(0, 0)

func TestEvictsIdleKeys(t *testing.T) {
	l := New(Config{Every: time.Second, Burst: 2, MaxKeys: 100})
	for i := range 10 {
		if ok, _ := l.Allow(fmt.Sprint(i), t0); !ok {
			t.Fatal("first request refused")
		}
	}
	if l.Len() != 10 {
		t.Fatalf("%d keys, want 10", l.Len())
	}
	l.Prune(t0.Add(1999 * time.Millisecond))
	if l.Len() != 10 {
		t.Fatalf("keys dropped before their buckets refilled: %d left", l.Len())
	}
	l.Prune(t0.Add(2 * time.Second))
	if l.Len() != 0 {
		t.Fatalf("%d idle keys kept", l.Len())
	}
}

func TestMaxKeys(t *testing.T) {
	l := New(Config{Every: time.Hour, Burst: 1, MaxKeys: 3})
	for _, key := range []string{"a", "b", "c"} {
		l.Allow(key, t0)
	}
	if ok, wait := l.Allow("a", t0); ok || wait != time.Hour {
		t.Fatalf("a: ok=%v wait=%v, want refused for 1h", ok, wait)
	}
	// "d" evicts the least recently used key, which is "b" ("a" was just used).
	l.Allow("d", t0)
	if l.Len() != 3 {
		t.Fatalf("%d keys, cap is 3", l.Len())
	}
	if ok, _ := l.Allow("b", t0); !ok {
		t.Fatal("b was not the evicted key")
	}
	if ok, _ := l.Allow("a", t0); ok {
		t.Fatal("a was evicted although recently used")
	}
}

// Take and Blocked count only some events (failed logins) while checking all.
func TestTakeAndBlocked(t *testing.T) {
	l := New(Config{Every: time.Minute, Burst: 1, MaxKeys: 3})
	for _, a := range []string{"a", "b", "c", "d"} {
		l.Take(a, t0)
	}
	if n := l.Len(); n != 3 {
		t.Fatalf("%d keys kept, want 3", n)
	}
	if blocked, _ := l.Blocked("a", t0); blocked {
		t.Fatal("the least recent key was not dropped")
	}
	if blocked, wait := l.Blocked("d", t0.Add(15*time.Second)); !blocked || wait != 45*time.Second {
		t.Fatalf("d: blocked=%v wait=%v, want blocked for 45s", blocked, wait)
	}
	if l.Len() != 3 {
		t.Fatal("Blocked changed the keys")
	}
	if blocked, _ := l.Blocked("d", t0.Add(time.Minute)); blocked || l.Len() != 0 {
		t.Fatalf("refilled buckets kept: %d", l.Len())
	}
}

func TestBurst(t *testing.T) {
	l := New(Config{Every: time.Second, Burst: 3})
	for i := range 3 {
		if ok, _ := l.Allow("k", t0); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	if ok, wait := l.Allow("k", t0); ok || wait != time.Second {
		t.Fatalf("past the burst: ok=%v wait=%v, want refused for 1s", ok, wait)
	}
	if ok, _ := l.Allow("k", t0.Add(time.Second)); !ok {
		t.Fatal("refilled token refused")
	}
}

func TestDefaults(t *testing.T) {
	l := New(Config{Every: time.Second})
	if l.burst != 1 || l.maxKeys != DefaultMaxKeys {
		t.Fatalf("burst %d, max keys %d; want 1 and %d", l.burst, l.maxKeys, DefaultMaxKeys)
	}
}

func TestDisabled(t *testing.T) {
	for _, every := range []time.Duration{-1, 0} {
		l := New(Config{Every: every, Burst: 10, MaxKeys: 10})
		if l != nil {
			t.Fatalf("Every %v: got a limiter, want nil (no limit)", every)
		}
		for range 1000 {
			if ok, _ := l.Allow("x", t0); !ok {
				t.Fatal("disabled limiter refused")
			}
			l.Take("x", t0)
		}
		if blocked, _ := l.Blocked("x", t0); blocked {
			t.Fatal("disabled limiter blocked")
		}
		l.Prune(time.Now())
		if l.Len() != 0 {
			t.Fatal("disabled limiter remembers keys")
		}
	}
}

func TestClientKey(t *testing.T) {
	tests := map[string]string{
		"127.0.0.1:1234":             "127.0.0.1",
		"[::ffff:10.0.0.1]:80":       "10.0.0.1",
		"[::ffff:192.0.2.1]:1":       "192.0.2.1",
		"[2001:db8:1:2:3:4:5:6]:80":  "2001:db8:1:2::/64",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:80":  "2001:db8:1:2::/64",
		"[fe80::1%eth0]:80":          "fe80::/64",
		"@":                          "@", // unix sockets and other oddities
	}
	for in, want := range tests {
		if got := ClientKey(in); got != want {
			t.Errorf("ClientKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 1, time.Millisecond: 1, time.Second: 1, 1001 * time.Millisecond: 2, 30 * time.Second: 30} {
		if got := RetryAfterSeconds(d); got != want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}
