package lab

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/internal/netlab"
	"github.com/chatd-dev/chatd/netcheck"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/transport"
)

// netcheckFrom runs netcheck from the lab's client host against s, as a registered client would (the
// server key pinned).
func netcheckFrom(t *testing.T, l *netlab.Lab, s *server, edit func(*netcheck.Config)) *netcheck.Report {
	t.Helper()
	cfg := netcheck.Config{ServerURL: s.Config.HTTPSURL, RootCAs: s.Pool, ServerKey: s.Key, Dial: l.Client.DialContext, Timeout: 2 * time.Second, AllRanges: true}
	if edit != nil {
		edit(&cfg)
	}
	start := time.Now()
	rep := netcheck.Run(context.Background(), cfg)
	var b strings.Builder
	rep.Render(&b)
	t.Logf("netcheck took %v:\n%s", time.Since(start).Round(time.Millisecond), b.String())
	return rep
}

func portResult(rep *netcheck.Report, port int) string {
	for _, h := range rep.Hosts {
		for _, p := range h.Ports {
			if p.Port == port {
				return p.Result
			}
		}
	}
	return ""
}

func hasAction(rep *netcheck.Report, words ...string) bool {
	for _, a := range append(rep.Verdict.Actions, rep.Verdict.Notes...) {
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(a, w)
		}
		if ok {
			return true
		}
	}
	return false
}

// TestNetcheckVerdicts: every verdict of netcheck against a real chatd behind the lab's box (N10).
func TestNetcheckVerdicts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		rules   []string
		want    netcheck.Status
		port    int
		result  string
		summary string
		action  []string
	}{
		{"open", nil, netcheck.OK, 5222, "open", "Both ports open", nil},
		{"5222-rejected", []string{netlab.Reject(5222)}, netcheck.Degraded, 5222, "refused", "5222 blocked but 443 open", []string{"refused", "REJECT", "5222"}},
		{"5222-dropped", []string{netlab.Drop(5222)}, netcheck.Degraded, 5222, "timeout", "5222 blocked but 443 open", []string{"no answer", "DROP", "5222"}},
		{"443-rejected", []string{netlab.Reject(443)}, netcheck.Broken, 443, "refused", "5222 open, 443 closed: unsupported", []string{"443", "REJECT"}},
		{"all-dropped", []string{netlab.Drop(443), netlab.Drop(5222)}, netcheck.Broken, 443, "timeout", "443 blocked: unsupported", []string{"HTTPS"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := netlab.New(t)
			s := startChatd(t, l)
			l.SetRules(tc.rules...)
			rep := netcheckFrom(t, l, s, nil)
			if rep.Verdict.Status != tc.want || !strings.Contains(rep.Verdict.Summary, tc.summary) {
				t.Errorf("verdict %s %q, want %s %q", rep.Verdict.Status, rep.Verdict.Summary, tc.want, tc.summary)
			}
			if got := portResult(rep, tc.port); got != tc.result {
				t.Errorf("port %d: %q, want %q", tc.port, got, tc.result)
			}
			if tc.action != nil && !hasAction(rep, tc.action...) {
				t.Errorf("no action mentions %q: %q", tc.action, rep.Verdict.Actions)
			}
			// The dev server's signed IP list holds its own address: the same port result there.
			if len(rep.Ranges) != 1 || rep.Ranges[0].Addr != netlab.ServerAddr || rep.IPList == nil || rep.IPList.Version == "" {
				if tc.name != "all-dropped" && tc.name != "443-rejected" { // no HTTPS, no list
					t.Errorf("IP list %+v, ranges %+v", rep.IPList, rep.Ranges)
				}
			} else if r := rep.Ranges[0].Ports[map[int]int{443: 0, 5222: 1}[tc.port]].Result; r != tc.result {
				t.Errorf("range check of port %d: %q, want %q", tc.port, r, tc.result)
			}
			if code := rep.Verdict.ExitCode(); code != map[netcheck.Status]int{netcheck.OK: 0, netcheck.Degraded: 1, netcheck.Broken: 2}[tc.want] {
				t.Errorf("exit code %d for %s", code, tc.want)
			}
		})
	}
}

// TestNetcheckMiddleboxes: a middlebox that kills non-TLS on 443 is detected and named; a
// TLS-intercepting one is detected with the issuer it presents.
func TestNetcheckMiddleboxes(t *testing.T) {
	t.Parallel()
	netlab.Require(t, "nginx")
	t.Run("tls-only", func(t *testing.T) {
		t.Parallel()
		l := netlab.New(t)
		s := startChatd(t, l)
		l.TLSOnly443(netlab.ServerAddr + ":443")
		rep := netcheckFrom(t, l, s, nil)
		if rep.Verdict.Status != netcheck.OK {
			t.Errorf("verdict %s: %s", rep.Verdict.Status, rep.Verdict.Summary)
		}
		if !hasAction(rep, "cuts traffic", "not TLS") {
			t.Errorf("the non-TLS-killing middlebox is not named: %q", rep.Verdict.Notes)
		}
	})
	t.Run("squid", func(t *testing.T) {
		t.Parallel()
		netlab.Require(t, "squid")
		l := netlab.New(t)
		s := startChatd(t, l)
		l.Squid()
		proxy, err := transport.ParseProxyURL(netlab.SquidURL())
		if err != nil {
			t.Fatal(err)
		}
		rep := netcheckFrom(t, l, s, func(c *netcheck.Config) {
			c.Proxy, c.ProxySource = transport.ProxyURL(proxy), "config"
		})
		if rep.Verdict.Status != netcheck.Degraded || !strings.Contains(rep.Verdict.Summary, "5222 blocked but 443 open") {
			t.Errorf("verdict %s %q, want degraded: 5222 blocked but 443 open", rep.Verdict.Status, rep.Verdict.Summary)
		}
		if got := portResult(rep, 5222); got != "proxy_refused" {
			t.Errorf("5222 through squid: %q, want proxy_refused", got)
		}
		if !hasAction(rep, "proxy", "CONNECT", "5222") || rep.Proxy.URL == "" {
			t.Errorf("the proxy's refusal is not explained (proxy %+v): %q", rep.Proxy, rep.Verdict.Actions)
		}
		for _, p := range rep.Paths {
			if p.Port == 443 && p.Transport == "tls" && (p.Status != netcheck.OK || p.Proxy == "") {
				t.Errorf("TLS through squid: %+v", p)
			}
		}
	})
	t.Run("intercepting", func(t *testing.T) {
		t.Parallel()
		l := netlab.New(t)
		s := startChatd(t, l)
		l.SetRules(netlab.Drop(5222))
		other, err := pki.EnsureDevTLS(t.TempDir(), []string{netlab.ServerAddr}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		l.InterceptTLS443(other.CertFile, other.KeyFile, netlab.ServerAddr+":443")
		rep := netcheckFrom(t, l, s, func(c *netcheck.Config) { c.Timeout = 3 * time.Second })
		tls := rep.Hosts[0].TLS
		if tls == nil || !tls.Intercepted {
			t.Fatalf("interception not detected: %+v", tls)
		}
		if !hasAction(rep, "intercepted", "Exempt") {
			t.Errorf("no action about the interception: %q", rep.Verdict.Actions)
		}
		if rep.Verdict.Status != netcheck.Broken {
			t.Errorf("verdict %s, want broken (5222 dropped, and TLS to the server intercepted): %s", rep.Verdict.Status, rep.Verdict.Summary)
		}
	})
}

// TestNetcheckIdleEstimate: behind a firewall that forgets connections idle for 30 s, netcheck's
// idle test (up to 60 s, in 6 s steps) estimates the timeout within 20 %, and recommends pinging
// more often than that.
func TestNetcheckIdleEstimate(t *testing.T) {
	t.Parallel()
	l := netlab.New(t)
	l.IdleTimeout(30)
	s := startChatd(t, l)
	rep := netcheckFrom(t, l, s, func(c *netcheck.Config) { c.Idle = time.Minute })
	ic := rep.Idle
	if ic == nil || ic.Died == 0 {
		t.Fatalf("no idle connection died behind a 30 s idle timeout: %+v", ic)
	}
	const timeout = 30 * time.Second
	if ic.Estimate < timeout*8/10 || ic.Estimate > timeout*12/10 {
		t.Errorf("estimated idle timeout %v (alive after %v, dead after %v), want within 20 %% of %v", ic.Estimate, ic.Survived, ic.Died, timeout)
	}
	if ic.Recommended >= ic.Survived || ic.Status != netcheck.Degraded {
		t.Errorf("recommended ping interval %v with status %s, want below %v and degraded", ic.Recommended, ic.Status, ic.Survived)
	}
	if !hasAction(rep, "forgets idle connections") {
		t.Errorf("no action about the idle timeout: %q", rep.Verdict.Actions)
	}
}

// TestNetcheckRules: `bizapi netcheck rules` (the real binary, in the client host) fetches and
// verifies the dev server's signed IP list; the nftables rules it prints, loaded into the box behind
// a forward policy of drop, let chatd through on 5222 and 443 and nothing else.
func TestNetcheckRules(t *testing.T) {
	t.Parallel()
	l := netlab.New(t)
	s := startChatd(t, l)
	ln, err := l.Server.Listen("tcp", netlab.ServerAddr+":8080") // another port on the same server
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	out, err := l.Client.Run(bizapiBin, "netcheck", "rules", "--server", s.Config.HTTPSURL,
		"--server-ca", filepath.Join(s.Data, "tls", "ca.pem"), "--data", t.TempDir(), "--format", "nftables", "--chain", "forward")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bizapi netcheck rules:\n%s", out)
	script := out[strings.Index(out, "#"):] // after the warning about the unpinned key
	if !strings.Contains(script, netlab.ServerAddr) {
		t.Fatalf("the rules do not name the server %s", netlab.ServerAddr)
	}
	if err := l.Box.NFT("table inet filter {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t\tct state established,related accept\n\t}\n}\n"); err != nil {
		t.Fatal(err)
	}
	if err := l.Box.NFT(script); err != nil {
		t.Fatal(err)
	}
	for _, port := range []int{5222, 443} {
		if c, err := dialFrom(l, port); err != nil {
			t.Errorf("port %d blocked by the generated rules: %v", port, err)
		} else {
			c.Close()
		}
	}
	if c, err := dialFrom(l, 8080); err == nil {
		c.Close()
		t.Errorf("port 8080 passes: the rules allow more than chatd")
	}
	a := s.newAccount(l.Client, "15550000111", nil)
	if st := a.waitConnected(t, 10*time.Second); st.Port != 5222 {
		t.Errorf("connected on %d behind the generated rules, want 5222", st.Port)
	}
}

func dialFrom(l *netlab.Lab, port int) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return l.Client.DialContext(ctx, "tcp", fmt.Sprintf("%s:%d", netlab.ServerAddr, port))
}
