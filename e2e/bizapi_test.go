package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/content"
	"github.com/chatd-dev/chatd/internal/testutil"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/node"
	"github.com/chatd-dev/chatd/server/node/nodetest"
	"github.com/chatd-dev/chatd/server/regapi"
	serverstore "github.com/chatd-dev/chatd/server/store"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

const (
	bizPhone      = "15550500001"
	custPhone     = "15550500002"
	adminPassword = "E2e-Passw0rd!"
)

// hookReceiver is a webhook receiver that records callbacks and can refuse them for a while.
type hookReceiver struct {
	*httptest.Server
	refuse  atomic.Int32 // answer 500 to this many requests
	mu      sync.Mutex
	bodies  []string
	changed chan struct{}
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{changed: make(chan struct{}, 1)}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if h.refuse.Add(-1) >= 0 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		h.mu.Lock()
		h.bodies = append(h.bodies, string(b))
		h.mu.Unlock()
		select {
		case h.changed <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(h.Close)
	return h
}

// count returns how many recorded callbacks contain every one of subs.
func (h *hookReceiver) count(subs ...string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
outer:
	for _, b := range h.bodies {
		for _, s := range subs {
			if !strings.Contains(b, s) {
				continue outer
			}
		}
		n++
	}
	return n
}

func (h *hookReceiver) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for !cond() {
		select {
		case <-h.changed:
		case <-deadline:
			t.Fatalf("timed out waiting for webhooks: %s", what)
		}
	}
}

var bizapiBin string

func buildBizapi(t testing.TB) string {
	t.Helper()
	if bizapiBin == "" {
		bizapiBin = filepath.Join(filepath.Dir(chatdBin), "bizapi")
		if out, err := exec.Command("go", "build", "-o", bizapiBin, "../cmd/bizapi").CombinedOutput(); err != nil {
			t.Fatalf("building bizapi: %v\n%s", err, out)
		}
	}
	return bizapiBin
}

// bizapiProc is a bizapi process that can be killed and started again on the same data and port.
type bizapiProc struct {
	t      testing.TB
	args   []string
	base   string
	cmd    *exec.Cmd
	log    *bytes.Buffer
	exited chan struct{}
	rest   testutil.REST // Base is the REST API's URL
}

func startBizapi(t *testing.T, n *node.Node, hookURL string) *bizapiProc {
	t.Helper()
	port := freePort(t)
	b := &bizapiProc{t: t, rest: testutil.REST{Base: "http://127.0.0.1:" + strconv.Itoa(port), HTTP: &http.Client{}}, args: []string{"serve",
		"--data", t.TempDir(), "--listen", "127.0.0.1:" + strconv.Itoa(port),
		"--server", n.HTTPSURL, "--server-ca", n.CAFile, "--webhook-url", hookURL, "--log-level", "debug"}}
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *bizapiProc) start() {
	t := b.t
	t.Helper()
	b.log = new(bytes.Buffer)
	b.cmd = exec.Command(buildBizapi(t), b.args...)
	b.cmd.Stdout, b.cmd.Stderr = b.log, b.log
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.exited = make(chan struct{})
	go func() { b.cmd.Wait(); close(b.exited) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(b.rest.Base + "/v1/health")
		if err == nil {
			resp.Body.Close()
			return
		}
		select {
		case <-b.exited:
			t.Fatalf("bizapi exited at start:\n%s", b.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("bizapi not ready:\n%s", b.log)
		}
		time.Sleep(20 * time.Millisecond) // polling a starting process
	}
}

func (b *bizapiProc) kill() {
	b.cmd.Process.Kill()
	<-b.exited
}

func (b *bizapiProc) stop() {
	select {
	case <-b.exited:
		return
	default:
	}
	b.cmd.Process.Signal(os.Interrupt)
	select {
	case <-b.exited:
	case <-time.After(10 * time.Second):
		b.t.Errorf("bizapi did not stop on SIGINT:\n%s", b.log)
		b.kill()
	}
}

// call does a REST request with the bearer token (testutil.REST.Call).
func (b *bizapiProc) call(method, path string, in, out any) (int, error) {
	return b.rest.Call(method, path, in, out)
}

// setup logs in (changing the default password) and registers the business number.
func (b *bizapiProc) setup(n *node.Node, chatdData string) {
	t := b.t
	t.Helper()
	var login struct {
		Users []struct{ Token string } `json:"users"`
	}
	if st, err := b.rest.CallBasic("admin", "secret", "POST", "/v1/users/login", map[string]string{"new_password": adminPassword}, &login); err != nil || st != 200 || len(login.Users) != 1 {
		t.Fatalf("login: %d %v", st, err)
	}
	b.rest.Token = login.Users[0].Token

	key, _, err := pki.LoadOrCreateOperatorKey(filepath.Join(chatdData, node.OperatorKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := pki.IssueBusinessCert(key, pki.BusinessCert{Phone: bizPhone, DisplayName: "E2E Shop"})
	if status, err := b.call("POST", "/v1/account", map[string]string{"cc": "1", "phone_number": bizPhone[1:], "method": "sms", "cert": cert}, nil); err != nil || status != 202 {
		t.Fatalf("POST /v1/account: %d %v", status, err)
	}
	code, err := os.ReadFile(regapi.DevCodeFile(chatdData, bizPhone))
	if err != nil {
		t.Fatal(err)
	}
	if status, err := b.call("POST", "/v1/account/verify", map[string]string{"code": strings.TrimSpace(string(code))}, nil); err != nil || status != 201 {
		t.Fatalf("verify: %d %v", status, err)
	}
	b.waitConnected()
}

func (b *bizapiProc) waitConnected() {
	b.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var h struct {
			Health struct {
				GatewayStatus string `json:"gateway_status"`
			} `json:"health"`
		}
		if _, err := b.call("GET", "/v1/health", nil, &h); err == nil && h.Health.GatewayStatus == "connected" {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("bizapi not connected:\n%s", b.log)
		}
		time.Sleep(20 * time.Millisecond) // polling health
	}
}

func (b *bizapiProc) send(body string) (string, error) {
	var res struct {
		Messages []struct{ ID string } `json:"messages"`
	}
	if _, err := b.call("POST", "/v1/messages", map[string]any{"to": custPhone, "type": "text", "text": map[string]string{"body": body}}, &res); err != nil {
		return "", err
	}
	return res.Messages[0].ID, nil
}

// shopper is the customer: it records what arrives (by body) and marks everything read.
type shopper struct {
	*client.Client
	mu     sync.Mutex
	bodies map[string]int
	ids    []uint64
	reads  map[uint64]bool
	work   chan uint64
}

func (s *shopper) HandleMessage(_ context.Context, m *chatdpb.Message) error {
	b, _ := content.Parse(m.GetContent())
	s.mu.Lock()
	s.bodies[b.Text]++
	s.ids = append(s.ids, m.GetServerId())
	s.mu.Unlock()
	return nil
}

func (s *shopper) HandleReceipt(_ context.Context, r *chatdpb.Receipt) error {
	if r.GetType() == chatdpb.Receipt_READ {
		s.mu.Lock()
		s.reads[r.GetServerId()] = true
		s.mu.Unlock()
	}
	return nil
}

func startShopper(t testing.TB, n *node.Node) *shopper {
	t.Helper()
	dev, _ := pki.GenerateStaticKey()
	if _, err := n.Store.RegisterDevice(context.Background(), serverstore.Account{Phone: custPhone, DevicePub: dev.Public[:]}); err != nil {
		t.Fatal(err)
	}
	s := &shopper{bodies: map[string]int{}, reads: map[uint64]bool{}}
	cli, err := client.New(client.Config{Addrs: []string{n.ChatAddr.String()}, ServerKey: n.ServerKey, DeviceKey: dev, Handler: s})
	if err != nil {
		t.Fatal(err)
	}
	s.Client = cli
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { cli.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := cli.WaitConnected(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	return s
}

func startNode(t testing.TB) (*node.Node, string) {
	t.Helper()
	data := t.TempDir()
	return nodetest.Start(t, node.Config{DataDir: data}), data
}

// TestBizapiRESTRoundTrip: a message sent through the REST API reaches the customer, its sent,
// delivered and read statuses arrive as webhooks; the customer's answer arrives as a messages webhook;
// PUT /v1/messages/{id} sends a read receipt; a webhook receiver that fails for a while loses nothing.
func TestBizapiRESTRoundTrip(t *testing.T) {
	n, chatdData := startNode(t)
	hooks := newHookReceiver(t)
	b := startBizapi(t, n, hooks.URL)
	b.setup(n, chatdData)
	cust := startShopper(t, n)
	if _, err := b.call("PATCH", "/v1/settings/application", map[string]any{"webhooks": map[string]any{"message": map[string]bool{"read": true}}}, nil); err != nil {
		t.Fatal(err)
	}

	hooks.refuse.Store(3) // the receiver is broken for its next three requests
	id, err := b.send("hello from the shop")
	if err != nil {
		t.Fatal(err)
	}
	var serverID uint64
	deadline := time.Now().Add(10 * time.Second)
	for serverID == 0 {
		cust.mu.Lock()
		if cust.bodies["hello from the shop"] == 1 {
			serverID = cust.ids[0]
		}
		cust.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("the customer did not get the message")
		}
		time.Sleep(5 * time.Millisecond) // polling the recorder
	}
	if err := cust.MarkRead(ctxFor(t, 10*time.Second), serverID); err != nil {
		t.Fatal(err)
	}
	for _, st := range []string{"sent", "delivered", "read"} {
		hooks.waitFor(t, st+" status", func() bool { return hooks.count(`"id":"`+id+`"`, `"status":"`+st+`"`) == 1 })
	}

	// The customer answers; bizapi posts it as a messages webhook with the contact.
	reply, err := cust.Send(ctxFor(t, 10*time.Second), bizPhone, "", content.Text("thanks!"))
	if err != nil {
		t.Fatal(err)
	}
	hooks.waitFor(t, "inbound message", func() bool {
		return hooks.count(`"messages"`, `"from":"`+custPhone+`"`, `"body":"thanks!"`, `"wa_id":"`+custPhone+`"`) == 1
	})
	hooks.mu.Lock()
	var inboundID string
	for _, body := range hooks.bodies {
		var p struct {
			Messages []struct{ ID string } `json:"messages"`
		}
		if json.Unmarshal([]byte(body), &p) == nil && len(p.Messages) == 1 {
			inboundID = p.Messages[0].ID
		}
	}
	hooks.mu.Unlock()
	if _, err := b.call("PUT", "/v1/messages/"+inboundID, map[string]string{"status": "read"}, nil); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		cust.mu.Lock()
		ok := cust.reads[reply.ServerID]
		cust.mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the customer got no read receipt for its answer")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if refused := hooks.refuse.Load(); refused > 0 {
		t.Fatalf("the receiver's failures were never exercised (%d left)", refused)
	}
}

// TestBizapiSIGKILLLosesNothing kills bizapi with SIGKILL while messages are being posted: every
// message that POST /v1/messages accepted reaches the customer exactly once after the restart, and
// gets its sent webhook.
func TestBizapiSIGKILLLosesNothing(t *testing.T) {
	n, chatdData := startNode(t)
	hooks := newHookReceiver(t)
	b := startBizapi(t, n, hooks.URL)
	b.setup(n, chatdData)
	cust := startShopper(t, n)

	const total = 600
	var mu sync.Mutex
	accepted := map[string]string{} // body → id
	post := func(from, to int) {
		var wg sync.WaitGroup
		for w := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := from + w; i < to; i += 6 {
					body := fmt.Sprint("order ", i)
					if id, err := b.send(body); err == nil {
						mu.Lock()
						accepted[body] = id
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
	}
	// Kill bizapi while the first half is being posted.
	done := make(chan struct{})
	go func() { post(0, total/2); close(done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		k := len(accepted)
		mu.Unlock()
		if k >= total/6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("posting did not start")
		}
		time.Sleep(time.Millisecond)
	}
	b.kill()
	<-done
	b.start()
	b.waitConnected()
	post(total/2, total)

	mu.Lock()
	want := len(accepted)
	mu.Unlock()
	if want < total/2 {
		t.Fatalf("only %d of %d posts accepted", want, total)
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		cust.mu.Lock()
		got := 0
		for body := range accepted {
			if cust.bodies[body] > 0 {
				got++
			}
		}
		cust.mu.Unlock()
		if got == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the customer got %d of %d accepted messages", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cust.mu.Lock()
	for body, c := range cust.bodies {
		if c != 1 {
			t.Errorf("%q arrived %d times", body, c)
		}
	}
	cust.mu.Unlock()
	for body, id := range accepted {
		hooks.waitFor(t, "sent status of "+body, func() bool { return hooks.count(`"id":"`+id+`"`, `"status":"sent"`) >= 1 }) // at-least-once: a kill between a 2xx and its delete resends
	}
}
