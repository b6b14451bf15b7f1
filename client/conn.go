package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// errClientClosed ends a connection because Run's context ended; the writer says goodbye first.
var errClientClosed = errors.New("client: closed")

// conn is one logged-in connection: the reader runs in Run's goroutine, the writer in its own and owns
// every write after login.
type conn struct {
	// Static after construction.
	c  *Client
	nc net.Conn
	sc *noisesock.Conn
	// pingInterval is the configured interval, lowered to the one the server enforces.
	pingInterval time.Duration

	// resend holds the requests pending from earlier connections (attach); the writer sends them
	// first, before anything from out. Only the writer touches it once it runs.
	resend []*chatdpb.Envelope
	out    chan *chatdpb.Envelope // envelopes for the writer
	poke   chan struct{}          // capacity 1: acks are waiting

	ackMu sync.Mutex
	acks  []uint64 // delivery seqs to acknowledge; guarded by ackMu

	lastRecv atomic.Int64  // UnixNano of the last frame read; written by the reader
	pingID   atomic.Uint64 // id of the outstanding ping; written by the writer
	pingAt   atomic.Int64  // UnixNano it was sent

	closeOnce  sync.Once
	err        error         // why the connection ended; set once before done is closed
	done       chan struct{} // closed by close
	writerDone chan struct{}
}

// connectOnce races the endpoints (dial.go), then serves the winning connection until it ends. It
// returns how long the connection was logged in (0 if it never was) and why it ended.
func (c *Client) connectOnce(ctx context.Context) (time.Duration, error) {
	w, err := c.race(ctx)
	if err != nil {
		return 0, err
	}
	cn, res, ep := w.cn, w.res, w.ep
	loggedIn := time.Now()
	c.mu.Lock()
	if c.status.Phone != "" {
		c.status.Reconnects++
	}
	c.lastGood = ep
	c.status.Phone = res.GetPhone()
	c.status.Endpoint, c.status.Addr, c.status.Transport, c.status.Port = ep, ep.Addr(), ep.Transport, ep.Port
	c.status.Proxy, c.status.DialTime = w.proxy, w.took
	c.mu.Unlock()
	c.setState(Connected, "", "")
	c.mu.Lock()
	close(c.connected)
	c.mu.Unlock()
	c.log.Info("connected", "endpoint", ep.String(), "transport", ep.Transport, "port", ep.Port, "proxy", w.proxy,
		"took", w.took.Round(time.Microsecond), "phone", res.GetPhone(), "session", res.GetSessionId())

	stop := context.AfterFunc(ctx, func() { cn.close(errClientClosed) })
	defer stop()
	c.attach(cn)
	go cn.writeLoop()
	wctx, endWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		c.watchPaths(wctx, cn, ep)
	}()
	cn.close(cn.readLoop(ctx))
	endWatch()
	<-watched
	<-cn.writerDone
	c.detach(cn)
	if errors.Is(cn.err, errClientClosed) {
		return time.Since(loggedIn), nil
	}
	return time.Since(loggedIn), cn.err
}

// login runs the handshake on hs (nc, possibly behind the race's gate) and reads the LoginResult.
// ctx bounds both; when it ends, the blocked I/O fails and the caller closes nc.
func (c *Client) login(ctx context.Context, hs net.Conn, nc net.Conn, path string) (*conn, *chatdpb.LoginResult, error) {
	sc, _, err := noisesock.Client(ctx, hs, c.noiseConfig(path))
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { nc.SetReadDeadline(time.Unix(1, 0)) })
	b, err := sc.ReadFrame()
	if !stop() {
		return nil, nil, fmt.Errorf("client: waiting for login result: %w", context.Cause(ctx))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("client: waiting for login result: %w", err)
	}
	var env chatdpb.Envelope
	if err := wire.DecodeEnvelope(b, &env); err != nil {
		return nil, nil, fmt.Errorf("client: login result: %w", err)
	}
	res := env.GetLoginResult()
	if res == nil {
		if cl := env.GetClose(); cl != nil {
			return nil, nil, closeError(cl)
		}
		return nil, nil, fmt.Errorf("client: expected a login result, got %T", env.Body)
	}
	switch res.GetStatus() {
	case chatdpb.LoginResult_OK:
	case chatdpb.LoginResult_UNKNOWN_DEVICE:
		return nil, nil, ErrUnknownDevice
	case chatdpb.LoginResult_UNSUPPORTED_VERSION:
		return nil, nil, ErrUnsupportedVersion
	default:
		return nil, nil, fmt.Errorf("client: login failed: %v", res.GetStatus())
	}
	nc.SetDeadline(time.Time{})
	cn := &conn{
		c:            c,
		nc:           nc,
		sc:           sc,
		pingInterval: c.cfg.PingInterval,
		out:          make(chan *chatdpb.Envelope, 256),
		poke:         make(chan struct{}, 1),
		done:         make(chan struct{}),
		writerDone:   make(chan struct{}),
	}
	if srv := time.Duration(res.GetPingIntervalMs()) * time.Millisecond; srv > 0 && cn.pingInterval > srv {
		cn.pingInterval = srv // the server clamped ours: ping as often as it expects
	}
	cn.lastRecv.Store(time.Now().UnixNano())
	return cn, res, nil
}

// noiseConfig is the handshake configuration; path is the ClientHello path for the server's logs.
func (c *Client) noiseConfig(path string) noisesock.ClientConfig {
	interval := c.cfg.PingInterval
	if interval < 0 {
		interval = 0 // announce nothing: the server applies its default
	}
	return noisesock.ClientConfig{
		DeviceKey: c.cfg.DeviceKey,
		ServerKey: c.cfg.ServerKey,
		Hello: &chatdpb.ClientHello{
			ProtocolVersion: wire.Version,
			ClientVersion:   c.cfg.ClientVersion,
			PingIntervalMs:  uint32(interval / time.Millisecond),
			Path:            path,
		},
	}
}

func closeError(cl *chatdpb.Close) *CloseError {
	return &CloseError{Reason: cl.GetReason(), Detail: cl.GetDetail(),
		RetryAfter: time.Duration(cl.GetRetryAfterMs()) * time.Millisecond}
}

// close ends the connection with err (the first call wins). Except for a goodbye, the connection is
// closed at once, which unblocks both goroutines.
func (cn *conn) close(err error) {
	cn.closeOnce.Do(func() {
		cn.err = err
		close(cn.done)
		if !goodbye(err) {
			cn.nc.Close()
		}
	})
}

// goodbye reports whether a connection ending with err says goodbye to the server before closing.
func goodbye(err error) bool { return errors.Is(err, errClientClosed) || errors.Is(err, errMoving) }

// enqueue hands env to the writer; it gives up when the connection ends (the request stays pending
// and goes out on the next connection).
func (cn *conn) enqueue(env *chatdpb.Envelope) {
	select {
	case cn.out <- env:
	case <-cn.done:
	}
}

func (cn *conn) ack(seq uint64) {
	cn.ackMu.Lock()
	cn.acks = append(cn.acks, seq)
	cn.ackMu.Unlock()
	select {
	case cn.poke <- struct{}{}:
	default:
	}
}

func (cn *conn) readLoop(ctx context.Context) error {
	c := cn.c
	var env chatdpb.Envelope
	for {
		b, err := cn.sc.ReadFrame()
		if err != nil {
			select {
			case <-cn.done:
				return cn.err
			default:
			}
			return fmt.Errorf("client: read: %w", err)
		}
		now := time.Now()
		cn.lastRecv.Store(now.UnixNano())
		if err := wire.DecodeEnvelope(b, &env); err != nil {
			return err
		}
		switch body := env.Body.(type) {
		case *chatdpb.Envelope_Pong:
			if body.Pong.GetId() == cn.pingID.Load() {
				rtt := now.Sub(time.Unix(0, cn.pingAt.Load()))
				c.mu.Lock()
				c.status.RTT = rtt
				c.mu.Unlock()
			}
		case *chatdpb.Envelope_Ping:
			cn.enqueue(&chatdpb.Envelope{Body: &chatdpb.Envelope_Pong{Pong: &chatdpb.Pong{Id: body.Ping.GetId()}}})
		case *chatdpb.Envelope_SendAck:
			a := body.SendAck
			key := "send:" + a.GetClientId()
			switch a.GetStatus() {
			case chatdpb.SendAck_STORED, chatdpb.SendAck_DUPLICATE:
				c.resolve(key, SendResult{
					ServerID:  a.GetServerId(),
					Timestamp: time.UnixMilli(a.GetTimestampMs()),
					Duplicate: a.GetStatus() == chatdpb.SendAck_DUPLICATE,
				}, nil)
			case chatdpb.SendAck_UNKNOWN_RECIPIENT:
				c.resolve(key, nil, fmt.Errorf("%w: %s", ErrUnknownRecipient, a.GetDetail()))
			default:
				c.resolve(key, nil, fmt.Errorf("%w: %s", ErrRejected, a.GetDetail()))
			}
		case *chatdpb.Envelope_Deliver:
			if err := cn.deliver(ctx, body.Deliver); err != nil {
				return err
			}
		case *chatdpb.Envelope_MarkReadAck:
			c.resolve(fmt.Sprintf("req:%d", body.MarkReadAck.GetRequestId()), nil, nil)
		case *chatdpb.Envelope_ContactResult:
			c.resolve(fmt.Sprintf("req:%d", body.ContactResult.GetRequestId()), body.ContactResult.GetContacts(), nil)
		case *chatdpb.Envelope_Error:
			e := body.Error
			c.resolve(fmt.Sprintf("req:%d", e.GetRequestId()), nil, fmt.Errorf("%w: %s: %s", ErrRejected, e.GetCode(), e.GetMessage()))
		case *chatdpb.Envelope_Close:
			return closeError(body.Close)
		default:
			return fmt.Errorf("client: unexpected %T from server", env.Body)
		}
	}
}

// deliver passes a delivery to the Handler and acknowledges it once the Handler has it.
// deliver hands a delivery to the handler and acknowledges it when the handler reports it stored. A
// failure ends the connection, so that the server sends what was not acknowledged again.
func (cn *conn) deliver(ctx context.Context, d *chatdpb.Deliver) error {
	h := cn.c.handler
	seq := d.GetSeq()
	switch item := d.Item.(type) {
	case *chatdpb.Deliver_Message:
		id := item.Message.GetServerId()
		if cn.c.dedup.seen(id) {
			cn.ack(seq)
			return nil
		}
		h.HandleMessageAsync(ctx, item.Message, func(err error) {
			if err != nil {
				cn.close(fmt.Errorf("client: handler refused message %d: %w", id, err))
				return
			}
			cn.c.dedup.add(id)
			cn.ack(seq)
		})
	case *chatdpb.Deliver_Receipt:
		h.HandleReceiptAsync(ctx, item.Receipt, func(err error) {
			if err != nil {
				cn.close(fmt.Errorf("client: handler refused receipt: %w", err))
				return
			}
			cn.ack(seq)
		})
	default:
		cn.ack(seq)
	}
	return nil
}

// writeLoop owns writes: it batches queued envelopes and acks into one write, and pings when the
// connection was quiet for a (jittered) ping interval in either direction.
func (cn *conn) writeLoop() {
	defer close(cn.writerDone)
	defer cn.nc.Close()
	cfg := &cn.c.cfg
	var (
		buf, scratch []byte
		err          error
		lastSend     = time.Now()
		pingSent     time.Time // zero when no ping is outstanding
		nextPing     uint64
	)
	// The ping timer fires when a ping may be due or an outstanding one times out; it never fires
	// when pings are off.
	interval := cn.jitteredInterval()
	timer := time.NewTimer(interval)
	defer timer.Stop()
	timerC := timer.C
	if cfg.PingInterval <= 0 {
		timer.Stop()
		timerC = nil
	}
	resetTimer := func(d time.Duration) { timer.Reset(d) }
	appendEnv := func(env *chatdpb.Envelope) bool {
		if buf, scratch, err = cn.sc.AppendEnvelope(buf, scratch, env); err != nil {
			cn.close(fmt.Errorf("client: encoding %T: %w", env.Body, err))
			return false
		}
		return true
	}
	// Requests pending from earlier connections go first, in order, in writes of about 64 KiB. Putting
	// them in cn.out instead could block: there may be more than it holds.
	for len(cn.resend) > 0 && err == nil {
		buf = buf[:0]
		for len(cn.resend) > 0 && len(buf) < 64<<10 {
			if !appendEnv(cn.resend[0]) {
				break
			}
			cn.resend[0] = nil
			cn.resend = cn.resend[1:]
		}
		cn.nc.SetWriteDeadline(time.Now().Add(cfg.DialTimeout))
		if _, err = cn.nc.Write(buf); err != nil {
			cn.close(fmt.Errorf("client: write: %w", err))
		}
		lastSend = time.Now()
	}
	cn.resend = nil
	for {
		buf = buf[:0]
		select {
		case <-cn.done:
			if goodbye(cn.err) {
				detail := "client closing"
				if errors.Is(cn.err, errMoving) {
					detail = "moving to the direct path"
				}
				appendEnv(&chatdpb.Envelope{Body: &chatdpb.Envelope_Close{Close: &chatdpb.Close{
					Reason: chatdpb.CloseReason_CLIENT_CLOSED, Detail: detail}}})
				cn.nc.SetWriteDeadline(time.Now().Add(time.Second))
				cn.nc.Write(buf)
			}
			return
		case env := <-cn.out:
			if !appendEnv(env) {
				continue
			}
		case <-cn.poke:
		case <-timerC:
			now := time.Now()
			if !pingSent.IsZero() {
				if cn.lastRecv.Load() <= pingSent.UnixNano() {
					if now.Sub(pingSent) >= cfg.PongTimeout {
						cn.close(fmt.Errorf("%w after %v", ErrPongTimeout, cfg.PongTimeout))
						continue
					}
					resetTimer(pingSent.Add(cfg.PongTimeout).Sub(now))
					continue
				}
				pingSent = time.Time{}
			}
			// Ping when either direction was quiet for the interval: sent frames keep middleboxes and the
			// server's idle timer happy, received ones prove the path still works.
			idle := max(now.Sub(lastSend), now.Sub(time.Unix(0, cn.lastRecv.Load())))
			if idle < interval {
				resetTimer(interval - idle)
				continue
			}
			nextPing++
			cn.pingID.Store(nextPing)
			cn.pingAt.Store(now.UnixNano())
			pingSent = now
			interval = cn.jitteredInterval()
			// Look again when the pong is overdue, or earlier when the next ping may be due.
			resetTimer(min(cfg.PongTimeout, interval))
			if !appendEnv(&chatdpb.Envelope{Body: &chatdpb.Envelope_Ping{Ping: &chatdpb.Ping{Id: nextPing}}}) {
				continue
			}
		}
	drain:
		for len(buf) < 64<<10 {
			select {
			case env := <-cn.out:
				if !appendEnv(env) {
					break drain
				}
			default:
				break drain
			}
		}
		cn.ackMu.Lock()
		acks := cn.acks
		cn.acks = nil
		cn.ackMu.Unlock()
		for len(acks) > 0 {
			n := min(len(acks), wire.MaxSeqsPerAck)
			appendEnv(&chatdpb.Envelope{Body: &chatdpb.Envelope_DeliverAck{DeliverAck: &chatdpb.DeliverAck{Seqs: acks[:n]}}})
			acks = acks[n:]
		}
		if len(buf) == 0 {
			continue
		}
		cn.nc.SetWriteDeadline(time.Now().Add(cfg.DialTimeout))
		if _, err := cn.nc.Write(buf); err != nil {
			cn.close(fmt.Errorf("client: write: %w", err))
			continue
		}
		lastSend = time.Now()
	}
}

func (cn *conn) jitteredInterval() time.Duration {
	if cn.pingInterval <= 0 {
		return 0
	}
	j := min(cn.c.cfg.PingJitter, cn.pingInterval/5)
	return cn.pingInterval - j + rand.N(2*j+1)
}
