package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd-dev/chatd/client"
)

const connsHelp = `Usage: chatbench conns [--spawn | --spawn-process | --server ADDR --key B64 --chatd-data DIR [--chatd-pid PID] [--metrics URL]] -n N [flags]

Opens N authenticated, logged-in connections to one chatd with the client library (one client.Client
per connection, pings at their defaults: every 25 s ± 5 s) and holds them idle.

Device keys: N accounts (phones 17000000000000…) are registered before the ramp, straight into the
server's store: through the in-process node's store with --spawn, in DATA/chatd.db of the child with
--spawn-process, and in --chatd-data's database for an external --server (SQLite WAL; the running server
sees them at login).

Source addresses: the clients dial from 127.0.0.2, 127.0.0.3, … (--src-ips, at least one per 20,000
connections) with IP_BIND_ADDRESS_NO_PORT, so that the kernel's 28,232 ephemeral ports per (source,
destination) do not cap N. RLIMIT_NOFILE is raised to what N needs (to fs.nr_open as root, else to the
hard limit); with --spawn one process holds both ends, 2N descriptors.

Reports:
  ramp         handshakes (connects: TCP, Noise XX, login) per second, mean and best second, and the
               CPU they cost: with --spawn-process / --chatd-pid the server's CPU seconds per handshake,
               i.e. handshakes per second per server core; with --spawn the process's (both ends).
  at rest      after --settle: server RSS, Go heap and stacks per connection, goroutines per connection;
               kernel slab per connection (/proc/meminfo Slab, both ends on loopback); CPU used at rest
               over --rest (pings, keepalive, timers), as % of one core.
  memory, --spawn: client and server share the process. The process figures are both ends; the
               server's share of the heap is taken from the heap profile (live objects by the innermost
               chatd frame of their allocation: server/… vs client/…) and its share of the stacks in
               proportion to its goroutines; see memsplit.go. Use --spawn-process for the server alone.

Examples:
  chatbench conns --spawn -n 20000
  chatbench conns --spawn-process -n 100000 --ramp 2000 --json conns.json
  chatd serve --dev --data /tmp/cd &   # ulimit -n must allow N descriptors for the server
  chatbench conns --server 127.0.0.1:5222 --key "$(chatd keys --data /tmp/cd | …)" --chatd-data /tmp/cd \
      --chatd-pid $! --metrics http://127.0.0.1:9480/metrics -n 50000
`

func cmdConns(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var tf targetFlags
	c, fs := newFlagSet("conns", connsHelp, stderr)
	tf.register(fs, true)
	n := fs.Int("n", 1000, "connections to open")
	ramp := fs.Float64("ramp", 0, "connections started per second; 0: as fast as the server answers, with at most --connecting connects in flight")
	connecting := fs.Int("connecting", 256, "connects in flight at most during the ramp")
	srcIPs := fs.Int("src-ips", 0, "source addresses 127.0.0.2… to spread the clients over (default: one per 20,000 connections, at least 1)")
	settle := fs.Duration("settle", 2*time.Second, "wait after the last connection before measuring at rest")
	rest := fs.Duration("rest", 30*time.Second, "how long to measure CPU at rest; at least the ping period (25 s ± 5 s) so that every connection pings in the window — the first ping comes 20–30 s after login, so a 10 s window right after the ramp can miss them all")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up when the ramp takes longer")
	profPhase := fs.String("profile-phase", "ramp", "what --cpuprofile covers: ramp or rest; with --spawn-process the server child writes its own profile to FILE.server")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *profPhase != "ramp" && *profPhase != "rest" {
		return fmt.Errorf("--profile-phase: ramp or rest")
	}
	if *n <= 0 {
		return fmt.Errorf("-n must be positive")
	}
	if *srcIPs <= 0 {
		*srcIPs = max(1, (*n+19999)/20000)
	}
	inProcess := tf.server == "" && !tf.spawnProcess
	if inProcess {
		runtime.MemProfileRate = memProfileRate
	}
	const spare = 300 // descriptors besides the connections: stores, listeners, the HTTP clients
	ends := uint64(1)
	if inProcess {
		ends = 2 // both ends of every connection in this process
	}
	fds := ends*uint64(*n) + spare
	limit := raiseNoFile(fds)
	if limit < fds {
		return fmt.Errorf("need %d open files, RLIMIT_NOFILE is %d and could not be raised (needs root with CAP_SYS_RESOURCE, or a higher ulimit -Hn): at most -n %d here%s",
			fds, limit, (limit-min(limit, spare))/ends, map[bool]string{true: "; --spawn-process puts the two ends in two processes", false: ""}[inProcess])
	}

	r := newReport("conns", args)
	tf.describe(r)
	r.param("connections", *n, "")
	if *ramp > 0 {
		r.param("ramp", *ramp, "connections/s")
	} else {
		r.param("ramp", fmt.Sprintf("as fast as possible, ≤ %d connects in flight", *connecting), "")
	}
	r.param("source addresses", fmt.Sprintf("%d (127.0.0.2…, IP_BIND_ADDRESS_NO_PORT)", *srcIPs), "")
	r.param("client pings", fmt.Sprintf("every %v ± %v (defaults)", client.DefaultPingInterval, client.DefaultPingJitter), "")
	r.param("RLIMIT_NOFILE", limit, "")
	r.param("rest measured over", rest.String(), "")

	t, err := startTarget(ctx, &tf, c)
	if err != nil {
		return err
	}
	defer t.close()
	c.logf("chatd at %s; registering %d devices", t.addr, *n)
	regStart := time.Now()
	keys, _, err := t.registerDevices(ctx, *n, "17")
	if err != nil {
		return err
	}
	r.result("registration", round(float64(*n)/time.Since(regStart).Seconds(), 0), "devices/s")

	// Before: the server alone (or the process, before any client).
	var before memReading
	var shareBefore memShare
	if inProcess {
		before = readMem()
		shareBefore = readShare()
	} else {
		before = t.serverMem()
	}
	genBefore := readMem()
	slabBefore := procKB("/proc/meminfo", "Slab:") * 1024

	prof := &phaseProfiler{c: c, t: t}
	defer prof.stop()
	if *profPhase == "ramp" {
		if err := prof.start(); err != nil {
			return err
		}
	}
	cctx, cancel := context.WithCancel(context.Background())
	var runs sync.WaitGroup
	defer func() {
		c.logf("closing %d clients", len(keys))
		cancel()
		runs.Wait()
	}()

	// Ramp.
	sd := newSourceDialer(*srcIPs)
	var connected, failed atomic.Int64
	clients := make([]*client.Client, *n)
	sem := make(chan struct{}, *connecting)
	var series []int64
	sampleDone := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() {
		defer close(sampleDone)
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tk.C:
				series = append(series, connected.Load())
				c.logf("%d connected, %d failed", connected.Load(), failed.Load())
			}
		}
	}()
	serverCPU0, _ := t.cpu()
	selfCPU0 := selfCPU()
	rampStart := time.Now()
	var tick *time.Ticker
	if *ramp > 0 {
		tick = time.NewTicker(time.Duration(float64(time.Second) / *ramp))
		defer tick.Stop()
	}
	rampCtx, rampCancel := context.WithTimeout(ctx, *timeout)
	defer rampCancel()
	var launch sync.WaitGroup
	var startErr error
launchLoop:
	for i := range *n {
		if tick != nil {
			select {
			case <-tick.C:
			case <-rampCtx.Done():
				break launchLoop
			}
		}
		select {
		case sem <- struct{}{}:
		case <-rampCtx.Done():
			break launchLoop
		}
		cl, err := client.New(client.Config{
			Addrs: []string{t.addr}, ServerKey: t.serverKey, DeviceKey: keys[i], Dial: sd.Dial,
			ReprobeInterval: -1, // no 443 path to check: only the raw chat endpoint is configured
			ClientVersion:   "chatbench",
		})
		if err != nil {
			startErr = err
			break
		}
		clients[i] = cl
		runs.Add(1)
		go func() {
			defer runs.Done()
			if err := cl.Run(cctx); err != nil {
				c.logf("client %d: %v", i, err)
			}
		}()
		launch.Add(1)
		go func() {
			defer launch.Done()
			defer func() { <-sem }()
			if cl.WaitConnected(rampCtx) == nil {
				connected.Add(1)
			} else {
				failed.Add(1)
			}
		}()
	}
	launch.Wait()
	rampTook := time.Since(rampStart)
	serverCPU1, cpuOK := t.cpu()
	selfCPU1 := selfCPU()
	close(stopSampling)
	<-sampleDone
	if *profPhase == "ramp" {
		prof.stop()
	}
	if startErr != nil {
		return startErr
	}
	up := connected.Load()
	r.Series = map[string]any{"connected_each_second": series}
	r.result("connected", up, "")
	if f := failed.Load(); f > 0 || int(up) < *n {
		r.result("not connected", int64(*n)-up, "")
	}
	r.result("ramp took", round(rampTook.Seconds(), 2), "s")
	r.result("handshakes/s (mean over the ramp)", round(float64(up)/rampTook.Seconds(), 0), "")
	best := int64(0)
	for i := range series {
		prev := int64(0)
		if i > 0 {
			prev = series[i-1]
		}
		best = max(best, series[i]-prev)
	}
	r.result("handshakes/s (best second)", best, "")
	if inProcess {
		cpu := (selfCPU1 - selfCPU0).Seconds()
		r.result("CPU per handshake, both ends (process)", round(cpu/float64(max(up, 1))*1e6, 0), "µs")
	} else {
		if cpuOK {
			cpu := (serverCPU1 - serverCPU0).Seconds()
			r.result("server CPU per handshake", round(cpu/float64(max(up, 1))*1e6, 0), "µs")
			if cpu > 0 {
				r.result("handshakes/s per server core", round(float64(up)/cpu, 0), "")
			}
		}
		r.result("load generator CPU per handshake", round((selfCPU1-selfCPU0).Seconds()/float64(max(up, 1))*1e6, 0), "µs")
	}
	if up == 0 {
		return fmt.Errorf("no connection was established")
	}

	// At rest.
	select {
	case <-time.After(*settle):
	case <-ctx.Done():
		return ctx.Err()
	}
	if s := t.serverConnections(); s >= 0 {
		r.result("server sessions", s, "")
	}
	per := func(delta float64) float64 { return round(delta/float64(up)/1024, 2) }
	slab := procKB("/proc/meminfo", "Slab:")*1024 - slabBefore
	if inProcess {
		after := readMem()
		share := readShare()
		r.result("process RSS per connection (both ends)", per(float64(after.RSS-before.RSS)), "KiB")
		r.result("process Go heap per connection (both ends)", per(float64(after.HeapInuse)-float64(before.HeapInuse)), "KiB")
		r.result("process stacks per connection (both ends)", per(float64(after.StackInuse)-float64(before.StackInuse)), "KiB")
		r.result("process goroutines per connection (both ends)", round(float64(after.Goroutines-before.Goroutines)/float64(up), 2), "")
		sg := share.Goroutines[sideServer] - shareBefore.Goroutines[sideServer]
		cg := share.Goroutines[sideClient] - shareBefore.Goroutines[sideClient]
		sh := share.Heap[sideServer] - shareBefore.Heap[sideServer]
		ch := share.Heap[sideClient] - shareBefore.Heap[sideClient]
		oh := share.Heap[sideOther] - shareBefore.Heap[sideOther]
		stack := float64(after.StackInuse) - float64(before.StackInuse)
		sStack := 0.0
		if sg+cg > 0 {
			sStack = stack * float64(sg) / float64(sg+cg)
		}
		r.result("server goroutines per connection", round(float64(sg)/float64(up), 2), "")
		r.result("client goroutines per connection", round(float64(cg)/float64(up), 2), "")
		r.result("server heap per connection (profile)", per(sh), "KiB")
		r.result("client heap per connection (profile)", per(ch), "KiB")
		if oh > float64(up)*64 {
			r.result("unattributed heap per connection", per(oh), "KiB")
		}
		r.result("server stacks per connection (estimate)", per(sStack), "KiB")
		r.result("server heap + stacks per connection", per(sh+sStack), "KiB")
		r.note("--spawn: client and server share this process; the server's heap is attributed from the heap profile (MemProfileRate %d), its stacks in proportion to its goroutines; run --spawn-process for the server's own RSS", memProfileRate)
	} else {
		after := t.serverMem()
		if after.OK && before.OK {
			r.result("server RSS per connection", per(float64(after.RSS-before.RSS)), "KiB")
			if after.HeapInuse > 0 {
				r.result("server Go heap per connection", per(float64(after.HeapInuse)-float64(before.HeapInuse)), "KiB")
				r.result("server stacks per connection", per(float64(after.StackInuse)-float64(before.StackInuse)), "KiB")
				r.result("server goroutines per connection", round(float64(after.Goroutines-before.Goroutines)/float64(up), 2), "")
			}
			r.result("server RSS total", round(float64(after.RSS)/(1<<20), 1), "MiB")
			if !after.AfterGC && after.HeapInuse > 0 {
				r.note("heap figures from /metrics, not after a GC: they include garbage")
			}
		} else {
			r.note("no server memory figures: give --chatd-pid and --metrics with --server")
		}
		gen := readMem()
		r.result("load generator RSS per connection", per(float64(gen.RSS-genBefore.RSS)), "KiB")
	}
	r.result("kernel slab per connection (both ends)", per(float64(slab)), "KiB")

	if *profPhase == "rest" {
		if err := prof.start(); err != nil {
			return err
		}
	}
	restS0, restOK0 := t.cpu()
	self0 := selfCPU()
	select {
	case <-time.After(*rest):
	case <-ctx.Done():
		return ctx.Err()
	}
	restS1, restOK1 := t.cpu()
	self1 := selfCPU()
	prof.stop()
	if inProcess {
		pct := (self1 - self0).Seconds() / rest.Seconds() * 100
		r.result("CPU at rest, both ends (process)", round(pct, 2), "% of a core")
		r.result("CPU at rest per 1,000 connections", round(pct/float64(up)*1000, 3), "% of a core")
	} else {
		if restOK0 && restOK1 {
			pct := (restS1 - restS0).Seconds() / rest.Seconds() * 100
			r.result("server CPU at rest", round(pct, 2), "% of a core")
			r.result("server CPU at rest per 1,000 connections", round(pct/float64(up)*1000, 3), "% of a core")
		}
		r.result("load generator CPU at rest", round((self1-self0).Seconds()/rest.Seconds()*100, 2), "% of a core")
	}
	reconnects := 0
	for _, cl := range clients {
		if cl != nil {
			reconnects += cl.Status().Reconnects
		}
	}
	r.result("client reconnects", reconnects, "")
	return r.finish(c, stdout)
}

// cpu is the server's CPU time so far, when it is another process (ok false otherwise).
func (t *target) cpu() (time.Duration, bool) {
	if t.pid <= 0 {
		return 0, false
	}
	d, err := procCPU(t.pid)
	return d, err == nil
}

// storeWrites returns the store's committed transactions and write operations so far: from the
// in-process node, or from chatd's metrics.
func (t *target) storeWrites() (commits, ops float64, ok bool) {
	if t.node != nil {
		st := t.node.Store.WriterStats()
		return float64(st.Commits), float64(st.Ops), true
	}
	if t.metrics == "" {
		return 0, 0, false
	}
	vals, err := scrape(t.metrics)
	if err != nil {
		return 0, 0, false
	}
	commits, ok1 := vals["chatd_store_commits_total"]
	ops, ok2 := vals["chatd_store_write_ops_total"]
	return commits, ops, ok1 && ok2
}

// phaseProfiler profiles one phase: this process to --cpuprofile and, when chatd is the serve-node
// child, the child to --cpuprofile + ".server".
type phaseProfiler struct {
	c       *common
	t       *target
	stopper func()
}

func (p *phaseProfiler) start() error {
	if p.c.cpuProfile == "" {
		return nil
	}
	stop, err := p.c.startProfile()
	if err != nil {
		return err
	}
	p.stopper = stop
	if p.t.control != "" {
		var ok bool
		if err := getJSON(p.t.control+"?cpuprofile="+url.QueryEscape(p.c.cpuProfile+".server"), &ok); err != nil {
			return fmt.Errorf("server profile: %w", err)
		}
	}
	return nil
}

func (p *phaseProfiler) stop() {
	if p.stopper == nil {
		return
	}
	p.stopper()
	p.stopper = nil
	if p.t.control != "" {
		var ok bool
		getJSON(p.t.control+"?cpuprofile=stop", &ok)
	}
}
