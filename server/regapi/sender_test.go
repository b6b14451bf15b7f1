package regapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/internal/testutil"
)

func TestDevSender(t *testing.T) {
	dir := t.TempDir()
	logs := &testutil.Buffer{}
	s := DevSender{Dir: dir, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	if err := s.SendCode(t.Context(), "15551234567", "123456", "sms"); err != nil {
		t.Fatal(err)
	}
	file := DevCodeFile(dir, "15551234567")
	if file != filepath.Join(dir, "codes", "15551234567") {
		t.Fatalf("DevCodeFile = %s", file)
	}
	checkCodeFile(t, file, "123456")
	if l := logs.String(); !strings.Contains(l, "dev mode: verification code") || !strings.Contains(l, "code=123456") || !strings.Contains(l, "phone=15551234567") {
		t.Fatalf("log: %s", l)
	}
	// A new code replaces the old one; no temporary files remain.
	if err := s.SendCode(t.Context(), "15551234567", "654321", "voice"); err != nil {
		t.Fatal(err)
	}
	checkCodeFile(t, file, "654321")
	if entries, _ := os.ReadDir(filepath.Dir(file)); len(entries) != 1 {
		t.Fatalf("%d files in codes/, want 1", len(entries))
	}
	if err := s.SendCode(t.Context(), "../etc/passwd", "123456", "sms"); !errors.Is(err, ErrBadPhone) {
		t.Fatalf("path-like phone: err = %v, want ErrBadPhone", err)
	}
	// Without Dir it only logs.
	if err := (DevSender{Logger: s.Logger}).SendCode(t.Context(), "15551234567", "111111", "sms"); err != nil {
		t.Fatal(err)
	}
}

// The handler with a DevSender: what a quickstart script does.
func TestDevSenderThroughAPI(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, func(c *Config) { c.Sender = DevSender{Dir: dir, Logger: c.Logger} })
	e.requestCode("15551234567", "")
	b, err := os.ReadFile(DevCodeFile(dir, "15551234567"))
	if err != nil {
		t.Fatal(err)
	}
	r := e.post("/v1/register/verify", map[string]string{"phone": "15551234567", "code": string(b), "device_public_key": newDeviceKey(t)})
	if r.status != http.StatusOK {
		t.Fatalf("verify with the code from the file: %d %s", r.status, r.body)
	}
}

func checkCodeFile(t *testing.T, file, want string) {
	t.Helper()
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(file)
	if string(b) != want {
		t.Fatalf("file holds %q, want %q", b, want)
	}
}

func TestHTTPSender(t *testing.T) {
	type got struct {
		method, path, auth, contentType string
		body                            map[string]any
	}
	received := make(chan got, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		g := got{method: r.Method, path: r.URL.Path, auth: r.Header.Get("Authorization"), contentType: r.Header.Get("Content-Type")}
		if err := json.Unmarshal(b, &g.body); err != nil {
			t.Errorf("body %s: %v", b, err)
		}
		received <- g
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()

	s := HTTPSender{URL: srv.URL + "/send", Token: "s3cret", Client: srv.Client()}
	if err := s.SendCode(t.Context(), "15551234567", "123456", "voice"); err != nil {
		t.Fatal(err)
	}
	g := <-received
	if g.method != http.MethodPost || g.path != "/send" || g.auth != "Bearer s3cret" || g.contentType != "application/json" {
		t.Fatalf("request %+v", g)
	}
	if len(g.body) != 3 || g.body["phone"] != "15551234567" || g.body["code"] != "123456" || g.body["method"] != "voice" {
		t.Fatalf("body %v", g.body)
	}

	// No token, no header; a nil Client works.
	s = HTTPSender{URL: srv.URL + "/send"}
	if err := s.SendCode(t.Context(), "15551234567", "123456", "sms"); err != nil {
		t.Fatal(err)
	}
	if g := <-received; g.auth != "" {
		t.Fatalf("Authorization %q without a token", g.auth)
	}
}

func TestHTTPSenderErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		http.Error(w, "upstream failed for "+string(b), http.StatusInternalServerError) // echoes the code
	}))
	defer srv.Close()
	err := HTTPSender{URL: srv.URL + "/send?key=topsecret", Token: "tok"}.SendCode(t.Context(), "15551234567", "987654", "sms")
	if !errors.Is(err, ErrSendRejected) {
		t.Fatalf("err = %v, want ErrSendRejected", err)
	}
	for _, secret := range []string{"987654", "topsecret", "tok"} {
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("error %q contains %q", err, secret)
		}
	}
	if !strings.Contains(err.Error(), "500") {
		t.Fatalf("error %q does not name the status", err)
	}

	if err := (HTTPSender{}).SendCode(t.Context(), "15551234567", "987654", "sms"); !errors.Is(err, ErrSenderNotConfigured) {
		t.Fatalf("empty URL: err = %v", err)
	}

	// A gateway that never answers is abandoned after Timeout.
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	err = HTTPSender{URL: slow.URL, Timeout: 50 * time.Millisecond}.SendCode(t.Context(), "15551234567", "987654", "sms")
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "987654") {
		t.Fatalf("slow gateway: err = %v, want a deadline error without the code", err)
	}

	// Through the API, a failing gateway is a 502 send_failed.
	e := newEnv(t, func(c *Config) { c.Sender = HTTPSender{URL: srv.URL} })
	r := e.post("/v1/register/code", map[string]string{"phone": "15551234567"})
	e.wantError(r, http.StatusBadGateway, "send_failed")
	if strings.Contains(e.logs.String(), "upstream failed") {
		t.Fatalf("gateway body leaked into the log:\n%s", e.logs)
	}
}
