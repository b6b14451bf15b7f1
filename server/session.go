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

	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/phone"
	"github.com/chatd-dev/chatd/server/store"
	"github.com/chatd-dev/chatd/transport"
	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// session is one chat connection. The handler goroutine runs the handshake and then the read loop;
// after login a second goroutine, the writer, owns every write to the connection.
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

	mu       sync.Mutex
	inflight map[uint64]struct{} // deliveries sent and not acked; guarded by mu
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
// runs, close closes the connection itself.
func (s *session) close(reason chatdpb.CloseReason, detail string, retryAfter time.Duration) {
	s.closeOnce.Do(func() {
		s.reason, s.detail, s.retry = reason, detail, retryAfter
		close(s.done)
		if !s.writing.Load() {
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
	s.readLoop()
}

func (s *session) finish() {
	if s.writing.Load() {
		<-s.writerDone
	} else {
		s.nc.Close()
	}
	s.srv.forget(s)
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
		s.srv.metrics.logins.WithLabelValues("probe").Inc()
		s.reject(chatdpb.LoginResult_PROBE_OK, chatdpb.CloseReason_PROBE_DONE, "probe answered")
		return errors.New("probe")
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
	var buf, scratch []byte
	var err error
	for _, env := range envs {
		if buf, scratch, err = s.conn.AppendEnvelope(buf, scratch, env); err != nil {
			return err
		}
	}
	s.nc.SetWriteDeadline(s.srv.now().Add(s.srv.cfg.WriteTimeout))
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
			switch {
			case isTimeout(err):
				s.close(chatdpb.CloseReason_IDLE_TIMEOUT, fmt.Sprintf("no frame for %v (ping interval %v)", timeout, s.pingInterval), 0)
			case errors.Is(err, wire.ErrFrameTooLarge):
				s.close(chatdpb.CloseReason_FRAME_TOO_LARGE, err.Error(), 0)
			case errors.Is(err, noisesock.ErrDecrypt):
				s.close(chatdpb.CloseReason_DECRYPT_FAILED, err.Error(), 0)
			default:
				s.close(chatdpb.CloseReason_CONNECTION_LOST, err.Error(), 0)
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

func (s *session) handleSend(ctx context.Context, m *chatdpb.Send) error {
	ack := &chatdpb.SendAck{ClientId: m.GetClientId()}
	send := func() error {
		return s.reply(&chatdpb.Envelope{Body: &chatdpb.Envelope_SendAck{SendAck: ack}})
	}
	invalid := func(detail string) error {
		s.srv.metrics.messages.WithLabelValues("invalid").Inc()
		ack.Status, ack.Detail = chatdpb.SendAck_INVALID, detail
		return send()
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
	if _, err := s.srv.cfg.Store.Account(ctx, to); err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			return s.storeFailed("send: account lookup", err)
		}
		s.srv.metrics.messages.WithLabelValues("unknown_recipient").Inc()
		ack.Status, ack.Detail = chatdpb.SendAck_UNKNOWN_RECIPIENT, to+" is not registered"
		return send()
	}
	saved, dup, err := s.srv.cfg.Store.SaveMessage(ctx, store.Message{
		From: s.phone, To: to, ClientID: m.GetClientId(),
		ContentVersion: m.GetContent().GetVersion(), Content: m.GetContent().GetBody(),
	})
	if err != nil {
		return s.storeFailed("send: save", err)
	}
	ack.ServerId, ack.TimestampMs = uint64(saved.ID), saved.CreatedAt.UnixMilli()
	if dup {
		s.srv.metrics.messages.WithLabelValues("duplicate").Inc()
		ack.Status = chatdpb.SendAck_DUPLICATE
	} else {
		s.srv.metrics.messages.WithLabelValues("stored").Inc()
		ack.Status = chatdpb.SendAck_STORED
		s.srv.wake(to)
	}
	return send()
}

func (s *session) handleAck(ctx context.Context, seqs []uint64) error {
	if len(seqs) > wire.MaxSeqsPerAck {
		return fmt.Errorf("deliver ack with %d seqs exceeds %d", len(seqs), wire.MaxSeqsPerAck)
	}
	ids := make([]int64, len(seqs))
	for i, q := range seqs {
		ids[i] = int64(q)
	}
	notify, err := s.srv.cfg.Store.AckBatch(ctx, s.phone, ids)
	if err != nil {
		return s.storeFailed("ack", err)
	}
	s.srv.metrics.messages.WithLabelValues("delivered").Add(float64(len(seqs)))
	s.srv.wake(notify...)
	s.mu.Lock()
	wasFull := len(s.inflight) >= s.srv.cfg.MaxInflight
	for _, q := range seqs {
		delete(s.inflight, q)
	}
	s.mu.Unlock()
	if wasFull {
		s.wakeWriter()
	}
	return nil
}

func (s *session) handleMarkRead(ctx context.Context, m *chatdpb.MarkRead) error {
	if len(m.GetServerIds()) > wire.MaxIDsPerMarkRead {
		return s.replyError(m.GetRequestId(), "too_many_ids", fmt.Sprintf("at most %d ids per read mark", wire.MaxIDsPerMarkRead))
	}
	ids := make([]int64, len(m.GetServerIds()))
	for i, id := range m.GetServerIds() {
		ids[i] = int64(id)
	}
	notify, err := s.srv.cfg.Store.MarkRead(ctx, s.phone, ids)
	if err != nil {
		return s.storeFailed("mark read", err)
	}
	s.srv.metrics.messages.WithLabelValues("read").Add(float64(len(notify)))
	s.srv.wake(notify...)
	return s.reply(&chatdpb.Envelope{Body: &chatdpb.Envelope_MarkReadAck{MarkReadAck: &chatdpb.MarkReadAck{RequestId: m.GetRequestId()}}})
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
	businesses, err := s.businessSenders(items)
	if err != nil {
		return buf, scratch, lastSeq, err
	}
	s.mu.Lock()
	for _, it := range items {
		s.inflight[uint64(it.Seq)] = struct{}{}
	}
	s.mu.Unlock()
	for _, it := range items {
		if buf, scratch, err = s.conn.AppendEnvelope(buf, scratch, deliverEnvelope(it, businesses[it.Message.From])); err != nil {
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

// businessSenders reports which senders of the messages in items are business accounts.
func (s *session) businessSenders(items []store.Item) (map[string]bool, error) {
	var senders []string
	seen := map[string]bool{}
	for _, it := range items {
		if it.Kind == store.ItemMessage && !seen[it.Message.From] {
			seen[it.Message.From] = true
			senders = append(senders, it.Message.From)
		}
	}
	if len(senders) == 0 {
		return nil, nil
	}
	accts, err := s.srv.cfg.Store.LookupAccounts(context.Background(), senders)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(accts))
	for p, a := range accts {
		out[p] = a.Business
	}
	return out, nil
}

func deliverEnvelope(it store.Item, fromBusiness bool) *chatdpb.Envelope {
	d := &chatdpb.Deliver{Seq: uint64(it.Seq)}
	switch it.Kind {
	case store.ItemMessage:
		m := it.Message
		d.Item = &chatdpb.Deliver_Message{Message: &chatdpb.Message{
			ServerId:     uint64(m.ID),
			From:         m.From,
			TimestampMs:  m.CreatedAt.UnixMilli(),
			Content:      &chatdpb.Content{Version: m.ContentVersion, Body: m.Content},
			FromBusiness: fromBusiness,
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
