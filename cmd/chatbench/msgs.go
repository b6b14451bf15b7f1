package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

const msgsHelp = `Usage: chatbench msgs [--spawn | --spawn-process | --server ADDR --key B64 --chatd-data DIR] -p P [--size B] [--rate R] [--duration D]

P sender→receiver pairs, 2P client-library connections to one chatd. Each sender sends to its receiver;
a message counts as sent when its SendAck arrives (the server answers after the message is durably
stored: group commit, fsync) and as delivered when the receiver's Handler gets it (the library then
acknowledges it to the server, and the server sends the sender a delivered receipt).

Load: --rate R offers R messages/s in total, open loop: every message has a due time on a fixed schedule,
the body carries it, and latency runs from that due time to the delivery, so time spent waiting for a
free sending slot (--inflight per sender) counts. --rate 0 is closed loop: each sender keeps --inflight
sends outstanding, for maximum throughput.

Reports: offered, acknowledged and delivered counts; sent/s and delivered/s within the --duration window;
send→delivered latency p50/p99/p99.9/max and send→acked p50/p99.

The message body is an opaque payload (content version 99; the server does not look inside): the due time,
a sequence number and the pair, padded to --size bytes.

Examples:
  chatbench msgs --spawn -p 16 --rate 0 --duration 10s             # maximum throughput
  chatbench msgs --spawn -p 16 --rate 20000 --duration 10s         # latency at 20,000 msgs/s offered
  chatbench msgs --spawn -p 16 --rate 20000 --cpuprofile cpu.out   # then: go tool pprof -top cpu.out
`

// benchContentVersion marks chatbench's opaque payloads.
const benchContentVersion = 99

func cmdMsgs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var tf targetFlags
	var wf workloadFlags
	c, fs := newFlagSet("msgs", msgsHelp, stderr)
	tf.register(fs, true)
	wf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := wf.check(); err != nil {
		return err
	}
	r := newReport("msgs", args)
	tf.describe(r)
	wf.describe(r)
	if err := runMsgs(ctx, c, &tf, wf, r, ""); err != nil {
		return err
	}
	return r.finish(c, stdout)
}

// receiver is a Handler that reports every message to the workload.
type receiver struct{ w *workload }

func (h receiver) HandleMessage(_ context.Context, m *chatdpb.Message) error {
	h.w.delivered(m.GetContent().GetBody())
	return nil
}

func (receiver) HandleReceipt(context.Context, *chatdpb.Receipt) error { return nil }

// runMsgs runs the chatd workload and adds its results to r (names prefixed).
func runMsgs(ctx context.Context, c *common, tf *targetFlags, wf workloadFlags, r *report, prefix string) error {
	raiseNoFile(uint64(4*wf.pairs) + 2000)
	t, err := startTarget(ctx, tf, c)
	if err != nil {
		return err
	}
	defer t.close()
	keys, phones, err := t.registerDevices(ctx, 2*wf.pairs, "18")
	if err != nil {
		return err
	}
	w := newWorkload(wf)
	cctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	clients := make([]*client.Client, 2*wf.pairs)
	for i := range clients {
		var h client.Handler
		if i%2 == 1 {
			h = receiver{w}
		}
		cl, err := client.New(client.Config{Addrs: []string{t.addr}, ServerKey: t.serverKey, DeviceKey: keys[i],
			Handler: h, ReprobeInterval: -1, ClientVersion: "chatbench"})
		if err != nil {
			return err
		}
		clients[i] = cl
		wg.Add(1)
		go func() { defer wg.Done(); cl.Run(cctx) }()
	}
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	defer wcancel()
	for _, cl := range clients {
		if err := cl.WaitConnected(wctx); err != nil {
			return fmt.Errorf("clients did not connect: %w", err)
		}
	}
	var nonce [4]byte
	rand.Read(nonce[:])
	run := hex.EncodeToString(nonce[:])
	stopProfile, err := c.startProfile()
	if err != nil {
		return err
	}
	cpu0 := selfCPU()
	scpu0, sok := t.cpu()
	commits0, ops0, wok := t.storeWrites()
	w.run(ctx, func(ctx context.Context, pair int, seq uint64, payload []byte) error {
		_, err := clients[2*pair].Send(ctx, phones[2*pair+1], run+"-"+strconv.FormatUint(seq, 36),
			&chatdpb.Content{Version: benchContentVersion, Body: payload})
		return err
	})
	cpu := selfCPU() - cpu0
	scpu1, sok1 := t.cpu()
	commits1, ops1, wok1 := t.storeWrites()
	took := time.Since(w.start).Seconds()
	stopProfile()
	w.results(r, prefix)
	total := cpu
	if sok && sok1 {
		r.result(prefix+"server CPU", round((scpu1-scpu0).Seconds()/took*100, 0), "% of a core")
		r.result(prefix+"load generator CPU", round(cpu.Seconds()/took*100, 0), "% of a core")
		total += scpu1 - scpu0
	} else {
		r.result(prefix+"CPU (this process: server and clients)", round(cpu.Seconds()/took*100, 0), "% of a core")
	}
	if wok && wok1 && commits1 > commits0 {
		r.result(prefix+"store commits/s (fsyncs)", round((commits1-commits0)/took, 0), "/s")
		r.result(prefix+"store writes per commit", round((ops1-ops0)/(commits1-commits0), 1), "")
	}
	// CPU time per message varies less than throughput on a machine shared with other work.
	if n := w.deliveredN.Load(); n > 0 {
		r.result(prefix+"CPU per delivered message (server and clients)", round(total.Seconds()/float64(n)*1e6, 1), "µs")
	}
	return nil
}
