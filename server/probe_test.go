package server_test

// Probe logins (docs/protocol.md §4.3): the hold for netcheck's idle test, its caps, and the
// per-address probe rate limit. Everything runs on real loopback sockets.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/server"
	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// dialProbe opens a probe login asking for a hold of holdMs, from the local address localIP ("" for
// the system's choice; any 127.x.y.z works on loopback), and returns the connection and the server's
// first envelope.
func (ts *testServer) dialProbe(t *testing.T, holdMs uint32, localIP string) (*rawConn, *chatdpb.Envelope) {
	t.Helper()
	rc, first, err := probeLogin(ctxT(t), ts.addr, ts.key.Public, holdMs, localIP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.nc.Close() })
	return rc, first
}

// probeLogin is dialProbe without a testing.T, for other goroutines.
func probeLogin(ctx context.Context, addr string, serverKey [32]byte, holdMs uint32, localIP string) (*rawConn, *chatdpb.Envelope, error) {
	var d net.Dialer
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	dev, err := noisesock.GenerateKeypair() // any key: a probe needs no account
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	sc, _, err := noisesock.Client(ctx, nc, noisesock.ClientConfig{DeviceKey: dev, ServerKey: serverKey,
		Hello: &chatdpb.ClientHello{ProtocolVersion: wire.Version, ClientVersion: "test/probe", Probe: true, ProbeHoldMs: holdMs}})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := sc.ReadFrame()
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("reading the probe's first frame: %w", err)
	}
	var env chatdpb.Envelope
	if err := wire.DecodeEnvelope(b, &env); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return &rawConn{nc: nc, sc: sc}, &env, nil
}

// next reads the server's next envelope, failing if none comes within d.
func (rc *rawConn) next(t *testing.T, d time.Duration) *chatdpb.Envelope {
	t.Helper()
	rc.nc.SetReadDeadline(time.Now().Add(d))
	b, err := rc.sc.ReadFrame()
	if err != nil {
		t.Fatalf("reading the server's next frame: %v", err)
	}
	var env chatdpb.Envelope
	if err := wire.DecodeEnvelope(b, &env); err != nil {
		t.Fatal(err)
	}
	return &env
}

// send writes env as the next frame.
func (rc *rawConn) send(t *testing.T, env *chatdpb.Envelope) {
	t.Helper()
	b, err := wire.AppendEnvelope(nil, env)
	if err != nil {
		t.Fatal(err)
	}
	rc.write(t, rc.frame(t, b))
}

// expectEOF expects the server to have closed the connection after its last frame.
func (rc *rawConn) expectEOF(t *testing.T) {
	t.Helper()
	rc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := rc.sc.ReadFrame(); !closedByPeer(err) {
		t.Fatalf("after the Close frame: %v, want the connection closed", err)
	}
}

func expectProbeOK(t *testing.T, env *chatdpb.Envelope) {
	t.Helper()
	if env.GetLoginResult().GetStatus() != chatdpb.LoginResult_PROBE_OK {
		t.Fatalf("first frame %v, want LoginResult{PROBE_OK}", env)
	}
}

// expectCloseFrame checks that env is Close{want} with a detail starting with detail.
func expectCloseFrame(t *testing.T, env *chatdpb.Envelope, want chatdpb.CloseReason, detail string) *chatdpb.Close {
	t.Helper()
	cl := env.GetClose()
	if cl == nil || cl.GetReason() != want || !strings.HasPrefix(cl.GetDetail(), detail) {
		t.Fatalf("got %v, want Close{%v, %q…}", env, want, detail)
	}
	return cl
}

// refusedHold expects a probe that asked for a hold to be answered and closed at once.
func refusedHold(t *testing.T, rc *rawConn, first *chatdpb.Envelope) {
	t.Helper()
	expectProbeOK(t, first)
	expectCloseFrame(t, rc.next(t, 5*time.Second), chatdpb.CloseReason_PROBE_DONE, "probe answered; not held")
	rc.expectEOF(t)
}

func (ts *testServer) heldProbes(t *testing.T) float64 {
	t.Helper()
	return metric(t, ts.mtrcs.Registry, "chatd_probes_held")
}

// A held probe is not a session: nothing in the sessions table or the sessions gauge.
func (ts *testServer) expectNoSessions(t *testing.T) {
	t.Helper()
	if n := ts.srv.Sessions(); n != 0 {
		t.Fatalf("%d logged-in sessions, want none", n)
	}
	if n := metric(t, ts.mtrcs.Registry, "chatd_connections"); n != 0 {
		t.Fatalf("chatd_connections = %v, want 0", n)
	}
}

// A probe without a hold is answered and closed at once, as before.
func TestProbeWithoutHold(t *testing.T) {
	ts := startServer(t, nil)
	rc, first := ts.dialProbe(t, 0, "")
	expectProbeOK(t, first)
	expectCloseFrame(t, rc.next(t, 5*time.Second), chatdpb.CloseReason_PROBE_DONE, "probe answered")
	rc.expectEOF(t)
	if n := metric(t, ts.mtrcs.Registry, "chatd_logins_total", "result", "probe"); n != 1 {
		t.Fatalf("chatd_logins_total{probe} = %v, want 1", n)
	}
	ts.waitCloses(t, "probe_done", 1)
}

// (a) A held probe stays open and silent; a ping well into the hold gets its pong, then PROBE_DONE.
func TestProbeHoldAnswersPing(t *testing.T) {
	ts := startServer(t, nil)
	rc, first := ts.dialProbe(t, 2000, "")
	expectProbeOK(t, first)
	// The slot is taken before PROBE_OK is written.
	if n := ts.heldProbes(t); n != 1 {
		t.Fatalf("chatd_probes_held = %v, want 1", n)
	}
	ts.expectNoSessions(t)

	time.Sleep(1500 * time.Millisecond) // the idle period under test
	rc.send(t, &chatdpb.Envelope{Body: &chatdpb.Envelope_Ping{Ping: &chatdpb.Ping{Id: 42}}})
	// The first frame after PROBE_OK is the pong: the server sent nothing during the idle period.
	env := rc.next(t, 5*time.Second)
	if env.GetPong() == nil || env.GetPong().GetId() != 42 {
		t.Fatalf("got %v, want Pong{42}", env)
	}
	expectCloseFrame(t, rc.next(t, 5*time.Second), chatdpb.CloseReason_PROBE_DONE, "probe answered")
	rc.expectEOF(t)
	ts.waitCloses(t, "probe_done", 1)
	waitUntil(t, "the held probe released", func() bool { return ts.srv.HeldProbes() == 0 && ts.heldProbes(t) == 0 })
	ts.exchange(t)
}

// (b) A held probe that never pings is closed when the hold and the grace have elapsed.
func TestProbeHoldElapses(t *testing.T) {
	const hold, grace = 500 * time.Millisecond, 200 * time.Millisecond
	ts := startServer(t, func(c *server.Config) { c.ProbeHoldGrace = grace })
	rc, first := ts.dialProbe(t, uint32(hold/time.Millisecond), "")
	start := time.Now()
	expectProbeOK(t, first)
	expectCloseFrame(t, rc.next(t, 5*time.Second), chatdpb.CloseReason_PROBE_DONE, "probe hold elapsed")
	if el := time.Since(start); el < hold+grace-50*time.Millisecond {
		t.Fatalf("closed after %v, before the hold (%v) and the grace (%v)", el, hold, grace)
	}
	rc.expectEOF(t)
	ts.waitCloses(t, "probe_done", 1)
	waitUntil(t, "the held probe released", func() bool { return ts.heldProbes(t) == 0 })
}

// (e) A hold above the server's cap is cut to the cap.
func TestProbeHoldIsCapped(t *testing.T) {
	const maxHold, grace = 300 * time.Millisecond, 100 * time.Millisecond
	ts := startServer(t, func(c *server.Config) { c.MaxProbeHold, c.ProbeHoldGrace = maxHold, grace })
	rc, first := ts.dialProbe(t, uint32(time.Hour/time.Millisecond), "")
	start := time.Now()
	expectProbeOK(t, first)
	// Within a few seconds, not an hour.
	expectCloseFrame(t, rc.next(t, 5*time.Second), chatdpb.CloseReason_PROBE_DONE, "probe hold elapsed")
	if el := time.Since(start); el < maxHold+grace-50*time.Millisecond {
		t.Fatalf("closed after %v, before the capped hold (%v + %v)", el, maxHold, grace)
	}
	rc.expectEOF(t)
}

// (d) Held probes are capped per client address and in all; beyond a cap a probe is answered and
// closed at once, and a released slot can be taken again.
func TestHeldProbeCaps(t *testing.T) {
	ts := startServer(t, func(c *server.Config) { c.MaxHeldProbesPerAddr, c.MaxHeldProbes = 2, 3 })
	const hold = 60_000

	a1, first := ts.dialProbe(t, hold, "127.0.0.1")
	expectProbeOK(t, first)
	a2, first := ts.dialProbe(t, hold, "127.0.0.1")
	expectProbeOK(t, first)
	if n := ts.heldProbes(t); n != 2 {
		t.Fatalf("chatd_probes_held = %v, want 2", n)
	}
	rc, first := ts.dialProbe(t, hold, "127.0.0.1") // the address's cap
	refusedHold(t, rc, first)

	b1, first := ts.dialProbe(t, hold, "127.0.0.2")
	expectProbeOK(t, first)
	rc, first = ts.dialProbe(t, hold, "127.0.0.2") // the global cap
	refusedHold(t, rc, first)
	if n, m := ts.srv.HeldProbes(), ts.heldProbes(t); n != 3 || m != 3 {
		t.Fatalf("%d held probes, chatd_probes_held = %v, want 3", n, m)
	}
	ts.expectNoSessions(t)

	// Ending one hold frees its slot for another address.
	a1.send(t, &chatdpb.Envelope{Body: &chatdpb.Envelope_Ping{Ping: &chatdpb.Ping{Id: 1}}})
	if env := a1.next(t, 5*time.Second); env.GetPong().GetId() != 1 {
		t.Fatalf("got %v, want Pong{1}", env)
	}
	expectCloseFrame(t, a1.next(t, 5*time.Second), chatdpb.CloseReason_PROBE_DONE, "probe answered")
	waitUntil(t, "the slot released", func() bool { return ts.srv.HeldProbes() == 2 })
	b2, first := ts.dialProbe(t, hold, "127.0.0.2")
	expectProbeOK(t, first)
	if n := ts.heldProbes(t); n != 3 {
		t.Fatalf("chatd_probes_held = %v, want 3", n)
	}

	// Shutdown ends held probes with SERVER_SHUTDOWN and a retry hint, like sessions.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, rc := range []*rawConn{a2, b1, b2} {
		cl := expectCloseFrame(t, rc.next(t, 5*time.Second), chatdpb.CloseReason_SERVER_SHUTDOWN, "")
		if cl.GetRetryAfterMs() == 0 {
			t.Fatalf("shutdown close without a retry hint: %v", cl)
		}
		rc.expectEOF(t)
	}
	if n := ts.heldProbes(t); n != 0 {
		t.Fatalf("chatd_probes_held = %v after shutdown, want 0", n)
	}
}

// During a hold only a ping is allowed; a client's Close is echoed.
func TestProbeHoldOtherFrames(t *testing.T) {
	ts := startServer(t, nil)

	rc, first := ts.dialProbe(t, 60_000, "")
	expectProbeOK(t, first)
	rc.send(t, &chatdpb.Envelope{Body: &chatdpb.Envelope_Send{Send: &chatdpb.Send{ClientId: "x", To: "15550000000", Content: text("hi")}}})
	expectCloseFrame(t, rc.next(t, 5*time.Second), chatdpb.CloseReason_PROTOCOL_ERROR, "")
	rc.expectEOF(t)

	rc, first = ts.dialProbe(t, 60_000, "")
	expectProbeOK(t, first)
	rc.send(t, &chatdpb.Envelope{Body: &chatdpb.Envelope_Close{Close: &chatdpb.Close{Reason: chatdpb.CloseReason_CLIENT_CLOSED, Detail: "netcheck cancelled"}}})
	expectCloseFrame(t, rc.next(t, 5*time.Second), chatdpb.CloseReason_CLIENT_CLOSED, "netcheck cancelled")
	rc.expectEOF(t)

	// A client that just goes away frees its slot too.
	rc, first = ts.dialProbe(t, 60_000, "")
	expectProbeOK(t, first)
	rc.nc.Close()
	ts.waitCloses(t, "protocol_error", 1)
	ts.waitCloses(t, "client_closed", 1)
	ts.waitCloses(t, "connection_lost", 1)
	waitUntil(t, "every held probe released", func() bool { return ts.srv.HeldProbes() == 0 && ts.heldProbes(t) == 0 })
	ts.exchange(t)
}

// (c) Probes are limited per client address; past the limit the server answers RATE_LIMITED with a
// retry hint instead of PROBE_OK. Other addresses and account logins are not affected.
func TestProbeRateLimit(t *testing.T) {
	ts := startServer(t, func(c *server.Config) { c.ProbeBurst, c.ProbeEvery = 2, time.Minute })
	for range 2 {
		rc, first := ts.dialProbe(t, 0, "127.0.0.1")
		expectProbeOK(t, first)
		expectCloseFrame(t, rc.next(t, 5*time.Second), chatdpb.CloseReason_PROBE_DONE, "probe answered")
	}
	rc, first := ts.dialProbe(t, 0, "127.0.0.1")
	cl := expectCloseFrame(t, first, chatdpb.CloseReason_RATE_LIMITED, "")
	if ms := cl.GetRetryAfterMs(); ms == 0 || ms > uint32(time.Minute/time.Millisecond) {
		t.Fatalf("retry_after_ms = %d, want in (0, 60000]", ms)
	}
	rc.expectEOF(t)
	// A held probe is limited the same way (the limit comes before the hold).
	rc, first = ts.dialProbe(t, 60_000, "127.0.0.1")
	expectCloseFrame(t, first, chatdpb.CloseReason_RATE_LIMITED, "")
	rc.expectEOF(t)

	if n := metric(t, ts.mtrcs.Registry, "chatd_logins_total", "result", "probe_limited"); n != 2 {
		t.Fatalf("chatd_logins_total{probe_limited} = %v, want 2", n)
	}
	if n := metric(t, ts.mtrcs.Registry, "chatd_logins_total", "result", "probe"); n != 2 {
		t.Fatalf("chatd_logins_total{probe} = %v, want 2", n)
	}
	ts.waitCloses(t, "rate_limited", 2)

	// Another address has its own bucket.
	rc, first = ts.dialProbe(t, 0, "127.0.0.2")
	expectProbeOK(t, first)
	rc.expectClose(t, chatdpb.CloseReason_PROBE_DONE)

	// An account login from the limited address is not limited.
	ts.rawLogin(t)
	ts.exchange(t)
}

// Held probes are cheap: the connection's handler goroutine and a timer each, a bounded heap, all
// given back when they end.
func TestHeldProbesAreCheap(t *testing.T) {
	const (
		n            = 300
		perProbeHeap = 64 << 10 // both ends of the connection live in this process; generous
		dialers      = 8
	)
	raiseFDLimit(t, 2*n+1000)
	ts := startServer(t, func(c *server.Config) { c.MaxHeldProbesPerAddr, c.ProbeBurst = n, n })
	warmGoroutines(2*n + 100)
	base := snapMem()

	conns := make([]*rawConn, n)
	errs := make([]error, dialers)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for w := range dialers {
		wg.Go(func() {
			for i := w; i < n; i += dialers {
				rc, first, err := probeLogin(ctx, ts.addr, ts.key.Public, 600_000, "")
				if err == nil && first.GetLoginResult().GetStatus() != chatdpb.LoginResult_PROBE_OK {
					err = fmt.Errorf("first frame %v, want LoginResult{PROBE_OK}", first)
				}
				if err != nil {
					errs[w] = err
					return
				}
				conns[i] = rc
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, rc := range conns {
			if rc != nil {
				rc.nc.Close()
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if h := ts.srv.HeldProbes(); h != n {
		t.Fatalf("%d probes held, want %d", h, n)
	}
	during := snapMem()
	heapPer := float64(delta(during.heapAlloc, base.heapAlloc)) / n
	goroutinesPer := float64(during.goroutines-base.goroutines) / n
	t.Logf("%d held probes: heap %+d bytes (%.0f each, both ends), stacks %+d bytes, %.2f goroutines each",
		n, delta(during.heapAlloc, base.heapAlloc), heapPer, delta(during.stackInuse, base.stackInuse), goroutinesPer)
	if heapPer > perProbeHeap {
		t.Errorf("%.0f bytes of heap per held probe, want under %d", heapPer, perProbeHeap)
	}
	if goroutinesPer > 1.05 { // the handler; the test's side has none
		t.Errorf("%.2f goroutines per held probe, want 1 (the connection's handler)", goroutinesPer)
	}
	ts.expectNoSessions(t)

	for _, rc := range conns {
		rc.nc.Close()
	}
	ts.waitCloses(t, "connection_lost", n)
	waitUntil(t, "every held probe released", func() bool { return ts.srv.HeldProbes() == 0 && ts.heldProbes(t) == 0 })
	waitUntil(t, "the probes' goroutines to exit", func() bool { return runtime.NumGoroutine() <= base.goroutines+2 })
}
