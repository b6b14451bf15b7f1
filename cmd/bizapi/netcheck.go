package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/chatd-dev/chatd/bizapi"
	"github.com/chatd-dev/chatd/internal/cliutil"
	"github.com/chatd-dev/chatd/netcheck"
)

const netcheckUsage = `Usage: bizapi netcheck [--config FILE] [flags]

Tests whether this network lets bizapi reach chatd, and says what to change when it does not: the
HTTPS config fetch (and the clock), DNS, TCP to 5222 and 443 (connected, refused, silently dropped,
unreachable, with timings), TLS on 443 (the certificate; interception by an inspecting proxy), the
chatd handshake with a probe login on every path (5222, 443 TLS, 443 WebSocket, raw chatd on 443 —
which tells a middlebox that cuts non-TLS traffic apart — through the proxy when one is set), and,
with --idle, how long the network lets an idle connection live.

It reads bizapi's own settings (--config, or the same flags as bizapi serve: --server, --server-ca,
--proxy, --only-443, --data) and, when the data folder holds a registered number, checks the server
against the key pinned at registration. It runs next to a running bizapi.

--server URL tests the deployment's published endpoints; --server HOST (no https://) tests that one
host on 5222 and 443 (the HTTPS check then goes to https://HOST).

bizapi netcheck rules prints firewall rules from the server's signed IP address list (see
bizapi netcheck rules -h).

Exit status: 0 both ports open (recommended), 1 degraded (works, e.g. over 443 only, or with a
problem to fix), 2 broken (unsupported: 443 blocked, HTTPS blocked, or nothing works), 3 bad usage.

Flags:
`

const netcheckExamples = `
Examples:
  bizapi netcheck --config /etc/bizapi/bizapi.toml
  bizapi netcheck --server https://chat.example.com --format json
  bizapi netcheck --server chat-3.example.com                    # one server, the reference's "single server"
  bizapi netcheck --server https://chat.example.com --idle 5m    # also: how long may a connection idle?
  bizapi netcheck rules --config /etc/bizapi/bizapi.toml --format nftables > chatd.nft
  HTTPS_PROXY=http://proxy.corp:3128 bizapi netcheck --server https://chat.example.com
`

func cmdNetcheck(args []string, stdout, stderr io.Writer) error {
	err := netcheckMain(args, stdout, stderr)
	var st cliutil.ExitStatus
	if err != nil && !errors.Is(err, flag.ErrHelp) && !errors.As(err, &st) {
		fmt.Fprintln(stderr, "bizapi netcheck:", err)
		return cliutil.ExitStatus(3)
	}
	return err
}

func netcheckMain(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "rules" {
		return rulesMain(args[1:], stdout, stderr)
	}
	var f fileConfig
	fs := netcheckFlags("netcheck", &f)
	fs.StringVar(&f.Server, "server", "", "chatd's HTTPS URL (https://chat.example.com), or one HOST to test alone")
	fs.BoolVar(&f.Only443, "only-443", false, "443-only mode: 5222 is not needed, so its failure does not degrade the verdict")
	format := fs.String("format", "text", "text (with progress while it runs) or json")
	idle := fs.Duration("idle", 0, "also measure how long the network lets an idle connection live, up to this long (e.g. 5m; 0: skip)")
	timeout := fs.Duration("timeout", 5*time.Second, "time for each single check (a connect, a handshake)")
	all := fs.Bool("all", false, "also test TCP 5222 and 443 to one address of every range of the server's signed IP list")
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, netcheckUsage)
		fs.PrintDefaults()
		fmt.Fprint(stderr, netcheckExamples)
	}
	if err := cliutil.ParseWithConfig(fs, args, &f); err != nil {
		return err
	}
	if *format != "text" && *format != "json" {
		return fmt.Errorf("--format %q: use text or json", *format)
	}
	if *idle < 0 || *idle > 15*time.Minute {
		return fmt.Errorf("--idle %v: use a duration up to 15m", *idle)
	}
	host := ""
	if f.Server != "" && !strings.Contains(f.Server, "://") {
		host = f.Server
		f.Server = "https://" + f.Server
	}
	if f.Server == "" {
		return errors.New("no server: give --server https://chat.example.com (or HOST), or --config with server = …")
	}
	cfg, err := f.daemonConfig()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	nc, err := bizapi.NetcheckConfig(ctx, cfg)
	if err != nil {
		return err
	}
	nc.Server, nc.Idle, nc.Timeout, nc.AllRanges = host, *idle, *timeout, *all
	if *format == "text" {
		fmt.Fprintf(stdout, "Checking the network to %s", cfg.ServerURL)
		if *idle > 0 {
			fmt.Fprintf(stdout, " (with an idle test of up to %v)", *idle)
		}
		fmt.Fprintln(stdout, " …")
		nc.Progress = func(s netcheck.Step) { netcheck.PrintStep(stdout, s) }
	}
	rep := netcheck.Run(ctx, nc)
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(stdout)
		rep.Render(stdout)
	}
	if code := rep.Verdict.ExitCode(); code != 0 {
		return cliutil.ExitStatus(code)
	}
	return nil
}

// netcheckFlags are the flags netcheck and netcheck rules share: where bizapi's settings are.
func netcheckFlags(name string, f *fileConfig) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.String("config", "", "bizapi's TOML config file (flags override it)")
	fs.StringVar(&f.DataDir, "data", "bizapi-data", "bizapi's data folder, for the keys pinned at registration (none: the keys from /v1/config)")
	fs.StringVar(&f.ServerCA, "server-ca", "", "PEM file of the CA of chatd's certificate (chatd dev mode: DATA/tls/ca.pem); default: system roots")
	fs.StringVar(&f.Proxy, "proxy", "", cliutil.ProxyHelp)
	return fs
}

const rulesUsage = `Usage: bizapi netcheck rules [--format nftables|iptables|cidr] [--table T] [--chain C] [flags]

Downloads the server's IP address list over HTTPS (GET /v1/iplist.zip), verifies its signature with the
operator key pinned at registration (before registration: the key in /v1/config, with a warning),
refuses a tampered, foreign or expired list, and prints firewall rules that allow outbound TCP 5222
and 443 to the listed ranges:

  nftables  a script for "nft -f" adding two sets and two accept rules to chain --chain of table
            inet --table (default filter/output; filter/forward on a router)
  iptables  iptables/ip6tables commands appending ACCEPT rules to --chain (default OUTPUT)
  cidr      the ranges, one per line

Flags:
`

func rulesMain(args []string, stdout, stderr io.Writer) error {
	var f fileConfig
	fs := netcheckFlags("netcheck rules", &f)
	fs.StringVar(&f.Server, "server", "", "chatd's HTTPS URL, e.g. https://chat.example.com")
	format := fs.String("format", "nftables", strings.Join(netcheck.RuleFormats, ", "))
	table := fs.String("table", "filter", "nftables: the inet table to add to")
	chain := fs.String("chain", "", `the chain to add to (default "output" for nftables, "OUTPUT" for iptables)`)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, rulesUsage)
		fs.PrintDefaults()
	}
	if err := cliutil.ParseWithConfig(fs, args, &f); err != nil {
		return err
	}
	if f.Server == "" {
		return errors.New("no server: give --server https://chat.example.com, or --config with server = …")
	}
	if *chain == "" {
		*chain = map[bool]string{true: "OUTPUT", false: "output"}[*format == "iptables"]
	}
	cfg, err := f.daemonConfig()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nc, err := bizapi.NetcheckConfig(ctx, cfg)
	if err != nil {
		return err
	}
	cc, err := netcheck.FetchConfig(ctx, nc)
	if err != nil && nc.OperatorKey == nil {
		return err
	}
	l, pinned, err := netcheck.FetchIPList(ctx, nc, cc)
	if err != nil {
		return fmt.Errorf("the IP address list: %w", err)
	}
	if !pinned {
		fmt.Fprintln(stderr, "bizapi netcheck rules: warning: verified with the operator key the server publishes now; register first to verify against a pinned key")
	}
	if !l.Effective(time.Now()) {
		fmt.Fprintf(stderr, "bizapi netcheck rules: note: this list takes effect on %s\n", l.EffectiveFrom.Format("2006-01-02"))
	}
	out, err := netcheck.Rules(l, *format, *table, *chain, netcheck.DeploymentPorts(cc))
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, out)
	return err
}
