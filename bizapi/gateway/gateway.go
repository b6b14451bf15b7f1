package gateway

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/bizapi/store"
	"github.com/chatd-dev/chatd/bizapi/webhook"
	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/client/regclient"
	"github.com/chatd-dev/chatd/content"
	"github.com/chatd-dev/chatd/phone"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
	"github.com/chatd-dev/chatd/transport"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// Defaults of Config fields left at zero.
const (
	DefaultMaxInFlight = 1024 // sends waiting for the server's ack
)

// Config configures a Gateway. Store and ServerURL are required.
type Config struct {
	Store store.Store
	// ServerURL is chatd's HTTPS base URL (registration and config), e.g. https://chat.example.com.
	ServerURL string
	// RootCAs verify chatd's HTTPS certificate; nil means the system roots.
	RootCAs *x509.CertPool
	// WantStatus reports whether a status callback is wanted (webhooks.message.{sent,delivered,read});
	// failed is always sent. nil means sent and delivered.
	WantStatus func(status string) bool
	// PersistCallbacks reports callback_persist: true stores callbacks with the status change in
	// one transaction; false hands them to Memory. nil means true.
	PersistCallbacks func() bool
	// Memory receives callbacks when PersistCallbacks is false.
	Memory interface {
		EnqueueCallback(ctx context.Context, cb store.Callback) error
	}
	// WakeCallbacks is called after a callback was queued.
	WakeCallbacks func()
	// Proxy chooses the HTTP CONNECT proxy of the chat connection and of the HTTPS registration and
	// config requests alike; nil means direct. cmd/bizapi passes transport.ProxyFromEnvironment()
	// (HTTPS_PROXY, NO_PROXY) or transport.ProxyURL of its proxy setting.
	Proxy transport.ProxyFunc
	// Only443 restricts the chat connection to the 443 path (TLS, WebSocket): port 5222 is never
	// dialled (N5). The server's published only_443 has the same effect; either one is enough.
	Only443 bool
	// MaxBackoff caps the reconnect delay (client.Config.MaxBackoff); 0 means its default.
	MaxBackoff time.Duration
	// Client adjusts the chat client's configuration (tests shorten timers; netcheck later).
	Client func(*client.Config)
	// MaxInFlight is how many sends may wait for their ack at once. If zero, DefaultMaxInFlight.
	MaxInFlight int
	Logger      *slog.Logger
	Now         func() time.Time
}

// Gateway is the connection to chatd. Create it with New and run it with Run.
type Gateway struct {
	// Static after construction.
	cfg Config
	log *slog.Logger
	reg *regclient.Client

	outboxWake   chan struct{} // capacity 1
	readsWake    chan struct{} // capacity 1
	endpointWake chan struct{} // capacity 1: a login used another endpoint than the saved one
	restart      chan struct{} // capacity 1: the account changed (verified); reconnect

	// acctMu orders the writes of the account and of the pinned operator key: Register and Verify
	// (a new registration) against refreshConfig (config cache, operator key on first use), which
	// may still run for the registration before. Never held across a network call.
	acctMu sync.Mutex

	mu          sync.Mutex
	cli         *client.Client   // the running chat client, nil when none; guarded by mu
	status      string           // gateway status when no client runs; guarded by mu
	since       time.Time        // guarded by mu
	configError string           // guarded by mu
	lastErr     string           // guarded by mu
	phone       string           // guarded by mu
	connected   bool             // the running client's last status was Connected; guarded by mu
	closes      map[string]int64 // ends of logged-in connections by close reason; guarded by mu
	endpoint    string           // the endpoint of the last login (Endpoint.String); guarded by mu
	savedEP     string           // the endpoint in the store; guarded by mu
}

// New returns a gateway for cfg.
func New(cfg Config) (*Gateway, error) {
	if cfg.Store == nil {
		return nil, errors.New("gateway: no store")
	}
	if cfg.ServerURL == "" {
		return nil, errors.New("gateway: no chatd server URL configured")
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.WantStatus == nil {
		cfg.WantStatus = func(s string) bool { return s == store.StatusSent || s == store.StatusDelivered }
	}
	if cfg.PersistCallbacks == nil {
		cfg.PersistCallbacks = func() bool { return true }
	}
	if cfg.WakeCallbacks == nil {
		cfg.WakeCallbacks = func() {}
	}
	g := &Gateway{
		cfg:          cfg,
		log:          cfg.Logger,
		reg:          regclient.NewWithProxy(cfg.ServerURL, cfg.RootCAs, cfg.Proxy),
		outboxWake:   make(chan struct{}, 1),
		readsWake:    make(chan struct{}, 1),
		endpointWake: make(chan struct{}, 1),
		restart:      make(chan struct{}, 1),
		status:       StatusUninitialized,
		since:        cfg.Now(),
		closes:       map[string]int64{},
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	return g, nil
}

// WakeOutbox tells the sender that the outbox has new messages.
func (g *Gateway) WakeOutbox() { poke(g.outboxWake) }

// WakeReads tells the read-receipt sender that reads were requested.
func (g *Gateway) WakeReads() { poke(g.readsWake) }

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Run connects to chatd whenever a number is registered, and keeps doing so until ctx ends.
func (g *Gateway) Run(ctx context.Context) error {
	for {
		acct, err := g.cfg.Store.Account(ctx)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("gateway: reading the account: %w", err)
		}
		if err != nil || !acct.Registered {
			g.setStatus(StatusUnregistered, "")
			select {
			case <-ctx.Done():
				return nil
			case <-g.restart:
				continue
			}
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- g.serve(rctx, acct) }()
		select {
		case <-ctx.Done():
			cancel()
			<-done
			return nil
		case <-g.restart:
			cancel()
			<-done
		case err := <-done:
			cancel()
			// A permanent failure (device replaced, key mismatch): stay disconnected until the number
			// is registered again.
			g.setStatus(StatusDisconnected, errString(err))
			g.log.Error("gateway stopped", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-g.restart:
			}
		}
	}
}

// serve runs one registered account: the chat client, the outbox sender, the read sender and the
// keeper of the last good endpoint.
func (g *Gateway) serve(ctx context.Context, acct store.Account) error {
	cfg := g.clientConfig(ctx, acct)
	cli, err := client.New(cfg)
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.cli, g.phone, g.connected = cli, acct.Phone, false
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.cli = nil
		g.mu.Unlock()
	}()
	// The senders stop with the client, also when it stops on its own (a permanent error).
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); g.sendOutbox(sctx, cli) }()
	go func() { defer wg.Done(); g.sendReads(sctx, cli) }()
	go func() { defer wg.Done(); g.saveEndpoint(sctx) }()
	err = cli.Run(ctx)
	cancel()
	wg.Wait()
	return err
}

// clientConfig fetches the server's current config over HTTPS (falling back to the cached one, N7)
// and builds the chat client's configuration.
func (g *Gateway) clientConfig(ctx context.Context, acct store.Account) client.Config {
	key, _ := pki.StaticKeyFromPrivate(acct.DevicePriv) // a stored private key is always valid
	cc, err := g.refreshConfig(ctx, acct)
	if err != nil {
		g.log.Warn("gateway: HTTPS config fetch failed; running from the cached config", "err", err)
		json.Unmarshal(acct.Config, &cc)
		go g.retryConfig(ctx, acct)
	}
	_, eps, perr := regclient.ParseConfig(cc)
	if perr != nil {
		eps = fallbackEndpoints(g.cfg.ServerURL)
	}
	cfg := client.Config{
		Endpoints:     eps,
		Preferred:     g.preferred(ctx),
		Only443:       cc.Only443 || g.cfg.Only443,
		MaxBackoff:    g.cfg.MaxBackoff,
		RootCAs:       g.cfg.RootCAs,
		Proxy:         g.cfg.Proxy,
		ServerKey:     acct.ServerKey,
		DeviceKey:     key,
		Handler:       handler{g},
		ClientVersion: "bizapi/1",
		Logger:        g.log,
		OnStatus:      g.onStatus,
	}
	if g.cfg.Client != nil {
		g.cfg.Client(&cfg)
	}
	return cfg
}

// refreshConfig fetches the server's config over HTTPS, caches it with the account and sets or
// clears the config error shown in health (N7): a failed fetch, or keys that differ from the ones
// pinned at registration (the server static key, the operator key). It never changes a pinned key;
// it pins the operator key only where none is pinned (checkOperatorKey).
func (g *Gateway) refreshConfig(ctx context.Context, acct store.Account) (regtypes.ClientConfig, error) {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cc, err := g.reg.Config(cctx)
	if err != nil {
		g.setConfigError(fmt.Sprintf("fetching %s/v1/config failed (%v); using the config cached at %s",
			g.cfg.ServerURL, err, acct.ConfigAt.Format(time.RFC3339)))
		return cc, err
	}
	// A registration may have started or ended during the fetch: the config, the keys and the cache
	// write below belong to acct's registration only, and the account is re-read so that no stale
	// copy of it is written back over a newer one.
	g.acctMu.Lock()
	defer g.acctMu.Unlock()
	cur, err := g.cfg.Store.Account(ctx)
	if err != nil || !cur.Registered || cur.DevicePriv != acct.DevicePriv {
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			g.log.Warn("gateway: reading the account to cache the server config", "err", err)
		}
		return cc, nil // the new registration's own connection fetches and checks its config
	}
	acct = cur
	var problems []string
	key, kerr := pki.ParseStaticPublic(cc.ServerStaticKey)
	if kerr == nil && key != acct.ServerKey {
		// Never follow a new key: the pinned one decides, and a server that cannot prove it fails
		// the handshake with a clear error. Say so where an admin looks.
		problems = append(problems, "the server publishes a different static key than the one pinned at registration; "+
			"the pinned key is used (re-register if the server's key really changed)")
		g.log.Error("gateway: the server publishes a different static key than the pinned one; keeping the pinned key")
	}
	// The same for the operator key, which verifies the IP address list; an account without one
	// pins it here on first use, from a config of the server it trusts (operatorkey.go).
	if p := g.checkOperatorKey(ctx, cc, kerr == nil && key == acct.ServerKey); p != "" {
		problems = append(problems, p)
	}
	g.setConfigError(strings.Join(problems, "; "))
	if doc, merr := json.Marshal(cc); merr == nil {
		acct.Config, acct.ConfigAt = doc, g.cfg.Now()
		if perr := g.cfg.Store.PutAccount(ctx, acct); perr != nil {
			g.log.Warn("gateway: caching the server config", "err", perr)
		}
	}
	return cc, nil
}

// retryConfig fetches the config again every minute until it succeeds or ctx ends, so that health
// stops reporting a config error once HTTPS is back.
func (g *Gateway) retryConfig(ctx context.Context, acct store.Account) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := g.refreshConfig(ctx, acct); err == nil {
				return
			}
		}
	}
}

// fallbackEndpoints derives chat endpoints from the HTTPS URL when no config is known: the host on
// 5222 (raw chatd), and TLS and WebSocket on the HTTPS URL's port (443 by default).
func fallbackEndpoints(serverURL string) []transport.Endpoint {
	host, port := serverURL, 443
	if u, err := url.Parse(serverURL); err == nil && u.Hostname() != "" {
		host = u.Hostname()
		if p, err := strconv.Atoi(u.Port()); err == nil && p > 0 {
			port = p
		}
	}
	return []transport.Endpoint{
		{Host: host, Port: regclient.DefaultChatPort, Transport: transport.TransportTCP},
		{Host: host, Port: port, Transport: transport.TransportTLS},
		{Host: host, Port: port, Transport: transport.TransportWS},
	}
}

// preferred returns the endpoint of the last login saved in the store (the zero Endpoint when none),
// for client.Config.Preferred: the path that worked last is tried first after a restart.
func (g *Gateway) preferred(ctx context.Context) transport.Endpoint {
	s, err := g.cfg.Store.LastEndpoint(ctx)
	if err != nil {
		g.log.Warn("gateway: reading the last good endpoint; dialling in the default order", "err", err)
		return transport.Endpoint{}
	}
	var ep transport.Endpoint
	if s != "" {
		if ep, err = transport.ParseEndpoint(s); err != nil {
			g.log.Warn("gateway: the saved last good endpoint is invalid; dialling in the default order", "err", err)
			s = ""
		}
	}
	g.mu.Lock()
	g.savedEP = s
	g.mu.Unlock()
	return ep
}

// saveEndpoint keeps the endpoint of the last login in the store, so that the next start tries it
// first. It writes only when the endpoint changed, and looks once more when ctx ends, so that a
// change just before a stop is kept.
func (g *Gateway) saveEndpoint(ctx context.Context) {
	for {
		stopping := false
		select {
		case <-ctx.Done():
			stopping = true
		case <-g.endpointWake:
		}
		g.mu.Lock()
		ep, saved := g.endpoint, g.savedEP
		g.mu.Unlock()
		if ep != "" && ep != saved {
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			err := g.cfg.Store.SaveLastEndpoint(wctx, ep)
			cancel()
			if err != nil {
				g.log.Warn("gateway: saving the last good endpoint", "endpoint", ep, "err", err)
			} else {
				g.mu.Lock()
				g.savedEP = ep
				g.mu.Unlock()
			}
		}
		if stopping {
			return
		}
	}
}

// onStatus follows the chat client's status: on a login it wakes the senders and has a new
// endpoint saved; when a logged-in connection ends it counts the close reason.
func (g *Gateway) onStatus(s client.Status) {
	up := s.State == client.Connected
	g.mu.Lock()
	login := up && !g.connected
	if !up && g.connected {
		reason := s.LastClose
		if reason == "" {
			reason = "unknown"
		}
		g.closes[reason]++
	}
	g.connected = up
	newEndpoint := false
	if login {
		g.endpoint = s.Endpoint.String()
		newEndpoint = g.endpoint != g.savedEP
	}
	g.mu.Unlock()
	if login {
		// Whatever waited for a connection goes now.
		g.WakeOutbox()
		g.WakeReads()
		if newEndpoint {
			poke(g.endpointWake)
		}
	}
}

func (g *Gateway) setStatus(st, lastErr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.status != st {
		g.since = g.cfg.Now()
	}
	g.status, g.lastErr = st, lastErr
}

func (g *Gateway) setConfigError(s string) {
	g.mu.Lock()
	g.configError = s
	g.mu.Unlock()
}

// Health returns the gateway's state.
func (g *Gateway) Health() Health {
	g.mu.Lock()
	cli := g.cli
	h := Health{GatewayStatus: g.status, Since: g.since, Phone: g.phone, ConfigError: g.configError, LastError: g.lastErr,
		Closes: maps.Clone(g.closes)}
	g.mu.Unlock()
	if cli == nil {
		return h
	}
	s := cli.Status()
	switch s.State {
	case client.Connected:
		h.GatewayStatus = StatusConnected
	default:
		h.GatewayStatus = StatusConnecting
	}
	h.Since, h.RTT, h.Reconnects = s.Since, s.RTT, s.Reconnects
	h.LastClose, h.LastError = s.LastClose, s.LastError
	h.Addr, h.Port, h.Transport, h.Proxy, h.DialTime = s.Addr, s.Port, s.Transport, s.Proxy, s.DialTime
	h.NetworkProblem = s.NetworkProblem
	if s.Phone != "" {
		h.Phone = s.Phone
	}
	return h
}

// current returns the running chat client or ErrNotConnected/ErrNotRegistered.
func (g *Gateway) current() (*client.Client, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cli == nil {
		if g.status == StatusUnregistered {
			return nil, ErrNotRegistered
		}
		return nil, ErrNotConnected
	}
	return g.cli, nil
}

// Lookup asks chatd which of phones are registered.
func (g *Gateway) Lookup(ctx context.Context, phones []string) ([]LookupResult, error) {
	cli, err := g.current()
	if err != nil {
		return nil, err
	}
	if cli.Status().State != client.Connected {
		return nil, ErrNotConnected
	}
	out := make([]LookupResult, 0, len(phones))
	for len(phones) > 0 {
		n := min(len(phones), 256)
		res, err := cli.Lookup(ctx, phones[:n]...)
		if err != nil {
			return nil, err
		}
		for _, c := range res {
			r := LookupResult{Input: c.GetInput(), Status: "invalid"}
			if c.GetRegistered() {
				r.Status, r.WaID = "valid", c.GetPhone()
			}
			out = append(out, r)
		}
		phones = phones[n:]
	}
	return out, nil
}

// sendOutbox sends every accepted message, in order, keeping up to MaxInFlight waiting for acks. The
// client library resends unacknowledged sends after a reconnect, and the server deduplicates by the
// message id, so a message is sent until it is acknowledged — also across restarts, since an
// acknowledged one leaves the accepted state in the store.
func (g *Gateway) sendOutbox(ctx context.Context, cli *client.Client) {
	sem := make(chan struct{}, g.cfg.MaxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	var lastSeq int64
	for {
		msgs, err := g.cfg.Store.Unsent(ctx, lastSeq, 256)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			g.log.Error("gateway: reading the outbox", "err", err)
		}
		for _, m := range msgs {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			lastSeq = m.Seq
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				g.sendOne(ctx, cli, m)
			}()
		}
		if len(msgs) == 256 {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-g.outboxWake:
		}
	}
}

func (g *Gateway) sendOne(ctx context.Context, cli *client.Client, m store.Message) {
	res, err := cli.Send(ctx, m.To, m.ID, content.Text(m.Body))
	now := g.cfg.Now()
	switch {
	case err == nil:
		// Recorded without waiting for the commit (this goroutine has nothing left to do); a
		// message whose ack was not recorded is still accepted and is sent again (chatd
		// deduplicates it) on the next connection.
		cb := g.callback(store.StatusSent, webhook.ForStatus(m.ID, m.To, store.StatusSent, res.Timestamp.Unix(), nil))
		err := g.cfg.Store.MarkSentAsync(ctx, m.ID, res.ServerID, res.Timestamp, cb.stored, func(changed bool, err error) {
			if err != nil {
				g.log.Error("gateway: recording a sent message", "id", m.ID, "err", err)
				return
			}
			if changed {
				cb.done(context.Background(), g)
			}
		})
		if err != nil {
			g.log.Error("gateway: recording a sent message", "id", m.ID, "err", err)
		}
	case ctx.Err() != nil:
		// Shutting down or reconnecting for a new account: it stays accepted and goes out later.
	default:
		e := store.ErrorInfo{Code: 1014, Title: "Internal error", Details: err.Error()}
		if errors.Is(err, client.ErrUnknownRecipient) {
			e = store.ErrorInfo{Code: 1013, Title: "User is not valid", Details: "+" + m.To + " is not registered with the chat server"}
		} else if errors.Is(err, client.ErrRejected) {
			e = store.ErrorInfo{Code: 1009, Title: "Parameter value is not valid", Details: err.Error()}
		}
		cb := g.callback(store.StatusFailed, webhook.ForStatus(m.ID, m.To, store.StatusFailed, now.Unix(), &e))
		if err := g.cfg.Store.MarkFailed(ctx, m.ID, e, now, cb.stored); err != nil {
			g.log.Error("gateway: recording a failed message", "id", m.ID, "err", err)
			return
		}
		cb.done(ctx, g)
	}
}

// sendReads sends the read receipts that PUT /v1/messages/{id} requested, in batches, until the
// server acknowledged them; requests survive restarts in the store.
func (g *Gateway) sendReads(ctx context.Context, cli *client.Client) {
	for {
		pending, err := g.cfg.Store.ReadPending(ctx, 1000)
		if err != nil && ctx.Err() == nil {
			g.log.Error("gateway: reading pending read receipts", "err", err)
		}
		if len(pending) > 0 {
			ids := make([]uint64, len(pending))
			names := make([]string, len(pending))
			for i, m := range pending {
				ids[i], names[i] = m.ServerID, m.ID
			}
			err := cli.MarkRead(ctx, ids...)
			if err == nil {
				if err := g.cfg.Store.ReadSent(ctx, names); err != nil {
					g.log.Error("gateway: recording sent read receipts", "err", err)
				}
				continue
			}
			if ctx.Err() != nil {
				return
			}
			g.log.Error("gateway: read receipts refused; retrying in 30 s", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(30 * time.Second):
			case <-g.readsWake:
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-g.readsWake:
		}
	}
}

// pendingCallback is a callback for a status change: stored with it (persist) or handed to the memory
// queue after it (no persist), or nothing when the status is not wanted.
type pendingCallback struct {
	stored *store.Callback
	memory *store.Callback
}

func (g *Gateway) callback(status string, payload json.RawMessage) pendingCallback {
	if status != store.StatusFailed && !g.cfg.WantStatus(status) {
		return pendingCallback{}
	}
	return g.inboundCallback(payload)
}

// inboundCallback is the callback of a received message: always sent.
func (g *Gateway) inboundCallback(payload json.RawMessage) pendingCallback {
	cb := &store.Callback{Payload: payload, CreatedAt: g.cfg.Now()}
	if g.cfg.PersistCallbacks() || g.cfg.Memory == nil {
		return pendingCallback{stored: cb}
	}
	return pendingCallback{memory: cb}
}

// done runs after the store change committed.
func (p pendingCallback) done(ctx context.Context, g *Gateway) {
	switch {
	case p.memory != nil:
		if err := g.cfg.Memory.EnqueueCallback(ctx, *p.memory); err != nil {
			g.log.Warn("gateway: in-memory callback queue refused a callback", "err", err)
			return
		}
	case p.stored == nil:
		return
	}
	g.cfg.WakeCallbacks()
}

// handler receives deliveries from the chat client.
type handler struct{ g *Gateway }

// HandleMessage and HandleReceipt complete the client.Handler interface; the library uses the
// asynchronous versions below, which these wait for.
func (h handler) HandleMessage(ctx context.Context, m *chatdpb.Message) error {
	errc := make(chan error, 1)
	h.HandleMessageAsync(ctx, m, func(err error) { errc <- err })
	return <-errc
}

func (h handler) HandleReceipt(ctx context.Context, r *chatdpb.Receipt) error {
	errc := make(chan error, 1)
	h.HandleReceiptAsync(ctx, r, func(err error) { errc <- err })
	return <-errc
}

// inboundOf is the stored form of a received message.
func inboundOf(g *Gateway, m *chatdpb.Message) store.Inbound {
	in := store.Inbound{
		ID:         InboundID(m.GetServerId()),
		ServerID:   m.GetServerId(),
		From:       m.GetFrom(),
		Content:    m.GetContent().GetBody(),
		Timestamp:  time.UnixMilli(m.GetTimestampMs()),
		ReceivedAt: g.cfg.Now(),
		Type:       "unknown",
	}
	if b, err := content.Parse(m.GetContent()); err == nil {
		in.Type = b.Type
		in.Body = b.Text
	}
	return in
}

// HandleMessageAsync stores an inbound message (and its callback) without making the chat
// connection's reader wait for the commit; the library acknowledges it to chatd in done.
func (h handler) HandleMessageAsync(ctx context.Context, m *chatdpb.Message, done func(error)) {
	g := h.g
	in := inboundOf(g, m)
	cb := g.inboundCallback(webhook.ForInbound(in))
	err := g.cfg.Store.SaveInboundAsync(ctx, in, cb.stored, func(dup bool, err error) {
		if err == nil && !dup {
			cb.done(context.Background(), g)
		}
		done(err)
	})
	if err != nil {
		done(err)
	}
}

// HandleReceiptAsync records a receipt (sent first if the receipt overtook the ack, then delivered or
// read) in one transaction, without making the reader wait for the commit.
func (h handler) HandleReceiptAsync(ctx context.Context, r *chatdpb.Receipt, done func(error)) {
	g := h.g
	status := store.StatusDelivered
	if r.GetType() == chatdpb.Receipt_READ {
		status = store.StatusRead
	}
	at := time.UnixMilli(r.GetTimestampMs())
	sent := g.callback(store.StatusSent, webhook.ForStatus(r.GetClientId(), r.GetBy(), store.StatusSent, at.Unix(), nil))
	cb := g.callback(status, webhook.ForStatus(r.GetClientId(), r.GetBy(), status, at.Unix(), nil))
	err := g.cfg.Store.MarkReceiptAsync(ctx, r.GetClientId(), r.GetServerId(), status, at, sent.stored, cb.stored,
		func(sentChanged, changed bool, err error) {
			if errors.Is(err, store.ErrNotFound) {
				g.log.Debug("gateway: receipt for an unknown message", "client_id", r.GetClientId())
				err = nil
			}
			if err == nil {
				if sentChanged {
					sent.done(context.Background(), g)
				}
				if changed {
					cb.done(context.Background(), g)
				}
			}
			done(err)
		})
	if err != nil {
		done(err)
	}
}

// InboundID is the opaque id of a received message in webhooks and PUT /v1/messages/{id}:
// "ABGG" and the chatd server id in base64url, so it is stable across redeliveries.
func InboundID(serverID uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], serverID)
	return "ABGG" + base64.RawURLEncoding.EncodeToString(b[:])
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// normalize joins cc and number into E.164 digits.
func normalize(cc, number string) (string, error) {
	if cc == "" {
		return phone.Normalize(number)
	}
	return phone.Join(cc, number)
}
