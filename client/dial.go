package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/chatd-dev/chatd/transport"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// The dial policy (DESIGN §6, docs/protocol.md §1.5):
//
//   - The endpoints are put in order: the preferred (last good) one first, then the direct path (raw
//     chatd, 5222) and the 443 path (TLS, WebSocket) interleaved, so with one server: 5222, tls, ws.
//   - The first attempt starts at once. Each further one starts HeadStart (250 ms) after the previous
//     start, or at once when an attempt fails (a refused 5222 costs one round trip, not 250 ms).
//   - Every attempt gets ConnectTimeout (3 s) for its transport (TCP, proxy CONNECT, TLS, WebSocket
//     upgrade) and again for the Noise handshake up to the server's proof of the pinned key, so a
//     silently dropped port or a path that kills the chat stream is abandoned quickly.
//   - The first attempt whose server proved the pinned key may log in; the others wait at that point,
//     so that two connections never log in at once (a second login would replace the first, §4.5).
//     If the login fails, the next waiting attempt may try. The first login wins; the other attempts
//     are closed before they send their device key.
//   - Everything is bounded by DialTimeout (10 s).

// errRaceLost cancels the attempts that did not win.
var errRaceLost = errors.New("client: another endpoint won the race")

// attempt is one endpoint being dialled in a race.
type attempt struct {
	ep     transport.Endpoint
	proxy  string // the proxy (without password) the attempt goes through, "" when direct
	ctx    context.Context
	cancel context.CancelCauseFunc
	grant  chan struct{}   // closed when the attempt may log in
	over   <-chan struct{} // closed when the race has its result and reads no more events
	start  time.Time
}

// raceEvent is what an attempt reports to the race.
type raceEvent struct {
	a     *attempt
	ready bool // the server proved the pinned key; the attempt waits for its grant
	cn    *conn
	res   *chatdpb.LoginResult
	err   error
}

// won is the outcome of a race.
type won struct {
	cn    *conn
	res   *chatdpb.LoginResult
	ep    transport.Endpoint
	proxy string
	took  time.Duration
}

// plan returns the endpoints in the order they are tried.
func (c *Client) plan() []transport.Endpoint {
	c.mu.Lock()
	pref := c.lastGood
	c.mu.Unlock()
	notPref := func(ep transport.Endpoint) bool { return ep != pref }
	direct, via443 := filter(c.direct, notPref), filter(c.via443, notPref)
	out := make([]transport.Endpoint, 0, len(c.endpoints))
	if !pref.IsZero() && len(direct)+len(via443) < len(c.endpoints) {
		out = append(out, pref) // pref is one of the endpoints
	}
	for i := 0; i < max(len(direct), len(via443)); i++ {
		if i < len(direct) {
			out = append(out, direct[i])
		}
		if i < len(via443) {
			out = append(out, via443[i])
		}
	}
	return out
}

// splitPaths divides eps into the direct path (raw chatd not on a 443 port) and the 443 path, each in
// order.
func splitPaths(eps []transport.Endpoint) (direct, via443 []transport.Endpoint) {
	for _, ep := range eps {
		if transport.On443(ep, eps) {
			via443 = append(via443, ep)
		} else {
			direct = append(direct, ep)
		}
	}
	return direct, via443
}

func filter(eps []transport.Endpoint, keep func(transport.Endpoint) bool) []transport.Endpoint {
	var out []transport.Endpoint
	for _, ep := range eps {
		if keep(ep) {
			out = append(out, ep)
		}
	}
	return out
}

// race dials the endpoints as the dial policy says and returns the first logged-in connection.
func (c *Client) race(ctx context.Context) (won, error) {
	plan := c.plan()
	began := time.Now()
	rctx, cancel := context.WithTimeoutCause(ctx, c.cfg.DialTimeout,
		fmt.Errorf("no endpoint connected within %v", c.cfg.DialTimeout))
	defer cancel()

	events := make(chan raceEvent)
	over := make(chan struct{})
	var (
		wg       sync.WaitGroup
		started  []*attempt
		running  int
		holder   *attempt   // the attempt allowed to log in
		waiting  []*attempt // attempts whose server proved the key, in order
		finished = map[*attempt]bool{}
		failures []error
	)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	startNext := func() bool {
		if len(started) == len(plan) {
			return false
		}
		a := &attempt{ep: plan[len(started)], grant: make(chan struct{}), over: over, start: time.Now()}
		if u, err := c.dialer.ProxyFor(a.ep); err == nil && u != nil {
			a.proxy = u.Redacted()
		}
		a.ctx, a.cancel = context.WithCancelCause(rctx)
		started = append(started, a)
		running++
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.runAttempt(a, events)
		}()
		timer.Reset(c.cfg.HeadStart)
		return true
	}
	defer func() {
		// Losers: cancelled before they send their device key, their connections closed, their
		// goroutines gone before the winner is used.
		close(over)
		for _, a := range started {
			a.cancel(errRaceLost)
		}
		wg.Wait()
	}()
	grantNext := func() {
		if holder == nil && len(waiting) > 0 {
			holder, waiting = waiting[0], waiting[1:]
			close(holder.grant)
		}
	}

	startNext()
	for {
		select {
		case <-timer.C:
			startNext()
		case ev := <-events:
			a := ev.a
			if ev.ready {
				waiting = append(waiting, a)
				grantNext()
				continue
			}
			running--
			finished[a] = true
			if ev.err == nil {
				c.log.Debug("endpoint won", "endpoint", a.ep.String(), "proxy", a.proxy,
					"attempt_took", time.Since(a.start).Round(time.Microsecond), "took", time.Since(began).Round(time.Microsecond))
				return won{cn: ev.cn, res: ev.res, ep: a.ep, proxy: a.proxy, took: time.Since(began)}, nil
			}
			c.log.Debug("endpoint failed", "endpoint", a.ep.String(), "proxy", a.proxy, "err", ev.err,
				"after", time.Since(a.start).Round(time.Microsecond))
			if final(ev.err) {
				return won{}, ev.err // the server's own answer: the same on every path
			}
			failures = append(failures, ev.err)
			if holder == a {
				holder = nil
			}
			for i, w := range waiting {
				if w == a {
					waiting = append(waiting[:i], waiting[i+1:]...)
					break
				}
			}
			grantNext()
			if !startNext() && running == 0 {
				return won{}, raceError(nil, failures)
			}
		case <-rctx.Done():
			if ctx.Err() != nil {
				return won{}, ctx.Err()
			}
			var pending []string
			for _, a := range started {
				if !finished[a] {
					pending = append(pending, a.ep.String())
				}
			}
			for _, ep := range plan[len(started):] {
				pending = append(pending, ep.String()+" (not tried)")
			}
			return won{}, raceError(fmt.Errorf("%w; still without answer: %s", context.Cause(rctx), strings.Join(pending, ", ")), failures)
		}
	}
}

// final reports whether err is the server's answer to a login, which every path would get alike.
func final(err error) bool {
	var ce *CloseError
	return errors.Is(err, ErrUnknownDevice) || errors.Is(err, ErrUnsupportedVersion) || errors.As(err, &ce)
}

// raceError explains a race without a winner.
func raceError(head error, failures []error) error {
	if head == nil && len(failures) == 1 {
		return fmt.Errorf("client: %w", failures[0])
	}
	if head == nil {
		head = errors.New("no endpoint worked")
	}
	return fmt.Errorf("client: %w", errors.Join(append([]error{head}, failures...)...))
}

// phaseError is an attempt that overran the time for one of its steps.
type phaseError struct {
	ep    transport.Endpoint
	phase string
	limit time.Duration
}

func (e *phaseError) Error() string {
	switch e.phase {
	case "connect":
		return fmt.Sprintf("%s: no connection within %v (TCP, proxy, TLS, upgrade): the port may be dropped by a firewall", e.ep, e.limit)
	case "handshake":
		return fmt.Sprintf("%s: the chatd handshake got no answer within %v: the path takes TCP but not the chat stream", e.ep, e.limit)
	}
	return fmt.Sprintf("%s: no login result within %v", e.ep, e.limit)
}

func (e *phaseError) Timeout() bool { return true }

// runAttempt dials a.ep, runs the handshake, waits for its grant to log in, logs in, and reports.
// Whatever it cannot hand over, it closes.
func (c *Client) runAttempt(a *attempt, events chan<- raceEvent) {
	// send reports to the race. It waits on the race, not on a.ctx: an attempt whose own time ran
	// out (a.ctx cancelled) must still report its failure, or the race would wait for it.
	send := func(ev raceEvent) bool {
		ev.a = a
		select {
		case events <- ev:
			return true
		case <-a.over:
			return false
		}
	}
	var timer *time.Timer
	phase := func(name string) {
		if timer != nil {
			timer.Stop()
		}
		if name != "" {
			pe := &phaseError{ep: a.ep, phase: name, limit: c.cfg.ConnectTimeout}
			timer = time.AfterFunc(c.cfg.ConnectTimeout, func() { a.cancel(pe) })
		}
	}
	fail := func(err error) {
		phase("")
		var pe *phaseError
		if cause := context.Cause(a.ctx); errors.As(cause, &pe) {
			err = pe
		}
		send(raceEvent{err: err})
	}

	phase("connect")
	tc, err := c.dialer.Dial(a.ctx, a.ep)
	if err != nil {
		fail(err)
		return
	}
	phase("handshake")
	gate := &gateConn{Conn: tc, wait: func() error {
		phase("") // waiting for the grant does not count against the attempt
		if !send(raceEvent{ready: true}) {
			return context.Cause(a.ctx)
		}
		select {
		case <-a.grant:
		case <-a.ctx.Done():
			return context.Cause(a.ctx)
		}
		phase("login")
		return nil
	}}
	cn, res, err := c.login(a.ctx, gate, tc, path(a.ep, a.proxy != ""))
	phase("")
	if err == nil && a.ctx.Err() != nil {
		err = context.Cause(a.ctx)
	}
	if err != nil {
		tc.Close()
		if errors.Is(err, errRaceLost) {
			return
		}
		if a.ep.Transport == transport.TransportTCP && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)) {
			err = fmt.Errorf("%w (the stream was cut during the chatd handshake: a firewall or proxy that passes only TLS? the tls and ws transports get through those)", err)
		}
		fail(fmt.Errorf("%s: %w", a.ep, err))
		return
	}
	if !send(raceEvent{cn: cn, res: res}) {
		tc.Close()
	}
}

// gateConn holds the second write of the handshake — message 3, which carries the device key and
// logs in — until wait returns. noisesock.Client writes the preamble and message 1 in one write,
// reads and checks message 2 (the server's proof of the pinned key), then writes message 3, so wait
// runs exactly when the server has proved itself and before the login. Should the handshake ever
// write differently, wait only runs earlier: logins are still serialized.
type gateConn struct {
	net.Conn
	writes int
	wait   func() error // nil after it ran
}

func (g *gateConn) Write(p []byte) (int, error) {
	if g.wait != nil {
		g.writes++
		if g.writes == 2 {
			w := g.wait
			g.wait = nil
			if err := w(); err != nil {
				return 0, err
			}
		}
	}
	return g.Conn.Write(p)
}

// path is the ClientHello path of ep, for the server's logs: "tcp:5222", "tls:443", "ws:443".
func path(ep transport.Endpoint, proxied bool) string {
	s := ep.Transport + ":" + strconv.Itoa(ep.Port)
	if proxied {
		s += "+proxy"
	}
	return s
}
