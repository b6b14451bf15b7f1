package api

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/chatd-dev/chatd/bizapi/gateway"
)

// healthResponse is GET /v1/health: the On-Premises "gateway_status" and, under "gateway", our
// extension (see the package comment).
type healthResponse struct {
	Health struct {
		GatewayStatus string        `json:"gateway_status"`
		Gateway       gatewayHealth `json:"gateway"`
	} `json:"health"`
}

type gatewayHealth struct {
	Phone string      `json:"phone"`
	Path  gatewayPath `json:"path"`
	// Network is "unsupported" when NetworkProblem is set, "ok" while connected with nothing known
	// to be wrong, "" otherwise (not connected: nothing is known).
	Network        string  `json:"network"`
	NetworkProblem string  `json:"network_problem"`
	Since          string  `json:"since"` // RFC 3339 UTC; "" when unknown
	DialMS         float64 `json:"dial_ms"`
	RTTMS          float64 `json:"rtt_ms"`
	Reconnects     int     `json:"reconnects"`
	LastClose      string  `json:"last_close"`
	LastError      string  `json:"last_error"`
	ConfigError    string  `json:"config_error"`
}

type gatewayPath struct {
	Addr      string `json:"addr"`
	Port      int    `json:"port"`
	Transport string `json:"transport"`
	Proxy     string `json:"proxy"` // without the password; "" when direct
}

// Values of gatewayHealth.Network.
const (
	networkOK          = "ok"
	networkUnsupported = "unsupported"
)

// health: GET /v1/health (bearer token or Apikey).
func (h *Handler) health(w http.ResponseWriter, _ *http.Request, _ identity) error {
	g := h.gw.Health()
	var resp healthResponse
	resp.Health.GatewayStatus = g.GatewayStatus
	resp.Health.Gateway = gatewayJSON(g)
	return h.writeJSON(w, http.StatusOK, resp)
}

// gatewayJSON is the "gateway" extension of health (and of the network report) for g.
func gatewayJSON(g gateway.Health) gatewayHealth {
	gh := gatewayHealth{
		Phone:          g.Phone,
		Path:           gatewayPath{Addr: g.Addr, Port: g.Port, Transport: g.Transport, Proxy: g.Proxy},
		NetworkProblem: g.NetworkProblem,
		DialMS:         millis(g.DialTime),
		RTTMS:          millis(g.RTT),
		Reconnects:     g.Reconnects,
		LastClose:      g.LastClose,
		LastError:      g.LastError,
		ConfigError:    g.ConfigError,
	}
	switch {
	case g.NetworkProblem != "":
		gh.Network = networkUnsupported
	case g.GatewayStatus == gateway.StatusConnected:
		gh.Network = networkOK
	}
	if !g.Since.IsZero() {
		gh.Since = g.Since.UTC().Format(time.RFC3339)
	}
	return gh
}

// millis is d in milliseconds, to the microsecond.
func millis(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

// serveMetrics: GET /v1/metrics (bearer token or Apikey), Prometheus text format. On-Premises'
// ?format=prometheus is accepted and changes nothing.
func (h *Handler) serveMetrics(w http.ResponseWriter, r *http.Request, _ identity) error {
	h.metrics.handler.ServeHTTP(w, r)
	return nil
}

// gatewayStatuses are the values of the bizapi_gateway_status label, always all exported.
var gatewayStatuses = []string{
	gateway.StatusConnected, gateway.StatusConnecting, gateway.StatusDisconnected,
	gateway.StatusUninitialized, gateway.StatusUnregistered,
}

// metrics are the handler's Prometheus metrics.
type metrics struct {
	requests  *prometheus.CounterVec   // endpoint, code (HTTP status)
	latency   *prometheus.HistogramVec // endpoint
	errors    *prometheus.CounterVec   // code (On-Premises)
	errByCode map[int]prometheus.Counter
	handler   http.Handler
}

func newMetrics(h *Handler) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bizapi_http_requests_total",
			Help: `REST requests by endpoint (the route pattern, "unmatched" for none) and HTTP status code.`,
		}, []string{"endpoint", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bizapi_http_request_duration_seconds",
			Help:    "Time to answer a REST request, by endpoint (POST /v1/messages includes the durable store).",
			Buckets: prometheus.ExponentialBuckets(0.00025, 2, 15), // 0.25 ms … 4 s
		}, []string{"endpoint"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bizapi_api_errors_total",
			Help: "Error answers by On-Premises error code (1005 access denied, 1009 invalid parameter, 1014 internal, …).",
		}, []string{"code"}),
		errByCode: make(map[int]prometheus.Counter, len(codeInfo)),
	}
	for code := range codeInfo {
		m.errByCode[code] = m.errors.WithLabelValues(strconv.Itoa(code))
	}
	sc := &scrapeCollector{
		h: h,
		unsent: prometheus.NewDesc("bizapi_outbox_unsent",
			"Accepted outbound messages not yet acknowledged by chatd (outbox depth).", nil, nil),
		callbacks: prometheus.NewDesc("bizapi_callbacks_pending",
			"Webhook callbacks stored and not yet acknowledged by the receiver.", nil, nil),
		outbound: prometheus.NewDesc("bizapi_messages_outbound",
			"Outbound messages in the store, all statuses.", nil, nil),
		inbound: prometheus.NewDesc("bizapi_messages_inbound",
			"Received messages in the store.", nil, nil),
		status: prometheus.NewDesc("bizapi_gateway_status",
			"1 for the gateway's current status (GET /v1/health gateway_status), 0 for the others.", []string{"status"}, nil),
		reconnects: prometheus.NewDesc("bizapi_gateway_reconnects_total",
			"Chat connections made after the first since bizapi started.", nil, nil),
		rtt: prometheus.NewDesc("bizapi_gateway_rtt_seconds",
			"Last ping round trip to chatd (0 before the first).", nil, nil),
		pathInfo: prometheus.NewDesc("bizapi_gateway_path_info",
			"1 for the chat path in use (or last used): address, port, transport (tcp, tls, ws) and HTTP proxy (without password; \"\" when direct).",
			[]string{"addr", "port", "transport", "proxy"}, nil),
		connectedSince: prometheus.NewDesc("bizapi_gateway_connected_since_seconds",
			"When the current chat connection logged in, in Unix seconds; 0 when not connected.", nil, nil),
		dial: prometheus.NewDesc("bizapi_gateway_dial_seconds",
			"How long the last successful connect took: the race of the endpoints, the handshake and the login.", nil, nil),
		closes: prometheus.NewDesc("bizapi_gateway_closes_total",
			"Ends of logged-in chat connections since start, by close reason (health last_close).", []string{"reason"}, nil),
		unsupported: prometheus.NewDesc("bizapi_gateway_network_unsupported",
			"1 while the network is known not to meet the requirements (health network_problem: 5222 open, 443 closed), else 0.", nil, nil),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.errors, sc} {
		if err := h.registry.Register(c); err != nil {
			return nil, fmt.Errorf("api: registering metrics: %w", err)
		}
	}
	m.handler = promhttp.HandlerFor(h.registry, promhttp.HandlerOpts{
		ErrorLog:      promLogger{h.log},
		ErrorHandling: promhttp.ContinueOnError, // a failing store read leaves the other metrics served
	})
	return m, nil
}

func (m *metrics) apiErrors(code int) prometheus.Counter {
	if c, ok := m.errByCode[code]; ok {
		return c
	}
	return m.errors.WithLabelValues(strconv.Itoa(code))
}

// scrapeCollector reads the store's queue depths and the gateway's health at scrape time.
type scrapeCollector struct {
	h                                    *Handler
	unsent, callbacks, outbound, inbound *prometheus.Desc
	status, reconnects, rtt              *prometheus.Desc
	pathInfo, connectedSince, dial       *prometheus.Desc
	closes, unsupported                  *prometheus.Desc
}

func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.unsent, c.callbacks, c.outbound, c.inbound, c.status, c.reconnects, c.rtt,
		c.pathInfo, c.connectedSince, c.dial, c.closes, c.unsupported} {
		ch <- d
	}
}

func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if st, err := c.h.store.Stats(ctx); err != nil {
		err = fmt.Errorf("store stats: %w", err)
		for _, d := range []*prometheus.Desc{c.unsent, c.callbacks, c.outbound, c.inbound} {
			ch <- prometheus.NewInvalidMetric(d, err)
		}
	} else {
		ch <- prometheus.MustNewConstMetric(c.unsent, prometheus.GaugeValue, float64(st.Unsent))
		ch <- prometheus.MustNewConstMetric(c.callbacks, prometheus.GaugeValue, float64(st.PendingCallbacks))
		ch <- prometheus.MustNewConstMetric(c.outbound, prometheus.GaugeValue, float64(st.Messages))
		ch <- prometheus.MustNewConstMetric(c.inbound, prometheus.GaugeValue, float64(st.Inbound))
	}
	g := c.h.gw.Health()
	known := false
	for _, s := range gatewayStatuses {
		v := 0.0
		if s == g.GatewayStatus {
			v, known = 1, true
		}
		ch <- prometheus.MustNewConstMetric(c.status, prometheus.GaugeValue, v, s)
	}
	if !known && g.GatewayStatus != "" {
		ch <- prometheus.MustNewConstMetric(c.status, prometheus.GaugeValue, 1, g.GatewayStatus)
	}
	ch <- prometheus.MustNewConstMetric(c.reconnects, prometheus.CounterValue, float64(g.Reconnects))
	ch <- prometheus.MustNewConstMetric(c.rtt, prometheus.GaugeValue, g.RTT.Seconds())
	if g.Addr != "" {
		ch <- prometheus.MustNewConstMetric(c.pathInfo, prometheus.GaugeValue, 1,
			g.Addr, strconv.Itoa(g.Port), g.Transport, g.Proxy)
	}
	since := 0.0
	if g.GatewayStatus == gateway.StatusConnected && !g.Since.IsZero() {
		since = float64(g.Since.UnixMilli()) / 1000
	}
	ch <- prometheus.MustNewConstMetric(c.connectedSince, prometheus.GaugeValue, since)
	ch <- prometheus.MustNewConstMetric(c.dial, prometheus.GaugeValue, g.DialTime.Seconds())
	for reason, n := range g.Closes {
		ch <- prometheus.MustNewConstMetric(c.closes, prometheus.CounterValue, float64(n), reason)
	}
	unsupported := 0.0
	if g.NetworkProblem != "" {
		unsupported = 1
	}
	ch <- prometheus.MustNewConstMetric(c.unsupported, prometheus.GaugeValue, unsupported)
}

// promLogger sends promhttp's errors to slog.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) { l.log.Error("api: metrics", "err", fmt.Sprint(v...)) }
