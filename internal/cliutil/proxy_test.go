package cliutil

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestProxySetting(t *testing.T) {
	target := &http.Request{URL: &url.URL{Scheme: "https", Host: "chat.example.com:443"}}
	for _, tc := range []struct {
		in, want string // want: the proxy chosen for target, "" when direct
	}{
		{"none", ""},
		{" Direct ", ""},
		{"http://proxy.corp:3128", "http://proxy.corp:3128"},
		{"proxy.corp:3128", "http://proxy.corp:3128"},
		{"http://bob:s3cret@proxy.corp:8080", "http://bob:s3cret@proxy.corp:8080"},
	} {
		p, err := ProxySetting(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		got := ""
		if p != nil {
			u, err := p(target)
			if err != nil {
				t.Fatal(err)
			}
			got = u.String()
		}
		if got != tc.want {
			t.Errorf("%q chooses %q, want %q", tc.in, got, tc.want)
		}
	}
	// "" is the environment's choice: a function, never nil.
	if p, err := ProxySetting(""); err != nil || p == nil {
		t.Fatalf(`"": %v, %v`, p, err)
	}

	for _, tc := range []struct{ in, want string }{
		{"https://proxy.corp:443", `scheme "https" is not supported`},
		{"socks5://proxy.corp:1080", `scheme "socks5" is not supported`},
		{"http://:3128", "no host"},
		{"http://proxy.corp:99999", "out of range"},
		{"http://proxy.corp:x", "not a valid URL (invalid port"},
		{"http://bob:p%zz@proxy.corp:3128", "not a valid URL;"},
		{"https://bob:s3cret@proxy.corp", `proxy https://bob:xxxxx@proxy.corp: scheme "https"`},
	} {
		_, err := ProxySetting(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "p%zz") {
			t.Errorf("%q: the error shows the password: %v", tc.in, err)
		}
		if !strings.Contains(err.Error(), `"none"`) && !strings.Contains(err.Error(), "out of range") {
			t.Errorf("%q: the error does not say what is accepted: %v", tc.in, err)
		}
	}
}

func TestProxySource(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "")
	t.Setenv("https_proxy", "")
	for in, want := range map[string]string{"": "", "none": "none", "DIRECT": "none", "http://p:3128": "config", "p:3128": "config"} {
		if got := ProxySource(in); got != want {
			t.Errorf("ProxySource(%q) = %q, want %q", in, got, want)
		}
	}
	t.Setenv("HTTPS_PROXY", "http://proxy.corp:3128")
	if got := ProxySource(""); got != "environment" {
		t.Errorf("with HTTPS_PROXY set: %q, want environment", got)
	}
}
