package server_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/server"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// An idle logged-in session has one goroutine, its handler (the reader): the writer exists only while
// there is something to write. That holds after login, and again after traffic (a ping, a message)
// has started writers on the sessions.
func TestIdleSessionsHaveNoWriter(t *testing.T) {
	const n = 100
	raiseFDLimit(t, 2*n+1000)
	ts := startServer(t, nil)
	phones := make([]string, n)
	for i := range phones {
		phones[i] = newPhone()
	}
	devs := make([]noisesock.Keypair, n)
	for i, p := range phones {
		devs[i] = ts.register(t, p)
	}
	base := runtime.NumGoroutine() // the raw clients below have no goroutines
	conns := make([]*rawConn, n)
	for i := range conns {
		rc, err := rawLogin(ctxT(t), ts.addr, ts.key.Public, devs[i], uint32(server.MaxPingInterval/time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = rc
	}
	t.Cleanup(func() {
		for _, rc := range conns {
			rc.nc.Close()
		}
	})
	waitUntil(t, "every session registered", func() bool { return ts.srv.Sessions() == n })
	// A little slack for the server's own transient goroutines (none of them per session).
	const slack = 4
	settles := func(when string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			extra := runtime.NumGoroutine() - base
			if extra <= n+slack {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d goroutines for %d idle sessions, want at most %d (one each: no writer while idle)", when, extra, n, n+slack)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	settles("after login")

	// A ping on every session starts a writer for its pong; the writers exit afterwards.
	for i, rc := range conns {
		rc.send(t, &chatdpb.Envelope{Body: &chatdpb.Envelope_Ping{Ping: &chatdpb.Ping{Id: uint64(i + 1)}}})
	}
	for i, rc := range conns {
		if env := rc.next(t, 10*time.Second); env.GetPong().GetId() != uint64(i+1) {
			t.Fatalf("session %d: got %v, want Pong{%d}", i, env, i+1)
		}
	}
	settles("after a ping on every session")

	// A message: a writer for the SendAck on the sender, one for the delivery on the recipient.
	conns[0].send(t, &chatdpb.Envelope{Body: &chatdpb.Envelope_Send{Send: &chatdpb.Send{
		To: phones[1], ClientId: "idle-1", Content: text("hello")}}})
	if ack := conns[0].next(t, 10*time.Second).GetSendAck(); ack.GetStatus() != chatdpb.SendAck_STORED {
		t.Fatalf("SendAck %v, want STORED", ack)
	}
	if m := conns[1].next(t, 10*time.Second).GetDeliver().GetMessage(); m == nil || m.GetFrom() != phones[0] {
		t.Fatalf("delivery %v, want the message from %s", m, phones[0])
	}
	settles("after a message")
}
