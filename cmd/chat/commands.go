package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/phone"
	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// open locks the profile in dir and opens its registration and inbox; done releases them.
func (a *app) open(dir string) (prof *Profile, in *Inbox, done func(), err error) {
	if _, err := loadRegistered(dir); err != nil { // before the lock creates the folder
		return nil, nil, nil, err
	}
	unlock, err := lockProfile(dir)
	if err != nil {
		return nil, nil, nil, err
	}
	if prof, err = loadRegistered(dir); err != nil {
		unlock()
		return nil, nil, nil, err
	}
	if in, err = openInbox(dir); err != nil {
		unlock()
		return nil, nil, nil, err
	}
	return prof, in, func() { in.Close(); unlock() }, nil
}

// call runs a client request f and gives up when the client stops for good (its error is returned
// then).
func (s *session) call(ctx context.Context, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := f(ctx)
	if serr := s.err(); serr != nil {
		return serr
	}
	return err
}

// --- send

var sendHelp = help{
	usage: "chat send [flags] <to> <text...>",
	about: `Sends a text message to the number <to> and prints the id the server gave it once the server has
stored it. With --wait it then waits for the recipient's receipt: "delivered" when their device has
it, "read" when they read it. The words of <text> are joined with spaces; "-" reads the text from
standard input.

Messages and receipts that arrive for this number meanwhile are stored in the inbox (chat inbox).
Flags may come before or after the arguments; put "--" before a text that starts with "-".`,
	examples: `  chat send +15557654321 hello there
  chat send --wait read --timeout 5m +15557654321 "are you there?"
  echo "report attached" | chat send +15557654321 -
  chat send --id order-1234-shipped +15557654321 your order has shipped   # safe to retry`,
}

func (a *app) cmdSend(ctx context.Context, args []string) error {
	fset, profile := a.flags("send", sendHelp)
	wait := fset.String("wait", "", "after the server stored the message, wait for the recipient's receipt: `delivered|read`")
	timeout := timeoutFlag(fset, 30*time.Second, "connecting, the server's acknowledgement and the --wait receipt together")
	id := fset.String("id", "", "client message `ID`, 1 to 64 characters; the server stores one message per id, so a retry with the same id cannot send it twice (default: random)")
	verbose := verboseFlag(fset)
	pos, err := a.parse(fset, args)
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		return usagef("give the recipient and the text: chat send +15557654321 hello")
	}
	to, err := phone.Normalize(pos[0])
	if err != nil {
		return usagef("recipient %q: %v", pos[0], err)
	}
	text := strings.Join(pos[1:], " ")
	if text == "-" {
		b, err := io.ReadAll(io.LimitReader(a.stdin, wire.MaxContentLen+1))
		if err != nil {
			return fmt.Errorf("reading the text from standard input: %w", err)
		}
		text = strings.TrimRight(string(b), "\r\n")
	}
	if strings.TrimSpace(text) == "" {
		return usagef("the text is empty")
	}
	content := textContent(text)
	if len(content.Body) > wire.MaxContentLen {
		return usagef("the text is too long: %d bytes encoded, at most %d", len(content.Body), wire.MaxContentLen)
	}
	switch *wait {
	case "", receiptDelivered, receiptRead:
	default:
		return usagef(`--wait must be "delivered" or "read", not %q`, *wait)
	}
	clientID := *id
	if clientID == "" {
		clientID = client.NewClientID()
	} else if len(clientID) > wire.MaxClientIDLen {
		return usagef("--id is %d bytes; at most %d", len(clientID), wire.MaxClientIDLen)
	}

	prof, in, done, err := a.open(*profile)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := withTimeout(ctx, *timeout)
	defer cancel()
	h := newHandler(in, a.con, false)
	s, err := a.connect(ctx, prof, h, connectOpts{failFast: true, wait: true, verbose: *verbose})
	if err != nil {
		return err
	}
	defer s.close()
	var res client.SendResult
	err = s.call(ctx, func(ctx context.Context) (err error) {
		res, err = s.c.Send(ctx, to, clientID, content)
		return err
	})
	switch {
	case errors.Is(err, client.ErrUnknownRecipient):
		return fmt.Errorf("%s is not registered on %s (chat lookup %s checks a number)", plus(to), prof.Server, plus(to))
	case errors.Is(err, client.ErrRejected):
		return fmt.Errorf("the server refused the message: %s", strings.TrimPrefix(err.Error(), client.ErrRejected.Error()+": "))
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no acknowledgement from the server within %v, so the message may or may not be stored; "+
			"to retry without sending it twice: chat send --id %s %s ...", *timeout, clientID, plus(to))
	case err != nil:
		return err
	}
	note := ""
	if res.Duplicate {
		note = ", sent before with this --id"
	}
	a.con.Printf("sent to %s (id %d%s)", plus(to), res.ServerID, note)
	if *wait == "" {
		return nil
	}
	if e, ok := in.Receipt(res.ServerID); ok { // it came in an earlier run (a retry with --id)
		h.receipts.add(e)
	}
	// Show "delivered" on the way to "read".
	for _, want := range []string{receiptDelivered, *wait} {
		var e Entry
		err = s.call(ctx, func(ctx context.Context) (err error) {
			e, err = h.receipts.wait(ctx, res.ServerID, want)
			return err
		})
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("the message was sent (id %d), but no %s receipt came within %v; the recipient may be offline (chat listen shows the receipt when it comes)",
				res.ServerID, *wait, *timeout)
		}
		if err != nil {
			return err
		}
		a.con.Printf("%s", formatReceipt(e, time.Now()))
		if e.Receipt == *wait || e.Receipt == receiptRead {
			return nil
		}
	}
	return nil
}

// --- read

var readHelp = help{
	usage: "chat read [flags] <server-id>... | --all",
	about: `Tells the server that the messages with these server ids (as printed by chat listen and chat
inbox) were read; their senders get read receipts. --all marks every unread message of the inbox.`,
	examples: `  chat read 42 43
  chat read --all`,
}

func (a *app) cmdRead(ctx context.Context, args []string) error {
	fset, profile := a.flags("read", readHelp)
	all := fset.Bool("all", false, "mark every unread message in the inbox as read")
	timeout := timeoutFlag(fset, 15*time.Second, "connecting and the server's acknowledgement")
	verbose := verboseFlag(fset)
	pos, err := a.parse(fset, args)
	if err != nil {
		return err
	}
	var ids []uint64
	for _, p := range pos {
		id, err := strconv.ParseUint(strings.TrimPrefix(p, "#"), 10, 64)
		if err != nil || id == 0 {
			return usagef("%q is not a server id (a positive number, as chat inbox shows)", p)
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 && !*all {
		return usagef("give the server ids of the messages (chat inbox lists them), or --all")
	}
	prof, in, done, err := a.open(*profile)
	if err != nil {
		return err
	}
	defer done()
	if *all {
		for _, e := range in.Unread() {
			ids = append(ids, e.ServerID)
		}
		if len(ids) == 0 {
			a.con.Printf("no unread messages")
			return nil
		}
	}
	for _, id := range ids {
		if !in.Has(id) {
			a.con.Noticef("note: message %d is not in this profile's inbox; marking it anyway", id)
		}
	}
	ctx, cancel := withTimeout(ctx, *timeout)
	defer cancel()
	s, err := a.connect(ctx, prof, newHandler(in, a.con, false), connectOpts{failFast: true, wait: true, verbose: *verbose})
	if err != nil {
		return err
	}
	defer s.close()
	if err := markRead(ctx, s, in, ids); err != nil {
		return err
	}
	a.con.Printf("marked %d message%s read: %s", len(ids), plural(len(ids)), joinIDs(ids))
	return nil
}

// markRead sends read receipts for ids and records them in the inbox.
func markRead(ctx context.Context, s *session, in *Inbox, ids []uint64) error {
	for len(ids) > 0 {
		n := min(len(ids), wire.MaxIDsPerMarkRead)
		err := s.call(ctx, func(ctx context.Context) error { return s.c.MarkRead(ctx, ids[:n]...) })
		if errors.Is(err, context.DeadlineExceeded) {
			return errors.New("no acknowledgement of the read receipts from the server in time")
		}
		if err != nil {
			return err
		}
		if err := in.MarkedRead(ids[:n], time.Now()); err != nil {
			return err
		}
		ids = ids[n:]
	}
	return nil
}

func joinIDs(ids []uint64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(s, ", ")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// --- lookup

var lookupHelp = help{
	usage: "chat lookup [flags] <phone>...",
	about: `Asks the server whether the numbers are registered, and for businesses their verified display name.`,
	examples: `  chat lookup +15557654321
  chat lookup +15557654321 +442071234567`,
}

func (a *app) cmdLookup(ctx context.Context, args []string) error {
	fset, profile := a.flags("lookup", lookupHelp)
	timeout := timeoutFlag(fset, 15*time.Second, "connecting and the server's answer")
	verbose := verboseFlag(fset)
	phones, err := a.parse(fset, args)
	if err != nil {
		return err
	}
	if len(phones) == 0 {
		return usagef("give one or more numbers, e.g. chat lookup +15557654321")
	}
	prof, in, done, err := a.open(*profile)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := withTimeout(ctx, *timeout)
	defer cancel()
	s, err := a.connect(ctx, prof, newHandler(in, a.con, false), connectOpts{failFast: true, wait: true, verbose: *verbose})
	if err != nil {
		return err
	}
	defer s.close()
	contacts, err := lookup(ctx, s, phones)
	if err != nil {
		return err
	}
	a.con.Printf("%s", formatContacts(contacts))
	return nil
}

func lookup(ctx context.Context, s *session, phones []string) ([]*chatdpb.Contact, error) {
	var out []*chatdpb.Contact
	for len(phones) > 0 {
		n := min(len(phones), wire.MaxContactsPerQuery)
		var cs []*chatdpb.Contact
		err := s.call(ctx, func(ctx context.Context) (err error) {
			cs, err = s.c.Lookup(ctx, phones[:n]...)
			return err
		})
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, errors.New("no answer to the lookup from the server in time")
		}
		if err != nil {
			return nil, err
		}
		out = append(out, cs...)
		phones = phones[n:]
	}
	return out, nil
}

func formatContacts(cs []*chatdpb.Contact) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, c := range cs {
		switch {
		case c.GetPhone() == "":
			fmt.Fprintf(tw, "%s\tnot a valid phone number\n", safe(c.GetInput()))
		case !c.GetRegistered():
			fmt.Fprintf(tw, "%s\tnot registered\n", plus(c.GetPhone()))
		case c.GetBusiness():
			fmt.Fprintf(tw, "%s\tregistered\tbusiness %q\n", plus(c.GetPhone()), safe(c.GetDisplayName()))
		default:
			fmt.Fprintf(tw, "%s\tregistered\n", plus(c.GetPhone()))
		}
	}
	tw.Flush()
	return strings.TrimRight(b.String(), "\n")
}

// --- inbox

var inboxHelp = help{
	usage: "chat inbox [flags]",
	about: `Shows the messages received by this profile (by chat listen, chat interactive, or any command that
was connected when they came), oldest first, with their server ids; "*" marks the unread ones (no read
receipt sent yet). It does not connect, and it may run while another command uses the profile.`,
	examples: `  chat inbox
  chat inbox --unread
  chat inbox -n 0     # everything`,
	offline: true,
}

func (a *app) cmdInbox(_ context.Context, args []string) error {
	fset, profile := a.flags("inbox", inboxHelp)
	unread := fset.Bool("unread", false, "only the unread messages")
	n := fset.Int("n", 20, "show the last n messages (0: all)")
	pos, err := a.parse(fset, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if _, err := loadRegistered(*profile); err != nil {
		return err
	}
	in, err := loadInbox(*profile)
	if err != nil {
		return err
	}
	msgs := in.Messages()
	total, unreadN := len(msgs), len(in.Unread())
	if *unread {
		msgs = in.Unread()
	}
	if *n > 0 && len(msgs) > *n {
		msgs = msgs[len(msgs)-*n:]
	}
	now := time.Now()
	for _, e := range msgs {
		mark := " "
		if !in.IsRead(e.ServerID) {
			mark = "*"
		}
		a.con.Printf("%s %s", mark, formatMessage(e, now))
	}
	a.con.Printf("%d message%s, %d unread%s", total, plural(total), unreadN, map[bool]string{true: " (chat read --all marks them read)"}[unreadN > 0])
	return nil
}
