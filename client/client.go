// Package client is the chatd client library shared by chat, bizapi, chatbench and netcheck: it dials
// the server — raw chatd on 5222, TLS or WebSocket on 443, optionally through an HTTP CONNECT proxy,
// raced by the dial policy of dial.go (5222 first, 443 after a 250 ms head start or at once when 5222
// fails, 443-only mode, the last good endpoint first) — runs the Noise handshake against the pinned
// server key, logs in with the device key, keeps the connection alive with pings, and reconnects with
// backoff. Requests (sends, read marks, contact lookups) survive reconnects: whatever the server has not
// acknowledged is sent again on the next connection, and the server deduplicates sends by client id.
//
// Deliveries (messages and receipts) are passed to the Handler on the connection's reader goroutine;
// the library acknowledges one to the server only after the Handler returned nil, so a Handler that
// stores what it gets before returning loses nothing.
package client

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/transport"
	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// Defaults of Config fields left at zero (DESIGN §6).
const (
	DefaultPingInterval   = 25 * time.Second
	DefaultPingJitter     = 5 * time.Second
	DefaultPongTimeout    = 10 * time.Second
	DefaultDialTimeout    = 10 * time.Second
	DefaultConnectTimeout = 3 * time.Second
	DefaultHeadStart      = 250 * time.Millisecond
	DefaultMinBackoff     = 500 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
	DefaultStableAfter    = 60 * time.Second
	DefaultReprobe        = 5 * time.Minute
	DefaultTCPUserTimeout = 7 * time.Second
	DefaultTCPKeepAlive   = 15 * time.Second
)

// Handler receives deliveries. Both methods run on the connection's reader goroutine, one at a time,
// in the server's order. They must not wait for the Client's own requests (Send, MarkRead, Lookup):
// the answers are read by the goroutine the Handler is blocking. Hand such work to another goroutine. Return nil only after the delivery is stored: the library then acknowledges it
// and the server forgets it. An error leaves it unacknowledged; the server sends it again on the next
// connection. The same message can reach the Handler again after a crash between storing and
// acknowledging; deduplicate on Message.ServerId.
type Handler interface {
	HandleMessage(ctx context.Context, m *chatdpb.Message) error
	HandleReceipt(ctx context.Context, r *chatdpb.Receipt) error
}

// AsyncHandler is a Handler that stores deliveries without making the reader wait: the library
// hands each delivery over in the server's order and goes on reading; done(nil) says it is stored
// (the library then acknowledges it), done(err) ends the connection so that the server sends it
// again. done is called once, from any goroutine, before or after the Handle call returns; it does
// not block. A Handler that also implements AsyncHandler is used through this interface.
type AsyncHandler interface {
	HandleMessageAsync(ctx context.Context, m *chatdpb.Message, done func(error))
	HandleReceiptAsync(ctx context.Context, r *chatdpb.Receipt, done func(error))
}

// asAsync returns h as an AsyncHandler: itself if it is one, else an adapter that runs it (or, for
// nil, acknowledges and drops deliveries).
func asAsync(h Handler) AsyncHandler {
	if ah, ok := h.(AsyncHandler); ok {
		return ah
	}
	return syncHandler{h}
}

type syncHandler struct{ h Handler }

func (s syncHandler) HandleMessageAsync(ctx context.Context, m *chatdpb.Message, done func(error)) {
	if s.h == nil {
		done(nil)
		return
	}
	done(s.h.HandleMessage(ctx, m))
}

func (s syncHandler) HandleReceiptAsync(ctx context.Context, r *chatdpb.Receipt, done func(error)) {
	if s.h == nil {
		done(nil)
		return
	}
	done(s.h.HandleReceipt(ctx, r))
}

// Config configures a Client. ServerKey, DeviceKey and at least one endpoint (Endpoints or Addrs) are
// required.
type Config struct {
	// Endpoints are the chat endpoints: host, port and transport (tcp: raw chatd, usually 5222; tls:
	// TLS 1.3 with ALPN chatd/1 on 443; ws: WebSocket over HTTPS on 443), as the server publishes them
	// (regclient.ParseConfig). They are raced by the dial policy described in dial.go: the direct
	// path first, the 443 path after HeadStart.
	Endpoints []transport.Endpoint
	// Addrs are more endpoints as strings, after Endpoints: "host:port" is raw chatd (tcp), and
	// "host:port/tls", "host:port/ws" name the transport (transport.ParseEndpoint).
	Addrs []string
	// Preferred is the endpoint that worked last (Status.Endpoint, kept by the application across
	// restarts). It is tried first when it is one of the endpoints. The Client also remembers its own
	// last good endpoint across reconnects.
	Preferred transport.Endpoint
	// Only443 restricts the client to the 443 path: TLS, WebSocket, and raw chatd on a 443 port. The
	// direct 5222 path is never dialled. A server's published only_443 has the same effect
	// (regclient.ParseConfig leaves those endpoints out).
	Only443 bool
	// RootCAs verify the server's TLS certificate on the tls and ws transports; nil means the system
	// roots. The Noise handshake still authenticates the server, whatever TLS says.
	RootCAs *x509.CertPool
	// Proxy chooses an HTTP CONNECT proxy for each endpoint (nil: direct). cmd/ passes
	// transport.ProxyFromEnvironment() (HTTPS_PROXY, NO_PROXY) or transport.ProxyURL(configured).
	Proxy transport.ProxyFunc
	// HeadStart is how long an attempt runs alone before the next endpoint is dialled, unless it
	// fails earlier. If zero, 250 ms; negative starts every endpoint at once.
	HeadStart time.Duration
	// ServerKey is the pinned Noise static key of the server.
	ServerKey [32]byte
	// DeviceKey is this device's Noise static key, registered with the account.
	DeviceKey noisesock.Keypair
	// Handler receives deliveries; nil acknowledges and drops them.
	Handler Handler
	// PingInterval is the mean time between pings on an otherwise silent connection; each wait is
	// jittered by ±PingJitter. It is announced to the server, which closes a client silent for twice
	// as long plus its grace. If zero, 25 s; if negative, no pings are sent (tests of dead connections).
	PingInterval time.Duration
	// PingJitter: if zero, 5 s (capped at a fifth of PingInterval).
	PingJitter time.Duration
	// PongTimeout is how long the client waits for any frame after a ping before it declares the
	// connection dead. If zero, 10 s.
	PongTimeout time.Duration
	// DialTimeout bounds one connect: every attempt of the race, the handshake and the login. If
	// zero, 10 s.
	DialTimeout time.Duration
	// ConnectTimeout bounds each attempt's transport (TCP connect, proxy, TLS, WebSocket upgrade)
	// and, again, its Noise handshake up to the server's proof of the pinned key and its login, so
	// that a silently dropped port or a path that swallows the chat stream is given up quickly. If
	// zero, 3 s.
	ConnectTimeout time.Duration
	// MinBackoff, MaxBackoff: the reconnect delay grows exponentially from MinBackoff to MaxBackoff
	// with full jitter. If zero, 0.5 s and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// StableAfter is how long a connection must last for the backoff to start again from MinBackoff.
	// If zero, 60 s.
	StableAfter time.Duration
	// ReprobeInterval is how often (jittered by ±20 %) the client, while connected, checks the path
	// it is not using: over the 443 path while direct (5222) endpoints exist, it probes them with a
	// handshake and moves back to the first that answers (a short reconnect; requests and deliveries
	// carry over, nothing is lost); on the direct path it checks that the 443 path opens and, if not,
	// reports the network as unsupported in Status.NetworkProblem (N5: 443 is needed). If zero,
	// 5 min (the first check of the 443 path runs at once); negative disables both.
	ReprobeInterval time.Duration
	// TCPUserTimeout is how long sent data may stay unacknowledged before the kernel declares the
	// connection dead (TCP_USER_TIMEOUT; also ends TCP keepalive probing). It makes a send on a
	// blackholed connection fail fast. If zero, 7 s; negative leaves the system default (about 15
	// minutes of retransmissions).
	TCPUserTimeout time.Duration
	// TCPKeepAlive is the idle time after which the kernel sends TCP keepalive probes (then every
	// 5 s), which keep NAT and firewall state alive and, with TCPUserTimeout, detect an idle
	// blackholed connection in about TCPKeepAlive + 5 s. If zero, 15 s; negative disables them.
	TCPKeepAlive time.Duration
	// ClientVersion is sent to the server for its logs, e.g. "chat/0.1".
	ClientVersion string
	// Dial opens TCP connections (to the server, or to the proxy); nil uses a net.Dialer. Either
	// way TCPKeepAlive and TCPUserTimeout are applied to the *net.TCPConn it returns.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// OnStatus, if set, is called after every status change (from the connection goroutines; it
	// must not block).
	OnStatus func(Status)
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
}

// State is the connection state.
type State int

const (
	Disconnected State = iota
	Connecting
	Connected
)

func (s State) String() string {
	switch s {
	case Connecting:
		return "connecting"
	case Connected:
		return "connected"
	}
	return "disconnected"
}

// Status describes the connection for health checks and UIs.
type Status struct {
	State State
	// Endpoint is the path in use (or last used): Addr is its host:port, Transport "tcp", "tls" or
	// "ws", Port its port. Proxy is the HTTP proxy it goes through (without password), "" if direct.
	Endpoint  transport.Endpoint
	Addr      string
	Transport string
	Port      int
	Proxy     string
	// DialTime is how long the last successful connect took: the race, the handshake and the login.
	DialTime time.Duration
	// Since is when State last changed.
	Since time.Time
	// RTT is the last ping round trip (0 before the first pong).
	RTT time.Duration
	// Reconnects counts connections after the first.
	Reconnects int
	// LastClose is the reason the last connection ended ("" before any), in the lower-case names of
	// docs/protocol.md, and LastError a human explanation.
	LastClose string
	LastError string
	// Phone is the logged-in account.
	Phone string
	// NetworkProblem is set while the network does not meet the requirements although a connection
	// works: connected on 5222 while the 443 path fails ("5222 open, 443 closed" is unsupported, N5).
	// It says what failed and what to open; "" when nothing is known to be wrong.
	NetworkProblem string
}

// SendResult is the server's answer to a send.
type SendResult struct {
	ServerID  uint64
	Timestamp time.Time
	// Duplicate is true when the server had stored this client id before (an earlier attempt
	// reached it); ServerID and Timestamp are the original ones.
	Duplicate bool
}

// Client is a connection to chatd that reconnects. Create it with New and start it with Run.
type Client struct {
	// Static after construction.
	cfg       Config
	log       *slog.Logger
	endpoints []transport.Endpoint // validated, deduplicated, without 5222 in 443-only mode
	direct    []transport.Endpoint // endpoints on the direct path (splitPaths), in order
	via443    []transport.Endpoint // endpoints on the 443 path, in order
	dialer    *transport.Dialer

	mu         sync.Mutex
	lastGood   transport.Endpoint  // the endpoint of the last login (or Config.Preferred); guarded by mu
	checked443 time.Time           // when the 443 path was last checked from the direct path (probe.go); guarded by mu
	cur        *conn               // the logged-in connection, nil while disconnected; guarded by mu
	reqs       map[string]*request // unacknowledged requests by key; guarded by mu
	order      []*request          // reqs in submission order (may hold finished ones); guarded by mu
	nextID     uint64              // request ids for read marks and lookups; guarded by mu
	status     Status              // guarded by mu
	connected  chan struct{}       // closed while connected; replaced on disconnect; guarded by mu

	handler AsyncHandler // Config.Handler, adapted when it is synchronous; static
	dedup   *recent      // server ids the Handler stored; safe for concurrent use
}

// New returns a client for cfg. It does not connect; call Run.
func New(cfg Config) (*Client, error) {
	eps, err := endpoints(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.ServerKey == [32]byte{} {
		return nil, errors.New("client: no server key configured (pin the key from the server's /v1/config)")
	}
	if cfg.DeviceKey.Private == [32]byte{} {
		return nil, errors.New("client: no device key configured")
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.PingJitter == 0 {
		cfg.PingJitter = DefaultPingJitter
	}
	if cfg.PingInterval > 0 {
		cfg.PingJitter = min(cfg.PingJitter, cfg.PingInterval/5)
	}
	if cfg.PongTimeout <= 0 {
		cfg.PongTimeout = DefaultPongTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff) // a MinBackoff above the default cap raises it
	if cfg.StableAfter <= 0 {
		cfg.StableAfter = DefaultStableAfter
	}
	if cfg.ReprobeInterval == 0 {
		cfg.ReprobeInterval = DefaultReprobe
	}
	if cfg.TCPUserTimeout == 0 {
		cfg.TCPUserTimeout = DefaultTCPUserTimeout
	}
	if cfg.TCPKeepAlive == 0 {
		cfg.TCPKeepAlive = DefaultTCPKeepAlive
	}
	switch {
	case cfg.HeadStart == 0:
		cfg.HeadStart = DefaultHeadStart
	case cfg.HeadStart < 0:
		cfg.HeadStart = 0
	}
	c := &Client{
		cfg:       cfg,
		endpoints: eps,
		dialer: &transport.Dialer{
			DialTCP:     cfg.Dial,
			RootCAs:     cfg.RootCAs,
			Proxy:       cfg.Proxy,
			UserAgent:   userAgent(cfg.ClientVersion),
			KeepAlive:   cfg.TCPKeepAlive,
			UserTimeout: cfg.TCPUserTimeout,
		},
		log:       cfg.Logger,
		reqs:      make(map[string]*request),
		connected: make(chan struct{}),
		dedup:     newRecent(8192),
		handler:   asAsync(cfg.Handler),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.status.Since = time.Now()
	c.direct, c.via443 = splitPaths(eps)
	if p := cfg.Preferred.Normalize(); slices.Contains(eps, p) {
		c.lastGood = p
	}
	return c, nil
}

// endpoints validates and merges cfg.Endpoints and cfg.Addrs, drops duplicates and, in 443-only
// mode, the direct path.
func endpoints(cfg Config) ([]transport.Endpoint, error) {
	all := make([]transport.Endpoint, 0, len(cfg.Endpoints)+len(cfg.Addrs))
	for _, ep := range cfg.Endpoints {
		ep = ep.Normalize()
		if err := ep.Validate(); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		all = append(all, ep)
	}
	more, err := transport.ParseEndpoints(cfg.Addrs)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	all = append(all, more...)
	if len(all) == 0 {
		return nil, errors.New("client: no server address configured")
	}
	var out []transport.Endpoint
	for _, ep := range all {
		if slices.Contains(out, ep) {
			continue
		}
		if cfg.Only443 && !transport.On443(ep, all) {
			continue
		}
		out = append(out, ep)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("client: 443-only mode, but none of the endpoints %v is on the 443 path (tls, ws, or port 443)",
			transport.EndpointStrings(all))
	}
	return out, nil
}

func userAgent(clientVersion string) string {
	if clientVersion == "" {
		return "chatd-client"
	}
	return clientVersion
}

// Endpoints returns the endpoints the client dials (after 443-only filtering), in configured order.
func (c *Client) Endpoints() []transport.Endpoint { return slices.Clone(c.endpoints) }

// Run connects and reconnects until ctx is done (it then returns nil after saying goodbye to the
// server) or a permanent error occurs: ErrUnknownDevice, ErrUnsupportedVersion, or a
// *noisesock.KeyMismatchError when the server does not prove the pinned key.
func (c *Client) Run(ctx context.Context) error {
	attempt := 0
	for {
		c.setState(Connecting, "", "")
		up, err := c.connectOnce(ctx)
		if ctx.Err() != nil {
			c.setState(Disconnected, "client_closed", "")
			return nil
		}
		var ce *CloseError
		var retryAfter time.Duration
		if errors.As(err, &ce) {
			retryAfter = ce.RetryAfter
			if ce.Reason == chatdpb.CloseReason_REPLACED {
				// Another connection with this device key took over; taking it back at once would
				// make two processes knock each other off forever.
				retryAfter = max(retryAfter, c.cfg.MaxBackoff)
			}
		}
		if permanent(err) {
			c.setState(Disconnected, closeName(err), err.Error())
			return err
		}
		c.setState(Disconnected, closeName(err), errString(err))
		if up >= c.cfg.StableAfter {
			attempt = 0 // a connection that lasted is not a flapping one
		}
		if errors.Is(err, errMoving) {
			continue // to the direct path, at once
		}
		delay := max(backoff(attempt, c.cfg.MinBackoff, c.cfg.MaxBackoff), retryAfter)
		attempt++
		c.log.Info("disconnected; reconnecting", "err", err, "delay", delay.Round(time.Millisecond))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			c.setState(Disconnected, "client_closed", "")
			return nil
		case <-t.C:
		}
	}
}

// backoff is the full-jitter exponential delay before reconnect attempt n (0-based).
func backoff(n int, lo, hi time.Duration) time.Duration {
	ceil := lo << min(n, 16)
	if ceil <= 0 || ceil > hi {
		ceil = hi
	}
	return lo/2 + rand.N(ceil-lo/2+1)
}

func permanent(err error) bool {
	return errors.Is(err, ErrUnknownDevice) || errors.Is(err, ErrUnsupportedVersion) ||
		errors.Is(err, noisesock.ErrServerKeyMismatch)
}

// Status returns the current connection status.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// WaitConnected blocks until the client is logged in or ctx ends.
func (c *Client) WaitConnected(ctx context.Context) error {
	c.mu.Lock()
	ch := c.connected
	c.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) setState(st State, lastClose, lastErr string) {
	c.mu.Lock()
	if c.status.State == Connected && st != Connected {
		c.connected = make(chan struct{})
	}
	if c.status.State != st {
		c.status.Since = time.Now()
	}
	c.status.State = st
	if lastClose != "" {
		c.status.LastClose, c.status.LastError = lastClose, lastErr
	}
	s := c.status
	c.mu.Unlock()
	if c.cfg.OnStatus != nil {
		c.cfg.OnStatus(s)
	}
}

// Send submits a message and waits for the server's acknowledgement, across reconnects, until ctx
// ends. clientID must be unique per sender and stable across retries (the server deduplicates on it);
// "" picks a random one. If ctx ends first the message may still be sent later by this Client (until
// it stops), and a later Send with the same clientID returns the original
// result.
func (c *Client) Send(ctx context.Context, to, clientID string, content *chatdpb.Content) (SendResult, error) {
	if clientID == "" {
		clientID = NewClientID()
	}
	// Refuse here what the server would refuse, rather than resend it on every connection.
	switch {
	case len(clientID) > wire.MaxClientIDLen:
		return SendResult{}, fmt.Errorf("%w: client id of %d bytes exceeds %d", ErrRejected, len(clientID), wire.MaxClientIDLen)
	case content == nil:
		return SendResult{}, fmt.Errorf("%w: no content", ErrRejected)
	case len(content.GetBody()) > wire.MaxContentLen:
		return SendResult{}, fmt.Errorf("%w: content of %d bytes exceeds %d", ErrRejected, len(content.GetBody()), wire.MaxContentLen)
	}
	env := &chatdpb.Envelope{Body: &chatdpb.Envelope_Send{Send: &chatdpb.Send{ClientId: clientID, To: to, Content: content}}}
	res, err := c.do(ctx, "send:"+clientID, env)
	if err != nil {
		return SendResult{}, err
	}
	return res.(SendResult), nil
}

// MarkRead tells the server that the messages with these server ids (addressed to this account) were
// read; their senders get read receipts. It waits for the server's acknowledgement across reconnects.
func (c *Client) MarkRead(ctx context.Context, serverIDs ...uint64) error {
	if len(serverIDs) > wire.MaxIDsPerMarkRead {
		return fmt.Errorf("%w: %d ids exceed %d per read mark", ErrRejected, len(serverIDs), wire.MaxIDsPerMarkRead)
	}
	id := c.newRequestID()
	env := &chatdpb.Envelope{Body: &chatdpb.Envelope_MarkRead{MarkRead: &chatdpb.MarkRead{RequestId: id, ServerIds: serverIDs}}}
	_, err := c.do(ctx, fmt.Sprintf("req:%d", id), env)
	return err
}

// Lookup asks the server which of phones are registered accounts.
func (c *Client) Lookup(ctx context.Context, phones ...string) ([]*chatdpb.Contact, error) {
	if len(phones) > wire.MaxContactsPerQuery {
		return nil, fmt.Errorf("%w: %d phones exceed %d per lookup", ErrRejected, len(phones), wire.MaxContactsPerQuery)
	}
	id := c.newRequestID()
	env := &chatdpb.Envelope{Body: &chatdpb.Envelope_ContactQuery{ContactQuery: &chatdpb.ContactQuery{RequestId: id, Phones: phones}}}
	res, err := c.do(ctx, fmt.Sprintf("req:%d", id), env)
	if err != nil {
		return nil, err
	}
	return res.([]*chatdpb.Contact), nil
}

// Pending returns how many requests (sends, read marks, lookups) wait for the server's answer.
func (c *Client) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.reqs)
}

func (c *Client) newRequestID() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextID++
	return c.nextID
}

// request is an envelope the server must acknowledge. It is sent on the current connection and again
// on every new one until its answer arrives.
type request struct {
	key  string
	env  *chatdpb.Envelope
	done chan struct{} // closed when res/err are set
	res  any
	err  error
}

func (c *Client) do(ctx context.Context, key string, env *chatdpb.Envelope) (any, error) {
	c.mu.Lock()
	r, ok := c.reqs[key]
	if !ok {
		r = &request{key: key, env: env, done: make(chan struct{})}
		c.reqs[key] = r
		c.order = append(c.order, r)
	}
	cur := c.cur
	c.mu.Unlock()
	if !ok && cur != nil {
		cur.enqueue(env)
	}
	select {
	case <-r.done:
		return r.res, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// resolve finishes the request key with a result or error.
func (c *Client) resolve(key string, res any, err error) {
	c.mu.Lock()
	r, ok := c.reqs[key]
	if ok {
		delete(c.reqs, key)
	}
	c.mu.Unlock()
	if ok {
		r.res, r.err = res, err
		close(r.done)
	}
}

// attach makes cn the current connection and hands it every pending request, in order, as the
// first thing its writer sends (cn.resend). It must run before the writer starts. Requests made after
// it go through cn.out, behind those.
func (c *Client) attach(cn *conn) {
	c.mu.Lock()
	c.cur = cn
	live := c.order[:0]
	for _, r := range c.order {
		if c.reqs[r.key] == r {
			live = append(live, r)
		}
	}
	clear(c.order[len(live):])
	c.order = live
	cn.resend = make([]*chatdpb.Envelope, len(live))
	for i, r := range live {
		cn.resend[i] = r.env
	}
	c.mu.Unlock()
}

func (c *Client) detach(cn *conn) {
	c.mu.Lock()
	if c.cur == cn {
		c.cur = nil
	}
	c.mu.Unlock()
}

// NewClientID returns a random client message id.
func NewClientID() string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, 20)
	for i := range b {
		b[i] = alphabet[rand.N(len(alphabet))]
	}
	return string(b)
}

// recent is a bounded set of the most recent server ids. It grows as ids arrive, so an idle client
// (chatbench opens thousands) holds almost nothing. It is safe for concurrent use (an AsyncHandler
// reports stored messages from its own goroutine).
type recent struct {
	mu   sync.Mutex
	set  map[uint64]struct{}
	ring []uint64 // grows to max, then wraps
	max  int
	next int
}

func newRecent(n int) *recent {
	return &recent{set: make(map[uint64]struct{}), max: n}
}

func (r *recent) seen(id uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.set[id]
	return ok
}

func (r *recent) add(id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.set[id] = struct{}{}
	if len(r.ring) < r.max {
		r.ring = append(r.ring, id)
		return
	}
	delete(r.set, r.ring[r.next])
	r.ring[r.next] = id
	r.next = (r.next + 1) % r.max
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
