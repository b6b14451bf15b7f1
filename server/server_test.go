package server_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/content"
	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/server"
	"github.com/chatd-dev/chatd/server/store"
	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

type testServer struct {
	srv   *server.Server
	st    *store.Store
	key   noisesock.Keypair
	addr  string
	ln    net.Listener
	done  chan error
	mtrcs *server.Metrics
}

func startServer(t *testing.T, mod func(*server.Config)) *testServer {
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
	ts := &testServer{st: st, key: key, done: make(chan error, 1), mtrcs: server.NewMetrics(nil)}
	cfg := server.Config{Store: st, StaticKey: key, Metrics: ts.mtrcs}
	if mod != nil {
		mod(&cfg)
	}
	ts.srv = server.New(cfg)
	ts.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ts.ln.Addr().String()
	go func() { ts.done <- ts.srv.Serve(ts.ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ts.srv.Shutdown(ctx)
	})
	return ts
}

// register creates an account with a fresh device key directly in the store.
func (ts *testServer) register(t *testing.T, phone string) noisesock.Keypair {
	t.Helper()
	dev, err := noisesock.GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.st.RegisterDevice(context.Background(), store.Account{Phone: phone, DevicePub: dev.Public[:]}); err != nil {
		t.Fatal(err)
	}
	return dev
}

// recorder is a client.Handler that records what arrives.
type recorder struct {
	mu       sync.Mutex
	msgs     []*chatdpb.Message
	receipts []*chatdpb.Receipt
	changed  chan struct{}
	fail     int // refuse this many messages first
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) HandleMessage(_ context.Context, m *chatdpb.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail > 0 {
		r.fail--
		return errors.New("disk full (test)")
	}
	r.msgs = append(r.msgs, m)
	r.poke()
	return nil
}

func (r *recorder) HandleReceipt(_ context.Context, rc *chatdpb.Receipt) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.receipts = append(r.receipts, rc)
	r.poke()
	return nil
}

func (r *recorder) poke() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// waitFor waits until cond (called under r.mu) holds.
func (r *recorder) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

type testClient struct {
	*client.Client
	rec    *recorder
	cancel context.CancelFunc
	runErr chan error
}

func (ts *testServer) connect(t *testing.T, dev noisesock.Keypair, mod func(*client.Config)) *testClient {
	t.Helper()
	tc := ts.start(t, dev, mod)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tc.WaitConnected(ctx); err != nil {
		select {
		case err := <-tc.runErr:
			t.Fatalf("client stopped: %v", err)
		default:
		}
		t.Fatalf("not connected: %v", err)
	}
	return tc
}

func (ts *testServer) start(t *testing.T, dev noisesock.Keypair, mod func(*client.Config)) *testClient {
	t.Helper()
	rec := newRecorder()
	cfg := client.Config{
		Addrs: []string{ts.addr}, ServerKey: ts.key.Public, DeviceKey: dev, Handler: rec,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tc := &testClient{Client: c, rec: rec, cancel: cancel, runErr: make(chan error, 1)}
	go func() { tc.runErr <- c.Run(ctx) }()
	t.Cleanup(tc.stop)
	return tc
}

func (tc *testClient) stop() {
	tc.cancel()
}

func text(s string) *chatdpb.Content { return content.Text(s) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestMessageOnlineWithReceipts(t *testing.T) {
	ts := startServer(t, nil)
	alice := ts.connect(t, ts.register(t, "15550000001"), nil)
	bob := ts.connect(t, ts.register(t, "15550000002"), nil)

	res, err := alice.Send(ctxT(t), "+1 555 000 0002", "m1", text("hi bob"))
	if err != nil {
		t.Fatal(err)
	}
	if res.ServerID == 0 || res.Duplicate || res.Timestamp.IsZero() {
		t.Fatalf("send result %+v", res)
	}
	bob.rec.waitFor(t, "bob's message", func() bool { return len(bob.rec.msgs) == 1 })
	m := bob.rec.msgs[0]
	if m.GetFrom() != "15550000001" || m.GetServerId() != res.ServerID || string(m.GetContent().GetBody()) != `{"type":"text","text":"hi bob"}` {
		t.Fatalf("bob got %v", m)
	}
	alice.rec.waitFor(t, "delivered receipt", func() bool { return len(alice.rec.receipts) == 1 })
	if r := alice.rec.receipts[0]; r.GetType() != chatdpb.Receipt_DELIVERED || r.GetClientId() != "m1" || r.GetServerId() != res.ServerID || r.GetBy() != "15550000002" {
		t.Fatalf("receipt %v", r)
	}
	if err := bob.MarkRead(ctxT(t), res.ServerID); err != nil {
		t.Fatal(err)
	}
	alice.rec.waitFor(t, "read receipt", func() bool { return len(alice.rec.receipts) == 2 })
	if r := alice.rec.receipts[1]; r.GetType() != chatdpb.Receipt_READ || r.GetClientId() != "m1" {
		t.Fatalf("receipt %v", r)
	}
	// Marking read again produces no second receipt; a send with the same client id is a duplicate.
	if err := bob.MarkRead(ctxT(t), res.ServerID); err != nil {
		t.Fatal(err)
	}
	again, err := alice.Send(ctxT(t), "15550000002", "m1", text("hi bob"))
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.ServerID != res.ServerID {
		t.Fatalf("resend: %+v, want duplicate of %d", again, res.ServerID)
	}
	// A marker message proves nothing else is in flight before we count.
	if _, err := alice.Send(ctxT(t), "15550000002", "m2", text("marker")); err != nil {
		t.Fatal(err)
	}
	bob.rec.waitFor(t, "marker", func() bool { return len(bob.rec.msgs) == 2 })
	alice.rec.waitFor(t, "marker receipt", func() bool { return len(alice.rec.receipts) == 3 })
	if n := len(alice.rec.receipts); n != 3 {
		t.Fatalf("alice has %d receipts, want 3 (delivered, read, delivered)", n)
	}
}

func TestOfflineQueueDeliveredInOrder(t *testing.T) {
	ts := startServer(t, nil)
	alice := ts.connect(t, ts.register(t, "15550000001"), nil)
	bobKey := ts.register(t, "15550000002")
	const n = 300 // more than one fetch of the writer
	for i := range n {
		if _, err := alice.Send(ctxT(t), "15550000002", fmt.Sprint("c", i), text(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	bob := ts.connect(t, bobKey, nil)
	bob.rec.waitFor(t, "all messages", func() bool { return len(bob.rec.msgs) >= n })
	for i, m := range bob.rec.msgs {
		if want := fmt.Sprintf(`{"type":"text","text":"%d"}`, i); string(m.GetContent().GetBody()) != want {
			t.Fatalf("message %d is %s, want %s", i, m.GetContent().GetBody(), want)
		}
	}
	alice.rec.waitFor(t, "delivered receipts", func() bool { return len(alice.rec.receipts) == n })
}

func TestUnacknowledgedDeliveryIsRedelivered(t *testing.T) {
	ts := startServer(t, nil)
	alice := ts.connect(t, ts.register(t, "15550000001"), nil)
	bobKey := ts.register(t, "15550000002")
	bob := ts.start(t, bobKey, nil)
	bob.rec.mu.Lock()
	bob.rec.fail = 1 // the first attempt to store fails: no ack, the connection drops
	bob.rec.mu.Unlock()
	if _, err := alice.Send(ctxT(t), "15550000002", "x", text("once")); err != nil {
		t.Fatal(err)
	}
	bob.rec.waitFor(t, "redelivery", func() bool { return len(bob.rec.msgs) == 1 })
	if got := bob.Status().Reconnects; got < 1 {
		t.Fatalf("reconnects = %d, want ≥ 1 (the refused delivery must end the connection)", got)
	}
	alice.rec.waitFor(t, "delivered", func() bool { return len(alice.rec.receipts) == 1 })
	waitUntil(t, "an empty queue (alice's receipt acked)", func() bool {
		depth, err := ts.st.QueueDepth(context.Background())
		return err == nil && depth == 0
	})
}

func TestSendWhileDisconnectedIsResent(t *testing.T) {
	ts := startServer(t, nil)
	bob := ts.connect(t, ts.register(t, "15550000002"), nil)
	aliceKey := ts.register(t, "15550000001")
	// Alice submits before her client ever connects; the send must go out once it does.
	alice := ts.start(t, aliceKey, func(c *client.Config) { c.Addrs = []string{"127.0.0.1:1", ts.addr} })
	res, err := alice.Send(ctxT(t), "15550000002", "early", text("queued"))
	if err != nil {
		t.Fatal(err)
	}
	bob.rec.waitFor(t, "queued message", func() bool { return len(bob.rec.msgs) == 1 })
	if bob.rec.msgs[0].GetServerId() != res.ServerID {
		t.Fatal("wrong message")
	}
}

func TestReplacedConnection(t *testing.T) {
	ts := startServer(t, nil)
	key := ts.register(t, "15550000001")
	first := ts.connect(t, key, func(c *client.Config) { c.MinBackoff, c.MaxBackoff = time.Hour, time.Hour })
	second := ts.connect(t, key, nil)
	waitUntil(t, "the first client to be replaced", func() bool { return first.Status().LastClose == "replaced" })
	if second.Status().State != client.Connected || !ts.srv.Online("15550000001") {
		t.Fatal("second client not connected")
	}
}

func TestUnknownDeviceAndWrongServerKey(t *testing.T) {
	ts := startServer(t, nil)
	stranger, _ := noisesock.GenerateKeypair()
	c := ts.start(t, stranger, nil)
	if err := waitErr(t, c.runErr); !errors.Is(err, client.ErrUnknownDevice) {
		t.Fatalf("run: %v, want ErrUnknownDevice", err)
	}

	key := ts.register(t, "15550000001")
	other, _ := noisesock.GenerateKeypair()
	c = ts.start(t, key, func(c *client.Config) { c.ServerKey = other.Public })
	err := waitErr(t, c.runErr)
	var mismatch *noisesock.KeyMismatchError
	if !errors.As(err, &mismatch) || mismatch.Got != ts.key.Public {
		t.Fatalf("run: %v, want a key mismatch naming the server's key", err)
	}
}

// waitUntil polls cond (for state that offers nothing to wait on) until it holds or 10 s pass.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitFor(t, func() error {
		if cond() {
			return nil
		}
		return fmt.Errorf("timed out waiting for %s", what)
	})
}

// waitFor polls check for 10 s until it returns nil, and fails the test with its last error.
func waitFor(t *testing.T, check func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitErr(t *testing.T, ch chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("client did not stop")
		return nil
	}
}

func TestContactLookupAndUnknownRecipient(t *testing.T) {
	ts := startServer(t, nil)
	alice := ts.connect(t, ts.register(t, "15550000001"), nil)
	if _, err := ts.st.RegisterDevice(context.Background(), store.Account{Phone: "15550000009", Business: true, DisplayName: "Acme", DevicePub: make([]byte, 32)}); err != nil {
		t.Fatal(err)
	}
	got, err := alice.Lookup(ctxT(t), "+1 555 000 0009", "15550000008", "not a number")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || !got[0].GetRegistered() || !got[0].GetBusiness() || got[0].GetDisplayName() != "Acme" ||
		got[1].GetRegistered() || got[1].GetPhone() != "15550000008" || got[2].GetPhone() != "" {
		t.Fatalf("lookup: %v", got)
	}
	if _, err := alice.Send(ctxT(t), "15550000008", "u", text("x")); !errors.Is(err, client.ErrUnknownRecipient) {
		t.Fatalf("send to unregistered: %v", err)
	}
	if _, err := alice.Send(ctxT(t), "15550000009", "", &chatdpb.Content{Body: make([]byte, wire.MaxContentLen+1)}); !errors.Is(err, client.ErrRejected) {
		t.Fatalf("oversized content: %v", err)
	}
}

func TestKeepaliveAndIdleTimeout(t *testing.T) {
	ts := startServer(t, func(c *server.Config) {
		c.MinPingInterval = 50 * time.Millisecond
		c.PongTimeout = 100 * time.Millisecond
	})
	key := ts.register(t, "15550000001")
	// A pinging client stays up across many server idle windows and measures its round trip.
	c := ts.connect(t, key, func(c *client.Config) { c.PingInterval = 60 * time.Millisecond; c.PingJitter = 10 * time.Millisecond })
	waitUntil(t, "a ping round trip", func() bool { return c.Status().RTT > 0 })
	time.Sleep(600 * time.Millisecond) // several idle windows (2×60 ms + 100 ms) must pass
	if st := c.Status(); st.State != client.Connected || st.Reconnects != 0 {
		t.Fatalf("pinging client lost its connection: %+v", st)
	}
	c.stop()

	// A raw client that announces 50 ms and then stays silent is closed with IDLE_TIMEOUT.
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sc, _, err := noisesock.Client(ctxT(t), nc, noisesock.ClientConfig{DeviceKey: key, ServerKey: ts.key.Public,
		Hello: &chatdpb.ClientHello{ProtocolVersion: 1, PingIntervalMs: 50}})
	if err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var env chatdpb.Envelope
	for {
		b, err := sc.ReadFrame()
		if err != nil {
			t.Fatalf("read: %v (wanted a Close frame first)", err)
		}
		if err := wire.DecodeEnvelope(b, &env); err != nil {
			t.Fatal(err)
		}
		if cl := env.GetClose(); cl != nil {
			if cl.GetReason() != chatdpb.CloseReason_IDLE_TIMEOUT {
				t.Fatalf("closed with %v, want IDLE_TIMEOUT", cl.GetReason())
			}
			break
		}
	}
}

func TestShutdownSendsRetryAfter(t *testing.T) {
	ts := startServer(t, func(c *server.Config) { c.ShutdownRetryAfter = time.Second })
	var mu sync.Mutex
	var closes []client.Status
	c := ts.connect(t, ts.register(t, "15550000001"), func(c *client.Config) {
		c.OnStatus = func(s client.Status) {
			mu.Lock()
			defer mu.Unlock()
			if s.State == client.Disconnected && len(closes) == 0 {
				closes = append(closes, s)
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-ts.done; !errors.Is(err, server.ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	waitUntil(t, "the client to notice", func() bool { mu.Lock(); defer mu.Unlock(); return len(closes) > 0 })
	mu.Lock()
	first := closes[0]
	mu.Unlock()
	if first.LastClose != "server_shutdown" || !strings.Contains(first.LastError, "retry after") {
		t.Fatalf("first disconnect %+v, want server_shutdown with a retry-after hint", first)
	}
	_ = c
}

func TestReRegistrationEndsOldDeviceSession(t *testing.T) {
	ts := startServer(t, nil)
	old := ts.connect(t, ts.register(t, "15550000001"), nil)
	// The number is registered again on another device (what regapi does after a verify).
	newKey := ts.register(t, "15550000001")
	ts.srv.DeviceChanged("15550000001", newKey.Public)
	if err := waitErr(t, old.runErr); !errors.Is(err, client.ErrUnknownDevice) {
		t.Fatalf("old device: %v, want ErrUnknownDevice after being replaced", err)
	}
	// The new device logs in; the same key again does not kick it.
	c := ts.connect(t, newKey, nil)
	ts.srv.DeviceChanged("15550000001", newKey.Public)
	if _, err := c.Lookup(ctxT(t), "15550000001"); err != nil || c.Status().Reconnects != 0 {
		t.Fatalf("new device disturbed: %v, %+v", err, c.Status())
	}
}

func TestFromBusinessFlag(t *testing.T) {
	ts := startServer(t, nil)
	biz, _ := noisesock.GenerateKeypair()
	if _, err := ts.st.RegisterDevice(context.Background(), store.Account{Phone: "15550000009", Business: true, DisplayName: "Acme", DevicePub: biz.Public[:]}); err != nil {
		t.Fatal(err)
	}
	b := ts.connect(t, biz, nil)
	cust := ts.connect(t, ts.register(t, "15550000001"), nil)
	if _, err := b.Send(ctxT(t), "15550000001", "b1", text("hello from acme")); err != nil {
		t.Fatal(err)
	}
	if _, err := cust.Send(ctxT(t), "15550000009", "c1", text("hi acme")); err != nil {
		t.Fatal(err)
	}
	cust.rec.waitFor(t, "business message", func() bool { return len(cust.rec.msgs) == 1 })
	b.rec.waitFor(t, "customer message", func() bool { return len(b.rec.msgs) == 1 })
	if !cust.rec.msgs[0].GetFromBusiness() || b.rec.msgs[0].GetFromBusiness() {
		t.Fatalf("from_business: customer saw %v, business saw %v", cust.rec.msgs[0].GetFromBusiness(), b.rec.msgs[0].GetFromBusiness())
	}
}

// sendMany sends n messages from c to `to` over `par` concurrent senders, client ids prefix-0…, and
// returns when every one is acknowledged.
func sendMany(t *testing.T, c *testClient, to, prefix string, n, par int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, par)
	for p := range par {
		wg.Go(func() {
			for i := p; i < n; i += par {
				if _, err := c.Send(ctxT(t), to, fmt.Sprint(prefix, i), text(fmt.Sprint(i))); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// checkDeliveredOnce checks that rec got exactly n messages, each once, in server id order (the order
// the server stored them in).
func checkDeliveredOnce(t *testing.T, rec *recorder, n int) {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.msgs) != n {
		t.Fatalf("%d messages delivered, want %d", len(rec.msgs), n)
	}
	for i := 1; i < len(rec.msgs); i++ {
		if a, b := rec.msgs[i-1].GetServerId(), rec.msgs[i].GetServerId(); a >= b {
			t.Fatalf("delivery %d has server id %d after %d: out of order or twice", i, b, a)
		}
	}
}

// A session that has read its queue gets new deliveries handed over by the store's writer as they are
// committed, without reading them back: messages and receipts alike, each once, in order.
func TestLiveDeliveriesAreHandedOver(t *testing.T) {
	ts := startServer(t, nil)
	alice := ts.connect(t, ts.register(t, "15550000001"), nil)
	bob := ts.connect(t, ts.register(t, "15550000002"), nil)
	const n = 200
	sendMany(t, alice, "15550000002", "h", n, 8)
	bob.rec.waitFor(t, "all messages", func() bool { return len(bob.rec.msgs) >= n })
	alice.rec.waitFor(t, "all receipts", func() bool { return len(alice.rec.receipts) >= n })
	checkDeliveredOnce(t, bob.rec, n)
	reg := ts.mtrcs.Registry
	if read, handed := metric(t, reg, "chatd_deliveries_sent_total", "source", "read"),
		metric(t, reg, "chatd_deliveries_sent_total", "source", "handed_over"); read != 0 || handed != 2*n {
		t.Fatalf("deliveries read back %v, handed over %v; want 0 and %d (%d messages, %d receipts)", read, handed, 2*n, n, n)
	}
}

// A session that logs in while messages keep being committed reads its queue and then takes over the
// handed-over ones: nothing committed between the read and going live is lost or delivered twice.
func TestDeliveriesDuringLoginOnceInOrder(t *testing.T) {
	ts := startServer(t, nil)
	alice := ts.connect(t, ts.register(t, "15550000001"), nil)
	bobKey := ts.register(t, "15550000002")
	const n = 600
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		sendMany(t, alice, "15550000002", "l", n, 4)
	}()
	waitUntil(t, "some messages stored", func() bool { return metric(t, ts.mtrcs.Registry, "chatd_messages_total", "event", "stored") >= 50 })
	bob := ts.connect(t, bobKey, nil)
	<-sent
	bob.rec.waitFor(t, "all messages", func() bool { return len(bob.rec.msgs) >= n })
	checkDeliveredOnce(t, bob.rec, n)
	if handed := metric(t, ts.mtrcs.Registry, "chatd_deliveries_sent_total", "source", "handed_over"); handed == 0 {
		t.Fatal("no delivery was handed over: the session never went live")
	}
}

// A recipient whose window is small falls behind a fast sender: the handed-over items overflow and
// the session goes back to reading its queue, still delivering each message once, in order.
func TestHandoverOverflowFallsBackToQueue(t *testing.T) {
	ts := startServer(t, func(c *server.Config) { c.MaxInflight = 2 })
	alice := ts.connect(t, ts.register(t, "15550000001"), nil)
	bob := ts.connect(t, ts.register(t, "15550000002"), nil)
	const n = 1000
	sendMany(t, alice, "15550000002", "o", n, 16)
	bob.rec.waitFor(t, "all messages", func() bool { return len(bob.rec.msgs) >= n })
	checkDeliveredOnce(t, bob.rec, n)
	if read := metric(t, ts.mtrcs.Registry, "chatd_deliveries_sent_total", "source", "read"); read == 0 {
		t.Fatal("no delivery was read back: the overflow path did not run")
	}
}

// An item committed while a session reads its queue (after the read's snapshot, before it goes live)
// is handed over and delivered, not lost between the two.
func TestItemCommittedDuringQueueReadIsDelivered(t *testing.T) {
	ts := startServer(t, nil)
	alice := ts.connect(t, ts.register(t, "15550000001"), nil)
	bobKey := ts.register(t, "15550000002")
	if _, err := alice.Send(ctxT(t), "15550000002", "before", text("queued before login")); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	restore := server.SetAfterQueueRead(func(phone string) {
		if phone != "15550000002" {
			return
		}
		once.Do(func() {
			// Bob's writer has read the queue (one message) and waits for this to return.
			if _, err := alice.Send(ctxT(t), "15550000002", "during", text("committed during the read")); err != nil {
				t.Error(err)
			}
		})
	})
	defer restore()
	bob := ts.connect(t, bobKey, nil)
	bob.rec.waitFor(t, "both messages", func() bool { return len(bob.rec.msgs) >= 2 })
	checkDeliveredOnce(t, bob.rec, 2)
}
