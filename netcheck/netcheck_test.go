package netcheck

import (
	"context"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/transport"
)

// listen accepts on loopback and hands each connection to serve.
func listen(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

// runWithin runs netcheck and fails the test when it takes longer than limit.
func runWithin(t *testing.T, cfg Config, limit time.Duration) *Report {
	t.Helper()
	start := time.Now()
	rep := Run(context.Background(), cfg)
	if took := time.Since(start); took > limit {
		t.Fatalf("netcheck took %v, more than its budget of %v", took, limit)
	}
	var b strings.Builder
	rep.Render(&b)
	t.Logf("%s", b.String())
	return rep
}

// TestHostileServer: a "server" that answers every connection with garbage, one that accepts and
// never says anything, and a proxy that accepts and hangs: netcheck reports each and finishes within
// its budget.
func TestHostileServer(t *testing.T) {
	garbage := listen(t, func(c net.Conn) {
		defer c.Close()
		c.Write([]byte("\x16\x03\x01garbage garbage garbage\r\n\r\n"))
		io.Copy(io.Discard, c)
	})
	silent := listen(t, func(c net.Conn) {
		defer c.Close()
		io.Copy(io.Discard, c)
	})
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"garbage", Config{ServerURL: "https://" + garbage}},
		{"silent", Config{ServerURL: "https://" + silent}},
		{"hanging-proxy", Config{ServerURL: "https://chat.example:443",
			Proxy: transport.ProxyURL(&url.URL{Scheme: "http", Host: silent}), ProxySource: "config"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Timeout = 500 * time.Millisecond
			rep := runWithin(t, tc.cfg, 5*time.Second)
			if rep.Verdict.Status != Broken {
				t.Errorf("verdict %s, want broken", rep.Verdict.Status)
			}
			if rep.HTTPS.Status != Broken || rep.HTTPS.Error == "" {
				t.Errorf("HTTPS check %+v, want a failure with its reason", rep.HTTPS)
			}
			if len(rep.Verdict.Actions) == 0 {
				t.Errorf("no action for a broken network")
			}
		})
	}
}

// TestUnresolvableName: DNS failure is reported as such, within the budget.
func TestUnresolvableName(t *testing.T) {
	rep := runWithin(t, Config{ServerURL: "https://chatd.invalid", Timeout: time.Second}, 10*time.Second)
	if len(rep.Hosts) != 1 || rep.Hosts[0].DNS.Status != Broken {
		t.Fatalf("DNS of chatd.invalid: %+v", rep.Hosts)
	}
	found := false
	for _, a := range rep.Verdict.Actions {
		found = found || strings.Contains(a, "does not resolve")
	}
	if !found {
		t.Errorf("no DNS action in %q", rep.Verdict.Actions)
	}
}
