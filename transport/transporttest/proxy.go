// Package transporttest holds test helpers for the transports: a real HTTP CONNECT proxy on loopback.
package transporttest

import (
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Proxy is an HTTP CONNECT proxy on 127.0.0.1, built on net/http: it answers CONNECT with 200 and
// relays bytes both ways, 407 when the credentials are missing or wrong, 403 when Allow says no, 502
// when the target cannot be reached, and 405 to anything but CONNECT.
type Proxy struct {
	// URL is the proxy's URL, with the credentials when the proxy wants them.
	URL *url.URL

	user, password string
	allow          func(target string) bool
	ln             net.Listener
	srv            *http.Server

	mu       sync.Mutex
	tunnels  []string // targets tunnelled, in order; guarded by mu
	refused  []int    // statuses of refused CONNECTs; guarded by mu
	open     map[net.Conn]struct{}
	closed   bool
	relaying sync.WaitGroup
}

// NewProxy starts a proxy that wants user:password (Basic) when user is not "", and tunnels to the
// targets allow accepts (nil: every target). It is stopped when the test ends.
func NewProxy(t testing.TB, user, password string, allow func(target string) bool) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{user: user, password: password, allow: allow, ln: ln, open: map[net.Conn]struct{}{}}
	p.URL = &url.URL{Scheme: "http", Host: ln.Addr().String()}
	if user != "" {
		p.URL.User = url.UserPassword(user, password)
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 5 * time.Second}
	go p.srv.Serve(ln)
	t.Cleanup(p.Close)
	return p
}

// WithCredentials returns the proxy URL with other credentials.
func (p *Proxy) WithCredentials(user, password string) *url.URL {
	u := *p.URL
	u.User = url.UserPassword(user, password)
	return &u
}

// Tunnels returns the targets of the CONNECTs the proxy granted, in order.
func (p *Proxy) Tunnels() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.tunnels...)
}

// Refused returns the HTTP statuses of the CONNECTs the proxy refused, in order.
func (p *Proxy) Refused() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.refused...)
}

// Close stops the proxy and cuts every tunnel.
func (p *Proxy) Close() {
	p.srv.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
	p.relaying.Wait()
}

func (p *Proxy) refuse(w http.ResponseWriter, status int, msg string) {
	p.mu.Lock()
	p.refused = append(p.refused, status)
	p.mu.Unlock()
	if status == http.StatusProxyAuthRequired {
		w.Header().Set("Proxy-Authenticate", `Basic realm="test"`)
	}
	http.Error(w, msg, status)
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		p.refuse(w, http.StatusMethodNotAllowed, "CONNECT only")
		return
	}
	if p.user != "" {
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte(p.user+":"+p.password))
		if r.Header.Get("Proxy-Authorization") != want {
			p.refuse(w, http.StatusProxyAuthRequired, "credentials required")
			return
		}
	}
	target := r.Host
	if p.allow != nil && !p.allow(target) {
		p.refuse(w, http.StatusForbidden, "tunnels to "+target+" are not allowed")
		return
	}
	up, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		p.refuse(w, http.StatusBadGateway, err.Error())
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		p.refuse(w, http.StatusInternalServerError, "no hijacking")
		return
	}
	down, brw, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		up.Close()
		down.Close()
		return
	}
	p.tunnels = append(p.tunnels, target)
	p.open[up], p.open[down] = struct{}{}, struct{}{}
	p.relaying.Add(2)
	p.mu.Unlock()
	down.SetDeadline(time.Time{})
	if _, err := io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		up.Close()
		down.Close()
		p.relaying.Add(-2)
		return
	}
	relay := func(dst, src net.Conn, r io.Reader) {
		defer p.relaying.Done()
		io.Copy(dst, r)
		// Either side done: drop both, as most proxies do.
		dst.Close()
		src.Close()
		p.mu.Lock()
		delete(p.open, dst)
		delete(p.open, src)
		p.mu.Unlock()
	}
	go relay(up, down, brw.Reader) // the client's bytes, including any it sent early
	go relay(down, up, up)
}
