// Package regclient is the client of chatd's HTTPS registration/config API (package
// server/regapi): it fetches the client configuration (GET /v1/config), requests a verification code
// (POST /v1/register/code) and verifies it (POST /v1/register/verify). The chat terminal client and
// bizapi use it; the JSON types are those of package regtypes.
//
// Errors say what failed in words a user can act on: an answer of the server with an error body is an
// [*APIError] carrying the regtypes code (and Retry-After when rate limited); a TLS certificate the
// client does not trust is a [*TLSError] that says which CA file to give; anything else (DNS, refused,
// timeout) names the URL that could not be reached.
//
// [ParseConfig] turns a published configuration into what package client needs: the server key to
// pin and the chat endpoints it can dial (tcp, tls, ws).
package regclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/chatd-dev/chatd/server/regapi/regtypes"
	"github.com/chatd-dev/chatd/transport"
)

// DefaultTimeout bounds one request (connect, TLS, request and answer) of a Client made by New.
const DefaultTimeout = 15 * time.Second

// maxAnswer is the largest answer body read; the API's answers are far smaller.
const maxAnswer = 1 << 20

// Client talks to one chatd server's registration/config API. Its methods are safe for concurrent
// use.
type Client struct {
	// BaseURL is the server's HTTPS URL, e.g. "https://chat.example.com" or "https://localhost:8443"
	// (the https_url of its /v1/config); the API paths are appended to it. It must use https.
	BaseURL string
	// HTTPClient does the requests. If nil, http.DefaultClient is used; New sets up one with the
	// given roots, TLS 1.2 or newer, the environment's proxy (HTTPS_PROXY) and DefaultTimeout;
	// NewWithProxy with the given proxy instead.
	HTTPClient *http.Client
}

// New returns a Client for the server at baseURL that uses the environment's proxy (HTTPS_PROXY,
// NO_PROXY: http.ProxyFromEnvironment), as it always did. rootCAs are the certificate authorities
// trusted for the server's TLS certificate; nil means the system roots. Use LoadCAFile for a private
// or development CA. NewWithProxy takes the proxy setting explicitly.
func New(baseURL string, rootCAs *x509.CertPool) *Client {
	return NewWithProxy(baseURL, rootCAs, http.ProxyFromEnvironment)
}

// NewWithProxy is New with the proxy choice of the chat client (client.Config.Proxy): the same
// HTTP CONNECT proxy carries registration, config and chat. nil means direct.
func NewWithProxy(baseURL string, rootCAs *x509.CertPool, proxy transport.ProxyFunc) *Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: rootCAs, MinVersion: tls.VersionTLS12}
	tr.Proxy = proxy
	return &Client{
		BaseURL:    strings.TrimRight(baseURL, "/"),
		HTTPClient: &http.Client{Transport: tr, Timeout: DefaultTimeout},
	}
}

// LoadCAFile reads PEM certificates from path (for example the ca.pem of a development chatd) into a
// new pool that trusts only them.
func LoadCAFile(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("regclient: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("regclient: CA file %s holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)", path)
	}
	return pool, nil
}

// Config fetches the client configuration (GET /v1/config). Pass it to ParseConfig for the key to
// pin and the endpoints to dial.
func (c *Client) Config(ctx context.Context) (regtypes.ClientConfig, error) {
	var out regtypes.ClientConfig
	err := c.do(ctx, http.MethodGet, "/v1/config", nil, &out)
	return out, err
}

// RequestCode asks the server to send a verification code to req.Phone by SMS or voice (POST
// /v1/register/code). The answer holds the normalized number and how long the code is valid.
func (c *Client) RequestCode(ctx context.Context, req regtypes.CodeRequest) (regtypes.CodeResponse, error) {
	var out regtypes.CodeResponse
	err := c.do(ctx, http.MethodPost, "/v1/register/code", req, &out)
	return out, err
}

// Verify proves the code and binds req.DevicePublicKey to the account (POST /v1/register/verify).
// The answer holds the account, the server key to pin and the client configuration.
func (c *Client) Verify(ctx context.Context, req regtypes.VerifyRequest) (regtypes.VerifyResponse, error) {
	var out regtypes.VerifyResponse
	err := c.do(ctx, http.MethodPost, "/v1/register/verify", req, &out)
	return out, err
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	base, err := url.Parse(c.BaseURL)
	switch {
	case c.BaseURL == "":
		return errors.New("regclient: no server URL configured (e.g. https://chat.example.com)")
	case err != nil:
		return fmt.Errorf("regclient: server URL %q is not a URL: %w", c.BaseURL, unwrapURLError(err))
	case base.Scheme != "https":
		return fmt.Errorf("regclient: server URL %q must start with https:// (registration is only done over HTTPS)", c.BaseURL)
	case base.Host == "":
		return fmt.Errorf("regclient: server URL %q has no host", c.BaseURL)
	}
	target := strings.TrimRight(c.BaseURL, "/") + path
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("regclient: encoding the request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return fmt.Errorf("regclient: %s %s: %w", method, target, unwrapURLError(err))
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return requestError(base.Host, target, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return fmt.Errorf("regclient: reading the answer of %s: %w", target, err)
	}
	if len(data) > maxAnswer {
		return fmt.Errorf("regclient: the answer of %s is larger than %d bytes; is the URL a chatd server?", target, maxAnswer)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return answerError(resp, data, target)
	}
	if !isJSON(resp.Header.Get("Content-Type")) {
		return fmt.Errorf("regclient: %s answered %s with %s instead of JSON; is %s a chatd server (or is a proxy in the way)?",
			target, resp.Status, contentType(resp), c.BaseURL)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("regclient: the answer of %s is not the expected JSON: %w", target, err)
	}
	return nil
}

// answerError turns a non-2xx answer into an *APIError.
func answerError(resp *http.Response, data []byte, target string) error {
	e := &APIError{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	var er regtypes.ErrorResponse
	if isJSON(resp.Header.Get("Content-Type")) && json.Unmarshal(data, &er) == nil && er.Error.Code != "" {
		e.Code, e.Message = er.Error.Code, er.Error.Message
		return e
	}
	e.Message = fmt.Sprintf("%s answered %s with %s, not a chatd API error; is the URL right (or is a proxy in the way)?",
		target, resp.Status, contentType(resp))
	return e
}

func contentType(resp *http.Response) string {
	ct := resp.Header.Get("Content-Type")
	if ct == "" {
		return "no content type"
	}
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		ct = mt
	}
	return ct
}

func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if secs, err := strconv.Atoi(h); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now).Round(time.Second)
	}
	return 0
}

// requestError explains why a request got no answer.
func requestError(host, target string, err error) error {
	if te := tlsError(host, err); te != nil {
		return te
	}
	err = unwrapURLError(err)
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		return fmt.Errorf("regclient: no answer from %s in time (%w); check the URL and that port %s is reachable (firewall, proxy)", target, err, portOf(host))
	}
	return fmt.Errorf("regclient: cannot reach %s: %w", target, err)
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

func portOf(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		return host[i+1:]
	}
	return "443"
}

// unwrapURLError drops the *url.Error layer, whose text repeats method and URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
