package store

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// Every write benchmark is durable: WAL + synchronous=FULL on a file in b.TempDir(), an fsync per
// commit. "serial" is one caller (no batching possible: one commit per op); "parallel" is
// GOMAXPROCS callers; "c64" is 64 concurrent callers, the shape of a loaded REST API. msgs/s is
// operations per second of wall time; ops/commit shows how much group commit batched.

var benchBody = string(make([]byte, 160)) // a typical short text

// benchOpen opens a store in b.TempDir(), or under $BIZAPI_BENCH_DIR when set (e.g. /dev/shm to
// take fsync out and see the CPU ceiling).
func benchOpen(b *testing.B) *SQLite {
	b.Helper()
	dir := b.TempDir()
	if d := os.Getenv("BIZAPI_BENCH_DIR"); d != "" {
		var err error
		if dir, err = os.MkdirTemp(d, "bench"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	s, err := Open(filepath.Join(dir, "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// runWrites runs op b.N times: serially, or from conc goroutines (0: serial).
func runWrites(b *testing.B, s *SQLite, conc int, op func(i int64) error) {
	b.Helper()
	base := s.WriterStats()
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	if conc == 0 {
		for i := 0; i < b.N; i++ {
			if err := op(int64(i)); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		b.SetParallelism(max(1, (conc+runtime.GOMAXPROCS(0)-1)/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := op(next.Add(1) - 1); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.StopTimer()
	st := s.WriterStats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	if c := st.Commits - base.Commits; c > 0 {
		b.ReportMetric(float64(st.Ops-base.Ops)/float64(c), "ops/commit")
	}
}

var concurrencies = []struct {
	name string
	conc int
}{{"serial", 0}, {"parallel", 1}, {"c64", 64}, {"c256", 256}}

func BenchmarkAddMessage(b *testing.B) {
	for _, c := range concurrencies {
		b.Run(c.name, func(b *testing.B) {
			s := benchOpen(b)
			runWrites(b, s, c.conc, func(i int64) error {
				return s.AddMessage(bg0, Message{ID: "gBEG" + strconv.FormatInt(i, 10), To: "15550000002", Body: benchBody})
			})
		})
	}
}

// fillOutbox stores n accepted messages m0 … m(n-1) in one transaction (setup, not measured).
func fillOutbox(b *testing.B, s *SQLite, n int) {
	b.Helper()
	err := s.exec(bg0, func(w *writeStmts) error {
		for i := range n {
			if _, err := w.exec(w.addMessage, "m"+strconv.Itoa(i), "15550000002", benchBody, 0, int64(1)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

var statusPayload = []byte(`{"statuses":[{"id":"gBEGkYiEB1VXAglK1ZEqA1YKPrU","recipient_id":"15550000002","status":"sent","timestamp":"1700000000"}]}`)

// BenchmarkMarkSent: the ack path, accepted → sent plus its "sent" callback.
func BenchmarkMarkSent(b *testing.B) {
	for _, c := range concurrencies {
		b.Run(c.name, func(b *testing.B) {
			s := benchOpen(b)
			fillOutbox(b, s, b.N)
			at := time.Now()
			runWrites(b, s, c.conc, func(i int64) error {
				_, err := s.MarkSent(bg0, "m"+strconv.FormatInt(i, 10), uint64(i+1), at, &Callback{Payload: statusPayload})
				return err
			})
		})
	}
}

var inboundPayload = []byte(`{"contacts":[{"profile":{"name":""},"wa_id":"15550000003"}],"messages":[{"from":"15550000003","id":"ABGGFlA5FpafAgo6EhgKFjE1NTUwMDAwMDAzEAEYASIEaGVsbG8","timestamp":"1700000000","type":"text","text":{"body":"hello"}}]}`)

// BenchmarkSaveInbound: a received message plus its webhook callback.
func BenchmarkSaveInbound(b *testing.B) {
	for _, c := range concurrencies {
		b.Run(c.name, func(b *testing.B) {
			s := benchOpen(b)
			ts := time.Now()
			runWrites(b, s, c.conc, func(i int64) error {
				_, err := s.SaveInbound(bg0, Inbound{ID: fmt.Sprintf("ABGG%d", i), ServerID: uint64(i + 1), From: "15550000003",
					Type: "text", Body: benchBody, Timestamp: ts}, &Callback{Payload: inboundPayload})
				return err
			})
		})
	}
}

// BenchmarkMessage: a lookup by id on the reader pool (GET status, the gateway's receipts).
func BenchmarkMessage(b *testing.B) {
	s := benchOpen(b)
	const n = 10000
	fillOutbox(b, s, n)
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Message(bg0, "m"+strconv.FormatInt(next.Add(1)%n, 10)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDueCallbacks is one round of the webhook dispatcher against a queue of 2,000 callbacks:
// "reread" reads 12 callbacks from the start of the queue (as if the 11 in flight were read again
// and skipped); "after" reads the one callback after the 11 in flight, by their key; "after-100"
// reads a batch of 100 past 1,200 in flight (12 requests of 100 callbacks each), "vary-limit"
// changes the limit at every call (the dispatcher's free slots vary from round to round).
//
//	go test -run='^$' -bench=DueCallbacks ./bizapi/store/
func BenchmarkDueCallbacks(b *testing.B) {
	s, _ := openTest(b)
	for range 2000 {
		if err := s.EnqueueCallback(bg0, Callback{Payload: []byte(`{"statuses":[{"id":"wamid.x","status":"delivered"}]}`)}); err != nil {
			b.Fatal(err)
		}
	}
	far := time.Now().Add(time.Hour)
	all, err := s.DueCallbacks(bg0, far, 2000, CallbackKey{})
	if err != nil || len(all) != 2000 {
		b.Fatalf("%d callbacks, %v", len(all), err)
	}
	for _, c := range []struct {
		name  string
		limit int
		after CallbackKey
	}{{"reread", 12, CallbackKey{}}, {"after", 1, all[10].Key()}, {"first-100", 100, CallbackKey{}}, {"after-100", 100, all[1199].Key()}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.DueCallbacks(bg0, far, c.limit, c.after); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("vary-limit", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			if _, err := s.DueCallbacks(bg0, far, 1+i%3, all[10].Key()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMessageLifecycle is what the store does for one message sent through bizapi and
// delivered: AddMessage (the POST), MarkSent with its "sent" callback (chatd's ack), MarkReceipt
// with its "delivered" callback (the receipt), from 64 concurrent callers; msgs/s counts messages,
// ops/commit the writes batched per commit (three per message). The dispatcher's deletes (one
// operation per webhook request, for up to 100 callbacks) are left out.
//
//	BIZAPI_BENCH_DIR=/dev/shm go test -run='^$' -bench=MessageLifecycle -benchtime=20000x ./bizapi/store/
func BenchmarkMessageLifecycle(b *testing.B) {
	s := benchOpen(b)
	runWrites(b, s, 64, func(i int64) error {
		id := "lc" + strconv.FormatInt(i, 10)
		m := Message{ID: id, To: "15550000002", Body: benchBody}
		if err := s.AddMessage(bg0, m); err != nil {
			return err
		}
		sent := &Callback{Payload: []byte(`{"statuses":[{"id":"` + id + `","status":"sent"}]}`)}
		if _, err := s.MarkSent(bg0, id, uint64(i+1), time.Time{}, sent); err != nil {
			return err
		}
		sent2 := &Callback{Payload: []byte(`{"statuses":[{"id":"` + id + `","status":"sent"}]}`)}
		dlv := &Callback{Payload: []byte(`{"statuses":[{"id":"` + id + `","status":"delivered"}]}`)}
		_, _, err := s.MarkReceipt(bg0, id, uint64(i+1), StatusDelivered, time.Time{}, sent2, dlv)
		return err
	})
}
