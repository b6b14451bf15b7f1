package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/internal/netlab"
	"github.com/chatd-dev/chatd/internal/testutil"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/node"
	"github.com/chatd-dev/chatd/server/regapi"
)

const (
	bizPhone  = "+15550000081"
	custPhone = "15550000082"
	bizAPI    = netlab.ClientAddr + ":8080"
	hookAddr  = netlab.ClientAddr + ":9000"
)

// bizapi is the bizapi binary running in the lab's client host, with its REST API on bizAPI.
type bizapi struct {
	t    *testing.T
	p    *netlab.Proc
	rest testutil.REST
}

func startBizapi(t *testing.T, l *netlab.Lab, s *server, extra ...string) *bizapi {
	t.Helper()
	ca := filepath.Join(s.Data, "tls", "ca.pem")
	args := append([]string{"serve", "--data", t.TempDir(), "--listen", bizAPI, "--server", s.Config.HTTPSURL,
		"--server-ca", ca, "--webhook-url", "http://" + hookAddr + "/hook", "--log-level", "debug"}, extra...)
	b := &bizapi{t: t, rest: testutil.REST{Base: "http://" + bizAPI,
		HTTP: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: l.Client.DialContext, MaxIdleConnsPerHost: 64}}}}
	b.p = l.Client.Start(bizapiBin, args...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("bizapi log:\n%s", netlab.Tail(b.p.Output(), 80))
		}
	})
	l.Client.WaitListening(b.p, bizAPI, 20*time.Second)
	return b
}

// call does a REST request with the bearer token (testutil.REST.Call), or with basic authentication
// when basic holds a user and a password.
func (b *bizapi) call(method, path string, in, out any, basic ...string) (int, error) {
	if len(basic) == 2 {
		return b.rest.CallBasic(basic[0], basic[1], method, path, in, out)
	}
	return b.rest.Call(method, path, in, out)
}

// setup logs in (setting the admin password) and registers the business number with a certificate
// issued by chatd's operator key.
func (b *bizapi) setup(s *server) {
	t := b.t
	t.Helper()
	var login struct {
		Users []struct{ Token string } `json:"users"`
	}
	if _, err := b.call("POST", "/v1/users/login", map[string]string{"new_password": "Lab-Password-1"}, &login, "admin", "secret"); err != nil || len(login.Users) != 1 {
		t.Fatalf("login: %v", err)
	}
	b.rest.Token = login.Users[0].Token
	key, _, err := pki.LoadOrCreateOperatorKey(filepath.Join(s.Data, node.OperatorKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.IssueBusinessCert(key, pki.BusinessCert{Phone: bizPhone, DisplayName: "Lab Shop"})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := b.call("POST", "/v1/account", map[string]string{"cc": "1", "phone_number": bizPhone[2:], "method": "sms", "cert": cert}, nil); err != nil || st != 202 {
		t.Fatalf("POST /v1/account: %d %v", st, err)
	}
	code, err := os.ReadFile(regapi.DevCodeFile(s.Data, bizPhone[1:]))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := b.call("POST", "/v1/account/verify", map[string]string{"code": strings.TrimSpace(string(code))}, nil); err != nil || st != 201 {
		t.Fatalf("verify: %d %v", st, err)
	}
}

// gatewayHealth is the part of GET /v1/health these tests read.
type gatewayHealth struct {
	Status     string
	Reconnects int
	Port       int
	Transport  string
	LastClose  string
	Problem    string
}

func (b *bizapi) health() (gatewayHealth, error) {
	var h struct {
		Health struct {
			GatewayStatus string `json:"gateway_status"`
			Gateway       struct {
				Path struct {
					Port      int    `json:"port"`
					Transport string `json:"transport"`
				} `json:"path"`
				Reconnects     int    `json:"reconnects"`
				LastClose      string `json:"last_close"`
				NetworkProblem string `json:"network_problem"`
			} `json:"gateway"`
		} `json:"health"`
	}
	_, err := b.call("GET", "/v1/health", nil, &h)
	g := h.Health.Gateway
	return gatewayHealth{h.Health.GatewayStatus, g.Reconnects, g.Path.Port, g.Path.Transport, g.LastClose, g.NetworkProblem}, err
}

// waitHealth polls health until cond holds.
func (b *bizapi) waitHealth(timeout time.Duration, what string, cond func(gatewayHealth) bool) gatewayHealth {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		h, err := b.health()
		if err == nil && cond(h) {
			return h
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("bizapi not %s within %v: %+v %v", what, timeout, h, err)
		}
		time.Sleep(10 * time.Millisecond) // polling health
	}
}

// hooks receives bizapi's webhooks in the client host and records inbound messages by body.
type hooks struct {
	mu     sync.Mutex
	bodies map[string]int
	ids    map[string]bool
}

func startHooks(t *testing.T, l *netlab.Lab) *hooks {
	h := &hooks{bodies: map[string]int{}, ids: map[string]bool{}}
	ln, err := l.Client.Listen("tcp", hookAddr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var cb struct {
			Messages []struct {
				ID   string `json:"id"`
				Text struct {
					Body string `json:"body"`
				} `json:"text"`
			} `json:"messages"`
		}
		if err := json.NewDecoder(r.Body).Decode(&cb); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		h.mu.Lock()
		for _, m := range cb.Messages {
			if !h.ids[m.ID] {
				h.ids[m.ID] = true
				h.bodies[m.Text.Body]++
			}
		}
		h.mu.Unlock()
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return h
}

func (h *hooks) count() (n, twice int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.bodies {
		if c > 1 {
			twice++
		}
	}
	return len(h.bodies), twice
}

// TestForcedDisconnects is the sum of N2–N4: a 20,000-message two-way exchange between bizapi (in the
// client host, behind the box) and a customer (in the server host), during which the box forces 200
// disconnects of bizapi's connection — resets of the connection in use, path flaps that close the port
// in use until bizapi is back on the other one, blackholes, and chatd killed with SIGKILL and
// restarted. Nothing may be lost and nothing duplicated: every message reaches the customer once,
// every answer reaches the webhook once.
func TestForcedDisconnects(t *testing.T) {
	t.Parallel()
	const (
		disconnects = 200
		perSide     = 10000
		perRound    = perSide / disconnects
	)
	l := netlab.New(t)
	s := startChatd(t, l)
	hk := startHooks(t, l)
	cust := s.newAccount(l.Server, custPhone, nil)
	b := startBizapi(t, l, s, "--reconnect-max-backoff", "1s")
	b.setup(s)
	b.waitHealth(20*time.Second, "connected", func(h gatewayHealth) bool { return h.Status == "connected" })

	// Senders: each round, perRound messages each way, sent into that round's fault.
	round := make(chan int)
	var wg sync.WaitGroup
	errs := make(chan error, 2*perSide)
	sem := make(chan struct{}, 64)
	wg.Add(1) // the sender loop itself, so that Wait cannot return between its rounds
	go func() {
		defer wg.Done()
		for r := range round {
			for i := range perRound {
				n := r*perRound + i
				sem <- struct{}{}
				wg.Add(2)
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					body := map[string]any{"to": custPhone, "type": "text", "text": map[string]string{"body": fmt.Sprintf("biz %d", n)}}
					if _, err := b.call("POST", "/v1/messages", body, nil); err != nil {
						errs <- err
					}
				}()
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
					defer cancel()
					if _, err := cust.Send(ctx, bizPhone[1:], fmt.Sprintf("cust-%d", n), text(fmt.Sprintf("cust %d", n))); err != nil {
						errs <- err
					}
				}()
			}
		}
	}()

	kinds := map[string]int{}
	start := time.Now()
	for i := range disconnects {
		h, err := b.health()
		if err != nil {
			t.Fatal(err)
		}
		var kind string
		switch {
		case i%20 == 0:
			kind = "chatd restart"
			s.Restart()
		case i%20 == 10:
			kind = "blackhole"
			l.SetRules(netlab.Blackhole(currentPort(t, l, h))...)
		case i%2 == 1:
			kind = "reset"
			l.SetRules(fmt.Sprintf("tcp sport %d reject with tcp reset", currentPort(t, l, h)))
		default:
			kind = "path flap"
			l.SetRules(netlab.Reject(h.Port))
		}
		kinds[kind]++
		round <- i // this round's messages run into the fault: a reset or a blackhole needs traffic to show
		b.waitHealth(60*time.Second, fmt.Sprintf("reconnected after %s #%d", kind, i), func(g gatewayHealth) bool {
			return g.Status == "connected" && g.Reconnects > h.Reconnects
		})
		l.SetRules()
	}
	close(round)
	t.Logf("%d forced disconnects in %v: %v", disconnects, time.Since(start).Round(time.Second), kinds)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	cust.box.waitCount(t, perSide, 2*time.Minute)
	deadline := time.Now().Add(2 * time.Minute)
	for n, _ := hk.count(); n < perSide; n, _ = hk.count() {
		if time.Now().After(deadline) {
			t.Fatalf("the webhook got %d of %d customer messages", n, perSide)
		}
		time.Sleep(50 * time.Millisecond) // polling the receiver
	}
	got, dups, twice := cust.box.count()
	if got != perSide || dups != 0 || twice != 0 {
		t.Errorf("customer: %d distinct messages of %d, %d duplicate deliveries, %d bodies twice", got, perSide, dups, twice)
	}
	if n, twice := hk.count(); n != perSide || twice != 0 {
		t.Errorf("webhook: %d distinct customer messages of %d, %d bodies under two ids", n, perSide, twice)
	}
	final, _ := b.health()
	t.Logf("bizapi after the run: %+v", final)
}

// currentPort is the client host's local port of bizapi's connection on the path h reports.
func currentPort(t *testing.T, l *netlab.Lab, h gatewayHealth) int {
	t.Helper()
	ports := l.ClientPorts(h.Port)
	if len(ports) == 0 {
		t.Fatalf("no client connection to port %d (health %+v)", h.Port, h)
	}
	return ports[len(ports)-1]
}
