package regclient_test

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/client/regclient"
	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/node"
	"github.com/chatd-dev/chatd/server/node/nodetest"
	"github.com/chatd-dev/chatd/server/regapi"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
	"github.com/chatd-dev/chatd/transport"
)

// startNode starts a complete dev-mode chatd on loopback ports.
func startNode(t *testing.T) (*node.Node, string) {
	t.Helper()
	dir := t.TempDir()
	return nodetest.Start(t, node.Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler)}), dir
}

func devClient(t *testing.T, n *node.Node) *regclient.Client {
	t.Helper()
	pool, err := regclient.LoadCAFile(n.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	rc := regclient.New(n.HTTPSURL, pool)
	// An idle keep-alive connection would make the node's shutdown wait.
	t.Cleanup(rc.HTTPClient.CloseIdleConnections)
	return rc
}

func portOf(a net.Addr) int { return a.(*net.TCPAddr).Port }

func asAPIError(t *testing.T, err error, status int, code string) *regclient.APIError {
	t.Helper()
	var ae *regclient.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want *APIError %s, got %T: %v", code, err, err)
	}
	if ae.Status != status || ae.Code != code {
		t.Fatalf("want %d %s, got %d %s: %v", status, code, ae.Status, ae.Code, err)
	}
	if regclient.Code(err) != code {
		t.Fatalf("Code(err) = %q, want %q", regclient.Code(err), code)
	}
	return ae
}

func TestConfig(t *testing.T) {
	n, _ := startNode(t)
	cc, err := devClient(t, n).Config(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if cc.HTTPSURL != n.HTTPSURL {
		t.Errorf("https_url = %q, want %q", cc.HTTPSURL, n.HTTPSURL)
	}
	key, eps, err := regclient.ParseConfig(cc)
	if err != nil {
		t.Fatal(err)
	}
	if key != n.ServerKey {
		t.Errorf("server key %s, want %s", pki.FormatPublic(key), pki.FormatPublic(n.ServerKey))
	}
	chat := net.JoinHostPort("localhost", strconv.Itoa(portOf(n.ChatAddr)))
	https := net.JoinHostPort("localhost", strconv.Itoa(portOf(n.HTTPSAddr)))
	want := []string{chat + "/tcp", https + "/tls", https + "/ws"}
	if got := transport.EndpointStrings(eps); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("chat endpoints %v, want %v", got, want)
	}
	_, addrs, err := regclient.ParseConfigAddrs(cc)
	if err != nil || strings.Join(addrs, " ") != chat {
		t.Errorf("ParseConfigAddrs: %v %v, want %s", addrs, err, chat)
	}
}

// TestRegisterAndConnect registers a device through the API and logs in with the chat client on the
// endpoints ParseConfig returned.
func TestRegisterAndConnect(t *testing.T) {
	n, dir := startNode(t)
	rc := devClient(t, n)
	ctx := t.Context()
	cr, err := rc.RequestCode(ctx, regtypes.CodeRequest{Phone: "+1 555 000 0001"})
	if err != nil {
		t.Fatal(err)
	}
	if cr.Phone != "15550000001" || cr.Method != regtypes.MethodSMS || cr.ExpiresIn <= 0 {
		t.Fatalf("code response %+v", cr)
	}
	code, err := os.ReadFile(regapi.DevCodeFile(dir, cr.Phone))
	if err != nil {
		t.Fatal(err)
	}
	dev, err := noisesock.GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	wrong := "000000"
	if string(code) == wrong {
		wrong = "111111"
	}
	_, err = rc.Verify(ctx, regtypes.VerifyRequest{Phone: cr.Phone, Code: wrong, DevicePublicKey: pki.FormatPublic(dev.Public)})
	ae := asAPIError(t, err, http.StatusUnauthorized, regtypes.CodeWrongCode)
	if !strings.Contains(ae.Error(), "attempts left") || ae.Retryable() {
		t.Errorf("wrong code error %q (retryable %v)", ae.Error(), ae.Retryable())
	}

	vr, err := rc.Verify(ctx, regtypes.VerifyRequest{Phone: cr.Phone, Code: string(code), DevicePublicKey: pki.FormatPublic(dev.Public)})
	if err != nil {
		t.Fatal(err)
	}
	if vr.Account.Phone != "15550000001" || vr.ServerStaticKey != pki.FormatPublic(n.ServerKey) {
		t.Fatalf("verify response %+v", vr)
	}
	key, eps, err := regclient.ParseConfig(vr.Config)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := regclient.LoadCAFile(n.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{Endpoints: eps, RootCAs: pool, ServerKey: key, DeviceKey: dev})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := c.WaitConnected(wctx); err != nil {
		t.Fatalf("not connected: %v (status %+v)", err, c.Status())
	}
	if st := c.Status(); st.Phone != "15550000001" {
		t.Errorf("logged in as %q", st.Phone)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestAPIErrors(t *testing.T) {
	n, _ := startNode(t)
	rc := devClient(t, n)
	ctx := t.Context()
	key, err := noisesock.GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}

	_, err = rc.RequestCode(ctx, regtypes.CodeRequest{Phone: "+1 555 CALL ME"})
	ae := asAPIError(t, err, http.StatusBadRequest, regtypes.CodeInvalidPhone)
	if !strings.Contains(ae.Error(), "letter") {
		t.Errorf("invalid phone error %q does not say what is wrong", ae.Error())
	}

	_, err = rc.RequestCode(ctx, regtypes.CodeRequest{Phone: "+15550000002", Method: "pigeon"})
	asAPIError(t, err, http.StatusBadRequest, regtypes.CodeInvalidMethod)

	_, err = rc.Verify(ctx, regtypes.VerifyRequest{Phone: "+15550000002", Code: "123456", DevicePublicKey: pki.FormatPublic(key.Public)})
	asAPIError(t, err, http.StatusNotFound, regtypes.CodeNoPendingCode)

	// The per-number limit allows 3 requests at once, then one per 30 s.
	for i := range 3 {
		if _, err := rc.RequestCode(ctx, regtypes.CodeRequest{Phone: "+15550000003", Method: regtypes.MethodVoice}); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	_, err = rc.RequestCode(ctx, regtypes.CodeRequest{Phone: "+15550000003"})
	ae = asAPIError(t, err, http.StatusTooManyRequests, regtypes.CodeRateLimited)
	if ae.RetryAfter <= 0 || ae.RetryAfter > 30*time.Second || !ae.Retryable() {
		t.Errorf("rate limited: RetryAfter %v, retryable %v", ae.RetryAfter, ae.Retryable())
	}
	if !strings.Contains(ae.Error(), "try again in") {
		t.Errorf("rate limited error %q does not say when to retry", ae.Error())
	}
}

func TestCodeExpired(t *testing.T) {
	dir := t.TempDir()
	n := nodetest.Start(t, node.Config{DataDir: dir, CodeTTL: time.Nanosecond, Logger: slog.New(slog.DiscardHandler)})
	rc := devClient(t, n)
	if _, err := rc.RequestCode(t.Context(), regtypes.CodeRequest{Phone: "+15550000004"}); err != nil {
		t.Fatal(err)
	}
	code, err := os.ReadFile(regapi.DevCodeFile(dir, "15550000004"))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := noisesock.GenerateKeypair()
	_, err = rc.Verify(t.Context(), regtypes.VerifyRequest{Phone: "15550000004", Code: string(code), DevicePublicKey: pki.FormatPublic(key.Public)})
	asAPIError(t, err, http.StatusGone, regtypes.CodeCodeExpired)
}

func TestTLSUntrusted(t *testing.T) {
	n, _ := startNode(t)
	otherCA, err := pki.EnsureDevTLS(t.TempDir(), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherPool, err := regclient.LoadCAFile(otherCA.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	for name, pool := range map[string]*x509.CertPool{"system roots": nil, "another CA": otherPool} {
		t.Run(name, func(t *testing.T) {
			_, err := regclient.New(n.HTTPSURL, pool).Config(t.Context())
			var te *regclient.TLSError
			if !errors.As(err, &te) {
				t.Fatalf("want *TLSError, got %T: %v", err, err)
			}
			var ua x509.UnknownAuthorityError
			if !errors.As(err, &ua) {
				t.Errorf("TLSError does not wrap the x509 error: %v", te.Err)
			}
			msg := err.Error()
			for _, want := range []string{"not trust", "--ca FILE", "ca.pem", strings.TrimPrefix(n.HTTPSURL, "https://")} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
		})
	}
}

func TestTLSWrongHost(t *testing.T) {
	n, _ := startNode(t)
	rc := devClient(t, n)
	// chat.invalid resolves to the node, whose certificate covers localhost and loopback only.
	rc.BaseURL = "https://chat.invalid:" + strconv.Itoa(portOf(n.HTTPSAddr))
	tr := rc.HTTPClient.Transport.(*http.Transport)
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, n.HTTPSAddr.String())
	}
	_, err := rc.Config(t.Context())
	var te *regclient.TLSError
	if !errors.As(err, &te) {
		t.Fatalf("want *TLSError, got %T: %v", err, err)
	}
	if !strings.Contains(err.Error(), "not valid for chat.invalid") || !strings.Contains(err.Error(), "localhost") {
		t.Errorf("error %q does not name the wanted and the covered hosts", err)
	}
}

func TestNotTLS(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler()) // plain HTTP
	defer srv.Close()
	_, err := regclient.New(strings.Replace(srv.URL, "http://", "https://", 1), nil).Config(t.Context())
	var te *regclient.TLSError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "did not answer with TLS") {
		t.Fatalf("want a TLSError about a non-TLS port, got %T: %v", err, err)
	}
}

func TestForeignAnswers(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusBadGateway)
		}
		w.Write([]byte("<html>proxy page</html>"))
	}))
	defer srv.Close()
	rc := &regclient.Client{BaseURL: srv.URL, HTTPClient: srv.Client()}

	_, err := rc.RequestCode(t.Context(), regtypes.CodeRequest{Phone: "+15550000005"})
	ae := asAPIError(t, err, http.StatusBadGateway, "")
	if !strings.Contains(ae.Error(), "text/html") || !strings.Contains(ae.Error(), "proxy") || !ae.Retryable() {
		t.Errorf("error %q (retryable %v)", ae.Error(), ae.Retryable())
	}

	_, err = rc.Config(t.Context())
	if err == nil || !strings.Contains(err.Error(), "instead of JSON") {
		t.Errorf("a 200 HTML page: %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = regclient.New("https://"+addr, nil).Config(t.Context())
	if err == nil || !strings.Contains(err.Error(), "cannot reach https://"+addr) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("closed port: %v", err)
	}
}

func TestBadURL(t *testing.T) {
	for url, want := range map[string]string{
		"":                     "no server URL",
		"http://localhost:80":  "must start with https://",
		"localhost:8443":       "https://",
		"https://":             "no host",
		"https://bad host:443": "not a URL",
	} {
		_, err := regclient.New(url, nil).Config(t.Context())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to mention %q", url, err, want)
		}
	}
}

func TestLoadCAFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := regclient.LoadCAFile(filepath.Join(dir, "missing.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not a certificate"), 0o600)
	if _, err := regclient.LoadCAFile(junk); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("junk file: %v", err)
	}
}

func TestParseConfig(t *testing.T) {
	key := pki.FormatPublic([32]byte{1, 2, 3})
	ep := func(host string, port int, tr string) regtypes.Endpoint {
		return regtypes.Endpoint{Host: host, Port: port, Transport: tr}
	}
	base := func(eps ...regtypes.Endpoint) regtypes.ClientConfig {
		return regtypes.ClientConfig{Protocol: regtypes.Protocol, ServerStaticKey: key, ChatEndpoints: eps,
			HTTPSURL: "https://chat.example"}
	}
	tests := []struct {
		name    string
		cc      regtypes.ClientConfig
		want    string // endpoints joined by spaces
		wantErr string
	}{
		{name: "5222 first", cc: base(ep("chat.example", 443, "tcp"), ep("chat.example", 443, "tls"), ep("chat.example", 443, "ws"), ep("chat.example", 5222, "tcp")),
			want: "chat.example:5222/tcp chat.example:443/tcp chat.example:443/tls chat.example:443/ws"},
		{name: "published order otherwise", cc: base(ep("a.example", 15222, "tcp"), ep("a.example", 8443, "tcp")),
			want: "a.example:15222/tcp a.example:8443/tcp"},
		{name: "ipv6 and duplicates", cc: base(ep("2001:db8::1", 5222, "tcp"), ep("2001:db8::1", 5222, "tcp"), ep("2001:db8::1", 443, "ws")),
			want: "[2001:db8::1]:5222/tcp [2001:db8::1]:443/ws"},
		{name: "unknown transport", cc: base(ep("chat.example", 443, "quic"), ep("chat.example", 443, "tls")),
			want: "chat.example:443/tls"},
		{name: "only 443", cc: func() regtypes.ClientConfig {
			cc := base(ep("chat.example", 5222, "tcp"), ep("chat.example", 443, "tcp"), ep("chat.example", 443, "ws"))
			cc.Only443 = true
			return cc
		}(), want: "chat.example:443/tcp chat.example:443/ws"},
		{name: "only 443 on a dev port", cc: func() regtypes.ClientConfig {
			cc := base(ep("localhost", 40001, "tcp"), ep("localhost", 40002, "tls"), ep("localhost", 40002, "tcp"))
			cc.Only443 = true
			return cc
		}(), want: "localhost:40002/tls localhost:40002/tcp"},
		{name: "only 443 without a 443 endpoint", cc: func() regtypes.ClientConfig {
			cc := base(ep("chat.example", 5222, "tcp"))
			cc.Only443 = true
			return cc
		}(), wantErr: "only_443"},
		{name: "no known transport", cc: base(ep("chat.example", 443, "quic")), wantErr: "no chat endpoint this client can dial"},
		{name: "no endpoint", cc: base(), wantErr: "no chat endpoint"},
		{name: "invalid port", cc: base(ep("chat.example", 0, "tcp")), wantErr: "invalid"},
		{name: "protocol", cc: func() regtypes.ClientConfig {
			cc := base(ep("chat.example", 5222, "tcp"))
			cc.Protocol = "chatd/2"
			return cc
		}(), wantErr: `"chatd/2"`},
		{name: "bad key", cc: func() regtypes.ClientConfig {
			cc := base(ep("chat.example", 5222, "tcp"))
			cc.ServerStaticKey = "AAAA"
			return cc
		}(), wantErr: "static key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, eps, err := regclient.ParseConfig(tt.cc)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k != [32]byte{1, 2, 3} {
				t.Errorf("key %x", k)
			}
			if got := strings.Join(transport.EndpointStrings(eps), " "); got != tt.want {
				t.Errorf("endpoints %q, want %q", got, tt.want)
			}
		})
	}
	// Callers that dial raw chatd only.
	if _, _, err := regclient.ParseConfigAddrs(base(ep("chat.example", 443, "tls"))); err == nil || !strings.Contains(err.Error(), "no raw chatd") {
		t.Errorf("ParseConfigAddrs without tcp: %v", err)
	}
}

func TestAPIErrorText(t *testing.T) {
	e := &regclient.APIError{Status: 429, Code: regtypes.CodeRateLimited, Message: "Too many code requests for this number; try again in 30 seconds.", RetryAfter: 30 * time.Second}
	if got, want := e.Error(), "server refused the request: Too many code requests for this number; try again in 30 seconds (rate_limited, HTTP 429)"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	e = &regclient.APIError{Status: 503, RetryAfter: 5 * time.Second}
	if got, want := e.Error(), "server refused the request: Service Unavailable (HTTP 503); retry after 5s"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
