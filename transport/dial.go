package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/coder/websocket"
)

// DialFunc opens a network connection, like net.Dialer.DialContext.
type DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// Dialer opens chat streams to endpoints — raw TCP, TLS 1.3 with ALPN chatd/1, or a WebSocket over
// HTTPS — directly or through an HTTP CONNECT proxy. The zero Dialer dials directly and verifies TLS
// against the system roots. A Dialer is safe for concurrent use.
//
// The outer TLS only gets the stream through middleboxes: the caller still runs the Noise handshake
// against the pinned server key, which is what authenticates the server.
type Dialer struct {
	// DialTCP opens the TCP connection to the server or to the proxy. If nil, a net.Dialer is used.
	DialTCP DialFunc
	// KeepAlive is the idle time before TCP keepalive probes, which then go every 5 s; 0 means
	// 15 s, negative disables them. UserTimeout is TCP_USER_TIMEOUT: how long sent data (or
	// keepalive probes) may stay unanswered before the kernel gives the connection up; 0 or
	// negative leaves the system default. Both are applied to the *net.TCPConn DialTCP returns (to
	// the server or the proxy).
	KeepAlive   time.Duration
	UserTimeout time.Duration
	// RootCAs verify the server's certificate on the tls and ws transports; nil means the system
	// roots.
	RootCAs *x509.CertPool
	// Proxy chooses an HTTP CONNECT proxy for each endpoint (asked with an https request to the
	// endpoint's host:port); nil dials directly.
	Proxy ProxyFunc
	// UserAgent is sent in CONNECT and WebSocket upgrade requests; "" sends none on CONNECT and Go's
	// default on the upgrade.
	UserAgent string
}

// DialError says which step of reaching an endpoint failed.
type DialError struct {
	Endpoint Endpoint
	// Proxy is the proxy URL (without password) the attempt went through; "" when direct.
	Proxy string
	// Step is "connect" (TCP, to the server or the proxy), "proxy" (the CONNECT), "tls" or
	// "websocket" (the HTTP upgrade).
	Step string
	Err  error
}

func (e *DialError) Error() string {
	var pe *ProxyError
	if errors.As(e.Err, &pe) {
		return fmt.Sprintf("%s: %v", e.Endpoint, e.Err) // it names the proxy
	}
	via := ""
	if e.Proxy != "" {
		via = " via proxy " + e.Proxy
	}
	return fmt.Sprintf("%s%s: %s: %v", e.Endpoint, via, e.Step, e.Err)
}

func (e *DialError) Unwrap() error { return e.Err }

// ProxyFor returns the proxy the Dialer uses for ep, nil when direct.
func (d *Dialer) ProxyFor(ep Endpoint) (*url.URL, error) {
	if d.Proxy == nil {
		return nil, nil
	}
	req := &http.Request{Method: http.MethodGet, URL: &url.URL{Scheme: "https", Host: ep.Addr()}, Header: http.Header{}, Host: ep.Addr()}
	u, err := d.Proxy(req)
	if err != nil {
		return nil, fmt.Errorf("choosing the proxy for %s: %w", ep, err)
	}
	return u, nil
}

// Dial opens a connection to ep that carries the chat byte stream: for tcp the TCP connection, for
// tls a TLS 1.3 connection that negotiated ALPN chatd/1 with SNI = ep.Host, for ws a WebSocket to
// wss://host:port/v1/chat whose binary messages carry the stream. The result is a *Conn labelled with
// the transport and port. ctx bounds the whole dial (TCP, proxy, TLS, upgrade) but not the connection.
func (d *Dialer) Dial(ctx context.Context, ep Endpoint) (*Conn, error) {
	ep = ep.Normalize()
	if err := ep.Validate(); err != nil {
		return nil, err
	}
	proxy, err := d.ProxyFor(ep)
	if err != nil {
		return nil, &DialError{Endpoint: ep, Step: "proxy", Err: err}
	}
	fail := func(step string, err error) (*Conn, error) {
		de := &DialError{Endpoint: ep, Step: step, Err: err}
		if proxy != nil {
			de.Proxy = proxy.Redacted()
		}
		return nil, de
	}
	dial := d.DialTCP
	if dial == nil {
		dial = (&net.Dialer{KeepAlive: -1}).DialContext // tuned below
	}
	dial = d.tuned(dial)
	var raw net.Conn
	if proxy != nil {
		raw, err = connectProxy(ctx, dial, proxy, ep.Addr(), d.UserAgent)
		if err != nil {
			var pe *ProxyError
			if errors.As(err, &pe) {
				return fail("proxy", err)
			}
			return fail("connect", explainConnect(err))
		}
	} else {
		raw, err = dial(ctx, "tcp", ep.Addr())
		if err != nil {
			return fail("connect", explainConnect(err))
		}
	}
	switch ep.Transport {
	case TransportTCP:
		return &Conn{Conn: raw, Transport: TransportTCP, Port: ep.Port}, nil
	case TransportTLS:
		tc := tls.Client(raw, &tls.Config{
			ServerName: ep.Host,
			RootCAs:    d.RootCAs,
			NextProtos: []string{ALPNChat},
			MinVersion: tls.VersionTLS13,
		})
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return fail("tls", explainTLS(err))
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != ALPNChat {
			tc.Close()
			return fail("tls", fmt.Errorf("the TLS server did not accept ALPN %s (got %q): not a chatd 443 port, or a TLS-inspecting middlebox; try the ws transport", ALPNChat, p))
		}
		return &Conn{Conn: tc, Transport: TransportTLS, Port: ep.Port}, nil
	default: // TransportWS
		c, err := d.dialWS(ctx, ep, raw)
		if err != nil {
			raw.Close()
			var step string
			if errors.As(err, new(*tlsStepError)) {
				step = "tls"
			} else {
				step = "websocket"
			}
			return fail(step, err)
		}
		return &Conn{Conn: c, Transport: TransportWS, Port: ep.Port}, nil
	}
}

// tuned wraps dial so that the TCP connections it opens get the Dialer's keepalive and user timeout.
func (d *Dialer) tuned(dial DialFunc) DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			if err := tuneTCP(tc, d.KeepAlive, d.UserTimeout); err != nil {
				c.Close()
				return nil, fmt.Errorf("tuning the TCP connection: %w", err)
			}
		}
		return c, nil
	}
}

type tlsStepError struct{ err error }

func (e *tlsStepError) Error() string { return e.err.Error() }
func (e *tlsStepError) Unwrap() error { return e.err }

// dialWS runs TLS (ALPN http/1.1, TLS 1.2 or newer: inspecting proxies re-terminate TLS) and the
// WebSocket upgrade on raw.
func (d *Dialer) dialWS(ctx context.Context, ep Endpoint, raw net.Conn) (net.Conn, error) {
	tc := tls.Client(raw, &tls.Config{
		ServerName: ep.Host,
		RootCAs:    d.RootCAs,
		NextProtos: []string{"http/1.1"},
		MinVersion: tls.VersionTLS12,
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, &tlsStepError{explainTLS(err)}
	}
	used := false
	tr := &http.Transport{
		// The one connection made above; the upgrade takes it over.
		DialTLSContext: func(context.Context, string, string) (net.Conn, error) {
			if used {
				return nil, errors.New("transport: the WebSocket dialer needs a second connection")
			}
			used = true
			return tc, nil
		},
		DisableCompression: true,
		MaxIdleConns:       1,
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	hdr := http.Header{}
	if d.UserAgent != "" {
		hdr.Set("User-Agent", d.UserAgent)
	}
	ws, resp, err := websocket.Dial(ctx, "wss://"+ep.Addr()+WSPath, &websocket.DialOptions{
		HTTPClient:      hc,
		HTTPHeader:      hdr,
		Subprotocols:    []string{WSSubprotocol},
		CompressionMode: websocket.CompressionDisabled, // the stream is encrypted: nothing to compress
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, fmt.Errorf("the server answered the upgrade of %s with %s instead of 101: not a chatd 443 port, or a proxy in the way", WSPath, resp.Status)
		}
		return nil, err
	}
	return newWSConn(websocket.NetConn(context.Background(), ws, websocket.MessageBinary), ws, raw.LocalAddr(), raw.RemoteAddr()), nil
}

// explainConnect adds what a failed TCP connect usually means.
func explainConnect(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("%w (no answer: the port may be dropped by a firewall)", err)
	case isRefused(err):
		return fmt.Errorf("%w (refused: nothing listens there, or a firewall rejects the port)", err)
	}
	return err
}

// explainTLS adds what a failed TLS handshake usually means.
func explainTLS(err error) error {
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var ve *tls.CertificateVerificationError
	switch {
	case errors.As(err, &ua), errors.As(err, &hn), errors.As(err, &ci):
		return fmt.Errorf("%w (a TLS-inspecting proxy, or the wrong CA configured)", err)
	case errors.As(err, &ve):
		return fmt.Errorf("%w (a TLS-inspecting proxy, or the wrong CA configured)", err)
	}
	return err
}
