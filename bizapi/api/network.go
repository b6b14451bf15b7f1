package api

import (
	"net/http"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/netcheck"
)

// networkResponse is GET and POST /v1/support/network: the latest netcheck report and the live
// gateway path, so that what the check found and what the gateway does can be read side by side.
type networkResponse struct {
	Network       *netcheck.Report `json:"network"`
	GatewayStatus string           `json:"gateway_status"`
	Gateway       gatewayHealth    `json:"gateway"`
}

// network keeps the latest report; one check runs at a time.
type network struct {
	running sync.Mutex
	mu      sync.Mutex
	last    *netcheck.Report // guarded by mu
}

func (h *Handler) getNetwork(w http.ResponseWriter, _ *http.Request, _ identity) error {
	h.net.mu.Lock()
	rep := h.net.last
	h.net.mu.Unlock()
	if rep == nil {
		return errNotReady("no network report yet: POST /v1/support/network runs one (a few seconds; longer with ?idle=DURATION)")
	}
	return h.writeNetwork(w, rep)
}

func (h *Handler) postNetwork(w http.ResponseWriter, r *http.Request, _ identity) error {
	if h.netcheck == nil {
		return errNotReady("network checks are not available in this bizapi")
	}
	var idle time.Duration
	if v := r.URL.Query().Get("idle"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > 15*time.Minute {
			return errInvalid("idle must be a duration up to 15m, e.g. 2m (got %q)", v)
		}
		idle = d
	}
	if !h.net.running.TryLock() {
		return errTooMany(5*time.Second, "a network check is running; retry when it finished")
	}
	defer h.net.running.Unlock()
	rep := h.netcheck(r.Context(), idle)
	h.net.mu.Lock()
	h.net.last = rep
	h.net.mu.Unlock()
	return h.writeNetwork(w, rep)
}

func (h *Handler) writeNetwork(w http.ResponseWriter, rep *netcheck.Report) error {
	g := h.gw.Health()
	return h.writeJSON(w, http.StatusOK, networkResponse{Network: rep, GatewayStatus: g.GatewayStatus, Gateway: gatewayJSON(g)})
}
