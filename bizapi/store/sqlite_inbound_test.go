package store

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestSaveInbound(t *testing.T) {
	s, c := openTest(t)
	if _, err := s.Inbound(bg0, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing inbound: %v", err)
	}
	m := inbound(1)
	dup, err := s.SaveInbound(bg0, m, cbOf("in 1"))
	if err != nil || dup {
		t.Fatalf("SaveInbound = %v, %v", dup, err)
	}
	got, err := s.Inbound(bg0, m.ID)
	want := m
	want.ReceivedAt = c.Now()
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Inbound = %+v, %v\nwant %+v", got, err, want)
	}
	// chatd redelivers the same server id (under any opaque id): dup, nothing changes or is queued.
	again := inbound(1)
	again.ID, again.Body = "ABGGother", "changed"
	dup, err = s.SaveInbound(bg0, again, cbOf("in 1 again"))
	if err != nil || !dup {
		t.Fatalf("redelivery: dup=%v err=%v", dup, err)
	}
	if _, err := s.Inbound(bg0, "ABGGother"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("redelivery stored a second row: %v", err)
	}
	if got, _ := s.Inbound(bg0, m.ID); !reflect.DeepEqual(got, want) {
		t.Fatalf("redelivery changed the message: %+v", got)
	}
	// Same opaque id, another server id: a different message with a clashing id.
	clash := inbound(2)
	clash.ID = m.ID
	if _, err := s.SaveInbound(bg0, clash, cbOf("clash")); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("id clash = %v, want ErrDuplicate", err)
	}
	if got := callbacks(t, s); !slices.Equal(got, []string{"in 1"}) {
		t.Fatalf("callbacks %v", got)
	}
	// Optional fields: no content, no timestamp, given ReceivedAt, no callback; flags stored.
	bare := Inbound{ID: "bare", ServerID: 1 << 63, From: "1", Type: "image", ReceivedAt: c.Now().Add(-time.Minute),
		ReadRequested: true}
	if dup, err := s.SaveInbound(bg0, bare, nil); err != nil || dup {
		t.Fatal(dup, err)
	}
	if got, _ := s.Inbound(bg0, "bare"); !reflect.DeepEqual(got, bare) {
		t.Fatalf("bare = %+v\nwant %+v", got, bare)
	}
	for _, bad := range []Inbound{{ServerID: 1}, {ID: "x"}} {
		if _, err := s.SaveInbound(bg0, bad, nil); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("SaveInbound(%+v) = %v", bad, err)
		}
	}
	if _, err := s.SaveInbound(bg0, inbound(3), &Callback{}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("empty payload: %v", err)
	}
	if st, _ := s.Stats(bg0); st.Inbound != 2 || st.PendingCallbacks != 1 {
		t.Fatalf("Stats = %+v", st)
	}
}

func inIDs(ms []Inbound) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

func TestRequestReadAndReadPending(t *testing.T) {
	s, c := openTest(t)
	if _, err := s.RequestRead(bg0, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RequestRead(missing) = %v", err)
	}
	t0 := c.Now()
	// ReceivedAt order: 3, then 1 and 5 (a tie: stored order), 2, 4.
	recv := map[int]time.Time{3: t0, 1: t0.Add(time.Second), 2: t0.Add(2 * time.Second), 4: t0.Add(3 * time.Second), 5: t0.Add(time.Second)}
	for _, i := range []int{1, 2, 3, 4, 5} {
		m := inbound(i)
		m.ReceivedAt = recv[i]
		if _, err := s.SaveInbound(bg0, m, nil); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := s.ReadPending(bg0, 10); err != nil || len(p) != 0 {
		t.Fatalf("ReadPending before any request = %v, %v", inIDs(p), err)
	}
	for _, i := range []int{5, 2, 1, 3} { // request order does not matter, receive order does
		m, err := s.RequestRead(bg0, inbound(i).ID)
		if err != nil || !m.ReadRequested || m.ReadSent || m.ID != inbound(i).ID || m.Body != inbound(i).Body || !m.ReceivedAt.Equal(recv[i]) {
			t.Fatalf("RequestRead(%d) = %+v, %v", i, m, err)
		}
	}
	want := []string{inbound(3).ID, inbound(1).ID, inbound(5).ID, inbound(2).ID}
	if p, err := s.ReadPending(bg0, 10); err != nil || !slices.Equal(inIDs(p), want) {
		t.Fatalf("ReadPending = %v, %v; want %v", inIDs(p), err, want)
	}
	if p, _ := s.ReadPending(bg0, 2); !slices.Equal(inIDs(p), want[:2]) {
		t.Fatalf("ReadPending(2) = %v", inIDs(p))
	}
	// Asking twice is fine and changes nothing.
	if m, err := s.RequestRead(bg0, inbound(1).ID); err != nil || !m.ReadRequested {
		t.Fatal(m, err)
	}
	if p, _ := s.ReadPending(bg0, 10); !slices.Equal(inIDs(p), want) {
		t.Fatalf("after a repeated request: %v", inIDs(p))
	}
	// The server confirmed 3 and 2 (and an unknown id, ignored).
	if err := s.ReadSent(bg0, []string{inbound(3).ID, inbound(2).ID, "unknown"}); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.ReadPending(bg0, 10); !slices.Equal(inIDs(p), []string{inbound(1).ID, inbound(5).ID}) {
		t.Fatalf("after ReadSent: %v", inIDs(p))
	}
	m, _ := s.Inbound(bg0, inbound(3).ID)
	if !m.ReadRequested || !m.ReadSent {
		t.Fatalf("after ReadSent: %+v", m)
	}
	// Requesting a confirmed receipt again does not make it pending again.
	if m, err := s.RequestRead(bg0, inbound(3).ID); err != nil || !m.ReadSent {
		t.Fatal(m, err)
	}
	if p, _ := s.ReadPending(bg0, 10); len(p) != 2 {
		t.Fatalf("a confirmed receipt became pending again: %v", inIDs(p))
	}
	// ReadSent of nothing commits nothing.
	before := s.WriterStats().Commits
	if err := s.ReadSent(bg0, nil); err != nil || s.WriterStats().Commits != before {
		t.Fatalf("ReadSent(nil) = %v, commits %d → %d", err, before, s.WriterStats().Commits)
	}
	for _, limit := range []int{0, -1} {
		if _, err := s.ReadPending(bg0, limit); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ReadPending(%d) = %v", limit, err)
		}
	}
	// Not requested: 4 never shows up.
	if m, _ := s.Inbound(bg0, inbound(4).ID); m.ReadRequested {
		t.Fatal("4 requested")
	}
}
