package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/bizapi"
	"github.com/chatd-dev/chatd/internal/testutil"
)

// benchNet is chatd, bizapi (both in this process), a customer and a webhook receiver that records
// when each status of each message arrived.
type benchNet struct {
	b        *bizapiProc
	mu       sync.Mutex
	statusAt map[string]time.Time // "<id>/<status>" → arrival
}

func startBenchNet(tb testing.TB) *benchNet {
	tb.Helper()
	n, chatdData := startNode(tb)
	bn := &benchNet{statusAt: map[string]time.Time{}}
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		var p struct {
			Statuses []struct{ ID, Status string } `json:"statuses"`
		}
		body, _ := io.ReadAll(r.Body)
		if json.Unmarshal(body, &p) == nil {
			bn.mu.Lock()
			for _, s := range p.Statuses {
				bn.statusAt[s.ID+"/"+s.Status] = now
			}
			bn.mu.Unlock()
		}
	}))
	tb.Cleanup(hooks.Close)
	d, err := bizapi.Start(bizapi.Config{
		DataDir: filepath.Join(tb.TempDir(), "bizapi"), Listen: "127.0.0.1:0",
		ServerURL: n.HTTPSURL, ServerCAFile: n.CAFile, WebhookURL: hooks.URL,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx := ctxFor(tb, 10*time.Second)
		d.Shutdown(ctx)
	})
	bn.b = &bizapiProc{t: tb, rest: testutil.REST{Base: "http://" + d.Addr.String(),
		HTTP: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}}}
	bn.b.setup(n, chatdData)
	startShopper(tb, n)
	return bn
}

// BenchmarkPostToDeliveredWebhook measures, at a fixed offered load of 1,000 messages per second
// (open loop: a send starts every millisecond whether or not earlier ones finished, so queueing
// shows), the time from the start of POST /v1/messages to the arrival of the message's "delivered"
// webhook. b.N messages are sent; run with -benchtime=5000x for 5 s of load.
func BenchmarkPostToDeliveredWebhook(b *testing.B) {
	bn := startBenchNet(b)
	const rate = 1000
	starts := make(map[string]time.Time, b.N)
	var mu sync.Mutex
	var failed atomic.Int64
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	b.ResetTimer()
	for i := range b.N {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			id, err := bn.b.send(fmt.Sprint("bench ", i))
			if err != nil {
				failed.Add(1)
				return
			}
			mu.Lock()
			starts[id] = t0
			mu.Unlock()
		}()
	}
	wg.Wait()
	// Wait for every delivered webhook (bounded).
	deadline := time.Now().Add(60 * time.Second)
	var lat []time.Duration
	for {
		lat = lat[:0]
		bn.mu.Lock()
		for id, t0 := range starts {
			if at, ok := bn.statusAt[id+"/delivered"]; ok {
				lat = append(lat, at.Sub(t0))
			}
		}
		bn.mu.Unlock()
		if len(lat) == len(starts) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.StopTimer()
	if len(lat) != len(starts) || failed.Load() > 0 {
		b.Fatalf("%d of %d delivered webhooks arrived, %d POSTs failed", len(lat), len(starts), failed.Load())
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(0.999), "p99.9-ms")
	b.ReportMetric(float64(lat[len(lat)-1])/float64(time.Millisecond), "max-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkPostAccepted measures durable sends accepted per second by POST /v1/messages through the
// whole daemon (the gateway sends them on to chatd at the same time), from 128 concurrent clients.
func BenchmarkPostAccepted(b *testing.B) {
	bn := startBenchNet(b)
	var n atomic.Int64
	var failed atomic.Int64
	b.SetParallelism(64) // 64 × GOMAXPROCS senders
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := bn.b.send(fmt.Sprint("load ", n.Add(1))); err != nil {
				failed.Add(1)
			}
		}
	})
	b.StopTimer()
	if failed.Load() > 0 {
		b.Fatalf("%d POSTs failed", failed.Load())
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
