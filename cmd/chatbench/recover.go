package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/content"
	"github.com/chatd-dev/chatd/internal/labchatd"
	"github.com/chatd-dev/chatd/internal/netlab"
)

const recoverHelp = `Usage: chatbench recover [-n N] [--blackhole-n M] [--scenarios LIST] [flags]

How fast a client recovers from what enterprise networks do to port 5222 and to long-lived connections
(DESIGN §2 N2 and N4, §6), measured in the network lab (internal/netlab, the same as the lab tests):

  client 198.18.0.2 ── [box: routes, nftables faults] ── server 198.19.0.2

three network namespaces joined by veth pairs, no latency added. The real chatd binary runs in the
server namespace (serve --dev, raw chatd on 5222, TLS and WebSocket on 443); the clients (the client
library with its default settings, as bizapi uses it) run in this process with their sockets in the
client namespace. A device is registered over HTTPS first, and one untimed connect warms the server up.
Needs root, ip, nft, ss and sysctl; it fails with the list of what is missing.

Scenarios (--scenarios, comma-separated, run in this order):
  open            nothing blocked: the baseline connect, over tcp:5222.
  refused         the box REJECTs 5222 with a TCP reset: the client should be on the 443 path at
                  once. Target ≤ 300 ms.
  dropped         the box DROPs 5222 silently (no SYN-ACK, as most firewalls): the 443 path starts
                  after its 250 ms head start. Target ≤ 1 s.
  dropped+loss    5222 dropped and --loss % of all packets lost both ways (SYN retransmits: a tail
                  of ~1 s connects is expected). No target.
  blackhole-idle  connected on 5222 and idle (the connection carried nothing for --quiet), the box
                  then drops both directions of that connection: the time from the blackhole until
                  the client is connected again on a new connection. Detected by TCP keepalive (after
                  15 s idle, probes every 5 s, ended by TCP_USER_TIMEOUT) or the pings (25 s ± 5 s,
                  pong timeout 10 s), whichever first. Target ≤ 35 s.
  blackhole-send  the same blackhole, then a send: the time from the send until the server
                  acknowledges it (stored durably), which needs a new connection; the dead one is
                  detected by TCP_USER_TIMEOUT (7 s of unacknowledged data). Target ≤ 10 s.

The dial scenarios run -n trials, each a fresh client (no remembered path, re-probing off) from
start to logged in, 10 s at most; the blackhole ones run --blackhole-n trials (each ~10–25 s), each a
fresh client whose connection is blackholed once, 90 s at most.

Reports, per scenario:
  dial mean/p50/max          Status.DialTime: the client's own measure of its connect (the race of the
                             5222 and 443 paths, the Noise handshake, the login) (as BenchmarkFallback)
  to connected mean/p50/max  blackhole-idle: blackhole → connected again on a new connection
  to acked mean/p50/max      blackhole-send: send → its acknowledgement
  path                       where the clients ended up, transport:port (tcp:5222 direct, tls:443 TLS
                             1.3, ws:443 WebSocket over HTTPS) and how many times
  closed as                  blackhole: how the client named the end of the dead connection
                             (Status.LastClose): connection_lost when the kernel gave up on it (TCP
                             keepalive or TCP_USER_TIMEOUT: "connection timed out"), pong_timeout when a
                             ping went unanswered
  target                     the DESIGN §6 target, judged on the worst trial: met or NOT met
  failed trials              trials that did not finish in time (the first error is in the notes)
p50 is the median trial (nearest rank); times are wall-clock milliseconds.

Examples:
  chatbench recover
  chatbench recover -n 50 --scenarios refused,dropped --json recover.json
  chatbench recover --scenarios blackhole-idle,blackhole-send --blackhole-n 10
  chatbench recover --scenarios blackhole-idle --keepalive 5s --user-timeout 2s   # shorter client settings
`

// recoverScenarios are the scenarios in the order they run.
var recoverScenarios = []recoverScenario{
	{name: "open", kind: dialTrial, rules: func(int) []string { return nil }},
	{name: "refused", kind: dialTrial, rules: func(int) []string { return []string{netlab.Reject(5222)} }, target: 300 * time.Millisecond},
	{name: "dropped", kind: dialTrial, rules: func(int) []string { return []string{netlab.Drop(5222)} }, target: time.Second},
	{name: "dropped+loss", kind: dialTrial, rules: func(loss int) []string { return []string{netlab.Drop(5222), netlab.Loss(loss)} }},
	{name: "blackhole-idle", kind: idleTrial, target: 35 * time.Second},
	{name: "blackhole-send", kind: sendTrial, target: 10 * time.Second},
}

type trialKind int

const (
	dialTrial trialKind = iota
	idleTrial
	sendTrial
)

// figure is the name of what a trial of kind measures.
func (k trialKind) figure() string {
	switch k {
	case idleTrial:
		return "to connected"
	case sendTrial:
		return "to acked"
	}
	return "dial"
}

type recoverScenario struct {
	name   string
	kind   trialKind
	rules  func(loss int) []string // the box's rules, for dial trials
	target time.Duration           // 0: none
}

// recoverFlags are the settings of a run.
type recoverFlags struct {
	n, blackholeN, loss    int
	quiet                  time.Duration
	keepalive, userTimeout time.Duration
	chatd                  string
}

// outcome collects a scenario's trials.
type outcome struct {
	times    []time.Duration
	paths    map[string]int
	closes   map[string]int
	failed   int
	firstErr string
}

func cmdRecover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f recoverFlags
	c, fs := newFlagSet("recover", recoverHelp, stderr)
	fs.IntVar(&f.n, "n", 10, "trials per dial scenario (open, refused, dropped, dropped+loss)")
	fs.IntVar(&f.blackholeN, "blackhole-n", 3, "trials per blackhole scenario (blackhole-idle, blackhole-send; each takes ~10–25 s)")
	var names []string
	for _, s := range recoverScenarios {
		names = append(names, s.name)
	}
	list := fs.String("scenarios", strings.Join(names, ","), "comma-separated scenarios to run (they run in the order above, whatever the order here)")
	fs.IntVar(&f.loss, "loss", 5, "dropped+loss: percent of the packets the box drops at random, in both directions")
	fs.DurationVar(&f.quiet, "quiet", 2*time.Second, "blackhole scenarios: blackhole only after the connection carried no data for this long (the kernel's lastsnd/lastrcv), so that nothing is in flight")
	fs.DurationVar(&f.keepalive, "keepalive", 0, "the clients' TCPKeepAlive: idle time before TCP keepalive probes (0: the library default, 15 s; negative: none)")
	fs.DurationVar(&f.userTimeout, "user-timeout", 0, "the clients' TCPUserTimeout: how long sent data may stay unacknowledged (0: the library default, 7 s; negative: the kernel default)")
	fs.StringVar(&f.chatd, "chatd", "", "the chatd binary to run in the server namespace (default: go build of ./cmd/chatd into a temporary folder, which needs the Go toolchain and the working directory inside the chatd source tree)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if f.n < 1 || f.blackholeN < 1 {
		return errors.New("-n and --blackhole-n must be at least 1")
	}
	if f.loss < 0 || f.loss > 100 {
		return errors.New("--loss is a percentage, 0 to 100")
	}
	var run []recoverScenario
	want := map[string]bool{}
	for _, name := range strings.Split(*list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !slices.Contains(names, name) {
			return fmt.Errorf("--scenarios: unknown scenario %q (known: %s)", name, strings.Join(names, ", "))
		}
		want[name] = true
	}
	for _, s := range recoverScenarios {
		if want[s.name] {
			run = append(run, s)
		}
	}
	if len(run) == 0 {
		return errors.New("--scenarios: none given")
	}
	if err := netlab.Check("ss", "sysctl"); err != nil {
		return fmt.Errorf("%w (run as root on Linux with iproute2, nftables and procps installed)", err)
	}

	r := newReport("recover", args)
	var ran []string
	for _, s := range run {
		ran = append(ran, s.name)
	}
	r.param("scenarios", strings.Join(ran, ", "), "")
	r.param("trials per dial scenario", f.n, "")
	r.param("trials per blackhole scenario", f.blackholeN, "")
	if want["dropped+loss"] {
		r.param("loss (dropped+loss)", f.loss, "% both ways")
	}
	if want["blackhole-idle"] || want["blackhole-send"] {
		r.param("quiet before a blackhole", f.quiet.String(), "")
	}
	r.param("client TCP keepalive", durationOr(f.keepalive, "15s (default)"), "")
	r.param("client TCP user timeout", durationOr(f.userTimeout, "7s (default)"), "")
	r.param("network", "netlab: client 198.18.0.2 → box (nftables) → server 198.19.0.2, veth, no added latency", "")

	bin := f.chatd
	if bin == "" {
		dir, err := os.MkdirTemp("", "chatbench-recover-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		c.logf("building chatd")
		if bin, err = labchatd.Build(dir, "chatd"); err != nil {
			return fmt.Errorf("%w\n(or pass --chatd PATH)", err)
		}
		r.param("chatd", "go build ./cmd/chatd (this source tree)", "")
	} else {
		r.param("chatd", bin, "")
	}

	outcomes := map[string]*outcome{}
	// The lab's logs (chatd's log when a run fails), but not after an interrupt unless -v.
	logf := func(format string, args ...any) {
		if ctx.Err() == nil || c.verbose {
			fmt.Fprintf(stderr, "chatbench: "+format+"\n", args...)
		}
	}
	err := netlab.Run(logf, func(t netlab.TB) error {
		c.logf("building the lab")
		l := netlab.New(t)
		c.logf("starting chatd in %s", l.Server.Name)
		s := labchatd.Start(t, l, bin)
		dev := s.Register(s.Reg(l.Server, nil), "15550000201")
		const recipient = "15550000202" // registered, never online: the server stores what it gets
		s.Register(s.Reg(l.Server, nil), recipient)
		cfg := s.ClientConfig(l.Client, dev)
		cfg.ClientVersion = "chatbench"
		cfg.TCPKeepAlive, cfg.TCPUserTimeout = f.keepalive, f.userTimeout
		dialCfg := cfg
		dialCfg.ReprobeInterval = -1
		if _, err := labchatd.Connect(ctx, dialCfg, 10*time.Second); err != nil {
			return fmt.Errorf("warm-up connect with nothing blocked: %w", err)
		}
		stopProfile, err := c.startProfile()
		if err != nil {
			return err
		}
		defer stopProfile()
		for _, sc := range run {
			o := &outcome{paths: map[string]int{}, closes: map[string]int{}}
			outcomes[sc.name] = o
			n := f.n
			if sc.kind != dialTrial {
				n = f.blackholeN
			}
			if sc.kind == dialTrial {
				l.SetRules(sc.rules(f.loss)...)
			}
			for i := range n {
				var took time.Duration
				var st client.Status
				var err error
				switch sc.kind {
				case dialTrial:
					st, err = labchatd.Connect(ctx, dialCfg, 10*time.Second)
					took = st.DialTime
				default:
					l.SetRules()
					took, st, err = blackholeTrial(ctx, l, cfg, sc.kind, recipient, f.quiet)
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if err != nil {
					c.logf("%s trial %d: %v", sc.name, i+1, err)
					o.failed++
					if o.firstErr == "" {
						o.firstErr = err.Error()
					}
					continue
				}
				c.logf("%s trial %d: %v over %s:%d", sc.name, i+1, took.Round(time.Millisecond), st.Transport, st.Port)
				o.times = append(o.times, took)
				o.paths[fmt.Sprintf("%s:%d", st.Transport, st.Port)]++
				if sc.kind != dialTrial {
					o.closes[st.LastClose]++
				}
			}
		}
		l.SetRules()
		return nil
	})
	if err != nil {
		return err
	}
	for _, sc := range run {
		recoverResults(r, sc, outcomes[sc.name])
	}
	return r.finish(c, stdout)
}

// blackholeTrial runs a fresh client with cfg until it is connected on 5222 and its connection was
// quiet for quiet, blackholes that connection at the box and measures: for idleTrial the time until
// the client is connected again on a new connection, for sendTrial the time from a send to recipient
// until its acknowledgement. The status is the client's at the end.
func blackholeTrial(ctx context.Context, l *netlab.Lab, cfg client.Config, kind trialKind, recipient string, quiet time.Duration) (time.Duration, client.Status, error) {
	c, err := client.New(cfg)
	if err != nil {
		return 0, client.Status{}, err
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { c.Run(cctx); close(done) }()
	defer func() { cancel(); <-done }()
	wctx, wcancel := context.WithTimeout(cctx, 10*time.Second)
	err = c.WaitConnected(wctx)
	wcancel()
	if err != nil {
		return 0, c.Status(), fmt.Errorf("not connected within 10 s with nothing blocked: %v", err)
	}
	if st := c.Status(); st.Port != 5222 {
		return 0, st, fmt.Errorf("connected over %s:%d with nothing blocked, want tcp:5222", st.Transport, st.Port)
	}
	l.WaitClientQuiet(5222, quiet, 30*time.Second)
	before := c.Status().Reconnects
	l.BlackholeClient(5222)
	start := time.Now()
	const limit = 90 * time.Second
	switch kind {
	case idleTrial:
		for {
			st := c.Status()
			if st.State == client.Connected && st.Reconnects > before {
				return time.Since(start), st, nil
			}
			if time.Since(start) > limit {
				return 0, st, fmt.Errorf("not connected again within %v of the blackhole: %s %s", limit, st.LastClose, st.LastError)
			}
			select {
			case <-ctx.Done():
				return 0, st, ctx.Err()
			case <-time.After(5 * time.Millisecond): // polling the client's state
			}
		}
	default:
		sctx, scancel := context.WithTimeout(cctx, limit)
		defer scancel()
		_, err := c.Send(sctx, recipient, "", content.Text("chatbench recover: sent into a blackhole"))
		took := time.Since(start)
		st := c.Status()
		if err != nil {
			return 0, st, fmt.Errorf("send not acknowledged within %v of the blackhole: %v (%s %s)", limit, err, st.LastClose, st.LastError)
		}
		if st.Reconnects <= before {
			return 0, st, errors.New("the send was acknowledged without a new connection: the blackhole did not hold")
		}
		return took, st, nil
	}
}

// recoverResults adds a scenario's figures to r.
func recoverResults(r *report, sc recoverScenario, o *outcome) {
	p := sc.name + ": "
	fig := sc.kind.figure()
	if len(o.times) > 0 {
		sorted := slices.Clone(o.times)
		slices.Sort(sorted)
		var sum time.Duration
		for _, d := range sorted {
			sum += d
		}
		ms := func(d time.Duration) float64 { return round(float64(d.Microseconds())/1000, 1) }
		r.result(p+fig+" mean", ms(sum/time.Duration(len(sorted))), "ms")
		r.result(p+fig+" p50", ms(sorted[(len(sorted)-1)/2]), "ms")
		r.result(p+fig+" max", ms(sorted[len(sorted)-1]), "ms")
		r.result(p+"path", countList(o.paths), "")
		if len(o.closes) > 0 {
			r.result(p+"closed as", countList(o.closes), "")
		}
	}
	if sc.target > 0 {
		verdict := "met"
		switch {
		case len(o.times) == 0:
			verdict = "NOT met (no trial finished)"
		case o.failed > 0:
			verdict = fmt.Sprintf("NOT met (%d trials failed)", o.failed)
		case slices.Max(o.times) > sc.target:
			verdict = fmt.Sprintf("NOT met (max %v)", slices.Max(o.times).Round(time.Millisecond))
		}
		r.result(p+"target", fmt.Sprintf("≤ %v: %s", sc.target, verdict), "")
	}
	if o.failed > 0 {
		r.result(p+"failed trials", float64(o.failed), "")
		r.note("%s: %d of %d trials failed; the first: %s", sc.name, o.failed, o.failed+len(o.times), o.firstErr)
	}
}

// countList renders counts as "a ×3, b ×1", most first.
func countList(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range keys {
		name := k
		if name == "" {
			name = "(none)"
		}
		parts = append(parts, fmt.Sprintf("%s ×%d", name, m[k]))
	}
	return strings.Join(parts, ", ")
}

func durationOr(d time.Duration, def string) string {
	if d == 0 {
		return def
	}
	return d.String()
}
