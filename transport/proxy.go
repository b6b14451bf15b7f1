package transport

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ProxyFunc chooses the HTTP CONNECT proxy for a request: nil URL means direct. It has the type of
// http.Transport.Proxy, so one value serves the chat dialer and the HTTPS registration client alike.
// The chat dialer asks it with an https request to the endpoint's host:port.
type ProxyFunc = func(*http.Request) (*url.URL, error)

// ProxyFromEnvironment returns the proxy choice of the environment: HTTPS_PROXY (or https_proxy) for
// every chat endpoint and HTTPS request, except hosts matched by NO_PROXY, with the exact semantics of
// http.ProxyFromEnvironment (which never proxies localhost and loopback addresses). The environment is
// read once, at the first use. Library code never calls this: only cmd/ does, and passes it on.
func ProxyFromEnvironment() ProxyFunc { return http.ProxyFromEnvironment }

// ProxyURL returns a ProxyFunc that always uses u (nil: never a proxy).
func ProxyURL(u *url.URL) ProxyFunc {
	if u == nil {
		return nil
	}
	return http.ProxyURL(u)
}

// ParseProxyURL reads a proxy setting: "http://[user:password@]host[:port]" or just "host:port"
// (http is assumed). Only http:// proxies (HTTP CONNECT over plain TCP) are supported; the port
// defaults to 80.
func ParseProxyURL(s string) (*url.URL, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("proxy: empty URL")
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("proxy %q: %w", s, err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("proxy %s: scheme %q is not supported (use an http:// CONNECT proxy)", u.Redacted(), u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("proxy %s: no host", u.Redacted())
	}
	return u, nil
}

// ProxyError is a CONNECT that the proxy refused or answered with something else than 200.
type ProxyError struct {
	// Proxy is the proxy URL without its password.
	Proxy string
	// Target is the host:port the tunnel was asked for.
	Target string
	// Status is the proxy's HTTP status (407: authentication required or refused; 403: forbidden,
	// often a proxy that allows CONNECT only to 443); 0 when the answer was not HTTP.
	Status int
	// Detail is the status line or what went wrong.
	Detail string
}

func (e *ProxyError) Error() string {
	s := fmt.Sprintf("proxy %s refused CONNECT %s: %s", e.Proxy, e.Target, e.Detail)
	switch e.Status {
	case http.StatusProxyAuthRequired:
		s += " (the proxy wants credentials: give them in the proxy URL as http://user:password@host:port, or check them)"
	case http.StatusForbidden, http.StatusMethodNotAllowed:
		s += " (the proxy does not allow tunnels to this port; many allow only 443)"
	}
	return s
}

// proxyAddr is the host:port of a proxy URL (port 80 by default).
func proxyAddr(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// connectProxy opens a tunnel to target through the HTTP proxy u: a TCP connection to the proxy, a
// CONNECT request (with Proxy-Authorization: Basic when u has a user), and a 200 answer.
func connectProxy(ctx context.Context, dial DialFunc, u *url.URL, target, userAgent string) (net.Conn, error) {
	if u.Scheme != "http" {
		return nil, fmt.Errorf("proxy %s: scheme %q is not supported (use an http:// CONNECT proxy)", u.Redacted(), u.Scheme)
	}
	c, err := dial(ctx, "tcp", proxyAddr(u))
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", u.Redacted(), err)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (net.Conn, error) {
		stop()
		c.Close()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
	if userAgent != "" {
		fmt.Fprintf(&b, "User-Agent: %s\r\n", userAgent)
	}
	if u.User != nil {
		pw, _ := u.User.Password()
		cred := base64.StdEncoding.EncodeToString([]byte(u.User.Username() + ":" + pw))
		fmt.Fprintf(&b, "Proxy-Authorization: Basic %s\r\n", cred)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		return fail(fmt.Errorf("proxy %s: sending CONNECT: %w", u.Redacted(), err))
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return fail(&ProxyError{Proxy: u.Redacted(), Target: target, Detail: "no HTTP answer: " + err.Error()})
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return fail(&ProxyError{Proxy: u.Redacted(), Target: target, Status: resp.StatusCode, Detail: resp.Status})
	}
	if !stop() {
		return fail(fmt.Errorf("proxy %s: CONNECT: %w", u.Redacted(), context.Cause(ctx)))
	}
	c.SetDeadline(time.Time{})
	if n := br.Buffered(); n > 0 {
		// The server spoke first (chatd never does, but TLS servers may after our hello): keep it.
		extra, _ := br.Peek(n)
		return &prefixConn{Conn: c, prefix: append([]byte(nil), extra...)}, nil
	}
	return c, nil
}
