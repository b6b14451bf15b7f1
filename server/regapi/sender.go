package regapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// CodeSender delivers a verification code to a phone. phone is normalized
// (E.164 digits without '+'), code is 6 digits, method is "sms" or "voice".
// Implementations must never log the code or put it in errors (DevSender,
// whose purpose is to show it, is the exception).
type CodeSender interface {
	SendCode(ctx context.Context, phone, code, method string) error
}

// DevSender is the development CodeSender: it logs every code at INFO
// ("dev mode: verification code" with phone, code and method) and, when
// Dir is set, writes Dir/codes/<phone> containing just the code (mode 0600,
// replaced atomically), so that scripts and tests can read it. Never use it
// in production.
type DevSender struct {
	Dir    string       // "" → only log
	Logger *slog.Logger // nil → slog.Default()
}

// SendCode implements CodeSender.
func (d DevSender) SendCode(ctx context.Context, phone, code, method string) error {
	if !digitsOnly(phone) {
		return fmt.Errorf("dev sender: %w: %q", ErrBadPhone, phone)
	}
	log := d.Logger
	if log == nil {
		log = slog.Default()
	}
	log.InfoContext(ctx, "dev mode: verification code", "phone", phone, "code", code, "method", method)
	if d.Dir == "" {
		return nil
	}
	if err := writeCodeFile(filepath.Join(d.Dir, "codes"), phone, code); err != nil {
		return fmt.Errorf("dev sender: %w", err)
	}
	return nil
}

// DevCodeFile returns the file in which DevSender{Dir: dir} stores the last
// code sent to phone.
func DevCodeFile(dir, phone string) string { return filepath.Join(dir, "codes", phone) }

func writeCodeFile(dir, phone, code string) (err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+phone+".tmp*") // mode 0600
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err := f.WriteString(code); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), filepath.Join(dir, phone))
}

func digitsOnly(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// DefaultHTTPSenderTimeout bounds one HTTPSender request when Timeout is 0.
const DefaultHTTPSenderTimeout = 10 * time.Second

// HTTPSender hands codes to an SMS/voice gateway over HTTP: it POSTs the
// JSON object {"phone":"15551234567","code":"123456","method":"sms"} to URL,
// with "Authorization: Bearer <Token>" when Token is set. Any 2xx answer is
// success; anything else is an error wrapping [ErrSendRejected] that names
// the status. Neither errors nor logs ever contain the code (nor the
// gateway's response body, which might echo it).
type HTTPSender struct {
	URL     string        // required
	Token   string        // "" → no Authorization header
	Client  *http.Client  // nil → http.DefaultClient, bounded by Timeout
	Timeout time.Duration // per request, applied through the context; 0 → DefaultHTTPSenderTimeout
}

// SendCode implements CodeSender.
func (s HTTPSender) SendCode(ctx context.Context, phone, code, method string) error {
	if s.URL == "" {
		return fmt.Errorf("http sender: %w: URL is empty", ErrSenderNotConfigured)
	}
	target := redactURL(s.URL)
	body, err := json.Marshal(struct {
		Phone  string `json:"phone"`
		Code   string `json:"code"`
		Method string `json:"method"`
	}{phone, code, method})
	if err != nil {
		return fmt.Errorf("http sender: %w", err)
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultHTTPSenderTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("http sender: bad URL %s: %w", target, unwrapURLError(err))
	}
	req.Header.Set("Content-Type", "application/json")
	if s.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.Token)
	}
	client := s.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("http sender: POST %s: %w", target, unwrapURLError(err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("http sender: POST %s: %w: status %s", target, ErrSendRejected, resp.Status)
	}
	return nil
}

// redactURL drops user info, query and fragment, which may hold secrets.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String()
}

// unwrapURLError drops the *url.Error layer, whose text repeats the full URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
