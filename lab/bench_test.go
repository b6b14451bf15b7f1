package lab

import (
	"context"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/internal/labchatd"
	"github.com/chatd-dev/chatd/internal/netlab"
)

// BenchmarkFallback measures how long a fresh client takes to connect (the race, the handshake and
// the login: Status.DialTime) from the lab's client host, with 5222 open, REJECTed and DROPped at the
// box, optionally with latency on the path (labchatd.Connect, as chatbench recover measures it).
// Reported as dial-ms (mean) and max-dial-ms.
//
//	go test -run '^$' -bench Fallback -benchtime 50x ./lab/
func BenchmarkFallback(b *testing.B) {
	for _, bc := range []struct {
		name  string
		rules []string
		netem []string
	}{
		{"open", nil, nil},
		{"reject", []string{netlab.Reject(5222)}, nil},
		{"drop", []string{netlab.Drop(5222)}, nil},
		{"drop+loss5%", []string{netlab.Drop(5222), netlab.Loss(5)}, nil},
		{"drop+rtt40ms", []string{netlab.Drop(5222)}, []string{"delay", "20ms"}}, // needs netem
	} {
		b.Run(bc.name, func(b *testing.B) {
			l := netlab.New(b)
			s := startChatd(b, l)
			dev := s.Register(s.Reg(l.Server, nil), "15550000091")
			l.SetRules(bc.rules...)
			if bc.netem != nil {
				l.Netem(bc.netem...)
			}
			cfg := s.ClientConfig(l.Client, dev)
			cfg.ReprobeInterval = -1
			var total, worst time.Duration
			b.ResetTimer()
			for range b.N {
				st, err := labchatd.Connect(context.Background(), cfg, 10*time.Second)
				if err != nil {
					b.Fatalf("%v: %+v", err, st)
				}
				total += st.DialTime
				worst = max(worst, st.DialTime)
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "dial-ms")
			b.ReportMetric(float64(worst.Microseconds())/1000, "max-dial-ms")
		})
	}
}
