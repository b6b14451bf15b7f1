package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/internal/netlab"
)

// Smoke tests: every subcommand runs for a second or two with tiny parameters, and reports. They
// assert only that it works and what it reports, never timings.

func TestMain(m *testing.M) {
	// conns and api --spawn-process re-execute this binary as their server child.
	if len(os.Args) > 1 && (os.Args[1] == "serve-node" || os.Args[1] == "serve-api") {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// runBench runs chatbench with args and returns its report, read back from --json.
func runBench(t *testing.T, args ...string) (*report, string) {
	t.Helper()
	jf := filepath.Join(t.TempDir(), "report.json")
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if code := run(ctx, append(args, "--json", jf), &out, &errb); code != 0 {
		t.Fatalf("chatbench %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out.String(), errb.String())
	}
	t.Logf("chatbench %s:\n%s", strings.Join(args, " "), out.String())
	b, err := os.ReadFile(jf)
	if err != nil {
		t.Fatal(err)
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("report JSON: %v\n%s", err, b)
	}
	for _, want := range []string{"machine:", "software:", "parameters:", "results:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if r.Machine.Cores == 0 || r.Machine.Kernel == "" || r.Go == "" || len(r.Params) == 0 {
		t.Errorf("report lacks the machine, versions or parameters: %+v", r)
	}
	return &r, out.String()
}

func num(t *testing.T, r *report, name string) float64 {
	t.Helper()
	v, ok := r.get(name).(float64)
	if !ok {
		t.Fatalf("report has no numeric result %q; results: %+v", name, r.Results)
	}
	return v
}

func TestConnsSpawn(t *testing.T) {
	r, _ := runBench(t, "conns", "--spawn", "-n", "50", "--settle", "100ms", "--rest", "1s", "--src-ips", "3")
	if got := num(t, r, "connected"); got != 50 {
		t.Errorf("connected %v of 50", got)
	}
	if num(t, r, "server sessions") != 50 {
		t.Errorf("server sessions %v, want 50", r.get("server sessions"))
	}
	for _, name := range []string{"handshakes/s (mean over the ramp)", "process RSS per connection (both ends)",
		"server heap per connection (profile)", "server goroutines per connection", "CPU at rest, both ends (process)"} {
		num(t, r, name)
	}
}

func TestConnsSpawnProcess(t *testing.T) {
	r, _ := runBench(t, "conns", "--spawn-process", "-n", "50", "--settle", "100ms", "--rest", "1s")
	if got := num(t, r, "connected"); got != 50 {
		t.Errorf("connected %v of 50", got)
	}
	if num(t, r, "server sessions") != 50 {
		t.Errorf("server sessions %v, want 50", r.get("server sessions"))
	}
	for _, name := range []string{"server RSS per connection", "server Go heap per connection", "server goroutines per connection",
		"handshakes/s per server core", "server CPU at rest"} {
		num(t, r, name)
	}
}

func TestMsgsClosedAndOpenLoop(t *testing.T) {
	for _, rate := range []string{"0", "200"} {
		r, _ := runBench(t, "msgs", "--spawn", "-p", "2", "--duration", "1s", "--rate", rate, "--inflight", "8")
		ack, del := num(t, r, "acknowledged"), num(t, r, "delivered")
		if ack == 0 || del != ack {
			t.Errorf("rate %s: %v acknowledged, %v delivered", rate, ack, del)
		}
		num(t, r, "latency send→delivered p99")
		if r.get("send errors") != nil {
			t.Errorf("rate %s: send errors: %v", rate, r.Notes)
		}
	}
}

func TestAPI(t *testing.T) {
	r, _ := runBench(t, "api", "--spawn", "--messages", "100", "--rate", "200", "--post-messages", "100", "--concurrency", "8")
	if got := num(t, r, "latency phase: delivered webhooks"); got != 100 {
		t.Errorf("%v of 100 delivered webhooks in the latency phase", got)
	}
	num(t, r, "POST→delivered p99")
	num(t, r, "accepted POST /v1/messages per second")
	if got := num(t, r, "throughput phase: delivered webhooks"); got != 100 {
		t.Errorf("%v of 100 delivered webhooks in the throughput phase", got)
	}
	if r.get("failed POSTs") != nil {
		t.Errorf("failed POSTs: %v", r.Notes)
	}
}

// The servers in a child process (serve-api), with the Go client: their CPU is reported apart.
func TestAPISpawnProcess(t *testing.T) {
	r, _ := runBench(t, "api", "--spawn-process", "--messages", "50", "--rate", "200", "--post-messages", "100",
		"--concurrency", "4", "--client", "go")
	if got := num(t, r, "latency phase: delivered webhooks"); got != 50 {
		t.Errorf("%v of 50 delivered webhooks in the latency phase", got)
	}
	if got := num(t, r, "throughput phase: delivered webhooks"); got != 100 {
		t.Errorf("%v of 100 delivered webhooks in the throughput phase", got)
	}
	for _, name := range []string{"accepted POST /v1/messages per second", "CPU during the POSTs: chatd + bizapi (child process)",
		"CPU during the POSTs: load generator, webhook receiver, customer (this process)", "statuses per webhook request (mean)"} {
		num(t, r, name)
	}
	if r.get("failed POSTs") != nil {
		t.Errorf("failed POSTs: %v", r.Notes)
	}
}

// TestCompare needs Mosquitto: under CI (.ci/run installs it) a missing one fails the test.
func TestCompare(t *testing.T) {
	if _, err := exec.LookPath("mosquitto"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("mosquitto is not installed (apt-get install mosquitto); CI must have it")
		}
		t.Skip("mosquitto is not installed")
	}
	r, _ := runBench(t, "compare", "-p", "2", "--duration", "1s", "--rate", "0", "--inflight", "8")
	for _, side := range []string{"chatd.", "mosquitto."} {
		ack, del := num(t, r, side+"acknowledged"), num(t, r, side+"delivered")
		if ack == 0 || del != ack {
			t.Errorf("%s %v acknowledged, %v delivered", side, ack, del)
		}
	}
	num(t, r, "ratio delivered/s chatd ÷ mosquitto")
}

// TestRecover needs the network lab (root, ip, nft, ss, sysctl): it skips without it, and fails under
// CI (netlab.Require). Every scenario once; the blackhole ones with short client TCP settings, so that
// they take seconds (about 12 s in all).
func TestRecover(t *testing.T) {
	netlab.Require(t, "ss", "sysctl")
	r, _ := runBench(t, "recover", "-n", "1", "--blackhole-n", "1", "--quiet", "500ms", "--keepalive", "1s", "--user-timeout", "1s",
		"--scenarios", "open,refused,dropped,dropped+loss,blackhole-idle,blackhole-send")
	for _, sc := range []struct{ name, figure string }{
		{"open", "dial"}, {"refused", "dial"}, {"dropped", "dial"}, {"dropped+loss", "dial"},
		{"blackhole-idle", "to connected"}, {"blackhole-send", "to acked"},
	} {
		for _, stat := range []string{" mean", " p50", " max"} {
			num(t, r, sc.name+": "+sc.figure+stat)
		}
		if path, _ := r.get(sc.name + ": path").(string); !strings.Contains(path, " ×1") {
			t.Errorf("%s: path %q", sc.name, path)
		}
		if r.get(sc.name+": failed trials") != nil {
			t.Errorf("%s: failed trials: %v", sc.name, r.Notes)
		}
	}
	for _, sc := range []string{"refused", "dropped", "blackhole-idle", "blackhole-send"} {
		if v, _ := r.get(sc + ": target").(string); !strings.HasPrefix(v, "≤ ") {
			t.Errorf("%s: target %q", sc, v)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, cmd := range []string{"conns", "msgs", "mqtt", "compare", "api", "recover"} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), []string{cmd, "-h"}, &out, &errb); code != 0 {
			t.Errorf("%s -h: exit %d", cmd, code)
		}
		if !strings.Contains(errb.String(), "Usage: chatbench "+cmd) || !strings.Contains(errb.String(), "Flags:") {
			t.Errorf("%s -h:\n%s", cmd, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"-h"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "chatbench conns") {
		t.Errorf("-h: exit %d\n%s", code, errb.String())
	}
}

func TestSourceDialerAddresses(t *testing.T) {
	d := newSourceDialer(300)
	seen := map[string]bool{}
	for _, ip := range d.ips {
		s := ip.String()
		if seen[s] || !strings.HasPrefix(s, "127.0.") || strings.HasSuffix(s, ".0") || strings.HasSuffix(s, ".255") || s == "127.0.0.1" {
			t.Fatalf("bad or repeated source address %s", s)
		}
		seen[s] = true
	}
}
