package main

import (
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatd-dev/chatd/transport/transporttest"
)

// publishedAddr is the address a dev chatd publishes for its listener at a (host "localhost").
func publishedAddr(a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	return net.JoinHostPort("localhost", port)
}

// --proxy carries registration, the config refresh and chat; --only-443 never dials the chat port;
// status shows the path with the proxy, never its password.
func TestProxyAndOnly443(t *testing.T) {
	n := startNode(t)
	proxy := transporttest.NewProxy(t, "bob", "s3cret", nil)
	dir := filepath.Join(t.TempDir(), "profile")
	// Global flags before the command, and the same flags after it.
	chat(t, nil, "--profile", dir, "--proxy", proxy.URL.String(), "register", "--server", n.HTTPSURL, "--ca", n.CAFile,
		"--phone", alice).mustSucceed(t, "register through the proxy")
	chat(t, nil, "--profile", dir, "register", "--code", n.code(t, alice), "--proxy", proxy.URL.String()).mustSucceed(t, "verify through the proxy")
	httpsAddr := publishedAddr(n.HTTPSAddr)
	if tunnels := proxy.Tunnels(); len(tunnels) < 2 || tunnels[0] != httpsAddr {
		t.Fatalf("tunnels %v: want the registration requests to %s", tunnels, httpsAddr)
	}

	before := len(proxy.Tunnels())
	r := chat(t, nil, "--profile", dir, "--proxy", proxy.URL.String(), "status", "--only-443").mustSucceed(t, "status")
	_, httpsPort, _ := net.SplitHostPort(httpsAddr)
	wantPath := "Path:         tls to " + httpsAddr + " (port " + httpsPort + ": the 443 path), through proxy http://bob:xxxxx@" + proxy.URL.Host
	for _, want := range []string{"HTTPS:        ok", "Connection:   connected to " + httpsAddr, wantPath, "Since:        ", "Round trip:", "Reconnects:   0", "Last close:   none"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "Network:") {
		t.Errorf("status reports a network problem on loopback:\n%s", r.stdout)
	}
	if strings.Contains(r.stdout+r.stderr, "s3cret") {
		t.Errorf("status shows the proxy password:\n%s\n%s", r.stdout, r.stderr)
	}
	t.Logf("chat status --proxy … --only-443:\n%s", r.stdout)
	for _, target := range proxy.Tunnels()[before:] {
		if target != httpsAddr {
			t.Fatalf("with --only-443 the proxy tunnelled to %s (all: %v); want only %s", target, proxy.Tunnels(), httpsAddr)
		}
	}

	// --proxy none after the command: direct, and the default order (5222 first).
	before = len(proxy.Tunnels())
	r = chat(t, nil, "--profile", dir, "--proxy", proxy.URL.String(), "status", "--proxy", "none").mustSucceed(t, "status direct")
	if !strings.Contains(r.stdout, "Path:         tcp to "+publishedAddr(n.ChatAddr)+" (port ") || !strings.Contains(r.stdout, ": the direct path), no proxy") {
		t.Errorf("status with --proxy none:\n%s", r.stdout)
	}
	if after := proxy.Tunnels(); len(after) != before {
		t.Errorf("--proxy none still used the proxy: %v", after[before:])
	}
}

func TestProxyFlagErrors(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "profile")
	for _, args := range [][]string{
		{"--profile", dir, "--proxy", "https://bob:s3cret@proxy.corp:443", "status"},
		{"--profile", dir, "send", bob, "hi", "--proxy", "https://bob:s3cret@proxy.corp:443"},
	} {
		r := chat(t, nil, args...)
		r.mustFail(t, strings.Join(args, " "), 2, `--proxy: proxy https://bob:xxxxx@proxy.corp:443: scheme "https" is not supported`)
		if strings.Contains(r.stderr, "s3cret") {
			t.Errorf("the error shows the password: %s", r.stderr)
		}
	}
	// A proxy given before the command is not printed as the flag's default in the help.
	r := chat(t, nil, "--proxy", "http://bob:s3cret@proxy.corp:3128", "status", "-h").mustSucceed(t, "status -h")
	for _, want := range []string{"-proxy URL|none", "-only-443", "HTTPS_PROXY"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status -h lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "s3cret") {
		t.Errorf("status -h shows the password:\n%s", r.stdout)
	}
	// inbox never reaches the server: no network flags.
	if r := chat(t, nil, "inbox", "-h").mustSucceed(t, "inbox -h"); strings.Contains(r.stdout, "-proxy") {
		t.Errorf("inbox -h offers --proxy:\n%s", r.stdout)
	}
	if r := chat(t, nil, "help").mustSucceed(t, "help"); !strings.Contains(r.stdout, "--proxy URL|none") || !strings.Contains(r.stdout, "--only-443") {
		t.Errorf("chat help does not describe the network flags:\n%s", r.stdout)
	}
}

// 5222 open, 443 closed (a proxy that tunnels only to the chat port) is unsupported: listen connects
// and says so plainly.
func TestListenReportsUnsupportedNetwork(t *testing.T) {
	n := startNode(t)
	dir := register(t, n, alice)
	chatAddr := publishedAddr(n.ChatAddr)
	proxy := transporttest.NewProxy(t, "", "", func(target string) bool { return target == chatAddr })
	listen := startChat(t, nil, "--profile", dir, "--proxy", proxy.URL.String(), "listen")
	listen.errOut.waitFor(t, "listen", "cannot refresh the configuration") // HTTPS is refused too
	listen.errOut.waitFor(t, "listen", "connected to "+chatAddr+" (tcp) through proxy "+proxy.URL.String())
	listen.errOut.waitFor(t, "listen", "network unsupported: connected over "+chatAddr+"/tcp, but the 443 path fails")
	listen.interrupt()
	if r := listen.wait(t); r.code != 0 {
		t.Errorf("listen: exit %d\n%s", r.code, r.stderr)
	}
}
