package store

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestAddMessage(t *testing.T) {
	s, c := openTest(t)
	if _, err := s.Message(bg0, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing message: %v", err)
	}
	for _, bad := range []Message{{To: "1"}, {ID: "x"}} {
		if err := s.AddMessage(bg0, bad); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("AddMessage(%+v) = %v", bad, err)
		}
	}
	in := Message{ID: "gBEG1", To: "15550000002", Body: "héllo\x00 wörld", PreviewURL: true,
		Status: StatusRead, ServerID: 9, Seq: 99, SentAt: c.Now()} // ignored: a new message is accepted
	if err := s.AddMessage(bg0, in); err != nil {
		t.Fatal(err)
	}
	m := mustMessage(t, s, "gBEG1")
	want := Message{Seq: m.Seq, ID: "gBEG1", To: "15550000002", Body: "héllo\x00 wörld", PreviewURL: true,
		Status: StatusAccepted, CreatedAt: c.Now()}
	if !reflect.DeepEqual(m, want) || m.Seq <= 0 {
		t.Fatalf("Message = %+v\nwant %+v", m, want)
	}
	created := c.Now().Add(-time.Hour)
	if err := s.AddMessage(bg0, Message{ID: "gBEG2", To: "1", CreatedAt: created}); err != nil {
		t.Fatal(err)
	}
	m2 := mustMessage(t, s, "gBEG2")
	if m2.Seq <= m.Seq || !m2.CreatedAt.Equal(created) || m2.Body != "" || m2.PreviewURL {
		t.Fatalf("second message %+v", m2)
	}
	// A duplicate id: ErrDuplicate, the original is untouched, no seq is burnt visibly.
	if err := s.AddMessage(bg0, Message{ID: "gBEG1", To: "2", Body: "other"}); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate AddMessage = %v", err)
	}
	if got := mustMessage(t, s, "gBEG1"); !reflect.DeepEqual(got, m) {
		t.Fatalf("duplicate changed the original: %+v", got)
	}
	if st, _ := s.Stats(bg0); st.Messages != 2 || st.Unsent != 2 {
		t.Fatalf("Stats = %+v", st)
	}
}

func ids(ms []Message) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

func TestUnsent(t *testing.T) {
	s, _ := openTest(t)
	var seqs []int64
	for i := range 10 {
		seqs = append(seqs, addMsg(t, s, fmt.Sprintf("m%d", i)).Seq)
	}
	if _, err := s.MarkStatus(bg0, "m2", StatusDelivered, time.Time{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MarkSent(bg0, "m3", 1, time.Time{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkFailed(bg0, "m4", ErrorInfo{Code: 1}, time.Time{}, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		after int64
		limit int
		want  []string
	}{
		{0, 100, []string{"m0", "m1", "m5", "m6", "m7", "m8", "m9"}},
		{0, 3, []string{"m0", "m1", "m5"}},
		{seqs[1], 2, []string{"m5", "m6"}},
		{seqs[2], 100, []string{"m5", "m6", "m7", "m8", "m9"}},
		{seqs[9], 100, []string{}},
		{-5, 1, []string{"m0"}},
	} {
		got, err := s.Unsent(bg0, tc.after, tc.limit)
		if err != nil || !slices.Equal(ids(got), tc.want) {
			t.Errorf("Unsent(%d, %d) = %v, %v; want %v", tc.after, tc.limit, ids(got), err, tc.want)
		}
	}
	got, _ := s.Unsent(bg0, 0, 1)
	if !reflect.DeepEqual(got[0], mustMessage(t, s, "m0")) {
		t.Errorf("Unsent returns partial messages: %+v", got[0])
	}
	for _, limit := range []int{0, -1} {
		if _, err := s.Unsent(bg0, 0, limit); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Unsent limit %d: %v", limit, err)
		}
	}
}

func TestMarkSent(t *testing.T) {
	s, c := openTest(t)
	addMsg(t, s, "a")
	at := c.Now().Add(time.Second)
	if ch, err := s.MarkSent(bg0, "a", 1<<63+5, at, cbOf("sent a")); err != nil || !ch { // high bit survives
		t.Fatal(ch, err)
	}
	m := mustMessage(t, s, "a")
	if m.Status != StatusSent || m.ServerID != 1<<63+5 || !m.SentAt.Equal(at) {
		t.Fatalf("after MarkSent: %+v", m)
	}
	if got := callbacks(t, s); !slices.Equal(got, []string{"sent a"}) {
		t.Fatalf("callbacks %v", got)
	}
	// A repeated ack (resend after reconnect): nothing changes, nothing queued, first id kept.
	if ch, err := s.MarkSent(bg0, "a", 42, at.Add(time.Hour), cbOf("sent a again")); err != nil || ch {
		t.Fatal(ch, err)
	}
	if got := mustMessage(t, s, "a"); !reflect.DeepEqual(got, m) {
		t.Fatalf("repeated MarkSent changed %+v to %+v", m, got)
	}
	if got := callbacks(t, s); !slices.Equal(got, []string{"sent a"}) {
		t.Fatalf("repeated MarkSent queued: %v", got)
	}
	// A receipt overtook the ack: delivered stays, ServerID and SentAt are filled in, no callback.
	addMsg(t, s, "b")
	if ch, err := s.MarkStatus(bg0, "b", StatusDelivered, at, cbOf("delivered b")); err != nil || !ch {
		t.Fatal(ch, err)
	}
	if ch, err := s.MarkSent(bg0, "b", 7, at.Add(time.Second), cbOf("sent b")); err != nil || ch {
		t.Fatal(ch, err)
	}
	m = mustMessage(t, s, "b")
	if m.Status != StatusDelivered || m.ServerID != 7 || !m.SentAt.Equal(at.Add(time.Second)) || !m.DeliveredAt.Equal(at) {
		t.Fatalf("MarkSent after delivered: %+v", m)
	}
	// Read, then ack: read stays.
	addMsg(t, s, "r")
	s.MarkStatus(bg0, "r", StatusRead, at, nil)
	if _, err := s.MarkSent(bg0, "r", 8, time.Time{}, cbOf("sent r")); err != nil {
		t.Fatal(err)
	}
	if m := mustMessage(t, s, "r"); m.Status != StatusRead || m.ServerID != 8 || !m.SentAt.Equal(c.Now()) {
		t.Fatalf("MarkSent after read: %+v", m)
	}
	// Failed is terminal.
	addMsg(t, s, "f")
	s.MarkFailed(bg0, "f", ErrorInfo{Code: 470, Title: "t"}, at, nil)
	if _, err := s.MarkSent(bg0, "f", 9, at, cbOf("sent f")); err != nil {
		t.Fatal(err)
	}
	if m := mustMessage(t, s, "f"); m.Status != StatusFailed {
		t.Fatalf("MarkSent after failed: %+v", m)
	}
	if got := callbacks(t, s); !slices.Equal(got, []string{"sent a", "delivered b"}) {
		t.Fatalf("callbacks %v", got)
	}
	// Missing message: ErrNotFound, nothing queued.
	if _, err := s.MarkSent(bg0, "nope", 1, at, cbOf("sent nope")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("MarkSent(missing) = %v", err)
	}
	// A callback without payload is refused before anything is written.
	addMsg(t, s, "p")
	if _, err := s.MarkSent(bg0, "p", 1, at, &Callback{}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty payload: %v", err)
	}
	if m := mustMessage(t, s, "p"); m.Status != StatusAccepted {
		t.Fatalf("refused MarkSent changed the message: %+v", m)
	}
	if got := callbacks(t, s); len(got) != 2 {
		t.Fatalf("callbacks %v", got)
	}
}

var order = map[string]int{StatusAccepted: 0, StatusSent: 1, StatusDelivered: 2, StatusRead: 3}

// TestMarkStatusNeverGoesBackwards runs every (current status, receipt) pair.
func TestMarkStatusNeverGoesBackwards(t *testing.T) {
	s, c := openTest(t)
	t0 := c.Now()
	setup := func(id, status string) {
		t.Helper()
		addMsg(t, s, id)
		var err error
		switch status {
		case StatusSent:
			_, err = s.MarkSent(bg0, id, 1, t0, nil)
		case StatusDelivered, StatusRead:
			_, err = s.MarkStatus(bg0, id, status, t0, nil)
		case StatusFailed:
			err = s.MarkFailed(bg0, id, ErrorInfo{Code: 1}, t0, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	at := t0.Add(time.Minute)
	for _, from := range []string{StatusAccepted, StatusSent, StatusDelivered, StatusRead, StatusFailed} {
		for _, to := range []string{StatusDelivered, StatusRead} {
			id := from + "→" + to
			setup(id, from)
			before := mustMessage(t, s, id)
			nCB := len(callbacks(t, s))
			changed, err := s.MarkStatus(bg0, id, to, at, cbOf(id))
			if err != nil {
				t.Fatalf("%s: %v", id, err)
			}
			m := mustMessage(t, s, id)
			cbs := callbacks(t, s)
			wantChange := from != StatusFailed && order[to] > order[from]
			if changed != wantChange {
				t.Errorf("%s: changed = %v, want %v", id, changed, wantChange)
			}
			if !wantChange {
				if !reflect.DeepEqual(m, before) || len(cbs) != nCB {
					t.Errorf("%s: changed the message (%+v → %+v) or queued (%d → %d callbacks)", id, before, m, nCB, len(cbs))
				}
				continue
			}
			if m.Status != to || len(cbs) != nCB+1 || cbs[len(cbs)-1] != id {
				t.Errorf("%s: status %s, callbacks %v", id, m.Status, cbs)
			}
			// delivered_at: kept if set, else at (read implies delivered).
			wantDelivered := at
			if !before.DeliveredAt.IsZero() {
				wantDelivered = before.DeliveredAt
			}
			if !m.DeliveredAt.Equal(wantDelivered) {
				t.Errorf("%s: DeliveredAt %v, want %v", id, m.DeliveredAt, wantDelivered)
			}
			if to == StatusRead && !m.ReadAt.Equal(at) {
				t.Errorf("%s: ReadAt %v", id, m.ReadAt)
			}
			if to == StatusDelivered && !m.ReadAt.IsZero() {
				t.Errorf("%s: ReadAt %v", id, m.ReadAt)
			}
			if m.ServerID != before.ServerID || !m.SentAt.Equal(before.SentAt) {
				t.Errorf("%s: MarkStatus touched ServerID/SentAt: %+v", id, m)
			}
		}
	}
	// Same status twice: the second is a no-op.
	setup("twice", StatusAccepted)
	if ch, _ := s.MarkStatus(bg0, "twice", StatusRead, at, cbOf("r1")); !ch {
		t.Fatal("first read not a change")
	}
	if ch, _ := s.MarkStatus(bg0, "twice", StatusRead, at.Add(time.Hour), cbOf("r2")); ch {
		t.Fatal("second read changed")
	}
	if m := mustMessage(t, s, "twice"); !m.ReadAt.Equal(at) {
		t.Fatalf("ReadAt moved: %v", m.ReadAt)
	}
	// A zero at is now.
	setup("zero", StatusSent)
	if _, err := s.MarkStatus(bg0, "zero", StatusDelivered, time.Time{}, nil); err != nil {
		t.Fatal(err)
	}
	if m := mustMessage(t, s, "zero"); !m.DeliveredAt.Equal(c.Now()) {
		t.Fatalf("zero at: DeliveredAt %v", m.DeliveredAt)
	}
}

func TestMarkStatusErrors(t *testing.T) {
	s, _ := openTest(t)
	addMsg(t, s, "a")
	if ch, err := s.MarkStatus(bg0, "nope", StatusRead, time.Time{}, cbOf("x")); !errors.Is(err, ErrNotFound) || ch {
		t.Fatalf("MarkStatus(missing) = %v, %v", ch, err)
	}
	for _, st := range []string{StatusAccepted, StatusSent, StatusFailed, "", "READ"} {
		if _, err := s.MarkStatus(bg0, "a", st, time.Time{}, nil); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("MarkStatus(%q) = %v", st, err)
		}
	}
	if _, err := s.MarkStatus(bg0, "a", StatusRead, time.Time{}, &Callback{}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty payload: %v", err)
	}
	if m := mustMessage(t, s, "a"); m.Status != StatusAccepted {
		t.Fatalf("refused calls changed %+v", m)
	}
	if got := callbacks(t, s); len(got) != 0 {
		t.Fatalf("callbacks %v", got)
	}
	// nil cb: the status changes, nothing is queued.
	if ch, err := s.MarkStatus(bg0, "a", StatusDelivered, time.Time{}, nil); err != nil || !ch {
		t.Fatal(ch, err)
	}
	if got := callbacks(t, s); len(got) != 0 {
		t.Fatalf("callbacks %v", got)
	}
}

func TestMarkFailed(t *testing.T) {
	s, c := openTest(t)
	at := c.Now().Add(time.Second)
	e := ErrorInfo{Code: 1006, Title: "Resource not found", Details: "unknown contact"}
	for _, from := range []string{StatusAccepted, StatusSent} {
		addMsg(t, s, from)
		if from == StatusSent {
			s.MarkSent(bg0, from, 5, at, nil)
		}
		if err := s.MarkFailed(bg0, from, e, at, cbOf("failed "+from)); err != nil {
			t.Fatal(err)
		}
		m := mustMessage(t, s, from)
		if m.Status != StatusFailed || !m.FailedAt.Equal(at) || m.Error == nil || *m.Error != e {
			t.Fatalf("failed from %s: %+v", from, m)
		}
	}
	if got := callbacks(t, s); !slices.Equal(got, []string{"failed accepted", "failed sent"}) {
		t.Fatalf("callbacks %v", got)
	}
	// Already failed: the first failure is kept, nothing queued. Delivered/read cannot fail.
	if err := s.MarkFailed(bg0, StatusAccepted, ErrorInfo{Code: 2}, at.Add(time.Hour), cbOf("again")); err != nil {
		t.Fatal(err)
	}
	if m := mustMessage(t, s, StatusAccepted); m.Error.Code != 1006 || !m.FailedAt.Equal(at) {
		t.Fatalf("second MarkFailed overwrote: %+v", m)
	}
	for _, st := range []string{StatusDelivered, StatusRead} {
		addMsg(t, s, st)
		s.MarkStatus(bg0, st, st, at, nil)
		before := mustMessage(t, s, st)
		if err := s.MarkFailed(bg0, st, e, at, cbOf("failed "+st)); err != nil {
			t.Fatal(err)
		}
		if m := mustMessage(t, s, st); !reflect.DeepEqual(m, before) {
			t.Fatalf("MarkFailed changed a %s message: %+v", st, m)
		}
	}
	// Failed is terminal for receipts too.
	if ch, _ := s.MarkStatus(bg0, StatusSent, StatusRead, at, cbOf("read failed")); ch {
		t.Fatal("read receipt changed a failed message")
	}
	if got := callbacks(t, s); len(got) != 2 {
		t.Fatalf("callbacks %v", got)
	}
	if err := s.MarkFailed(bg0, "nope", e, at, cbOf("x")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("MarkFailed(missing) = %v", err)
	}
	if err := s.MarkFailed(bg0, "x", e, at, &Callback{}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty payload: %v", err)
	}
	// Zero at is now; an empty ErrorInfo is still an error object.
	addMsg(t, s, "z")
	if err := s.MarkFailed(bg0, "z", ErrorInfo{}, time.Time{}, nil); err != nil {
		t.Fatal(err)
	}
	if m := mustMessage(t, s, "z"); !m.FailedAt.Equal(c.Now()) || m.Error == nil {
		t.Fatalf("zero at: %+v", m)
	}
	if m := mustMessage(t, s, "delivered"); m.Error != nil {
		t.Fatalf("error on a message that never failed: %+v", m.Error)
	}
}

// MarkSentAsync records the ack like MarkSent and reports in done, after the commit; an unknown
// message is ErrNotFound there, and fails nothing else of its batch.
func TestMarkSentAsync(t *testing.T) {
	s, c := openTest(t)
	addMsg(t, s, "a")
	type res struct {
		changed bool
		err     error
	}
	mark := func(id string) <-chan res {
		ch := make(chan res, 1)
		if err := s.MarkSentAsync(bg0, id, 4, c.Now(), cbOf("sent "+id), func(changed bool, err error) { ch <- res{changed, err} }); err != nil {
			t.Fatal(err)
		}
		return ch
	}
	release := holdWriter(t, s)
	r1, r2, r3 := mark("a"), mark("nope"), mark("a") // one batch
	release()
	if r := <-r1; r.err != nil || !r.changed {
		t.Fatalf("first ack: %+v", r)
	}
	if r := <-r2; !errors.Is(r.err, ErrNotFound) || r.changed {
		t.Fatalf("unknown message: %+v", r)
	}
	if r := <-r3; r.err != nil || r.changed {
		t.Fatalf("repeated ack: %+v", r)
	}
	if m := mustMessage(t, s, "a"); m.Status != StatusSent || m.ServerID != 4 {
		t.Fatalf("a = %+v", m)
	}
	if got := callbacks(t, s); !slices.Equal(got, []string{"sent a"}) {
		t.Fatalf("callbacks %v", got)
	}
	if err := s.MarkSentAsync(bg0, "a", 4, c.Now(), &Callback{}, func(bool, error) {}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty callback: %v", err)
	}
}
