package main

import (
	"bufio"
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/phone"
	"github.com/chatd-dev/chatd/wire"
)

var interactiveHelp = help{
	usage: "chat [interactive] [flags]",
	about: `A line-oriented chat session: arriving messages and receipts are printed as they come, and each line
you type is a command or a message to the current peer:

  /to <phone>         talk to this number from now on
  <text>              send text to the current peer ("//text" sends "/text")
  /read [id...]       send read receipts for these messages, or for every unread one
  /lookup <phone>...  is a number registered? a business?
  /status             the connection
  /help               this list
  /quit               leave (also Ctrl-D or Ctrl-C)

Messages are sent in the background: "✓ sent" follows when the server stored one. On leaving, chat
waits up to 10 s for messages not yet stored.`,
	examples: `  chat
  chat --profile ~/.chat-bob interactive`,
}

// interactiveCommands is the /help text.
const interactiveCommands = `commands: /to <phone>, <text> (sends to the current peer), /read [id...], /lookup <phone>..., /status, /help, /quit`

func (a *app) cmdInteractive(ctx context.Context, args []string) error {
	fset, profile := a.flags("interactive", interactiveHelp)
	to := fset.String("to", "", "the peer `NUMBER` to talk to at start (as /to)")
	verbose := verboseFlag(fset)
	pos, err := a.parse(fset, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q (interactive mode reads commands from its input; see chat help)", pos[0])
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
	s, err := a.connect(ctx, prof, newHandler(in, a.con, true), connectOpts{printStatus: true, verbose: *verbose})
	if err != nil {
		return err
	}
	defer s.close()
	is := &interactive{a: a, s: s, in: in, ctx: ctx}
	a.con.Noticef("chat as %s on %s; %s", plus(prof.Phone), prof.Server, interactiveCommands)
	if *to != "" {
		is.command("/to " + *to)
	}

	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(a.stdin)
		sc.Buffer(make([]byte, 0, 64<<10), wire.MaxContentLen)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
loop:
	for {
		select {
		case line, ok := <-lines:
			if !ok || !is.command(line) {
				break loop
			}
		case <-ctx.Done():
			break loop
		case <-s.done:
			return s.err()
		}
	}
	is.finish()
	return s.err()
}

// interactive is the state of an interactive session. Commands run on the input goroutine; sends,
// read marks and lookups run in the background.
type interactive struct {
	a   *app
	s   *session
	in  *Inbox
	ctx context.Context

	peer string         // current peer, E.164 digits; owned by the input goroutine
	wg   sync.WaitGroup // background requests
	sent sync.Map       // clientID → struct{}: sends not yet stored
}

// command runs one input line and reports whether to go on.
func (is *interactive) command(line string) bool {
	con := is.a.con
	line = strings.TrimSpace(line)
	if line == "" {
		return true
	}
	if !strings.HasPrefix(line, "/") || strings.HasPrefix(line, "//") {
		if strings.HasPrefix(line, "//") {
			line = line[1:]
		}
		if is.peer == "" {
			con.Noticef("no peer yet: /to +15551234567 chooses who gets your messages")
			return true
		}
		is.send(is.peer, line)
		return true
	}
	cmd, rest, _ := strings.Cut(line, " ")
	args := strings.Fields(rest)
	switch cmd {
	case "/quit", "/exit", "/q":
		return false
	case "/help", "/?":
		con.Noticef("%s", interactiveCommands)
	case "/to":
		if len(args) != 1 {
			con.Noticef("usage: /to +15551234567")
			return true
		}
		p, err := phone.Normalize(args[0])
		if err != nil {
			con.Noticef("%q: %v", args[0], err)
			return true
		}
		is.peer = p
		con.Noticef("talking to %s", plus(p))
		is.background(func(ctx context.Context) {
			cs, err := lookup(ctx, is.s, []string{p})
			if err == nil && len(cs) == 1 && !cs[0].GetRegistered() {
				con.Noticef("note: %s is not registered on this server; messages to it will be refused", plus(p))
			}
		})
	case "/read":
		var ids []uint64
		for _, s := range args {
			id, err := strconv.ParseUint(strings.TrimPrefix(s, "#"), 10, 64)
			if err != nil || id == 0 {
				con.Noticef("%q is not a server id", s)
				return true
			}
			ids = append(ids, id)
		}
		if len(ids) == 0 {
			for _, e := range is.in.Unread() {
				ids = append(ids, e.ServerID)
			}
		}
		if len(ids) == 0 {
			con.Noticef("no unread messages")
			return true
		}
		is.background(func(ctx context.Context) {
			if err := markRead(ctx, is.s, is.in, ids); err != nil {
				con.Noticef("read receipts: %v", err)
				return
			}
			con.Noticef("marked %d message%s read: %s", len(ids), plural(len(ids)), joinIDs(ids))
		})
	case "/lookup":
		if len(args) == 0 {
			if is.peer == "" {
				con.Noticef("usage: /lookup +15551234567 ...")
				return true
			}
			args = []string{is.peer}
		}
		is.background(func(ctx context.Context) {
			cs, err := lookup(ctx, is.s, args)
			if err != nil {
				con.Noticef("lookup: %v", err)
				return
			}
			con.Printf("%s", formatContacts(cs))
		})
	case "/status":
		con.Noticef("%s", formatStatus(is.s.c.Status()))
	default:
		con.Noticef("unknown command %s; %s", cmd, interactiveCommands)
	}
	return true
}

// background runs f with a timeout while the session lasts.
func (is *interactive) background(f func(ctx context.Context)) {
	is.wg.Go(func() {
		ctx, cancel := context.WithTimeout(is.ctx, 30*time.Second)
		defer cancel()
		f(ctx)
	})
}

func (is *interactive) send(to, text string) {
	con := is.a.con
	content := textContent(text)
	if len(content.Body) > wire.MaxContentLen {
		con.Noticef("not sent: the text is too long (%d bytes encoded, at most %d)", len(content.Body), wire.MaxContentLen)
		return
	}
	id := client.NewClientID()
	is.sent.Store(id, struct{}{})
	is.wg.Go(func() {
		defer is.sent.Delete(id)
		var res client.SendResult
		err := is.s.call(is.ctx, func(ctx context.Context) (err error) {
			res, err = is.s.c.Send(ctx, to, id, content)
			return err
		})
		switch {
		case err == nil:
			con.Printf("[%s] ✓ sent to %s (id %d)", stamp(res.Timestamp, time.Now()), plus(to), res.ServerID)
		case errors.Is(err, client.ErrUnknownRecipient):
			con.Noticef("not sent: %s is not registered on this server", plus(to))
		case errors.Is(err, context.Canceled):
		default:
			con.Noticef("not sent to %s: %v", plus(to), err)
		}
	})
}

// finish waits up to 10 s for background requests (unsent messages), then gives up on them.
func (is *interactive) finish() {
	pending := 0
	is.sent.Range(func(any, any) bool { pending++; return true })
	done := make(chan struct{})
	go func() { is.wg.Wait(); close(done) }()
	if pending > 0 {
		is.a.con.Noticef("waiting up to 10s for %d message%s to reach the server...", pending, plural(pending))
	}
	select {
	case <-done:
		return
	case <-time.After(10 * time.Second):
	case <-is.ctx.Done():
	}
	is.s.cancel() // the requests end with the client
	<-done
	left := 0
	is.sent.Range(func(any, any) bool { left++; return true })
	if left > 0 {
		is.a.con.Noticef("%d message%s did not reach the server and were not sent", left, plural(left))
	}
}
