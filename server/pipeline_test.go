package server_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/server"
	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// sendFrames encodes one Send envelope per client id (to the same recipient) as consecutive frames,
// to be written at once: the server sees them pipelined.
func (rc *rawConn) sendFrames(t *testing.T, to string, clientIDs []string) []byte {
	t.Helper()
	var all bytes.Buffer
	for i, id := range clientIDs {
		b, err := wire.AppendEnvelope(nil, &chatdpb.Envelope{Body: &chatdpb.Envelope_Send{Send: &chatdpb.Send{
			ClientId: id, To: to, Content: text(fmt.Sprint(i)),
		}}})
		if err != nil {
			t.Fatal(err)
		}
		all.Write(rc.frame(t, b))
	}
	return all.Bytes()
}

// readAcks reads frames in the background and returns the SendAcks in arrival order; other
// envelopes (deliveries of receipts, pongs) are skipped. A Close frame or a read error ends it.
func (rc *rawConn) readAcks(t *testing.T) (<-chan *chatdpb.SendAck, <-chan *chatdpb.Close) {
	acks := make(chan *chatdpb.SendAck, 4096)
	closed := make(chan *chatdpb.Close, 1)
	go func() {
		defer close(acks)
		for {
			rc.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
			b, err := rc.sc.ReadFrame()
			if err != nil {
				return
			}
			var env chatdpb.Envelope
			if err := wire.DecodeEnvelope(b, &env); err != nil {
				return
			}
			switch body := env.Body.(type) {
			case *chatdpb.Envelope_SendAck:
				acks <- body.SendAck
			case *chatdpb.Envelope_Close:
				closed <- body.Close
				return
			}
		}
	}()
	return acks, closed
}

func nextAck(t *testing.T, acks <-chan *chatdpb.SendAck, i int) *chatdpb.SendAck {
	t.Helper()
	select {
	case a, ok := <-acks:
		if !ok {
			t.Fatalf("connection ended after %d acks", i)
		}
		return a
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for ack %d", i)
	}
	return nil
}

// TestPipelinedSendsAckedInOrder: 1,000 sends written at once, without waiting for any ack, are all
// acknowledged, in send order, with increasing server ids, and reach the online recipient in that
// order. The store commits them in far fewer transactions than sends.
func TestPipelinedSendsAckedInOrder(t *testing.T) {
	ts := startServer(t, nil)
	bob := ts.connect(t, ts.register(t, "15550000002"), nil)
	rc, err := rawLogin(ctxT(t), ts.addr, ts.key.Public, ts.register(t, "15550000001"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.nc.Close()
	const n = 1000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("p%04d", i)
	}
	base := ts.st.WriterStats()
	acks, _ := rc.readAcks(t)
	rc.write(t, rc.sendFrames(t, "15550000002", ids))
	var last uint64
	serverIDs := make([]uint64, n)
	for i := range n {
		a := nextAck(t, acks, i)
		if a.GetClientId() != ids[i] || a.GetStatus() != chatdpb.SendAck_STORED {
			t.Fatalf("ack %d = %v, want STORED for %s", i, a, ids[i])
		}
		if a.GetServerId() <= last {
			t.Fatalf("ack %d has server id %d after %d", i, a.GetServerId(), last)
		}
		last, serverIDs[i] = a.GetServerId(), a.GetServerId()
	}
	bob.rec.waitFor(t, "every message", func() bool { return len(bob.rec.msgs) >= n })
	bob.rec.mu.Lock()
	defer bob.rec.mu.Unlock()
	if len(bob.rec.msgs) != n {
		t.Fatalf("bob got %d messages, want %d", len(bob.rec.msgs), n)
	}
	for i, m := range bob.rec.msgs {
		if m.GetServerId() != serverIDs[i] || string(m.GetContent().GetBody()) != string(text(fmt.Sprint(i)).GetBody()) {
			t.Fatalf("bob's message %d is %d %s, want %d", i, m.GetServerId(), m.GetContent().GetBody(), serverIDs[i])
		}
	}
	st := ts.st.WriterStats()
	t.Logf("%d pipelined sends (+ deliveries, acks, receipts): %d commits, largest batch %d", n, st.Commits-base.Commits, st.MaxBatch)
	if st.MaxBatch < 2 {
		t.Fatalf("writer stats %+v: the pipelined sends were never committed together", st)
	}
}

// TestPipelinedDuplicatesAndRejects: client ids repeated within one pipelined burst are stored once
// (DUPLICATE with the first one's server id for the others), and SendAcks that need no store write
// (INVALID, UNKNOWN_RECIPIENT) keep their place in send order among the others.
func TestPipelinedDuplicatesAndRejects(t *testing.T) {
	ts := startServer(t, nil)
	ts.register(t, "15550000002")
	rc, err := rawLogin(ctxT(t), ts.addr, ts.key.Public, ts.register(t, "15550000001"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.nc.Close()
	acks, _ := rc.readAcks(t)

	// Each id twice in a row (the pair is most likely in one transaction; the store tests pin that
	// case down), then a third copy of some later on.
	var ids []string
	for i := range 50 {
		id := fmt.Sprint("d", i)
		ids = append(ids, id, id)
		if i%10 == 9 {
			ids = append(ids, fmt.Sprint("d", i-5))
		}
	}
	var burst bytes.Buffer
	burst.Write(rc.sendFrames(t, "15550000002", ids))
	// An invalid send, one to an unregistered number, and one more good send, in the same burst.
	burst.Write(rc.sendFrames(t, "15550000002", []string{""}))
	burst.Write(rc.sendFrames(t, "15550000009", []string{"unknown"}))
	burst.Write(rc.sendFrames(t, "15550000002", []string{"last"}))
	rc.write(t, burst.Bytes())

	first := map[string]uint64{}
	for i, id := range ids {
		a := nextAck(t, acks, i)
		if a.GetClientId() != id {
			t.Fatalf("ack %d is for %q, want %q: out of order", i, a.GetClientId(), id)
		}
		want := chatdpb.SendAck_STORED
		if _, seen := first[id]; seen {
			want = chatdpb.SendAck_DUPLICATE
		}
		if a.GetStatus() != want {
			t.Fatalf("ack %d for %s: %v, want %v", i, id, a.GetStatus(), want)
		}
		if want == chatdpb.SendAck_STORED {
			first[id] = a.GetServerId()
		} else if a.GetServerId() != first[id] {
			t.Fatalf("duplicate of %s has server id %d, want %d", id, a.GetServerId(), first[id])
		}
	}
	for i, want := range []struct {
		id     string
		status chatdpb.SendAck_Status
	}{{"", chatdpb.SendAck_INVALID}, {"unknown", chatdpb.SendAck_UNKNOWN_RECIPIENT}, {"last", chatdpb.SendAck_STORED}} {
		a := nextAck(t, acks, len(ids)+i)
		if a.GetClientId() != want.id || a.GetStatus() != want.status {
			t.Fatalf("ack %d = %v, want %v for %q", len(ids)+i, a, want.status, want.id)
		}
	}
	if _, msgs, _, err := ts.st.Stats(context.Background()); err != nil || msgs != 51 {
		t.Fatalf("%d messages stored (%v), want 51", msgs, err)
	}
}

// TestPipelineBoundedBySlots: with a single pipelining slot the session still serves a burst of
// sends, one at a time, in order.
func TestPipelineBoundedBySlots(t *testing.T) {
	ts := startServer(t, func(c *server.Config) { c.MaxPipelined = 1 })
	ts.register(t, "15550000002")
	rc, err := rawLogin(ctxT(t), ts.addr, ts.key.Public, ts.register(t, "15550000001"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.nc.Close()
	acks, _ := rc.readAcks(t)
	const n = 200
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprint("b", i)
	}
	base := ts.st.WriterStats()
	rc.write(t, rc.sendFrames(t, "15550000002", ids))
	for i := range n {
		if a := nextAck(t, acks, i); a.GetClientId() != ids[i] || a.GetStatus() != chatdpb.SendAck_STORED {
			t.Fatalf("ack %d = %v", i, a)
		}
	}
	// One request at a time: no two of the session's sends shared a transaction.
	if st := ts.st.WriterStats(); st.Commits-base.Commits < n {
		t.Fatalf("%d commits for %d sends with one slot: the session did not wait", st.Commits-base.Commits, n)
	}
}

// TestStoreFailureClosesSession: when the store fails, the session is closed with INTERNAL_ERROR
// and the send gets no SendAck.
func TestStoreFailureClosesSession(t *testing.T) {
	ts := startServer(t, nil)
	ts.register(t, "15550000002")
	rc, err := rawLogin(ctxT(t), ts.addr, ts.key.Public, ts.register(t, "15550000001"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.nc.Close()
	acks, closed := rc.readAcks(t)
	rc.write(t, rc.sendFrames(t, "15550000002", []string{"before"}))
	if a := nextAck(t, acks, 0); a.GetStatus() != chatdpb.SendAck_STORED {
		t.Fatalf("ack = %v", a)
	}
	if err := ts.st.Close(); err != nil {
		t.Fatal(err)
	}
	rc.write(t, rc.sendFrames(t, "15550000002", []string{"after"}))
	select {
	case cl := <-closed:
		if cl.GetReason() != chatdpb.CloseReason_INTERNAL_ERROR || cl.GetRetryAfterMs() == 0 {
			t.Fatalf("closed with %v", cl)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no Close after a store failure")
	}
	for a := range acks {
		t.Fatalf("SendAck %v after a store failure", a)
	}
}
