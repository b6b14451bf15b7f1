package lab

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/client/regclient"
	"github.com/chatd-dev/chatd/content"
	"github.com/chatd-dev/chatd/internal/netlab"
	"github.com/chatd-dev/chatd/internal/testutil"
	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
	"github.com/chatd-dev/chatd/transport"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

var chatdBin, bizapiBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chatd-lab")
	if err != nil {
		panic(err)
	}
	chatdBin, bizapiBin = filepath.Join(dir, "chatd"), filepath.Join(dir, "bizapi")
	for bin, pkg := range map[string]string{chatdBin: "../cmd/chatd", bizapiBin: "../cmd/bizapi"} {
		if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is chatd running in the lab's server host, published at netlab.ServerAddr: raw chatd on
// 5222, TLS and WebSocket (and raw chatd) on 443.
type server struct {
	t    testing.TB
	l    *netlab.Lab
	p    *netlab.Proc
	args []string
	data string
	pool *x509.CertPool
	key  [32]byte
	cc   regtypes.ClientConfig
	eps  []transport.Endpoint
}

func startChatd(t testing.TB, l *netlab.Lab, extra ...string) *server {
	t.Helper()
	s := &server{t: t, l: l, data: t.TempDir()}
	s.args = append([]string{"serve", "--dev", "--data", s.data,
		"--chat-listen", netlab.ServerAddr + ":5222", "--https-listen", netlab.ServerAddr + ":443",
		"--admin-listen", "127.0.0.1:9480", "--public-host", netlab.ServerAddr, "--log-level", "debug"}, extra...)
	s.start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("chatd log:\n%s", tail(s.p.Output(), 60))
		}
	})
	pem, err := os.ReadFile(filepath.Join(s.data, "tls", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	s.pool = x509.NewCertPool()
	s.pool.AppendCertsFromPEM(pem)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s.cc, err = s.reg(l.Server, nil).Config(ctx); err != nil {
		t.Fatal(err)
	}
	if s.key, s.eps, err = regclient.ParseConfig(s.cc); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *server) start() {
	s.t.Helper()
	s.p = s.l.Server.Start(chatdBin, s.args...)
	s.l.Server.WaitListening(s.p, netlab.ServerAddr+":443", 20*time.Second)
	s.l.Server.WaitListening(s.p, netlab.ServerAddr+":5222", 5*time.Second)
}

// restart kills chatd with SIGKILL and starts it again.
func (s *server) restart() {
	s.p.Kill()
	s.start()
}

// reg is a registration client that dials from h, through proxy if set.
func (s *server) reg(h *netlab.Host, proxy transport.ProxyFunc) *regclient.Client {
	rc := regclient.NewWithProxy(s.cc.HTTPSURL, s.pool, proxy)
	if rc.BaseURL == "" {
		rc.BaseURL = "https://" + netlab.ServerAddr
	}
	rc.HTTPClient.Transport.(*http.Transport).DialContext = h.DialContext
	return rc
}

// register registers phone through rc with a fresh device key, reading the code the dev sender wrote.
func (s *server) register(rc *regclient.Client, phone string) noisesock.Keypair {
	t := s.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cr, err := rc.RequestCode(ctx, regtypes.CodeRequest{Phone: phone, Method: "sms"})
	if err != nil {
		t.Fatal(err)
	}
	code, err := os.ReadFile(filepath.Join(s.data, "codes", cr.Phone))
	if err != nil {
		t.Fatal(err)
	}
	dev, err := pki.GenerateStaticKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Verify(ctx, regtypes.VerifyRequest{Phone: phone, Code: strings.TrimSpace(string(code)),
		DevicePublicKey: base64.StdEncoding.EncodeToString(dev.Public[:])}); err != nil {
		t.Fatal(err)
	}
	return dev
}

// account is a registered client running in a lab host.
type account struct {
	*client.Client
	phone string
	box   *inbox
	log   *testutil.Buffer
}

// newAccount registers phone (from the server host, untouched by faults) and runs a client for it in
// host h with the published endpoints; edit may change the config. The client stops with the test.
func (s *server) newAccount(h *netlab.Host, phone string, edit func(*client.Config)) *account {
	t := s.t
	t.Helper()
	dev := s.register(s.reg(s.l.Server, nil), phone)
	return s.runAccount(h, phone, dev, edit)
}

func (s *server) runAccount(h *netlab.Host, phone string, dev noisesock.Keypair, edit func(*client.Config)) *account {
	t := s.t
	t.Helper()
	a := &account{phone: phone, box: newInbox(), log: new(testutil.Buffer)}
	cfg := client.Config{
		Endpoints:     s.eps,
		RootCAs:       s.pool,
		ServerKey:     s.key,
		DeviceKey:     dev,
		Handler:       a.box,
		Dial:          h.DialContext,
		ClientVersion: "lab/1",
		Logger:        slog.New(slog.NewTextHandler(a.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.Client = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("client %s log:\n%s", phone, tail(a.log.String(), 60))
		}
	})
	return a
}

// waitConnected waits until a is logged in.
func (a *account) waitConnected(t *testing.T, timeout time.Duration) client.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := a.WaitConnected(ctx); err != nil {
		t.Fatalf("%s not connected within %v: %+v", a.phone, timeout, a.Status())
	}
	return a.Status()
}

// waitStatus polls a's status until cond holds, and returns the time it took.
func (a *account) waitStatus(t *testing.T, timeout time.Duration, what string, cond func(client.Status) bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond(a.Status()) {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not %s within %v; status %+v", a.phone, what, timeout, a.Status())
		}
		time.Sleep(5 * time.Millisecond) // polling the client's state
	}
	return time.Since(start)
}

// inbox records deliveries; a second delivery of a server id is a duplicate.
type inbox struct {
	mu      sync.Mutex
	byID    map[uint64]string
	bodies  map[string]int
	dups    int
	changed chan struct{}
}

func newInbox() *inbox {
	return &inbox{byID: map[uint64]string{}, bodies: map[string]int{}, changed: make(chan struct{}, 1)}
}

func (b *inbox) HandleMessage(_ context.Context, m *chatdpb.Message) error {
	b.mu.Lock()
	if _, ok := b.byID[m.GetServerId()]; ok {
		b.dups++
	} else {
		body := string(m.GetContent().GetBody())
		b.byID[m.GetServerId()] = body
		b.bodies[body]++
	}
	b.mu.Unlock()
	select {
	case b.changed <- struct{}{}:
	default:
	}
	return nil
}

func (b *inbox) HandleReceipt(context.Context, *chatdpb.Receipt) error { return nil }

// count returns the distinct messages received, the duplicate deliveries, and the number of distinct
// bodies that arrived more than once under different server ids.
func (b *inbox) count() (n, dups, twice int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.bodies {
		if c > 1 {
			twice++
		}
	}
	return len(b.byID), b.dups, twice
}

// waitCount waits until n distinct messages arrived.
func (b *inbox) waitCount(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if got, _, _ := b.count(); got >= n {
			return
		}
		select {
		case <-b.changed:
		case <-deadline.C:
			got, dups, _ := b.count()
			t.Fatalf("received %d of %d messages within %v (%d duplicates)", got, n, timeout, dups)
		}
	}
}

func text(s string) *chatdpb.Content { return content.Text(s) }

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
