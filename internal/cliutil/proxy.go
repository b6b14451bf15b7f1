package cliutil

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/chatd-dev/chatd/transport"
)

// ProxyHelp describes the values of a proxy setting, for flag help texts.
const ProxyHelp = `HTTP CONNECT proxy for the chat connection and HTTPS alike: http://[user:password@]host:port, ` +
	`or "none" (also "direct") for no proxy even when HTTPS_PROXY is set (default: HTTPS_PROXY and NO_PROXY)`

// ProxySetting reads a command's proxy setting:
//
//   - "" is the environment: HTTPS_PROXY (or https_proxy) except for the hosts in NO_PROXY, and never
//     for localhost (transport.ProxyFromEnvironment);
//   - "none" or "direct" is no proxy, even when HTTPS_PROXY is set: the result is nil;
//   - anything else is the URL of an HTTP CONNECT proxy, http://[user:password@]host[:port] (the
//     scheme may be left out; the port defaults to 80), used for every chat endpoint and HTTPS
//     request (transport.ParseProxyURL, transport.ProxyURL).
//
// The result is meant for client.Config.Proxy and regclient.NewWithProxy. An error never shows the
// password.
func ProxySetting(s string) (transport.ProxyFunc, error) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "":
		return transport.ProxyFromEnvironment(), nil
	case "none", "direct":
		return nil, nil
	}
	raw := s
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	if _, err := url.Parse(raw); err != nil {
		// url's error repeats the whole input, password included: say what is wrong without it.
		why := "not a valid URL"
		var ue *url.Error
		if errors.As(err, &ue) && !strings.Contains(s, "@") {
			why += " (" + ue.Err.Error() + ")"
		}
		return nil, fmt.Errorf("proxy: %s; want http://[user:password@]host:port, or \"none\"", why)
	}
	u, err := transport.ParseProxyURL(s)
	if err != nil {
		return nil, fmt.Errorf("%w; want http://[user:password@]host:port, or \"none\"", err)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("proxy %s: port %s is out of range", u.Redacted(), p)
		}
	}
	return transport.ProxyURL(u), nil
}

// ProxySource says where the proxy of ProxySetting(s) comes from: "config" for an explicit URL,
// "none" when s turns proxies off, "environment" when HTTPS_PROXY (or https_proxy) is set, else "".
func ProxySource(s string) string {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		if os.Getenv("HTTPS_PROXY") != "" || os.Getenv("https_proxy") != "" {
			return "environment"
		}
		return ""
	case "none", "direct":
		return "none"
	}
	return "config"
}
