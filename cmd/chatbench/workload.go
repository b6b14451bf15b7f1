package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The point-to-point workload that msgs (chatd) and mqtt (an MQTT broker) share: P pairs, each a
// sender and a receiver; every message must be acknowledged to the sender (chatd: SendAck after the
// durable store; MQTT: PUBACK) and delivered to the receiver. Its payload carries the time it was due
// to be sent, so the receiver measures send→delivered latency from the schedule (open loop: a message
// waiting for a free sender slot counts as late, so queueing shows up; no coordinated omission).

// payload layout: [0:8] due time (Unix ns), [8:16] sequence, [16:20] pair, then padding to --size.
const minPayload = 20

type workloadFlags struct {
	pairs    int
	size     int
	rate     float64
	duration time.Duration
	inflight int
	drain    time.Duration
}

func (w *workloadFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&w.pairs, "p", 8, "sender→receiver pairs (2P connections)")
	fs.IntVar(&w.size, "size", 64, fmt.Sprintf("message body size in bytes (at least %d: due time, sequence, pair)", minPayload))
	fs.Float64Var(&w.rate, "rate", 0, "offered load in messages/s over all pairs, open loop; 0: closed loop, every sender keeps --inflight messages outstanding")
	fs.DurationVar(&w.duration, "duration", 10*time.Second, "how long to offer load")
	fs.IntVar(&w.inflight, "inflight", 128, "messages outstanding (sent, not yet acknowledged) per sender at most")
	fs.DurationVar(&w.drain, "drain", 30*time.Second, "after --duration, how long to wait for outstanding acks and deliveries")
}

func (w *workloadFlags) check() error {
	switch {
	case w.pairs <= 0:
		return errors.New("-p must be positive")
	case w.size < minPayload:
		return fmt.Errorf("--size must be at least %d", minPayload)
	case w.duration <= 0:
		return errors.New("--duration must be positive")
	case w.inflight <= 0:
		return errors.New("--inflight must be positive")
	}
	return nil
}

func (w *workloadFlags) describe(r *report) {
	r.param("pairs", w.pairs, "")
	r.param("message size", w.size, "bytes")
	if w.rate > 0 {
		r.param("offered load", w.rate, "msgs/s (open loop)")
	} else {
		r.param("offered load", fmt.Sprintf("closed loop, %d in flight per sender", w.inflight), "")
	}
	r.param("in flight per sender (max)", w.inflight, "")
	r.param("duration", w.duration.String(), "")
}

// sendFunc sends one message of pair p with this payload and returns when it is acknowledged.
type sendFunc func(ctx context.Context, pair int, seq uint64, payload []byte) error

// workload runs the workload and collects deliveries.
type workload struct {
	f workloadFlags

	start, end time.Time // the measurement window [start, end)
	acked      atomic.Int64
	ackedIn    atomic.Int64 // acks within the window
	deliveredN atomic.Int64
	delivIn    atomic.Int64 // deliveries within the window
	sendErrs   atomic.Int64
	offered    atomic.Int64
	behind     atomic.Int64 // open loop: sends that could not even be queued (generator overloaded)
	firstErr   atomic.Value

	mu       sync.Mutex
	lat      []time.Duration // send→delivered, by the due time
	ackLat   []time.Duration // send→acked
	dups     int64
	seen     []map[uint64]struct{} // per pair, the sequences delivered
	windowed atomic.Bool
}

func newWorkload(f workloadFlags) *workload {
	w := &workload{f: f, seen: make([]map[uint64]struct{}, f.pairs)}
	for i := range w.seen {
		w.seen[i] = make(map[uint64]struct{})
	}
	return w
}

// delivered records a delivery (called by the receivers, from any goroutine).
func (w *workload) delivered(payload []byte) {
	now := time.Now()
	if len(payload) < minPayload {
		return
	}
	due := time.Unix(0, int64(binary.LittleEndian.Uint64(payload)))
	seq := binary.LittleEndian.Uint64(payload[8:])
	pair := int(binary.LittleEndian.Uint32(payload[16:]))
	if pair < 0 || pair >= len(w.seen) {
		return
	}
	w.mu.Lock()
	if _, dup := w.seen[pair][seq]; dup {
		w.dups++
		w.mu.Unlock()
		return
	}
	w.seen[pair][seq] = struct{}{}
	w.lat = append(w.lat, now.Sub(due))
	w.mu.Unlock()
	w.deliveredN.Add(1)
	if w.windowed.Load() {
		w.delivIn.Add(1)
	}
}

type job struct {
	seq uint64
	due time.Time
}

// run offers the load through send and waits for the acks and deliveries (up to --drain).
func (w *workload) run(ctx context.Context, send sendFunc) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.start = time.Now()
	w.end = w.start.Add(w.f.duration)
	w.windowed.Store(true)
	windowTimer := time.AfterFunc(w.f.duration, func() { w.windowed.Store(false) })
	defer windowTimer.Stop()

	var wg sync.WaitGroup
	for p := range w.f.pairs {
		jobs := make(chan job, 1<<16)
		var seq atomic.Uint64
		worker := func() {
			defer wg.Done()
			for {
				var j job
				if w.f.rate > 0 {
					var ok bool
					if j, ok = <-jobs; !ok {
						return
					}
				} else {
					if time.Now().After(w.end) || ctx.Err() != nil {
						return
					}
					j = job{seq: seq.Add(1), due: time.Now()}
					w.offered.Add(1)
				}
				// A fresh payload per message: the transport may keep it until acknowledged.
				pl := make([]byte, w.f.size)
				binary.LittleEndian.PutUint64(pl, uint64(j.due.UnixNano()))
				binary.LittleEndian.PutUint64(pl[8:], j.seq)
				binary.LittleEndian.PutUint32(pl[16:], uint32(p))
				if err := send(ctx, p, j.seq, pl); err != nil {
					if ctx.Err() == nil {
						w.sendErrs.Add(1)
						w.firstErr.CompareAndSwap(nil, fmt.Errorf("pair %d: %w", p, err))
					}
					continue
				}
				now := time.Now()
				w.acked.Add(1)
				if now.Before(w.end) {
					w.ackedIn.Add(1)
				}
				w.mu.Lock()
				w.ackLat = append(w.ackLat, now.Sub(j.due))
				w.mu.Unlock()
			}
		}
		for range w.f.inflight {
			wg.Add(1)
			go worker()
		}
		if w.f.rate > 0 {
			// The pair's schedule: message k is due at start + k/rate·P (pairs staggered).
			interval := time.Duration(float64(time.Second) * float64(w.f.pairs) / w.f.rate)
			offset := interval * time.Duration(p) / time.Duration(w.f.pairs)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(jobs)
				k := uint64(0)
				for {
					due := w.start.Add(offset + interval*time.Duration(k))
					if !due.Before(w.end) {
						return
					}
					if d := time.Until(due); d > 0 {
						select {
						case <-time.After(d):
						case <-ctx.Done():
							return
						}
					}
					// Everything due by now (the timer is coarser than a high rate).
					now := time.Now()
					for ; !due.After(now) && due.Before(w.end); due = w.start.Add(offset + interval*time.Duration(k)) {
						k++
						w.offered.Add(1)
						select {
						case jobs <- job{seq: k, due: due}:
						default:
							w.behind.Add(1)
						}
					}
				}
			}()
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(w.f.duration + w.f.drain):
		cancel()
		<-done
	case <-ctx.Done():
		<-done
	}
	// Wait for the deliveries of everything acknowledged (bounded by the drain time).
	deadline := w.end.Add(w.f.drain)
	for w.deliveredN.Load() < w.acked.Load() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
}

// quantile returns the q-quantile of sorted durations, in ms.
func quantile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return round(float64(sorted[i])/float64(time.Millisecond), 3)
}

// results adds the workload's figures to r, prefixed.
func (w *workload) results(r *report, prefix string) {
	secs := w.f.duration.Seconds()
	w.mu.Lock()
	lat := slices.Clone(w.lat)
	ackLat := slices.Clone(w.ackLat)
	dups := w.dups
	w.mu.Unlock()
	slices.Sort(lat)
	slices.Sort(ackLat)
	r.result(prefix+"offered", w.offered.Load(), "msgs")
	r.result(prefix+"acknowledged", w.acked.Load(), "msgs")
	r.result(prefix+"delivered", w.deliveredN.Load(), "msgs")
	r.result(prefix+"sent/s (acked in the window)", round(float64(w.ackedIn.Load())/secs, 0), "msgs/s")
	r.result(prefix+"delivered/s (in the window)", round(float64(w.delivIn.Load())/secs, 0), "msgs/s")
	r.result(prefix+"latency send→delivered p50", quantile(lat, 0.50), "ms")
	r.result(prefix+"latency send→delivered p99", quantile(lat, 0.99), "ms")
	r.result(prefix+"latency send→delivered p99.9", quantile(lat, 0.999), "ms")
	if len(lat) > 0 {
		r.result(prefix+"latency send→delivered max", round(float64(lat[len(lat)-1])/float64(time.Millisecond), 3), "ms")
	}
	r.result(prefix+"latency send→acked p50", quantile(ackLat, 0.50), "ms")
	r.result(prefix+"latency send→acked p99", quantile(ackLat, 0.99), "ms")
	if b := w.behind.Load(); b > 0 {
		r.result(prefix+"not sent: generator's queue full", b, "msgs")
	}
	if e := w.sendErrs.Load(); e > 0 {
		r.result(prefix+"send errors", e, "")
		if err, ok := w.firstErr.Load().(error); ok {
			r.note("%sfirst send error: %v", prefix, err)
		}
	}
	if lost := w.acked.Load() - w.deliveredN.Load(); lost > 0 {
		r.result(prefix+"acked but not delivered within --drain", lost, "msgs")
	}
	if dups > 0 {
		r.result(prefix+"duplicate deliveries", dups, "msgs")
	}
}
