package server_test

// Bad input: every kind of hostile or broken peer gets its connection closed, the close counted under
// the right reason in chatd_closes_total, and the server keeps serving normal clients afterwards.
// Everything runs on real loopback sockets against a real SQLite store.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flynn/noise"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/chatd-dev/chatd/internal/testutil"
	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/server"
	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// ---- helpers shared by the bad-input tests and the benchmarks ----

// metric returns the sum of the counters or gauges called name whose labels include the given
// name/value pairs (all series when none are given); 0 when there is none.
func metric(tb testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatalf("gather metrics: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, pairs []string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == pairs[i] && lp.GetValue() == pairs[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// closes is chatd_closes_total{reason}, or the total over every reason when reason is "".
func (ts *testServer) closes(tb testing.TB, reason string) float64 {
	tb.Helper()
	if reason == "" {
		return metric(tb, ts.mtrcs.Registry, "chatd_closes_total")
	}
	return metric(tb, ts.mtrcs.Registry, "chatd_closes_total", "reason", reason)
}

// waitCloses waits until chatd_closes_total{reason} is at least want. The counter is bumped when the
// server's handler finishes, just after the socket is closed, so it can trail what the peer saw.
func (ts *testServer) waitCloses(t *testing.T, reason string, want float64) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("chatd_closes_total{reason=%q} ≥ %v", reason, want), func() bool {
		return ts.closes(t, reason) >= want
	})
}

var phoneSeq atomic.Int64

// newPhone returns a phone number not used before in this test binary.
func newPhone() string { return fmt.Sprintf("1556%07d", phoneSeq.Add(1)) }

// exchange proves the server still serves: two new accounts log in with the client library and a
// message goes from one to the other and is delivered.
func (ts *testServer) exchange(t *testing.T) {
	t.Helper()
	from, to := newPhone(), newPhone()
	a := ts.connect(t, ts.register(t, from), nil)
	b := ts.connect(t, ts.register(t, to), nil)
	res, err := a.Send(ctxT(t), to, "after-bad-input", text("still here"))
	if err != nil {
		t.Fatalf("send after bad input: %v", err)
	}
	b.rec.waitFor(t, "the message sent after the bad input", func() bool { return len(b.rec.msgs) == 1 })
	if got := b.rec.msgs[0]; got.GetServerId() != res.ServerID || got.GetFrom() != from {
		t.Fatalf("delivered %v, want server id %d from %s", got, res.ServerID, from)
	}
	a.stop()
	b.stop()
}

// dialTCP opens a plain TCP connection to addr.
func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// closedByPeer reports whether err is how a read ends when the peer closed the connection (FIN, or
// RST when it closed with our bytes unread), as opposed to our own deadline.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// expectServerClose reads (and discards) until the server closes nc, failing if that takes longer
// than within.
func expectServerClose(t *testing.T, nc net.Conn, within time.Duration) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, nc)
	if err == nil {
		return // io.Copy reports a clean EOF as nil
	}
	if !closedByPeer(err) {
		t.Fatalf("server did not close the connection within %v: %v", within, err)
	}
}

// rawConn is a logged-in chat connection without the client library (no goroutines, no pings): the
// test writes exactly the bytes it wants.
type rawConn struct {
	nc net.Conn
	sc *noisesock.Conn
}

// rawLogin dials addr, runs the Noise handshake as dev and reads a successful LoginResult.
// pingMs is the ping interval announced to the server (0: the server's default).
func rawLogin(ctx context.Context, addr string, serverKey [32]byte, dev noisesock.Keypair, pingMs uint32) (*rawConn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return rawLoginOn(ctx, nc, serverKey, dev, pingMs)
}

// rawLoginOn is rawLogin on a connection already open; it closes nc on failure.
func rawLoginOn(ctx context.Context, nc net.Conn, serverKey [32]byte, dev noisesock.Keypair, pingMs uint32) (*rawConn, error) {
	sc, _, err := noisesock.Client(ctx, nc, noisesock.ClientConfig{DeviceKey: dev, ServerKey: serverKey,
		Hello: &chatdpb.ClientHello{ProtocolVersion: wire.Version, PingIntervalMs: pingMs, ClientVersion: "test/raw"}})
	if err != nil {
		nc.Close()
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetReadDeadline(dl)
	}
	b, err := sc.ReadFrame()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("reading the login result: %w", err)
	}
	var env chatdpb.Envelope
	if err := wire.DecodeEnvelope(b, &env); err != nil {
		nc.Close()
		return nil, err
	}
	if res := env.GetLoginResult(); res.GetStatus() != chatdpb.LoginResult_OK {
		nc.Close()
		return nil, fmt.Errorf("login: got %v", &env)
	}
	nc.SetDeadline(time.Time{})
	return &rawConn{nc: nc, sc: sc}, nil
}

func (ts *testServer) rawLogin(t *testing.T) *rawConn {
	t.Helper()
	rc, err := rawLogin(ctxT(t), ts.addr, ts.key.Public, ts.register(t, newPhone()), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.nc.Close() })
	return rc
}

// frame encrypts plaintext as the next transport frame.
func (rc *rawConn) frame(t *testing.T, plaintext []byte) []byte {
	t.Helper()
	b, err := rc.sc.AppendFrame(nil, plaintext)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (rc *rawConn) write(t *testing.T, b []byte) {
	t.Helper()
	rc.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := rc.nc.Write(b); err != nil {
		t.Fatal(err)
	}
}

// expectClose reads until the server's Close frame, checks its reason, and then expects the server to
// close the connection.
func (rc *rawConn) expectClose(t *testing.T, want chatdpb.CloseReason) {
	t.Helper()
	rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var env chatdpb.Envelope
	for {
		b, err := rc.sc.ReadFrame()
		if err != nil {
			t.Fatalf("read: %v; want a Close(%v) frame first", err, want)
		}
		if err := wire.DecodeEnvelope(b, &env); err != nil {
			t.Fatalf("server frame: %v", err)
		}
		if cl := env.GetClose(); cl != nil {
			if cl.GetReason() != want {
				t.Fatalf("closed with %v (%s), want %v", cl.GetReason(), cl.GetDetail(), want)
			}
			break
		}
	}
	if _, err := rc.sc.ReadFrame(); !closedByPeer(err) {
		t.Fatalf("after the Close frame: %v, want the connection closed", err)
	}
}

// handshakeMsg1 returns a real first Noise handshake message (an ephemeral key, empty payload).
func handshakeMsg1(t *testing.T) []byte {
	t.Helper()
	k, err := noisesock.GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: noisesock.CipherSuite, Pattern: noise.HandshakeXX, Initiator: true,
		Prologue: []byte(wire.Preamble), StaticKeypair: noise.DHKey{Private: k.Private[:], Public: k.Public[:]},
	})
	if err != nil {
		t.Fatal(err)
	}
	msg1, _, _, err := hs.WriteMessage(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return msg1
}

func frameOf(t *testing.T, payload []byte) []byte {
	t.Helper()
	b, err := wire.AppendFrame(nil, payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// raiseFDLimit makes sure the process may hold n open files, raising the soft (and, as root, the
// hard) RLIMIT_NOFILE.
func raiseFDLimit(t testing.TB, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	lim.Cur = n
	lim.Max = max(lim.Max, n)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("this test needs %d open files; raising RLIMIT_NOFILE: %v", n, err)
	}
}

// memSnap is the runtime's memory after two full collections.
type memSnap struct {
	heapAlloc, heapInuse, stackInuse, totalAlloc uint64
	goroutines                                   int
}

func snapMem() memSnap {
	runtime.GC()
	runtime.GC() // the second cycle frees what the first one's finalizers released
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memSnap{heapAlloc: m.HeapAlloc, heapInuse: m.HeapInuse, stackInuse: m.StackInuse,
		totalAlloc: m.TotalAlloc, goroutines: runtime.NumGoroutine()}
}

func delta(after, before uint64) int64 { return int64(after) - int64(before) }

// warmGoroutines makes the runtime create n goroutine descriptors (which it keeps for reuse).
func warmGoroutines(n int) {
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range n {
		wg.Go(func() { <-release })
	}
	close(release)
	wg.Wait()
}

// ---- tests ----

// TestBadInputBeforeLogin covers peers that never finish the handshake. Each gets a fresh server, so
// the close counters must show exactly one close, with the expected reason.
func TestBadInputBeforeLogin(t *testing.T) {
	const handshakeTimeout = 500 * time.Millisecond
	tests := []struct {
		name   string
		reason string // chatd_closes_total label
		result string // chatd_handshakes_total label
		// do sends the bad input on a new connection to addr and returns when the server has closed it.
		do func(t *testing.T, addr string)
	}{
		{"garbage", "bad_preamble", "bad_preamble", func(t *testing.T, addr string) {
			nc := dialTCP(t, addr)
			nc.Write(cat([]byte("\x00\xffnot chatd at all"), randomBytes(256)))
			expectServerClose(t, nc, 5*time.Second)
		}},
		{"http request", "bad_preamble", "bad_preamble", func(t *testing.T, addr string) {
			hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := hc.Get("http://" + addr + "/v1/config")
			if err == nil {
				resp.Body.Close()
				t.Fatalf("a plain HTTP request got a %s response from the chat port", resp.Status)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("HTTP request timed out (%v); the server should close at once", err)
			}
		}},
		{"tls client hello", "bad_preamble", "bad_preamble", func(t *testing.T, addr string) {
			nc := dialTCP(t, addr)
			tc := tls.Client(nc, &tls.Config{ServerName: "localhost", InsecureSkipVerify: true, NextProtos: []string{"chatd/1"}})
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			err := tc.Handshake()
			if err == nil {
				t.Fatal("TLS handshake against the raw chat port succeeded")
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("TLS handshake timed out (%v); the server should close at once", err)
			}
		}},
		{"preamble version 2", "unsupported_version", "failed", func(t *testing.T, addr string) {
			nc := dialTCP(t, addr)
			nc.Write(cat([]byte("CHD\x02"), frameOf(t, handshakeMsg1(t))))
			expectServerClose(t, nc, 5*time.Second)
		}},
		{"handshake frame header 0xFFFFFF", "frame_too_large", "failed", func(t *testing.T, addr string) {
			nc := dialTCP(t, addr)
			nc.Write([]byte(wire.Preamble + "\xff\xff\xff"))
			expectServerClose(t, nc, 5*time.Second)
		}},
		{"handshake frame just over its limit", "frame_too_large", "failed", func(t *testing.T, addr string) {
			nc := dialTCP(t, addr)
			nc.Write(cat([]byte(wire.Preamble), frameOf(t, randomBytes(wire.MaxHandshakeFrame+1))))
			expectServerClose(t, nc, 5*time.Second)
		}},
		{"msg1 garbage", "handshake_failed", "failed", func(t *testing.T, addr string) {
			nc := dialTCP(t, addr)
			nc.Write(cat([]byte(wire.Preamble), frameOf(t, []byte("garbage!"))))
			expectServerClose(t, nc, 5*time.Second)
		}},
		{"empty msg1", "handshake_failed", "failed", func(t *testing.T, addr string) {
			nc := dialTCP(t, addr)
			nc.Write([]byte(wire.Preamble + "\x00\x00\x00"))
			expectServerClose(t, nc, 5*time.Second)
		}},
		{"msg1 with a low-order key", "handshake_failed", "failed", func(t *testing.T, addr string) {
			nc := dialTCP(t, addr)
			nc.Write(cat([]byte(wire.Preamble), frameOf(t, make([]byte, 32)))) // X25519 with it gives all zeros
			expectServerClose(t, nc, 5*time.Second)
		}},
		{"data before the handshake ends", "handshake_failed", "failed", func(t *testing.T, addr string) {
			// A real msg1 and then, without waiting for msg2, random frames where msg3 belongs.
			nc := dialTCP(t, addr)
			out := cat([]byte(wire.Preamble), frameOf(t, handshakeMsg1(t)))
			for range 8 {
				out = cat(out, frameOf(t, randomBytes(100)))
			}
			nc.Write(out)
			expectServerClose(t, nc, 5*time.Second)
		}},
		{"silent", "handshake_timeout", "timeout", func(t *testing.T, addr string) {
			nc := dialTCP(t, addr)
			start := time.Now()
			expectServerClose(t, nc, 10*handshakeTimeout)
			if d := time.Since(start); d < handshakeTimeout*9/10 {
				t.Fatalf("closed after %v, before the handshake timeout of %v", d, handshakeTimeout)
			}
		}},
		{"half a preamble", "handshake_timeout", "timeout", func(t *testing.T, addr string) {
			nc := dialTCP(t, addr)
			nc.Write([]byte("CH"))
			expectServerClose(t, nc, 10*handshakeTimeout)
		}},
		{"preamble only", "handshake_timeout", "timeout", func(t *testing.T, addr string) {
			nc := dialTCP(t, addr)
			nc.Write([]byte(wire.Preamble))
			expectServerClose(t, nc, 10*handshakeTimeout)
		}},
		{"stalls after msg1", "handshake_timeout", "timeout", func(t *testing.T, addr string) {
			nc := dialTCP(t, addr)
			nc.Write(cat([]byte(wire.Preamble), frameOf(t, handshakeMsg1(t))))
			expectServerClose(t, nc, 10*handshakeTimeout)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, func(c *server.Config) { c.HandshakeTimeout = handshakeTimeout })
			tt.do(t, ts.addr)
			ts.waitCloses(t, tt.reason, 1)
			if got := ts.closes(t, ""); got != 1 {
				t.Fatalf("%v closes counted, want exactly 1 (%s)", got, tt.reason)
			}
			if got := metric(t, ts.mtrcs.Registry, "chatd_handshakes_total", "result", tt.result); got != 1 {
				t.Fatalf("chatd_handshakes_total{result=%q} = %v, want 1", tt.result, got)
			}
			ts.exchange(t)
		})
	}
}

// TestBadInputAfterLogin covers an authenticated device that sends what it must not.
func TestBadInputAfterLogin(t *testing.T) {
	envelope := func(t *testing.T, env *chatdpb.Envelope) []byte {
		b, err := wire.AppendEnvelope(nil, env)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name   string
		reason chatdpb.CloseReason
		bytes  func(t *testing.T, rc *rawConn) []byte // what the client writes
	}{
		{"corrupted frame", chatdpb.CloseReason_DECRYPT_FAILED, func(t *testing.T, rc *rawConn) []byte {
			f := rc.frame(t, envelope(t, &chatdpb.Envelope{Body: &chatdpb.Envelope_Ping{Ping: &chatdpb.Ping{Id: 7}}}))
			f[wire.HeaderLen+1] ^= 0x40 // one bit of the ciphertext
			return f
		}},
		{"corrupted tag", chatdpb.CloseReason_DECRYPT_FAILED, func(t *testing.T, rc *rawConn) []byte {
			f := rc.frame(t, envelope(t, &chatdpb.Envelope{Body: &chatdpb.Envelope_Ping{Ping: &chatdpb.Ping{Id: 7}}}))
			f[len(f)-1] ^= 0x01
			return f
		}},
		{"replayed frame", chatdpb.CloseReason_DECRYPT_FAILED, func(t *testing.T, rc *rawConn) []byte {
			f := rc.frame(t, envelope(t, &chatdpb.Envelope{Body: &chatdpb.Envelope_Ping{Ping: &chatdpb.Ping{Id: 7}}}))
			return cat(f, f) // the second copy has a stale nonce
		}},
		{"zero-length frame", chatdpb.CloseReason_DECRYPT_FAILED, func(t *testing.T, rc *rawConn) []byte {
			return []byte{0, 0, 0}
		}},
		{"frame shorter than the tag", chatdpb.CloseReason_DECRYPT_FAILED, func(t *testing.T, rc *rawConn) []byte {
			return frameOf(t, randomBytes(8))
		}},
		{"undecodable envelope", chatdpb.CloseReason_PROTOCOL_ERROR, func(t *testing.T, rc *rawConn) []byte {
			return rc.frame(t, []byte{0xff, 0xff, 0xff, 0xff, 0x0f})
		}},
		{"empty envelope", chatdpb.CloseReason_PROTOCOL_ERROR, func(t *testing.T, rc *rawConn) []byte {
			return rc.frame(t, nil)
		}},
		{"SendAck from a client", chatdpb.CloseReason_PROTOCOL_ERROR, func(t *testing.T, rc *rawConn) []byte {
			return rc.frame(t, envelope(t, &chatdpb.Envelope{Body: &chatdpb.Envelope_SendAck{SendAck: &chatdpb.SendAck{ClientId: "x", ServerId: 1}}}))
		}},
		{"LoginResult from a client", chatdpb.CloseReason_PROTOCOL_ERROR, func(t *testing.T, rc *rawConn) []byte {
			return rc.frame(t, envelope(t, &chatdpb.Envelope{Body: &chatdpb.Envelope_LoginResult{LoginResult: &chatdpb.LoginResult{Status: chatdpb.LoginResult_OK}}}))
		}},
		{"Deliver from a client", chatdpb.CloseReason_PROTOCOL_ERROR, func(t *testing.T, rc *rawConn) []byte {
			return rc.frame(t, envelope(t, &chatdpb.Envelope{Body: &chatdpb.Envelope_Deliver{Deliver: &chatdpb.Deliver{Seq: 1}}}))
		}},
		{"DeliverAck over its limit", chatdpb.CloseReason_PROTOCOL_ERROR, func(t *testing.T, rc *rawConn) []byte {
			seqs := make([]uint64, wire.MaxSeqsPerAck+1)
			for i := range seqs {
				seqs[i] = uint64(i + 1)
			}
			return rc.frame(t, envelope(t, &chatdpb.Envelope{Body: &chatdpb.Envelope_DeliverAck{DeliverAck: &chatdpb.DeliverAck{Seqs: seqs}}}))
		}},
		{"frame of 65536 announced", chatdpb.CloseReason_FRAME_TOO_LARGE, func(t *testing.T, rc *rawConn) []byte {
			return []byte{0x01, 0x00, 0x00}
		}},
		{"frame of 0xFFFFFF announced", chatdpb.CloseReason_FRAME_TOO_LARGE, func(t *testing.T, rc *rawConn) []byte {
			return []byte{0xff, 0xff, 0xff}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, nil)
			rc := ts.rawLogin(t)
			// A valid ping first: the session works until the bad frame.
			rc.write(t, rc.frame(t, envelope(t, &chatdpb.Envelope{Body: &chatdpb.Envelope_Ping{Ping: &chatdpb.Ping{Id: 1}}})))
			rc.write(t, tt.bytes(t, rc))
			rc.expectClose(t, tt.reason)
			name := wire.CloseReasonName(tt.reason)
			ts.waitCloses(t, name, 1)
			if got := ts.closes(t, ""); got != 1 {
				t.Fatalf("%v closes counted, want exactly 1 (%s)", got, name)
			}
			ts.exchange(t)
		})
	}
}

// TestSilentClientIsClosed: a logged-in client that sends nothing for twice its ping interval plus the
// pong timeout is closed with IDLE_TIMEOUT, and counted.
func TestSilentClientIsClosed(t *testing.T) {
	ts := startServer(t, func(c *server.Config) {
		c.MinPingInterval = 50 * time.Millisecond
		c.PongTimeout = 100 * time.Millisecond
	})
	rc, err := rawLogin(ctxT(t), ts.addr, ts.key.Public, ts.register(t, newPhone()), 50)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.nc.Close()
	start := time.Now()
	rc.expectClose(t, chatdpb.CloseReason_IDLE_TIMEOUT)
	if d := time.Since(start); d < 180*time.Millisecond {
		t.Fatalf("closed after %v, before 2 × 50 ms + 100 ms", d)
	}
	ts.waitCloses(t, "idle_timeout", 1)
	ts.exchange(t)
}

// TestSlowConsumerIsClosed: a client that keeps asking but never reads fills the server's socket
// buffer; the server must give up on it after WriteTimeout (write_timeout, counted) instead of
// blocking its writer, and its reader, forever.
func TestSlowConsumerIsClosed(t *testing.T) {
	ts := startServer(t, func(c *server.Config) { c.WriteTimeout = 300 * time.Millisecond })
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	nc, err := d.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rc, err := rawLoginOn(ctxT(t), nc, ts.key.Public, ts.register(t, newPhone()), 0)
	if err != nil {
		t.Fatal(err)
	}
	// Each query of MaxContactsPerQuery numbers is answered with several KiB.
	phones := make([]string, wire.MaxContactsPerQuery)
	for i := range phones {
		phones[i] = fmt.Sprintf("1557%07d", i)
	}
	deadline := time.Now().Add(30 * time.Second)
	for id := uint64(1); ; id++ {
		if time.Now().After(deadline) {
			t.Fatal("the server kept taking queries from a client that reads nothing")
		}
		b, err := wire.AppendEnvelope(nil, &chatdpb.Envelope{Body: &chatdpb.Envelope_ContactQuery{ContactQuery: &chatdpb.ContactQuery{RequestId: id, Phones: phones}}})
		if err != nil {
			t.Fatal(err)
		}
		nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := nc.Write(rc.frame(t, b)); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("query %d: the server stopped reading but did not close the connection: %v", id, err)
			}
			break // closed by the server
		}
	}
	ts.waitCloses(t, "write_timeout", 1)
	if got := ts.closes(t, ""); got != 1 {
		t.Fatalf("%v closes counted, want 1 (write_timeout)", got)
	}
	ts.exchange(t)
}

// TestHugeFrameHeaderIsNotAllocated: a preamble and a frame header announcing 16 MiB must be refused
// from the header alone. If the server allocated the announced size, 200 such connections would
// allocate over 3 GiB; we allow 128 KiB per connection for everything else both ends allocate.
func TestHugeFrameHeaderIsNotAllocated(t *testing.T) {
	const n = 200
	ts := startServer(t, nil)
	before := snapMem()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			nc, err := net.DialTimeout("tcp", ts.addr, 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(10 * time.Second))
			nc.Write([]byte(wire.Preamble + "\xff\xff\xff"))
			if _, err := io.Copy(io.Discard, nc); err != nil && !closedByPeer(err) {
				errs <- fmt.Errorf("server did not close: %w", err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ts.waitCloses(t, "frame_too_large", n)
	after := snapMem()
	allocated := delta(after.totalAlloc, before.totalAlloc)
	t.Logf("%d connections announcing 0xFFFFFF bytes: %d bytes allocated in all (%d per connection), live heap %+d bytes",
		n, allocated, allocated/n, delta(after.heapAlloc, before.heapAlloc))
	if allocated > n*128<<10 {
		t.Fatalf("allocated %d bytes for %d connections (%d each): the announced frame size is being allocated",
			allocated, n, allocated/n)
	}
	if d := delta(after.heapAlloc, before.heapAlloc); d > 4<<20 {
		t.Fatalf("live heap grew by %d bytes after %d rejected connections", d, n)
	}
	ts.exchange(t)
}

// TestSlowLorisByTheThousand opens 2,000 connections that send only the preamble (half of them) or
// nothing (the other half) and hold. The server must close every one at its handshake deadline, keep
// serving while they are open, hold each pending one in a bounded amount of heap, and give the memory
// back afterwards.
func TestSlowLorisByTheThousand(t *testing.T) {
	const (
		n                = 2000
		handshakeTimeout = time.Second
		perConnBound     = 64 << 10 // heap per pending connection, generous
		dialers          = 16
	)
	raiseFDLimit(t, 2*n+1000) // both ends of every connection live in this process
	ts := startServer(t, func(c *server.Config) { c.HandshakeTimeout = handshakeTimeout })

	// Two clients logged in before the flood exchange a message during it.
	alicePhone, bobPhone := newPhone(), newPhone()
	alice := ts.connect(t, ts.register(t, alicePhone), nil)
	bob := ts.connect(t, ts.register(t, bobPhone), nil)
	carolKey := ts.register(t, newPhone()) // logs in during the flood
	accepted0 := metric(t, ts.mtrcs.Registry, "chatd_connections_accepted_total")
	// The runtime never frees a goroutine descriptor (about 500 bytes of heap each) once it exists, it
	// reuses it. Create as many as the flood will need first, so that the baseline already holds them
	// and "after" measures what the server keeps, not the runtime's cache.
	warmGoroutines(2*n + 100)
	base := snapMem()

	// The flood. No goroutine per connection on our side: the conns are only held.
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	var dialErr atomic.Value
	for w := range dialers {
		wg.Go(func() {
			for i := w; i < n; i += dialers {
				nc, err := net.DialTimeout("tcp", ts.addr, 5*time.Second)
				if err != nil {
					dialErr.CompareAndSwap(nil, err)
					return
				}
				if i%2 == 0 {
					nc.Write([]byte(wire.Preamble))
				}
				conns[i] = nc
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	if err := dialErr.Load(); err != nil {
		t.Fatalf("dial: %v", err)
	}
	waitUntil(t, "the server to accept the flood", func() bool {
		return metric(t, ts.mtrcs.Registry, "chatd_connections_accepted_total")-accepted0 >= n
	})

	// While they are open: heap per pending connection.
	during := snapMem()
	pending := metric(t, ts.mtrcs.Registry, "chatd_connections_accepted_total") - accepted0 - ts.closes(t, "")
	if pending < n/2 {
		t.Fatalf("only %v of %d connections still pending when measured; the flood took too long to open", pending, n)
	}
	heapPer := float64(delta(during.heapAlloc, base.heapAlloc)) / pending
	t.Logf("during the flood: %v pending, heap %+d bytes (%.0f per pending connection), stacks %+d bytes, %+d goroutines",
		pending, delta(during.heapAlloc, base.heapAlloc), heapPer, delta(during.stackInuse, base.stackInuse),
		during.goroutines-base.goroutines)
	if heapPer > perConnBound {
		t.Errorf("%.0f bytes of heap per pending connection, want under %d", heapPer, perConnBound)
	}

	// While they are open: an exchange between logged-in clients and a new login.
	res, err := alice.Send(ctxT(t), bobPhone, "during-flood", text("still serving"))
	if err != nil {
		t.Fatalf("send during the flood: %v", err)
	}
	bob.rec.waitFor(t, "the message sent during the flood", func() bool { return len(bob.rec.msgs) == 1 })
	if bob.rec.msgs[0].GetServerId() != res.ServerID {
		t.Fatalf("bob got %v", bob.rec.msgs[0])
	}
	carol := ts.connect(t, carolKey, nil)
	if _, err := carol.Send(ctxT(t), alicePhone, "carol-during-flood", text("hi")); err != nil {
		t.Fatalf("send from a client that logged in during the flood: %v", err)
	}
	alice.rec.waitFor(t, "carol's message", func() bool { return len(alice.rec.msgs) == 1 })
	if timedOut := ts.closes(t, "handshake_timeout"); timedOut > n/2 {
		t.Fatalf("%v flood connections had already timed out when the exchange finished; it did not overlap the flood", timedOut)
	}
	carol.stop()
	waitUntil(t, "carol's session to end", func() bool { return ts.srv.Sessions() == 2 })

	// Every flood connection is closed by the server at its deadline and counted.
	ts.waitCloses(t, "handshake_timeout", n)
	if got := ts.closes(t, ""); got != n+1 { // and carol's client_closed
		t.Fatalf("%v closes counted, want %d handshake_timeout and carol's goodbye", got, n)
	}
	for i, nc := range conns {
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := nc.Read(make([]byte, 1)); !closedByPeer(err) {
			t.Fatalf("flood connection %d: read %v, want closed by the server", i, err)
		}
		nc.Close()
	}
	clear(conns)

	// And the memory is given back.
	waitUntil(t, "the flood's goroutines to exit", func() bool { return runtime.NumGoroutine() <= base.goroutines+2 })
	after := snapMem()
	t.Logf("after the flood: heap %+d bytes, stacks %+d bytes, %+d goroutines vs before",
		delta(after.heapAlloc, base.heapAlloc), delta(after.stackInuse, base.stackInuse), after.goroutines-base.goroutines)
	// What may remain: the server's connection table (a map does not shrink, ~70 KiB after 2,000
	// entries) and carol's stopped client, still referenced by the test (~350 KiB, mostly its dedup
	// set). A leaked pending session costs ~2 KiB, so 1 MiB catches any per-connection leak.
	if d := delta(after.heapAlloc, base.heapAlloc); d > 1<<20 {
		t.Errorf("heap is %d bytes above the baseline after the flood closed (%.0f per connection)", d, float64(d)/n)
	}
}

// TestAcceptSurvivesFDExhaustion: a flood that uses up the process's file descriptors (RLIMIT_NOFILE)
// makes accept fail with EMFILE. That is temporary — descriptors come back as connections close — so
// the server must keep its listener and accept again, not stop serving the port for good.
func TestAcceptSurvivesFDExhaustion(t *testing.T) {
	watch := &testutil.AcceptWatcher{Errs: make(chan error, 16)}
	ts := startServerOn(t, func(ln net.Listener) net.Listener { watch.Listener = ln; return watch }, nil)
	dev := ts.register(t, newPhone())

	release := testutil.ExhaustFDs(t)
	nc, err := net.DialTimeout("tcp", ts.addr, 5*time.Second) // takes the last descriptor
	if err != nil {
		release()
		t.Fatalf("dial: %v", err)
	}
	defer nc.Close()
	select {
	case err := <-watch.Errs: // the server tried to accept with no descriptor left
		if !errors.Is(err, syscall.EMFILE) {
			release()
			t.Fatalf("accept failed with %v, want EMFILE", err)
		}
	case <-time.After(10 * time.Second):
		release()
		t.Fatal("the server did not try to accept the connection")
	}
	release()

	// The connection that waited in the backlog is accepted and served once descriptors are back.
	logged := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rc, err := rawLoginOn(ctx, nc, ts.key.Public, dev, 0)
		if err == nil {
			rc.nc.Close()
		}
		logged <- err
	}()
	select {
	case err := <-ts.done:
		t.Fatalf("Serve returned after one failed accept (EMFILE): %v; the chat port is dead until restart", err)
	case err := <-logged:
		if err != nil {
			t.Fatalf("login on the connection accepted after the descriptors came back: %v", err)
		}
	}
	ts.exchange(t)
}
