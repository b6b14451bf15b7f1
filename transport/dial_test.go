package transport_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/transport"
	"github.com/chatd-dev/chatd/transport/transporttest"
	"github.com/chatd-dev/chatd/wire"
)

// startMuxHTTPS is startMux with an HTTPS server on the mux's HTTPS listener that routes
// /v1/chat to the WebSocket handler and answers 404 to everything else.
func startMuxHTTPS(t *testing.T) *muxEnv {
	t.Helper()
	e := startMux(t, 5*time.Second)
	hm := http.NewServeMux()
	hm.Handle(transport.WSPath, e.mux.WebSocket())
	hm.HandleFunc("/", http.NotFound)
	srv := &http.Server{Handler: hm, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(e.mux.HTTPS())
	t.Cleanup(func() { srv.Close() })
	return e
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// exchange sends the preamble and "ping" from the client, checks what the chat server side got and
// its labels, and answers "pong".
func exchange(t *testing.T, e *muxEnv, c net.Conn, wantTransport string) {
	t.Helper()
	if _, err := c.Write(append([]byte(wire.Preamble), "ping"...)); err != nil {
		t.Fatal(err)
	}
	sc := e.acceptChat(t)
	tc, ok := sc.(*transport.Conn)
	if !ok || tc.Transport != wantTransport || tc.Port != e.port || tc.Accepted.IsZero() {
		t.Fatalf("server side %T %+v, want transport %s port %d with an accept time", sc, sc, wantTransport, e.port)
	}
	if h, _, _ := net.SplitHostPort(sc.RemoteAddr().String()); h != "127.0.0.1" {
		t.Errorf("server side remote address %v, want the client's", sc.RemoteAddr())
	}
	got := make([]byte, len(wire.Preamble)+4)
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(sc, got); err != nil || string(got[len(wire.Preamble):]) != "ping" {
		t.Fatalf("server read %q, %v", got, err)
	}
	if _, err := sc.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("client read %q, %v", buf, err)
	}
	c.SetReadDeadline(time.Time{})
	// A close on the client reaches the server promptly.
	c.Close()
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := sc.Read(buf); err == nil || isTimeout(err) {
		t.Fatalf("server read after the client closed: %v, want EOF or a closed connection", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestDialerTransports carries a chat stream over each transport, directly and through an
// authenticating HTTP CONNECT proxy, to a real multiplexer.
func TestDialerTransports(t *testing.T) {
	e := startMuxHTTPS(t)
	proxy := transporttest.NewProxy(t, "alice", "s3cret:x", nil)
	for _, via := range []string{"direct", "proxy"} {
		for _, tr := range []string{transport.TransportTCP, transport.TransportTLS, transport.TransportWS} {
			t.Run(via+"/"+tr, func(t *testing.T) {
				d := &transport.Dialer{RootCAs: e.roots, UserAgent: "test/1"}
				if via == "proxy" {
					d.Proxy = transport.ProxyURL(proxy.URL)
				}
				before := len(proxy.Tunnels())
				ep := transport.Endpoint{Host: "127.0.0.1", Port: e.port, Transport: tr}
				c, err := d.Dial(ctxT(t), ep)
				if err != nil {
					t.Fatal(err)
				}
				if c.Transport != tr || c.Port != e.port {
					t.Errorf("client conn labelled %s:%d", c.Transport, c.Port)
				}
				exchange(t, e, c, tr)
				tunnels := proxy.Tunnels()[before:]
				switch {
				case via == "proxy" && (len(tunnels) != 1 || tunnels[0] != ep.Addr()):
					t.Errorf("proxy tunnels %v, want one to %s", tunnels, ep.Addr())
				case via == "direct" && len(tunnels) != 0:
					t.Errorf("direct dial went through the proxy: %v", tunnels)
				}
			})
		}
	}
}

func TestDialerProxyRefusals(t *testing.T) {
	e := startMuxHTTPS(t)
	only443 := transporttest.NewProxy(t, "u", "p", func(target string) bool { return strings.HasSuffix(target, ":443") })
	ep := transport.Endpoint{Host: "127.0.0.1", Port: e.port, Transport: transport.TransportTLS}
	for _, tt := range []struct {
		name   string
		proxy  func() transport.ProxyFunc
		status int
		want   string
	}{
		{"wrong password", func() transport.ProxyFunc { return transport.ProxyURL(only443.WithCredentials("u", "wrong")) }, 407, "wants credentials"},
		{"no credentials", func() transport.ProxyFunc {
			u := *only443.URL
			u.User = nil
			return transport.ProxyURL(&u)
		}, 407, "wants credentials"},
		{"port not allowed", func() transport.ProxyFunc { return transport.ProxyURL(only443.URL) }, 403, "many allow only 443"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := &transport.Dialer{RootCAs: e.roots, Proxy: tt.proxy()}
			c, err := d.Dial(ctxT(t), ep)
			if err == nil {
				c.Close()
				t.Fatal("dialled through a proxy that refuses")
			}
			var de *transport.DialError
			var pe *transport.ProxyError
			if !errors.As(err, &de) || de.Step != "proxy" || !errors.As(err, &pe) || pe.Status != tt.status {
				t.Fatalf("error %T %v, want a DialError at step proxy with a ProxyError %d", err, err, tt.status)
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "wrong") || !strings.Contains(err.Error(), ep.String()) {
				t.Errorf("error %q: want it to name the endpoint, say %q, and hide the password", err, tt.want)
			}
		})
	}
	// A proxy that is not there.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	u, _ := transport.ParseProxyURL(dead)
	_, err := (&transport.Dialer{Proxy: transport.ProxyURL(u)}).Dial(ctxT(t), ep)
	if err == nil || !strings.Contains(err.Error(), "proxy http://"+dead) || !strings.Contains(err.Error(), "refused") {
		t.Errorf("dead proxy: %v", err)
	}
}

func TestDialerErrors(t *testing.T) {
	e := startMuxHTTPS(t)
	ctx := ctxT(t)

	// Refused.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	_, err := (&transport.Dialer{}).Dial(ctx, transport.Endpoint{Host: "127.0.0.1", Port: closed})
	var de *transport.DialError
	if !errors.As(err, &de) || de.Step != "connect" || !strings.Contains(err.Error(), "refused") {
		t.Errorf("refused port: %v", err)
	}

	// Dropped: the connect never answers until the context ends.
	blackhole := func(ctx context.Context, _, _ string) (net.Conn, error) { <-ctx.Done(); return nil, ctx.Err() }
	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = (&transport.Dialer{DialTCP: blackhole}).Dial(sctx, transport.Endpoint{Host: "127.0.0.1", Port: 5222})
	cancel()
	if err == nil || !strings.Contains(err.Error(), "no answer") {
		t.Errorf("dropped port: %v", err)
	}

	// A certificate the roots do not trust (a TLS-inspecting proxy looks like this).
	for _, tr := range []string{transport.TransportTLS, transport.TransportWS} {
		_, err = (&transport.Dialer{RootCAs: x509.NewCertPool()}).Dial(ctx, transport.Endpoint{Host: "127.0.0.1", Port: e.port, Transport: tr})
		if !errors.As(err, &de) || de.Step != "tls" || !strings.Contains(err.Error(), "TLS-inspecting") {
			t.Errorf("%s with untrusted certificate: %v", tr, err)
		}
	}

	// A TLS server that does not speak ALPN chatd/1, and an HTTPS server without the WebSocket path.
	https := startPlainHTTPS(t)
	_, err = (&transport.Dialer{RootCAs: https.roots}).Dial(ctx, transport.Endpoint{Host: "127.0.0.1", Port: https.port, Transport: transport.TransportTLS})
	if err == nil || !strings.Contains(err.Error(), "did not accept ALPN chatd/1") {
		t.Errorf("TLS without chatd/1: %v", err)
	}
	_, err = (&transport.Dialer{RootCAs: https.roots}).Dial(ctx, transport.Endpoint{Host: "127.0.0.1", Port: https.port, Transport: transport.TransportWS})
	if !errors.As(err, &de) || de.Step != "websocket" || !strings.Contains(err.Error(), "404 Not Found instead of 101") {
		t.Errorf("WebSocket to a plain HTTPS server: %v", err)
	}

	// Invalid endpoints.
	if _, err := (&transport.Dialer{}).Dial(ctx, transport.Endpoint{Host: "x", Port: 1, Transport: "quic"}); err == nil {
		t.Error("dialled an unknown transport")
	}
}

type plainHTTPS struct {
	port  int
	roots *x509.CertPool
}

// startPlainHTTPS starts an HTTPS server (no ALPN chatd/1, no WebSocket) with a dev certificate.
func startPlainHTTPS(t *testing.T) plainHTTPS {
	t.Helper()
	dt, err := pki.EnsureDevTLS(t.TempDir(), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(dt.CertFile, dt.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pem, _ := os.ReadFile(dt.CAFile)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return plainHTTPS{port: ln.Addr().(*net.TCPAddr).Port, roots: roots}
}

// TestWebSocketPathRefusesPlainRequests: a browser or curl on /v1/chat learns what the path is.
func TestWebSocketPathRefusesPlainRequests(t *testing.T) {
	e := startMuxHTTPS(t)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.roots}}}
	defer hc.CloseIdleConnections()
	url := "https://127.0.0.1:" + strconv.Itoa(e.port) + transport.WSPath
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired || !strings.Contains(string(body), "WebSocket") {
		t.Errorf("GET %s: %s %s", url, resp.Status, body)
	}
	resp, err = hc.Post(url, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST %s: %s", url, resp.Status)
	}
	// A broken upgrade (no key) is refused and reported as a failed handshake.
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 4 {
		t.Errorf("upgrade without a key: %s", resp.Status)
	}
	select {
	case r := <-e.rejects:
		if r.reason != "handshake_failed" {
			t.Errorf("reject reason %q", r.reason)
		}
	case <-time.After(5 * time.Second):
		t.Error("broken upgrade not reported")
	}
}

func TestParseEndpoint(t *testing.T) {
	for in, want := range map[string]string{
		"chat.example:5222":     "chat.example:5222/tcp",
		"chat.example:443/tls":  "chat.example:443/tls",
		"chat.example:443/ws":   "chat.example:443/ws",
		"[2001:db8::1]:443/tls": "[2001:db8::1]:443/tls",
		"127.0.0.1:5222/tcp":    "127.0.0.1:5222/tcp",
	} {
		ep, err := transport.ParseEndpoint(in)
		if err != nil || ep.String() != want {
			t.Errorf("ParseEndpoint(%q) = %v, %v; want %s", in, ep, err, want)
		}
	}
	for _, bad := range []string{"", "host", "host:0", "host:70000", ":443/tls", "host:443/quic", "host:x/tcp"} {
		if ep, err := transport.ParseEndpoint(bad); err == nil {
			t.Errorf("ParseEndpoint(%q) = %v, want an error", bad, ep)
		}
	}
}

func TestOn443(t *testing.T) {
	all := []transport.Endpoint{
		{Host: "a", Port: 5222, Transport: "tcp"},
		{Host: "a", Port: 8443, Transport: "tls"},
		{Host: "a", Port: 8443, Transport: "tcp"},
		{Host: "b", Port: 443},
		{Host: "b", Port: 8443, Transport: "tcp"},
		{Host: "c", Port: 9000, Transport: "ws"},
	}
	want := []bool{false, true, true, true, false, true}
	for i, ep := range all {
		if got := transport.On443(ep, all); got != want[i] {
			t.Errorf("On443(%s) = %v, want %v", ep, got, want[i])
		}
	}
}

func TestParseProxyURL(t *testing.T) {
	u, err := transport.ParseProxyURL("proxy.corp:3128")
	if err != nil || u.String() != "http://proxy.corp:3128" {
		t.Errorf("host:port: %v %v", u, err)
	}
	u, err = transport.ParseProxyURL("http://bob:pw@proxy.corp:3128")
	if err != nil || u.User.Username() != "bob" || u.Redacted() != "http://bob:xxxxx@proxy.corp:3128" {
		t.Errorf("with credentials: %v %v", u, err)
	}
	for _, bad := range []string{"", "socks5://proxy:1080", "https://proxy:443", "http://"} {
		if _, err := transport.ParseProxyURL(bad); err == nil {
			t.Errorf("ParseProxyURL(%q) accepted", bad)
		}
	}
}

// TestProxyFromEnvironment checks the environment's proxy choice in a child process, since
// net/http reads the environment only once per process.
func TestProxyFromEnvironment(t *testing.T) {
	if os.Getenv("CHATD_TEST_PROXY_CHILD") == "1" {
		f := transport.ProxyFromEnvironment()
		d := &transport.Dialer{Proxy: f}
		for host, want := range map[string]string{
			"chat.example":  "http://u:p@proxy.corp:3128",
			"skip.internal": "",
			"127.0.0.1":     "", // loopback is never proxied
		} {
			u, err := d.ProxyFor(transport.Endpoint{Host: host, Port: 443, Transport: "tls"})
			got := ""
			if u != nil {
				got = u.String()
			}
			if err != nil || got != want {
				t.Errorf("proxy for %s: %q %v, want %q", host, got, err, want)
			}
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestProxyFromEnvironment$", "-test.v")
	cmd.Env = append(os.Environ(), "CHATD_TEST_PROXY_CHILD=1", "HTTPS_PROXY=http://u:p@proxy.corp:3128",
		"https_proxy=", "NO_PROXY=skip.internal", "no_proxy=", "HTTP_PROXY=", "http_proxy=")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "PASS") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// TestWebSocketDeadlines: an expired deadline on a WebSocket chat stream reads as a timeout
// (os.ErrDeadlineExceeded), on both sides, as on TCP; the chat server's close reasons depend on it.
func TestWebSocketDeadlines(t *testing.T) {
	e := startMuxHTTPS(t)
	// An expired deadline ends the whole WebSocket, so each side gets its own connection.
	for _, side := range []string{"client", "server"} {
		c, err := (&transport.Dialer{RootCAs: e.roots}).Dial(ctxT(t), transport.Endpoint{Host: "127.0.0.1", Port: e.port, Transport: transport.TransportWS})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var conn net.Conn = c
		if sc := e.acceptChat(t); side == "server" {
			conn = sc
		}
		conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err = conn.Read(make([]byte, 1))
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("%s: read past the deadline: %v, want a timeout", side, err)
		}
	}
}
