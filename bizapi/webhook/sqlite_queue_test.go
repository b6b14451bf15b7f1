package webhook

import (
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/bizapi/store"
)

// Every dispatcher test also runs on the real SQLite store (callback_persist = true).
func init() {
	queueKinds = append(queueKinds, queueKind{"sqlite", func(t *testing.T) Queue {
		return openStore(t, filepath.Join(t.TempDir(), "bizapi.db"))
	}})
}

func openStore(t *testing.T, path string) *store.SQLite {
	t.Helper()
	s, err := store.Open(path)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// The process stops with requests in flight; a new process opens the same database and delivers
// everything that was pending. Callbacks whose request reached the receiver before the stop are sent
// again (their 2xx never arrived): at-least-once.
func TestRestartWithStoreDeliversPending(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bizapi.db")
	s1 := openStore(t, path)
	testStopRestart(t, s1, func(t *testing.T) Queue {
		if err := s1.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		return openStore(t, path)
	})
}

// The retry state (attempts, next time, last error) survives a restart, and the backoff goes on from
// it.
func TestRestartWithStoreKeepsRetryState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bizapi.db")
	s1 := openStore(t, path)
	var fail atomic.Bool
	fail.Store(true)
	rc := newReceiver(t, func(int, *http.Request, []byte) int {
		if fail.Load() {
			return http.StatusBadGateway
		}
		return http.StatusOK
	})
	h := start(t, s1, Settings{URL: rc.URL(), BackoffDelay: 2 * time.Second})
	h.enqueue(t, payloadN(1))
	failed := func(n int) func() bool {
		return func() bool { p := pending(t, s1); return len(p) == 1 && p[0].Attempts == n }
	}
	eventually(t, "first failed attempt", failed(1))
	h.clock.Set(pending(t, s1)[0].NextAt)
	h.round(t)
	eventually(t, "second failed attempt", failed(2))
	h.stop(t)
	wantNext := pending(t, s1)[0].NextAt
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openStore(t, path)
	p := pending(t, s2)
	if len(p) != 1 || p[0].Attempts != 2 || p[0].LastError != "HTTP 502" || !p[0].NextAt.Equal(wantNext) ||
		string(p[0].Payload) != payloadN(1) {
		t.Fatalf("after reopen: %+v", p)
	}
	if d := wantNext.Sub(h.clock.Now()); d != 4*time.Second {
		t.Errorf("second retry in %v, want 2 × 2s", d)
	}
	fail.Store(false)
	h2 := start(t, s2, Settings{URL: rc.URL(), BackoffDelay: 2 * time.Second})
	h2.clock.Set(wantNext.Add(-time.Millisecond))
	h2.round(t)
	if n := h2.d.started.Load(); n != 0 {
		t.Fatalf("%d started before the stored due time", n)
	}
	h2.clock.Set(wantNext)
	h2.round(t)
	eventually(t, "delivery", func() bool { return len(pending(t, s2)) == 0 })
	reqs := rc.requests()
	if len(reqs) != 3 || reqs[2].header.Get(HeaderAttempt) != "3" {
		t.Errorf("%d requests, last attempt header %q", len(reqs), reqs[len(reqs)-1].header.Get(HeaderAttempt))
	}
}
