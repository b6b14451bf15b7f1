package server_test

// Benchmarks of the chat server on loopback with a real SQLite store. Client and server share the
// process (and its CPUs), so the throughput figures are for both ends together.
//
//	go test -run='^$' -bench=. -benchtime=3s ./server/
//	go test -run='^$' -bench=IdleConnectionMemory -benchtime=1x ./server/ -args -chatd.idleconns=20000
//	go test -run='^$' -bench=IdleConnectionMemory -benchtime=1x -memprofilerate=1 ./server/ -args -chatd.idleheapprofile=/tmp/idle.pprof

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/server"
	"github.com/chatd-dev/chatd/server/store"
	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

var (
	idleConns = flag.Int("chatd.idleconns", 5000,
		"BenchmarkIdleConnectionMemory: idle logged-in connections to open (needs 2 descriptors each: RLIMIT_NOFILE ≥ 2N+1000)")
	idleHeapProfile = flag.String("chatd.idleheapprofile", "",
		"BenchmarkIdleConnectionMemory: write a heap profile to this file while the connections are idle (use with -memprofilerate=1)")
)

// startServerTB is startServer for benchmarks.
func startServerTB(tb testing.TB, mod func(*server.Config)) *testServer {
	tb.Helper()
	return startServerOn(tb, nil, mod)
}

// startServerOn is startServer with the listener passed through wrap (when not nil) before Serve.
func startServerOn(tb testing.TB, wrap func(net.Listener) net.Listener, mod func(*server.Config)) *testServer {
	tb.Helper()
	st, err := store.Open(filepath.Join(tb.TempDir(), "chatd.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	key, err := noisesock.GenerateKeypair()
	if err != nil {
		tb.Fatal(err)
	}
	ts := &testServer{st: st, key: key, done: make(chan error, 1), mtrcs: server.NewMetrics(nil)}
	cfg := server.Config{Store: st, StaticKey: key, Metrics: ts.mtrcs}
	if mod != nil {
		mod(&cfg)
	}
	ts.srv = server.New(cfg)
	if ts.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		tb.Fatal(err)
	}
	ts.addr = ts.ln.Addr().String()
	if wrap != nil {
		ts.ln = wrap(ts.ln)
	}
	go func() { ts.done <- ts.srv.Serve(ts.ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ts.srv.Shutdown(ctx)
	})
	return ts
}

func registerTB(tb testing.TB, ts *testServer, phone string) noisesock.Keypair {
	tb.Helper()
	dev, err := noisesock.GenerateKeypair()
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := ts.st.RegisterDevice(context.Background(), store.Account{Phone: phone, DevicePub: dev.Public[:]}); err != nil {
		tb.Fatal(err)
	}
	return dev
}

// connectTB starts a client-library client and waits until it is logged in.
func connectTB(tb testing.TB, ts *testServer, dev noisesock.Keypair, h client.Handler) *client.Client {
	tb.Helper()
	c, err := client.New(client.Config{Addrs: []string{ts.addr}, ServerKey: ts.key.Public, DeviceKey: dev, Handler: h})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := c.WaitConnected(wctx); err != nil {
		tb.Fatalf("client not connected: %v", err)
	}
	return c
}

// waitTB polls cond until it holds or 30 s pass.
func waitTB(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// BenchmarkHandshakeLogin measures full connects: TCP dial, Noise XX handshake, login (a store lookup
// of the device key) and reading the LoginResult, from GOMAXPROCS client goroutines. Each client
// closes with a reset so that no TIME_WAIT entries pile up and b.N is not bounded by ephemeral ports.
func BenchmarkHandshakeLogin(b *testing.B) {
	ts := startServerTB(b, nil)
	keys := make([]noisesock.Keypair, runtime.GOMAXPROCS(0)) // one account per RunParallel goroutine
	for i := range keys {
		keys[i] = registerTB(b, ts, newPhone())
	}
	var next atomic.Int32
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		dev := keys[int(next.Add(1)-1)%len(keys)]
		for pb.Next() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			rc, err := rawLogin(ctx, ts.addr, ts.key.Public, dev, 0)
			cancel()
			if err != nil {
				b.Error(err)
				return
			}
			rc.nc.(*net.TCPConn).SetLinger(0)
			rc.nc.Close()
		}
	})
	// The server's side of the last connections is torn down within the measured time.
	waitTB(b, "every session to end", func() bool { return ts.srv.Sessions() == 0 })
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
}

// BenchmarkIdleConnectionMemory opens -chatd.idleconns logged-in connections that then stay idle,
// and reports what the server holds for each: heap and goroutine stacks, and goroutines. It measures
// once per run, whatever b.N is; run it with -benchtime=1x. Then every client pings once, as an idle
// client does every ping interval, and after-ping-server-stack-B/conn and after-ping-goroutines/conn are
// the server's stacks and goroutines per connection after that round. -chatd.idleheapprofile writes a
// heap profile at the idle point (-memprofile is written after the cleanup, when the sessions are gone).
//
// Method. The clients are minimal (rawLogin: a net.Conn and a noisesock.Conn, no goroutines), but they
// live in this process, so the process-wide figures include them. We measure them alone first:
//
//  1. Client side. A stub server accepts, runs the Noise handshake, writes a LoginResult and closes its
//     end, dropping everything; after all stub handlers have returned, the only new live memory is the
//     N client connections, each exactly what it is in step 2. client = Δ(HeapInuse+StackInuse) / N.
//  2. Client and server. N clients log in to a real Server (announcing the longest ping interval so
//     none idles out); once Sessions() == N, total = Δ(HeapInuse+StackInuse) / N.
//
// server = total − client. Every Δ is between two readings taken after two full GCs. Goroutines per
// connection are all the server's (the raw clients have none). Kernel socket buffers and the
// runtime's netpoll descriptors are not Go heap and are not counted; neither is SQLite's page cache,
// which is not per connection. The goroutine descriptors the runtime allocates for the server's
// goroutines are counted (they are heap), except those the runtime had cached from earlier work.
func BenchmarkIdleConnectionMemory(b *testing.B) {
	n := *idleConns
	raiseFDLimit(b, uint64(2*n+1000))
	dialers := 4 * runtime.GOMAXPROCS(0)

	// openAll logs in n raw clients to addr from a few goroutines.
	openAll := func(addr string, serverKey [32]byte, devs []noisesock.Keypair) []*rawConn {
		conns := make([]*rawConn, n)
		var wg sync.WaitGroup
		var failed atomic.Value
		for w := range dialers {
			wg.Go(func() {
				for i := w; i < n; i += dialers {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					rc, err := rawLogin(ctx, addr, serverKey, devs[i%len(devs)], uint32(server.MaxPingInterval/time.Millisecond))
					cancel()
					if err != nil {
						failed.CompareAndSwap(nil, fmt.Errorf("connection %d: %w", i, err))
						return
					}
					conns[i] = rc
				}
			})
		}
		wg.Wait()
		if err := failed.Load(); err != nil {
			b.Fatal(err)
		}
		return conns
	}
	closeAll := func(conns []*rawConn) {
		for _, rc := range conns {
			if rc != nil {
				rc.nc.Close()
			}
		}
	}
	inuse := func(m memSnap) uint64 { return m.heapInuse + m.stackInuse }

	// Step 1: the client side alone, against a stub server.
	stubKey, err := noisesock.GenerateKeypair()
	if err != nil {
		b.Fatal(err)
	}
	stub, handled := startStubLogin(b, stubKey)
	anyDev, err := noisesock.GenerateKeypair()
	if err != nil {
		b.Fatal(err)
	}
	m0 := snapMem()
	clients := openAll(stub, stubKey.Public, []noisesock.Keypair{anyDev})
	waitTB(b, "the stub to finish every handshake", func() bool { return handled.Load() == int64(n) })
	m1 := snapMem()
	clientPer := float64(delta(inuse(m1), inuse(m0))) / float64(n)
	clientHeapPer := float64(delta(m1.heapAlloc, m0.heapAlloc)) / float64(n)
	closeAll(clients)
	clients = nil

	// Step 2: the same clients against the real server.
	ts := startServerTB(b, nil)
	devs := make([]noisesock.Keypair, n)
	for i := range devs {
		devs[i] = registerTB(b, ts, newPhone())
	}
	b.ResetTimer()
	m2 := snapMem()
	conns := openAll(ts.addr, ts.key.Public, devs)
	defer closeAll(conns)
	waitTB(b, "every session to be registered", func() bool { return ts.srv.Sessions() == n })
	m3 := snapMem()
	b.StopTimer()
	if *idleHeapProfile != "" {
		writeHeapProfile(b, *idleHeapProfile)
	}

	// Then one keepalive round, as idle clients do every ping interval: every client pings and reads
	// its pong. Whatever the server started to answer must be gone again, and the stacks of the
	// sessions' goroutines may have grown on the way (the raw clients have neither goroutines nor
	// stacks, so both figures are the server's).
	pingAll(b, conns, dialers)
	waitTB(b, "the goroutines started for the pongs to exit", func() bool { return runtime.NumGoroutine() <= m3.goroutines })
	m4 := snapMem()
	totalPer := float64(delta(inuse(m3), inuse(m2))) / float64(n)
	totalHeapPer := float64(delta(m3.heapAlloc, m2.heapAlloc)) / float64(n)
	serverStackPer := float64(delta(m3.stackInuse, m2.stackInuse)) / float64(n) // the clients have no stacks

	b.ReportMetric(totalPer-clientPer, "server-B/conn")
	b.ReportMetric(totalHeapPer-clientHeapPer, "server-live-heap-B/conn")
	b.ReportMetric(serverStackPer, "server-stack-B/conn")
	b.ReportMetric(float64(m3.goroutines-m2.goroutines)/float64(n), "goroutines/conn")
	b.ReportMetric(clientPer, "client-B/conn")
	b.ReportMetric(float64(n), "conns")
	b.ReportMetric(float64(delta(m4.stackInuse, m2.stackInuse))/float64(n), "after-ping-server-stack-B/conn")
	b.ReportMetric(float64(m4.goroutines-m2.goroutines)/float64(n), "after-ping-goroutines/conn")
}

// pingAll sends a Ping on every connection and reads its Pong, from a few goroutines.
func pingAll(tb testing.TB, conns []*rawConn, workers int) {
	tb.Helper()
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(conns); i += workers {
				if err := conns[i].ping(uint64(i + 1)); err != nil {
					failed.CompareAndSwap(nil, fmt.Errorf("connection %d: %w", i, err))
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		tb.Fatal(err)
	}
}

// ping sends Ping{id} and reads the server's next frame, which must be Pong{id}.
func (rc *rawConn) ping(id uint64) error {
	b, _, err := rc.sc.AppendEnvelope(nil, nil, &chatdpb.Envelope{Body: &chatdpb.Envelope_Ping{Ping: &chatdpb.Ping{Id: id}}})
	if err != nil {
		return err
	}
	rc.nc.SetDeadline(time.Now().Add(30 * time.Second))
	defer rc.nc.SetDeadline(time.Time{})
	if _, err := rc.nc.Write(b); err != nil {
		return err
	}
	f, err := rc.sc.ReadFrame()
	if err != nil {
		return err
	}
	var env chatdpb.Envelope
	if err := wire.DecodeEnvelope(f, &env); err != nil {
		return err
	}
	if env.GetPong().GetId() != id {
		return fmt.Errorf("got %v, want Pong{%d}", &env, id)
	}
	return nil
}

// writeHeapProfile writes the heap profile as of the last GC (snapMem ran two) to path.
func writeHeapProfile(tb testing.TB, path string) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		tb.Fatal(err)
	}
}

// startStubLogin serves the client half of a login on a loopback port: it accepts, runs the server
// side of the Noise handshake, answers with a successful LoginResult, closes the connection and
// forgets it. handled counts finished connections.
func startStubLogin(tb testing.TB, key noisesock.Keypair) (addr string, handled *atomic.Int64) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	handled = new(atomic.Int64)
	login := &chatdpb.Envelope{Body: &chatdpb.Envelope_LoginResult{LoginResult: &chatdpb.LoginResult{
		Status: chatdpb.LoginResult_OK, Phone: "15550000000", PingIntervalMs: 600000, MaxFrame: wire.MaxFrame, SessionId: "stub"}}}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer handled.Add(1)
				defer nc.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := wire.ReadPreamble(nc); err != nil {
					return
				}
				sc, _, err := noisesock.Server(ctx, nc, noisesock.ServerConfig{StaticKey: key})
				if err != nil {
					return
				}
				if buf, _, err := sc.AppendEnvelope(nil, nil, login); err == nil {
					nc.Write(buf)
				}
			}()
		}
	}()
	return ln.Addr().String(), handled
}

// BenchmarkSendAck: one client sends messages one after the other, each waiting for the server's
// SendAck (which comes after the message is durably stored). The recipient is offline.
func BenchmarkSendAck(b *testing.B) {
	ts := startServerTB(b, nil)
	to := newPhone()
	registerTB(b, ts, to)
	c := connectTB(b, ts, registerTB(b, ts, newPhone()), nil)
	content := text("a benchmark message of ordinary length, about like a short chat line")
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		if _, err := c.Send(ctx, to, fmt.Sprint("ack-", i), content); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkSendAckPipelined: one client with many sends in flight (64 goroutines per CPU on the one
// connection, each waiting for its own SendAck, like bizapi's gateway): the server reads on, the
// store commits whatever arrived meanwhile in one transaction. The recipient is offline.
func BenchmarkSendAckPipelined(b *testing.B) {
	ts := startServerTB(b, nil)
	to := newPhone()
	registerTB(b, ts, to)
	c := connectTB(b, ts, registerTB(b, ts, newPhone()), nil)
	content := text("a benchmark message of ordinary length, about like a short chat line")
	var seq atomic.Int64
	base := ts.st.WriterStats()
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, err := c.Send(ctx, to, fmt.Sprint("pack-", seq.Add(1)), content); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	st := ts.st.WriterStats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(st.Ops-base.Ops)/float64(max(1, st.Commits-base.Commits)), "ops/commit")
}

// counter is a client.Handler that signals every message.
type counter struct{ got chan struct{} }

func (c *counter) HandleMessage(context.Context, *chatdpb.Message) error {
	c.got <- struct{}{}
	return nil
}

func (c *counter) HandleReceipt(context.Context, *chatdpb.Receipt) error { return nil }

// BenchmarkSendDeliver: messages from a sender to an online receiver, end to end (send, SendAck,
// store, deliver, the receiver's Handler, DeliverAck, the delivered receipt back to the sender).
//
//   - sequential: one message at a time, the next sent when the previous one reached the receiver:
//     the figure is 1 / end-to-end latency.
//   - pipelined: 16 goroutines per CPU send on the one client (each waits for its own SendAck) and the
//     clock stops when the receiver has every message: throughput with many messages in flight.
func BenchmarkSendDeliver(b *testing.B) {
	setup := func(b *testing.B) (from *client.Client, to string, recv *counter) {
		ts := startServerTB(b, nil)
		to = newPhone()
		recv = &counter{got: make(chan struct{}, b.N)} // zero-size elements: no buffer is allocated
		connectTB(b, ts, registerTB(b, ts, to), recv)
		from = connectTB(b, ts, registerTB(b, ts, newPhone()), nil)
		return from, to, recv
	}
	content := text("a benchmark message of ordinary length, about like a short chat line")
	b.Run("sequential", func(b *testing.B) {
		from, to, recv := setup(b)
		ctx := context.Background()
		b.ResetTimer()
		for i := range b.N {
			if _, err := from.Send(ctx, to, fmt.Sprint("seq-", i), content); err != nil {
				b.Fatal(err)
			}
			<-recv.got
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("pipelined", func(b *testing.B) {
		from, to, recv := setup(b)
		var seq atomic.Int64
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				if _, err := from.Send(ctx, to, fmt.Sprint("par-", seq.Add(1)), content); err != nil {
					b.Error(err)
					return
				}
			}
		})
		deadline := time.After(time.Minute)
		for i := range b.N {
			select {
			case <-recv.got:
			case <-deadline:
				b.Fatalf("the receiver got %d of %d messages", i, b.N)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}

// BenchmarkPing: keepalive round trips on logged-in connections that are otherwise idle, the traffic
// of an idle client: Ping, the server's Pong. sequential: one connection, one ping at a time (the
// figure is the round trip). parallel: one connection per RunParallel goroutine (4 per CPU), each
// pinging in turn: the cost of a ping to client and server together.
func BenchmarkPing(b *testing.B) {
	ts := startServerTB(b, nil)
	login := func(b *testing.B) *rawConn {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rc, err := rawLogin(ctx, ts.addr, ts.key.Public, registerTB(b, ts, newPhone()), uint32(server.MaxPingInterval/time.Millisecond))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { rc.nc.Close() })
		return rc
	}
	b.Run("sequential", func(b *testing.B) {
		rc := login(b)
		b.ResetTimer()
		for i := range b.N {
			if err := rc.ping(uint64(i + 1)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		conns := make([]*rawConn, 4*runtime.GOMAXPROCS(0))
		for i := range conns {
			conns[i] = login(b)
		}
		var next atomic.Int32
		b.SetParallelism(4)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			rc := conns[int(next.Add(1)-1)%len(conns)]
			for id := uint64(1); pb.Next(); id++ {
				if err := rc.ping(id); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pings/s")
	})
}
