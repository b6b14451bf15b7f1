package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/pki"
)

var statusHelp = help{
	usage: "chat status [flags]",
	about: `Prints the profile (number, server, CA file, the pinned server key and its fingerprint, chat
endpoints, inbox) — never the device key — then checks the server: fetches its configuration over
HTTPS, and connects to show the connection state, the path (address and transport), how long
connecting took and the round trip of a request.`,
	examples: `  chat status
  chat --profile ~/.chat-bob status`,
}

func (a *app) cmdStatus(ctx context.Context, args []string) error {
	fset, profile := a.flags("status", statusHelp)
	timeout := timeoutFlag(fset, 15*time.Second, "the HTTPS check and connecting together")
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
	if errors.Is(err, errNoProfile) {
		if p, _ := loadProfile(dir); p != nil && p.Pending != nil {
			a.con.Printf("Profile:  %s\nPending:  a code was sent to %s by %s at %s (server %s)",
				dir, plus(p.Pending.Phone), p.Pending.Method, p.Pending.RequestedAt.Local().Format(time.DateTime), p.Pending.Server)
		}
	}
	if err != nil {
		return err
	}
	defer done()
	serverKey, _, _ := prof.Keys()

	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, k+":\t"+format+"\n", args...) }
	row("Profile", "%s", dir)
	who := plus(prof.Phone)
	if prof.Business {
		who += fmt.Sprintf(" (business %q)", prof.DisplayName)
	}
	row("Phone", "%s", who)
	row("Server", "%s", prof.Server)
	if prof.CAFile != "" {
		row("CA file", "%s", prof.CAFile)
	} else {
		row("CA file", "none (the system's CAs)")
	}
	row("Server key", "%s", pki.FormatPublic(serverKey))
	row("Fingerprint", "%s", fingerprint(serverKey))
	row("Endpoints", "%s", strings.Join(prof.ChatEndpoints, ", "))
	row("Registered", "%s", prof.RegisteredAt.Local().Format(time.DateTime))
	n := len(in.Messages())
	row("Inbox", "%d message%s, %d unread", n, plural(n), len(in.Unread()))
	tw.Flush()
	a.con.Printf("%s", strings.TrimRight(b.String(), "\n"))

	ctx, cancel := withTimeout(ctx, *timeout)
	defer cancel()
	start := time.Now()
	changed, err := refreshConfig(ctx, dir, prof)
	switch {
	case err != nil:
		a.con.Printf("HTTPS:        FAILED: %s", userText(err))
		var kc *keyChangedError
		if errors.As(err, &kc) {
			return err
		}
	case changed:
		a.con.Printf("HTTPS:        ok (%v); the chat endpoints changed to %s", roundDur(time.Since(start)), strings.Join(prof.ChatEndpoints, ", "))
	default:
		a.con.Printf("HTTPS:        ok, configuration fetched in %v", roundDur(time.Since(start)))
	}

	start = time.Now()
	s, err := a.connect(ctx, prof, newHandler(in, a.con, false), connectOpts{failFast: true, wait: true, verbose: *verbose})
	if err != nil {
		a.con.Printf("Connection:   FAILED")
		return err
	}
	defer s.close()
	connectTime := time.Since(start)
	start = time.Now()
	_, err = lookup(ctx, s, []string{prof.Phone})
	rtt := time.Since(start)
	st := s.c.Status()
	a.con.Printf("Connection:   %s to %s (%s) in %v", st.State, st.Addr, st.Transport, roundDur(connectTime))
	if err != nil {
		return fmt.Errorf("connected, but a request failed: %w", err)
	}
	line := fmt.Sprintf("Round trip:   %v (a contact lookup)", roundDur(rtt))
	if st.RTT > 0 {
		line += fmt.Sprintf("; ping %v", roundDur(st.RTT))
	}
	a.con.Printf("%s", line)
	return nil
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d > time.Second:
		return d.Round(10 * time.Millisecond)
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// formatStatus is the one-line client status of interactive mode.
func formatStatus(st client.Status) string {
	s := fmt.Sprintf("%s as %s", st.State, plus(st.Phone))
	if st.Addr != "" {
		s += fmt.Sprintf(" via %s (%s)", st.Addr, st.Transport)
	}
	s += fmt.Sprintf(" since %s", st.Since.Local().Format("15:04:05"))
	if st.RTT > 0 {
		s += fmt.Sprintf(", ping %v", roundDur(st.RTT))
	}
	if st.Reconnects > 0 {
		s += fmt.Sprintf(", %d reconnects", st.Reconnects)
	}
	if st.LastError != "" {
		s += fmt.Sprintf(", last error: %s", oneLine(st.LastError))
	}
	return s
}
