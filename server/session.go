package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/chatd-dev/chatd/internal/groupcommit"
	"github.com/chatd-dev/chatd/internal/keyedlimit"
	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/phone"
	"github.com/chatd-dev/chatd/server/store"
	"github.com/chatd-dev/chatd/transport"
	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// session is one chat connection. The handler goroutine runs the handshake and then the read loop;
// after login every write to the connection is made by the session's writer, which runs only while
// there is something to write (see Writer below): an idle session has one goroutine, the reader.
//
// # Pipelining
//
// The reader does not wait for the store. It hands each Send, DeliverAck and MarkRead to the store
// as an asynchronous write on the session's store.Pipeline, in arrival order, and reads the next
// frame. The store's group-commit writer commits whatever many sessions queued meanwhile in one
// transaction and then, on its own goroutine and in pipeline order, calls each write's completion
// callback (finishOp and the closures around it), which:
//
//   - appends the reply (SendAck, MarkReadAck) to s.replies and makes sure a writer runs; the
//     writer takes the replies, in order, and writes them. So a SendAck is sent only after the
//     commit that made its message durable, and SendAcks leave in the order of the Sends. A reply
//     that needs no write (an INVALID or UNKNOWN_RECIPIENT SendAck) keeps its place too: it goes
//     straight to s.replies only when no write of the session is pending, and otherwise through a
//     pipeline barrier behind them (replyInOrder).
//   - hands the items the write queued (the stored message, the receipts) to the sessions of their
//     recipients, after the commit (Server.handOver). A session that has read its queue to the end
//     delivers them as they come, without reading them back from the store; one that has not yet
//     (after login, after falling behind its window) is woken and reads the queue (appendPending).
//   - on a store failure, closes the session with INTERNAL_ERROR and sends no reply. The pipeline
//     makes its writes take effect as a prefix: every later write of the session fails without
//     running, so messages are stored in the order of the Sends even when the client resends after
//     reconnecting.
//
// Messages keep their Send order because the pipeline applies writes in submission order; a client
// id sent twice is deduplicated by the store even when both saves are in one transaction.
//
// Back-pressure: each request holds one of cfg.MaxPipelined slots from the moment the reader
// accepts it until its reply has been taken by the writer (or, for a DeliverAck, which has no reply,
// until its write finished). With every slot taken the reader stops reading, so TCP pushes back on the
// client, and a session's memory for pipelined requests stays bounded.
//
// Close: writes already queued in the store run to the end (their callbacks see the session closed
// and only release what they hold); the handler waits for all of them (s.ops) before it returns, so a
// finished session has nothing left in the store's queue. A write acknowledged to the client was
// committed first; one not acknowledged may have been committed, and the client's resend after
// reconnecting is answered DUPLICATE.
//
// The callbacks run on the store's writer goroutine, which waits for them, so they never block: s.mu
// and the server's mu are held only briefly and never across a store call, starting a writer is a go
// statement, and freeing a slot never waits.
//
// # Writer
//
// Output is queued under s.mu: s.outq (the login result, then replies that wait for no store write:
// Pong, ContactResult, Error; at most outqCap, the reader waits for room beyond), s.replies (the
// ordered replies, above) and s.fetch (the account's delivery queue may have grown, or the in-flight
// window opened). Whoever queues output when no writer runs (s.wstate == writerIdle) sets
// writerRunning under s.mu and starts one (claimWriterLocked); so at most one writer runs, and it
// owns the connection's writes and the send cipher. The writer drains what is queued, fetches
// pending deliveries if asked, writes the batch in one Write (with the write deadline), and goes
// round again; when a round finds nothing queued it sets writerIdle in the same critical section in
// which it saw the queues empty, and exits (gather), so output queued later finds no writer and
// starts one: nothing is ever left queued without a writer. Its buffers come from a pool and go back
// when it exits.
//
// The writer is a goroutine (writeLoop) when a store callback or another session queues output: they
// must not block. The reader, which may, is the writer itself for its own replies (a pong above all,
// the only traffic of an idle client): it writes one round and goes back to reading, handing over to
// a writer goroutine only if more output was queued meanwhile (writeInline). So a ping costs no
// goroutine start and no wake-up.
//
// close sets s.closed under s.mu; a running writer sees it at its next look at the queues and ends
// the session (writeClose: what is queued, the Close frame, closing the connection, writerDone); if
// none runs, close starts one for that. The handler waits for every writer (s.writers) before it
// returns.
type session struct {
	// Static after construction.
	srv       *Server
	nc        net.Conn
	port      int
	transport string
	accepted  time.Time

	// Set by the handler before login (before any writer starts); read-only afterwards.
	conn         *noisesock.Conn
	phone        string
	id           string
	pingInterval time.Duration

	closeOnce sync.Once
	reason    chatdpb.CloseReason // written once in close under mu (with closed), read after seeing closed
	detail    string
	retry     time.Duration

	writers sync.WaitGroup // writer goroutines started (Add under mu, with writerRunning) and not exited

	// A held probe (docs/protocol.md §4.3) has no writer: the handler reads, and whoever closes the
	// session writes its last frames (see close, writerHeld). hold is set by the handler before
	// writerHeld is; it is also the sign that a held-probe slot must be released.
	hold *heldProbe

	// Pipelining (see above). pipe and slots are set by the reader at its first request (an idle
	// session has neither), before anything that makes the writer or a store callback use slots
	// (taking a reply, a callback).
	pipe  *store.Pipeline // the session's ordered store writes; submitted to by the reader only
	slots chan struct{}   // capacity cfg.MaxPipelined: one element per request accepted and not finished
	ops   sync.WaitGroup  // store writes submitted and not yet called back (Add: reader; Done: callbacks)

	lastSeq int64 // the last delivery sent on this connection; owned by the running writer

	// Deliveries handed over by the store's writer (see handOver): while handoff is not handoffOff,
	// the items queued for this account are appended to ready as they are committed, in seq order.
	// Guarded by mu.
	ready []store.Item

	// The fields are ordered to pack: an idle session's struct is one of its larger allocations.
	mu       sync.Mutex
	storeOps int32                     // store writes submitted and not yet called back; guarded by mu
	business bool                      // the account is a business (set at login; read-only afterwards)
	handoff  handoffState              // guarded by mu
	closed   bool                      // close was called; guarded by mu
	fetch    bool                      // the writer is to fetch pending deliveries; guarded by mu
	wstate   writerState               // guarded by mu
	idleNext bool                      // the client is idle: the writer lets go of the send cipher when it next exits (idleLocked); guarded by mu
	done     chan struct{}             // made when first waited on (doneLocked), closed by close; guarded by mu
	outq     []*chatdpb.Envelope       // unordered output for the writer, at most outqCap; guarded by mu
	outRoom  chan struct{}             // made by the reader waiting for room in outq, closed by the writer; guarded by mu
	inflight map[uint64]store.ItemKind // deliveries sent and not acked, by seq (nil until the first); guarded by mu
	replies  []*chatdpb.Envelope       // ordered replies waiting for the writer; guarded by mu
}

// heldProbe is what a held probe's session needs besides a session's fields.
type heldProbe struct {
	d    time.Duration // the hold granted (capped), plus the grace
	addr string        // the client address (keyedlimit.ClientKey) whose slot the probe holds
}

// writerState is where a session's writer is (session.wstate).
type writerState uint8

const (
	writerNone      writerState = iota // not logged in: the handler writes (writeDirect), close closes nc
	writerAnswering                    // the handler writes a probe's PROBE_OK: close leaves nc to it
	writerHeld                         // a held probe: close writes the Close frame itself (endProbe)
	writerIdle                         // logged in, no writer: nothing is queued
	writerRunning                      // a writer runs (a goroutine, or the reader in writeInline) and owns the writes
	writerDone                         // the last writer ended the session and closed nc
)

// handoffState says whether a session takes the deliveries the store's writer hands over (handOver)
// instead of reading them back with Pending.
type handoffState uint8

const (
	handoffOff   handoffState = iota // handed-over items only wake the writer, which reads the queue
	handoffQuery                     // the writer is reading the queue; items committed meanwhile are kept in ready
	handoffLive                      // the writer has read everything: ready holds every item queued since
)

// readyCap bounds s.ready. Items that would not fit are dropped with everything in ready, and the
// session drops back to reading the queue (handoffOff): a recipient whose queue grows faster than its
// window lets it deliver, or a read that took long.
const readyCap = 256

// readyKeep is the capacity of s.ready an idle writer keeps (items are a few hundred bytes each).
const readyKeep = 4

// outqCap bounds s.outq: a reader with that many unordered replies not yet taken by the writer waits,
// so a client that sends pings and never reads stops being read.
const outqCap = 64

// idleKeep is the capacity of a reply buffer a writer keeps for the session when it exits; larger
// buffers (a burst's) are dropped, so an idle session holds next to nothing for its output.
const idleKeep = 16

func newSession(srv *Server, nc net.Conn) *session {
	port, tr := transport.Label(nc)
	srv.metrics.accepted.WithLabelValues(portLabel(port), tr).Inc()
	accepted := srv.now()
	if tc, ok := nc.(*transport.Conn); ok && !tc.Accepted.IsZero() {
		accepted = tc.Accepted // the 443 multiplexer's sniffing and TLS count against the deadline
	}
	return &session{
		srv:       srv,
		nc:        nc,
		port:      port,
		transport: tr,
		accepted:  accepted,
	}
}

// doneLocked returns a channel closed when the session is closed, made on first use: only a reader
// that has to wait (for a pipelining slot, for room in s.outq) needs one. Called with s.mu held.
func (s *session) doneLocked() <-chan struct{} {
	if s.done == nil {
		s.done = make(chan struct{})
		if s.closed {
			close(s.done)
		}
	}
	return s.done
}

// logger is the session's logger: the server's, with the connection's attributes and, once logged
// in, the account's. It is made per use, not kept: sessions log a few lines in their life, and a
// kept logger with preformatted attributes would cost every idle session memory.
func (s *session) logger() *slog.Logger {
	l := s.srv.log.With("remote", s.nc.RemoteAddr().String(), "port", s.port, "transport", s.transport)
	if s.id != "" {
		l = l.With("phone", s.phone, "session", s.id)
	}
	return l
}

// close ends the session with reason. The first call wins; later calls do nothing. After login the
// writer sends the Close frame (unless the connection is already lost) and closes the connection;
// close starts one if none runs. Before login, close closes the connection itself. A held probe has no
// writer: close sends its Close frame.
func (s *session) close(reason chatdpb.CloseReason, detail string, retryAfter time.Duration) {
	s.closeWith(nil, reason, detail, retryAfter)
}

// closeWith is close; a held probe's last frames are then last (if not nil) and the Close frame.
func (s *session) closeWith(last *chatdpb.Envelope, reason chatdpb.CloseReason, detail string, retryAfter time.Duration) {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.reason, s.detail, s.retry = reason, detail, retryAfter
		s.closed = true
		st := s.wstate
		start := s.claimWriterLocked() // before closed is seen: the handler, which waits for the writers, may see it first
		if s.done != nil {
			close(s.done)
		}
		s.mu.Unlock()
		switch {
		case start:
			go s.writeLoop()
		case st == writerRunning, st == writerAnswering:
			// The running writer, or the handler writing a probe's PROBE_OK, sees closed and ends
			// the session.
		case st == writerHeld:
			s.endProbe(last)
		default:
			s.nc.Close()
		}
	})
}

// endProbe ends a closed probe whose PROBE_OK is written: unless the connection is lost, it writes
// last (if not nil) and the Close frame, then closes the connection. Nothing else writes to a probe,
// and its send buffer is empty but for the LoginResult, so this write does not wait: not even
// Shutdown, which calls close for every connection in turn, is held up by it.
func (s *session) endProbe(last *chatdpb.Envelope) {
	if s.reason != chatdpb.CloseReason_CONNECTION_LOST && s.reason != chatdpb.CloseReason_WRITE_TIMEOUT {
		envs := []*chatdpb.Envelope{closeEnvelope(s.reason, s.detail, s.retry)}
		if last != nil {
			envs = append([]*chatdpb.Envelope{last}, envs...)
		}
		s.writeDirectWithin(time.Second, envs...)
	}
	s.nc.Close()
}

// claimWriterLocked makes the caller, who has just queued output (or closed the session), responsible
// for starting a writer if none runs: it reports whether the caller must run go s.writeLoop() after
// unlocking s.mu. Called with s.mu held.
func (s *session) claimWriterLocked() bool {
	if s.wstate != writerIdle {
		return false // not logged in (yet or ever), a writer runs and will see what was queued, or done
	}
	s.wstate = writerRunning
	s.writers.Add(1)
	return true
}

// wakeWriter has the writer fetch the account's pending deliveries: the queue may have grown or the
// in-flight window opened.
func (s *session) wakeWriter() {
	s.handOver(nil)
}

// handOver gives the session items just committed to its account's queue (in seq order, after every
// item handed over before) and wakes the writer to deliver them. The store's writer calls it (through
// Server.handOver), so it only appends under the lock. Items arriving while the session does not take
// them (handoffOff) are dropped: the writer finds them with Pending.
func (s *session) handOver(items []store.Item) {
	s.mu.Lock()
	if s.handoff != handoffOff && len(items) > 0 {
		if len(s.ready)+len(items) > readyCap {
			s.handoff = handoffOff
			s.dropReadyLocked()
		} else {
			s.ready = append(s.ready, items...)
		}
	}
	s.fetch = true
	start := s.claimWriterLocked()
	s.mu.Unlock()
	if start {
		go s.writeLoop()
	}
}

// run serves the connection until it closes: the handshake, then the read loop (or a probe's hold).
// Whichever goroutine ends the session calls finish.
func (s *session) run() {
	if err := s.handshake(); err != nil {
		s.finish()
		return
	}
	if s.hold != nil {
		s.holdProbe()
		s.finish()
		return
	}
	go s.readLoop() // on a fresh stack: see readLoop
}

func (s *session) finish() {
	s.ops.Wait()     // every callback has run: nothing of this session is left in the store's queue
	s.writers.Wait() // the session is closed: the last writer has closed the connection
	s.mu.Lock()
	st := s.wstate
	s.mu.Unlock()
	if st == writerNone {
		s.nc.Close()
	}
	if s.conn != nil {
		s.conn.Wipe() // nothing reads or writes any more: every writer is gone, and so is the reader
	}
	s.srv.forget(s)
	if s.hold != nil {
		s.srv.releaseHold(s.hold.addr)
	}
	if s.phone != "" {
		s.srv.metrics.connections.WithLabelValues(portLabel(s.port), s.transport).Dec()
	}
	name := wire.CloseReasonName(s.reason)
	s.srv.metrics.closes.WithLabelValues(name).Inc()
	lvl := slog.LevelInfo
	if s.phone == "" {
		lvl = slog.LevelDebug // unauthenticated noise: scanners, probes, failed handshakes
	}
	if ctx := context.Background(); s.srv.log.Enabled(ctx, lvl) {
		s.logger().Log(ctx, lvl, "connection closed", "reason", name, "detail", s.detail,
			"duration", s.srv.now().Sub(s.accepted).Round(time.Millisecond))
	}
	s.srv.wg.Done() // taken by Serve for this connection
}

// handshake reads the preamble, runs the Noise handshake and logs the device in. On failure it has
// closed the session with a reason and returns an error.
func (s *session) handshake() error {
	cfg := &s.srv.cfg
	ctx, cancel := context.WithTimeout(context.Background(), cfg.HandshakeTimeout)
	defer cancel()
	s.nc.SetDeadline(s.accepted.Add(cfg.HandshakeTimeout))

	fail := func(reason chatdpb.CloseReason, result string, err error) error {
		s.srv.metrics.handshakes.WithLabelValues(result).Inc()
		s.close(reason, err.Error(), 0)
		return err
	}
	if err := wire.ReadPreamble(s.nc); err != nil {
		switch {
		case errors.Is(err, wire.ErrBadPreamble):
			return fail(chatdpb.CloseReason_BAD_PREAMBLE, "bad_preamble", err)
		case errors.Is(err, wire.ErrUnsupportedVersion):
			return fail(chatdpb.CloseReason_UNSUPPORTED_VERSION, "failed", err)
		}
		return fail(readReason(err, chatdpb.CloseReason_HANDSHAKE_TIMEOUT), resultFor(err), err)
	}
	conn, hello, err := noisesock.Server(ctx, s.nc, noisesock.ServerConfig{StaticKey: cfg.StaticKey, Now: s.srv.now})
	if err != nil {
		reason := chatdpb.CloseReason_HANDSHAKE_FAILED
		if isTimeout(err) {
			reason = chatdpb.CloseReason_HANDSHAKE_TIMEOUT
		} else if errors.Is(err, wire.ErrFrameTooLarge) {
			reason = chatdpb.CloseReason_FRAME_TOO_LARGE
		} else if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			reason = chatdpb.CloseReason_CONNECTION_LOST
		}
		return fail(reason, resultFor(err), err)
	}
	s.srv.metrics.handshakes.WithLabelValues("ok").Inc()
	s.srv.metrics.handshakeSeconds.Observe(s.srv.now().Sub(s.accepted).Seconds())
	s.conn = conn

	if hello.GetProtocolVersion() != wire.Version {
		s.srv.metrics.logins.WithLabelValues("unsupported_version").Inc()
		s.reject(chatdpb.LoginResult_UNSUPPORTED_VERSION, chatdpb.CloseReason_UNSUPPORTED_VERSION,
			fmt.Sprintf("client speaks protocol version %d, this server %d", hello.GetProtocolVersion(), wire.Version))
		return errors.New("unsupported version")
	}
	if hello.GetProbe() {
		return s.probe(hello)
	}
	dev := conn.PeerStatic()
	acct, err := cfg.Store.AccountByDevice(ctx, dev[:])
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			s.srv.metrics.logins.WithLabelValues("unknown_device").Inc()
			s.reject(chatdpb.LoginResult_UNKNOWN_DEVICE, chatdpb.CloseReason_UNKNOWN_DEVICE,
				"this device key is not registered; register the number over HTTPS first")
			return err
		}
		s.srv.metrics.logins.WithLabelValues("error").Inc()
		s.logger().Error("login: store", "err", err)
		s.writeDirect(closeEnvelope(chatdpb.CloseReason_INTERNAL_ERROR, "store unavailable", 5*time.Second))
		s.close(chatdpb.CloseReason_INTERNAL_ERROR, "store unavailable", 5*time.Second)
		return err
	}

	s.phone = acct.Phone
	s.business = acct.Business
	s.id = newSessionID()
	s.pingInterval = clampPing(time.Duration(hello.GetPingIntervalMs())*time.Millisecond, cfg.MinPingInterval)
	s.srv.known.add(acct.Phone) // pipe and slots come with the first request (acquire), inflight with the first delivery

	res := &chatdpb.LoginResult{
		Status:         chatdpb.LoginResult_OK,
		Phone:          acct.Phone,
		Business:       acct.Business,
		ServerTimeMs:   s.srv.now().UnixMilli(),
		PingIntervalMs: uint32(s.pingInterval / time.Millisecond),
		MaxFrame:       wire.MaxFrame,
		SessionId:      s.id,
	}
	s.nc.SetDeadline(time.Time{})
	s.srv.metrics.logins.WithLabelValues("ok").Inc()
	s.srv.metrics.connections.WithLabelValues(portLabel(s.port), s.transport).Inc()
	s.logger().Info("logged in", "client", hello.GetClientVersion(), "path", hello.GetPath(), "ping_interval", s.pingInterval)

	// From here a writer owns the connection's writes; the login result is the first thing queued, so
	// it is written first. Register the session, then wake a writer for its first look at the delivery
	// queue: a message enqueued in between wakes it too (and finds the login result queued before).
	s.mu.Lock()
	s.outq = append(s.outq, &chatdpb.Envelope{Body: &chatdpb.Envelope_LoginResult{LoginResult: res}})
	// Most clients say nothing for a while after login: the writer of the login result lets go of the
	// send cipher when it is done (idleLocked).
	s.idleNext = true
	if !s.closed { // a close before this point closed the connection: no writer will ever run
		s.wstate = writerIdle
	}
	s.mu.Unlock()
	s.srv.login(s)
	s.wakeWriter()
	return nil
}

var errProbeAnswered = errors.New("probe answered")

// probe answers a probe login (docs/protocol.md §4.3): RATE_LIMITED over the per-address limit;
// otherwise PROBE_OK, then either Close(PROBE_DONE) at once (it returns errProbeAnswered) or, when the
// probe asked for a hold and a held-probe slot is free, nothing: it returns nil with s.hold set, and
// run holds the connection (holdProbe).
func (s *session) probe(hello *chatdpb.ClientHello) error {
	srv := s.srv
	addr := keyedlimit.ClientKey(s.nc.RemoteAddr().String())
	if ok, wait := srv.probeLimit.Allow(addr, srv.now()); !ok {
		srv.metrics.logins.WithLabelValues("probe_limited").Inc()
		retry := max((wait + time.Millisecond - 1).Truncate(time.Millisecond), time.Millisecond) // rounded up, never 0
		const detail = "too many probes from your address"
		s.writeDirect(closeEnvelope(chatdpb.CloseReason_RATE_LIMITED, detail, retry))
		s.close(chatdpb.CloseReason_RATE_LIMITED, detail, retry)
		return errors.New("probe rate limited")
	}
	srv.metrics.logins.WithLabelValues("probe").Inc()
	hold := min(time.Duration(hello.GetProbeHoldMs())*time.Millisecond, srv.cfg.MaxProbeHold)
	if hold <= 0 {
		s.reject(chatdpb.LoginResult_PROBE_OK, chatdpb.CloseReason_PROBE_DONE, "probe answered")
		return errProbeAnswered
	}
	if !srv.acquireHold(addr) {
		s.reject(chatdpb.LoginResult_PROBE_OK, chatdpb.CloseReason_PROBE_DONE, "probe answered; not held: too many held probes")
		return errProbeAnswered
	}
	s.hold = &heldProbe{addr: addr} // finish releases the slot
	res := &chatdpb.Envelope{Body: &chatdpb.Envelope_LoginResult{LoginResult: &chatdpb.LoginResult{
		Status: chatdpb.LoginResult_PROBE_OK, ServerTimeMs: srv.now().UnixMilli(), MaxFrame: wire.MaxFrame}}}
	// A close while the PROBE_OK is written leaves the connection to this goroutine, which then ends
	// the probe with its Close frame after the PROBE_OK; a close after it does that itself.
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.wstate = writerAnswering
	}
	s.mu.Unlock()
	if closed {
		return errSessionClosed // close closed the connection
	}
	err := s.writeDirect(res)
	if err == nil {
		s.nc.SetDeadline(time.Time{}) // the handshake deadline; writes set their own
		s.conn.ReleaseWrite()         // the probe is silent for up to MaxProbeHold; its last frames build it again
	}
	s.mu.Lock()
	closed, s.wstate = s.closed, writerNone
	if err == nil && !closed {
		s.wstate = writerHeld
	}
	s.mu.Unlock()
	switch {
	case err != nil:
		s.close(readReason(err, chatdpb.CloseReason_WRITE_TIMEOUT), err.Error(), 0) // if closed already, finish closes nc
		return err
	case closed:
		s.endProbe(nil)
		return errSessionClosed
	}
	s.hold.d = hold + srv.cfg.ProbeHoldGrace
	s.logger().Debug("probe held", "hold", hold, "client", hello.GetClientVersion(), "path", hello.GetPath())
	return nil
}

// holdProbe keeps a probe's connection open and silent after its PROBE_OK for s.hold.d, on the
// handler goroutine and a timer. The first frame from the client ends the hold: a Ping is answered
// with its Pong and Close(PROBE_DONE, "probe answered"); a Close is echoed (CLIENT_CLOSED); anything
// else is a protocol error. If none comes in time, the timer closes the probe with PROBE_DONE "probe
// hold elapsed" (on every transport: a read deadline would close a WebSocket before the Close frame).
// Every close of a held probe writes its own Close frame (closeWith).
func (s *session) holdProbe() {
	// From here (writerHeld, set by probe) whoever closes the session writes its Close frame.
	t := time.AfterFunc(s.hold.d, func() {
		s.close(chatdpb.CloseReason_PROBE_DONE, "probe hold elapsed", 0)
	})
	defer t.Stop()
	b, err := s.conn.ReadFrame()
	if err != nil {
		s.close(frameErrReason(err), err.Error(), 0) // a no-op when the session was closed already
		return
	}
	var env chatdpb.Envelope
	if err := wire.DecodeEnvelope(b, &env); err != nil {
		s.close(chatdpb.CloseReason_PROTOCOL_ERROR, err.Error(), 0)
		return
	}
	switch body := env.Body.(type) {
	case *chatdpb.Envelope_Ping:
		pong := &chatdpb.Envelope{Body: &chatdpb.Envelope_Pong{Pong: &chatdpb.Pong{Id: body.Ping.GetId()}}}
		s.closeWith(pong, chatdpb.CloseReason_PROBE_DONE, "probe answered", 0)
	case *chatdpb.Envelope_Close:
		s.close(chatdpb.CloseReason_CLIENT_CLOSED, body.Close.GetDetail(), 0)
	default:
		s.close(chatdpb.CloseReason_PROTOCOL_ERROR, fmt.Sprintf("envelope %T during a probe hold; only a ping is allowed", env.Body), 0)
	}
}

// reject answers a login with status, sends Close(reason) and closes the connection.
func (s *session) reject(status chatdpb.LoginResult_Status, reason chatdpb.CloseReason, detail string) {
	s.writeDirect(
		&chatdpb.Envelope{Body: &chatdpb.Envelope_LoginResult{LoginResult: &chatdpb.LoginResult{
			Status: status, ServerTimeMs: s.srv.now().UnixMilli(), MaxFrame: wire.MaxFrame}}},
		closeEnvelope(reason, detail, 0))
	s.close(reason, detail, 0)
}

// writeDirect writes envelopes before login, when no writer can run.
func (s *session) writeDirect(envs ...*chatdpb.Envelope) error {
	return s.writeDirectWithin(s.srv.cfg.WriteTimeout, envs...)
}

// writeDirectWithin is writeDirect with a write deadline of timeout.
func (s *session) writeDirectWithin(timeout time.Duration, envs ...*chatdpb.Envelope) error {
	wb := getWriteBuf()
	defer putWriteBuf(wb)
	var err error
	for _, env := range envs {
		if wb.buf, wb.scratch, err = s.conn.AppendEnvelope(wb.buf, wb.scratch, env); err != nil {
			return err
		}
	}
	s.nc.SetWriteDeadline(time.Now().Add(timeout))
	_, err = s.nc.Write(wb.buf)
	return err
}

// readLoop reads and handles the client's frames until the session closes, then finishes it.
//
// Most of what an idle session costs is this goroutine's stack, blocked in a read, which needs less
// than the 2 KiB a new goroutine gets. Handling a frame (decrypting, decoding, a store call) grows the
// stack to 4 KiB or more, and the runtime shrinks a stack only while under a quarter of it is in use
// (counting an 800-byte reserve), so never back to 2 KiB. Hence the read loop runs on a fresh
// goroutine from login on, and after answering a ping, which a client sends only on an otherwise
// silent connection, it goes on in a new goroutine and lets this one, with its grown stack, exit.
// That is one goroutine start per ping; a busy connection, which does not ping, never restarts.
func (s *session) readLoop() {
	if s.readFrames() {
		go s.readLoop()
		return
	}
	s.finish()
}

// readFrames reads and handles frames until the session closes (it returns false) or a ping was
// answered (true: the caller restarts the loop on a fresh stack).
func (s *session) readFrames() (restart bool) {
	timeout := 2*s.pingInterval + s.srv.cfg.PongTimeout
	for {
		since := time.Now()
		s.nc.SetReadDeadline(since.Add(timeout))
		b, err := s.conn.ReadFrame()
		if err != nil {
			if isTimeout(err) {
				s.close(chatdpb.CloseReason_IDLE_TIMEOUT, fmt.Sprintf("no frame for %v (ping interval %v)", timeout, s.pingInterval), 0)
			} else {
				s.close(frameErrReason(err), err.Error(), 0)
			}
			return false
		}
		if restart, ok := s.handleFrame(b, since); !ok || restart {
			return restart
		}
	}
}

// envelopes holds decoded envelopes between frames, so a reader blocked in a read holds none (nor the
// last frame's body).
var envelopes = sync.Pool{New: func() any { return new(chatdpb.Envelope) }}

// handleFrame decodes and handles one frame (reader), which arrived after the reader waited for it
// since then. It reports whether the session goes on (ok) and whether the frame was a ping.
func (s *session) handleFrame(b []byte, since time.Time) (ping, ok bool) {
	if id, isPing := wire.ParsePing(b); isPing { // an idle client's keepalive: no protobuf
		if err := s.pong(id, since); err != nil {
			return false, false // closed meanwhile
		}
		return true, true
	}
	env := envelopes.Get().(*chatdpb.Envelope)
	defer func() {
		env.Reset() // the handlers keep what they need of the body, never the envelope
		envelopes.Put(env)
	}()
	if err := wire.DecodeEnvelope(b, env); err != nil {
		s.close(chatdpb.CloseReason_PROTOCOL_ERROR, err.Error(), 0)
		return false, false
	}
	if err := s.handle(env, since); err != nil {
		if !errors.Is(err, errSessionClosed) {
			s.close(chatdpb.CloseReason_PROTOCOL_ERROR, err.Error(), 0)
		}
		return false, false
	}
	return env.GetPing() != nil, true
}

var errSessionClosed = errors.New("session closed")

// frameErrReason is the close reason of a failed ReadFrame that is not a timeout.
func frameErrReason(err error) chatdpb.CloseReason {
	switch {
	case errors.Is(err, wire.ErrFrameTooLarge):
		return chatdpb.CloseReason_FRAME_TOO_LARGE
	case errors.Is(err, noisesock.ErrDecrypt):
		return chatdpb.CloseReason_DECRYPT_FAILED
	default:
		return chatdpb.CloseReason_CONNECTION_LOST
	}
}

// reply queues env for the writer (reader). If no writer runs, the reader writes it itself
// (writeInline). With outqCap replies queued it waits until the writer takes one or the session closes.
func (s *session) reply(env *chatdpb.Envelope) error { return s.queueReply(env, false) }

// pong answers a ping (reader) that came after the reader waited for it since then.
//
// A ping that came after half a ping interval or more without a frame is an idle client's keepalive
// (the reference client pings only on a connection quiet for its interval), and such a client most
// likely stays silent until the next one. The session then lets go of what an idle connection need
// not hold: the receive cipher and the read buffer now, the send cipher (and the empty output
// buffers) once the pong is written (idleNext). The next frame each way builds its cipher again, about
// a microsecond. A ping that follows other traffic closely (a client measuring its round trip, a
// benchmark) keeps everything.
func (s *session) pong(id uint64, since time.Time) error {
	env := &chatdpb.Envelope{Body: &chatdpb.Envelope_Pong{Pong: &chatdpb.Pong{Id: id}}}
	idle := time.Since(since) >= s.pingInterval/2
	if idle {
		s.conn.ReleaseRead()
	}
	return s.queueReply(env, idle)
}

// queueReply is reply; idle (set with env queued, in the same critical section) has the writer that
// writes env let go of the send cipher when it exits.
func (s *session) queueReply(env *chatdpb.Envelope, idle bool) error {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return errSessionClosed
		}
		if len(s.outq) < outqCap {
			s.outq = append(s.outq, env)
			s.idleNext = s.idleNext || idle
			start := s.claimWriterLocked()
			s.mu.Unlock()
			if start {
				s.writeInline()
			}
			return nil
		}
		if s.outRoom == nil {
			s.outRoom = make(chan struct{})
		}
		room, done := s.outRoom, s.doneLocked()
		s.mu.Unlock()
		select {
		case <-room:
		case <-done:
			return errSessionClosed
		}
	}
}

// handle handles one envelope (reader); since is when the reader began to wait for it.
func (s *session) handle(env *chatdpb.Envelope, since time.Time) error {
	ctx := context.Background()
	switch b := env.Body.(type) {
	case *chatdpb.Envelope_Ping:
		return s.pong(b.Ping.GetId(), since)
	case *chatdpb.Envelope_Pong:
		return nil
	case *chatdpb.Envelope_Send:
		return s.handleSend(ctx, b.Send)
	case *chatdpb.Envelope_DeliverAck:
		return s.handleAck(ctx, b.DeliverAck.GetSeqs())
	case *chatdpb.Envelope_MarkRead:
		return s.handleMarkRead(ctx, b.MarkRead)
	case *chatdpb.Envelope_ContactQuery:
		return s.handleContacts(ctx, b.ContactQuery)
	case *chatdpb.Envelope_Close:
		s.close(chatdpb.CloseReason_CLIENT_CLOSED, b.Close.GetDetail(), 0)
		return errSessionClosed
	default:
		return fmt.Errorf("envelope %T is not allowed from a client", env.Body)
	}
}

// acquire takes a pipelining slot for a request, waiting while cfg.MaxPipelined are taken.
func (s *session) acquire() error {
	if s.slots == nil {
		s.slots = make(chan struct{}, s.srv.cfg.MaxPipelined)
		s.pipe = s.srv.cfg.Store.NewPipeline()
	}
	select {
	case s.slots <- struct{}{}:
		return nil
	default:
	}
	s.mu.Lock()
	done := s.doneLocked()
	s.mu.Unlock()
	select {
	case s.slots <- struct{}{}:
		return nil
	case <-done:
		return errSessionClosed
	}
}

// release frees n slots. The slots were taken, so it never blocks.
func (s *session) release(n int) {
	for range n {
		<-s.slots
	}
}

// beginOp counts a store write about to be submitted (reader). If the submission fails, abortOp
// undoes it.
func (s *session) beginOp() {
	s.ops.Add(1)
	s.mu.Lock()
	s.storeOps++
	s.mu.Unlock()
}

func (s *session) abortOp() {
	s.mu.Lock()
	s.storeOps--
	s.mu.Unlock()
	s.release(1)
	s.ops.Done()
}

// finishOp ends a pipelined store write (store callback, after the commit or the failure). On
// success, reply (if any) joins the ordered replies and keeps the request's slot until the writer
// takes it; otherwise the slot is freed now. A failure closes the session.
func (s *session) finishOp(what string, reply *chatdpb.Envelope, err error) {
	s.mu.Lock()
	s.storeOps--
	queued := err == nil && reply != nil
	start := false
	if queued {
		s.replies = append(s.replies, reply)
		start = s.claimWriterLocked()
	}
	s.mu.Unlock()
	if start {
		go s.writeLoop()
	}
	if !queued {
		s.release(1)
	}
	if err != nil {
		if errors.Is(err, groupcommit.ErrSeqBroken) {
			s.close(chatdpb.CloseReason_INTERNAL_ERROR, "store unavailable", 5*time.Second) // logged once, for the first failure
		} else {
			s.storeFailed(what, err)
		}
	}
	s.ops.Done()
}

// replyInOrder queues a reply that needs no store write (reader, holding a slot) behind the replies of
// the writes already pending, so that it keeps its place.
func (s *session) replyInOrder(env *chatdpb.Envelope) error {
	s.mu.Lock()
	if s.storeOps == 0 { // every earlier reply is in s.replies already
		s.replies = append(s.replies, env)
		start := s.claimWriterLocked()
		s.mu.Unlock()
		if start {
			go s.writeLoop()
		}
		return nil
	}
	s.mu.Unlock()
	s.beginOp()
	if err := s.pipe.Barrier(context.Background(), func(err error) { s.finishOp("reply", env, err) }); err != nil {
		s.abortOp()
		return s.storeFailed("reply", err)
	}
	return nil
}

func (s *session) handleSend(ctx context.Context, m *chatdpb.Send) error {
	if err := s.acquire(); err != nil {
		return err
	}
	ack := &chatdpb.SendAck{ClientId: m.GetClientId()}
	env := &chatdpb.Envelope{Body: &chatdpb.Envelope_SendAck{SendAck: ack}}
	invalid := func(detail string) error {
		s.srv.events.invalid.Inc()
		ack.Status, ack.Detail = chatdpb.SendAck_INVALID, detail
		return s.replyInOrder(env)
	}
	switch {
	case m.GetClientId() == "" || len(m.GetClientId()) > wire.MaxClientIDLen:
		return invalid(fmt.Sprintf("client_id must be 1 to %d bytes", wire.MaxClientIDLen))
	case m.GetContent() == nil:
		return invalid("content is missing")
	case len(m.GetContent().GetBody()) > wire.MaxContentLen:
		return invalid(fmt.Sprintf("content of %d bytes exceeds %d", len(m.GetContent().GetBody()), wire.MaxContentLen))
	}
	to, err := phone.Normalize(m.GetTo())
	if err != nil {
		return invalid(err.Error())
	}
	// A recipient seen registered before needs no check; otherwise the save checks it in its own
	// write, so there is no separate lookup either way.
	check := store.CheckRecipient
	if s.srv.known.has(to) {
		check = store.TrustRecipient
	}
	msg := store.Message{
		From: s.phone, To: to, ClientID: m.GetClientId(),
		ContentVersion: m.GetContent().GetVersion(), Content: m.GetContent().GetBody(),
	}
	s.beginOp()
	err = s.pipe.SaveMessageAsync(ctx, msg, check, func(saved store.Message, dup bool, err error) {
		switch {
		case errors.Is(err, store.ErrUnknownRecipient):
			s.srv.events.unknownRecipient.Inc()
			ack.Status, ack.Detail = chatdpb.SendAck_UNKNOWN_RECIPIENT, to+" is not registered"
			err = nil
		case err != nil:
		case dup:
			s.srv.events.duplicate.Inc()
			ack.Status, ack.ServerId, ack.TimestampMs = chatdpb.SendAck_DUPLICATE, uint64(saved.ID), saved.CreatedAt.UnixMilli()
			s.srv.known.add(to)
		default:
			s.srv.events.stored.Inc()
			ack.Status, ack.ServerId, ack.TimestampMs = chatdpb.SendAck_STORED, uint64(saved.ID), saved.CreatedAt.UnixMilli()
			s.srv.known.add(to)
			it := saved.Item()
			it.Message.FromBusiness = s.business
			s.srv.handOver(it)
		}
		s.finishOp("send: save", env, err)
	})
	if err != nil {
		s.abortOp()
		return s.storeFailed("send: save", err)
	}
	return nil
}

func (s *session) handleAck(ctx context.Context, seqs []uint64) error {
	if len(seqs) > wire.MaxSeqsPerAck {
		return fmt.Errorf("deliver ack with %d seqs exceeds %d", len(seqs), wire.MaxSeqsPerAck)
	}
	if err := s.acquire(); err != nil {
		return err
	}
	// Sort the seqs by the kind of item they were delivered as, so that the store runs only the
	// statements the kinds need. A seq not in flight (delivered on an earlier connection, or
	// never) may be either.
	var msgs, rcpts []int64
	s.mu.Lock()
	for _, q := range seqs {
		switch s.inflight[q] {
		case store.ItemMessage:
			msgs = append(msgs, int64(q))
		case store.ItemReceipt:
			rcpts = append(rcpts, int64(q))
		default:
			msgs, rcpts = append(msgs, int64(q)), append(rcpts, int64(q))
		}
	}
	s.mu.Unlock()
	s.beginOp()
	err := s.pipe.AckItemsAsync(ctx, s.phone, msgs, rcpts, func(queued []store.Item, err error) {
		if err == nil {
			s.srv.events.delivered.Add(float64(len(seqs)))
			s.srv.handOver(queued...)
			// The window opens only once the acks are durable.
			s.mu.Lock()
			wasFull := len(s.inflight) >= s.srv.cfg.MaxInflight
			for _, q := range seqs {
				delete(s.inflight, q)
			}
			s.mu.Unlock()
			if wasFull {
				s.wakeWriter()
			}
		}
		s.finishOp("ack", nil, err)
	})
	if err != nil {
		s.abortOp()
		return s.storeFailed("ack", err)
	}
	return nil
}

func (s *session) handleMarkRead(ctx context.Context, m *chatdpb.MarkRead) error {
	if len(m.GetServerIds()) > wire.MaxIDsPerMarkRead {
		return s.replyError(m.GetRequestId(), "too_many_ids", fmt.Sprintf("at most %d ids per read mark", wire.MaxIDsPerMarkRead))
	}
	if err := s.acquire(); err != nil {
		return err
	}
	ids := make([]int64, len(m.GetServerIds()))
	for i, id := range m.GetServerIds() {
		ids[i] = int64(id)
	}
	reply := &chatdpb.Envelope{Body: &chatdpb.Envelope_MarkReadAck{MarkReadAck: &chatdpb.MarkReadAck{RequestId: m.GetRequestId()}}}
	s.beginOp()
	err := s.pipe.MarkReadAsync(ctx, s.phone, ids, func(queued []store.Item, err error) {
		if err == nil {
			for _, it := range queued {
				if it.Receipt.Type == store.ReceiptRead {
					s.srv.events.read.Inc()
				}
			}
			s.srv.handOver(queued...)
		}
		s.finishOp("mark read", reply, err)
	})
	if err != nil {
		s.abortOp()
		return s.storeFailed("mark read", err)
	}
	return nil
}

func (s *session) handleContacts(ctx context.Context, q *chatdpb.ContactQuery) error {
	if len(q.GetPhones()) > wire.MaxContactsPerQuery {
		return s.replyError(q.GetRequestId(), "too_many_contacts", fmt.Sprintf("at most %d phones per query", wire.MaxContactsPerQuery))
	}
	for _, in := range q.GetPhones() {
		if len(in) > wire.MaxContactInputLen {
			return s.replyError(q.GetRequestId(), "invalid_contact", fmt.Sprintf("a phone number of %d bytes exceeds %d", len(in), wire.MaxContactInputLen))
		}
	}
	res := &chatdpb.ContactResult{RequestId: q.GetRequestId(), Contacts: make([]*chatdpb.Contact, len(q.GetPhones()))}
	valid := make([]string, 0, len(q.GetPhones()))
	for i, in := range q.GetPhones() {
		c := &chatdpb.Contact{Input: in}
		if p, err := phone.Normalize(in); err == nil {
			c.Phone = p
			valid = append(valid, p)
		}
		res.Contacts[i] = c
	}
	found, err := s.srv.cfg.Store.LookupAccounts(ctx, valid)
	if err != nil {
		return s.storeFailed("contacts", err)
	}
	for _, c := range res.Contacts {
		if a, ok := found[c.Phone]; ok && c.Phone != "" {
			c.Registered, c.Business = true, a.Business
			if a.Business {
				c.DisplayName = truncate(a.DisplayName, wire.MaxDisplayNameLen)
			}
		}
	}
	return s.reply(&chatdpb.Envelope{Body: &chatdpb.Envelope_ContactResult{ContactResult: res}})
}

// replyError answers request id with an Error envelope; the connection stays open.
func (s *session) replyError(id uint64, code, msg string) error {
	return s.reply(&chatdpb.Envelope{Body: &chatdpb.Envelope_Error{Error: &chatdpb.Error{RequestId: id, Code: code, Message: msg}}})
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func (s *session) storeFailed(op string, err error) error {
	s.logger().Error("store failed", "op", op, "err", err)
	s.close(chatdpb.CloseReason_INTERNAL_ERROR, "store unavailable", 5*time.Second)
	return errSessionClosed
}

// maxBatch is how many bytes the writer gathers before it writes.
const maxBatch = 64 << 10

// fetchLimit is the most deliveries fetched from the store at once.
const fetchLimit = 256

// writeBuf is a writer's output buffer, plaintext scratch buffer and spare reply buffer (swapped with
// s.replies when the writer takes them), pooled: a session holds none of them while no writer runs.
type writeBuf struct {
	buf, scratch []byte
	spare        []*chatdpb.Envelope // empty; cleared before it came back
}

var writeBufs = sync.Pool{New: func() any { return new(writeBuf) }}

func getWriteBuf() *writeBuf { return writeBufs.Get().(*writeBuf) }

func putWriteBuf(wb *writeBuf) {
	if cap(wb.buf) > 2*maxBatch {
		wb.buf = nil // a batch that grew past the bound (one huge frame on a full batch): do not pool it
	}
	wb.buf, wb.scratch = wb.buf[:0], wb.scratch[:0]
	writeBufs.Put(wb)
}

// writeLoop is a session's writer goroutine (see Writer on session): started by claimWriterLocked's
// caller, it drains the queued output, fetches pending deliveries when asked, writes each batch in one
// Write, and exits when nothing is left queued, or ends the session when it is closed.
func (s *session) writeLoop() {
	defer s.writers.Done()
	wb := getWriteBuf()
	defer putWriteBuf(wb)
	s.writeRounds(wb, -1)
}

// writeInline is the writer run by the reader itself, for its own reply, when it claimed the writer:
// one write round; then, if more output was queued meanwhile, a writer goroutine takes over.
func (s *session) writeInline() {
	wb := getWriteBuf()
	defer putWriteBuf(wb)
	if s.writeRounds(wb, 1) {
		s.writers.Done()
		return
	}
	go s.writeLoop()
}

// writeRounds is the writer's loop: it returns true when the writer is gone (exited idle or ended the
// session), false after maxWrites writes (if ≥ 0) with the writer's role still held.
func (s *session) writeRounds(wb *writeBuf, maxWrites int) bool {
	broken := false // a write failed: the stream may end inside a frame, nothing more is written
	for {
		next, err := s.gather(wb)
		switch {
		case err != nil:
			s.close(chatdpb.CloseReason_INTERNAL_ERROR, err.Error(), 0)
			continue // closed now: the next gather ends the session
		case next == writerExit:
			return true
		case next == writerClose:
			s.writeClose(wb, broken)
			return true
		case next == writerFetch:
			if wb.buf, wb.scratch, err = s.appendPending(wb.buf, wb.scratch); err != nil {
				s.storeFailed("pending", err)
				continue
			}
		}
		if len(wb.buf) == 0 {
			continue // nothing fetched: the next gather exits unless output was queued meanwhile
		}
		s.nc.SetWriteDeadline(time.Now().Add(s.srv.cfg.WriteTimeout))
		if _, err := s.nc.Write(wb.buf); err != nil {
			broken = true
			s.close(readReason(err, chatdpb.CloseReason_WRITE_TIMEOUT), err.Error(), 0)
		}
		wb.buf = wb.buf[:0]
		if cap(wb.buf) > 2*maxBatch {
			wb.buf = nil
		}
		if maxWrites--; maxWrites == 0 {
			return s.exitIfIdle()
		}
	}
}

// exitIfIdle ends the running writer if nothing is queued and the session is open, like gather, and
// reports whether it did.
func (s *session) exitIfIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.fetch || len(s.outq) > 0 || len(s.replies) > 0 {
		return false
	}
	s.idleLocked()
	return true
}

// What a writer does after gather.
type writerNext uint8

const (
	writerWrite writerNext = iota // write the batch in wb.buf (if any), then gather again
	writerFetch                   // fetch pending deliveries into the batch, write it, gather again
	writerClose                   // the session is closed: end it (writeClose)
	writerExit                    // nothing was queued and the batch is empty: the writer is gone (writerIdle is set)
)

// gather appends the queued output to wb.buf, in order: s.outq (the login result first), then the
// ordered replies, until the batch is full or nothing is queued, and says what the writer does next:
// write, or first fetch deliveries if a fetch was asked for (once per round, however full the batch).
// When it finds nothing queued, no fetch asked for and nothing in wb.buf, it sets writerIdle in the
// same critical section (idleLocked) and returns writerExit: output queued after that finds no writer
// and starts one. An encoding error is returned with what was appended so far.
func (s *session) gather(wb *writeBuf) (next writerNext, err error) {
	fetch := false
	for len(wb.buf) < maxBatch {
		var env *chatdpb.Envelope
		var rs []*chatdpb.Envelope
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return writerClose, nil
		}
		fetch = fetch || s.fetch
		s.fetch = false
		switch {
		case len(s.outq) > 0:
			env = s.popOutLocked()
		case len(s.replies) > 0:
			rs = s.replies
			s.replies, wb.spare = wb.spare[:0], nil
		case !fetch && len(wb.buf) == 0:
			s.idleLocked()
			s.mu.Unlock()
			return writerExit, nil
		}
		s.mu.Unlock()
		switch {
		case env != nil:
			err = s.appendOne(wb, env)
		case rs != nil:
			err = s.appendReplies(wb, rs)
		}
		if err != nil || (env == nil && rs == nil) {
			break // an encoding error (the session closes), or nothing more queued
		}
	}
	if fetch {
		return writerFetch, err
	}
	return writerWrite, err
}

// appendOne appends env to the batch (writer). A pong, most of what an idle session writes, is
// encoded without protobuf (wire.AppendPong).
func (s *session) appendOne(wb *writeBuf, env *chatdpb.Envelope) (err error) {
	if p, ok := env.Body.(*chatdpb.Envelope_Pong); ok {
		wb.scratch = wire.AppendPong(wb.scratch[:0], p.Pong.GetId())
		wb.buf, err = s.conn.AppendFrame(wb.buf, wb.scratch)
		return err
	}
	wb.buf, wb.scratch, err = s.conn.AppendEnvelope(wb.buf, wb.scratch, env)
	return err
}

// popOutLocked takes the first envelope of s.outq and lets a reader waiting for room go on. Called
// with s.mu held and s.outq not empty.
func (s *session) popOutLocked() *chatdpb.Envelope {
	env := s.outq[0]
	n := copy(s.outq, s.outq[1:]) // at most outqCap pointers
	s.outq[n] = nil
	s.outq = s.outq[:n]
	if s.outRoom != nil {
		close(s.outRoom)
		s.outRoom = nil
	}
	return env
}

// idleLocked marks the running writer gone (it exits) and drops reply buffers grown by a burst. When
// the client is idle (idleNext: after login, after a quiet ping) it lets go of the send cipher and of
// the empty output buffers too. Called with s.mu held, by the writer (which owns the send cipher),
// when nothing is queued.
func (s *session) idleLocked() {
	s.wstate = writerIdle
	if s.idleNext {
		s.idleNext = false
		s.conn.ReleaseWrite()
		s.outq, s.replies = nil, nil
		if len(s.ready) == 0 {
			s.ready = nil
		}
		if len(s.inflight) == 0 {
			s.inflight = nil // a map keeps its buckets when emptied
		}
		return
	}
	if cap(s.replies) > idleKeep {
		s.replies = nil
	}
	if len(s.ready) == 0 && cap(s.ready) > readyKeep {
		s.ready = nil
	}
	if cap(s.outq) > idleKeep {
		s.outq = nil
	}
}

// appendReplies appends the ordered replies rs, taken from s.replies, to wb.buf, frees their
// requests' slots and keeps rs as wb's spare reply buffer (writer).
func (s *session) appendReplies(wb *writeBuf, rs []*chatdpb.Envelope) error {
	var err error
	for _, env := range rs {
		if wb.buf, wb.scratch, err = s.conn.AppendEnvelope(wb.buf, wb.scratch, env); err != nil {
			break
		}
	}
	s.release(len(rs))
	clear(rs)
	if cap(rs) > 256 {
		rs = nil // a burst's: do not keep it
	}
	wb.spare = rs[:0]
	return err
}

// appendPending appends the deliveries after s.lastSeq that fit in the in-flight window (writer).
//
// A session that has read its queue to the end delivers what the store's writer hands over
// (handoffLive): the items just committed, without reading them back. Otherwise it reads the queue
// with Pending, and from the moment it starts reading keeps what is handed over (handoffQuery): an
// item committed after the read's snapshot is handed over after it, so once a read comes back short of
// its limit with nothing dropped, ready holds everything the read did not see (and perhaps some it
// did: items at or below lastSeq are skipped) and the session goes live.
func (s *session) appendPending(buf, scratch []byte) ([]byte, []byte, error) {
	s.mu.Lock()
	room := s.srv.cfg.MaxInflight - len(s.inflight)
	if room <= 0 {
		s.mu.Unlock()
		return buf, scratch, nil // handleAck wakes a writer when the window opens
	}
	limit := min(room, fetchLimit)
	var items []store.Item
	if s.handoff == handoffLive {
		items = s.takeReadyLocked(limit)
		if len(s.ready) > 0 {
			s.fetch = true // the window or the batch limit stopped us: more next round
		}
		s.srv.deliveries.handedOver.Add(float64(len(items)))
	} else {
		s.handoff = handoffQuery
		s.dropReadyLocked()
		s.mu.Unlock()
		var err error
		items, err = s.srv.cfg.Store.Pending(context.Background(), s.phone, s.lastSeq, limit)
		if f := afterQueueRead.Load(); f != nil {
			(*f)(s.phone)
		}
		s.mu.Lock()
		if err != nil {
			s.handoff = handoffOff
			s.mu.Unlock()
			return buf, scratch, err
		}
		s.srv.deliveries.read.Add(float64(len(items)))
		switch {
		case len(items) == limit:
			s.fetch = true // there may be more: this writer reads again
		case s.handoff == handoffQuery: // nothing handed over meanwhile was dropped
			s.handoff = handoffLive
			if len(s.ready) > 0 {
				s.fetch = true
			}
		}
	}
	if len(items) > 0 {
		if s.inflight == nil {
			s.inflight = make(map[uint64]store.ItemKind, len(items))
		}
		for _, it := range items {
			s.inflight[uint64(it.Seq)] = it.Kind
		}
	}
	s.mu.Unlock()
	var err error
	for _, it := range items {
		if buf, scratch, err = s.conn.AppendEnvelope(buf, scratch, deliverEnvelope(it)); err != nil {
			return buf, scratch, err
		}
		s.lastSeq = it.Seq
	}
	return buf, scratch, nil
}

// afterQueueRead, when set (by tests), is called by the writer right after it has read the queue,
// without s.mu held.
var afterQueueRead atomic.Pointer[func(phone string)]

// dropReadyLocked empties s.ready, keeping its array (s.mu held).
func (s *session) dropReadyLocked() {
	clear(s.ready)
	s.ready = s.ready[:0]
}

// takeReadyLocked takes up to limit items after s.lastSeq from the front of s.ready (writer, s.mu held).
func (s *session) takeReadyLocked(limit int) []store.Item {
	i := 0
	for i < len(s.ready) && s.ready[i].Seq <= s.lastSeq {
		i++ // read by the query that preceded going live
	}
	n := min(limit, len(s.ready)-i)
	items := slices.Clone(s.ready[i : i+n])
	rest := copy(s.ready, s.ready[i+n:])
	clear(s.ready[rest:])
	s.ready = s.ready[:rest]
	return items
}

// writeClose ends a closed session (the last writer): unless the connection is lost or its write
// failed, it writes what wb holds, then the output still queued and the Close frame, within a second;
// it closes the connection.
func (s *session) writeClose(wb *writeBuf, broken bool) {
	defer s.nc.Close()
	s.mu.Lock()
	s.wstate = writerDone
	outq, rs := s.outq, s.replies
	s.outq, s.replies = nil, nil
	if s.outRoom != nil {
		close(s.outRoom) // the reader waits on done too; this only lets the channel go
		s.outRoom = nil
	}
	s.mu.Unlock()
	if broken || s.reason == chatdpb.CloseReason_CONNECTION_LOST || s.reason == chatdpb.CloseReason_WRITE_TIMEOUT {
		s.release(len(rs))
		return
	}
	// What is queued goes first: the login result, if it was not written yet, must precede the Close,
	// and a SendAck queued is for a message stored. An envelope that fails to encode is left out.
	for _, env := range outq {
		s.appendOne(wb, env)
	}
	s.appendReplies(wb, rs)
	if s.appendOne(wb, closeEnvelope(s.reason, s.detail, s.retry)) != nil {
		return
	}
	s.nc.SetWriteDeadline(time.Now().Add(time.Second))
	s.nc.Write(wb.buf)
}

func deliverEnvelope(it store.Item) *chatdpb.Envelope {
	d := &chatdpb.Deliver{Seq: uint64(it.Seq)}
	switch it.Kind {
	case store.ItemMessage:
		m := it.Message
		d.Item = &chatdpb.Deliver_Message{Message: &chatdpb.Message{
			ServerId:     uint64(m.ID),
			From:         m.From,
			TimestampMs:  m.CreatedAt.UnixMilli(),
			Content:      &chatdpb.Content{Version: m.ContentVersion, Body: m.Content},
			FromBusiness: m.FromBusiness,
		}}
	case store.ItemReceipt:
		r := it.Receipt
		t := chatdpb.Receipt_DELIVERED
		if r.Type == store.ReceiptRead {
			t = chatdpb.Receipt_READ
		}
		d.Item = &chatdpb.Deliver_Receipt{Receipt: &chatdpb.Receipt{
			Type: t, ServerId: uint64(r.MessageID), ClientId: r.ClientID, By: r.By, TimestampMs: r.At.UnixMilli(),
		}}
	}
	return &chatdpb.Envelope{Body: &chatdpb.Envelope_Deliver{Deliver: d}}
}

func closeEnvelope(reason chatdpb.CloseReason, detail string, retry time.Duration) *chatdpb.Envelope {
	return &chatdpb.Envelope{Body: &chatdpb.Envelope_Close{Close: &chatdpb.Close{
		Reason: reason, Detail: detail, RetryAfterMs: uint32(retry / time.Millisecond)}}}
}

// clampPing is the ping interval the server enforces for an announced one.
func clampPing(d, lo time.Duration) time.Duration {
	if d == 0 {
		return DefaultPingInterval
	}
	return min(max(d, lo), MaxPingInterval)
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded)
}

// readReason classifies an I/O error: a timeout gives onTimeout, anything else CONNECTION_LOST.
func readReason(err error, onTimeout chatdpb.CloseReason) chatdpb.CloseReason {
	if isTimeout(err) {
		return onTimeout
	}
	return chatdpb.CloseReason_CONNECTION_LOST
}

func resultFor(err error) string {
	if isTimeout(err) {
		return "timeout"
	}
	return "failed"
}

func newSessionID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
