package client

import (
	"testing"
	"time"
)

func TestBackoffBounds(t *testing.T) {
	lo, hi := 500*time.Millisecond, 30*time.Second
	for n := range 40 {
		ceil := min(hi, lo<<min(n, 16))
		for range 200 {
			d := backoff(n, lo, hi)
			if d < lo/2 || d > ceil {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, lo/2, ceil)
			}
		}
	}
	// Full jitter: late attempts spread over the whole range instead of clustering at the cap.
	var below int
	for range 1000 {
		if backoff(20, lo, hi) < hi/2 {
			below++
		}
	}
	if below < 300 || below > 700 {
		t.Fatalf("%d of 1000 delays below half the cap; want about half (full jitter)", below)
	}
}

func TestRecentEvictsOldest(t *testing.T) {
	r := newRecent(3)
	for id := uint64(1); id <= 4; id++ {
		r.add(id)
	}
	if r.seen(1) || !r.seen(2) || !r.seen(4) {
		t.Fatalf("after adding 1..4 to a set of 3: seen(1)=%v seen(2)=%v seen(4)=%v", r.seen(1), r.seen(2), r.seen(4))
	}
}

func TestNewRejectsIncompleteConfig(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Addrs: []string{"x:5222"}},
		{Addrs: []string{"x:5222"}, ServerKey: [32]byte{1}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted an incomplete config", cfg)
		}
	}
}

func TestClientIDsAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 10000 {
		id := NewClientID()
		if seen[id] || len(id) != 20 {
			t.Fatalf("client id %q repeated or malformed", id)
		}
		seen[id] = true
	}
}
