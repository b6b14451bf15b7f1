// Package netlab builds small networks of Linux network namespaces for tests: a client host, a
// middlebox that routes between it and a server host, and the faults of real enterprise networks —
// nftables DROP and REJECT, a stateful firewall that forgets idle connections (conntrack), blackholed
// connections, latency and loss (tc netem), an nginx that lets only TLS through on 443, and a squid
// that allows CONNECT to 443 only.
//
//	client 198.18.0.2 ── eth0 [box 198.18.0.1 | 198.19.0.1] eth1 ── server 198.19.0.2
//
// The box forwards between the two links; its nftables table "lab" holds the faults. Every lab has
// its own namespaces, so tests run in parallel with the same addresses. Programs run in a host with
// Host.Command (ip netns exec); the test process itself reaches into a host with Host.DialContext
// and Host.Listen, which create their sockets on a thread switched into the namespace.
//
// It needs root, iproute2 and nftables (and nginx, squid, conntrack and tc for those faults).
// Require skips a test without them, or fails it when the environment variable CI is set, so that a
// CI run can never pass by skipping the lab; Check tells a command the same. scripts/netlab.sh builds
// the same network by hand.
//
// A lab belongs to a TB: a test's *testing.T or *testing.B, or, in a command (chatbench recover), the
// one Run provides, which turns Fatalf into an error and runs the cleanups when the work is done.
package netlab

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Addresses of the lab.
const (
	ClientAddr   = "198.18.0.2"
	BoxInAddr    = "198.18.0.1" // the box on the client's link
	BoxOutAddr   = "198.19.0.1" // the box on the server's link
	ServerAddr   = "198.19.0.2"
	BoxClientDev = "eth0" // the box's interface to the client
	BoxServerDev = "eth1" // the box's interface to the server
)

// Check reports what the lab lacks here, as an error naming it: root, and the named programs (ip and
// nft always); nil when nothing is missing. Require is its rule for tests; a command (chatbench
// recover) calls it to fail with a clear message.
func Check(programs ...string) error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, p := range append([]string{"ip", "nft"}, programs...) {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("network lab needs %s", strings.Join(missing, ", "))
}

// Require skips t unless the lab can run here (Check). When the environment variable CI is set, a
// missing prerequisite fails the test instead.
func Require(t TB, programs ...string) {
	t.Helper()
	err := Check(programs...)
	if err == nil {
		return
	}
	msg := err.Error() + " (.ci/run installs them)"
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; CI is set, so this is a failure, not a skip", msg)
	}
	t.Skipf("%s", msg)
}

// Lab is one client–box–server network.
type Lab struct {
	t                   TB
	Client, Box, Server *Host
}

// Host is a network namespace of a lab.
type Host struct {
	t    TB
	Name string // the namespace's name, for ip netns exec
}

var labs atomic.Int32

// New builds a lab and removes it when the test ends. It calls Require first.
func New(t TB) *Lab {
	t.Helper()
	Require(t)
	removeStale()
	prefix := fmt.Sprintf("lab%d-%d-", os.Getpid(), labs.Add(1))
	l := &Lab{t: t}
	for _, h := range []**Host{&l.Client, &l.Box, &l.Server} {
		*h = &Host{t: t}
	}
	l.Client.Name, l.Box.Name, l.Server.Name = prefix+"client", prefix+"box", prefix+"server"
	for _, h := range []*Host{l.Client, l.Box, l.Server} {
		run(t, "ip", "netns", "add", h.Name)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", h.Name).Run() })
		h.MustRun("ip", "link", "set", "lo", "up")
	}
	run(t, "ip", "link", "add", "eth0", "netns", l.Client.Name, "type", "veth", "peer", "name", BoxClientDev, "netns", l.Box.Name)
	run(t, "ip", "link", "add", "eth0", "netns", l.Server.Name, "type", "veth", "peer", "name", BoxServerDev, "netns", l.Box.Name)
	l.Client.MustRun("ip", "addr", "add", ClientAddr+"/24", "dev", "eth0")
	l.Client.MustRun("ip", "link", "set", "eth0", "up")
	l.Client.MustRun("ip", "route", "add", "default", "via", BoxInAddr)
	l.Server.MustRun("ip", "addr", "add", ServerAddr+"/24", "dev", "eth0")
	l.Server.MustRun("ip", "link", "set", "eth0", "up")
	l.Server.MustRun("ip", "route", "add", "default", "via", BoxOutAddr)
	l.Box.MustRun("ip", "addr", "add", BoxInAddr+"/24", "dev", BoxClientDev)
	l.Box.MustRun("ip", "addr", "add", BoxOutAddr+"/24", "dev", BoxServerDev)
	l.Box.MustRun("ip", "link", "set", BoxClientDev, "up")
	l.Box.MustRun("ip", "link", "set", BoxServerDev, "up")
	l.Box.MustRun("sysctl", "-qw", "net.ipv4.ip_forward=1")
	l.SetRules()
	return l
}

// removeStale deletes the namespaces of labs whose test process is gone (a test binary killed by
// its timeout runs no cleanup).
func removeStale() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(line, " ")
		var pid, n int
		var host string
		if c, _ := fmt.Sscanf(strings.ReplaceAll(name, "-", " "), "lab%d %d %s", &pid, &n, &host); c != 3 {
			continue
		}
		if err := unix.Kill(pid, 0); err == unix.ESRCH {
			exec.Command("ip", "netns", "del", name).Run()
		}
	}
}

func run(t TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Command returns a command that runs in h (ip netns exec, which execs the program: its process id
// is the program's).
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.Name, name}, args...)...)
}

// Run runs a command in h and returns its combined output.
func (h *Host) Run(name string, args ...string) (string, error) {
	out, err := h.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w\n%s", name, strings.Join(args, " "), h.Name, err, out)
	}
	return string(out), nil
}

// MustRun is Run that fails the test on error.
func (h *Host) MustRun(name string, args ...string) string {
	h.t.Helper()
	out, err := h.Run(name, args...)
	if err != nil {
		h.t.Fatalf("%v", err)
	}
	return out
}

// NFT loads an nftables ruleset (nft -f) into h.
func (h *Host) NFT(ruleset string) error {
	cmd := h.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w\n%s\nruleset:\n%s", h.Name, err, out, ruleset)
	}
	return nil
}

// Do runs f on an OS thread switched into h's namespace. Sockets f creates belong to h and keep
// working from any goroutine afterwards.
func (h *Host) Do(f func() error) error {
	target, err := os.Open("/run/netns/" + h.Name)
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		// A thread whose namespace could not be restored is never unlocked: the runtime ends it
		// with the goroutine instead of reusing it.
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", h.Name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// DialContext dials from h. It fits client.Config.Dial and http.Transport.DialContext.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var err error
		c, err = (&net.Dialer{KeepAlive: -1}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens in h.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := h.Do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// SetRules replaces the box's forward filter with rules (nft rule statements, one per string) after
// the fixed first rule that drops packets conntrack calls invalid — so that a connection whose state
// the box forgot is dead, as behind a real stateful firewall.
func (l *Lab) SetRules(rules ...string) {
	l.t.Helper()
	var b bytes.Buffer
	b.WriteString("table inet lab\ndelete table inet lab\ntable inet lab {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tct state invalid drop\n")
	for _, r := range rules {
		fmt.Fprintf(&b, "\t\t%s\n", r)
	}
	b.WriteString("\t}\n}\n")
	if err := l.Box.NFT(b.String()); err != nil {
		l.t.Fatalf("%v", err)
	}
}

// Reject is the rule that refuses TCP to port with a reset; Drop the one that drops it silently.
func Reject(port int) string { return fmt.Sprintf("tcp dport %d reject with tcp reset", port) }
func Drop(port int) string   { return fmt.Sprintf("tcp dport %d drop", port) }

// Blackhole is the rule that drops both directions of the connections from client port p.
func Blackhole(p int) []string {
	return []string{fmt.Sprintf("tcp sport %d drop", p), fmt.Sprintf("tcp dport %d drop", p)}
}

// IdleTimeout makes the box forget established TCP connections idle for secs seconds (the
// conntrack timeout, with loose pickup off so that a forgotten connection's packets are invalid and
// dropped).
func (l *Lab) IdleTimeout(secs int) {
	l.t.Helper()
	l.Box.MustRun("sysctl", "-qw", fmt.Sprintf("net.netfilter.nf_conntrack_tcp_timeout_established=%d", secs),
		"net.netfilter.nf_conntrack_tcp_loose=0")
}

// Netem puts latency and loss on the box's link to the server (both directions pass it once), e.g.
// Netem("delay", "50ms", "loss", "1%"). It skips the test (fails it when CI is set) where the kernel
// has no netem qdisc: some sandbox kernels are built without it. Loss alone works everywhere with
// the Loss rule.
func (l *Lab) Netem(args ...string) {
	l.t.Helper()
	out, err := l.Box.Run("tc", append([]string{"qdisc", "replace", "dev", BoxServerDev, "root", "netem"}, args...)...)
	if err == nil {
		return
	}
	if strings.Contains(out, "qdisc kind is unknown") {
		msg := "this kernel has no netem qdisc (sch_netem), so the lab cannot add latency"
		if os.Getenv("CI") != "" {
			l.t.Fatalf("%s", msg)
		}
		l.t.Skipf("%s", msg)
	}
	l.t.Fatalf("%v", err)
}

// Loss is the rule that drops percent % of the packets the box forwards, in both directions, at
// random (nftables numgen).
func Loss(percent int) string { return fmt.Sprintf("numgen random mod 100 < %d drop", percent) }

// ClientPorts returns the local ports of the client host's established TCP connections to
// remotePort.
func (l *Lab) ClientPorts(remotePort int) []int {
	l.t.Helper()
	out := l.Client.MustRun("ss", "-Htn", "state", "established", fmt.Sprintf("( dport = :%d )", remotePort))
	var ports []int
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		if _, port, err := net.SplitHostPort(f[2]); err == nil {
			var p int
			fmt.Sscan(port, &p)
			ports = append(ports, p)
		}
	}
	return ports
}

// Counter returns the packets counted by the rule of SetRules with a counter and the comment name
// (`… counter comment "NAME"`).
func (l *Lab) Counter(name string) int {
	l.t.Helper()
	out := l.Box.MustRun("nft", "list", "ruleset")
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, "counter") || !strings.Contains(line, "comment \""+name+"\"") {
			continue
		}
		f := strings.Fields(line)
		for i := range f {
			if f[i] == "packets" && i+1 < len(f) {
				var n int
				fmt.Sscan(f[i+1], &n)
				return n
			}
		}
	}
	l.t.Fatalf("no counter %q in the box's ruleset:\n%s", name, out)
	return 0
}

// ClientQuiet returns how long the client host's established connection to remotePort has sent and
// received nothing, by the kernel's own account (ss: the smaller of lastsnd and lastrcv), and false
// when there is no such connection.
func (l *Lab) ClientQuiet(remotePort int) (time.Duration, bool) {
	l.t.Helper()
	out := l.Client.MustRun("ss", "-Htni", "state", "established", fmt.Sprintf("( dport = :%d )", remotePort))
	var snd, rcv int
	found := false
	for _, f := range strings.Fields(out) {
		switch {
		case strings.HasPrefix(f, "lastsnd:"):
			fmt.Sscan(strings.TrimPrefix(f, "lastsnd:"), &snd)
			found = true
		case strings.HasPrefix(f, "lastrcv:"):
			fmt.Sscan(strings.TrimPrefix(f, "lastrcv:"), &rcv)
		}
	}
	return time.Duration(min(snd, rcv)) * time.Millisecond, found
}

// WaitClientQuiet waits until the client host's established connection to remotePort has carried
// nothing for quiet (ClientQuiet: no data in flight, nothing waiting for an acknowledgement), and
// fails when timeout passes first.
func (l *Lab) WaitClientQuiet(remotePort int, quiet, timeout time.Duration) {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for q, ok := l.ClientQuiet(remotePort); !ok || q < quiet; q, ok = l.ClientQuiet(remotePort) {
		if time.Now().After(deadline) {
			l.t.Fatalf("the client's connection to port %d never went quiet for %v within %v (quiet %v, found %v)",
				remotePort, quiet, timeout, q, ok)
		}
		time.Sleep(100 * time.Millisecond) // polling the kernel's view of the connection
	}
}

// BlackholeClient blackholes the client host's established connection to remotePort at the box
// (SetRules with Blackhole of its local port, replacing other rules) and returns that port. It fails
// unless there is exactly one such connection.
func (l *Lab) BlackholeClient(remotePort int) int {
	l.t.Helper()
	ports := l.ClientPorts(remotePort)
	if len(ports) != 1 {
		l.t.Fatalf("client connections to port %d: %v, want one", remotePort, ports)
	}
	l.SetRules(Blackhole(ports[0])...)
	return ports[0]
}
