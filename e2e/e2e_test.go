// Package e2e holds end-to-end tests that run the real chatd binary: registration over HTTPS, message
// exchange through the client library, and chatd killed with SIGKILL in the middle of a stream.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/content"
	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

var chatdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chatd-e2e")
	if err != nil {
		panic(err)
	}
	chatdBin = filepath.Join(dir, "chatd")
	out, err := exec.Command("go", "build", "-o", chatdBin, "../cmd/chatd").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building chatd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// chatd is a chatd process with fixed ports, so that it can be killed and started again.
type chatd struct {
	t                   *testing.T
	data                string
	chatPort, httpsPort int
	cmd                 *exec.Cmd
	log                 *bytes.Buffer
	httpc               *http.Client
	serverKey           [32]byte
	exited              chan struct{}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func startChatd(t *testing.T) *chatd {
	t.Helper()
	d := &chatd{t: t, data: t.TempDir(), chatPort: freePort(t), httpsPort: freePort(t)}
	d.start()
	t.Cleanup(d.stop)
	return d
}

func (d *chatd) chatAddr() string { return "127.0.0.1:" + strconv.Itoa(d.chatPort) }

func (d *chatd) start() {
	t := d.t
	t.Helper()
	d.log = new(bytes.Buffer)
	d.cmd = exec.Command(chatdBin, "serve", "--dev", "--data", d.data,
		"--chat-listen", d.chatAddr(), "--https-listen", "127.0.0.1:"+strconv.Itoa(d.httpsPort),
		"--admin-listen", "off", "--log-level", "debug")
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.exited = make(chan struct{})
	go func() { d.cmd.Wait(); close(d.exited) }()
	// Ready when /v1/config answers over TLS verified by the dev CA.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if cfg, err := d.config(); err == nil {
			key, err := pki.ParseStaticPublic(cfg.ServerStaticKey)
			if err != nil {
				t.Fatal(err)
			}
			d.serverKey = key
			return
		}
		select {
		case <-d.exited:
			t.Fatalf("chatd exited at start:\n%s", d.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("chatd not ready:\n%s", d.log)
		}
		time.Sleep(20 * time.Millisecond) // polling a starting process
	}
}

func (d *chatd) config() (regtypes.ClientConfig, error) {
	var cfg regtypes.ClientConfig
	if d.httpc == nil {
		pem, err := os.ReadFile(filepath.Join(d.data, "tls", "ca.pem"))
		if err != nil {
			return cfg, err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		d.httpc = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	}
	err := d.call("GET", "/v1/config", nil, &cfg)
	return cfg, err
}

func (d *chatd) call(method, path string, in, out any) error {
	var body bytes.Buffer
	if in != nil {
		json.NewEncoder(&body).Encode(in)
	}
	req, _ := http.NewRequest(method, "https://localhost:"+strconv.Itoa(d.httpsPort)+path, &body)
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.httpc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e regtypes.ErrorResponse
		json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("%s %s: %d %+v", method, path, resp.StatusCode, e)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (d *chatd) kill() {
	d.cmd.Process.Kill() // SIGKILL
	<-d.exited
}

func (d *chatd) stop() {
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		d.t.Errorf("chatd did not stop on SIGINT")
		d.kill()
	}
}

// register registers phone over HTTPS with a fresh device key, reading the code the dev sender wrote.
func (d *chatd) register(phone string) noisesock.Keypair {
	t := d.t
	t.Helper()
	var cr regtypes.CodeResponse
	if err := d.call("POST", "/v1/register/code", regtypes.CodeRequest{Phone: phone, Method: "sms"}, &cr); err != nil {
		t.Fatal(err)
	}
	code, err := os.ReadFile(filepath.Join(d.data, "codes", cr.Phone))
	if err != nil {
		t.Fatal(err)
	}
	dev, err := pki.GenerateStaticKey()
	if err != nil {
		t.Fatal(err)
	}
	var vr regtypes.VerifyResponse
	if err := d.call("POST", "/v1/register/verify", regtypes.VerifyRequest{
		Phone: phone, Code: strings.TrimSpace(string(code)), DevicePublicKey: base64.StdEncoding.EncodeToString(dev.Public[:]),
	}, &vr); err != nil {
		t.Fatal(err)
	}
	if vr.Account.Phone != cr.Phone || vr.ServerStaticKey != pki.FormatPublic(d.serverKey) {
		t.Fatalf("verify response %+v", vr)
	}
	return dev
}

// inbox records deliveries; a second delivery of a server id is a duplicate.
type inbox struct {
	mu       sync.Mutex
	byID     map[uint64]string
	dups     int
	order    []string
	receipts map[string][]chatdpb.Receipt_Type // by client id
	changed  chan struct{}
}

func newInbox() *inbox {
	return &inbox{byID: map[uint64]string{}, receipts: map[string][]chatdpb.Receipt_Type{}, changed: make(chan struct{}, 1)}
}

func (b *inbox) HandleMessage(_ context.Context, m *chatdpb.Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.byID[m.GetServerId()]; ok {
		b.dups++
	}
	b.byID[m.GetServerId()] = string(m.GetContent().GetBody())
	b.order = append(b.order, string(m.GetContent().GetBody()))
	b.poke()
	return nil
}

func (b *inbox) HandleReceipt(_ context.Context, r *chatdpb.Receipt) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.receipts[r.GetClientId()] = append(b.receipts[r.GetClientId()], r.GetType())
	b.poke()
	return nil
}

func (b *inbox) poke() {
	select {
	case b.changed <- struct{}{}:
	default:
	}
}

func (b *inbox) waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		b.mu.Lock()
		ok := cond()
		b.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-b.changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (d *chatd) client(t *testing.T, dev noisesock.Keypair, h client.Handler) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{
		Addrs: []string{d.chatAddr()}, ServerKey: d.serverKey, DeviceKey: dev, Handler: h,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond, ClientVersion: "e2e",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func body(s string) *chatdpb.Content { return content.Text(s) }

// TestRegisterAndExchange: two accounts register over HTTPS, exchange messages with the recipient
// offline and then online, and the sender gets delivered and read receipts.
func TestRegisterAndExchange(t *testing.T) {
	d := startChatd(t)
	aliceKey, bobKey := d.register("+1 555 010 0001"), d.register("+15550100002")
	aliceIn := newInbox()
	alice := d.client(t, aliceKey, aliceIn)

	// Bob is offline: the messages wait in the queue.
	var ids []uint64
	for i := range 5 {
		res, err := alice.Send(ctxFor(t, 10*time.Second), "15550100002", fmt.Sprint("off", i), body(fmt.Sprint("offline ", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.ServerID)
	}
	bobIn := newInbox()
	bob := d.client(t, bobKey, bobIn)
	bobIn.waitFor(t, 10*time.Second, "offline messages", func() bool { return len(bobIn.order) == 5 })
	for i, got := range bobIn.order {
		if !strings.Contains(got, fmt.Sprint("offline ", i)) {
			t.Fatalf("message %d = %s (order broken)", i, got)
		}
	}
	// Online now: a message arrives at once.
	if _, err := alice.Send(ctxFor(t, 10*time.Second), "15550100002", "on", body("online")); err != nil {
		t.Fatal(err)
	}
	bobIn.waitFor(t, 10*time.Second, "online message", func() bool { return len(bobIn.order) == 6 })
	if err := bob.MarkRead(ctxFor(t, 10*time.Second), ids...); err != nil {
		t.Fatal(err)
	}
	aliceIn.waitFor(t, 10*time.Second, "receipts", func() bool {
		for i := range 5 {
			if r := aliceIn.receipts[fmt.Sprint("off", i)]; len(r) != 2 || r[0] != chatdpb.Receipt_DELIVERED || r[1] != chatdpb.Receipt_READ {
				return false
			}
		}
		return len(aliceIn.receipts["on"]) == 1
	})
	// And back: bob answers alice.
	if _, err := bob.Send(ctxFor(t, 10*time.Second), "15550100001", "re", body("hi alice")); err != nil {
		t.Fatal(err)
	}
	aliceIn.waitFor(t, 10*time.Second, "bob's answer", func() bool { return len(aliceIn.order) == 1 })
}

// TestSIGKILLLosesNothing kills chatd with SIGKILL twice in the middle of a stream of messages and
// restarts it: every message the server acknowledged reaches the recipient exactly once, and every
// message the sender submitted is stored exactly once (the resend after the restart is deduplicated).
func TestSIGKILLLosesNothing(t *testing.T) {
	d := startChatd(t)
	aliceKey, bobKey := d.register("+15550200001"), d.register("+15550200002")
	alice := d.client(t, aliceKey, nil)
	bobIn := newInbox()
	d.client(t, bobKey, bobIn)

	const n = 1500
	const senders = 4
	acked := make([]uint64, n) // server id per message, set when the send was acknowledged
	var wg sync.WaitGroup
	var progress sync.Mutex
	done := 0
	errs := make(chan error, senders)
	for w := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += senders {
				res, err := alice.Send(ctxFor(t, 60*time.Second), "15550200002", fmt.Sprint("k", i), body(fmt.Sprint("msg ", i)))
				if err != nil {
					errs <- fmt.Errorf("send %d: %w", i, err)
					return
				}
				progress.Lock()
				acked[i] = res.ServerID
				done++
				progress.Unlock()
			}
		}()
	}
	waitDone := func(k int) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			progress.Lock()
			ok := done >= k
			progress.Unlock()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d sends acknowledged, waiting for %d", done, k)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for _, at := range []int{n / 4, n / 2} {
		waitDone(at)
		d.kill()
		d.start()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	bobIn.waitFor(t, 60*time.Second, "every message", func() bool { return len(bobIn.byID) >= n })
	bobIn.mu.Lock()
	defer bobIn.mu.Unlock()
	if bobIn.dups != 0 {
		t.Errorf("%d duplicate deliveries", bobIn.dups)
	}
	if len(bobIn.byID) != n {
		t.Errorf("bob got %d distinct messages, want %d (a resend was stored twice)", len(bobIn.byID), n)
	}
	for i, id := range acked {
		want := fmt.Sprint("msg ", i)
		if got, ok := bobIn.byID[id]; !ok || !strings.Contains(got, want+`"`) {
			t.Fatalf("acknowledged message %d (server id %d) arrived as %q, %v", i, id, got, ok)
		}
	}
}
