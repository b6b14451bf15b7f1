package gateway_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/bizapi/gateway"
	"github.com/chatd-dev/chatd/bizapi/store"
	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/content"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/node"
	"github.com/chatd-dev/chatd/server/node/nodetest"
	"github.com/chatd-dev/chatd/server/regapi"
	serverstore "github.com/chatd-dev/chatd/server/store"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

const (
	bizPhone  = "15550400001"
	custPhone = "15550400002"
)

type env struct {
	t      *testing.T
	chatd  *node.Node
	data   string
	dbPath string
	st     store.Store
	gw     *gateway.Gateway
	cancel context.CancelFunc
	done   chan error
}

func startChatd(t *testing.T) (*node.Node, string) {
	t.Helper()
	data := t.TempDir()
	return nodetest.Start(t, node.Config{DataDir: data}), data
}

func newEnv(t *testing.T) *env {
	t.Helper()
	n, data := startChatd(t)
	e := &env{t: t, chatd: n, data: data, dbPath: filepath.Join(t.TempDir(), "bizapi.db")}
	e.openGateway(n.HTTPSURL)
	return e
}

// openGateway starts a gateway on e.dbPath that reaches chatd's HTTPS API at serverURL; opts adjust
// its configuration.
func (e *env) openGateway(serverURL string, opts ...func(*gateway.Config)) {
	t := e.t
	t.Helper()
	st, err := store.Open(e.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(e.chatd.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := gateway.Config{
		Store: st, ServerURL: serverURL, RootCAs: pool,
		WantStatus: func(string) bool { return true },
		Client: func(c *client.Config) {
			c.MinBackoff, c.MaxBackoff = 10*time.Millisecond, 200*time.Millisecond
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.st, e.gw, e.cancel, e.done = st, gw, cancel, make(chan error, 1)
	go func() { e.done <- gw.Run(ctx) }()
	t.Cleanup(e.stop)
}

func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	<-e.done
	e.st.Close()
	e.cancel = nil
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

func (e *env) cert(phone, name string) string {
	key, _, err := pki.LoadOrCreateOperatorKey(filepath.Join(e.data, node.OperatorKeyFile))
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := pki.IssueBusinessCert(key, pki.BusinessCert{Phone: phone, DisplayName: name})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// register runs POST /v1/account and /v1/account/verify through the gateway.
func (e *env) register() {
	e.t.Helper()
	e.registerAs(bizPhone)
}

// registerAs registers phone (E.164 digits of a +1 number) with e's chatd.
func (e *env) registerAs(phone string) {
	t := e.t
	t.Helper()
	res, err := e.gw.Register(e.ctx(), gateway.RegisterRequest{CC: "1", PhoneNumber: phone[1:], Method: "sms", Cert: e.cert(phone, "Acme")})
	if err != nil {
		t.Fatal(err)
	}
	if res.AlreadyRegistered || res.VName != "Acme" {
		t.Fatalf("register: %+v", res)
	}
	code, err := os.ReadFile(regapi.DevCodeFile(e.data, phone))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.gw.Verify(e.ctx(), "000000"); err == nil {
		t.Fatal("a wrong code was accepted")
	} else {
		var re *gateway.RegistrationError
		if !errors.As(err, &re) || re.Code != "wrong_code" {
			t.Fatalf("wrong code: %v", err)
		}
	}
	if err := e.gw.Verify(e.ctx(), strings.TrimSpace(string(code))); err != nil {
		t.Fatal(err)
	}
	e.waitConnected()
}

func (e *env) waitConnected() {
	e.t.Helper()
	waitUntil(e.t, "gateway connected", func() bool { return e.gw.Health().GatewayStatus == gateway.StatusConnected })
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling state that offers nothing to wait on
	}
}

// customer is an end user on chatd.
type customer struct {
	*client.Client
	mu       sync.Mutex
	msgs     []*chatdpb.Message
	receipts []*chatdpb.Receipt
}

func (c *customer) HandleMessage(_ context.Context, m *chatdpb.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs = append(c.msgs, m)
	return nil
}

func (c *customer) HandleReceipt(_ context.Context, r *chatdpb.Receipt) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.receipts = append(c.receipts, r)
	return nil
}

func (e *env) customer() *customer {
	t := e.t
	dev, _ := pki.GenerateStaticKey()
	if _, err := e.chatd.Store.RegisterDevice(context.Background(), serverstore.Account{Phone: custPhone, DevicePub: dev.Public[:]}); err != nil {
		t.Fatal(err)
	}
	c := &customer{}
	cli, err := client.New(client.Config{Addrs: []string{e.chatd.ChatAddr.String()}, ServerKey: e.chatd.ServerKey, DeviceKey: dev, Handler: c})
	if err != nil {
		t.Fatal(err)
	}
	c.Client = cli
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { cli.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := cli.WaitConnected(e.ctx()); err != nil {
		t.Fatal(err)
	}
	return c
}

// callbacks returns the payloads of all queued callbacks.
func (e *env) callbacks() []string {
	cbs, err := e.st.DueCallbacks(context.Background(), time.Now().Add(time.Hour), 1000, store.CallbackKey{})
	if err != nil {
		e.t.Fatal(err)
	}
	out := make([]string, len(cbs))
	for i, cb := range cbs {
		out[i] = string(cb.Payload)
	}
	return out
}

func (e *env) hasCallback(sub string) bool {
	for _, cb := range e.callbacks() {
		if strings.Contains(cb, sub) {
			return true
		}
	}
	return false
}

func TestSendStatusesAndCallbacks(t *testing.T) {
	e := newEnv(t)
	if h := e.gw.Health(); h.GatewayStatus != gateway.StatusUnregistered && h.GatewayStatus != gateway.StatusUninitialized {
		t.Fatalf("before registration: %+v", h)
	}
	e.register()
	cust := e.customer()

	if err := e.st.AddMessage(e.ctx(), store.Message{ID: "gBEGtest1", To: custPhone, Body: "hello customer", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	e.gw.WakeOutbox()
	waitUntil(t, "the customer to receive it", func() bool { cust.mu.Lock(); defer cust.mu.Unlock(); return len(cust.msgs) == 1 })
	cust.mu.Lock()
	m := cust.msgs[0]
	cust.mu.Unlock()
	if b, _ := content.Parse(m.GetContent()); b.Text != "hello customer" || m.GetFrom() != bizPhone || !m.GetFromBusiness() {
		t.Fatalf("customer got %v", m)
	}
	waitUntil(t, "delivered", func() bool {
		msg, err := e.st.Message(context.Background(), "gBEGtest1")
		return err == nil && msg.Status == store.StatusDelivered
	})
	if err := cust.MarkRead(e.ctx(), m.GetServerId()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "read", func() bool {
		msg, err := e.st.Message(context.Background(), "gBEGtest1")
		return err == nil && msg.Status == store.StatusRead && msg.ServerID == m.GetServerId()
	})
	for _, st := range []string{"sent", "delivered", "read"} {
		if !e.hasCallback(`"status":"` + st + `"`) {
			t.Errorf("no %s callback in %v", st, e.callbacks())
		}
	}

	// Unknown recipient: failed with an On-Premises error and a callback.
	e.st.AddMessage(e.ctx(), store.Message{ID: "gBEGnobody", To: "15559999999", Body: "x", CreatedAt: time.Now()})
	e.gw.WakeOutbox()
	waitUntil(t, "failed", func() bool {
		msg, err := e.st.Message(context.Background(), "gBEGnobody")
		return err == nil && msg.Status == store.StatusFailed && msg.Error != nil && msg.Error.Code == 1013
	})
	if !e.hasCallback(`"status":"failed"`) {
		t.Errorf("no failed callback")
	}

	// Lookup through chatd.
	res, err := e.gw.Lookup(e.ctx(), []string{"+" + custPhone, "15559999999"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Status != "valid" || res[0].WaID != custPhone || res[1].Status != "invalid" {
		t.Fatalf("lookup %+v", res)
	}
}

func TestInboundStoredThenReadReceipt(t *testing.T) {
	e := newEnv(t)
	e.register()
	cust := e.customer()
	sent, err := cust.Send(e.ctx(), bizPhone, "", content.Text("hi business"))
	if err != nil {
		t.Fatal(err)
	}
	id := gateway.InboundID(sent.ServerID)
	waitUntil(t, "inbound stored", func() bool {
		_, err := e.st.Inbound(context.Background(), id)
		return err == nil
	})
	in, _ := e.st.Inbound(context.Background(), id)
	if in.From != custPhone || in.Body != "hi business" || in.Type != "text" {
		t.Fatalf("inbound %+v", in)
	}
	var payload struct {
		Contacts []struct {
			WaID string `json:"wa_id"`
		} `json:"contacts"`
		Messages []struct {
			ID, From, Type string
			Text           struct{ Body string }
		} `json:"messages"`
	}
	found := false
	for _, cb := range e.callbacks() {
		if json.Unmarshal([]byte(cb), &payload) == nil && len(payload.Messages) == 1 && payload.Messages[0].ID == id {
			found = payload.Messages[0].Text.Body == "hi business" && payload.Contacts[0].WaID == custPhone
		}
	}
	if !found {
		t.Fatalf("no inbound callback for %s in %v", id, e.callbacks())
	}
	// The customer sees delivered (bizapi acked after storing), then read once requested.
	if _, err := e.st.RequestRead(e.ctx(), id); err != nil {
		t.Fatal(err)
	}
	e.gw.WakeReads()
	waitUntil(t, "read receipt at the customer", func() bool {
		cust.mu.Lock()
		defer cust.mu.Unlock()
		for _, r := range cust.receipts {
			if r.GetType() == chatdpb.Receipt_READ && r.GetServerId() == sent.ServerID {
				return true
			}
		}
		return false
	})
	waitUntil(t, "read receipt recorded as sent", func() bool {
		p, err := e.st.ReadPending(context.Background(), 10)
		return err == nil && len(p) == 0
	})
}

func TestAlreadyRegisteredAndRestart(t *testing.T) {
	e := newEnv(t)
	e.register()
	res, err := e.gw.Register(e.ctx(), gateway.RegisterRequest{CC: "1", PhoneNumber: bizPhone[1:], Cert: e.cert(bizPhone, "Acme")})
	if err != nil || !res.AlreadyRegistered {
		t.Fatalf("second register: %+v %v", res, err)
	}
	cust := e.customer()

	// A message accepted while the gateway is down goes out once it runs again.
	e.stop()
	st, err := store.Open(e.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AddMessage(context.Background(), store.Message{ID: "gBEGwhiledown", To: custPhone, Body: "queued", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	e.openGateway(e.chatd.HTTPSURL)
	waitUntil(t, "the queued message", func() bool { cust.mu.Lock(); defer cust.mu.Unlock(); return len(cust.msgs) == 1 })
	e.waitConnected()
	if h := e.gw.Health(); h.Phone != bizPhone || h.Port == 0 || h.Transport != "tcp" || h.ConfigError != "" {
		t.Fatalf("health %+v", h)
	}
}

// N7: if HTTPS is unreachable at a restart, the gateway runs from its cached config and says so.
func TestHTTPSDownAtStartUsesCachedConfig(t *testing.T) {
	e := newEnv(t)
	e.register()
	e.stop()
	e.openGateway("https://127.0.0.1:1")
	e.waitConnected()
	if h := e.gw.Health(); !strings.Contains(h.ConfigError, "cached") {
		t.Fatalf("health does not report the failed config fetch: %+v", h)
	}
}

// A number registered again on another device (here: directly at chatd) stops this gateway for good:
// health says disconnected and why, and Run keeps running (it does not hang or exit).
func TestReplacedDeviceDisconnects(t *testing.T) {
	e := newEnv(t)
	e.register()
	other, _ := pki.GenerateStaticKey()
	if _, err := e.chatd.Store.RegisterDevice(context.Background(), serverstore.Account{Phone: bizPhone, Business: true, DisplayName: "Acme", DevicePub: other.Public[:]}); err != nil {
		t.Fatal(err)
	}
	e.chatd.Server.DeviceChanged(bizPhone, other.Public)
	waitUntil(t, "gateway disconnected", func() bool { return e.gw.Health().GatewayStatus == gateway.StatusDisconnected })
	if h := e.gw.Health(); !strings.Contains(h.LastError, "not registered") {
		t.Fatalf("health does not say why: %+v", h)
	}
	select {
	case err := <-e.done:
		t.Fatalf("Run returned: %v", err)
	default:
	}
}
