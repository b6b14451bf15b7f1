package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/client/regclient"
)

var listenHelp = help{
	usage: "chat listen [--read] [--echo] [flags]",
	about: `Stays connected and prints every message as it arrives:

  [15:04:05] +15551234567: hello (id 42)

and every receipt for messages this number sent ("✓ delivered", "✓✓ read"). Each delivery is stored in
the inbox before the server is told it arrived, so nothing is lost when chat stops. The connection is
kept alive and re-established after network trouble; connection changes are reported on stderr.

--read sends a read receipt for every message (also for unread ones already in the inbox), and --echo
answers each text message with "echo: <text>" (an automatic correspondent for demos and tests;
messages starting with "echo: " are not answered, so two echoing clients do not loop).

Ctrl-C (or SIGTERM) stops it after saying goodbye to the server.`,
	examples: `  chat listen
  chat listen --read --echo      # a demo customer that answers everything
  chat --profile ~/.chat-bob listen`,
}

func (a *app) cmdListen(ctx context.Context, args []string) error {
	fset, profile := a.flags("listen", listenHelp)
	read := fset.Bool("read", false, "send a read receipt for every message")
	echo := fset.Bool("echo", false, `answer every text message with "echo: <text>"`)
	verbose := verboseFlag(fset)
	pos, err := a.parse(fset, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	dir := *profile
	prof, in, done, err := a.open(dir)
	if err != nil {
		return err
	}
	defer done()
	if err := a.refresh(ctx, dir, prof); err != nil {
		return err
	}

	h := newHandler(in, a.con, true)
	r := &responder{in: in, con: a.con, read: *read, echo: *echo, wake: make(chan struct{}, 1)}
	if *read || *echo {
		h.onMessage = r.push
	}
	s, err := a.connect(ctx, prof, h, connectOpts{wait: true, printStatus: true, verbose: *verbose})
	if err != nil {
		if ctx.Err() != nil {
			return nil // Ctrl-C while connecting
		}
		return err
	}
	a.con.Noticef("listening as %s; Ctrl-C to stop", plus(prof.Phone))
	if *read {
		for _, e := range in.Unread() {
			r.pushRead(e.ServerID)
		}
	}
	rctx, stopResponder := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { r.run(rctx, s) })
	select {
	case <-ctx.Done():
	case <-s.done:
	}
	stopResponder()
	wg.Wait()
	s.close()
	if err := s.err(); err != nil {
		return err
	}
	a.con.Noticef("stopped")
	return nil
}

// refresh updates the profile's configuration from the server at start-up (N7); when HTTPS is
// unreachable the saved configuration is used and the problem reported.
func (a *app) refresh(ctx context.Context, dir string, prof *Profile) error {
	changed, err := a.refreshConfig(ctx, dir, prof)
	switch {
	case err == nil && changed:
		a.con.Noticef("the server's chat endpoints changed; now %s", strings.Join(prof.ChatEndpoints, ", "))
	case errors.As(err, new(*keyChangedError)):
		return err
	case err != nil:
		var te *regclient.TLSError
		if errors.As(err, &te) {
			err = fmt.Errorf("%s: %s", te.Problem, te.Fix)
		}
		a.con.Noticef("cannot refresh the configuration from %s (%s); using the saved one", prof.Server, userText(err))
	}
	return nil
}

// responder sends the read receipts and echoes of listen --read/--echo. The connection's reader
// hands it messages (push must not block and the client must not be called from the reader: its
// requests wait for answers that the reader itself reads).
type responder struct {
	in         *Inbox
	con        *console
	read, echo bool

	mu    sync.Mutex
	queue []Entry // guarded by mu
	reads []uint64
	wake  chan struct{} // capacity 1
}

func (r *responder) push(e Entry) {
	r.mu.Lock()
	r.queue = append(r.queue, e)
	r.mu.Unlock()
	r.poke()
}

func (r *responder) pushRead(id uint64) {
	r.mu.Lock()
	r.reads = append(r.reads, id)
	r.mu.Unlock()
	r.poke()
}

func (r *responder) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *responder) run(ctx context.Context, s *session) {
	for {
		r.mu.Lock()
		queue, reads := r.queue, r.reads
		r.queue, r.reads = nil, nil
		r.mu.Unlock()
		if len(queue) == 0 && len(reads) == 0 {
			select {
			case <-r.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		for _, e := range queue {
			if r.echo {
				r.answer(ctx, s, e)
			}
			if r.read {
				reads = append(reads, e.ServerID)
			}
		}
		if len(reads) > 0 {
			if err := markRead(ctx, s, r.in, reads); err != nil {
				if ctx.Err() != nil {
					return
				}
				r.con.Noticef("chat: read receipts for %s: %v", joinIDs(reads), err)
			}
		}
	}
}

// echoPrefix starts every echo; messages that start with it are not echoed.
const echoPrefix = "echo: "

func (r *responder) answer(ctx context.Context, s *session, e Entry) {
	if e.Text == "" || strings.HasPrefix(e.Text, echoPrefix) {
		return
	}
	text := echoPrefix + e.Text
	// The client id is derived from the message, so an echo sent again is stored once.
	clientID := fmt.Sprintf("echo-%d", e.ServerID)
	err := s.call(ctx, func(ctx context.Context) error {
		res, err := s.c.Send(ctx, e.From, clientID, textContent(text))
		if err == nil {
			r.con.Printf("[%s] → %s: %s (id %d)", stamp(res.Timestamp, time.Now()), plus(e.From), safe(text), res.ServerID)
		}
		return err
	})
	if err != nil && ctx.Err() == nil {
		r.con.Noticef("chat: echo to %s: %v", plus(e.From), err)
	}
}
