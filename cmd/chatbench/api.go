package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd-dev/chatd/bizapi"
	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/node"
	"github.com/chatd-dev/chatd/server/regapi"
	"github.com/chatd-dev/chatd/server/store"
)

const apiHelp = `Usage: chatbench api --spawn [--messages M] [--rate R] [--post-messages N] [--concurrency C]

Starts, in this process: chatd (dev mode, loopback), bizapi connected to it with a business number
registered through its REST API (admin login, business certificate from chatd's operator key, code
from chatd's dev code file — as cmd/quickstart and e2e do), a webhook receiver that records when each
message's "delivered" status arrives, and a customer (client library) who receives the messages.

Then two phases, the latency one first so that it does not queue behind the throughput one's backlog:
  1. latency: M messages POSTed at --rate per second, open loop (each POST starts on schedule whether or
     not earlier ones finished); per message, the time from the start of its POST /v1/messages to the
     arrival of its "delivered" webhook: p50/p99/p99.9/max (issue 6 target: p99 ≤ 50 ms at 1,000/s).
  2. throughput: N messages POSTed by C concurrent HTTP clients, closed loop: accepted POSTs per second
     (201: durably stored by bizapi) (target ≥ 10,000/s), and the time until all their delivered
     webhooks arrived.
The load generator is a Go HTTP client in the same process: it costs CPU the server does not get (wrk
from another process gets more, see docs/benchmarks.md).

Examples:
  chatbench api --spawn
  chatbench api --spawn --messages 5000 --rate 1000 --post-messages 50000 --concurrency 64
`

const (
	apiBizPhone  = "15550900001"
	apiCustPhone = "15550900002"
	apiPassword  = "Chatbench-2026!"
)

func cmdAPI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, fs := newFlagSet("api", apiHelp, stderr)
	fs.Bool("spawn", true, "start chatd and bizapi in this process (the only mode)")
	messages := fs.Int("messages", 5000, "latency phase: messages to POST at --rate")
	rate := fs.Float64("rate", 1000, "latency phase: POSTs per second (open loop)")
	postN := fs.Int("post-messages", 20000, "throughput phase: messages to POST (0 skips the phase)")
	conc := fs.Int("concurrency", 64, "throughput phase: concurrent HTTP clients")
	wait := fs.Duration("wait", 60*time.Second, "how long to wait for the delivered webhooks after each phase")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *messages <= 0 || *rate <= 0 || *conc <= 0 || *postN < 0 {
		return errors.New("--messages, --rate and --concurrency must be positive")
	}
	r := newReport("api", args)
	r.param("server", "chatd + bizapi spawned in this process (dev mode, loopback)", "")
	r.param("latency phase", fmt.Sprintf("%d messages at %v/s, open loop", *messages, *rate), "")
	r.param("throughput phase", fmt.Sprintf("%d messages, %d concurrent clients, closed loop", *postN, *conc), "")

	e, err := startAPIEnv(ctx, c)
	if err != nil {
		return err
	}
	defer e.close()
	stopProfile, err := c.startProfile()
	if err != nil {
		return err
	}
	defer stopProfile()

	// 1. Latency at a fixed rate.
	c.logf("latency phase: %d messages at %v/s", *messages, *rate)
	starts := make([]time.Time, *messages)
	ids := make([]string, *messages)
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	t0 := time.Now()
	interval := time.Duration(float64(time.Second) / *rate)
	for i := range *messages {
		due := t0.Add(interval * time.Duration(i))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			starts[i] = time.Now()
			id, err := e.post(ctx, fmt.Sprint("latency ", i))
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
				return
			}
			ids[i] = id
		}()
	}
	wg.Wait()
	posted := time.Since(t0)
	var lat []time.Duration
	deadline := time.Now().Add(*wait)
	for {
		lat = lat[:0]
		e.mu.Lock()
		for i, id := range ids {
			if at, ok := e.delivered[id]; ok && id != "" {
				lat = append(lat, at.Sub(starts[i]))
			}
		}
		e.mu.Unlock()
		if len(lat) == *messages-int(failed.Load()) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	slices.Sort(lat)
	r.result("latency phase: POST rate achieved", round(float64(*messages)/posted.Seconds(), 0), "POSTs/s")
	r.result("latency phase: delivered webhooks", len(lat), "")
	r.result("POST→delivered p50", quantile(lat, 0.50), "ms")
	r.result("POST→delivered p99", quantile(lat, 0.99), "ms")
	r.result("POST→delivered p99.9", quantile(lat, 0.999), "ms")
	if len(lat) > 0 {
		r.result("POST→delivered max", round(float64(lat[len(lat)-1])/float64(time.Millisecond), 3), "ms")
	}

	// 2. Throughput, closed loop.
	if *postN > 0 {
		c.logf("throughput phase: %d messages from %d clients", *postN, *conc)
		e.mu.Lock()
		base := e.deliveredCount
		e.mu.Unlock()
		var next, ok atomic.Int64
		cpu0 := selfCPU()
		t1 := time.Now()
		for range *conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1)
					if i > int64(*postN) || ctx.Err() != nil {
						return
					}
					if _, err := e.post(ctx, fmt.Sprint("load ", i)); err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
						continue
					}
					ok.Add(1)
				}
			}()
		}
		wg.Wait()
		took := time.Since(t1)
		cpu := selfCPU() - cpu0
		r.result("accepted POST /v1/messages per second", round(float64(ok.Load())/took.Seconds(), 0), "POSTs/s")
		r.result("CPU during the POSTs (process: chatd, bizapi, load)", round(cpu.Seconds()/took.Seconds()*100, 0), "% of a core")
		deadline := time.Now().Add(*wait)
		var got int
		for {
			e.mu.Lock()
			got = e.deliveredCount - base
			e.mu.Unlock()
			if got >= int(ok.Load()) || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		all := time.Since(t1)
		r.result("throughput phase: delivered webhooks", got, "")
		r.result("time until the last delivered webhook", round(all.Seconds(), 2), "s")
		r.result("delivered webhooks per second (POST start → last webhook)", round(float64(got)/all.Seconds(), 0), "/s")
	}
	if f := failed.Load(); f > 0 {
		r.result("failed POSTs", f, "")
		if err, ok := firstErr.Load().(error); ok {
			r.note("first POST error: %v", err)
		}
	}
	stopProfile()
	return r.finish(c, stdout)
}

// apiEnv is chatd, bizapi, the webhook receiver and the customer.
type apiEnv struct {
	base    string
	token   string
	hc      *http.Client
	cleanup []func()

	mu             sync.Mutex
	delivered      map[string]time.Time // message id → arrival of its delivered webhook
	deliveredCount int
}

func (e *apiEnv) close() {
	for i := len(e.cleanup) - 1; i >= 0; i-- {
		e.cleanup[i]()
	}
}

func startAPIEnv(ctx context.Context, c *common) (e *apiEnv, err error) {
	e = &apiEnv{delivered: map[string]time.Time{},
		hc: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxIdleConns: 1024}, Timeout: 60 * time.Second}}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	dir, err := os.MkdirTemp("", "chatbench-api-")
	if err != nil {
		return nil, err
	}
	e.cleanup = append(e.cleanup, func() { os.RemoveAll(dir) })
	chatdData := filepath.Join(dir, "chatd")
	n, err := node.Start(node.Config{DataDir: chatdData, Dev: true, ChatListen: "127.0.0.1:0", HTTPSListen: "127.0.0.1:0",
		AdminListen: "off", Logger: c.logger()})
	if err != nil {
		return nil, err
	}
	e.cleanup = append(e.cleanup, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Shutdown(sctx)
	})

	// The webhook receiver.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	hooks := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		var p struct {
			Statuses []struct{ ID, Status string } `json:"statuses"`
		}
		body, _ := io.ReadAll(r.Body)
		if json.Unmarshal(body, &p) == nil {
			e.mu.Lock()
			for _, s := range p.Statuses {
				if s.Status == "delivered" {
					if _, dup := e.delivered[s.ID]; !dup {
						e.delivered[s.ID] = now
						e.deliveredCount++
					}
				}
			}
			e.mu.Unlock()
		}
	}), ReadHeaderTimeout: 10 * time.Second}
	go hooks.Serve(ln)
	e.cleanup = append(e.cleanup, func() { hooks.Close() })

	d, err := bizapi.Start(bizapi.Config{
		DataDir: filepath.Join(dir, "bizapi"), Listen: "127.0.0.1:0",
		ServerURL: n.HTTPSURL, ServerCAFile: n.CAFile, WebhookURL: "http://" + ln.Addr().String() + "/hooks",
		Logger: c.logger(), Version: "chatbench",
	})
	if err != nil {
		return nil, fmt.Errorf("starting bizapi: %w", err)
	}
	e.cleanup = append(e.cleanup, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.Shutdown(sctx)
	})
	e.base = "http://" + d.Addr.String()

	// Admin login (changing the default password), the business number registered.
	var login struct {
		Users []struct{ Token string } `json:"users"`
	}
	if _, err := e.call(ctx, "POST", "/v1/users/login", map[string]string{"new_password": apiPassword}, &login, "secret"); err != nil {
		return nil, err
	}
	if len(login.Users) != 1 {
		return nil, errors.New("bizapi login answered without a token")
	}
	e.token = login.Users[0].Token
	opKey, _, err := pki.LoadOrCreateOperatorKey(filepath.Join(chatdData, node.OperatorKeyFile))
	if err != nil {
		return nil, err
	}
	cert, err := pki.IssueBusinessCert(opKey, pki.BusinessCert{Phone: apiBizPhone, DisplayName: "Chatbench Shop"})
	if err != nil {
		return nil, err
	}
	if _, err := e.call(ctx, "POST", "/v1/account", map[string]string{"cc": "1", "phone_number": apiBizPhone[1:], "method": "sms", "cert": cert}, nil, ""); err != nil {
		return nil, err
	}
	code, err := os.ReadFile(regapi.DevCodeFile(chatdData, apiBizPhone))
	if err != nil {
		return nil, err
	}
	if _, err := e.call(ctx, "POST", "/v1/account/verify", map[string]string{"code": strings.TrimSpace(string(code))}, nil, ""); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var h struct {
			Health struct {
				GatewayStatus string `json:"gateway_status"`
			} `json:"health"`
		}
		if _, err := e.call(ctx, "GET", "/v1/health", nil, &h, ""); err == nil && h.Health.GatewayStatus == "connected" {
			break
		}
		if time.Now().After(deadline) {
			return nil, errors.New("bizapi did not connect to chatd within 30 s")
		}
		time.Sleep(20 * time.Millisecond) // polling health
	}

	// The customer: every delivery stored (dropped) and acknowledged, so that chatd sends bizapi the
	// delivered receipt.
	dev, err := pki.GenerateStaticKey()
	if err != nil {
		return nil, err
	}
	if _, err := n.Store.RegisterDevice(ctx, store.Account{Phone: apiCustPhone, DevicePub: dev.Public[:]}); err != nil {
		return nil, err
	}
	cust, err := client.New(client.Config{Addrs: []string{n.ChatAddr.String()}, ServerKey: n.ServerKey, DeviceKey: dev,
		ReprobeInterval: -1, ClientVersion: "chatbench-customer"})
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { cust.Run(cctx); close(done) }()
	e.cleanup = append(e.cleanup, func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := cust.WaitConnected(wctx); err != nil {
		return nil, fmt.Errorf("the customer did not connect: %w", err)
	}
	return e, nil
}

// call does a REST request (basic auth as admin when pass is set, else the bearer token) and decodes
// a 2xx body into out.
func (e *apiEnv) call(ctx context.Context, method, path string, in, out any, pass string) (int, error) {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.base+path, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if pass != "" {
		req.SetBasicAuth("admin", pass)
	} else if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s: %s %s", method, path, resp.Status, bytes.TrimSpace(raw))
	}
	if out != nil && len(raw) > 0 {
		return resp.StatusCode, json.Unmarshal(raw, out)
	}
	return resp.StatusCode, nil
}

// post sends one text message to the customer and returns its id.
func (e *apiEnv) post(ctx context.Context, text string) (string, error) {
	var res struct {
		Messages []struct{ ID string } `json:"messages"`
	}
	if _, err := e.call(ctx, "POST", "/v1/messages", map[string]any{"to": apiCustPhone, "type": "text", "text": map[string]string{"body": text}}, &res, ""); err != nil {
		return "", err
	}
	if len(res.Messages) == 0 {
		return "", errors.New("POST /v1/messages answered without an id")
	}
	return res.Messages[0].ID, nil
}
