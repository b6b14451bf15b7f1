package node_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/node"
	"github.com/chatd-dev/chatd/server/store"
	"github.com/chatd-dev/chatd/transport"
)

func startNode(t *testing.T) *node.Node {
	t.Helper()
	n, err := node.Start(node.Config{
		DataDir: t.TempDir(), Dev: true,
		ChatListen: "127.0.0.1:0", HTTPSListen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return n
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
// port, TLS with ALPN chatd/1 on the 443 port — while HTTPS works on the same 443 port, and checks
// that the metrics label each session with its port and transport.
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
		{"tls 443", n.HTTPSAddr.String(), httpsPort, "tls", tlsDial},
	}
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			c, err := client.New(client.Config{Addrs: []string{p.addr}, ServerKey: n.ServerKey, DeviceKey: dev, Dial: p.dial})
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
			want := `chatd_connections{port="` + p.port + `",transport="` + p.transport + `"} 1`
			if m := scrape(t, n); !strings.Contains(m, want) {
				t.Fatalf("metrics lack %s:\n%s", want, grep(m, "chatd_connections"))
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
