package store

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/internal/testutil"
)

type clock = testutil.Clock

func newClock() *clock {
	return testutil.NewClock(time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC))
}

// openTest opens a fresh store in t.TempDir() with a manual clock.
func openTest(t testing.TB, opts ...Option) (*SQLite, *clock) {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), "bizapi.db"), opts...)
}

func openAt(t testing.TB, path string, opts ...Option) (*SQLite, *clock) {
	t.Helper()
	c := newClock()
	s, err := Open(path, append([]Option{WithClock(c.Now)}, opts...)...)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s, c
}

var bg0 = context.Background()

var farFuture = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)

func payload(s string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"p": s})
	return b
}

func cbOf(s string) *Callback { return &Callback{Payload: payload(s)} }

func msg(id string) Message {
	return Message{ID: id, To: "15550000002", Body: "hello " + id}
}

func addMsg(t testing.TB, s *SQLite, id string) Message {
	t.Helper()
	if err := s.AddMessage(bg0, msg(id)); err != nil {
		t.Fatalf("AddMessage(%s): %v", id, err)
	}
	return mustMessage(t, s, id)
}

func mustMessage(t testing.TB, s *SQLite, id string) Message {
	t.Helper()
	m, err := s.Message(bg0, id)
	if err != nil {
		t.Fatalf("Message(%s): %v", id, err)
	}
	return m
}

// callbacks returns the payloads ("p" values) of every queued callback, in DueCallbacks order.
func callbacks(t testing.TB, s *SQLite) []string {
	t.Helper()
	cbs, err := s.DueCallbacks(bg0, farFuture, 10000, CallbackKey{})
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, cb := range cbs {
		var v map[string]string
		if err := json.Unmarshal(cb.Payload, &v); err != nil {
			t.Fatalf("callback %d payload %q: %v", cb.ID, cb.Payload, err)
		}
		out = append(out, v["p"])
	}
	return out
}

func inbound(i int) Inbound {
	return Inbound{
		ID: fmt.Sprintf("ABGG%04d", i), ServerID: uint64(1000 + i), From: "15550000003", Type: "text",
		Body: fmt.Sprintf("hi %d", i), Content: []byte{1, 2, byte(i)},
		Timestamp: time.Unix(1700000000+int64(i), 0).UTC(),
	}
}

// holdWriter occupies the writer goroutine with an operation that blocks until release is called,
// and returns once the writer is running it. release waits for that operation's commit.
func holdWriter(t testing.TB, s *SQLite) (release func()) {
	t.Helper()
	started, rel := make(chan struct{}), make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- s.exec(bg0, func(*writeStmts) error { close(started); <-rel; return nil })
	}()
	<-started
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(rel)
			if err := <-errc; err != nil {
				t.Errorf("writer hold: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

// waitQueued waits until n operations wait in the writer's channel (the writer is held, so they
// stay there). It yields instead of sleeping; the deadline only turns a bug into a failure.
func waitQueued(t testing.TB, s *SQLite, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for s.gc.Queued() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d operations queued, want %d", s.gc.Queued(), n)
		}
		runtime.Gosched()
	}
}

// result is the outcome of a call started in a goroutine.
type result struct {
	err  error
	flag bool
}

// async runs f in a goroutine and returns the channel of its result.
func async(f func() (bool, error)) <-chan result {
	c := make(chan result, 1)
	go func() {
		flag, err := f()
		c <- result{err: err, flag: flag}
	}()
	return c
}

func asyncErr(f func() error) <-chan result {
	return async(func() (bool, error) { return false, f() })
}
