package node_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/iplist"
	"github.com/chatd-dev/chatd/server/node"
	"github.com/chatd-dev/chatd/server/node/nodetest"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
)

// fetch GETs path from the node's published HTTPS URL, trusting only its dev CA.
func fetch(t *testing.T, n *node.Node, path string) (*http.Response, []byte) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool(t, n.CAFile)}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(n.HTTPSURL + path)
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

func fetchConfig(t *testing.T, n *node.Node) (regtypes.ClientConfig, ed25519.PublicKey) {
	t.Helper()
	_, body := fetch(t, n, "/v1/config")
	var cc regtypes.ClientConfig
	if err := json.Unmarshal(body, &cc); err != nil {
		t.Fatalf("config %s: %v", body, err)
	}
	key, err := base64.StdEncoding.DecodeString(cc.OperatorKey)
	if err != nil || len(key) != ed25519.PublicKeySize {
		t.Fatalf("operator_key %q", cc.OperatorKey)
	}
	return cc, key
}

// TestIPListFromFile: a node signs the list of its iplist_file with its operator key and serves it;
// a client verifies the ZIP and the JSON with the operator key of /v1/config.
func TestIPListFromFile(t *testing.T) {
	updated := time.Now().UTC().AddDate(0, 0, -3).Format(iplist.DateLayout)
	file := filepath.Join(t.TempDir(), "iplist.toml")
	os.WriteFile(file, []byte(`
updated = `+updated+`
ipv4 = ["203.0.113.0/24", "198.51.100.7"]
ipv6 = ["2001:db8::/32"]
`), 0o600)
	var logs bytes.Buffer
	n := nodetest.Start(t, node.Config{IPListFile: file, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	cc, key := fetchConfig(t, n)
	if n.IPList == nil || cc.IPListVersion != n.IPList.Version() || cc.IPListURL != n.HTTPSURL+"/v1/iplist.zip" {
		t.Fatalf("config iplist_version %q iplist_url %q; node list %v", cc.IPListVersion, cc.IPListURL, n.IPList)
	}
	if !key.Equal(n.OperatorKey) {
		t.Fatal("the published operator key is not the node's")
	}

	resp, z := fetch(t, n, "/v1/iplist.zip")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Disposition") != `attachment; filename="chatd-iplist-`+updated+`.zip"` {
		t.Fatalf("zip: %s %v", resp.Status, resp.Header)
	}
	l, err := iplist.ParseZIP(z, key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32"), netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/32")}
	if !slices.Equal(l.Ranges(), want) || l.Version() != cc.IPListVersion || !l.Effective(time.Now()) {
		t.Errorf("served list %v %v, want %v version %s", l, l.Ranges(), want, cc.IPListVersion)
	}
	_, js := fetch(t, n, "/v1/iplist.json")
	if lj, err := iplist.ParseJSON(js, key, time.Now()); err != nil || lj.Version() != l.Version() {
		t.Errorf("JSON: %v %v", lj, err)
	}
	if !strings.Contains(logs.String(), "publishing the IP address list") || !strings.Contains(logs.String(), l.Version()) {
		t.Errorf("start-up log does not say which list is published:\n%s", logs.String())
	}
}

// TestDevIPList: a dev node without a list file publishes its own addresses, so that netcheck has
// a list to verify in the quick start.
func TestDevIPList(t *testing.T) {
	n := nodetest.Start(t, node.Config{Logger: slog.New(slog.DiscardHandler)})
	_, key := fetchConfig(t, n)
	resp, js := fetch(t, n, "/v1/iplist.json")
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s", resp.Status, js)
	}
	l, err := iplist.ParseJSON(js, key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Ranges(); !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}) || !l.Effective(time.Now()) {
		t.Errorf("dev list %v", got)
	}

	now := time.Now()
	for _, tc := range []struct {
		cfg  node.Config
		want []string // nil: no list
	}{
		{node.Config{Dev: true, PublicHost: "chat.lab"}, nil},
		{node.Config{Dev: true, PublicHost: "chat.lab", DevHosts: []string{"10.99.0.1", "chat2.lab", "[fd00::1]"}}, []string{"10.99.0.1/32", "fd00::1/128"}},
		{node.Config{Dev: true, PublicHost: "192.0.2.10"}, []string{"192.0.2.10/32"}},
		{node.Config{Dev: true, IPListVersion: "elsewhere"}, nil},
		{node.Config{PublicHost: "192.0.2.10"}, nil}, // not dev
	} {
		l, err := node.IPList(tc.cfg, now)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		if l != nil {
			for _, p := range l.Ranges() {
				got = append(got, p.String())
			}
		}
		if !slices.Equal(got, tc.want) || (l == nil) != (tc.want == nil) {
			t.Errorf("%+v: list %v, want %v", tc.cfg, got, tc.want)
		}
	}
}

func TestNoIPListAndBadConfig(t *testing.T) {
	n := nodetest.Start(t, node.Config{IPListVersion: "v7", Logger: slog.New(slog.DiscardHandler)})
	resp, body := fetch(t, n, "/v1/iplist.zip")
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), regtypes.CodeNoIPList) {
		t.Errorf("no list: %s %s", resp.Status, body)
	}
	if cc, _ := fetchConfig(t, n); cc.IPListVersion != "v7" || cc.IPListURL != "" {
		t.Errorf("config: %+v", cc)
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "iplist.toml")
	os.WriteFile(file, []byte("updated = 2026-08-08\nipv4 = [\"10.1.0.0/8\"]\n"), 0o600)
	for name, tc := range map[string]struct {
		cfg node.Config
		msg string
	}{
		"host bits":     {node.Config{IPListFile: file}, file + ": iplist: malformed IP address list: ipv4 range 10.1.0.0/8 has host bits set"},
		"missing file":  {node.Config{IPListFile: file + ".nope"}, "no such file"},
		"both versions": {node.Config{IPListFile: file, IPListVersion: "1"}, "iplist_version cannot be set with iplist_file"},
	} {
		tc.cfg.DataDir, tc.cfg.Dev, tc.cfg.Logger = t.TempDir(), true, slog.New(slog.DiscardHandler)
		tc.cfg.ChatListen, tc.cfg.HTTPSListen, tc.cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0", "off"
		if _, err := node.Start(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %q", name, err, tc.msg)
		}
	}
}

// TestExpiredIPListStillStarts: an expired list does not stop the chat server; the node logs an
// error and serves it, and clients refuse it with ErrExpired.
func TestExpiredIPListStillStarts(t *testing.T) {
	file := filepath.Join(t.TempDir(), "iplist.toml")
	os.WriteFile(file, []byte("updated = 2020-01-01\nexpires = 2020-04-01\nipv4 = [\"203.0.113.0/24\"]\n"), 0o600)
	var logs bytes.Buffer
	n := nodetest.Start(t, node.Config{IPListFile: file, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "has expired") {
		t.Errorf("no error logged for an expired list:\n%s", logs.String())
	}
	_, key := fetchConfig(t, n)
	_, z := fetch(t, n, "/v1/iplist.zip")
	if _, err := iplist.ParseZIP(z, key, time.Now()); err == nil || !strings.Contains(err.Error(), "expired on 2020-04-01") {
		t.Errorf("expired list: %v", err)
	}
}
