package lab

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/content"
	"github.com/chatd-dev/chatd/internal/labchatd"
	"github.com/chatd-dev/chatd/internal/netlab"
	"github.com/chatd-dev/chatd/internal/testutil"
	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

var chatdBin, bizapiBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chatd-lab")
	if err != nil {
		panic(err)
	}
	for bin, name := range map[*string]string{&chatdBin: "chatd", &bizapiBin: "bizapi"} {
		if *bin, err = labchatd.Build(dir, name); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is chatd running in the lab's server host (labchatd: published at netlab.ServerAddr, raw
// chatd on 5222, TLS and WebSocket (and raw chatd) on 443), with the test's accounts.
type server struct {
	*labchatd.Server
	t testing.TB
}

func startChatd(t testing.TB, l *netlab.Lab, extra ...string) *server {
	t.Helper()
	return &server{labchatd.Start(t, l, chatdBin, extra...), t}
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
	dev := s.Register(s.Reg(s.Lab.Server, nil), phone)
	return s.runAccount(h, phone, dev, edit)
}

func (s *server) runAccount(h *netlab.Host, phone string, dev noisesock.Keypair, edit func(*client.Config)) *account {
	t := s.t
	t.Helper()
	a := &account{phone: phone, box: newInbox(), log: new(testutil.Buffer)}
	cfg := s.ClientConfig(h, dev)
	cfg.Handler = a.box
	cfg.ClientVersion = "lab/1"
	cfg.Logger = slog.New(slog.NewTextHandler(a.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
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
			t.Logf("client %s log:\n%s", phone, netlab.Tail(a.log.String(), 60))
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
