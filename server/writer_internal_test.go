package server

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/server/store"
	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// pipeSession is a logged-in session on one end of a net.Pipe, with no reader: the test plays the
// reader and the store callbacks. cli decrypts what the session's writers write.
func pipeSession(t *testing.T) (s *session, cli *noisesock.Conn, cliNC net.Conn) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "chatd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, err := noisesock.GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	dev, err := noisesock.GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	srvNC, cliNC := net.Pipe()
	t.Cleanup(func() { srvNC.Close(); cliNC.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type result struct {
		c   *noisesock.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		if err := wire.ReadPreamble(srvNC); err != nil {
			done <- result{nil, err}
			return
		}
		c, _, err := noisesock.Server(ctx, srvNC, noisesock.ServerConfig{StaticKey: key})
		done <- result{c, err}
	}()
	cli, _, err = noisesock.Client(ctx, cliNC, noisesock.ClientConfig{DeviceKey: dev, ServerKey: key.Public,
		Hello: &chatdpb.ClientHello{ProtocolVersion: wire.Version}})
	if err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	srv := New(Config{Store: st, StaticKey: key, MaxPipelined: 1 << 20})
	s = newSession(srv, srvNC)
	s.conn, s.phone, s.id = r.c, "15550000001", "test"
	s.slots = make(chan struct{}, srv.cfg.MaxPipelined)
	s.mu.Lock()
	s.wstate = writerIdle
	s.mu.Unlock()
	return s, cli, cliNC
}

// readEnvelope reads and decodes the next frame the session wrote, within 10 s.
func readEnvelope(t *testing.T, cli *noisesock.Conn, cliNC net.Conn) *chatdpb.Envelope {
	t.Helper()
	cliNC.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := cli.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	var env chatdpb.Envelope
	if err := wire.DecodeEnvelope(b, &env); err != nil {
		t.Fatal(err)
	}
	return &env
}

// Output queued from several goroutines while writers keep finding the queues empty and exiting is
// never left without a writer: every frame arrives, each producer's in its order, and at the end the
// session is idle with nothing queued and no writer goroutine. Run it under -race.
func TestWriterExitRacesEnqueue(t *testing.T) {
	iterations := 3000
	if testing.Short() {
		iterations = 300
	}
	s, cli, cliNC := pipeSession(t)
	// Reader goroutine of the test: pongs (s.outq, via reply as the session's reader queues them) and
	// SendAcks (s.replies, via finishOp as store callbacks queue them) arrive each in order.
	var wantPongs, wantAcks = uint64(iterations), uint64(iterations)
	readErr := make(chan error, 1)
	go func() {
		var pongs, acks uint64
		for pongs < wantPongs || acks < wantAcks {
			cliNC.SetReadDeadline(time.Now().Add(10 * time.Second))
			b, err := cli.ReadFrame()
			if err != nil {
				readErr <- err
				return
			}
			var env chatdpb.Envelope
			if err := wire.DecodeEnvelope(b, &env); err != nil {
				readErr <- err
				return
			}
			switch {
			case env.GetPong() != nil:
				if pongs++; env.GetPong().GetId() != pongs {
					readErr <- fmt.Errorf("pong %d arrived as number %d", env.GetPong().GetId(), pongs)
					return
				}
			case env.GetSendAck() != nil:
				if acks++; env.GetSendAck().GetServerId() != acks {
					readErr <- fmt.Errorf("SendAck %d arrived as number %d", env.GetSendAck().GetServerId(), acks)
					return
				}
			default:
				readErr <- fmt.Errorf("unexpected %v", &env)
				return
			}
		}
		readErr <- nil
	}()

	var wg sync.WaitGroup
	wg.Go(func() { // the session's reader: pongs
		for i := range iterations {
			if err := s.reply(&chatdpb.Envelope{Body: &chatdpb.Envelope_Pong{Pong: &chatdpb.Pong{Id: uint64(i + 1)}}}); err != nil {
				t.Error(err)
				return
			}
			if i%3 == 0 {
				runtime.Gosched() // let the writer drain and head for the exit
			}
		}
	})
	wg.Go(func() { // the store's callback goroutine: ordered replies
		for i := range iterations {
			s.slots <- struct{}{}
			s.beginOp()
			s.finishOp("test", &chatdpb.Envelope{Body: &chatdpb.Envelope_SendAck{SendAck: &chatdpb.SendAck{ServerId: uint64(i + 1)}}}, nil)
			if i%2 == 0 {
				runtime.Gosched()
			}
		}
	})
	wg.Go(func() { // other sessions' commits: wakes (the account's queue is empty: fetches find nothing)
		for i := range iterations / 10 {
			s.wakeWriter()
			if i%2 == 0 {
				runtime.Gosched()
			}
		}
	})
	wg.Wait()
	if err := <-readErr; err != nil {
		t.Fatalf("client: %v", err)
	}

	// Idle again: no writer, nothing queued, every slot given back.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		idle := s.wstate == writerIdle && len(s.outq) == 0 && len(s.replies) == 0 && !s.fetch
		s.mu.Unlock()
		if idle {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the session did not go idle")
		}
		time.Sleep(time.Millisecond)
	}
	s.writers.Wait() // returns at once: no writer goroutine is left
	if n := len(s.slots); n != 0 {
		t.Errorf("%d slots still taken", n)
	}

	// close on an idle session starts a writer for the Close frame, which closes the connection.
	s.close(chatdpb.CloseReason_SERVER_SHUTDOWN, "test", 3*time.Second)
	if env := readEnvelope(t, cli, cliNC); env.GetClose().GetReason() != chatdpb.CloseReason_SERVER_SHUTDOWN ||
		env.GetClose().GetRetryAfterMs() != 3000 {
		t.Fatalf("got %v, want Close{SERVER_SHUTDOWN, retry after 3 s}", env)
	}
	s.writers.Wait()
	if _, err := cli.ReadFrame(); err == nil {
		t.Fatal("the connection is still open after the Close frame")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wstate != writerDone {
		t.Fatalf("writer state %d after close, want writerDone", s.wstate)
	}
}

// A reader with outqCap unordered replies queued waits for the writer to take one (a client that
// pings and never reads stops being read), and a close ends the wait.
func TestReplyWaitsForRoom(t *testing.T) {
	s, _, _ := pipeSession(t)
	s.mu.Lock()
	s.wstate = writerRunning // a writer that is stuck in a write: the test takes from outq itself
	s.mu.Unlock()
	pong := func(id uint64) *chatdpb.Envelope {
		return &chatdpb.Envelope{Body: &chatdpb.Envelope_Pong{Pong: &chatdpb.Pong{Id: id}}}
	}
	for i := range outqCap {
		if err := s.reply(pong(uint64(i + 1))); err != nil {
			t.Fatal(err)
		}
	}
	replied := make(chan error, 1)
	go func() { replied <- s.reply(pong(outqCap + 1)) }()
	select {
	case err := <-replied:
		t.Fatalf("reply with %d queued returned %v; want it to wait", outqCap, err)
	case <-time.After(50 * time.Millisecond):
	}
	s.mu.Lock()
	if got := s.popOutLocked().GetPong().GetId(); got != 1 {
		t.Errorf("took Pong{%d}, want Pong{1}", got)
	}
	s.mu.Unlock()
	if err := <-replied; err != nil {
		t.Fatalf("reply after the writer took one: %v", err)
	}
	s.mu.Lock()
	n, last := len(s.outq), s.outq[len(s.outq)-1].GetPong().GetId()
	s.mu.Unlock()
	if n != outqCap || last != outqCap+1 {
		t.Fatalf("%d queued, the last Pong{%d}; want %d, Pong{%d}", n, last, outqCap, outqCap+1)
	}

	go func() { replied <- s.reply(pong(outqCap + 2)) }()
	select {
	case err := <-replied:
		t.Fatalf("reply with %d queued returned %v; want it to wait", outqCap, err)
	case <-time.After(50 * time.Millisecond):
	}
	s.close(chatdpb.CloseReason_SERVER_SHUTDOWN, "test", 0)
	if err := <-replied; err != errSessionClosed {
		t.Fatalf("waiting reply after close: %v, want errSessionClosed", err)
	}
}

// A close that comes while a probe's PROBE_OK is being written (Shutdown, say) is not lost: the Close
// frame follows the PROBE_OK, then the connection closes. (Before, the close could fall between the
// PROBE_OK and the hold and close the connection without a Close frame.)
func TestProbeClosedWhileAnswered(t *testing.T) {
	s, cli, cliNC := pipeSession(t)
	s.mu.Lock()
	s.wstate = writerNone // not logged in: a probe
	s.mu.Unlock()
	answered := make(chan error, 1)
	go func() {
		answered <- s.probe(&chatdpb.ClientHello{ProtocolVersion: wire.Version, Probe: true, ProbeHoldMs: 60_000})
	}()
	// net.Pipe: the PROBE_OK write waits for the client to read, so the close comes during it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		st := s.wstate
		s.mu.Unlock()
		if st == writerAnswering {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writer state %d, never writerAnswering", st)
		}
		time.Sleep(time.Millisecond)
	}
	s.close(chatdpb.CloseReason_SERVER_SHUTDOWN, "server shutting down", 2*time.Second)
	read := func() *chatdpb.Envelope { return readEnvelope(t, cli, cliNC) }
	if env := read(); env.GetLoginResult().GetStatus() != chatdpb.LoginResult_PROBE_OK {
		t.Fatalf("got %v, want LoginResult{PROBE_OK}", env)
	}
	if env := read(); env.GetClose().GetReason() != chatdpb.CloseReason_SERVER_SHUTDOWN || env.GetClose().GetRetryAfterMs() != 2000 {
		t.Fatalf("got %v, want Close{SERVER_SHUTDOWN, retry after 2 s}", env)
	}
	if err := <-answered; err != errSessionClosed {
		t.Fatalf("probe: %v, want errSessionClosed", err)
	}
	if _, err := cli.ReadFrame(); err == nil {
		t.Fatal("the connection is still open after the Close frame")
	}
	s.srv.releaseHold(s.hold.addr) // what finish does
}
