// Command quickstart starts a complete local chatd network in one process: chatd in development mode,
// a business certificate, bizapi with the business number registered, and a demo customer that marks
// every message read and answers "echo: <text>". It prints what runs where, the admin credentials and
// a curl line that sends a message, and shows incoming webhooks when no webhook URL is given.
//
//	go run ./cmd/quickstart [--data DIR] [--api ADDR] [--admin-password PASS] [--customer NUMBER]
//
// State lives in the data folder; a second run reuses it. Ctrl-C stops everything.
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/chatd-dev/chatd/bizapi"
	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/client/regclient"
	"github.com/chatd-dev/chatd/content"
	"github.com/chatd-dev/chatd/internal/cliutil"
	"github.com/chatd-dev/chatd/phone"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/node"
	"github.com/chatd-dev/chatd/server/regapi"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

type options struct {
	data, api, adminPassword, customer, business, bizName string
	chatAddr, httpsAddr, webhookURL, logLevel             string
}

func main() {
	var o options
	fs := flag.NewFlagSet("quickstart", flag.ContinueOnError)
	fs.StringVar(&o.data, "data", "quickstart-data", "data folder for chatd, bizapi and the demo customer (reused by the next run)")
	fs.StringVar(&o.api, "api", "127.0.0.1:8080", "address of bizapi's REST API")
	fs.StringVar(&o.adminPassword, "admin-password", "Quickstart-2026", "password of bizapi's admin user (set at the first run's first login; 8-64 characters with a digit, an upper- and a lower-case letter and a special character)")
	fs.StringVar(&o.customer, "customer", "+15550000002", "phone number of the demo customer who answers")
	fs.StringVar(&o.business, "business", "+15550000001", "the business phone number bizapi registers")
	fs.StringVar(&o.bizName, "business-name", "Quickstart Business", "the business's verified display name")
	fs.StringVar(&o.chatAddr, "chat", "127.0.0.1:5222", "chatd's chat listener")
	fs.StringVar(&o.httpsAddr, "https", "127.0.0.1:8443", "chatd's 443 listener (HTTPS and chat)")
	fs.StringVar(&o.webhookURL, "webhook-url", "", "where bizapi posts webhooks; empty: a local receiver prints them here")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level of chatd and bizapi (their logs go to DATA/quickstart.log)")
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, `Usage: go run ./cmd/quickstart [flags]

Starts a complete local network: chatd (dev mode), bizapi with a registered business number, and a demo
customer that reads every message and answers "echo: <text>". Ctrl-C stops everything.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, out io.Writer) error {
	bizPhone, err := phone.Normalize(o.business)
	if err != nil {
		return fmt.Errorf("--business: %w", err)
	}
	custPhone, err := phone.Normalize(o.customer)
	if err != nil {
		return fmt.Errorf("--customer: %w", err)
	}
	if err := os.MkdirAll(o.data, 0o700); err != nil {
		return err
	}
	logFile, err := os.OpenFile(filepath.Join(o.data, "quickstart.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	logger, err := cliutil.NewLogger(logFile, o.logLevel, "text")
	if err != nil {
		return err
	}
	p := &printer{w: out}

	// 1. chatd.
	chatdDir := filepath.Join(o.data, "chatd")
	n, err := node.Start(node.Config{DataDir: chatdDir, Dev: true, ChatListen: o.chatAddr, HTTPSListen: o.httpsAddr, AdminListen: "off", Logger: logger})
	if err != nil {
		return fmt.Errorf("starting chatd: %w", err)
	}
	defer shutdown("chatd", n.Shutdown)

	// 2. A business certificate from the operator key.
	opKey, _, err := pki.LoadOrCreateOperatorKey(filepath.Join(chatdDir, node.OperatorKeyFile))
	if err != nil {
		return err
	}
	cert, err := pki.IssueBusinessCert(opKey, pki.BusinessCert{Phone: bizPhone, DisplayName: o.bizName})
	if err != nil {
		return err
	}

	// 3. The webhook receiver (unless the user has one) and bizapi.
	webhookURL := o.webhookURL
	if webhookURL == "" {
		url, stopHooks, err := startReceiver(p)
		if err != nil {
			return err
		}
		defer stopHooks()
		webhookURL = url
	}
	d, err := bizapi.Start(bizapi.Config{
		DataDir: filepath.Join(o.data, "bizapi"), Listen: o.api,
		ServerURL: n.HTTPSURL, ServerCAFile: n.CAFile, WebhookURL: webhookURL,
		Logger: logger, Version: "quickstart",
	})
	if err != nil {
		return fmt.Errorf("starting bizapi: %w", err)
	}
	defer shutdown("bizapi", d.Shutdown)
	apiURL := "http://" + d.Addr.String()

	// 4. Log in as admin and register the business number, through the REST API as a developer would.
	rc := &rest{base: apiURL}
	token, err := rc.login(ctx, o.adminPassword)
	if err != nil {
		return err
	}
	if err := rc.register(ctx, bizPhone, cert, chatdDir); err != nil {
		return err
	}
	if err := rc.waitConnected(ctx); err != nil {
		return err
	}
	// Show "read" statuses too (the On-Premises default sends only sent and delivered).
	if _, err := rc.do(ctx, "PATCH", "/v1/settings/application", map[string]any{
		"webhooks": map[string]any{"message": map[string]bool{"read": true}},
	}, nil, "", ""); err != nil {
		return fmt.Errorf("enabling read webhooks: %w", err)
	}

	// 5. The demo customer.
	cust, err := startCustomer(ctx, n, custPhone, filepath.Join(o.data, "customer"), p)
	if err != nil {
		return err
	}
	defer cust.stop()

	p.printf(`
chatd quickstart is running (data in %s, logs in %s)

  chatd            chat %s, HTTPS + chat %s (CA %s)
  bizapi REST API  %s   (business +%s, "%s")
  demo customer    +%s — reads every message and answers "echo: <text>"
  webhooks         %s

Admin login: admin / %s      bearer token (valid 7 days):
  %s

Send a message to the customer:
  curl -s -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' \
       -d '{"to":"%s","type":"text","text":{"body":"hello"}}' %s/v1/messages

Health:  curl -s -H 'Authorization: Bearer %s' %s/v1/health
Press Ctrl-C to stop.

`, o.data, filepath.Join(o.data, "quickstart.log"), n.ChatAddr, n.HTTPSAddr, n.CAFile,
		apiURL, bizPhone, o.bizName, custPhone, hooksWhere(o.webhookURL, webhookURL),
		o.adminPassword, token, token, custPhone, apiURL, token, apiURL)

	select {
	case <-ctx.Done():
		p.printf("\nstopping…\n")
		return nil
	case <-n.Done():
		return n.Err()
	case <-d.Done():
		return d.Err()
	}
}

func hooksWhere(userURL, url string) string {
	if userURL != "" {
		return "posted to " + userURL
	}
	return "printed below (receiver " + url + ")"
}

func shutdown(what string, fn func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fn(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "quickstart: stopping %s: %v\n", what, err)
	}
}

// printer serializes output lines from several goroutines.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *printer) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format, args...)
}

// startReceiver runs a local webhook receiver that prints each status and message of a callback on a
// line of its own (bizapi puts several in one request under load).
func startReceiver(p *printer) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		for _, l := range describeWebhook(body) {
			p.printf("webhook  %s\n", l)
		}
		w.WriteHeader(http.StatusOK)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String() + "/webhook", func() { srv.Close() }, nil
}

// describeWebhook renders a callback as one line per status or message it carries.
func describeWebhook(body []byte) []string {
	var cb struct {
		Statuses []struct {
			ID          string `json:"id"`
			Status      string `json:"status"`
			RecipientID string `json:"recipient_id"`
		} `json:"statuses"`
		Messages []struct {
			From, ID, Type string
			Text           struct{ Body string }
		} `json:"messages"`
	}
	if json.Unmarshal(body, &cb) != nil {
		return []string{string(body)}
	}
	var parts []string
	for _, s := range cb.Statuses {
		parts = append(parts, fmt.Sprintf("status %-9s %s → +%s", s.Status, s.ID, s.RecipientID))
	}
	for _, m := range cb.Messages {
		parts = append(parts, fmt.Sprintf("message from +%s: %q (id %s)", m.From, m.Text.Body, m.ID))
	}
	if len(parts) == 0 {
		return []string{string(body)}
	}
	return parts
}

// rest is a minimal client of bizapi's REST API.
type rest struct {
	base  string
	token string
	hc    http.Client
}

func (r *rest) do(ctx context.Context, method, path string, in, out any, user, pass string) (int, error) {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if user != "" {
		req.SetBasicAuth(user, pass)
	} else if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil && len(b) > 0 {
		return resp.StatusCode, json.Unmarshal(b, out)
	}
	return resp.StatusCode, nil
}

// login logs in as admin: on the first run with the default password, choosing pass; later with pass.
func (r *rest) login(ctx context.Context, pass string) (string, error) {
	var res struct {
		Users []struct{ Token string } `json:"users"`
	}
	_, err := r.do(ctx, "POST", "/v1/users/login", nil, &res, "admin", pass)
	if err != nil {
		// First run: the default password must be changed at the first login.
		if _, err2 := r.do(ctx, "POST", "/v1/users/login", map[string]string{"new_password": pass}, &res, "admin", "secret"); err2 != nil {
			return "", fmt.Errorf("logging in to bizapi as admin: %v (and with the default password: %v)", err, err2)
		}
	}
	if len(res.Users) == 0 || res.Users[0].Token == "" {
		return "", errors.New("bizapi's login answered without a token")
	}
	r.token = res.Users[0].Token
	return r.token, nil
}

// register registers the business number (reading the code from chatd's dev code file).
func (r *rest) register(ctx context.Context, num, cert, chatdDir string) error {
	// The API takes the country code apart; any split of the digits joins back to the same number.
	status, err := r.do(ctx, "POST", "/v1/account", map[string]string{
		"cc": num[:1], "phone_number": num[1:], "method": "sms", "cert": cert,
	}, nil, "", "")
	if err != nil {
		return fmt.Errorf("registering +%s: %w", num, err)
	}
	if status == http.StatusCreated {
		return nil // registered on an earlier run
	}
	code, err := os.ReadFile(regapi.DevCodeFile(chatdDir, num))
	if err != nil {
		return fmt.Errorf("reading the verification code: %w", err)
	}
	if _, err := r.do(ctx, "POST", "/v1/account/verify", map[string]string{"code": strings.TrimSpace(string(code))}, nil, "", ""); err != nil {
		return fmt.Errorf("verifying +%s: %w", num, err)
	}
	return nil
}

func (r *rest) waitConnected(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		var h struct {
			Health struct {
				GatewayStatus string `json:"gateway_status"`
			} `json:"health"`
		}
		if _, err := r.do(ctx, "GET", "/v1/health", nil, &h, "", ""); err == nil {
			if last = h.Health.GatewayStatus; last == "connected" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("bizapi did not connect to chatd within 30 s (gateway_status %q)", last)
}

// customer is the demo customer: it reads every message and answers "echo: <text>".
type customer struct {
	cli    *client.Client
	p      *printer
	work   chan *chatdpb.Message
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startCustomer(ctx context.Context, n *node.Node, num, dir string, p *printer) (*customer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	dev, _, err := pki.LoadOrCreateStaticKey(filepath.Join(dir, "device.key"))
	if err != nil {
		return nil, err
	}
	// Register the customer over chatd's HTTPS API unless this device is registered already.
	if a, err := n.Store.AccountByDevice(ctx, dev.Public[:]); err != nil || a.Phone != num {
		roots, err := regclient.LoadCAFile(n.CAFile)
		if err != nil {
			return nil, err
		}
		rc := regclient.New(n.HTTPSURL, roots)
		if _, err := rc.RequestCode(ctx, regtypes.CodeRequest{Phone: num, Method: "sms"}); err != nil {
			return nil, fmt.Errorf("registering the demo customer: %w", err)
		}
		code, err := os.ReadFile(regapi.DevCodeFile(filepath.Join(filepath.Dir(dir), "chatd"), num))
		if err != nil {
			return nil, err
		}
		if _, err := rc.Verify(ctx, regtypes.VerifyRequest{Phone: num, Code: strings.TrimSpace(string(code)),
			DevicePublicKey: base64.StdEncoding.EncodeToString(dev.Public[:])}); err != nil {
			return nil, fmt.Errorf("verifying the demo customer: %w", err)
		}
	}
	c := &customer{p: p, work: make(chan *chatdpb.Message, 1024)}
	cli, err := client.New(client.Config{
		Addrs: []string{n.ChatAddr.String()}, ServerKey: n.ServerKey, DeviceKey: dev,
		Handler: c, ClientVersion: "quickstart-customer", Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, err
	}
	c.cli = cli
	cctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(2)
	go func() { defer c.wg.Done(); cli.Run(cctx) }()
	go func() { defer c.wg.Done(); c.answer(cctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := cli.WaitConnected(wctx); err != nil {
		c.stop()
		return nil, fmt.Errorf("the demo customer could not connect: %w", err)
	}
	return c, nil
}

func (c *customer) stop() {
	c.cancel()
	c.wg.Wait()
}

// HandleMessage hands the message to the answering goroutine (a Handler must not wait for the
// client's own requests).
func (c *customer) HandleMessage(ctx context.Context, m *chatdpb.Message) error {
	select {
	case c.work <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *customer) HandleReceipt(context.Context, *chatdpb.Receipt) error { return nil }

func (c *customer) answer(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-c.work:
			b, err := content.Parse(m.GetContent())
			text := b.Text
			if err != nil || b.Type != "text" {
				text = "[not a text message]"
			}
			c.p.printf("customer got from +%s: %q\n", m.GetFrom(), text)
			if err := c.cli.MarkRead(ctx, m.GetServerId()); err != nil {
				continue
			}
			if strings.HasPrefix(text, "echo: ") {
				continue
			}
			// The client id makes the answer idempotent if the message is delivered again.
			id := fmt.Sprintf("echo-%d", m.GetServerId())
			if _, err := c.cli.Send(ctx, m.GetFrom(), id, content.Text("echo: "+text)); err != nil && ctx.Err() == nil {
				c.p.printf("customer could not answer: %v\n", err)
			}
		}
	}
}
