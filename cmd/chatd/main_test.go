package main

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/node"
)

func TestConfigFileAndFlagsOverride(t *testing.T) {
	file := filepath.Join(t.TempDir(), "chatd.toml")
	os.WriteFile(file, []byte(`
data_dir = "/var/lib/chatd"
chat_listen = ":15222"
public_host = "chat.example.com"
handshake_timeout = "3s"
`), 0o600)
	var f fileConfig
	fs := newServeFlags(&f)
	args := []string{"--config", file, "--public-host", "override.example.com"}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if err := f.load(file); err != nil {
		t.Fatal(err)
	}
	fs.Parse(args)
	cfg := f.nodeConfig()
	if cfg.DataDir != "/var/lib/chatd" || cfg.ChatListen != ":15222" || cfg.HandshakeTimeout != 3*time.Second {
		t.Fatalf("file settings not applied: %+v", cfg)
	}
	if cfg.PublicHost != "override.example.com" {
		t.Fatalf("flag did not override the file: public host %q", cfg.PublicHost)
	}
	if cfg.AdminListen != "127.0.0.1:9480" || cfg.CodeTTL != 10*time.Minute {
		t.Fatalf("defaults lost: %+v", cfg)
	}

	os.WriteFile(file, []byte(`chat_lisen = ":1"`), 0o600)
	if err := f.load(file); err == nil || !strings.Contains(err.Error(), "chat_lisen") {
		t.Fatalf("unknown setting: %v", err)
	}
}

func TestServeRefusesIncompleteProductionConfig(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"serve", "--data", t.TempDir(), "--chat-listen", "127.0.0.1:0", "--https-listen", "127.0.0.1:0", "--admin-listen", "off"}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "TLS certificate") {
		t.Fatalf("exit %d, stderr %q; want a clear error about the missing certificate", code, errb.String())
	}
}

func TestCertIssueVerifies(t *testing.T) {
	data := t.TempDir()
	var out, errb bytes.Buffer
	if code := run([]string{"cert", "issue", "--data", data, "--phone", "+1 555 000 0009", "--name", "Acme Ltd"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	key, _, err := pki.LoadOrCreateOperatorKey(filepath.Join(data, node.OperatorKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.VerifyBusinessCert(strings.TrimSpace(out.String()), key.Public().(ed25519.PublicKey), time.Now())
	if err != nil || c.Phone != "15550000009" || c.DisplayName != "Acme Ltd" {
		t.Fatalf("issued cert %+v: %v", c, err)
	}
	if code := run([]string{"cert", "issue", "--data", data, "--phone", "+1 555"}, &out, &errb); code != 1 {
		t.Fatalf("missing --name accepted (exit %d)", code)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"serve", "-h"}, {"help", "cert"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 || out.Len()+errb.Len() == 0 {
			t.Errorf("%v: exit %d, no help", args, code)
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "unknown command") {
		t.Errorf("unknown command: exit %d %q", code, errb.String())
	}
}
