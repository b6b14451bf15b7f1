package client_test

// End-to-end tests of the transports and the dial policy on real loopback sockets: a dev-mode chatd
// node (node.Start on 127.0.0.1:0 with its dev CA), real TLS, real WebSockets and a real HTTP CONNECT
// proxy. Nothing sleeps for readiness: tests wait for conditions with deadlines. Durations are
// logged, never asserted (docs/benchmarks.md has the figures and the command).

import (
	"bufio"
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/client/regclient"
	"github.com/chatd-dev/chatd/internal/testutil"
	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/server/node"
	"github.com/chatd-dev/chatd/server/node/nodetest"
	"github.com/chatd-dev/chatd/server/store"
	"github.com/chatd-dev/chatd/transport"
	"github.com/chatd-dev/chatd/transport/transporttest"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// env is a running dev-mode chatd node and the endpoints it serves.
type env struct {
	n             *node.Node
	roots         *x509.CertPool
	logs          *testutil.Buffer
	tcp, tls, ws  transport.Endpoint
	chatPort, web int
	phones        atomic.Int64
}

func startEnv(t testing.TB, mod func(*node.Config)) *env {
	t.Helper()
	logs := &testutil.Buffer{}
	cfg := node.Config{
		AdminListen: "127.0.0.1:0", PublicHost: "127.0.0.1",
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	n := nodetest.Start(t, cfg)
	roots, err := regclient.LoadCAFile(n.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{n: n, roots: roots, logs: logs,
		chatPort: n.ChatAddr.(*net.TCPAddr).Port, web: n.HTTPSAddr.(*net.TCPAddr).Port}
	e.tcp = transport.Endpoint{Host: "127.0.0.1", Port: e.chatPort, Transport: transport.TransportTCP}
	e.tls = transport.Endpoint{Host: "127.0.0.1", Port: e.web, Transport: transport.TransportTLS}
	e.ws = transport.Endpoint{Host: "127.0.0.1", Port: e.web, Transport: transport.TransportWS}
	return e
}

// register creates an account with a fresh device key.
func (e *env) register(t testing.TB) (string, noisesock.Keypair) {
	t.Helper()
	phone := fmt.Sprintf("1555%07d", e.phones.Add(1))
	dev, err := noisesock.GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.n.Store.RegisterDevice(context.Background(), store.Account{Phone: phone, DevicePub: dev.Public[:]}); err != nil {
		t.Fatal(err)
	}
	return phone, dev
}

// user is a running client with an inbox.
type user struct {
	*client.Client
	phone     string
	inbox     chan *chatdpb.Message
	runErr    chan error
	cancelNow context.CancelFunc
}

type inboxHandler chan *chatdpb.Message

func (h inboxHandler) HandleMessage(_ context.Context, m *chatdpb.Message) error {
	h <- m
	return nil
}
func (h inboxHandler) HandleReceipt(context.Context, *chatdpb.Receipt) error { return nil }

// start runs a client for a new account with cfg (Endpoints, timers…); the test's end stops it.
func (e *env) start(t *testing.T, cfg client.Config) *user {
	t.Helper()
	phone, dev := e.register(t)
	u := &user{phone: phone, inbox: make(chan *chatdpb.Message, 16), runErr: make(chan error, 1)}
	cfg.ServerKey, cfg.DeviceKey, cfg.Handler = e.n.ServerKey, dev, inboxHandler(u.inbox)
	if cfg.RootCAs == nil {
		cfg.RootCAs = e.roots
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	u.Client = c
	ctx, cancel := context.WithCancel(context.Background())
	u.cancelNow = cancel
	go func() { u.runErr <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); u.stop(t) })
	return u
}

// stop waits for Run to return (after its context was cancelled).
func (u *user) stop(t *testing.T) {
	select {
	case err := <-u.runErr:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		u.runErr <- err // for later callers
	case <-time.After(10 * time.Second):
		t.Error("Run did not return")
	}
}

func (u *user) waitConnected(t *testing.T) client.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := u.WaitConnected(ctx); err != nil {
		t.Fatalf("not connected: %v (status %+v)", err, u.Status())
	}
	return u.Status()
}

// send sends text from u to to and waits until to has it.
func send(t *testing.T, from, to *user, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := from.Send(ctx, to.phone, "", &chatdpb.Content{Version: 1, Body: []byte(text)}); err != nil {
		t.Fatalf("send %s → %s: %v", from.phone, to.phone, err)
	}
	select {
	case m := <-to.inbox:
		if string(m.GetContent().GetBody()) != text || m.GetFrom() != from.phone {
			t.Fatalf("%s got %q from %s, want %q from %s", to.phone, m.GetContent().GetBody(), m.GetFrom(), text, from.phone)
		}
	case <-ctx.Done():
		t.Fatalf("%s did not get %q", to.phone, text)
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// metric returns the value of the sample named exactly series (with labels) on the node's
// /metrics, 0 when absent.
func (e *env) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + e.n.AdminAddr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if name, val, ok := strings.Cut(sc.Text(), " "); ok && name == series {
			f, _ := strconv.ParseFloat(val, 64)
			return f
		}
	}
	return 0
}

// TestEachTransportEndToEnd logs in and exchanges messages over each transport — raw chatd on the
// chat port, TLS with ALPN chatd/1 and WebSocket on the 443 port — and checks that the status, the
// server's metrics and its logs name the transport.
func TestEachTransportEndToEnd(t *testing.T) {
	e := startEnv(t, nil)
	bob := e.start(t, client.Config{Endpoints: []transport.Endpoint{e.tcp}})
	bob.waitConnected(t)
	for _, ep := range []transport.Endpoint{e.tcp, e.tls, e.ws} {
		t.Run(ep.Transport, func(t *testing.T) {
			alice := e.start(t, client.Config{Endpoints: []transport.Endpoint{ep}, ClientVersion: "test/" + ep.Transport})
			st := alice.waitConnected(t)
			if st.Transport != ep.Transport || st.Port != ep.Port || st.Endpoint != ep || st.Addr != ep.Addr() || st.Proxy != "" {
				t.Errorf("status %+v, want endpoint %s", st, ep)
			}
			send(t, alice, bob, "hello over "+ep.Transport)
			send(t, bob, alice, "answer to "+ep.Transport)
			want := 1.0
			if ep.Transport == transport.TransportTCP {
				want = 2 // bob too
			}
			series := fmt.Sprintf(`chatd_connections{port="%d",transport="%s"}`, ep.Port, ep.Transport)
			if got := e.metric(t, series); got != want {
				t.Errorf("%s = %v, want %v", series, got, want)
			}
			logged := fmt.Sprintf("port=%d transport=%s phone=%s", ep.Port, ep.Transport, alice.phone)
			if logs := e.logs.String(); !strings.Contains(logs, logged) || !strings.Contains(logs, "path="+ep.Transport+":") {
				t.Errorf("server log has no login line with %q and path=%s:…", logged, ep.Transport)
			}
		})
	}
	// The clients of the subtests have stopped: the WebSocket dialer's HTTP transport left no
	// goroutine behind (the metrics scrapes' idle connections aside).
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	waitFor(t, "no HTTP client connection goroutine left", func() bool { return !strings.Contains(stacks(), "net/http.(*persistConn)") })
}

// TestThroughProxy connects over every transport through an HTTP CONNECT proxy that wants Basic
// credentials, fetches the config through the same proxy, and shows what a refusing proxy looks like.
func TestThroughProxy(t *testing.T) {
	e := startEnv(t, nil)
	proxy := transporttest.NewProxy(t, "biz", "pa:ss word", nil)
	bob := e.start(t, client.Config{Endpoints: []transport.Endpoint{e.tcp}})
	bob.waitConnected(t)
	for _, ep := range []transport.Endpoint{e.tcp, e.tls, e.ws} {
		t.Run(ep.Transport, func(t *testing.T) {
			before := len(proxy.Tunnels())
			alice := e.start(t, client.Config{Endpoints: []transport.Endpoint{ep}, Proxy: transport.ProxyURL(proxy.URL)})
			st := alice.waitConnected(t)
			if st.Transport != ep.Transport || st.Proxy != proxy.URL.Redacted() {
				t.Errorf("status transport %q proxy %q, want %q via %q", st.Transport, st.Proxy, ep.Transport, proxy.URL.Redacted())
			}
			if tun := proxy.Tunnels()[before:]; !slices.Contains(tun, ep.Addr()) {
				t.Errorf("proxy tunnels %v, want one to %s", tun, ep.Addr())
			}
			send(t, alice, bob, "via proxy over "+ep.Transport)
			send(t, bob, alice, "back over "+ep.Transport)
		})
	}

	// Registration/config HTTPS goes through the same proxy setting.
	before := len(proxy.Tunnels())
	rc := regclient.NewWithProxy(e.n.HTTPSURL, e.roots, transport.ProxyURL(proxy.URL))
	defer rc.HTTPClient.CloseIdleConnections()
	if _, err := rc.Config(context.Background()); err != nil {
		t.Fatalf("config through the proxy: %v", err)
	}
	if tun := proxy.Tunnels()[before:]; len(tun) != 1 || tun[0] != n443(e) {
		t.Errorf("config fetch tunnels %v, want one to %s", tun, n443(e))
	}

	// A proxy that refuses: the client says so plainly and keeps trying.
	bad := e.start(t, client.Config{Endpoints: []transport.Endpoint{e.tls, e.ws},
		Proxy: transport.ProxyURL(proxy.WithCredentials("biz", "nope")), MinBackoff: time.Hour})
	var st client.Status
	waitFor(t, "the failed attempt to be reported", func() bool { st = bad.Status(); return st.LastError != "" })
	if st.State == client.Connected || !strings.Contains(st.LastError, "407") || !strings.Contains(st.LastError, "wants credentials") ||
		!strings.Contains(st.LastError, e.tls.String()) || !strings.Contains(st.LastError, e.ws.String()) || strings.Contains(st.LastError, "nope") {
		t.Errorf("status with a refusing proxy: %s: %s", st.State, st.LastError)
	}
	t.Logf("refusing proxy: %s", st.LastError)
}

func n443(e *env) string { return e.n.HTTPSAddr.String() }

// closedPort returns a loopback port nothing listens on: a dial is refused at once.
func closedPort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return p
}

// countingListener stands in for 5222: it accepts and counts connections and never answers them
// (a path that takes TCP but swallows the chat stream).
type countingListener struct {
	net.Listener
	accepts atomic.Int64
	mu      sync.Mutex
	conns   []net.Conn
}

func listenCounting(t *testing.T) *countingListener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &countingListener{Listener: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.accepts.Add(1)
			l.mu.Lock()
			l.conns = append(l.conns, c)
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		l.mu.Lock()
		for _, c := range l.conns {
			c.Close()
		}
		l.mu.Unlock()
	})
	return l
}

func (l *countingListener) endpoint() transport.Endpoint {
	return transport.Endpoint{Host: "127.0.0.1", Port: l.Addr().(*net.TCPAddr).Port, Transport: transport.TransportTCP}
}

// TestRaceFallsBackTo443 puts a broken 5222 in front of the 443 paths and checks that the client
// ends up on 443 (TLS, the first 443 path), logging how long it took: refused (RST, 443 starts at
// once), dropped (the SYN gets no answer; 443 after the 250 ms head start) and swallowed (TCP is
// accepted but the chat stream gets no answer; also after the head start).
func TestRaceFallsBackTo443(t *testing.T) {
	e := startEnv(t, nil)
	swallow := listenCounting(t)
	dropped := transport.Endpoint{Host: "127.0.0.1", Port: 5222, Transport: transport.TransportTCP}
	blackhole := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == dropped.Addr() {
			<-ctx.Done() // a DROPped SYN: no answer until the attempt gives up
			return nil, ctx.Err()
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	for _, tt := range []struct {
		name string
		bad  transport.Endpoint
	}{
		{"refused", transport.Endpoint{Host: "127.0.0.1", Port: closedPort(t), Transport: transport.TransportTCP}},
		{"dropped", dropped},
		{"swallowed", swallow.endpoint()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var times []time.Duration
			for range 5 {
				u := e.start(t, client.Config{Endpoints: []transport.Endpoint{tt.bad, e.tls, e.ws}, Dial: blackhole})
				st := u.waitConnected(t)
				if st.Transport != transport.TransportTLS || st.Endpoint != e.tls {
					t.Fatalf("connected over %s, want %s (status %+v)", st.Endpoint, e.tls, st)
				}
				times = append(times, st.DialTime)
			}
			slices.Sort(times)
			t.Logf("5222 %s → connected over tls in min %v, median %v, max %v (5 runs)", tt.name,
				times[0].Round(time.Microsecond), times[2].Round(time.Microsecond), times[4].Round(time.Microsecond))
		})
	}
}

// Test443OnlyNeverDials5222 counts the connections a listener standing in for 5222 receives: none in
// 443-only mode (set in the client, or published by the server as only_443); one without it, which
// shows the count would catch a dial.
func Test443OnlyNeverDials5222(t *testing.T) {
	e := startEnv(t, nil)
	for _, only443 := range []bool{true, false} {
		t.Run(fmt.Sprintf("only443=%v", only443), func(t *testing.T) {
			fake5222 := listenCounting(t)
			u := e.start(t, client.Config{Endpoints: []transport.Endpoint{fake5222.endpoint(), e.tls, e.ws}, Only443: only443})
			st := u.waitConnected(t)
			if st.Transport != transport.TransportTLS {
				t.Errorf("connected over %s, want tls", st.Endpoint)
			}
			if only443 {
				if n := fake5222.accepts.Load(); n != 0 {
					t.Errorf("443-only mode dialled the 5222 stand-in %d times", n)
				}
				if eps := u.Endpoints(); slices.Contains(eps, fake5222.endpoint()) {
					t.Errorf("443-only client still lists %v", eps)
				}
			} else {
				waitFor(t, "the 5222 stand-in to be dialled", func() bool { return fake5222.accepts.Load() == 1 })
			}
		})
	}

	// The deployment-wide hint: a server publishing only_443 keeps its clients off its chat port.
	s := startEnv(t, func(c *node.Config) { c.Only443 = true })
	rc := regclient.New(s.n.HTTPSURL, s.roots)
	defer rc.HTTPClient.CloseIdleConnections()
	cc, err := rc.Config(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, eps, err := regclient.ParseConfig(cc)
	if err != nil {
		t.Fatal(err)
	}
	u := s.start(t, client.Config{Endpoints: eps, Only443: cc.Only443})
	if st := u.waitConnected(t); st.Transport != transport.TransportTLS {
		t.Errorf("connected over %s, want tls", st.Endpoint)
	}
	series := fmt.Sprintf(`chatd_connections_accepted_total{port="%d",transport="tcp"}`, s.chatPort)
	if got := s.metric(t, series); got != 0 {
		t.Errorf("only_443 published, but the chat port accepted %v connections (%v)", got, transport.EndpointStrings(eps))
	}
}

// countingDialer counts the TCP connections a client has open.
type countingDialer struct{ open atomic.Int64 }

func (d *countingDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.open.Add(1)
	return &countedConn{Conn: c, d: d}, nil
}

type countedConn struct {
	net.Conn
	d    *countingDialer
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.d.open.Add(-1) })
	return c.Conn.Close()
}

// TestRaceLosersAreClosed starts all three paths at once, ten times. Each time exactly one logs in
// (a second login would replace the first), the losers' connections are closed, the server holds one
// session, and the winner works. No attempt goroutine outlives its race.
func TestRaceLosersAreClosed(t *testing.T) {
	e := startEnv(t, nil)
	bob := e.start(t, client.Config{Endpoints: []transport.Endpoint{e.tcp}})
	bob.waitConnected(t)
	won := map[string]int{}
	for i := range 10 {
		logins := e.metric(t, `chatd_logins_total{result="ok"}`)
		d := &countingDialer{}
		alice := e.start(t, client.Config{Endpoints: []transport.Endpoint{e.tcp, e.tls, e.ws}, HeadStart: -1, Dial: d.dial})
		st := alice.waitConnected(t)
		won[st.Transport]++
		waitFor(t, "the losing connections to close", func() bool { return d.open.Load() == 1 })
		if got := e.metric(t, `chatd_logins_total{result="ok"}`) - logins; got != 1 {
			t.Fatalf("round %d: %v logins for one connect, want 1", i, got)
		}
		send(t, alice, bob, fmt.Sprintf("round %d", i))
		send(t, bob, alice, fmt.Sprintf("answer %d", i))
		if st := alice.Status(); st.State != client.Connected || st.Reconnects != 0 || st.LastClose != "" {
			t.Fatalf("round %d: winner disturbed: %+v", i, st)
		}
		if n := e.n.Server.Sessions(); n != 2 {
			t.Fatalf("round %d: server holds %d sessions, want 2 (alice, bob)", i, n)
		}
		alice.stop2(t)
		waitFor(t, "alice's connection to close", func() bool { return d.open.Load() == 0 })
	}
	if got := e.metric(t, `chatd_closes_total{reason="replaced"}`); got != 0 {
		t.Errorf("%v sessions were replaced", got)
	}
	waitFor(t, "no attempt goroutine left", func() bool { return !strings.Contains(stacks(), "client.(*Client).runAttempt") })
	// The WebSocket dialer's HTTP transport leaves nothing behind either (the metrics scrapes' idle
	// connections aside).
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	waitFor(t, "no HTTP client connection goroutine left", func() bool { return !strings.Contains(stacks(), "net/http.(*persistConn)") })
	t.Logf("winners of the all-at-once race: %v", won)
}

// stop2 cancels a user's client now (not at the test's end) and waits for Run.
func (u *user) stop2(t *testing.T) {
	t.Helper()
	u.cancelNow()
	u.stop(t)
}

func stacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// TestPreferredAndLastGoodEndpoint: the endpoint that worked last is tried first — from
// Config.Preferred at start, and after a reconnect from the client's own memory.
func TestPreferredAndLastGoodEndpoint(t *testing.T) {
	e := startEnv(t, nil)
	var mu sync.Mutex
	var dials []string
	var conns []net.Conn
	block5222 := true
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dials = append(dials, addr)
		blocked := block5222 && addr == e.tcp.Addr()
		mu.Unlock()
		if blocked {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		var nd net.Dialer
		c, err := nd.DialContext(ctx, network, addr)
		if err == nil {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
		return c, err
	}
	takeDials := func() []string {
		mu.Lock()
		defer mu.Unlock()
		d := dials
		dials = nil
		return d
	}
	// A long head start makes the order decide: the first endpoint runs alone.
	slow := client.Config{HeadStart: time.Minute, ConnectTimeout: 200 * time.Millisecond, DialTimeout: 5 * time.Second,
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}

	cfg := slow
	cfg.Endpoints, cfg.Preferred, cfg.Dial = []transport.Endpoint{e.tcp, e.tls, e.ws}, e.ws, dial
	mu.Lock()
	block5222 = false
	mu.Unlock()
	u := e.start(t, cfg)
	if st := u.waitConnected(t); st.Endpoint != e.ws {
		t.Errorf("Preferred ws: connected over %s", st.Endpoint)
	}
	if d := takeDials(); len(d) != 1 || d[0] != e.ws.Addr() {
		t.Errorf("Preferred ws: dialled %v, want only %s", d, e.ws.Addr())
	}
	u.stop2(t)

	// 5222 dropped: the first connect falls back to tls (after the 200 ms connect timeout).
	mu.Lock()
	block5222 = true
	conns = nil
	mu.Unlock()
	cfg = slow
	cfg.Endpoints, cfg.Dial = []transport.Endpoint{e.tcp, e.tls, e.ws}, dial
	u = e.start(t, cfg)
	if st := u.waitConnected(t); st.Endpoint != e.tls || st.LastError != "" {
		// A failed first race (LastError) would mean the dropped 5222 was not given up after its
		// connect timeout, and tls was not started at once.
		t.Fatalf("5222 dropped: connected over %s, want tls on the first connect (last error %q)", st.Endpoint, st.LastError)
	}
	takeDials()
	// 5222 is back, but the connection breaks: the reconnect goes to the last good endpoint first.
	mu.Lock()
	block5222 = false
	for _, c := range conns {
		c.Close()
	}
	mu.Unlock()
	waitFor(t, "a reconnect", func() bool { st := u.Status(); return st.Reconnects == 1 && st.State == client.Connected })
	if st := u.Status(); st.Endpoint != e.tls {
		t.Errorf("after the reconnect: %s, want the last good tls", st.Endpoint)
	}
	if d := takeDials(); len(d) == 0 || d[0] != e.tls.Addr() || slices.Contains(d, e.tcp.Addr()) {
		t.Errorf("after the reconnect dialled %v, want %s first and alone", d, e.tls.Addr())
	}
}

// TestConfigValidation covers the endpoint settings New refuses.
func TestConfigValidation(t *testing.T) {
	key, _ := noisesock.GenerateKeypair()
	base := client.Config{ServerKey: [32]byte{1}, DeviceKey: key}
	for _, tt := range []struct {
		name string
		mod  func(*client.Config)
		want string
	}{
		{"bad addr", func(c *client.Config) { c.Addrs = []string{"nohost"} }, "host:port"},
		{"bad transport", func(c *client.Config) {
			c.Endpoints = []transport.Endpoint{{Host: "x", Port: 1, Transport: "quic"}}
		}, "unknown transport"},
		{"443-only without 443", func(c *client.Config) { c.Addrs, c.Only443 = []string{"x:5222"}, true }, "443-only"},
	} {
		cfg := base
		tt.mod(&cfg)
		if _, err := client.New(cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error mentioning %q", tt.name, err, tt.want)
		}
	}
	cfg := base
	cfg.Addrs = []string{"x:5222", "x:443/tls", "x:5222/tcp", "x:443/ws", "x:443"}
	cfg.Only443 = true
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(transport.EndpointStrings(c.Endpoints()), " "); got != "x:443/tls x:443/ws x:443/tcp" {
		t.Errorf("443-only endpoints %s", got)
	}
}

// BenchmarkConnect measures a whole connect on loopback — the race, the transport (TCP, TLS, TLS +
// WebSocket upgrade, optionally a CONNECT tunnel), the Noise handshake and the login — per path, and
// the fallback to 443 when 5222 is refused or dropped. The dial-ms metric is the mean
// Status.DialTime.
func BenchmarkConnect(b *testing.B) {
	e := startEnv(b, func(c *node.Config) { c.Logger = slog.New(slog.DiscardHandler) })
	proxy := transporttest.NewProxy(b, "u", "p", nil)
	_, dev := e.register(b)
	refused := transport.Endpoint{Host: "127.0.0.1", Port: closedPort(b), Transport: transport.TransportTCP}
	dropped := transport.Endpoint{Host: "127.0.0.1", Port: 5222, Transport: transport.TransportTCP}
	blackhole := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == dropped.Addr() {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	for _, bc := range []struct {
		name string
		eps  []transport.Endpoint
		prox bool
	}{
		{"tcp", []transport.Endpoint{e.tcp}, false},
		{"tls", []transport.Endpoint{e.tls}, false},
		{"ws", []transport.Endpoint{e.ws}, false},
		{"tcp-via-proxy", []transport.Endpoint{e.tcp}, true},
		{"tls-via-proxy", []transport.Endpoint{e.tls}, true},
		{"ws-via-proxy", []transport.Endpoint{e.ws}, true},
		{"5222-refused", []transport.Endpoint{refused, e.tls, e.ws}, false},
		{"5222-dropped", []transport.Endpoint{dropped, e.tls, e.ws}, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var total time.Duration
			for b.Loop() {
				cfg := client.Config{Endpoints: bc.eps, ServerKey: e.n.ServerKey, DeviceKey: dev, RootCAs: e.roots, Dial: blackhole}
				if bc.prox {
					cfg.Proxy = transport.ProxyURL(proxy.URL)
				}
				c, err := client.New(cfg)
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- c.Run(ctx) }()
				wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
				if err := c.WaitConnected(wctx); err != nil {
					b.Fatalf("not connected: %v (%+v)", err, c.Status())
				}
				wcancel()
				total += c.Status().DialTime
				cancel()
				<-done
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "dial-ms")
		})
	}
}

// TestManyPendingRequestsAtConnect: requests made while disconnected are all sent when the client
// connects, however many — more than the writer's queue holds (256) used to block the connection
// forever before its writer started.
func TestManyPendingRequestsAtConnect(t *testing.T) {
	e := startEnv(t, nil)
	to, _ := e.register(t) // offline: the server stores for it
	_, dev := e.register(t)
	c, err := client.New(client.Config{Endpoints: []transport.Endpoint{e.tcp}, ServerKey: e.n.ServerKey, DeviceKey: dev})
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := c.Send(ctx, to, fmt.Sprintf("pending-%d", i), &chatdpb.Content{Version: 1, Body: []byte("x")})
			errs <- err
		}()
	}
	waitFor(t, "all sends pending", func() bool { return c.Pending() == n })
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	defer func() { stop(); <-done }()
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("a send made before connecting: %v (status %+v)", err, c.Status())
		}
	}
}
