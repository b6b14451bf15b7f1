package regapi

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/iplist"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
)

func signedList(t *testing.T, key ed25519.PrivateKey) *iplist.Signed {
	t.Helper()
	s, err := iplist.Sign(iplist.List{
		Updated:       time.Date(2026, 2, 20, 0, 0, 0, 0, time.UTC),
		EffectiveFrom: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC),
		IPv4:          []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.0/24")},
		IPv6:          []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return &s
}

func get(t *testing.T, c *http.Client, method, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// TestIPListEndpoints serves a signed list over HTTPS and verifies both forms with the operator key
// that /v1/config publishes.
func TestIPListEndpoints(t *testing.T) {
	var signed *iplist.Signed
	e := newEnv(t, func(c *Config) {
		// The config function cannot reach the env's operator key: sign with a key of our own and
		// publish that one.
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		c.OperatorKey = pub
		signed = signedList(t, priv)
		c.IPList = signed
		c.IPListVersion = ""
	})
	srv := httptest.NewTLSServer(e.h)
	t.Cleanup(srv.Close)
	c := srv.Client()
	now := e.clk.Now()

	resp, body := get(t, c, http.MethodGet, srv.URL+"/v1/config")
	var cc regtypes.ClientConfig
	if err := json.Unmarshal(body, &cc); err != nil || resp.StatusCode != 200 {
		t.Fatalf("config: %s %s", resp.Status, body)
	}
	version := signed.List.Version()
	if cc.IPListVersion != version || cc.IPListURL != "https://127.0.0.1/v1/iplist.zip" {
		t.Errorf("config: iplist_version %q iplist_url %q; want %q and the ZIP URL", cc.IPListVersion, cc.IPListURL, version)
	}
	pub, err := parseEd25519(cc.OperatorKey)
	if err != nil {
		t.Fatal(err)
	}

	resp, zipBody := get(t, c, http.MethodGet, srv.URL+"/v1/iplist.zip")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/zip" ||
		resp.Header.Get("Content-Disposition") != `attachment; filename="chatd-iplist-2026-02-20.zip"` ||
		resp.Header.Get("ETag") != `"`+version+`"` || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("zip: %s %v", resp.Status, resp.Header)
	}
	fromZIP, err := iplist.ParseZIP(zipBody, pub, now)
	if err != nil {
		t.Fatal(err)
	}
	resp, jsonBody := get(t, c, http.MethodGet, srv.URL+"/v1/iplist.json")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("ETag") != `"`+version+`"` {
		t.Fatalf("json: %s %v", resp.Status, resp.Header)
	}
	fromJSON, err := iplist.ParseJSON(jsonBody, pub, now)
	if err != nil {
		t.Fatal(err)
	}
	if fromZIP.Version() != version || fromJSON.Version() != version || !slices.Equal(fromZIP.Ranges(), signed.List.Ranges()) {
		t.Errorf("served lists %v / %v, want %v", fromZIP, fromJSON, signed.List)
	}
	if fromZIP.Effective(now) { // published on 2026-02-20, effective from 2026-03-02; now is 2026-03-01
		t.Error("the list is effective a day early")
	}

	// Revalidation, HEAD, and methods.
	if resp, b := get(t, c, http.MethodGet, srv.URL+"/v1/iplist.zip", "If-None-Match", `"`+version+`"`); resp.StatusCode != http.StatusNotModified || len(b) != 0 {
		t.Errorf("If-None-Match: %s, %d bytes", resp.Status, len(b))
	}
	if resp, b := get(t, c, http.MethodHead, srv.URL+"/v1/iplist.json"); resp.StatusCode != 200 || len(b) != 0 || resp.ContentLength != int64(len(jsonBody)) {
		t.Errorf("HEAD: %s, %d bytes, length %d", resp.Status, len(b), resp.ContentLength)
	}
	r := e.do(http.MethodPost, "/v1/iplist.zip", "application/json", "{}")
	e.wantError(r, http.StatusMethodNotAllowed, regtypes.CodeMethodNotAllowed)

	// A server with another operator key: the client that pinned the first key refuses its list.
	other := newEnv(t, func(c *Config) {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		c.OperatorKey, c.IPList = pub, signedList(t, priv)
	})
	r = other.do(http.MethodGet, "/v1/iplist.json", "", "")
	if _, err := iplist.ParseJSON(r.body, pub, now); !errors.Is(err, iplist.ErrWrongKey) {
		t.Errorf("another server's list: %v, want ErrWrongKey", err)
	}
}

func parseEd25519(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("operator_key is not an Ed25519 key")
	}
	return b, nil
}

func TestNoIPList(t *testing.T) {
	e := newEnv(t, nil)
	for _, path := range []string{"/v1/iplist.json", "/v1/iplist.zip"} {
		r := e.do(http.MethodGet, path, "", "")
		if msg := e.wantError(r, http.StatusNotFound, regtypes.CodeNoIPList); !strings.Contains(msg, "iplist_file") {
			t.Errorf("%s: message %q does not say what to configure", path, msg)
		}
	}
	r := e.do(http.MethodGet, "/v1/config", "", "")
	if !strings.Contains(string(r.body), `"iplist_version":"2026-03-01"`) || strings.Contains(string(r.body), "iplist_url") {
		t.Errorf("config without a list: %s", r.body)
	}

	defer func() {
		if recover() == nil {
			t.Error("New accepted a list signed by another key than the operator key")
		}
	}()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	newEnv(t, func(c *Config) { c.IPList = signedList(t, priv) })
}
