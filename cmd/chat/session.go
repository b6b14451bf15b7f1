package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/client/regclient"
	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/transport"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// session is a running client.Client for a profile.
type session struct {
	c      *client.Client
	prof   *Profile
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	runErr error         // Run's result; read after done
	dials  *dialLog
	status chan client.Status
}

type connectOpts struct {
	// failFast ends the session with an error when the first connection attempt fails (one-shot
	// commands); otherwise the client retries with backoff and onStatus reports each failure.
	failFast bool
	// wait makes connect return only once logged in (or failed).
	wait bool
	// printStatus reports connection changes on stderr (connected, lost, failed attempts).
	printStatus bool
	verbose     bool
}

// connect starts a client for prof with handler h.
func (a *app) connect(ctx context.Context, prof *Profile, h client.Handler, opts connectOpts) (*session, error) {
	serverKey, deviceKey, err := prof.Keys()
	if err != nil {
		return nil, err
	}
	roots, err := loadCA(prof.CAFile)
	if err != nil {
		return nil, fmt.Errorf("profile ca_file: %w", err)
	}
	s := &session{prof: prof, done: make(chan struct{}), dials: &dialLog{}, status: make(chan client.Status, 256)}
	logger := slog.New(slog.DiscardHandler)
	if opts.verbose {
		logger = slog.New(slog.NewTextHandler(a.con.err, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := client.New(client.Config{
		Addrs:         prof.ChatEndpoints, // host:port/transport; plain host:port (older profiles) is tcp
		Only443:       a.only443,
		RootCAs:       roots,
		Proxy:         a.proxyFunc(),
		ServerKey:     serverKey,
		DeviceKey:     deviceKey,
		Handler:       h,
		ClientVersion: "chat/" + version,
		Dial:          s.dials.dial,
		Logger:        logger,
		OnStatus: func(st client.Status) {
			select {
			case s.status <- st:
			default: // a reader that fell behind misses a change, never blocks the connection
			}
		},
	})
	if err != nil {
		return nil, err
	}
	s.c = c
	var onStatus func(client.Status)
	if opts.printStatus {
		onStatus = s.statusPrinter(a.con)
	}
	rctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	go func() {
		defer close(s.done)
		s.runErr = c.Run(rctx)
	}()
	if !opts.wait {
		go s.forwardStatus(onStatus)
		return s, nil
	}
	connected := make(chan struct{})
	go func() {
		if c.WaitConnected(rctx) == nil {
			close(connected)
		}
	}()
	for {
		select {
		case <-connected:
			go s.forwardStatus(onStatus)
			return s, nil
		case <-s.done:
			if s.runErr != nil {
				return nil, s.explain(s.runErr)
			}
			return nil, ctx.Err()
		case st := <-s.status:
			if st.State == client.Connected {
				if onStatus != nil {
					onStatus(st)
				}
				go s.forwardStatus(onStatus)
				return s, nil
			}
			if st.State != client.Disconnected || st.LastError == "" {
				continue
			}
			if opts.failFast {
				s.close()
				if s.runErr != nil {
					return nil, s.explain(s.runErr)
				}
				return nil, s.connectError(st.LastError)
			}
			if onStatus != nil {
				onStatus(st)
			}
		case <-ctx.Done():
			s.close()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("timed out connecting to %s", strings.Join(prof.ChatEndpoints, " or "))
			}
			return nil, ctx.Err()
		}
	}
}

func (s *session) forwardStatus(f func(client.Status)) {
	for {
		select {
		case st := <-s.status:
			if f != nil {
				f(st)
			}
		case <-s.done:
			return
		}
	}
}

// close says goodbye to the server and waits for the client to stop.
func (s *session) close() {
	s.cancel()
	<-s.done
}

// err returns why the client stopped on its own (a permanent error), nil while it runs.
func (s *session) err() error {
	select {
	case <-s.done:
		if s.runErr != nil {
			return s.explain(s.runErr)
		}
	default:
	}
	return nil
}

// explain turns the client's permanent errors into what the user should do.
func (s *session) explain(err error) error {
	var km *noisesock.KeyMismatchError
	switch {
	case errors.As(err, &km):
		return fmt.Errorf("the server at %s proved the key %s, but this profile pins %s (registered with %s): "+
			"a man in the middle, or the server was reinstalled; if its operator confirms the new key, register again",
			s.dials.lastOK(), pki.FormatPublic(km.Got), pki.FormatPublic(km.Want), s.prof.Server)
	case errors.Is(err, client.ErrUnknownDevice):
		return fmt.Errorf("the server does not know this device: %s was registered again from another device, or the server's data was reset; "+
			"register again: chat register --server %s --phone %s", plus(s.prof.Phone), s.prof.Server, plus(s.prof.Phone))
	case errors.Is(err, client.ErrUnsupportedVersion):
		return fmt.Errorf("the server does not speak this chat's protocol version; update chat (%s)", version)
	}
	return err
}

// connectError says what a failed connection attempt tried: the dial errors, or the failure after
// a successful dial.
func (s *session) connectError(lastError string) error {
	var failed []string
	for _, at := range s.dials.take() {
		if at.err == nil {
			return fmt.Errorf("connected to %s, but the chat login failed: %s", at.addr, oneLine(lastError))
		}
		failed = append(failed, at.addr+": "+netReason(at.err))
	}
	if len(failed) == 0 {
		return fmt.Errorf("cannot connect: %s", oneLine(lastError))
	}
	return fmt.Errorf("cannot connect to %s", strings.Join(failed, "; nor to "))
}

// netReason is the short cause of a dial error: "connection refused", "no such host", "timed out".
func netReason(err error) string {
	var dnsErr *net.DNSError
	var sysErr *os.SyscallError
	switch {
	case errors.As(err, &dnsErr):
		return "cannot resolve " + dnsErr.Name + ": " + dnsErr.Err
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "timed out (no answer: a firewall may drop the packets)"
	case errors.As(err, &sysErr):
		return sysErr.Err.Error()
	}
	return err.Error()
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// dialLog dials like the client library's default and records the attempts, so that errors can say
// what was tried.
type dialLog struct {
	mu       sync.Mutex
	attempts []dialAttempt // since the last take
	ok       string        // the last address dialled successfully
}

type dialAttempt struct {
	addr string
	err  error
}

func (d *dialLog) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := net.Dialer{KeepAlive: 15 * time.Second}
	c, err := nd.DialContext(ctx, network, addr)
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.attempts) < 64 {
		d.attempts = append(d.attempts, dialAttempt{addr, err})
	}
	if err == nil {
		d.ok = addr
	}
	return c, err
}

// take returns the attempts since the previous take.
func (d *dialLog) take() []dialAttempt {
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.attempts
	d.attempts = nil
	return a
}

func (d *dialLog) lastOK() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ok == "" {
		return "?"
	}
	return d.ok
}

// handler stores every delivery in the inbox before the library acknowledges it, and shows it.
type handler struct {
	inbox *Inbox
	con   *console
	// live prints messages and receipts on stdout as they come (listen, interactive); otherwise a
	// message is announced on stderr (it is in the inbox) and receipts are only stored.
	live bool
	// onMessage, if set, is called with each new message after it is stored; it must not block and
	// must not call the client (the connection's reader is waiting).
	onMessage func(Entry)
	receipts  *receiptBoard
}

func newHandler(in *Inbox, con *console, live bool) *handler {
	return &handler{inbox: in, con: con, live: live, receipts: newReceiptBoard()}
}

func (h *handler) HandleMessage(_ context.Context, m *chatdpb.Message) error {
	e, dup, err := h.inbox.AddMessage(m)
	if err != nil {
		h.con.Noticef("chat: cannot store message %d (the server will send it again): %v", m.GetServerId(), err)
		return err
	}
	if dup {
		return nil
	}
	if h.live {
		h.con.Printf("%s", formatMessage(e, time.Now()))
	} else {
		h.con.Noticef("new message from %s (id %d) is in the inbox: chat inbox shows it", plus(e.From), e.ServerID)
	}
	if h.onMessage != nil {
		h.onMessage(e)
	}
	return nil
}

func (h *handler) HandleReceipt(_ context.Context, r *chatdpb.Receipt) error {
	e, err := h.inbox.AddReceipt(r)
	if err != nil {
		h.con.Noticef("chat: cannot store a receipt (the server will send it again): %v", err)
		return err
	}
	h.receipts.add(e)
	if h.live {
		h.con.Printf("%s", formatReceipt(e, time.Now()))
	}
	return nil
}

// receiptBoard remembers the receipts that arrived, for commands waiting for one.
type receiptBoard struct {
	mu      sync.Mutex
	got     map[uint64]Entry // the furthest receipt (read beats delivered) by server id
	changed chan struct{}    // closed and replaced on every add
}

func newReceiptBoard() *receiptBoard {
	return &receiptBoard{got: map[uint64]Entry{}, changed: make(chan struct{})}
}

func (b *receiptBoard) add(e Entry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if prev, ok := b.got[e.ServerID]; !ok || prev.Receipt != receiptRead {
		b.got[e.ServerID] = e
	}
	close(b.changed)
	b.changed = make(chan struct{})
}

// wait returns the first receipt for id that is at least want (a read receipt satisfies
// "delivered").
func (b *receiptBoard) wait(ctx context.Context, id uint64, want string) (Entry, error) {
	for {
		b.mu.Lock()
		e, ok := b.got[id]
		ch := b.changed
		b.mu.Unlock()
		if ok && (want == receiptDelivered || e.Receipt == receiptRead) {
			return e, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Entry{}, ctx.Err()
		}
	}
}

// refreshConfig fetches /v1/config and updates the profile's endpoints (N7): the server key must be
// the pinned one. When HTTPS is unreachable the cached configuration stays and the error is returned
// for the caller to report.
func (a *app) refreshConfig(ctx context.Context, dir string, prof *Profile) (changed bool, err error) {
	rc, err := a.newRegClient(prof.Server, prof.CAFile)
	if err != nil {
		return false, err
	}
	defer rc.HTTPClient.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cc, err := rc.Config(ctx)
	if err != nil {
		return false, err
	}
	key, eps, err := regclient.ParseConfig(cc)
	if err != nil {
		return false, err
	}
	addrs := transport.EndpointStrings(eps)
	if pki.FormatPublic(key) != prof.ServerKey {
		return false, &keyChangedError{server: prof.Server, got: pki.FormatPublic(key), pinned: prof.ServerKey}
	}
	changed = strings.Join(addrs, " ") != strings.Join(prof.ChatEndpoints, " ")
	prof.ChatEndpoints = addrs
	prof.ConfigFetchedAt = time.Now().UTC()
	return changed, prof.save(dir)
}

// keyChangedError is returned by refreshConfig when the server publishes another key than the pinned
// one.
type keyChangedError struct{ server, got, pinned string }

func (e *keyChangedError) Error() string {
	return fmt.Sprintf("the server %s now publishes the key %s, but this profile pins %s: "+
		"if its operator confirms the new key, register again", e.server, e.got, e.pinned)
}

// newRegClient returns the HTTPS client of server, through the proxy of --proxy (by default the
// environment's, HTTPS_PROXY), the same one the chat connection uses.
func (a *app) newRegClient(server, caFile string) (*regclient.Client, error) {
	pool, err := loadCA(caFile)
	if err != nil {
		return nil, err
	}
	return regclient.NewWithProxy(server, pool, a.proxyFunc()), nil
}

// loadCA reads the profile's CA file; "" means the system roots (nil).
func loadCA(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, nil
	}
	return regclient.LoadCAFile(caFile)
}

// statusPrinter returns an onStatus that reports the connection's changes on stderr, for the
// long-running commands.
func (s *session) statusPrinter(con *console) func(client.Status) {
	var (
		last        client.State = -1
		lastFail    string       // the last failed attempt's error, not repeated while it stays the same
		lastProblem string       // the network problem last reported
	)
	return func(st client.Status) {
		if st.NetworkProblem != lastProblem {
			if st.NetworkProblem != "" {
				con.Noticef("network unsupported: %s", oneLine(st.NetworkProblem))
			} else {
				con.Noticef("network problem resolved: the 443 path opens again")
			}
			lastProblem = st.NetworkProblem
		}
		switch st.State {
		case client.Connected:
			if last == client.Connected {
				break // only the network problem changed
			}
			s.dials.take()
			lastFail = ""
			via := ""
			if st.Proxy != "" {
				via = " through proxy " + st.Proxy
			}
			con.Noticef("connected to %s (%s)%s as %s", st.Addr, st.Transport, via, plus(st.Phone))
		case client.Disconnected:
			switch {
			case st.LastClose == "client_closed" || st.LastError == "":
			case last == client.Connected:
				s.dials.take()
				con.Noticef("connection lost (%s): %s; reconnecting", st.LastClose, oneLine(st.LastError))
			default:
				if msg := s.connectError(st.LastError).Error(); msg != lastFail {
					lastFail = msg
					con.Noticef("%s; retrying (until it works or Ctrl-C)", msg)
				}
			}
		}
		last = st.State
	}
}
