package server

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the server's Prometheus metrics. Create them with NewMetrics and pass them to Config;
// serve Registry on the admin address.
type Metrics struct {
	// Registry holds every metric below plus whatever the caller adds (Go and process collectors).
	Registry *prometheus.Registry

	accepted         *prometheus.CounterVec // port, transport
	connections      *prometheus.GaugeVec   // port, transport: logged-in sessions now
	handshakes       *prometheus.CounterVec // result
	handshakeSeconds prometheus.Histogram
	logins           *prometheus.CounterVec // result
	messages         *prometheus.CounterVec // event
	closes           *prometheus.CounterVec // reason
	probesHeld       prometheus.Gauge
	deliveries       *prometheus.CounterVec // source
}

// NewMetrics creates the server metrics in reg (a new registry when nil).
func NewMetrics(reg *prometheus.Registry) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		Registry: reg,
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatd_connections_accepted_total",
			Help: "Chat connections accepted, by local port and transport (tcp: raw chatd, tls: chatd inside TLS, ws: chatd in a WebSocket over HTTPS).",
		}, []string{"port", "transport"}),
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "chatd_connections",
			Help: "Logged-in chat sessions now, by local port and transport.",
		}, []string{"port", "transport"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatd_handshakes_total",
			Help: "Noise handshakes by result: ok, failed, timeout, bad_preamble.",
		}, []string{"result"}),
		handshakeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "chatd_handshake_seconds",
			Help:    "Time from accept to a finished Noise handshake.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatd_logins_total",
			Help: "Logins by result: ok, unknown_device, probe (answered PROBE_OK, held or not), probe_limited (a probe refused with RATE_LIMITED), unsupported_version, error.",
		}, []string{"result"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatd_messages_total",
			Help: "Message events: stored, duplicate, unknown_recipient, invalid, delivered (a delivery acked), read.",
		}, []string{"event"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatd_closes_total",
			Help: "Connections closed, by close reason (the CloseReason names of docs/protocol.md).",
		}, []string{"reason"}),
		probesHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatd_probes_held",
			Help: "Probe connections held open now at the client's request (ClientHello.probe_hold_ms); not counted in chatd_connections.",
		}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatd_deliveries_sent_total",
			Help: "Deliveries (messages and receipts) sent to sessions, by where the session got them: handed_over (from the store's writer as it committed them: the session had read its queue to the end) or read (from the store's queue: after login, after falling behind).",
		}, []string{"source"}),
	}
	reg.MustRegister(m.accepted, m.connections, m.handshakes, m.handshakeSeconds, m.logins, m.messages, m.closes, m.probesHeld, m.deliveries)
	return m
}

// Rejected counts a connection closed before it reached the chat server (by the 443 multiplexer).
func (m *Metrics) Rejected(reason string) {
	m.closes.WithLabelValues(reason).Inc()
	switch reason {
	case "bad_preamble":
		m.handshakes.WithLabelValues("bad_preamble").Inc()
	case "handshake_timeout":
		m.handshakes.WithLabelValues("timeout").Inc()
	default:
		m.handshakes.WithLabelValues("failed").Inc()
	}
}

// registerQueueDepth adds the offline queue depth gauge, read from the store at scrape time.
func (m *Metrics) registerQueueDepth(fn func() float64) {
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chatd_offline_queue_depth",
		Help: "Deliveries (messages and receipts) stored and not yet acknowledged by their recipient.",
	}, fn)
	if err := m.Registry.Register(g); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			panic(err)
		}
	}
}

func portLabel(p int) string { return strconv.Itoa(p) }
