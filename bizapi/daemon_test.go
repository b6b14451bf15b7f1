package bizapi

import (
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A proxy choice that fails (an invalid HTTPS_PROXY) stops the start with an error that does not
// repeat the proxy URL, before the data folder is touched.
func TestStartRefusesUnusableProxy(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	_, err := Start(Config{
		DataDir: data, ServerURL: "https://chat.example.com", Listen: "127.0.0.1:0",
		Proxy: func(*http.Request) (*url.URL, error) {
			return nil, errors.New(`invalid proxy address "http://bob:s3cret@proxy.corp:%zz"`)
		},
	})
	if err == nil || !strings.Contains(err.Error(), "the proxy for chat.example.com is not a valid URL") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("Start: %v", err)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("the data folder was created (%v)", err)
	}
}

func TestProxyFor(t *testing.T) {
	u, _ := url.Parse("http://bob:s3cret@proxy.corp:3128")
	for _, tc := range []struct {
		proxy func(*http.Request) (*url.URL, error)
		want  string
	}{
		{nil, "direct"},
		{http.ProxyURL(u), "http://bob:xxxxx@proxy.corp:3128"},
		{func(*http.Request) (*url.URL, error) { return nil, nil }, "direct"}, // NO_PROXY matched
	} {
		if got, err := proxyFor(tc.proxy, "https://chat.example.com"); err != nil || got != tc.want {
			t.Errorf("proxyFor = %q, %v; want %q", got, err, tc.want)
		}
	}
}
