package store

import (
	"context"
	"database/sql"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
)

var benchContent = make([]byte, 200) // a typical short text message

// BenchmarkSaveMessage measures one durable SaveMessage (insert + enqueue +
// fsync'd commit). "serial" is one caller, one commit per save; with
// concurrent callers ("parallel", "c64") group commit puts every save that
// arrived meanwhile into one transaction.
func BenchmarkSaveMessage(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		s, _ := openTest(b)
		s.Now = nil
		ctx := context.Background()
		for i := 0; b.Loop(); i++ {
			if _, _, err := s.SaveMessage(ctx, Message{From: "15550000001", To: "15550000002",
				ClientID: strconv.Itoa(i), ContentVersion: 1, Content: benchContent}); err != nil {
				b.Fatal(err)
			}
		}
	})
	// parallel: GOMAXPROCS callers; c64: 64 concurrent callers (many sessions sending at once).
	for _, c := range []struct {
		name string
		par  int
	}{{"parallel", 1}, {"c64", 64 / runtime.GOMAXPROCS(0)}} {
		b.Run(c.name, func(b *testing.B) {
			s, _ := openTest(b)
			s.Now = nil
			ctx := context.Background()
			var next atomic.Int64
			base := s.WriterStats()
			b.SetParallelism(max(1, c.par))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				sender := strconv.FormatInt(15550000000+next.Add(1), 10)
				for i := 0; pb.Next(); i++ {
					if _, _, err := s.SaveMessage(ctx, Message{From: sender, To: "15550000002",
						ClientID: strconv.Itoa(i), ContentVersion: 1, Content: benchContent}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			st := s.WriterStats()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(st.Ops-base.Ops)/float64(max(1, st.Commits-base.Commits)), "ops/commit")
		})
	}
}

// fillQueue stores n messages to recipient in one transaction (setup only:
// SaveMessage would fsync each one).
func fillQueue(b *testing.B, s *Store, recipient string, start, n int) {
	b.Helper()
	withWriter(b, s, func(c *sql.Conn) {
		ctx := context.Background()
		tx, err := c.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer tx.Rollback()
		for i := start; i < start+n; i++ {
			// The writer is parked: its counter is ours to take from.
			if _, err := tx.Exec(`INSERT INTO messages (id, sender, recipient, client_id, content_version, content, created_at, pending)
				VALUES (?, '15550000001', ?, ?, 1, ?, 1, 1)`, s.ws.takeSeq(), recipient, strconv.Itoa(i), benchContent); err != nil {
				b.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkPendingAck measures delivering one queued message: reading it
// with Pending and acknowledging it (which marks it delivered and enqueues
// the delivered receipt for the sender). "one" does Pending(limit 1)+Ack per
// item; "batch100" does Pending(limit 100)+AckBatch per 100 items, reported
// per item.
func BenchmarkPendingAck(b *testing.B) {
	const recipient = "15550000002"
	for _, batch := range []int{1, 100} {
		name := "one"
		if batch > 1 {
			name = "batch" + strconv.Itoa(batch)
		}
		b.Run(name, func(b *testing.B) {
			s, _ := openTest(b)
			s.Now = nil
			ctx := context.Background()
			filled, done := 0, 0
			var after int64
			b.ResetTimer()
			for done < b.N {
				if filled-done < batch {
					b.StopTimer()
					fillQueue(b, s, recipient, filled, 10000)
					filled += 10000
					b.StartTimer()
				}
				items, err := s.Pending(ctx, recipient, after, min(batch, b.N-done))
				if err != nil || len(items) == 0 {
					b.Fatalf("Pending = %d items, %v", len(items), err)
				}
				ids := seqs(items)
				var notify []string
				if batch == 1 {
					notify, err = s.Ack(ctx, recipient, ids[0])
				} else {
					notify, err = s.AckBatch(ctx, recipient, ids)
				}
				if err != nil || len(notify) != 1 {
					b.Fatalf("ack = %v, %v", notify, err)
				}
				after = ids[len(ids)-1]
				done += len(items)
			}
		})
	}
}
