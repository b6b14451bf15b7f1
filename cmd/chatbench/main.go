// Command chatbench measures chatd on one machine: connection scale, message throughput and latency,
// the Business API path, and the same point-to-point workload against Mosquitto for comparison
// (issue 6). Every run prints the machine, the versions, the parameters and the results, and can
// write them as JSON.
//
//	chatbench conns   --spawn -n 20000                 idle authenticated connections: handshakes/s, memory, CPU at rest
//	chatbench msgs    --spawn -p 16 --rate 20000       acknowledged sender→receiver messages: throughput, latency
//	chatbench mqtt    --spawn-mosquitto -p 16 ...      the same workload against Mosquitto (QoS 1)
//	chatbench compare -p 16 --rate 0                   msgs against chatd and mqtt against Mosquitto, and the ratio
//	chatbench api     --spawn                          bizapi: POST /v1/messages throughput, POST→delivered webhook latency
//	chatbench recover                                  network lab: connected when 5222 is refused or dropped, blackhole detection
//
// Run "chatbench -h" or "chatbench SUBCOMMAND -h" for everything; docs/benchmarks.md has the figures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `chatbench — benchmarks of chatd on one machine (issue 6)

Usage:
  chatbench conns   [--spawn | --spawn-process | --server ADDR --key B64 --chatd-data DIR] -n N [--ramp R]
      open N authenticated client connections (the client library, pings at their defaults), hold them
      idle; report handshakes/s while ramping, then server memory (RSS, Go heap, stacks) and goroutines
      per connection and the CPU spent at rest over --rest (default 30s, a whole ping period)
  chatbench msgs    [--spawn | --server ...] -p P --size B --rate R --duration D
      P sender→receiver pairs; every message is acknowledged by the server after it is durably stored
      (SendAck) and delivered to the receiver; report sent/s, delivered/s and send→delivered latency
      p50/p99/p99.9 at a fixed offered load (open loop; --rate 0: closed loop, maximum throughput)
  chatbench mqtt    [--spawn-mosquitto | --broker HOST:PORT] -p P --size B --rate R --duration D
      the same workload against an MQTT broker: one topic per pair, QoS 1 (PUBACK) both ways
  chatbench compare -p P --size B --rate R --duration D
      msgs against an in-process chatd, then mqtt against a Mosquitto it starts, same parameters; the ratio
  chatbench api     [--spawn | --spawn-process] [--messages N] [--rate R] [--post-messages N] [--client raw|go]
      chatd + bizapi in this process (or a child process): POST→"delivered" webhook latency at a fixed
      rate (open loop), then POST /v1/messages throughput (closed loop)
  chatbench recover [-n N] [--blackhole-n M] [--scenarios LIST]
      in the network lab (root; network namespaces, nftables): time to connected when 5222 is open, refused
      (REJECT) and dropped (DROP), and time to recover from a blackholed connection, idle and with a send
      waiting for its acknowledgement; chatd runs in the server namespace

Flags every subcommand takes:
  --json FILE         also write the report as JSON
  --cpuprofile FILE   write a CPU profile of the measured phase (go tool pprof FILE)
  -v                  log progress to stderr

Targets (issue 6, 2-core machine, load generator included): ≥ 250,000 idle connections at ≤ 8 KiB server
RSS each; ≥ 4,000 handshakes/s per server core; ≥ 100,000 acked durable msgs/s, p99 ≤ 5 ms at half that
load, ≥ 2× Mosquitto; bizapi ≥ 10,000 POST/s, POST→delivered p99 ≤ 50 ms at 1,000/s. Recovery (DESIGN §6):
connected ≤ 300 ms when 5222 is refused, ≤ 1 s when dropped; a blackholed connection replaced ≤ 35 s idle,
a send on one acknowledged ≤ 10 s.

Run "chatbench SUBCOMMAND -h" for the flags of each.
`

type command func(ctx context.Context, args []string, stdout, stderr io.Writer) error

var commands = map[string]command{
	"conns":   cmdConns,
	"msgs":    cmdMsgs,
	"mqtt":    cmdMQTT,
	"compare": cmdCompare,
	"api":     cmdAPI,
	"recover": cmdRecover,
	// serve-node and serve-api are internal: the child processes of "conns --spawn-process" and
	// "api --spawn-process".
	"serve-node": cmdServeNode,
	"serve-api":  cmdServeAPI,
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "chatbench: unknown subcommand %q\n\n%s", args[0], usage)
		return 2
	}
	if err := cmd(ctx, args[1:], stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "chatbench %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
