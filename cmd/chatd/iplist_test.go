package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/iplist"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/node"
	"github.com/chatd-dev/chatd/server/node/nodetest"
)

// ipListSetup makes a data folder with an operator key and a list file updated today.
func ipListSetup(t *testing.T) (data, listFile string, pub ed25519.PublicKey) {
	t.Helper()
	dir := t.TempDir()
	data = filepath.Join(dir, "data")
	key, _, err := pki.LoadOrCreateOperatorKey(filepath.Join(data, node.OperatorKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	listFile = filepath.Join(dir, "iplist.toml")
	today := time.Now().UTC().Format(iplist.DateLayout)
	os.WriteFile(listFile, []byte("updated = "+today+"\nipv4 = [\"203.0.113.0/24\"]\nipv6 = [\"2001:db8::/32\"]\n"), 0o600)
	return data, listFile, key.Public().(ed25519.PublicKey)
}

func TestIPListCommand(t *testing.T) {
	data, listFile, pub := ipListSetup(t)
	out := filepath.Join(t.TempDir(), "list.zip")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"iplist", "--data", data, "--iplist-file", listFile, "--out", out}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	z, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	l, err := iplist.ParseZIP(z, pub, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(l.IPv4) != 1 || len(l.IPv6) != 1 || !strings.Contains(stdout.String(), "wrote "+out) || !strings.Contains(stdout.String(), l.Version()) {
		t.Errorf("list %v; output:\n%s", l, stdout.String())
	}

	// The same settings from a config file, the default file name, and stdout.
	cfgFile := filepath.Join(t.TempDir(), "chatd.toml")
	os.WriteFile(cfgFile, []byte("data_dir = \""+data+"\"\niplist_file = \""+listFile+"\"\npublic_host = \"chat.example.com\"\n"), 0o600)
	dir := t.TempDir()
	t.Chdir(dir)
	stdout.Reset()
	if code := run([]string{"iplist", "--config", cfgFile}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	z2, err := os.ReadFile(filepath.Join(dir, l.FileName()))
	if err != nil || !bytes.Equal(z, z2) {
		t.Errorf("default file %s: %v (same ZIP: %v)", l.FileName(), err, bytes.Equal(z, z2))
	}
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"iplist", "--config", cfgFile, "--out", "-"}, &stdout, &stderr); code != 0 || !bytes.Equal(stdout.Bytes(), z) || !strings.Contains(stderr.String(), "version:") {
		t.Errorf("--out -: exit %d, %d bytes, stderr %s", code, stdout.Len(), stderr.String())
	}
}

// TestIPListCommandMatchesServer: the offline ZIP is byte for byte the one a server with the same
// data folder and list file serves.
func TestIPListCommandMatchesServer(t *testing.T) {
	data, listFile, _ := ipListSetup(t)
	out := filepath.Join(t.TempDir(), "list.zip")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"iplist", "--data", data, "--iplist-file", listFile, "--out", out}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	offline, _ := os.ReadFile(out)

	n := nodetest.Start(t, node.Config{DataDir: data, IPListFile: listFile, Logger: slog.New(slog.DiscardHandler)})
	pem, _ := os.ReadFile(n.CAFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(n.HTTPSURL + "/v1/iplist.zip")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(offline, served) {
		t.Errorf("chatd iplist wrote %d bytes, the server serves %d different bytes", len(offline), len(served))
	}
}

func TestIPListCommandErrors(t *testing.T) {
	data, listFile, _ := ipListSetup(t)
	expired := filepath.Join(t.TempDir(), "old.toml")
	os.WriteFile(expired, []byte("updated = 2020-01-01\nipv4 = [\"203.0.113.0/24\"]\n"), 0o600)
	out := filepath.Join(t.TempDir(), "x.zip")
	for name, tc := range map[string]struct {
		args []string
		msg  string
	}{
		"no list":         {[]string{"--data", data}, "no IP address list is configured"},
		"no operator key": {[]string{"--data", t.TempDir(), "--iplist-file", listFile}, "no operator key in"},
		"expired":         {[]string{"--data", data, "--iplist-file", expired}, "expired on 2020-03-31"},
		"bad list":        {[]string{"--data", data, "--iplist-file", data}, "list file"},
		"argument":        {[]string{"--data", data, "extra"}, `unexpected argument "extra"`},
	} {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"iplist", "--out", out}, tc.args...), &stdout, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), tc.msg) {
			t.Errorf("%s: exit %d, stderr %q; want %q", name, code, stderr.String(), tc.msg)
		}
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed run wrote %s", out)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"help", "iplist"}, &stdout, &stderr); code != 0 || !strings.Contains(stderr.String(), "--out") {
		t.Errorf("help iplist: exit %d %q", code, stderr.String())
	}
}
