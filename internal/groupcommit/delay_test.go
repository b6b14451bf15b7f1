package groupcommit

import (
	"testing"
	"time"
)

// submit queues add(v) and returns a channel with its result.
func (d *testDB) submit(t testing.TB, v int) <-chan error {
	t.Helper()
	res := make(chan error, 1)
	if err := d.w.Submit(bg0, add(v), func(err error) { res <- err }); err != nil {
		t.Fatal(err)
	}
	return res
}

// within waits for an operation's result, failing the test after 10 s (an operation that waits out an
// hour-long commit delay).
func within(t testing.TB, res <-chan error, what string) {
	t.Helper()
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not committed after 10 s: it waited for company", what)
	}
}

// streaming commits vs in one transaction, as when several producers are writing.
func (d *testDB) streaming(t testing.TB, vs ...int) {
	t.Helper()
	release := d.hold(t)
	var rs []<-chan error
	for _, v := range vs {
		rs = append(rs, d.submit(t, v))
	}
	d.waitQueued(t, len(vs))
	release()
	for _, r := range rs {
		within(t, r, "streaming write")
	}
}

// TestCommitDelayJoinsStreamingWrites: an operation that arrives right after a COMMIT waits for
// company, and the next one joins its transaction although it was queued after the writer took the
// first (without the delay each runs in its own transaction); the wait ends when the batch reaches
// DelayBelow, not at the (hour-long) delay.
func TestCommitDelayJoinsStreamingWrites(t *testing.T) {
	d := openTest(t, Config{CommitDelay: time.Hour, DelayBelow: 2})
	waiting := make(chan struct{}, 1)
	d.w.testWaits = func() { waiting <- struct{}{} } // before the first Submit: no race with the writer
	d.streaming(t, 1, 4, 5)
	base := d.w.Stats()
	b := d.submit(t, 2)
	select {
	case <-waiting: // the writer holds b and waits for company
	case <-time.After(10 * time.Second):
		t.Fatal("the writer did not wait for company after taking b")
	}
	c := d.submit(t, 3)
	within(t, b, "b")
	within(t, c, "c")
	st := d.w.Stats()
	if st.Commits-base.Commits != 1 || st.Ops-base.Ops != 2 {
		t.Fatalf("stats %+v, base %+v: want b and c in one transaction", st, base)
	}
	if got := d.count(t); got != 5 {
		t.Fatalf("%d rows, want 5", got)
	}
}

// TestCommitDelayNotForAChain: writes that each wait for the one before (transactions of one or two
// operations) never wait for company (here: an hour).
func TestCommitDelayNotForAChain(t *testing.T) {
	d := openTest(t, Config{CommitDelay: time.Hour})
	for v := range 5 {
		within(t, d.submit(t, v), "sequential write")
	}
	d.streaming(t, 10, 11)
	within(t, d.submit(t, 12), "write after a transaction of two")
}

// TestCommitDelayNotWhenIdle: an operation that finds the writer idle — its last COMMIT, of several
// operations, is longer ago than CommitDelay — runs at once, here without waiting out an hour.
func TestCommitDelayNotWhenIdle(t *testing.T) {
	d := openTest(t, Config{CommitDelay: time.Hour})
	d.streaming(t, 1, 3, 4)
	// An idle spell of two hours, on the writer goroutine (Do runs there) so as not to race with it.
	if err := d.w.Do(bg0, func(*stmts) error {
		d.w.lastCommit = time.Now().Add(-2 * time.Hour)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	within(t, d.submit(t, 2), "operation after an idle spell")
}

// TestCommitDelayClose: Close ends the wait; the waiting operation commits.
func TestCommitDelayClose(t *testing.T) {
	d := openTest(t, Config{CommitDelay: time.Hour})
	waiting := make(chan struct{}, 1)
	d.w.testWaits = func() { waiting <- struct{}{} }
	d.streaming(t, 1, 3, 4)
	b := d.submit(t, 2)
	<-waiting // (TestCommitDelayJoinsStreamingWrites checks that it comes)
	closed := make(chan error, 1)
	go func() { closed <- d.w.Close() }()
	within(t, b, "operation waiting at Close")
	within(t, closed, "Close")
	if got := d.count(t); got != 4 {
		t.Fatalf("%d rows, want 4", got)
	}
}
