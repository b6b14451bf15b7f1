// Package server is the chatd messaging server: it accepts chat connections (from any listener: 5222,
// or the chat side of the 443 multiplexer), runs the Noise handshake, logs devices in, routes messages
// and receipts through the durable store, and keeps one live session per account.
//
// Delivery model: every message or receipt for an account is a row in the store's delivery queue. A
// session's writer pulls pending rows in order (after the last one it sent) whenever it is woken — when
// something is enqueued for its account or when acks free room in its in-flight window — so the online
// path and the offline path are the same code, and nothing is delivered that is not stored first.
// Unacknowledged rows stay queued and are sent again on the account's next session.
package server

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd-dev/chatd/internal/keyedlimit"
	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/server/store"
	"github.com/chatd-dev/chatd/wire/chatdpb"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config fields left at zero.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultPingInterval     = 25 * time.Second
	DefaultPongTimeout      = 10 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
	DefaultMaxInflight      = 1024
	DefaultMaxPipelined     = 1024
	MinPingInterval         = 5 * time.Second
	MaxPingInterval         = 10 * time.Minute

	// Probe logins (docs/protocol.md §4.3).
	DefaultProbeBurst           = 30               // probe logins per address at once…
	DefaultProbeEvery           = 2 * time.Second  // …then one more every 2 s: 30 a minute
	DefaultMaxProbeHold         = 15 * time.Minute // the cap on ClientHello.probe_hold_ms
	DefaultProbeHoldGrace       = 5 * time.Second  // added to a hold before the server gives up on the ping
	DefaultMaxHeldProbesPerAddr = 32               // probes held at once per client address
	DefaultMaxHeldProbes        = 1024             // probes held at once in all
)

// Config configures a Server. Store and StaticKey are required; every other field has a default.
type Config struct {
	// Store is the durable store of accounts, messages and the delivery queue.
	Store *store.Store
	// StaticKey is the server's Noise static key, the one clients pin.
	StaticKey noisesock.Keypair
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Metrics receives counters and gauges; nil means a private, unexported set.
	Metrics *Metrics
	// HandshakeTimeout bounds the time from accept to a logged-in session (preamble, Noise handshake,
	// login). If zero, DefaultHandshakeTimeout (10 s).
	HandshakeTimeout time.Duration
	// PongTimeout is the grace added to twice the client's ping interval before a silent client is
	// closed with IDLE_TIMEOUT. If zero, DefaultPongTimeout (10 s).
	PongTimeout time.Duration
	// WriteTimeout bounds each write to a client; a client that does not read for this long is closed
	// with WRITE_TIMEOUT. If zero, DefaultWriteTimeout (10 s).
	WriteTimeout time.Duration
	// MaxInflight is the number of deliveries sent to a session and not yet acknowledged before the
	// server waits for acks. If zero, DefaultMaxInflight (1024).
	MaxInflight int
	// MaxPipelined bounds the client requests (sends, delivery acks, read marks) one session has
	// accepted and not finished: their store writes not yet committed, or their replies not yet taken
	// by the session's writer. A session at the bound stops reading from its client until one finishes,
	// so a client that floods sends is slowed down to the store's pace instead of growing queues. If
	// zero, DefaultMaxPipelined (1024).
	MaxPipelined int
	// MinPingInterval is the shortest ping interval a client may announce; shorter ones are raised to
	// it. If zero, 5 s. (Tests lower it to see idle timeouts quickly.)
	MinPingInterval time.Duration
	// ShutdownRetryAfter is the "retry after" hint sent with SERVER_SHUTDOWN; each session gets a
	// random value between 1 and 2 times it, so clients do not return in one wave. If zero, 2 s.
	ShutdownRetryAfter time.Duration
	// ProbeBurst and ProbeEvery limit probe logins (docs/protocol.md §4.3) per client address (an IPv4
	// address, or the /64 of an IPv6 address; keyedlimit.ClientKey): ProbeBurst at once, then one more
	// every ProbeEvery. A probe over the limit is answered Close{RATE_LIMITED, retry_after_ms} instead
	// of PROBE_OK. Account logins are not limited by it. If zero, DefaultProbeBurst (30) and
	// DefaultProbeEvery (2 s): 30 a minute. A negative ProbeEvery disables the limit.
	ProbeBurst int
	ProbeEvery time.Duration
	// MaxProbeHold caps the hold a probe asks for (ClientHello.probe_hold_ms). If zero,
	// DefaultMaxProbeHold (15 min).
	MaxProbeHold time.Duration
	// ProbeHoldGrace is added to a probe's hold before the server stops waiting for its ping and closes
	// it with PROBE_DONE "probe hold elapsed". If zero, DefaultProbeHoldGrace (5 s).
	ProbeHoldGrace time.Duration
	// MaxHeldProbesPerAddr and MaxHeldProbes cap the probes held at once per client address (as for
	// ProbeBurst) and in all. A probe that asks for a hold beyond either cap is answered PROBE_OK and
	// closed at once. If zero, DefaultMaxHeldProbesPerAddr (32) and DefaultMaxHeldProbes (1024); if
	// negative, no probe is held.
	MaxHeldProbesPerAddr int
	MaxHeldProbes        int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("server: closed")

// Server is the chat server. Create it with New.
type Server struct {
	// Static after construction.
	cfg        Config
	log        *slog.Logger
	metrics    *Metrics
	now        func() time.Time
	events     messageEvents                                 // the chatd_messages_total counters, resolved once
	deliveries struct{ handedOver, read prometheus.Counter } // chatd_deliveries_sent_total

	known knownPhones // phones known to be registered accounts

	mu        sync.Mutex
	closed    bool                  // guarded by mu
	listeners map[net.Listener]bool // guarded by mu
	sessions  map[string]*session   // logged-in sessions by phone; guarded by mu
	conns     map[*session]struct{} // every session, logged in or not; guarded by mu
	wg        sync.WaitGroup        // one per connection handler

	probeLimit *keyedlimit.Limiter // probe logins per client address; nil: no limit; guards itself
	probeMu    sync.Mutex
	heldProbes map[string]int // held probes by client address (never a zero count); guarded by probeMu
	heldTotal  int            // held probes in all; guarded by probeMu
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.PongTimeout <= 0 {
		cfg.PongTimeout = DefaultPongTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = DefaultMaxInflight
	}
	if cfg.MaxPipelined <= 0 {
		cfg.MaxPipelined = DefaultMaxPipelined
	}
	if cfg.MinPingInterval <= 0 {
		cfg.MinPingInterval = MinPingInterval
	}
	if cfg.ShutdownRetryAfter <= 0 {
		cfg.ShutdownRetryAfter = 2 * time.Second
	}
	if cfg.ProbeBurst <= 0 {
		cfg.ProbeBurst = DefaultProbeBurst
	}
	if cfg.ProbeEvery == 0 {
		cfg.ProbeEvery = DefaultProbeEvery
	}
	if cfg.MaxProbeHold <= 0 {
		cfg.MaxProbeHold = DefaultMaxProbeHold
	}
	if cfg.ProbeHoldGrace <= 0 {
		cfg.ProbeHoldGrace = DefaultProbeHoldGrace
	}
	if cfg.MaxHeldProbesPerAddr == 0 {
		cfg.MaxHeldProbesPerAddr = DefaultMaxHeldProbesPerAddr
	}
	if cfg.MaxHeldProbes == 0 {
		cfg.MaxHeldProbes = DefaultMaxHeldProbes
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		metrics:   cfg.Metrics,
		now:       cfg.Now,
		listeners: make(map[net.Listener]bool),
		sessions:  make(map[string]*session),
		conns:     make(map[*session]struct{}),

		probeLimit: keyedlimit.New(keyedlimit.Config{Every: cfg.ProbeEvery, Burst: cfg.ProbeBurst}),
		heldProbes: make(map[string]int),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.events = newMessageEvents(s.metrics)
	s.deliveries.handedOver = s.metrics.deliveries.WithLabelValues("handed_over")
	s.deliveries.read = s.metrics.deliveries.WithLabelValues("read")
	if cfg.Store != nil {
		registerStoreMetrics(s.metrics.Registry, cfg.Store)
		s.metrics.registerQueueDepth(func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			n, err := cfg.Store.QueueDepth(ctx)
			if err != nil {
				return -1
			}
			return float64(n)
		})
	}
	return s
}

// Serve accepts chat connections on ln until ln fails or Shutdown is called, and returns
// ErrServerClosed after Shutdown. Connections from a transport.Mux carry their transport label.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// EMFILE, ENFILE, ECONNABORTED…: the listener still works; back off like net/http.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		sess := newSession(s, c)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return ErrServerClosed
		}
		s.conns[sess] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go sess.run() // finish calls s.wg.Done
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Shutdown stops accepting, closes every session with SERVER_SHUTDOWN (and a "retry after" hint), and
// waits for the connection handlers to finish or ctx to end.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*session, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		// Spread reconnects over 1–2× the hint so clients do not return in one wave.
		retry := s.cfg.ShutdownRetryAfter + rand.N(s.cfg.ShutdownRetryAfter+1)
		c.close(chatdpb.CloseReason_SERVER_SHUTDOWN, "server shutting down", retry)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// login makes sess the account's live session, closing the one it replaces.
func (s *Server) login(sess *session) {
	s.mu.Lock()
	old := s.sessions[sess.phone]
	s.sessions[sess.phone] = sess
	s.mu.Unlock()
	if old != nil {
		old.close(chatdpb.CloseReason_REPLACED, "another connection logged in as this account", 0)
	}
}

// forget removes sess from the server's tables.
func (s *Server) forget(sess *session) {
	s.mu.Lock()
	delete(s.conns, sess)
	if sess.phone != "" && s.sessions[sess.phone] == sess {
		delete(s.sessions, sess.phone)
	}
	s.mu.Unlock()
}

// handOver passes items just committed to their recipients' live sessions, which deliver them without
// reading them back (session.handOver). The store's writer calls it from the writes' callbacks, in
// commit order, so each session gets its items in seq order.
func (s *Server) handOver(items ...store.Item) {
	if len(items) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i < len(items); {
		j := i + 1
		for j < len(items) && items[j].Recipient == items[i].Recipient {
			j++
		}
		if sess := s.sessions[items[i].Recipient]; sess != nil {
			sess.handOver(items[i:j])
		}
		i = j
	}
}

// DeviceChanged ends phone's live session if it was opened with another device key than devicePub:
// the number was registered again on a new device, and the old one must not keep receiving.
func (s *Server) DeviceChanged(phone string, devicePub [32]byte) {
	s.mu.Lock()
	sess := s.sessions[phone]
	s.mu.Unlock()
	if sess != nil && sess.conn.PeerStatic() != devicePub {
		sess.close(chatdpb.CloseReason_REPLACED, "the number was registered on another device", 0)
	}
}

// Online reports whether phone has a live session.
func (s *Server) Online(phone string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[phone] != nil
}

// Sessions returns the number of logged-in sessions.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// acquireHold takes a held-probe slot for the client address addr, if neither cap is reached.
func (s *Server) acquireHold(addr string) bool {
	s.probeMu.Lock()
	defer s.probeMu.Unlock()
	if s.heldTotal >= s.cfg.MaxHeldProbes || s.heldProbes[addr] >= s.cfg.MaxHeldProbesPerAddr {
		return false
	}
	s.heldTotal++
	s.heldProbes[addr]++
	s.metrics.probesHeld.Inc()
	return true
}

// releaseHold frees a slot taken by acquireHold.
func (s *Server) releaseHold(addr string) {
	s.probeMu.Lock()
	defer s.probeMu.Unlock()
	s.heldTotal--
	if s.heldProbes[addr]--; s.heldProbes[addr] <= 0 {
		delete(s.heldProbes, addr)
	}
	s.metrics.probesHeld.Dec()
}

// HeldProbes returns the number of probe connections held open now (docs/protocol.md §4.3).
func (s *Server) HeldProbes() int {
	s.probeMu.Lock()
	defer s.probeMu.Unlock()
	return s.heldTotal
}

// messageEvents are the chatd_messages_total counters by event, looked up once instead of per message.
type messageEvents struct {
	stored, duplicate, unknownRecipient, invalid, delivered, read prometheus.Counter
}

func newMessageEvents(m *Metrics) messageEvents {
	c := func(event string) prometheus.Counter { return m.messages.WithLabelValues(event) }
	return messageEvents{
		stored: c("stored"), duplicate: c("duplicate"), unknownRecipient: c("unknown_recipient"),
		invalid: c("invalid"), delivered: c("delivered"), read: c("read"),
	}
}

// registerStoreMetrics exports the store's group-commit counters (once per registry: a second server
// on the same registry keeps the first one's).
func registerStoreMetrics(reg *prometheus.Registry, st *store.Store) {
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "chatd_store_commits_total",
			Help: "Write transactions committed by the store's group-commit writer (one fsync each).",
		}, func() float64 { return float64(st.WriterStats().Commits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "chatd_store_write_ops_total",
			Help: "Store write operations committed (sends, acks, read marks, registrations, …); divided by chatd_store_commits_total, the batching of group commit.",
		}, func() float64 { return float64(st.WriterStats().Ops) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "chatd_store_write_errors_total",
			Help: "Store write operations that failed.",
		}, func() float64 { return float64(st.WriterStats().Failed) }),
	} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				panic(err)
			}
		}
	}
}

// maxKnownPhones bounds the known-phones cache (about 100 bytes an entry).
const maxKnownPhones = 1 << 16

// knownPhones remembers phones that are registered accounts, so that a send to a phone seen before is
// stored without checking the recipient in the store. It only ever holds phones that were registered
// when added, and accounts are never deleted, so a hit is always right; a miss costs a lookup inside
// the send's own write (store.CheckRecipient), not a round trip. When full it starts over.
type knownPhones struct {
	m sync.Map // phone → struct{}
	n atomic.Int64
}

func (k *knownPhones) has(phone string) bool {
	_, ok := k.m.Load(phone)
	return ok
}

func (k *knownPhones) add(phone string) {
	if _, ok := k.m.Load(phone); ok {
		return
	}
	if _, loaded := k.m.LoadOrStore(phone, struct{}{}); !loaded && k.n.Add(1) > maxKnownPhones {
		k.m.Clear()
		k.n.Store(0)
	}
}
