package store

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMarkReceipt: MarkReceipt does what MarkSent then MarkStatus do, in one commit.
func TestMarkReceipt(t *testing.T) {
	s, c := openTest(t)
	at := c.Now().Add(time.Second)

	// The receipt overtook the ack: sent and delivered, both callbacks, in that order, one commit.
	addMsg(t, s, "a")
	base := s.WriterStats().Commits
	sc, ch, err := s.MarkReceipt(bg0, "a", 5, StatusDelivered, at, cbOf("sent a"), cbOf("delivered a"))
	if err != nil || !sc || !ch {
		t.Fatal(sc, ch, err)
	}
	if n := s.WriterStats().Commits - base; n != 1 {
		t.Fatalf("%d commits, want 1", n)
	}
	m := mustMessage(t, s, "a")
	if m.Status != StatusDelivered || m.ServerID != 5 || !m.SentAt.Equal(at) || !m.DeliveredAt.Equal(at) {
		t.Fatalf("after MarkReceipt: %+v", m)
	}

	// Sent already: only the status step changes; read implies delivered.
	addMsg(t, s, "b")
	if _, err := s.MarkSent(bg0, "b", 6, at, cbOf("sent b")); err != nil {
		t.Fatal(err)
	}
	if sc, ch, err := s.MarkReceipt(bg0, "b", 6, StatusRead, at.Add(time.Second), cbOf("sent b again"), cbOf("read b")); err != nil || sc || !ch {
		t.Fatal(sc, ch, err)
	}
	if m := mustMessage(t, s, "b"); m.Status != StatusRead || m.DeliveredAt.IsZero() || !m.SentAt.Equal(at) {
		t.Fatalf("b = %+v", m)
	}

	// A repeated receipt changes nothing.
	if sc, ch, err := s.MarkReceipt(bg0, "b", 6, StatusDelivered, at, cbOf("x"), cbOf("y")); err != nil || sc || ch {
		t.Fatal(sc, ch, err)
	}
	if got := callbacks(t, s); !slices.Equal(got, []string{"sent a", "delivered a", "sent b", "read b"}) {
		t.Fatalf("callbacks %v", got)
	}

	// Unknown message, bad status, bad callback: errors, nothing written.
	if _, _, err := s.MarkReceipt(bg0, "nope", 1, StatusDelivered, at, cbOf("s"), cbOf("d")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown message: %v", err)
	}
	addMsg(t, s, "c")
	if _, _, err := s.MarkReceipt(bg0, "c", 1, StatusSent, at, nil, nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("status sent: %v", err)
	}
	if _, _, err := s.MarkReceipt(bg0, "c", 1, StatusDelivered, at, nil, &Callback{}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty callback: %v", err)
	}
	if m := mustMessage(t, s, "c"); m.Status != StatusAccepted || m.ServerID != 0 {
		t.Fatalf("refused MarkReceipt changed c: %+v", m)
	}
	if got := callbacks(t, s); len(got) != 4 {
		t.Fatalf("callbacks %v", got)
	}

	// Failed is terminal: the server id is filled in, nothing else, no callback.
	addMsg(t, s, "f")
	if err := s.MarkFailed(bg0, "f", ErrorInfo{Code: 470, Title: "t"}, at, nil); err != nil {
		t.Fatal(err)
	}
	if sc, ch, err := s.MarkReceipt(bg0, "f", 9, StatusDelivered, at, cbOf("s"), cbOf("d")); err != nil || sc || ch {
		t.Fatal(sc, ch, err)
	}
	if m := mustMessage(t, s, "f"); m.Status != StatusFailed || m.ServerID != 9 {
		t.Fatalf("f = %+v", m)
	}
}

// MarkReceipt (one read and at most one write) leaves every message as MarkSent followed by
// MarkStatus does, from every state, with the same callbacks.
func TestMarkReceiptMatchesTwoSteps(t *testing.T) {
	s, c := openTest(t)
	at := c.Now().Add(time.Second)
	later := at.Add(time.Minute)
	states := map[string]func(id string){
		"accepted": func(string) {},
		"sent": func(id string) {
			if _, err := s.MarkSent(bg0, id, 7, at, nil); err != nil {
				t.Fatal(err)
			}
		},
		"sent without server id": func(id string) {
			if _, err := s.MarkSent(bg0, id, 0, at, nil); err != nil {
				t.Fatal(err)
			}
		},
		"delivered, never sent": func(id string) {
			if _, err := s.MarkStatus(bg0, id, StatusDelivered, at, nil); err != nil {
				t.Fatal(err)
			}
		},
		"read": func(id string) {
			if _, err := s.MarkStatus(bg0, id, StatusRead, at, nil); err != nil {
				t.Fatal(err)
			}
		},
		"failed": func(id string) {
			if err := s.MarkFailed(bg0, id, ErrorInfo{Code: 470, Title: "t"}, at, nil); err != nil {
				t.Fatal(err)
			}
		},
	}
	n := 0
	for name, prepare := range states {
		for _, status := range []string{StatusDelivered, StatusRead} {
			n++
			one, two := fmt.Sprintf("one%d", n), fmt.Sprintf("two%d", n)
			for _, id := range []string{one, two} {
				addMsg(t, s, id)
				prepare(id)
			}
			before := len(callbacks(t, s))
			sc1, ch1, err := s.MarkReceipt(bg0, one, 9, status, later, cbOf("sent "+one), cbOf(status+" "+one))
			if err != nil {
				t.Fatal(err)
			}
			mid := callbacks(t, s)[before:]
			sc2, err := s.MarkSent(bg0, two, 9, later, cbOf("sent "+two))
			if err != nil {
				t.Fatal(err)
			}
			ch2, err := s.MarkStatus(bg0, two, status, later, cbOf(status+" "+two))
			if err != nil {
				t.Fatal(err)
			}
			got := callbacks(t, s)[before+len(mid):]
			if sc1 != sc2 || ch1 != ch2 {
				t.Errorf("%s → %s: MarkReceipt changed (%v, %v), the two steps (%v, %v)", name, status, sc1, ch1, sc2, ch2)
			}
			m1, m2 := mustMessage(t, s, one), mustMessage(t, s, two)
			m1.Seq, m1.ID, m1.Body = m2.Seq, m2.ID, m2.Body
			if !reflect.DeepEqual(m1, m2) {
				t.Errorf("%s → %s:\nMarkReceipt %+v\n  two steps %+v", name, status, m1, m2)
			}
			if len(mid) != len(got) {
				t.Errorf("%s → %s: callbacks %v vs %v", name, status, mid, got)
			}
			for i := range mid {
				if strings.Replace(mid[i], one, two, 1) != got[i] {
					t.Errorf("%s → %s: callbacks %v vs %v", name, status, mid, got)
				}
			}
		}
	}
}
