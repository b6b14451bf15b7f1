package lab

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/internal/netlab"
	"github.com/chatd-dev/chatd/transport"
)

// on443 reports whether s is a connection over the 443 path.
func on443(s client.Status) bool { return s.State == client.Connected && s.Port == 443 }

// exchange checks that a connected account still carries messages both ways with peer.
func exchange(t *testing.T, a, peer *account, tag string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, _, _ := peer.box.count()
	if _, err := a.Send(ctx, peer.phone, "", text(tag+" ping")); err != nil {
		t.Fatalf("%s: send to peer: %v", tag, err)
	}
	peer.box.waitCount(t, n+1, 30*time.Second)
	n, _, _ = a.box.count()
	if _, err := peer.Send(ctx, a.phone, "", text(tag+" pong")); err != nil {
		t.Fatalf("%s: send from peer: %v", tag, err)
	}
	a.box.waitCount(t, n+1, 30*time.Second)
}

// TestFallbackTo443 is N4: 5222 refused (RST) or silently dropped → connected over 443 quickly, never
// waiting out a SYN timeout. The dial time is the client's own measure of the race (Status.DialTime);
// BenchmarkFallback measures the same for docs/benchmarks.md.
func TestFallbackTo443(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		rule  string
		limit time.Duration
	}{
		{"reject", netlab.Reject(5222), 300 * time.Millisecond},
		{"drop", netlab.Drop(5222), time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := netlab.New(t)
			s := startChatd(t, l)
			peer := s.newAccount(l.Server, "15550000001", nil)
			l.SetRules(tc.rule)
			a := s.newAccount(l.Client, "15550000002", nil)
			st := a.waitConnected(t, 10*time.Second)
			t.Logf("5222 %s: connected over %s:%d in %v", tc.name, st.Transport, st.Port, st.DialTime)
			if !on443(st) {
				t.Fatalf("connected over %s port %d, want the 443 path", st.Transport, st.Port)
			}
			if st.DialTime > tc.limit {
				t.Errorf("5222 %s: connected in %v, want ≤ %v", tc.name, st.DialTime, tc.limit)
			}
			exchange(t, a, peer, tc.name)
		})
	}
}

// TestTLSOnlyMiddlebox is N8: a middlebox on 443 that kills everything but TLS (nginx, ssl_preread),
// with 5222 dropped. The raw chatd attempt on 443 dies at the middlebox; TLS gets through.
func TestTLSOnlyMiddlebox(t *testing.T) {
	t.Parallel()
	netlab.Require(t, "nginx")
	l := netlab.New(t)
	s := startChatd(t, l)
	peer := s.newAccount(l.Server, "15550000011", nil)
	l.SetRules(netlab.Drop(5222))
	l.TLSOnly443(netlab.ServerAddr + ":443")
	// Also offer raw chatd on 443, which the middlebox must refuse, ahead of TLS and WebSocket.
	raw := transport.Endpoint{Host: netlab.ServerAddr, Port: 443, Transport: transport.TransportTCP}
	a := s.newAccount(l.Client, "15550000012", func(c *client.Config) {
		c.Endpoints = append([]transport.Endpoint{raw}, c.Endpoints...)
	})
	st := a.waitConnected(t, 15*time.Second)
	if st.Transport != transport.TransportTLS && st.Transport != transport.TransportWS {
		t.Fatalf("connected over %s, want tls or ws through the TLS-only middlebox", st.Transport)
	}
	t.Logf("through the TLS-only middlebox: %s:%d in %v", st.Transport, st.Port, st.DialTime)
	if !strings.Contains(a.log.String(), raw.String()) {
		t.Errorf("the raw 443 attempt is not in the log; was it tried?")
	}
	exchange(t, a, peer, "tls-only")

	// Without TLS and WebSocket, raw chatd alone cannot pass: the test can fail.
	b := s.newAccount(l.Client, "15550000013", func(c *client.Config) {
		c.Endpoints = []transport.Endpoint{raw}
		c.DialTimeout = 2 * time.Second
	})
	b.waitStatus(t, 10*time.Second, "failing a connect", func(s client.Status) bool {
		return s.State == client.Connected || s.LastError != ""
	})
	if st := b.Status(); st.State == client.Connected {
		t.Fatalf("raw chatd got through the TLS-only middlebox: %+v", st)
	}
	if e := b.Status().LastError; !strings.Contains(e, "passes only TLS") {
		t.Errorf("the raw-only client's error does not explain the middlebox: %s", e)
	}
}

// TestSquidProxy is N8: the client's only way out is squid, which allows CONNECT to 443 only.
// Registration (HTTPS) and chat both go through it.
func TestSquidProxy(t *testing.T) {
	t.Parallel()
	netlab.Require(t, "squid")
	l := netlab.New(t)
	s := startChatd(t, l)
	peer := s.newAccount(l.Server, "15550000021", nil)
	l.Squid()
	proxy, err := transport.ParseProxyURL(netlab.SquidURL())
	if err != nil {
		t.Fatal(err)
	}
	pf := transport.ProxyURL(proxy)
	dev := s.Register(s.Reg(l.Client, pf), "15550000022") // HTTPS registration through squid
	a := s.runAccount(l.Client, "15550000022", dev, func(c *client.Config) { c.Proxy = pf })
	st := a.waitConnected(t, 15*time.Second)
	if !on443(st) || st.Proxy == "" {
		t.Fatalf("connected over %s:%d proxy %q, want the 443 path through squid", st.Transport, st.Port, st.Proxy)
	}
	t.Logf("through squid: %s:%d via %s in %v", st.Transport, st.Port, st.Proxy, st.DialTime)
	if !strings.Contains(a.log.String(), "403") {
		t.Errorf("squid's refusal of CONNECT to 5222 is not in the client's log")
	}
	exchange(t, a, peer, "squid")
}

// Test443OnlyNoSYN is N5: in 443-only mode — by client config, or by the deployment's only_443 hint in
// /v1/config — not one SYN goes to 5222. A normal client in the same lab does send one (the counter
// works).
func Test443OnlyNoSYN(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		chatdArgs []string
		edit      func(*client.Config)
		wantSYN   bool
	}{
		{"default", nil, nil, true},
		{"config", nil, func(c *client.Config) { c.Only443 = true }, false},
		{"server-hint", []string{"--only-443"}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := netlab.New(t)
			l.SetRules(`tcp dport 5222 tcp flags & (syn|ack) == syn counter comment "syn5222"`)
			s := startChatd(t, l, tc.chatdArgs...)
			a := s.newAccount(l.Client, "15550000031", func(c *client.Config) {
				c.ReprobeInterval = 200 * time.Millisecond
				if tc.edit != nil {
					tc.edit(c)
				}
			})
			st := a.waitConnected(t, 10*time.Second)
			time.Sleep(time.Second) // let re-probes run, which must not touch 5222 either
			syn := l.Counter("syn5222")
			t.Logf("%s: connected over %s:%d; SYNs to 5222: %d", tc.name, st.Transport, st.Port, syn)
			if got := syn > 0; got != tc.wantSYN {
				t.Fatalf("SYNs to 5222: %d, want any: %v", syn, tc.wantSYN)
			}
			if !tc.wantSYN && !on443(st) {
				t.Fatalf("connected over %s:%d in 443-only mode", st.Transport, st.Port)
			}
		})
	}
}

// TestNetwork5222Only is N5: 5222 open but 443 closed is unsupported. The client connects on 5222 but
// says plainly that the network is unsupported and why.
func TestNetwork5222Only(t *testing.T) {
	t.Parallel()
	l := netlab.New(t)
	s := startChatd(t, l)
	l.SetRules(netlab.Reject(443))
	a := s.newAccount(l.Client, "15550000041", func(c *client.Config) { c.ReprobeInterval = time.Second })
	st := a.waitConnected(t, 10*time.Second)
	if st.Port != 5222 {
		t.Fatalf("connected on %d, want 5222", st.Port)
	}
	a.waitStatus(t, 10*time.Second, "reporting the network unsupported", func(s client.Status) bool { return s.NetworkProblem != "" })
	p := a.Status().NetworkProblem
	t.Logf("network problem: %s", p)
	for _, want := range []string{"443", "unsupported", "refused"} {
		if !strings.Contains(p, want) {
			t.Errorf("network problem %q does not mention %q", p, want)
		}
	}
	if !strings.Contains(a.log.String(), "network unsupported") {
		t.Errorf("the log does not say the network is unsupported")
	}
	// 443 reopens: the problem clears at the next check.
	l.SetRules()
	a.waitStatus(t, 10*time.Second, "clearing the network problem", func(s client.Status) bool { return s.NetworkProblem == "" })
}
