package node_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/node"
	"github.com/chatd-dev/chatd/server/node/nodetest"
	"github.com/chatd-dev/chatd/server/store"
	"github.com/chatd-dev/chatd/transport"
)

func startNode(t *testing.T) *node.Node {
	t.Helper()
	return nodetest.Start(t, node.Config{AdminListen: "127.0.0.1:0"})
}

func caPool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no CA in", file)
	}
	return pool
}

// TestAllChatPaths logs in over each way the node accepts chat — raw on the chat port, raw on the 443
// port, TLS with ALPN chatd/1 and WebSocket (GET /v1/chat) on the 443 port — while HTTPS works on the
// same 443 port, and checks that the metrics label each session with its port and transport.
func TestAllChatPaths(t *testing.T) {
	n := startNode(t)
	pool := caPool(t, n.CAFile)
	dev, _ := pki.GenerateStaticKey()
	if _, err := n.Store.RegisterDevice(context.Background(), store.Account{Phone: "15550300001", DevicePub: dev.Public[:]}); err != nil {
		t.Fatal(err)
	}
	tlsDial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := &tls.Dialer{Config: &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{transport.ALPNChat}}}
		return d.DialContext(ctx, network, addr)
	}
	_, httpsPort, _ := net.SplitHostPort(n.HTTPSAddr.String())
	_, chatPort, _ := net.SplitHostPort(n.ChatAddr.String())
	paths := []struct {
		name, addr, port, transport string
		dial                        func(context.Context, string, string) (net.Conn, error)
	}{
		{"raw 5222", n.ChatAddr.String(), chatPort, "tcp", nil},
		{"raw 443", n.HTTPSAddr.String(), httpsPort, "tcp", nil},
		{"tls 443 (own dialer)", n.HTTPSAddr.String(), httpsPort, "tls", tlsDial},
		{"tls 443", n.HTTPSAddr.String() + "/tls", httpsPort, "tls", nil},
		{"ws 443", n.HTTPSAddr.String() + "/ws", httpsPort, "ws", nil},
	}
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			c, err := client.New(client.Config{Addrs: []string{p.addr}, ServerKey: n.ServerKey, DeviceKey: dev, Dial: p.dial, RootCAs: pool})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			defer func() { cancel(); <-done }()
			wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
			defer wcancel()
			if err := c.WaitConnected(wctx); err != nil {
				t.Fatalf("not connected: %v", err)
			}
			// The previous subtest's session may still be finishing: wait for the gauge to settle.
			want := `chatd_connections{port="` + p.port + `",transport="` + p.transport + `"} 1`
			deadline := time.Now().Add(10 * time.Second)
			for m := scrape(t, n); !strings.Contains(m, want); m = scrape(t, n) {
				if time.Now().After(deadline) {
					t.Fatalf("metrics lack %s:\n%s", want, grep(m, "chatd_connections"))
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}

	// HTTPS on the same port, over HTTP/2.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	resp, err := hc.Get("https://localhost:" + httpsPort + "/v1/config")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !strings.Contains(string(body), pki.FormatPublic(n.ServerKey)) {
		t.Fatalf("GET /v1/config: %s %s %s", resp.Status, resp.Proto, body)
	}
	// The published endpoints: raw chatd on the chat port, TLS and WebSocket on the 443 port.
	wantEPs := `"chat_endpoints":[{"host":"localhost","port":` + chatPort + `,"transport":"tcp"},` +
		`{"host":"localhost","port":` + httpsPort + `,"transport":"tls"},{"host":"localhost","port":` + httpsPort + `,"transport":"ws"}]`
	if !strings.Contains(string(body), wantEPs) {
		t.Errorf("GET /v1/config: %s\nwant %s", body, wantEPs)
	}

	// Garbage on the 443 port is counted as a bad preamble.
	nc, err := net.Dial("tcp", n.HTTPSAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	nc.Write([]byte("hello?\r\n"))
	io.Copy(io.Discard, nc) // until the server closes it
	nc.Close()
	if m := scrape(t, n); !strings.Contains(m, `chatd_closes_total{reason="bad_preamble"} 1`) {
		t.Fatalf("garbage on 443 not counted:\n%s", grep(m, "chatd_closes_total"))
	}
}

func scrape(t *testing.T, n *node.Node) string {
	t.Helper()
	resp, err := http.Get("http://" + n.AdminAddr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestStartErrors(t *testing.T) {
	if _, err := node.Start(node.Config{}); err == nil || !strings.Contains(err.Error(), "data folder") {
		t.Fatalf("no data dir: %v", err)
	}
	_, err := node.Start(node.Config{DataDir: t.TempDir(), ChatListen: "127.0.0.1:0", HTTPSListen: "127.0.0.1:0", AdminListen: "off"})
	if err == nil || !strings.Contains(err.Error(), "TLS certificate") {
		t.Fatalf("no TLS outside dev mode: %v", err)
	}
	n := startNode(t)
	_, err = node.Start(node.Config{DataDir: t.TempDir(), Dev: true, ChatListen: n.ChatAddr.String(), HTTPSListen: "127.0.0.1:0", AdminListen: "off"})
	if err == nil || !strings.Contains(err.Error(), "chat listener") {
		t.Fatalf("port in use: %v", err)
	}
}

// TestWebSocketHandshakeTimeout: a WebSocket chat stream that never sends its preamble is closed at
// the handshake deadline and counted as handshake_timeout, like one on TCP.
func TestWebSocketHandshakeTimeout(t *testing.T) {
	n := nodetest.Start(t, node.Config{HandshakeTimeout: 200 * time.Millisecond, AdminListen: "127.0.0.1:0"})
	_, port, _ := net.SplitHostPort(n.HTTPSAddr.String())
	p, _ := strconv.Atoi(port)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := &transport.Dialer{RootCAs: caPool(t, n.CAFile)}
	c, err := d.Dial(ctx, transport.Endpoint{Host: "localhost", Port: p, Transport: transport.TransportWS})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v, want the server to close the stream", err)
	}
	want := `chatd_closes_total{reason="handshake_timeout"} 1`
	deadline := time.Now().Add(5 * time.Second)
	for m := scrape(t, n); !strings.Contains(m, want); m = scrape(t, n) {
		if time.Now().After(deadline) {
			t.Fatalf("metrics lack %s:\n%s", want, grep(m, "chatd_closes_total"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if m := scrape(t, n); !strings.Contains(m, `chatd_connections_accepted_total{port="`+port+`",transport="ws"} 1`) {
		t.Errorf("ws connection not counted:\n%s", grep(m, "accepted"))
	}
}
