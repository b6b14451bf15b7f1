package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/chatd-dev/chatd/pki"
)

// serverID extracts the id from "sent to +N (id 42)".
func serverID(t *testing.T, out string) string {
	t.Helper()
	m := regexp.MustCompile(`sent to \+\d+ \(id (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no server id in:\n%s", out)
	}
	return m[1]
}

func TestSendErrors(t *testing.T) {
	n := startNode(t)
	pa := register(t, n, alice)

	chat(t, nil, "--profile", pa, "send", "+15559999999", "hi").
		mustFail(t, "unknown recipient", 1, "+15559999999 is not registered on "+n.HTTPSURL, "chat lookup +15559999999")
	chat(t, nil, "--profile", pa, "send", "bob", "hi").mustFail(t, "bad recipient", 2, `recipient "bob"`)
	chat(t, nil, "--profile", pa, "send", bob).mustFail(t, "no text", 2, "give the recipient and the text")
	chat(t, nil, "--profile", pa, "send", bob, "hi", "--wait", "soon").mustFail(t, "bad --wait", 2, `--wait must be "delivered" or "read"`)
	chat(t, nil, "--profile", pa, "send", bob, strings.Repeat("x", 70000)).mustFail(t, "too long", 2, "the text is too long")
	chat(t, nil, "--profile", filepath.Join(t.TempDir(), "none"), "send", bob, "hi").
		mustFail(t, "no profile", 1, "no registration in the profile", "chat register --server")

	// A recipient that never comes online: --wait gives up with what happened.
	register(t, n, bob)
	r := chat(t, nil, "--profile", pa, "send", "--wait", "delivered", "--timeout", "1s", bob, "are you there?")
	r.mustFail(t, "wait timeout", 1, "the message was sent (id ", "no delivered receipt came within 1s")
	serverID(t, r.stdout)

	// A pinned key the server cannot prove.
	p, err := loadRegistered(pa)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := pki.GenerateStaticKey()
	p.ServerKey = pki.FormatPublic(other.Public)
	if err := p.save(pa); err != nil {
		t.Fatal(err)
	}
	chat(t, nil, "--profile", pa, "send", bob, "hi").mustFail(t, "key mismatch", 1,
		"proved the key "+pki.FormatPublic(n.ServerKey), "this profile pins "+p.ServerKey, "man in the middle")
}

// TestSendIdempotent sends twice with one --id: the server stores one message.
func TestSendIdempotent(t *testing.T) {
	n := startNode(t)
	pa := register(t, n, alice)
	pb := register(t, n, bob)
	first := chat(t, nil, "--profile", pa, "send", "--id", "order-42", bob, "shipped").mustSucceed(t, "send")
	again := chat(t, nil, "--profile", pa, "send", "--id", "order-42", bob, "shipped").mustSucceed(t, "send again")
	if serverID(t, first.stdout) != serverID(t, again.stdout) || !strings.Contains(again.stdout, "sent before with this --id") {
		t.Errorf("first:\n%s\nagain:\n%s", first.stdout, again.stdout)
	}
	// Bob reads it; Alice's next command stores the receipts, and a retry with --wait read finds them.
	chat(t, nil, "--profile", pb, "lookup", alice).mustSucceed(t, "bob receives")
	chat(t, nil, "--profile", pb, "read", serverID(t, first.stdout)).mustSucceed(t, "bob reads")
	chat(t, nil, "--profile", pa, "lookup", bob).mustSucceed(t, "alice receives the receipts")
	r := chat(t, nil, "--profile", pa, "send", "--id", "order-42", "--wait", "read", "--timeout", "5s", bob, "shipped").mustSucceed(t, "retry with --wait")
	if !strings.Contains(r.stdout, "✓✓ read by "+bob) {
		t.Errorf("retry with --wait read:\n%s", r.stdout)
	}
	// Text from standard input, and flags after "--" are text.
	r = chat(t, strings.NewReader("from stdin\n"), "--profile", pa, "send", bob, "-").mustSucceed(t, "send -")
	serverID(t, r.stdout)
	chat(t, nil, "--profile", pa, "send", bob, "--", "-5", "degrees").mustSucceed(t, "send -- -5")
}

// TestOfflineDeliveryAndRead: messages for an offline account reach its inbox through any command,
// and chat read sends the receipts the sender waits for.
func TestOfflineDeliveryAndRead(t *testing.T) {
	n := startNode(t)
	pa := register(t, n, alice)
	pb := register(t, n, bob)
	id1 := serverID(t, chat(t, nil, "--profile", pa, "send", bob, "first").mustSucceed(t, "send 1").stdout)

	// Bob's lookup connects and so receives the message: it is announced and stored.
	r := chat(t, nil, "--profile", pb, "lookup", alice, "+15559999999", "not-a-number").mustSucceed(t, "lookup")
	for _, want := range []string{alice + "  registered", "+15559999999  not registered", "not-a-number  not a valid phone number"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("lookup output lacks %q:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "new message from "+alice+" (id "+id1+")") {
		t.Errorf("lookup did not announce the delivered message: %s", r.stderr)
	}

	// Alice waits for the read receipt of a second message while Bob reads both.
	wait := startChat(t, nil, "--profile", pa, "send", "--wait", "read", bob, "second")
	wait.out.waitFor(t, "send --wait read", "sent to "+bob)
	id2 := serverID(t, wait.out.String())
	chat(t, nil, "--profile", pb, "lookup", alice).mustSucceed(t, "lookup again")
	r = chat(t, nil, "--profile", pb, "inbox", "--unread").mustSucceed(t, "inbox --unread")
	if !strings.Contains(r.stdout, "first (id "+id1+")") || !strings.Contains(r.stdout, "second (id "+id2+")") || !strings.Contains(r.stdout, "2 messages, 2 unread") {
		t.Errorf("bob's unread inbox:\n%s", r.stdout)
	}
	r = chat(t, nil, "--profile", pb, "read", "--all").mustSucceed(t, "read --all")
	if !strings.Contains(r.stdout, "marked 2 messages read: "+id1+", "+id2) {
		t.Errorf("read --all output: %s", r.stdout)
	}
	w := wait.wait(t).mustSucceed(t, "send --wait read")
	if !strings.Contains(w.stdout, "✓✓ read by "+bob+" (id "+id2+")") {
		t.Errorf("send --wait read output:\n%s", w.stdout)
	}
	r = chat(t, nil, "--profile", pb, "read", "--all").mustSucceed(t, "read --all again")
	if !strings.Contains(r.stdout, "no unread messages") {
		t.Errorf("second read --all: %s", r.stdout)
	}
	r = chat(t, nil, "--profile", pb, "read", "999").mustSucceed(t, "read an unknown id")
	if !strings.Contains(r.stderr, "message 999 is not in this profile's inbox") {
		t.Errorf("read 999: %s", r.stderr)
	}
	chat(t, nil, "--profile", pb, "read").mustFail(t, "read nothing", 2, "give the server ids")
	chat(t, nil, "--profile", pb, "read", "x1").mustFail(t, "read garbage", 2, `"x1" is not a server id`)
}

// TestListenInProcess runs listen as a goroutine: it prints messages and receipts and stops on
// cancellation; a second command on the same profile is refused while it runs.
func TestListenInProcess(t *testing.T) {
	n := startNode(t)
	pa := register(t, n, alice)
	pb := register(t, n, bob)
	listen := startChat(t, nil, "--profile", pb, "listen", "--echo")
	listen.errOut.waitFor(t, "listen", "listening as "+bob)
	listen.errOut.waitFor(t, "listen", "connected to localhost:")

	chat(t, nil, "--profile", pb, "send", alice, "hi").mustFail(t, "locked profile", 1, "is in use by another chat command", "chat interactive")

	// Escape sequences from the network do not reach the terminal.
	id := serverID(t, chat(t, nil, "--profile", pa, "send", bob, "red \x1b[31malert\x1b[0m").mustSucceed(t, "send").stdout)
	listen.out.waitFor(t, "listen", fmt.Sprintf("%s: red \uFFFD[31malert\uFFFD[0m (id %s)", alice, id))
	listen.out.waitFor(t, "echo", "→ "+alice+": echo: red")

	listen.interrupt()
	r := listen.wait(t)
	if r.code != 0 || !strings.Contains(r.stderr, "stopped") {
		t.Errorf("listen after cancel: exit %d\n%s", r.code, r.stderr)
	}
	if strings.Contains(r.stdout, "\x1b") {
		t.Errorf("listen printed an escape sequence: %q", r.stdout)
	}
}

// TestInteractive drives interactive mode through its input.
func TestInteractive(t *testing.T) {
	n := startNode(t)
	pa := register(t, n, alice)
	pb := register(t, n, bob)
	listen := startChat(t, nil, "--profile", pb, "listen", "--echo", "--read")
	listen.errOut.waitFor(t, "listen", "listening as "+bob)

	inR, inW := io.Pipe()
	defer inW.Close()
	is := startChat(t, inR, "--profile", pa) // no command: interactive
	is.errOut.waitFor(t, "interactive", "chat as "+alice)
	say := func(line string) {
		t.Helper()
		if _, err := io.WriteString(inW, line+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	say("hello?")
	is.errOut.waitFor(t, "no peer", "no peer yet: /to")
	say("/to " + bob)
	is.errOut.waitFor(t, "/to", "talking to "+bob)
	say("hi bob")
	is.out.waitFor(t, "sent", "✓ sent to "+bob)
	is.out.waitFor(t, "echo", bob+": echo: hi bob")
	is.out.waitFor(t, "read receipt", "✓✓ read by "+bob)
	say("//slash")
	listen.out.waitFor(t, "bob gets //", alice+": /slash")
	is.out.waitFor(t, "echo", bob+": echo: /slash")
	say("/lookup " + bob + " +15559999999")
	is.out.waitFor(t, "lookup", "+15559999999  not registered")
	say("/status")
	is.errOut.waitFor(t, "status", "connected as "+alice+" via localhost:")
	say("/bogus")
	is.errOut.waitFor(t, "unknown", "unknown command /bogus")
	say("/read")
	is.errOut.waitFor(t, "read", "marked 2 messages read")
	say("/quit")
	r := is.wait(t).mustSucceed(t, "interactive")
	if strings.Contains(r.stderr, "did not reach the server") {
		t.Errorf("interactive lost messages:\n%s", r.stderr)
	}
}

func TestHelp(t *testing.T) {
	r := chat(t, nil, "help").mustSucceed(t, "help")
	for _, c := range commands {
		if !strings.Contains(r.stdout, "chat "+c.name) && c.name != "interactive" {
			t.Errorf("chat help does not list %s", c.name)
		}
	}
	for _, c := range commands {
		for _, args := range [][]string{{"help", c.name}, {c.name, "-h"}, {c.name, "--help"}} {
			r := chat(t, nil, args...).mustSucceed(t, strings.Join(args, " "))
			for _, want := range []string{"Usage: chat", "Flags:", "-profile DIR", "(default \"", "Examples:\n  chat"} {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("chat %s: help lacks %q:\n%s", strings.Join(args, " "), want, r.stdout)
				}
			}
		}
	}
	r = chat(t, nil, "send", "-h")
	for _, want := range []string{"-wait delivered|read", "-timeout duration", "(default 30s)", "-id ID"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("send -h lacks %q:\n%s", want, r.stdout)
		}
	}
	chat(t, nil, "frobnicate").mustFail(t, "unknown command", 2, `unknown command "frobnicate"`)
	chat(t, nil, "help", "frobnicate").mustFail(t, "unknown help", 2, `unknown command "frobnicate"`)
	chat(t, nil, "send", "--nope").mustFail(t, "unknown flag", 2, "flag provided but not defined: -nope", "chat send -h")
	if r := chat(t, nil, "version").mustSucceed(t, "version"); !strings.HasPrefix(r.stdout, "chat ") {
		t.Errorf("version: %q", r.stdout)
	}
}

// TestProfileFromEnvironment: $CHAT_PROFILE, else $HOME/.chat, and --profile before the command.
func TestProfileFromEnvironment(t *testing.T) {
	a := &app{getenv: func(k string) string { return map[string]string{"HOME": "/home/u", "CHAT_PROFILE": ""}[k] }}
	if got := a.defaultProfile(); got != "/home/u/.chat" {
		t.Errorf("default profile %q", got)
	}
	a.getenv = func(k string) string { return map[string]string{"HOME": "/home/u", "CHAT_PROFILE": "/p"}[k] }
	if got := a.defaultProfile(); got != "/p" {
		t.Errorf("CHAT_PROFILE: %q", got)
	}
	a.profile = "/flag"
	if got := a.defaultProfile(); got != "/flag" {
		t.Errorf("--profile: %q", got)
	}
}

func TestProfileFile(t *testing.T) {
	dir := t.TempDir()
	key, _ := pki.GenerateStaticKey()
	p := &Profile{Phone: "15550000001", Server: "https://x", ServerKey: pki.FormatPublic(key.Public),
		ChatEndpoints: []string{"x:5222"}, DeviceKey: secretKey(key.Private)}
	if err := p.save(dir); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(filepath.Join(dir, profileFile))
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode().Perm())
	}
	got, err := loadRegistered(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, dev, err := got.Keys()
	if err != nil || dev.Public != key.Public {
		t.Errorf("device key round trip: %v", err)
	}
	var raw map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, profileFile))
	json.Unmarshal(b, &raw)
	for _, k := range []string{"version", "phone", "server", "server_key", "chat_endpoints", "device_key"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("profile.json lacks %q: %s", k, b)
		}
	}
	os.WriteFile(filepath.Join(dir, profileFile), []byte(`{"version":99}`), 0o600)
	if _, err := loadProfile(dir); err == nil || !strings.Contains(err.Error(), "update chat") {
		t.Errorf("newer format: %v", err)
	}
}
