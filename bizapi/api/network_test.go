package api

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/netcheck"
)

// TestSupportNetwork: GET /v1/support/network has nothing before the first check; POST runs one (a
// real netcheck, here against a closed port, so it is fast and broken) and returns it with the live
// gateway state; GET then returns the same report; a bad idle is refused; no token, no report.
func TestSupportNetwork(t *testing.T) {
	var idles []time.Duration
	e := newEnv(t, func(c *Config) {
		c.Netcheck = func(ctx context.Context, idle time.Duration) *netcheck.Report {
			idles = append(idles, idle)
			return netcheck.Run(ctx, netcheck.Config{ServerURL: "https://127.0.0.1:1", Timeout: time.Second})
		}
	})
	tok := e.token()
	e.do("GET", "/v1/support/network", "", "").wantError(http.StatusUnauthorized, CodeAccessDenied, "")
	e.do("GET", "/v1/support/network", bearer(tok), "").wantError(http.StatusServiceUnavailable, CodeNotReady, "POST /v1/support/network")
	e.do("POST", "/v1/support/network?idle=forever", bearer(tok), "").wantError(http.StatusBadRequest, CodeInvalidParameter, "idle")

	var posted, got struct {
		Network       netcheck.Report `json:"network"`
		GatewayStatus string          `json:"gateway_status"`
		Gateway       struct {
			Path struct{ Transport string } `json:"path"`
		} `json:"gateway"`
	}
	e.do("POST", "/v1/support/network?idle=0s", bearer(tok), "").wantStatus(http.StatusOK).decode(&posted)
	if posted.Network.Verdict.Status != netcheck.Broken || posted.Network.HTTPS.Error == "" || posted.GatewayStatus == "" {
		t.Fatalf("POST answer: %+v", posted)
	}
	e.do("GET", "/v1/support/network", bearer(tok), "").wantStatus(http.StatusOK).decode(&got)
	if !got.Network.Started.Equal(posted.Network.Started) || got.Network.Verdict.Summary != posted.Network.Verdict.Summary {
		t.Fatalf("GET returned another report: %+v vs %+v", got.Network, posted.Network)
	}
	if len(idles) != 1 || idles[0] != 0 {
		t.Fatalf("netcheck runs with idle %v, want one run with 0", idles)
	}
}
