package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// TestBinaryEndToEnd builds chat and runs it as a user would against a dev node: two registrations,
// a listener that reads and echoes, and a send that waits for the read receipt.
func TestBinaryEndToEnd(t *testing.T) {
	n := startNode(t)
	base := t.TempDir()
	pa, pb := filepath.Join(base, "alice"), filepath.Join(base, "bob")

	for _, reg := range []struct{ dir, phone string }{{pa, alice}, {pb, bob}} {
		r := runBinary(t, "register", "--profile", reg.dir, "--server", n.HTTPSURL, "--ca", n.CAFile, "--phone", reg.phone).
			mustSucceed(t, "register "+reg.phone)
		if !strings.Contains(r.stdout, "verification code is on its way to "+reg.phone) {
			t.Errorf("code request output:\n%s", r.stdout)
		}
		r = runBinary(t, "register", "--profile", reg.dir, "--code", n.code(t, reg.phone)).mustSucceed(t, "verify "+reg.phone)
		if !strings.Contains(r.stdout, "Registered "+reg.phone) || !strings.Contains(r.stdout, fingerprint(n.ServerKey)) {
			t.Errorf("verify output does not name the number and the server key fingerprint:\n%s", r.stdout)
		}
	}

	listen := startBinary(t, nil, "--profile", pb, "listen", "--read", "--echo")
	listen.errOut.waitFor(t, "bob's listen", "listening as "+bob)

	r := runBinary(t, "--profile", pa, "send", bob, "hello", "bob", "--wait", "read", "--timeout", "20s").mustSucceed(t, "send --wait read")
	m := regexp.MustCompile(`sent to \+15550000002 \(id (\d+)\)`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("send output has no server id:\n%s", r.stdout)
	}
	id := m[1]
	for _, want := range []string{"✓ delivered to " + bob + " (id " + id + ")", "✓✓ read by " + bob + " (id " + id + ")"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("send output lacks %q:\n%s", want, r.stdout)
		}
	}

	// Bob's listener printed the message, echoed it, and got the delivered receipt of the echo
	// (Alice's send was still connected and stored it).
	listen.out.waitFor(t, "bob's listen", alice+": hello bob (id "+id+")")
	listen.out.waitFor(t, "bob's echo", "→ "+alice+": echo: hello bob")
	listen.out.waitFor(t, "bob's receipt", "✓ delivered to "+alice)

	// The echo was stored before the read receipt was sent, so Alice's send received it first.
	r = runBinary(t, "--profile", pa, "inbox").mustSucceed(t, "alice's inbox")
	if !regexp.MustCompile(`\* \[[^]]+\] \+15550000002: echo: hello bob \(id \d+\)`).MatchString(r.stdout) {
		t.Errorf("alice's inbox lacks the unread echo:\n%s", r.stdout)
	}

	// Ctrl-C ends the listener cleanly.
	if err := listen.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	lr := listen.wait(t)
	if lr.code != 0 || !strings.Contains(lr.stderr, "stopped") {
		t.Errorf("listen after SIGINT: exit %d, stderr:\n%s", lr.code, lr.stderr)
	}
	r = runBinary(t, "--profile", pb, "inbox").mustSucceed(t, "bob's inbox")
	read := regexp.MustCompile(`(?m)^  \[[^]]+\] \+15550000001: hello bob \(id ` + id + `\)$`) // "*" would mark it unread
	if !read.MatchString(r.stdout) || !strings.Contains(r.stdout, "1 message, 0 unread") {
		t.Errorf("bob's inbox should hold the message, read:\n%s", r.stdout)
	}

	// The profile is private and the device key never printed.
	st, err := os.Stat(filepath.Join(pa, profileFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("profile.json has mode %v, want 0600", st.Mode().Perm())
	}
	r = runBinary(t, "--profile", pa, "status").mustSucceed(t, "status")
	for _, want := range []string{"Phone:        " + alice, "Fingerprint:  " + fingerprint(n.ServerKey), "HTTPS:        ok", "Connection:   connected to localhost:", "Round trip:"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, r.stdout)
		}
	}
	var prof struct {
		DeviceKey string `json:"device_key"`
	}
	data, _ := os.ReadFile(filepath.Join(pa, profileFile))
	if err := json.Unmarshal(data, &prof); err != nil || len(prof.DeviceKey) != 44 {
		t.Fatalf("profile.json device_key %q: %v", prof.DeviceKey, err)
	}
	if strings.Contains(r.stdout+r.stderr, prof.DeviceKey) {
		t.Error("chat status printed the device key")
	}
}

// TestBinaryConnectionRefused checks the one-line error when the server is gone.
func TestBinaryConnectionRefused(t *testing.T) {
	n := startNode(t)
	pa := register(t, n, alice)
	n.stop(t)
	r := startBinary(t, io.NopCloser(strings.NewReader("")), "--profile", pa, "send", bob, "hi").wait(t)
	r.mustFail(t, "send to a stopped server", 1, "chat: cannot connect to localhost:", "connection refused")
	t.Logf("stderr: %s", r.stderr)
}
