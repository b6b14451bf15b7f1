package server_test

import (
	"fmt"
	"runtime"
	"strings"
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
		waitFor(t, func() error {
			if extra := runtime.NumGoroutine() - base; extra > n+slack {
				return fmt.Errorf("%s: %d goroutines for %d idle sessions, want at most %d (one each: no writer while idle)", when, extra, n, n+slack)
			}
			return nil
		})
	}
	settles("after login")

	// A ping on every session starts a writer for its pong; the writers exit afterwards.
	pingAll(t, conns, 1)
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

// An idle logged-in session holds no cipher state (AES-GCM: key schedule and tables, about 1.3 KB
// per direction) and no read buffer: not after login, nor after a ping that came after half a ping
// interval of silence (an idle client's keepalive), which the session answers with everything built
// again and then lets go of. What the server holds is read from a heap profile that records every
// allocation: live objects allocated by the server's session code in the AES or GCM code, or by the
// frame reader.
func TestIdleSessionsHoldNoCipher(t *testing.T) {
	defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
	runtime.MemProfileRate = 1 // takes effect at once: every allocation from here is recorded

	const n = 20
	// A 1 ms ping interval makes any ping that comes half a millisecond after the session's last frame
	// the keepalive of an idle client; the long PongTimeout keeps the sessions open meanwhile.
	ts := startServer(t, func(c *server.Config) { c.MinPingInterval, c.PongTimeout = time.Millisecond, time.Minute })
	conns := make([]*rawConn, n)
	for i := range conns {
		rc, err := rawLogin(ctxT(t), ts.addr, ts.key.Public, ts.register(t, newPhone()), 1)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rc.nc.Close() })
		conns[i] = rc
	}
	waitUntil(t, "every session registered", func() bool { return ts.srv.Sessions() == n })

	// Polled: the writers of the last replies exit after the clients read them.
	settles := func(when string) {
		t.Helper()
		waitFor(t, func() error {
			if ciphers, bufs, example := sessionHeld(); ciphers != 0 || bufs != 0 {
				return fmt.Errorf("%s: %d idle sessions hold %d live cipher objects and %d read buffers, want none; e.g. one allocated at\n%s",
					when, n, ciphers, bufs, example)
			}
			return nil
		})
	}
	settles("after login")
	pingAll(t, conns, 1)
	settles("after an idle client's ping")
}

// sessionHeld counts the live objects in the heap profile that the server's session code allocated
// for cipher state (in crypto/aes, crypto/cipher and the AES-GCM implementation behind them) or as a
// frame reader's buffer, and returns the allocation stack of one of them. Only allocations made while
// runtime.MemProfileRate is 1 are all recorded.
func sessionHeld() (ciphers, bufs int64, example string) {
	runtime.GC()
	runtime.GC() // the profile is as of the last completed cycle: this one sees the frees of the first
	var recs []runtime.MemProfileRecord
	for n, _ := runtime.MemProfile(nil, false); ; n += 64 {
		recs = make([]runtime.MemProfileRecord, n)
		var ok bool
		if n, ok = runtime.MemProfile(recs, false); ok {
			recs = recs[:n]
			break
		}
	}
	for _, r := range recs {
		live := r.InUseObjects()
		if live == 0 {
			continue
		}
		var session, cipher, buf bool
		var stack strings.Builder
		frames := runtime.CallersFrames(r.Stack())
		for {
			f, more := frames.Next()
			fn := f.Function
			fmt.Fprintf(&stack, "\t%s\n", fn)
			session = session || strings.HasPrefix(fn, "github.com/chatd-dev/chatd/server.(*session).")
			cipher = cipher || strings.HasPrefix(fn, "crypto/aes.") || strings.HasPrefix(fn, "crypto/cipher.") ||
				strings.HasPrefix(fn, "crypto/internal/fips140/aes")
			buf = buf || fn == "github.com/chatd-dev/chatd/wire.(*Reader).ReadFrame"
			if !more {
				break
			}
		}
		if !session || (!cipher && !buf) {
			continue
		}
		if cipher {
			ciphers += live
		} else {
			bufs += live
		}
		if example == "" {
			example = stack.String()
		}
	}
	return ciphers, bufs, example
}
