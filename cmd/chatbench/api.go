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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/node"
	"github.com/chatd-dev/chatd/server/regapi"
)

const apiHelp = `Usage: chatbench api [--spawn | --spawn-process] [--messages M] [--rate R] [--post-messages N] [--concurrency C] [--client raw|go]

Starts chatd (dev mode, loopback) and bizapi connected to it, with a business number registered
through bizapi's REST API (admin login, business certificate from chatd's operator key, code from
chatd's dev code file — as cmd/quickstart and e2e do); a webhook receiver that records when each
message's "delivered" status arrives; and a customer (client library) who receives the messages.
--spawn (the default) runs chatd and bizapi in this process; --spawn-process runs them in a child
process (this binary's hidden serve-api subcommand), so that the report gives the servers' CPU apart
from the load generator's (the POST clients, the webhook receiver and the customer stay in this
process). Both share the machine's cores either way.

Then two phases, the latency one first so that it does not queue behind the throughput one's backlog:
  1. latency: M messages POSTed at --rate per second, open loop (each POST starts on schedule whether or
     not earlier ones finished); per message, the time from the start of its POST /v1/messages to the
     arrival of its "delivered" webhook: p50/p99/p99.9/max (issue 6 target: p99 ≤ 50 ms at 1,000/s).
  2. throughput: N messages POSTed by C concurrent clients on keep-alive connections, closed loop:
     accepted POSTs per second (201: durably stored by bizapi) (target ≥ 10,000/s), and the time until
     all their delivered webhooks arrived.
--client picks the throughput phase's HTTP client: raw (the default: HTTP/1.1 written and parsed by
hand on one connection per client, about what wrk does) or go (net/http, tuned: one idle connection
per client kept, buffers reused; it costs the machine more CPU per request). The latency phase uses
net/http. Webhooks arrive batched (bizapi's default webhooks.max_callbacks_per_request): the report
counts the webhook requests and the statuses they carried.

--cpuprofile FILE profiles --profile-phase (all, latency or throughput); with --spawn-process the
child writes its own profile of the same phase to FILE.server.

Examples:
  chatbench api --spawn
  chatbench api --spawn-process --messages 5000 --rate 1000 --post-messages 50000 --concurrency 64
`

const (
	apiBizPhone  = "15550900001"
	apiCustPhone = "15550900002"
	apiPassword  = "Chatbench-2026!"
)

func cmdAPI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, fs := newFlagSet("api", apiHelp, stderr)
	fs.Bool("spawn", true, "start chatd and bizapi in this process (the default)")
	child := fs.Bool("spawn-process", false, "start chatd and bizapi in a child process (serve-api), so that their CPU is reported apart")
	messages := fs.Int("messages", 5000, "latency phase: messages to POST at --rate")
	rate := fs.Float64("rate", 1000, "latency phase: POSTs per second (open loop)")
	postN := fs.Int("post-messages", 20000, "throughput phase: messages to POST (0 skips the phase)")
	conc := fs.Int("concurrency", 64, "throughput phase: concurrent HTTP clients")
	client := fs.String("client", "raw", "throughput phase: raw (hand-written HTTP/1.1) or go (net/http)")
	phase := fs.String("profile-phase", "all", "what --cpuprofile covers: all, latency or throughput")
	wait := fs.Duration("wait", 60*time.Second, "how long to wait for the delivered webhooks after each phase")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *messages <= 0 || *rate <= 0 || *conc <= 0 || *postN < 0 {
		return errors.New("--messages, --rate and --concurrency must be positive")
	}
	if *client != "raw" && *client != "go" {
		return fmt.Errorf("--client %q: want raw or go", *client)
	}
	if *phase != "all" && *phase != "latency" && *phase != "throughput" {
		return fmt.Errorf("--profile-phase %q: want all, latency or throughput", *phase)
	}
	r := newReport("api", args)
	if *child {
		r.param("server", "chatd + bizapi in a child process (serve-api; dev mode, loopback)", "")
	} else {
		r.param("server", "chatd + bizapi spawned in this process (dev mode, loopback)", "")
	}
	r.param("latency phase", fmt.Sprintf("%d messages at %v/s, open loop", *messages, *rate), "")
	r.param("throughput phase", fmt.Sprintf("%d messages, %d concurrent clients (%s), closed loop", *postN, *conc, *client), "")

	e, err := startAPIEnv(ctx, c, *child, *conc)
	if err != nil {
		return err
	}
	defer e.close()
	prof := func(want string) (func(), error) {
		if c.cpuProfile == "" || (*phase != "all" && *phase != want) {
			return func() {}, nil
		}
		stop, err := c.startProfile()
		if err != nil {
			return nil, err
		}
		if err := e.srv.profile(c.cpuProfile + ".server"); err != nil {
			stop()
			return nil, fmt.Errorf("server profile: %w", err)
		}
		return func() { stop(); e.srv.profile("") }, nil
	}
	stopProfile := func() {}
	defer func() { stopProfile() }()
	if *phase != "throughput" {
		if stopProfile, err = prof("latency"); err != nil {
			return err
		}
	}

	// 1. Latency at a fixed rate.
	c.logf("latency phase: %d messages at %v/s", *messages, *rate)
	starts := make([]time.Time, *messages)
	ids := make([]string, *messages)
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	posters := sync.Pool{New: func() any { return newGoPoster(e.hc, e.srv.api, e.token) }}
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
			p := posters.Get().(*goPoster)
			defer posters.Put(p)
			starts[i] = time.Now()
			id, err := p.post(ctx, fmt.Appendf(nil, "latency %d", i))
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
				return
			}
			ids[i] = string(id)
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
		time.Sleep(10 * time.Millisecond) // polling the receiver's record
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
	if *phase == "latency" {
		stopProfile()
		stopProfile = func() {}
	}

	// 2. Throughput, closed loop.
	if *postN > 0 {
		c.logf("throughput phase: %d messages from %d %s clients", *postN, *conc, *client)
		ps := make([]poster, *conc)
		for i := range ps {
			if *client == "raw" {
				if ps[i], err = newRawPoster(e.srv.api, e.token); err != nil {
					return err
				}
			} else {
				ps[i] = newGoPoster(e.hc, e.srv.api, e.token)
			}
			defer ps[i].close()
		}
		if *phase == "throughput" {
			if stopProfile, err = prof("throughput"); err != nil {
				return err
			}
		}
		e.mu.Lock()
		base, baseReqs, baseStatuses := e.deliveredCount, e.hookRequests, e.hookStatuses
		e.mu.Unlock()
		var next, ok atomic.Int64
		cpu0, srvCPU0 := selfCPU(), e.serverCPU()
		t1 := time.Now()
		for _, p := range ps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var text []byte
				for {
					i := next.Add(1)
					if i > int64(*postN) || ctx.Err() != nil {
						return
					}
					text = strconv.AppendInt(append(text[:0], "load "...), i, 10)
					if _, err := p.post(ctx, text); err != nil {
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
		cpu, srvCPU := selfCPU()-cpu0, e.serverCPU()-srvCPU0
		r.result("accepted POST /v1/messages per second", round(float64(ok.Load())/took.Seconds(), 0), "POSTs/s")
		if e.srv.pid > 0 {
			r.result("CPU during the POSTs: chatd + bizapi (child process)", round(srvCPU.Seconds()/took.Seconds()*100, 0), "% of a core")
			r.result("CPU during the POSTs: load generator, webhook receiver, customer (this process)", round(cpu.Seconds()/took.Seconds()*100, 0), "% of a core")
			r.result("CPU during the POSTs: both processes", round((cpu+srvCPU).Seconds()/took.Seconds()*100, 0), "% of a core")
		} else {
			r.result("CPU during the POSTs (process: chatd, bizapi, load)", round(cpu.Seconds()/took.Seconds()*100, 0), "% of a core")
		}
		deadline := time.Now().Add(*wait)
		var got, reqs, statuses int
		for {
			e.mu.Lock()
			got, reqs, statuses = e.deliveredCount-base, e.hookRequests-baseReqs, e.hookStatuses-baseStatuses
			e.mu.Unlock()
			if got >= int(ok.Load()) || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			time.Sleep(10 * time.Millisecond) // polling the receiver's record
		}
		all := time.Since(t1)
		r.result("throughput phase: delivered webhooks", got, "")
		r.result("time until the last delivered webhook", round(all.Seconds(), 2), "s")
		r.result("delivered webhooks per second (POST start → last webhook)", round(float64(got)/all.Seconds(), 0), "/s")
		r.result("throughput phase: webhook requests", reqs, "")
		if reqs > 0 {
			r.result("statuses per webhook request (mean)", round(float64(statuses)/float64(reqs), 1), "")
		}
	}
	stopProfile()
	stopProfile = func() {}
	if f := failed.Load(); f > 0 {
		r.result("failed POSTs", f, "")
		if err, ok := firstErr.Load().(error); ok {
			r.note("first POST error: %v", err)
		}
	}
	return r.finish(c, stdout)
}

// apiEnv is chatd and bizapi (here or in a child process), the webhook receiver and the customer.
type apiEnv struct {
	srv     *apiServers
	token   string
	hc      *http.Client
	cleanup []func()

	mu             sync.Mutex
	delivered      map[string]time.Time // message id → arrival of its delivered webhook
	deliveredCount int
	hookRequests   int // webhook requests received
	hookStatuses   int // statuses in them
}

func (e *apiEnv) close() {
	for i := len(e.cleanup) - 1; i >= 0; i-- {
		e.cleanup[i]()
	}
}

// serverCPU is the child process's CPU time (0 when the servers run in this process).
func (e *apiEnv) serverCPU() time.Duration {
	if e.srv.pid == 0 {
		return 0
	}
	d, _ := procCPU(e.srv.pid)
	return d
}

func startAPIEnv(ctx context.Context, c *common, child bool, conc int) (e *apiEnv, err error) {
	e = &apiEnv{delivered: map[string]time.Time{},
		hc: &http.Client{Transport: newAPITransport(conc), Timeout: 60 * time.Second}}
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
			e.hookRequests++
			e.hookStatuses += len(p.Statuses)
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

	// The customer's device key, registered with chatd by whoever starts it.
	dev, err := pki.GenerateStaticKey()
	if err != nil {
		return nil, err
	}
	srv, err := startAPIServers(ctx, c, dir, "http://"+ln.Addr().String()+"/hooks", dev.Public, child)
	if err != nil {
		return nil, err
	}
	e.srv = srv
	e.cleanup = append(e.cleanup, srv.close)

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
	opKey, _, err := pki.LoadOrCreateOperatorKey(filepath.Join(srv.chatdData, node.OperatorKeyFile))
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
	code, err := os.ReadFile(regapi.DevCodeFile(srv.chatdData, apiBizPhone))
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
	cust, err := client.New(client.Config{Addrs: []string{srv.chat}, ServerKey: srv.serverKey, DeviceKey: dev,
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
	req, err := http.NewRequestWithContext(ctx, method, e.srv.api+path, body)
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
