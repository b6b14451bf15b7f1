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
// after login a second goroutine, the writer, owns every write to the connection.
//
// # Pipelining
//
// The reader does not wait for the store. It hands each Send, DeliverAck and MarkRead to the store
// as an asynchronous write on the session's store.Pipeline, in arrival order, and reads the next
// frame. The store's group-commit writer commits whatever many sessions queued meanwhile in one
// transaction and then, on its own goroutine and in pipeline order, calls each write's completion
// callback (finishOp and the closures around it), which:
//
//   - appends the reply (SendAck, MarkReadAck) to s.replies and signals replyCh; the writer
//     goroutine takes the replies, in order, and writes them. So a SendAck is sent only after the
//     commit that made its message durable, and SendAcks leave in the order of the Sends. A reply
//     that needs no write (an INVALID or UNKNOWN_RECIPIENT SendAck) keeps its place too: it goes
//     straight to s.replies only when no write of the session is pending, and otherwise through a
//     pipeline barrier behind them (replyInOrder).
//   - wakes the sessions whose queues grew (the recipient of a stored message, the senders of
//     receipts), after the commit.
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
// and the server's mu are held only briefly and never across a store call, signals (replyCh, wakeCh)
// are non-blocking sends, and freeing a slot never waits.
type session struct {
	// Static after construction.
	srv       *Server
	nc        net.Conn
	port      int
	transport string
	accepted  time.Time

	// Set by the handler before the writer starts; read-only afterwards.
	conn         *noisesock.Conn
	phone        string
	id           string
	log          *slog.Logger
	pingInterval time.Duration

	out        chan *chatdpb.Envelope // replies for the writer
	wakeCh     chan struct{}          // capacity 1: the queue may have grown or the window opened
	done       chan struct{}          // closed by close
	writerDone chan struct{}          // closed when the writer has exited
	writing    atomic.Bool            // the writer was started and owns nc

	closeOnce sync.Once
	reason    chatdpb.CloseReason // written once in close, read after done is closed
	detail    string
	retry     time.Duration

	// A held probe (docs/protocol.md §4.3) has no writer: the handler reads, and whoever closes the
	// session writes its last frames (see close). holdFor and holdAddr are set by the handler before
	// holding is; holdAddr is also the sign that a held-probe slot must be released.
	holdFor  time.Duration // the hold granted (capped), plus the grace
	holdAddr string        // the client address (keyedlimit.ClientKey) whose slot the probe holds
	holding  atomic.Bool   // PROBE_OK is written: close writes the Close frame itself

	// Pipelining (see above). replyCh is set by the handler before the writer starts; pipe and slots
	// by the reader at its first request (an idle session has neither), before anything that makes
	// the writer or a store callback use slots (taking a reply, a callback).
	pipe    *store.Pipeline     // the session's ordered store writes; submitted to by the reader only
	slots   chan struct{}       // capacity cfg.MaxPipelined: one element per request accepted and not finished
	replyCh chan struct{}       // capacity 1: s.replies may have entries
	ops     sync.WaitGroup      // store writes submitted and not yet called back (Add: reader; Done: callbacks)
	spare   []*chatdpb.Envelope // the writer's second reply buffer; used by the writer only

	mu       sync.Mutex
	inflight map[uint64]struct{} // deliveries sent and not acked; guarded by mu
	replies  []*chatdpb.Envelope // ordered replies waiting for the writer; guarded by mu
	storeOps int                 // store writes submitted and not yet called back; guarded by mu
}

func newSession(srv *Server, nc net.Conn) *session {
	port, tr := transport.Label(nc)
	srv.metrics.accepted.WithLabelValues(portLabel(port), tr).Inc()
	accepted := srv.now()
	if tc, ok := nc.(*transport.Conn); ok && !tc.Accepted.IsZero() {
		accepted = tc.Accepted // the 443 multiplexer's sniffing and TLS count against the deadline
	}
	return &session{
		srv:        srv,
		nc:         nc,
		port:       port,
		transport:  tr,
		accepted:   accepted,
		log:        srv.log.With("remote", nc.RemoteAddr().String(), "port", port, "transport", tr),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
}

// close ends the session with reason. The first call wins; later calls do nothing. The writer sends the
// Close frame (unless the connection is already lost) and closes the connection; before the writer
// runs, close closes the connection itself. A held probe has no writer: close sends its Close frame.
func (s *session) close(reason chatdpb.CloseReason, detail string, retryAfter time.Duration) {
	s.closeWith(nil, reason, detail, retryAfter)
}

// closeWith is close; a held probe's last frames are then last (if not nil) and the Close frame.
func (s *session) closeWith(last *chatdpb.Envelope, reason chatdpb.CloseReason, detail string, retryAfter time.Duration) {
	s.closeOnce.Do(func() {
		s.reason, s.detail, s.retry = reason, detail, retryAfter
		close(s.done)
		switch {
		case s.writing.Load():
		case s.holding.Load():
			// Nothing else writes to a held probe, and its send buffer is empty but for the
			// LoginResult, so this write does not wait: not even Shutdown, which calls close for
			// every connection in turn, is held up by it.
			if reason != chatdpb.CloseReason_CONNECTION_LOST && reason != chatdpb.CloseReason_WRITE_TIMEOUT {
				envs := []*chatdpb.Envelope{closeEnvelope(reason, detail, retryAfter)}
				if last != nil {
					envs = append([]*chatdpb.Envelope{last}, envs...)
				}
				s.writeDirectWithin(time.Second, envs...)
			}
			s.nc.Close()
		default:
			s.nc.Close()
		}
	})
}

func (s *session) wakeWriter() {
	select {
	case s.wakeCh <- struct{}{}:
	default:
	}
}

// run serves the connection until it closes.
func (s *session) run() {
	defer s.finish()
	if err := s.handshake(); err != nil {
		return
	}
	if s.holdFor > 0 {
		s.holdProbe()
		return
	}
	s.readLoop()
}

func (s *session) finish() {
	s.ops.Wait() // every callback has run: nothing of this session is left in the store's queue
	if s.writing.Load() {
		<-s.writerDone
	} else {
		s.nc.Close()
	}
	s.srv.forget(s)
	if s.holdAddr != "" {
		s.srv.releaseHold(s.holdAddr)
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
	s.log.Log(context.Background(), lvl, "connection closed", "reason", name, "detail", s.detail,
		"duration", s.srv.now().Sub(s.accepted).Round(time.Millisecond))
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
		s.log.Error("login: store", "err", err)
		s.writeDirect(closeEnvelope(chatdpb.CloseReason_INTERNAL_ERROR, "store unavailable", 5*time.Second))
		s.close(chatdpb.CloseReason_INTERNAL_ERROR, "store unavailable", 5*time.Second)
		return err
	}

	s.phone = acct.Phone
	s.id = newSessionID()
	s.pingInterval = clampPing(time.Duration(hello.GetPingIntervalMs())*time.Millisecond, cfg.MinPingInterval)
	s.log = s.log.With("phone", acct.Phone, "session", s.id)
	s.out = make(chan *chatdpb.Envelope, 64)
	s.wakeCh = make(chan struct{}, 1)
	s.inflight = make(map[uint64]struct{})
	s.replyCh = make(chan struct{}, 1) // pipe and slots come with the first request (acquire)
	s.srv.known.add(acct.Phone)

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
	s.log.Info("logged in", "client", hello.GetClientVersion(), "path", hello.GetPath(), "ping_interval", s.pingInterval)

	// From here the writer owns the connection; it sends the login result first. Register the session,
	// then wake the writer for its first look at the queue: a message enqueued in between wakes it too.
	s.writing.Store(true)
	go s.writeLoop(&chatdpb.Envelope{Body: &chatdpb.Envelope_LoginResult{LoginResult: res}})
	s.srv.login(s)
	s.wakeWriter()
	return nil
}

var errProbeAnswered = errors.New("probe answered")

// probe answers a probe login (docs/protocol.md §4.3): RATE_LIMITED over the per-address limit;
// otherwise PROBE_OK, then either Close(PROBE_DONE) at once (it returns errProbeAnswered) or, when the
// probe asked for a hold and a held-probe slot is free, nothing: it returns nil with s.holdFor set, and
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
	s.holdAddr = addr // finish releases the slot
	res := &chatdpb.Envelope{Body: &chatdpb.Envelope_LoginResult{LoginResult: &chatdpb.LoginResult{
		Status: chatdpb.LoginResult_PROBE_OK, ServerTimeMs: srv.now().UnixMilli(), MaxFrame: wire.MaxFrame}}}
	if err := s.writeDirect(res); err != nil {
		s.close(readReason(err, chatdpb.CloseReason_WRITE_TIMEOUT), err.Error(), 0)
		return err
	}
	s.holdFor = hold + srv.cfg.ProbeHoldGrace
	s.log.Debug("probe held", "hold", hold, "client", hello.GetClientVersion(), "path", hello.GetPath())
	return nil
}

// holdProbe keeps a probe's connection open and silent after its PROBE_OK for s.holdFor, on the
// handler goroutine and a timer. The first frame from the client ends the hold: a Ping is answered
// with its Pong and Close(PROBE_DONE, "probe answered"); a Close is echoed (CLIENT_CLOSED); anything
// else is a protocol error. If none comes in time, the timer closes the probe with PROBE_DONE "probe
// hold elapsed" (on every transport: a read deadline would close a WebSocket before the Close frame).
// Every close of a held probe writes its own Close frame (closeWith).
func (s *session) holdProbe() {
	s.nc.SetDeadline(time.Time{}) // the handshake deadline; writes set their own
	s.holding.Store(true)
	// A close that came before holding was set closed the connection, so the read below fails.
	t := time.AfterFunc(s.holdFor, func() {
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

// writeDirect writes envelopes before the writer goroutine exists.
func (s *session) writeDirect(envs ...*chatdpb.Envelope) error {
	return s.writeDirectWithin(s.srv.cfg.WriteTimeout, envs...)
}

// writeDirectWithin is writeDirect with a write deadline of timeout.
func (s *session) writeDirectWithin(timeout time.Duration, envs ...*chatdpb.Envelope) error {
	var buf, scratch []byte
	var err error
	for _, env := range envs {
		if buf, scratch, err = s.conn.AppendEnvelope(buf, scratch, env); err != nil {
			return err
		}
	}
	s.nc.SetWriteDeadline(time.Now().Add(timeout))
	_, err = s.nc.Write(buf)
	return err
}

func (s *session) readLoop() {
	timeout := 2*s.pingInterval + s.srv.cfg.PongTimeout
	var env chatdpb.Envelope
	for {
		s.nc.SetReadDeadline(time.Now().Add(timeout))
		b, err := s.conn.ReadFrame()
		if err != nil {
			if isTimeout(err) {
				s.close(chatdpb.CloseReason_IDLE_TIMEOUT, fmt.Sprintf("no frame for %v (ping interval %v)", timeout, s.pingInterval), 0)
			} else {
				s.close(frameErrReason(err), err.Error(), 0)
			}
			return
		}
		if err := wire.DecodeEnvelope(b, &env); err != nil {
			s.close(chatdpb.CloseReason_PROTOCOL_ERROR, err.Error(), 0)
			return
		}
		if err := s.handle(&env); err != nil {
			if !errors.Is(err, errSessionClosed) {
				s.close(chatdpb.CloseReason_PROTOCOL_ERROR, err.Error(), 0)
			}
			return
		}
	}
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

// reply queues env for the writer.
func (s *session) reply(env *chatdpb.Envelope) error {
	select {
	case s.out <- env:
		return nil
	case <-s.done:
		return errSessionClosed
	}
}

func (s *session) handle(env *chatdpb.Envelope) error {
	ctx := context.Background()
	switch b := env.Body.(type) {
	case *chatdpb.Envelope_Ping:
		return s.reply(&chatdpb.Envelope{Body: &chatdpb.Envelope_Pong{Pong: &chatdpb.Pong{Id: b.Ping.GetId()}}})
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
	select {
	case s.slots <- struct{}{}:
		return nil
	case <-s.done:
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
	if queued {
		s.replies = append(s.replies, reply)
	}
	s.mu.Unlock()
	if queued {
		s.signalReplies()
	} else {
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

func (s *session) signalReplies() {
	select {
	case s.replyCh <- struct{}{}:
	default:
	}
}

// replyInOrder queues a reply that needs no store write (reader, holding a slot) behind the replies of
// the writes already pending, so that it keeps its place.
func (s *session) replyInOrder(env *chatdpb.Envelope) error {
	s.mu.Lock()
	if s.storeOps == 0 { // every earlier reply is in s.replies already
		s.replies = append(s.replies, env)
		s.mu.Unlock()
		s.signalReplies()
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
			s.srv.wake(to)
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
	ids := make([]int64, len(seqs))
	for i, q := range seqs {
		ids[i] = int64(q)
	}
	s.beginOp()
	err := s.pipe.AckBatchAsync(ctx, s.phone, ids, func(notify []string, err error) {
		if err == nil {
			s.srv.events.delivered.Add(float64(len(seqs)))
			s.srv.wake(notify...)
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
	err := s.pipe.MarkReadAsync(ctx, s.phone, ids, func(notify []string, err error) {
		if err == nil {
			s.srv.events.read.Add(float64(len(notify)))
			s.srv.wake(notify...)
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
	s.log.Error("store failed", "op", op, "err", err)
	s.close(chatdpb.CloseReason_INTERNAL_ERROR, "store unavailable", 5*time.Second)
	return errSessionClosed
}

// maxBatch is how many bytes the writer gathers before it writes.
const maxBatch = 64 << 10

// fetchLimit is the most deliveries fetched from the store at once.
const fetchLimit = 256

// writeLoop owns every write after login: it drains replies and fetches pending deliveries, writes them
// in one batch, and on close sends the Close frame and closes the connection.
func (s *session) writeLoop(first *chatdpb.Envelope) {
	defer close(s.writerDone)
	defer s.nc.Close()
	var (
		buf, scratch []byte
		lastSeq      int64
		err          error
	)
	for {
		fetch := false
		if first != nil {
			if buf, scratch, err = s.conn.AppendEnvelope(buf, scratch, first); err != nil {
				s.close(chatdpb.CloseReason_INTERNAL_ERROR, err.Error(), 0)
			}
			first = nil
		}
		select {
		case <-s.done:
			s.writeClose(buf, scratch) // buf may hold the login result, which must precede the Close
			return
		case env := <-s.out:
			if buf, scratch, err = s.conn.AppendEnvelope(buf, scratch, env); err != nil {
				s.close(chatdpb.CloseReason_INTERNAL_ERROR, err.Error(), 0)
				continue
			}
		case <-s.replyCh:
			if buf, scratch, err = s.appendReplies(buf, scratch); err != nil {
				s.close(chatdpb.CloseReason_INTERNAL_ERROR, err.Error(), 0)
				continue
			}
		case <-s.wakeCh:
			fetch = true
		}
	drain:
		for len(buf) < maxBatch {
			select {
			case env := <-s.out:
				if buf, scratch, err = s.conn.AppendEnvelope(buf, scratch, env); err != nil {
					s.close(chatdpb.CloseReason_INTERNAL_ERROR, err.Error(), 0)
					break drain
				}
			case <-s.replyCh:
				if buf, scratch, err = s.appendReplies(buf, scratch); err != nil {
					s.close(chatdpb.CloseReason_INTERNAL_ERROR, err.Error(), 0)
					break drain
				}
			case <-s.wakeCh:
				fetch = true
			default:
				break drain
			}
		}
		if fetch {
			if buf, scratch, lastSeq, err = s.appendPending(buf, scratch, lastSeq); err != nil {
				s.storeFailed("pending", err)
				continue
			}
		}
		if len(buf) == 0 {
			continue
		}
		s.nc.SetWriteDeadline(time.Now().Add(s.srv.cfg.WriteTimeout))
		if _, err := s.nc.Write(buf); err != nil {
			s.close(readReason(err, chatdpb.CloseReason_WRITE_TIMEOUT), err.Error(), 0)
			continue
		}
		buf = buf[:0]
		if cap(buf) > 2*maxBatch {
			buf = nil
		}
	}
}

// appendReplies takes every ordered reply waiting in s.replies, appends them in order and frees their
// requests' slots (writer).
func (s *session) appendReplies(buf, scratch []byte) ([]byte, []byte, error) {
	s.mu.Lock()
	rs := s.replies
	s.replies = s.spare[:0]
	s.mu.Unlock()
	var err error
	for _, env := range rs {
		if buf, scratch, err = s.conn.AppendEnvelope(buf, scratch, env); err != nil {
			break
		}
	}
	s.release(len(rs))
	clear(rs)
	if cap(rs) > 256 {
		rs = nil // a burst is over: do not keep its buffer for an idle session
	}
	s.spare = rs[:0]
	return buf, scratch, err
}

// appendPending appends the deliveries after lastSeq that fit in the in-flight window.
func (s *session) appendPending(buf, scratch []byte, lastSeq int64) ([]byte, []byte, int64, error) {
	s.mu.Lock()
	room := s.srv.cfg.MaxInflight - len(s.inflight)
	s.mu.Unlock()
	if room <= 0 {
		return buf, scratch, lastSeq, nil // handleAck wakes us when the window opens
	}
	limit := min(room, fetchLimit)
	items, err := s.srv.cfg.Store.Pending(context.Background(), s.phone, lastSeq, limit)
	if err != nil {
		return buf, scratch, lastSeq, err
	}
	s.mu.Lock()
	for _, it := range items {
		s.inflight[uint64(it.Seq)] = struct{}{}
	}
	s.mu.Unlock()
	for _, it := range items {
		if buf, scratch, err = s.conn.AppendEnvelope(buf, scratch, deliverEnvelope(it)); err != nil {
			return buf, scratch, lastSeq, err
		}
		lastSeq = it.Seq
	}
	if len(items) == limit {
		s.wakeWriter() // there may be more
	}
	return buf, scratch, lastSeq, nil
}

func (s *session) writeClose(buf, scratch []byte) {
	if s.reason == chatdpb.CloseReason_CONNECTION_LOST || s.reason == chatdpb.CloseReason_WRITE_TIMEOUT {
		return
	}
	buf, _, err := s.conn.AppendEnvelope(buf, scratch, closeEnvelope(s.reason, s.detail, s.retry))
	if err != nil {
		return
	}
	s.nc.SetWriteDeadline(time.Now().Add(time.Second))
	s.nc.Write(buf)
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
