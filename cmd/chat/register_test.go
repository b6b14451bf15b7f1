package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/server/node"
)

func TestRegisterErrors(t *testing.T) {
	n := startNode(t)
	dir := filepath.Join(t.TempDir(), "p")
	reg := func(args ...string) result {
		return chat(t, nil, append([]string{"--profile", dir, "register"}, args...)...)
	}
	srv := []string{"--server", n.HTTPSURL, "--ca", n.CAFile}

	reg("--phone", alice).mustFail(t, "no server", 2, "--server is required")
	reg("--code", "123456").mustFail(t, "nothing requested", 2, "no code was requested from this profile")
	reg(append(srv, "--phone", "+1 555 CALL ME")...).mustFail(t, "invalid phone", 1, `invalid phone number "+1 555 CALL ME"`, "letter")
	reg(append(srv, "--phone", alice, "--method", "pigeon")...).mustFail(t, "method", 2, "--method must be sms or voice")
	reg("--server", n.HTTPSURL, "--phone", alice).mustFail(t, "untrusted CA", 1, "not trust", "--ca FILE")
	reg(append(srv, "--phone", alice, "--code", "123456")...).mustFail(t, "no pending code", 1,
		"no code waiting for "+alice, "register --phone "+alice)

	// A code request is remembered: --code alone verifies against it.
	reg(append(srv, "--phone", alice)...).mustSucceed(t, "request")
	code := n.code(t, alice)
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	reg("--code", "12345").mustFail(t, "short code", 1, `"12345" is not a verification code`)
	for left := 4; left >= 1; left-- {
		want := fmt.Sprintf("(%d attempts left", left)
		if left == 1 {
			want = "(1 attempt left"
		}
		reg("--code", wrong).mustFail(t, "wrong code", 1, "wrong code for "+alice, want)
	}
	reg("--code", wrong).mustFail(t, "too many attempts", 1, "too many wrong codes", "register --phone "+alice)
	reg("--code", code).mustFail(t, "cancelled code", 1, "no code waiting for "+alice)

	// The per-number limit: 3 requests at once, then one per 30 s; the first one above counted.
	reg().mustSucceed(t, "second request, for the remembered number")
	reg("--method", "voice").mustSucceed(t, "third request")
	reg().mustFail(t, "rate limited", 1, "too many attempts; the server asks to wait", "s before trying again")

	// The last code still works, and the profile is saved.
	code = n.code(t, alice)
	r := reg("--code", code).mustSucceed(t, "verify")
	if !strings.Contains(r.stdout, "Registered "+alice) {
		t.Errorf("verify output:\n%s", r.stdout)
	}
	p, err := loadRegistered(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p.Phone != "15550000001" || p.Pending != nil || p.CAFile != n.CAFile || p.Server != n.HTTPSURL {
		t.Errorf("profile %+v", p)
	}
	if s := fmt.Sprintf("%v %+v %#v", p, p, p); strings.Contains(s, p.DeviceKey.mustText(t)) {
		t.Errorf("formatting the profile shows the device key: %s", s)
	}
}

func (k secretKey) mustText(t *testing.T) string {
	b, err := k.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRegisterCodeExpired(t *testing.T) {
	n := startNode(t, func(c *node.Config) { c.CodeTTL = time.Nanosecond })
	dir := filepath.Join(t.TempDir(), "p")
	chat(t, nil, "--profile", dir, "register", "--server", n.HTTPSURL, "--ca", n.CAFile, "--phone", alice).mustSucceed(t, "request")
	chat(t, nil, "--profile", dir, "register", "--code", n.code(t, alice)).
		mustFail(t, "expired", 1, "the code has expired; request a new one", "register --phone "+alice)
}

// TestRegisterAgain registers a profile with another number: the old inbox is moved aside.
func TestRegisterAgain(t *testing.T) {
	n := startNode(t)
	pa := register(t, n, alice)
	pb := register(t, n, bob)
	chat(t, nil, "--profile", pb, "send", alice, "for the old alice").mustSucceed(t, "send")
	chat(t, nil, "--profile", pa, "lookup", bob).mustSucceed(t, "lookup (receives the message)")

	carol := "+15550000003"
	chat(t, nil, "--profile", pa, "register", "--phone", carol).mustSucceed(t, "request for carol")
	r := chat(t, nil, "--profile", pa, "register", "--code", n.code(t, carol)).mustSucceed(t, "verify carol")
	if !strings.Contains(r.stderr, "the inbox of "+alice) {
		t.Errorf("re-registration did not report the archived inbox: %s", r.stderr)
	}
	r = chat(t, nil, "--profile", pa, "inbox").mustSucceed(t, "inbox")
	if !strings.Contains(r.stdout, "0 messages") {
		t.Errorf("the new registration's inbox is not empty:\n%s", r.stdout)
	}
	matches, _ := filepath.Glob(filepath.Join(pa, "inbox-15550000001-*.jsonl"))
	if len(matches) != 1 {
		t.Fatalf("archived inbox: %v", matches)
	}
	if b, _ := os.ReadFile(matches[0]); !strings.Contains(string(b), "for the old alice") {
		t.Errorf("archived inbox: %s", b)
	}
}

// TestRegisterAtOnce requests and verifies in one command, reading the code from the dev code file
// or from standard input.
func TestRegisterAtOnce(t *testing.T) {
	n := startNode(t)
	pa := filepath.Join(t.TempDir(), "a")
	codeFile := "@" + filepath.Join(n.dir, "codes", "15550000001")
	r := chat(t, nil, "--profile", pa, "register", "--server", n.HTTPSURL, "--ca", n.CAFile, "--phone", alice, "--code", codeFile).
		mustSucceed(t, "register --code @FILE")
	if !strings.Contains(r.stdout, "Registered "+alice) {
		t.Errorf("output:\n%s", r.stdout)
	}

	pb := filepath.Join(t.TempDir(), "b")
	inR, inW := io.Pipe()
	defer inW.Close()
	p := startChat(t, inR, "--profile", pb, "register", "--server", n.HTTPSURL, "--ca", n.CAFile, "--phone", bob, "--code", "-")
	p.errOut.waitFor(t, "prompt", "Enter the code")
	io.WriteString(inW, n.code(t, bob)+"\n")
	if r := p.wait(t).mustSucceed(t, "register --code -"); !strings.Contains(r.stdout, "Registered "+bob) {
		t.Errorf("output:\n%s", r.stdout)
	}
	chat(t, nil, "--profile", pb, "send", alice, "registered in one go").mustSucceed(t, "send")
}
