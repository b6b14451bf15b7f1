package gateway_test

import (
	"context"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/bizapi/gateway"
	"github.com/chatd-dev/chatd/bizapi/store"
	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/internal/testutil"
	"github.com/chatd-dev/chatd/transport"
	"github.com/chatd-dev/chatd/transport/transporttest"
)

// countingStore is the real store; it counts the writes of the last good endpoint.
type countingStore struct {
	store.Store
	saves atomic.Int64
}

func (s *countingStore) SaveLastEndpoint(ctx context.Context, ep string) error {
	s.saves.Add(1)
	return s.Store.SaveLastEndpoint(ctx, ep)
}

// published is the address that chatd publishes for its listener at a (host "localhost" in dev mode).
func published(a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	return net.JoinHostPort("localhost", port)
}

// pathOf is the endpoint of the path health reports, in the form the store keeps.
func pathOf(h gateway.Health) string { return h.Addr + "/" + h.Transport }

// The endpoint of the last login is saved (once, when it changes) and tried first after a restart.
func TestLastGoodEndpointAcrossRestarts(t *testing.T) {
	n, data := startChatd(t)
	e := &env{t: t, chatd: n, data: data, dbPath: t.TempDir() + "/bizapi.db"}
	var (
		mu        sync.Mutex
		preferred []transport.Endpoint // Config.Preferred of every client the gateway built
		counting  *countingStore
	)
	run := func(only443 bool) func(*gateway.Config) {
		return func(c *gateway.Config) {
			counting = &countingStore{Store: c.Store}
			c.Store, c.Only443 = counting, only443
			adjust := c.Client
			c.Client = func(cc *client.Config) {
				adjust(cc)
				// The first endpoint tried gets the race to itself unless it fails, so that the
				// path says which one was tried first.
				cc.HeadStart = 5 * time.Second
				mu.Lock()
				preferred = append(preferred, cc.Preferred)
				mu.Unlock()
			}
		}
	}
	takePreferred := func() []transport.Endpoint {
		mu.Lock()
		defer mu.Unlock()
		p := preferred
		preferred = nil
		return p
	}

	// First run, 443 only: the path is TLS or WebSocket on chatd's HTTPS port, and it is saved.
	e.openGateway(n.HTTPSURL, run(true))
	e.register()
	h := e.gw.Health()
	_, httpsPort, _ := net.SplitHostPort(n.HTTPSAddr.String())
	if h.Transport == transport.TransportTCP || strconv.Itoa(h.Port) != httpsPort {
		t.Fatalf("443-only: connected over %s", pathOf(h))
	}
	if p := takePreferred(); len(p) != 1 || !p[0].IsZero() {
		t.Fatalf("first start: Preferred %v, want none", p)
	}
	first := pathOf(h)
	waitUntil(t, "the endpoint saved", func() bool {
		ep, err := e.st.LastEndpoint(context.Background())
		return err == nil && ep == first
	})
	e.stop()
	if got := counting.saves.Load(); got != 1 {
		t.Fatalf("first run: %d saves, want 1", got)
	}

	// Second run, 5222 allowed again: the saved path is Preferred, so it is tried first and wins
	// the race, and nothing is written since it did not change.
	e.openGateway(n.HTTPSURL, run(false))
	e.waitConnected()
	p := takePreferred()
	if len(p) != 1 || p[0].String() != first {
		t.Fatalf("after a restart: Preferred %v, want %s", p, first)
	}
	if h := e.gw.Health(); pathOf(h) != first {
		t.Fatalf("after a restart: connected over %s, want the preferred %s", pathOf(h), first)
	}
	e.stop()
	if got := counting.saves.Load(); got != 0 {
		t.Fatalf("second run on the same endpoint: %d saves, want 0", got)
	}
}

// Chat and HTTPS go through the configured proxy, 443-only never dials the chat port, health shows
// the path with the proxy (without its password), and the end of a connection is counted by reason.
func TestProxyAndOnly443(t *testing.T) {
	proxy := transporttest.NewProxy(t, "bob", "s3cret", nil)
	n, data := startChatd(t)
	e := &env{t: t, chatd: n, data: data, dbPath: t.TempDir() + "/bizapi.db"}
	var logs testutil.Buffer
	e.openGateway(n.HTTPSURL, func(c *gateway.Config) {
		c.Proxy, c.Only443 = transport.ProxyURL(proxy.URL), true
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	e.register() // code request, verify and config fetch over HTTPS through the proxy, then chat
	h := e.gw.Health()
	httpsAddr := published(n.HTTPSAddr)
	if h.Addr != httpsAddr || h.Transport == transport.TransportTCP {
		t.Fatalf("connected over %s, want TLS or WebSocket on %s", pathOf(h), httpsAddr)
	}
	if want := proxy.URL.Redacted(); h.Proxy != want || !strings.Contains(want, "xxxxx") {
		t.Fatalf("health proxy %q, want %q", h.Proxy, want)
	}
	if h.DialTime <= 0 || h.NetworkProblem != "" {
		t.Fatalf("health %+v", h)
	}
	tunnels := proxy.Tunnels()
	for _, target := range tunnels {
		if target != httpsAddr {
			t.Fatalf("the proxy tunnelled to %s (all: %v); 443-only must reach only %s", target, tunnels, httpsAddr)
		}
	}
	if len(tunnels) < 2 {
		t.Fatalf("tunnels %v: want the HTTPS requests and the chat connection", tunnels)
	}
	if len(h.Closes) != 0 {
		t.Fatalf("closes before any connection ended: %v", h.Closes)
	}

	// The proxy goes away: the connection ends, once, counted by its reason.
	proxy.Close()
	waitUntil(t, "the connection end counted", func() bool { return len(e.gw.Health().Closes) > 0 })
	h = e.gw.Health()
	if h.GatewayStatus == gateway.StatusConnected || h.LastClose == "" {
		t.Fatalf("after the proxy closed: %+v", h)
	}
	if want := map[string]int64{h.LastClose: 1}; !maps.Equal(h.Closes, want) {
		t.Fatalf("closes %v, want %v", h.Closes, want)
	}
	e.stop()
	for _, s := range []string{logs.String(), h.LastError} {
		if strings.Contains(s, "s3cret") {
			t.Fatalf("the proxy password was shown:\n%s", s)
		}
	}
	if !strings.Contains(logs.String(), "bob:xxxxx@") {
		t.Fatalf("the log does not name the proxy:\n%s", logs.String())
	}
}

// 5222 open, 443 closed (here: a proxy that tunnels only to the chat port) is unsupported: the
// gateway connects, and health says what is wrong.
func TestNetworkProblemInHealth(t *testing.T) {
	e := newEnv(t)
	e.register()
	e.stop()
	chatAddr := published(e.chatd.ChatAddr)
	proxy := transporttest.NewProxy(t, "", "", func(target string) bool { return target == chatAddr })
	e.openGateway(e.chatd.HTTPSURL, func(c *gateway.Config) { c.Proxy = transport.ProxyURL(proxy.URL) })
	waitUntil(t, "the network problem reported", func() bool { return e.gw.Health().NetworkProblem != "" })
	h := e.gw.Health()
	if h.GatewayStatus != gateway.StatusConnected || h.Addr != chatAddr || h.Transport != transport.TransportTCP {
		t.Fatalf("health %+v, want connected over %s/tcp", h, chatAddr)
	}
	if !strings.Contains(h.NetworkProblem, "unsupported") || h.ConfigError == "" {
		t.Fatalf("network problem %q, config error %q", h.NetworkProblem, h.ConfigError)
	}
	if refused := proxy.Refused(); !slices.Contains(refused, 403) {
		t.Fatalf("the proxy refused %v; the 443 path was not tried", refused)
	}
}
