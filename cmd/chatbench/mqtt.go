package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

const mqttHelp = `Usage: chatbench mqtt [--spawn-mosquitto | --broker HOST:PORT] -p P [--size B] [--rate R] [--duration D]

The workload of "chatbench msgs" against an MQTT broker: P pairs, each a publisher and a subscriber
(2P MQTT 3.1.1 connections, clean sessions, Eclipse Paho Go client); pair i uses topic chatbench/<run>/i;
publish and subscribe at QoS 1, so a message counts as sent at its PUBACK and as delivered when the
subscriber's handler gets it (Paho then sends the subscriber's PUBACK). Same payload, schedule, open or
closed loop and latency as msgs.

--spawn-mosquitto starts "mosquitto -c CONF" (Debian package mosquitto) on a free loopback port with a
minimal configuration in a temporary folder — anonymous access, persistence off, no limit on queued or
in-flight QoS 1 messages per client (the defaults, 1,000 queued and 20 in flight, would drop or throttle
messages) — and stops it by its PID afterwards; its CPU is read from /proc/PID/stat.

Not the same guarantee: Mosquitto answers PUBACK once the message is in its memory (persistence writes
snapshots, at best every autosave_interval), while chatd's SendAck comes after the message is committed
and fsync'd to its database.

Examples:
  chatbench mqtt --spawn-mosquitto -p 16 --rate 0 --duration 10s
  mosquitto -p 1883 & chatbench mqtt --broker 127.0.0.1:1883 -p 16 --rate 20000
`

type brokerFlags struct {
	broker string
	spawn  bool
}

func (b *brokerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&b.broker, "broker", "", "MQTT broker HOST:PORT (instead of --spawn-mosquitto)")
	fs.BoolVar(&b.spawn, "spawn-mosquitto", false, "start mosquitto on a free loopback port for the run (the default when --broker is not given)")
}

func cmdMQTT(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var bf brokerFlags
	var wf workloadFlags
	c, fs := newFlagSet("mqtt", mqttHelp, stderr)
	bf.register(fs)
	wf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := wf.check(); err != nil {
		return err
	}
	r := newReport("mqtt", args)
	wf.describe(r)
	if err := runMQTT(ctx, c, bf, wf, r, ""); err != nil {
		return err
	}
	return r.finish(c, stdout)
}

// mosquitto is a broker process this run started.
type mosquitto struct {
	addr    string
	version string
	cmd     *exec.Cmd
	exited  chan struct{}
	dir     string
}

// startMosquitto starts mosquitto on a free loopback port.
func startMosquitto(ctx context.Context, stderr io.Writer) (*mosquitto, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		return nil, errors.New("mosquitto is not installed (Debian: apt-get install mosquitto)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir, err := os.MkdirTemp("", "chatbench-mosquitto-")
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`# chatbench: a minimal Mosquitto for the point-to-point QoS 1 workload
listener %d 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_inflight_messages 0
log_dest stderr
log_type error
log_type warning
`, port)
	cf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	m := &mosquitto{addr: "127.0.0.1:" + strconv.Itoa(port), dir: dir, exited: make(chan struct{})}
	if out, err := exec.Command(bin, "-h").CombinedOutput(); len(out) > 0 {
		_ = err // mosquitto -h exits 3 after printing its version
		line, _, _ := cutLine(string(out))
		m.version = line
	}
	m.cmd = exec.Command(bin, "-c", cf)
	m.cmd.Stderr = stderr
	if err := m.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	go func() { m.cmd.Wait(); close(m.exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", m.addr, time.Second)
		if err == nil {
			conn.Close()
			return m, nil
		}
		select {
		case <-m.exited:
			os.RemoveAll(dir)
			return nil, errors.New("mosquitto exited at start")
		case <-ctx.Done():
			m.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond): // polling a starting process
		}
		if time.Now().After(deadline) {
			m.stop()
			return nil, errors.New("mosquitto did not listen within 10 s")
		}
	}
}

func cutLine(s string) (string, string, bool) {
	for i := range len(s) {
		if s[i] == '\n' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// stop ends the broker by its PID: SIGTERM, then SIGKILL after 10 s.
func (m *mosquitto) stop() {
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		m.cmd.Process.Kill()
		<-m.exited
	}
	os.RemoveAll(m.dir)
}

// runMQTT runs the workload against the broker and adds its results to r (names prefixed).
func runMQTT(ctx context.Context, c *common, bf brokerFlags, wf workloadFlags, r *report, prefix string) error {
	raiseNoFile(uint64(2*wf.pairs) + 2000)
	addr := bf.broker
	pid := 0
	if addr == "" {
		m, err := startMosquitto(ctx, c.stderr)
		if err != nil {
			return err
		}
		defer m.stop()
		addr, pid = m.addr, m.cmd.Process.Pid
		r.param(prefix+"broker", fmt.Sprintf("%s, spawned on %s (persistence off, unlimited queue and in-flight)", m.version, addr), "")
	} else {
		r.param(prefix+"broker", addr+" (external)", "")
	}
	r.param(prefix+"MQTT client", "github.com/eclipse/paho.mqtt.golang v1.5.1, MQTT 3.1.1, QoS 1, clean sessions", "")

	w := newWorkload(wf)
	run := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	connect := func(id string) (mqtt.Client, error) {
		o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(true).
			SetAutoReconnect(false).SetConnectRetry(false).SetKeepAlive(30 * time.Second).
			SetWriteTimeout(30 * time.Second)
		cl := mqtt.NewClient(o)
		tok := cl.Connect()
		if !tok.WaitTimeout(30 * time.Second) {
			return nil, fmt.Errorf("MQTT connect %s: timed out", id)
		}
		return cl, tok.Error()
	}
	pubs := make([]mqtt.Client, wf.pairs)
	topics := make([]string, wf.pairs)
	defer func() {
		for _, cl := range pubs {
			if cl != nil {
				cl.Disconnect(100)
			}
		}
	}()
	var subs []mqtt.Client
	defer func() {
		for _, cl := range subs {
			cl.Disconnect(100)
		}
	}()
	for p := range wf.pairs {
		topics[p] = fmt.Sprintf("chatbench/%s/%d", run, p)
		sub, err := connect(fmt.Sprintf("cb-%s-r%d", run, p))
		if err != nil {
			return err
		}
		subs = append(subs, sub)
		tok := sub.Subscribe(topics[p], 1, func(_ mqtt.Client, m mqtt.Message) { w.delivered(m.Payload()) })
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			return fmt.Errorf("MQTT subscribe: %v", tok.Error())
		}
		if pubs[p], err = connect(fmt.Sprintf("cb-%s-s%d", run, p)); err != nil {
			return err
		}
	}
	stopProfile, err := c.startProfile()
	if err != nil {
		return err
	}
	cpu0 := selfCPU()
	bcpu0, berr0 := procCPU(pid)
	w.run(ctx, func(ctx context.Context, pair int, _ uint64, payload []byte) error {
		tok := pubs[pair].Publish(topics[pair], 1, false, payload)
		select {
		case <-tok.Done():
			return tok.Error()
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	took := time.Since(w.start).Seconds()
	cpu := selfCPU() - cpu0
	bcpu1, berr1 := procCPU(pid)
	stopProfile()
	w.results(r, prefix)
	if pid > 0 && berr0 == nil && berr1 == nil {
		r.result(prefix+"broker CPU", round((bcpu1-bcpu0).Seconds()/took*100, 0), "% of a core")
	}
	r.result(prefix+"load generator CPU", round(cpu.Seconds()/took*100, 0), "% of a core")
	return nil
}

const compareHelp = `Usage: chatbench compare -p P [--size B] [--rate R] [--duration D]

Runs "chatbench msgs" against chatd (in this process by default, or --spawn-process) and then
"chatbench mqtt" against a Mosquitto it starts, with the same pairs, size, offered load, in-flight limit
and duration, one after the other on the same machine, and prints both and the ratios chatd ÷ Mosquitto
of delivered/s and of p99 latency. With --rate 0 (closed loop) the ratio of delivered/s is the ratio of
maximum throughputs (issue 6 target: ≥ 2).

The guarantees differ: chatd acknowledges after an fsync'd commit, Mosquitto (persistence off, as it
ships) from memory. See "chatbench mqtt -h".

Examples:
  chatbench compare -p 16 --rate 0 --duration 10s
  chatbench compare -p 16 --rate 10000 --duration 10s --json compare.json
`

func cmdCompare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var wf workloadFlags
	c, fs := newFlagSet("compare", compareHelp, stderr)
	wf.register(fs)
	process := fs.Bool("spawn-process", false, "run chatd as a child process (as Mosquitto is) instead of in this process")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := wf.check(); err != nil {
		return err
	}
	if c.cpuProfile != "" {
		return errors.New("compare: --cpuprofile is for msgs or mqtt alone")
	}
	r := newReport("compare", args)
	wf.describe(r)
	tf := targetFlags{spawnProcess: *process}
	if *process {
		r.param("chatd.server", "spawned chatd child process (dev mode, loopback)", "")
	} else {
		r.param("chatd.server", "spawned chatd in this process (dev mode, loopback)", "")
	}
	c.logf("running msgs against chatd")
	if err := runMsgs(ctx, c, &tf, wf, r, "chatd."); err != nil {
		return fmt.Errorf("chatd: %w", err)
	}
	c.logf("running mqtt against mosquitto")
	if err := runMQTT(ctx, c, brokerFlags{spawn: true}, wf, r, "mosquitto."); err != nil {
		return fmt.Errorf("mosquitto: %w", err)
	}
	ratio := func(name string) float64 {
		a, _ := r.get("chatd." + name).(float64)
		b, _ := r.get("mosquitto." + name).(float64)
		if b == 0 {
			return 0
		}
		return round(a/b, 2)
	}
	r.result("ratio delivered/s chatd ÷ mosquitto", ratio("delivered/s (in the window)"), "×")
	r.result("ratio sent/s chatd ÷ mosquitto", ratio("sent/s (acked in the window)"), "×")
	r.result("ratio p99 latency chatd ÷ mosquitto", ratio("latency send→delivered p99"), "×")
	return r.finish(c, stdout)
}
