// Package transport is how bytes reach the server: on the server, the listeners, the 443 multiplexer
// and the WebSocket handler; on the client, the dialers (raw TCP, TLS with ALPN chatd/1, WebSocket
// over HTTPS, each optionally through an HTTP CONNECT proxy). It knows nothing of Noise or envelopes —
// it hands over net.Conns labelled with the path they came by.
package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/wire"
)

// ALPNChat is the TLS ALPN protocol of a chat stream inside TLS.
const ALPNChat = "chatd/1"

// Transports, as used in Conn.Transport, logs and metrics.
const (
	TransportTCP = "tcp" // raw chatd: the preamble straight on TCP
	TransportTLS = "tls" // chatd inside TLS 1.3 with ALPN chatd/1
)

// Conn is a connection handed to the chat server, labelled with how it arrived.
type Conn struct {
	net.Conn
	// Transport is TransportTCP, TransportTLS or TransportWS.
	Transport string
	// Port is the local port the client connected to (on the client side: the endpoint's port).
	Port int
	// Accepted is when the multiplexer accepted the TCP connection (for WebSocket: when the upgrade
	// request arrived); the chat server's handshake deadline counts from it. Zero on the client side.
	Accepted time.Time
}

// Label returns the connection's labels: the local port the client connected to and the transport.
// Connections that are not a *Conn are labelled with their local port and "tcp".
func Label(c net.Conn) (port int, transport string) {
	if tc, ok := c.(*Conn); ok {
		return tc.Port, tc.Transport
	}
	return localPort(c), TransportTCP
}

func localPort(c net.Conn) int {
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
		return a.Port
	}
	if _, p, err := net.SplitHostPort(c.LocalAddr().String()); err == nil {
		n, _ := strconv.Atoi(p)
		return n
	}
	return 0
}

// Mux splits one listener (the 443 port) by the first bytes of each connection: a TLS ClientHello is
// terminated here and routed by ALPN — chatd/1 to the chat server, anything else (http/1.1, h2, none) to
// the HTTPS API; a raw chatd preamble goes to the chat server; anything else is closed and reported.
//
// Create it with NewMux; the exported fields may be set before Serve.
type Mux struct {
	// SniffTimeout bounds the time from accept to a routed connection (first bytes and the TLS
	// handshake). If zero, 10 s is used.
	SniffTimeout time.Duration
	// OnReject, if set, is called for every connection closed without routing, with the reason
	// ("bad_preamble" for garbage or plain HTTP, "handshake_timeout", "handshake_failed" for a failed TLS
	// handshake).
	OnReject func(remote net.Addr, reason string, err error)
	// Logger receives debug logs; nil means no logs.
	Logger *slog.Logger

	// Static after construction.
	ln    net.Listener
	chat  *chanListener
	https *chanListener
	tls   *tls.Config
}

// NewMux returns a multiplexer for ln. tlsConfig must hold the server certificate; nil disables TLS
// (only raw chat streams are accepted). It is cloned, with NextProtos set to chatd/1, h2, http/1.1
// and a minimum of TLS 1.2 (TLS 1.3 is negotiated with every current client).
func NewMux(ln net.Listener, tlsConfig *tls.Config) *Mux {
	m := &Mux{ln: ln, chat: newChanListener(ln.Addr()), https: newChanListener(ln.Addr())}
	if tlsConfig != nil {
		m.tls = tlsConfig.Clone()
		m.tls.NextProtos = []string{ALPNChat, "h2", "http/1.1"}
		m.tls.MinVersion = max(m.tls.MinVersion, tls.VersionTLS12)
	}
	return m
}

// Chat returns the listener of chat streams that arrived raw or inside TLS, as *Conn.
func (m *Mux) Chat() net.Listener { return m.chat }

// HTTPS returns the listener of TLS connections for the HTTPS API; pass it to http.Server.Serve,
// which sees *tls.Conn connections and so enables HTTP/2 when ALPN chose h2.
func (m *Mux) HTTPS() net.Listener { return m.https }

// Serve accepts connections until the listener fails or ctx is done, then closes the listener and the
// Chat and HTTPS listeners. It returns nil after ctx is done, else the accept error.
func (m *Mux) Serve(ctx context.Context) error {
	ln := m.ln
	defer m.chat.Close()
	defer m.https.Close()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// EMFILE, ENFILE, ECONNABORTED…: the listener still works; back off like net/http.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			if m.Logger != nil {
				m.Logger.Warn("443: accept failed; retrying", "err", err, "delay", delay)
			}
			time.Sleep(delay)
			continue
		}
		delay = 0
		go m.route(c)
	}
}

func (m *Mux) sniffTimeout() time.Duration {
	if m.SniffTimeout > 0 {
		return m.SniffTimeout
	}
	return 10 * time.Second
}

func (m *Mux) route(c net.Conn) {
	port := localPort(c)
	accepted := time.Now()
	c.SetDeadline(accepted.Add(m.sniffTimeout()))
	var first [1]byte
	if _, err := io.ReadFull(c, first[:]); err != nil {
		m.reject(c, reasonFor(err), err)
		return
	}
	pc := &prefixConn{Conn: c, prefix: first[:]}
	switch {
	case first[0] == 0x16: // TLS handshake record
		if m.tls == nil {
			m.reject(c, "handshake_failed", errors.New("TLS is not configured on this port"))
			return
		}
		tc := tls.Server(pc, m.tls)
		if err := tc.Handshake(); err != nil {
			m.reject(c, reasonFor(err), fmt.Errorf("TLS handshake: %w", err))
			return
		}
		c.SetDeadline(time.Time{})
		if tc.ConnectionState().NegotiatedProtocol == ALPNChat {
			// The chat server applies its own handshake deadline from here.
			m.chat.deliver(&Conn{Conn: tc, Transport: TransportTLS, Port: port, Accepted: accepted})
			return
		}
		m.https.deliver(tc)
	case wire.LooksLikePreamble(first[:]):
		// 'C' alone could be an HTTP CONNECT: route only a whole chatd magic. The version byte is
		// left to the chat server, which answers a wrong one with its own close reason.
		magic := make([]byte, len(wire.Magic))
		magic[0] = first[0]
		if _, err := io.ReadFull(c, magic[1:]); err != nil {
			m.reject(c, reasonFor(err), err)
			return
		}
		if !wire.LooksLikePreamble(magic) {
			m.reject(c, "bad_preamble", fmt.Errorf("first bytes %q are neither TLS nor a chatd preamble", magic))
			return
		}
		c.SetDeadline(time.Time{})
		m.chat.deliver(&Conn{Conn: &prefixConn{Conn: c, prefix: magic}, Transport: TransportTCP, Port: port, Accepted: accepted})
	default:
		m.reject(c, "bad_preamble", fmt.Errorf("first byte %#02x is neither TLS nor a chatd preamble", first[0]))
	}
}

func reasonFor(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "handshake_timeout"
	}
	return "handshake_failed"
}

func (m *Mux) reject(c net.Conn, reason string, err error) {
	if m.Logger != nil {
		m.Logger.Debug("443: connection rejected", "remote", c.RemoteAddr(), "reason", reason, "err", err)
	}
	if m.OnReject != nil {
		m.OnReject(c.RemoteAddr(), reason, err)
	}
	c.Close()
}

// prefixConn replays bytes already read from the connection.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// chanListener is a net.Listener fed by the mux.
type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
