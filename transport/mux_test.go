package transport_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/internal/testutil"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/transport"
	"github.com/chatd-dev/chatd/wire"
)

// rejection is one OnReject call.
type rejection struct {
	remote string
	reason string
	err    error
}

// muxEnv is a Mux serving on a loopback port with a real (development) certificate.
type muxEnv struct {
	mux     *transport.Mux
	addr    string
	port    int
	roots   *x509.CertPool
	rejects chan rejection
	chat    chan net.Conn // what Chat().Accept returned
	cancel  context.CancelFunc
	served  chan error // Serve's result
}

func startMux(t *testing.T, sniff time.Duration) *muxEnv {
	t.Helper()
	return startMuxOn(t, sniff, nil)
}

// startMuxOn is startMux with the listener passed through wrap (when not nil) before NewMux.
func startMuxOn(t *testing.T, sniff time.Duration, wrap func(net.Listener) net.Listener) *muxEnv {
	t.Helper()
	dt, err := pki.EnsureDevTLS(t.TempDir(), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(dt.CertFile, dt.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(dt.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA certificate in " + dt.CAFile)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &muxEnv{
		addr:    ln.Addr().String(),
		port:    ln.Addr().(*net.TCPAddr).Port,
		roots:   roots,
		rejects: make(chan rejection, 16),
		chat:    make(chan net.Conn, 16),
		served:  make(chan error, 1),
	}
	if wrap != nil {
		ln = wrap(ln)
	}
	e.mux = transport.NewMux(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
	e.mux.SniffTimeout = sniff
	e.mux.OnReject = func(remote net.Addr, reason string, err error) {
		e.rejects <- rejection{remote.String(), reason, err}
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() { e.served <- e.mux.Serve(ctx) }()
	go func() {
		for {
			c, err := e.mux.Chat().Accept()
			if err != nil {
				return
			}
			e.chat <- c
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-e.served:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return e
}

// acceptChat waits for the next connection routed to the chat server.
func (e *muxEnv) acceptChat(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-e.chat:
		t.Cleanup(func() { c.Close() })
		return c
	case r := <-e.rejects:
		t.Fatalf("rejected (%s: %v), want routed to chat", r.reason, r.err)
	case <-time.After(5 * time.Second):
		t.Fatal("nothing arrived on Chat()")
	}
	return nil
}

// waitReject waits for the rejection of the connection from local (the client's local address).
func (e *muxEnv) waitReject(t *testing.T, local net.Addr, within time.Duration) rejection {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case r := <-e.rejects:
			if r.remote == local.String() {
				return r
			}
			t.Fatalf("unexpected rejection of %s (%s: %v)", r.remote, r.reason, r.err)
		case c := <-e.chat:
			c.Close()
			t.Fatalf("connection from %s was routed to chat, want it rejected", c.RemoteAddr())
		case <-deadline:
			t.Fatalf("connection from %s not rejected within %v", local, within)
		}
	}
}

func (e *muxEnv) dial(t *testing.T) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

func (e *muxEnv) tlsConfig(alpn ...string) *tls.Config {
	return &tls.Config{RootCAs: e.roots, ServerName: "127.0.0.1", NextProtos: alpn}
}

// expectClosed checks that the mux closed nc (a read ends with EOF or a reset, not our deadline).
func expectClosed(t *testing.T, nc net.Conn) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, nc)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection not closed by the mux: %v", err)
	}
}

func TestMuxTLSChat(t *testing.T) {
	e := startMux(t, 5*time.Second)
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.addr, e.tlsConfig(transport.ALPNChat, "h2"))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if p := tc.ConnectionState().NegotiatedProtocol; p != transport.ALPNChat {
		t.Fatalf("negotiated %q, want %q", p, transport.ALPNChat)
	}
	if v := tc.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("TLS version %#x, want TLS 1.3", v)
	}
	hello := wire.Preamble + "first bytes of a chat stream"
	if _, err := tc.Write([]byte(hello)); err != nil {
		t.Fatal(err)
	}
	c := e.acceptChat(t)
	tcn, ok := c.(*transport.Conn)
	if !ok {
		t.Fatalf("Chat() returned %T, want *transport.Conn", c)
	}
	if tcn.Transport != transport.TransportTLS || tcn.Port != e.port {
		t.Fatalf("conn labelled %q port %d, want %q port %d", tcn.Transport, tcn.Port, transport.TransportTLS, e.port)
	}
	if port, tr := transport.Label(c); port != e.port || tr != transport.TransportTLS {
		t.Fatalf("Label = %d, %q", port, tr)
	}
	if tcn.Accepted.IsZero() || tcn.Accepted.After(time.Now()) {
		t.Fatalf("Accepted = %v, want the time the mux accepted the connection", tcn.Accepted)
	}
	if _, ok := tcn.Conn.(*tls.Conn); !ok {
		t.Fatalf("the chat conn wraps %T, want the *tls.Conn (plaintext inside TLS)", tcn.Conn)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(hello))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != hello {
		t.Fatalf("server read %q, %v; want %q", got, err, hello)
	}
	// And back.
	if _, err := c.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	back := make([]byte, 5)
	if _, err := io.ReadFull(tc, back); err != nil || string(back) != "reply" {
		t.Fatalf("client read %q, %v", back, err)
	}
}

func TestMuxRawPreamble(t *testing.T) {
	e := startMux(t, 5*time.Second)
	stream := []byte(wire.Preamble + "\x00\x00\x20" + string(bytes.Repeat([]byte{0xAB}, 32)))
	for _, tt := range []struct {
		name   string
		stream []byte
		split  int // the first write's length
	}{
		{"one write", stream, len(stream)},
		{"first byte alone", stream, 1},
		{"half the magic", stream, 2},
		{"magic, then the version", stream, 3},
		// The version byte is the chat server's to judge (it answers with unsupported_version).
		{"another version", append([]byte("CHD\x02"), stream[4:]...), len(stream)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now()
			nc := e.dial(t)
			if _, err := nc.Write(tt.stream[:tt.split]); err != nil {
				t.Fatal(err)
			}
			if _, err := nc.Write(tt.stream[tt.split:]); err != nil {
				t.Fatal(err)
			}
			c := e.acceptChat(t)
			tcn, ok := c.(*transport.Conn)
			if !ok {
				t.Fatalf("Chat() returned %T, want *transport.Conn", c)
			}
			if tcn.Transport != transport.TransportTCP || tcn.Port != e.port {
				t.Fatalf("conn labelled %q port %d, want %q port %d", tcn.Transport, tcn.Port, transport.TransportTCP, e.port)
			}
			if tcn.Accepted.Before(before) || tcn.Accepted.After(time.Now()) {
				t.Fatalf("Accepted = %v, want the time the mux accepted the connection", tcn.Accepted)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, len(tt.stream))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, tt.stream) {
				t.Fatalf("chat side read %q, %v; want %q", got, err, tt.stream)
			}
		})
	}
}

// TestMuxHTTPS serves the HTTPS listener with a real http.Server and asks it over h2, http/1.1 and a
// TLS client that offers no ALPN at all.
func TestMuxHTTPS(t *testing.T) {
	e := startMux(t, 5*time.Second)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s tls=%v alpn=%s", r.Proto, r.TLS != nil, r.TLS.NegotiatedProtocol)
	})}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(e.mux.HTTPS()) }()
	t.Cleanup(func() {
		hs.Close()
		<-served
	})
	tests := []struct {
		name      string
		transport *http.Transport
		major     int
		body      string
	}{
		{"h2", &http.Transport{TLSClientConfig: e.tlsConfig(), ForceAttemptHTTP2: true}, 2, "HTTP/2.0 tls=true alpn=h2"},
		{"http/1.1", &http.Transport{TLSClientConfig: e.tlsConfig("http/1.1")}, 1, "HTTP/1.1 tls=true alpn=http/1.1"},
		{"no ALPN", &http.Transport{TLSClientConfig: e.tlsConfig(), TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}, 1, "HTTP/1.1 tls=true alpn="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer tt.transport.CloseIdleConnections()
			hc := &http.Client{Transport: tt.transport, Timeout: 5 * time.Second}
			resp, err := hc.Get("https://" + e.addr + "/v1/config")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK || resp.ProtoMajor != tt.major || string(body) != tt.body {
				t.Fatalf("got %s %s %q, want HTTP/%d.x 200 %q", resp.Proto, resp.Status, body, tt.major, tt.body)
			}
		})
	}
	select {
	case c := <-e.chat:
		t.Fatalf("an HTTPS connection from %s reached Chat()", c.RemoteAddr())
	default:
	}
}

func TestMuxRejects(t *testing.T) {
	const sniff = 300 * time.Millisecond
	e := startMux(t, sniff)
	tests := []struct {
		name   string
		reason string
		// do opens a connection, misbehaves on it and returns it.
		do func(t *testing.T) net.Conn
	}{
		{"garbage", "bad_preamble", func(t *testing.T) net.Conn {
			nc := e.dial(t)
			nc.Write([]byte("\x00\xff\x13garbage"))
			return nc
		}},
		{"plain HTTP GET", "bad_preamble", func(t *testing.T) net.Conn {
			nc := e.dial(t)
			nc.Write([]byte("GET /v1/config HTTP/1.1\r\nHost: chatd\r\n\r\n"))
			return nc
		}},
		{"plain HTTP POST", "bad_preamble", func(t *testing.T) net.Conn {
			nc := e.dial(t)
			nc.Write([]byte("POST /v1/register HTTP/1.1\r\nHost: chatd\r\nContent-Length: 0\r\n\r\n"))
			return nc
		}},
		{"silent", "handshake_timeout", func(t *testing.T) net.Conn {
			return e.dial(t)
		}},
		{"C then silence", "handshake_timeout", func(t *testing.T) net.Conn {
			nc := e.dial(t)
			nc.Write([]byte("C"))
			return nc
		}},
		{"CH then garbage", "bad_preamble", func(t *testing.T) net.Conn {
			nc := e.dial(t)
			nc.Write([]byte("CHX\x01 not chatd"))
			return nc
		}},
		{"TLS record header then silence", "handshake_timeout", func(t *testing.T) net.Conn {
			nc := e.dial(t)
			nc.Write([]byte{0x16, 0x03, 0x01})
			return nc
		}},
		{"TLS record of garbage", "handshake_failed", func(t *testing.T) net.Conn {
			nc := e.dial(t)
			nc.Write([]byte("\x16\x03\x01\x00\x10garbage garbage!"))
			return nc
		}},
		{"TLS 1.1 only client", "handshake_failed", func(t *testing.T) net.Conn {
			nc := e.dial(t)
			cfg := e.tlsConfig(transport.ALPNChat)
			cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
			tc := tls.Client(nc, cfg)
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err == nil {
				t.Fatal("a TLS 1.1 handshake succeeded")
			}
			return nc
		}},
		{"TLS client that rejects the certificate", "handshake_failed", func(t *testing.T) net.Conn {
			nc := e.dial(t)
			tc := tls.Client(nc, &tls.Config{ServerName: "127.0.0.1", NextProtos: []string{transport.ALPNChat}}) // system roots
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err == nil {
				t.Fatal("the development certificate verified against the system roots")
			}
			return nc
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			nc := tt.do(t)
			r := e.waitReject(t, nc.LocalAddr(), 10*sniff+5*time.Second)
			if r.reason != tt.reason {
				t.Fatalf("rejected with %q (%v), want %q", r.reason, r.err, tt.reason)
			}
			if r.err == nil {
				t.Fatal("OnReject got no error")
			}
			if tt.reason == "handshake_timeout" {
				if d := time.Since(start); d < sniff*9/10 {
					t.Fatalf("timed out after %v, before SniffTimeout %v", d, sniff)
				}
			}
			expectClosed(t, nc)
		})
	}
}

// TestMuxHTTPConnectIsNotChat: the Mux promises that only a chatd preamble reaches the chat server
// and that anything else is closed and reported. A plain HTTP CONNECT request (what a client that
// takes the port for a proxy sends) starts with 'C', like the preamble, so one byte cannot decide.
func TestMuxHTTPConnectIsNotChat(t *testing.T) {
	e := startMux(t, 5*time.Second)
	for _, first := range []string{
		"CONNECT chat.example:5222 HTTP/1.1\r\nHost: chat.example:5222\r\n\r\n",
		"COPY /x HTTP/1.1\r\nHost: chatd\r\n\r\n",
	} {
		nc := e.dial(t)
		nc.Write([]byte(first))
		r := e.waitReject(t, nc.LocalAddr(), 5*time.Second)
		if r.reason != "bad_preamble" {
			t.Fatalf("%q: rejected with %q, want bad_preamble", first[:8], r.reason)
		}
	}
}

func TestMuxServeStopsOnCancel(t *testing.T) {
	e := startMux(t, 5*time.Second)
	https := make(chan error, 1)
	go func() {
		c, err := e.mux.HTTPS().Accept()
		if c != nil {
			c.Close()
		}
		https <- err
	}()
	// Prove Serve is up before cancelling.
	nc := e.dial(t)
	nc.Write([]byte(wire.Preamble))
	e.acceptChat(t)

	e.cancel()
	select {
	case err := <-e.served:
		if err != nil {
			t.Fatalf("Serve returned %v after cancel, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	e.served <- nil // for the cleanup
	select {
	case err := <-https:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("a pending HTTPS().Accept returned %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a pending HTTPS().Accept did not return after Serve stopped")
	}
	for name, ln := range map[string]net.Listener{"Chat": e.mux.Chat(), "HTTPS": e.mux.HTTPS()} {
		if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("%s().Accept after stop: %v, want net.ErrClosed", name, err)
		}
	}
	if c, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
		c.Close()
		t.Fatal("the port still accepts connections after Serve stopped")
	}
}

// TestMuxSurvivesFDExhaustion: when a flood uses up the process's file descriptors, accept fails with
// EMFILE. That is temporary, so Serve must back off and go on (its comment says it does, like
// net/http), not return and leave port 443 dead until a restart.
func TestMuxSurvivesFDExhaustion(t *testing.T) {
	watch := &testutil.AcceptWatcher{Errs: make(chan error, 16)}
	e := startMuxOn(t, 5*time.Second, func(ln net.Listener) net.Listener { watch.Listener = ln; return watch })

	release := testutil.ExhaustFDs(t)
	nc, err := net.DialTimeout("tcp", e.addr, 5*time.Second) // takes the last descriptor
	if err != nil {
		release()
		t.Fatalf("dial: %v", err)
	}
	defer nc.Close()
	select {
	case err := <-watch.Errs:
		if !errors.Is(err, syscall.EMFILE) {
			release()
			t.Fatalf("accept failed with %v, want EMFILE", err)
		}
	case <-time.After(10 * time.Second):
		release()
		t.Fatal("the mux did not try to accept the connection")
	}
	release()

	// The connection that waited in the backlog is routed once descriptors are back.
	if _, err := nc.Write([]byte(wire.Preamble)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-e.served:
		e.served <- err // for the cleanup
		t.Fatalf("Serve returned after one failed accept (EMFILE): %v; port 443 is dead until restart", err)
	case c := <-e.chat:
		c.Close()
	case r := <-e.rejects:
		t.Fatalf("rejected (%s: %v), want routed to chat", r.reason, r.err)
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was not routed after the descriptors came back")
	}
}
