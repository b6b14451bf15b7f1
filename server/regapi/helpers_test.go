package regapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/internal/testutil"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
	"github.com/chatd-dev/chatd/server/store"
)

type clock = testutil.Clock

// captureSender records the codes it is asked to send, or fails.
type captureSender struct {
	mu    sync.Mutex
	codes map[string]string
	fail  error
}

func (s *captureSender) SendCode(_ context.Context, phone, code, method string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	if s.codes == nil {
		s.codes = map[string]string{}
	}
	s.codes[phone] = code
	return nil
}

func (s *captureSender) code(t *testing.T, phone string) string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.codes[phone]
	if !ok {
		t.Fatalf("no code was sent to %s", phone)
	}
	return c
}

type env struct {
	t       *testing.T
	srv     *httptest.Server
	h       *Handler
	st      *store.Store
	clk     *clock
	sender  *captureSender
	logs    *testutil.Buffer
	opPub   ed25519.PublicKey
	opPriv  ed25519.PrivateKey
	static  pki.StaticKey
	cfgUsed Config
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newEnv starts the API on a real loopback server with a real store file.
// Rate limits are off unless mod sets them.
func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "chatd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	clk := testutil.NewClock(t0)
	st.Now = clk.Now
	opPub, opPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	static, err := pki.GenerateStaticKey()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st, clk: clk, sender: &captureSender{}, logs: &testutil.Buffer{}, opPub: opPub, opPriv: opPriv, static: static}
	off := Limit{Every: -1}
	cfg := Config{
		Store:                 st,
		Sender:                e.sender,
		Logger:                slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OperatorKey:           opPub,
		ServerStaticKey:       static.Public,
		ChatEndpoints:         []Endpoint{{Host: "127.0.0.1", Port: 5222, Transport: "tcp"}, {Host: "127.0.0.1", Port: 443, Transport: "tls"}},
		HTTPSURL:              "https://127.0.0.1",
		IPListVersion:         "2026-03-01",
		CodeRequestsPerNumber: off,
		CodeRequestsPerAddr:   off,
		VerifyPerAddr:         off,
		VerifyPerNumber:       off,
		Now:                   clk.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	e.cfgUsed = cfg
	e.h = New(cfg)
	e.srv = httptest.NewServer(e.h)
	t.Cleanup(e.srv.Close)
	return e
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func (r result) errCode(t *testing.T) (code, message string) {
	t.Helper()
	var er regtypes.ErrorResponse
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&er); err != nil || er.Error.Code == "" || er.Error.Message == "" {
		t.Fatalf("status %d: body is not an error object: %s (%v)", r.status, r.body, err)
	}
	return er.Error.Code, er.Error.Message
}

func (e *env) do(method, path, contentType, body string) result {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); method != http.MethodHead && ct != "application/json" {
		e.t.Fatalf("%s %s: Content-Type %q, want application/json; body %s", method, path, ct, b)
	}
	return result{status: resp.StatusCode, header: resp.Header, body: b}
}

func (e *env) post(path string, v any) result {
	e.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.do(http.MethodPost, path, "application/json", string(b))
}

// wantError checks status and error code.
func (e *env) wantError(r result, status int, code string) string {
	e.t.Helper()
	got, msg := r.errCode(e.t)
	if r.status != status || got != code {
		e.t.Fatalf("got %d %s (%s), want %d %s", r.status, got, msg, status, code)
	}
	return msg
}

func (e *env) requestCode(phone, cert string) regtypes.CodeResponse {
	e.t.Helper()
	r := e.post("/v1/register/code", regtypes.CodeRequest{Phone: phone, BusinessCert: cert})
	if r.status != http.StatusAccepted {
		e.t.Fatalf("code request: %d %s", r.status, r.body)
	}
	var cr regtypes.CodeResponse
	if err := json.Unmarshal(r.body, &cr); err != nil {
		e.t.Fatal(err)
	}
	return cr
}

func (e *env) issueCert(phone, name string, from, until time.Time) string {
	e.t.Helper()
	s, err := pki.IssueBusinessCert(e.opPriv, pki.BusinessCert{Phone: phone, DisplayName: name, IssuedAt: from, ExpiresAt: until})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func newDeviceKey(t *testing.T) string {
	t.Helper()
	k, err := pki.GenerateStaticKey()
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k.Public[:])
}

var errGateway = errors.New("gateway down")
