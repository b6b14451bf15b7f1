package main

import (
	"bytes"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatd-dev/chatd/bizapi"
	"github.com/chatd-dev/chatd/internal/cliutil"
)

// parseServe parses "bizapi serve" arguments as cmdServe does and returns the daemon config.
func parseServe(t *testing.T, args ...string) bizapi.Config {
	t.Helper()
	var f fileConfig
	fs := newServeFlags(&f)
	fs.SetOutput(new(bytes.Buffer))
	if err := cliutil.ParseWithConfig(fs, args, &f); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.daemonConfig()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestServeNetworkSettings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bizapi.toml")
	conf := "server = \"https://chat.example.com\"\nproxy = \"http://bob:s3cret@proxy.corp:3128\"\nonly_443 = true\n"
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	chat := &http.Request{URL: &url.URL{Scheme: "https", Host: "chat.example.com:443"}}

	cfg := parseServe(t, "--config", file)
	if !cfg.Only443 || cfg.Proxy == nil {
		t.Fatalf("from the file: only_443 %v, proxy %v", cfg.Only443, cfg.Proxy)
	}
	if u, err := cfg.Proxy(chat); err != nil || u.String() != "http://bob:s3cret@proxy.corp:3128" {
		t.Fatalf("from the file, the proxy is %v (%v)", u, err)
	}

	// Flags override the file: "none" is direct, whatever HTTPS_PROXY says.
	if cfg := parseServe(t, "--config", file, "--proxy", "none", "--only-443=false"); cfg.Only443 || cfg.Proxy != nil {
		t.Fatalf("with --proxy none --only-443=false: only_443 %v, proxy set %v", cfg.Only443, cfg.Proxy != nil)
	}

	// No setting: the environment decides (a function, consulted per request).
	if cfg := parseServe(t, "--server", "https://chat.example.com"); cfg.Proxy == nil || cfg.Only443 {
		t.Fatalf("defaults: proxy set %v, only_443 %v", cfg.Proxy != nil, cfg.Only443)
	}
}

// A bad proxy stops the start with a clear error that hides the password, before the data folder
// is touched.
func TestServeRefusesBadProxy(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	for _, tc := range []struct{ proxy, want string }{
		{"https://bob:s3cret@proxy.corp:443", `proxy https://bob:xxxxx@proxy.corp:443: scheme "https" is not supported`},
		{"socks5://proxy.corp:1080", `scheme "socks5" is not supported`},
		{"http://bob:s3cret@proxy.corp:99999", "port 99999 is out of range"},
	} {
		var stdout, stderr bytes.Buffer
		code := run([]string{"serve", "--server", "https://chat.example.com", "--data", data, "--listen", "127.0.0.1:0",
			"--proxy", tc.proxy}, &stdout, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("--proxy %s: exit %d, stderr %q; want 1 and %q", tc.proxy, code, stderr.String(), tc.want)
		}
		if strings.Contains(stderr.String(), "s3cret") {
			t.Errorf("--proxy %s: the error shows the password: %s", tc.proxy, stderr.String())
		}
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("the data folder was created (%v)", err)
	}
}
