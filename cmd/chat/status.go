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
	"github.com/chatd-dev/chatd/transport"
)

var statusHelp = help{
	usage: "chat status [flags]",
	about: `Prints the profile (number, server, CA file, the pinned server key and its fingerprint, chat
endpoints, inbox) — never the device key — then checks the server: fetches its configuration over
HTTPS, and connects to show the connection: its state, the path (address, port, transport tcp, tls
or ws, and the proxy it goes through), since when, how long connecting took, the round trip of a
request and of a ping, reconnects, why the last connection ended, and a network problem if the client
found one (connected on 5222 while the 443 path fails: an unsupported network).

The connection goes through --proxy (default: HTTPS_PROXY, except NO_PROXY hosts) and, with
--only-443, never to port 5222: status shows what a command run the same way would use.`,
	examples: `  chat status
  chat --profile ~/.chat-bob status
  chat status --proxy http://proxy.corp:3128 --only-443
  chat status --proxy none      # ignore HTTPS_PROXY`,
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
	changed, err := a.refreshConfig(ctx, dir, prof)
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
	a.con.Printf("Path:         %s", formatPath(st, s.c.Endpoints()))
	a.con.Printf("Since:        %s", st.Since.Local().Format(time.DateTime))
	if err != nil {
		return fmt.Errorf("connected, but a request failed: %w", err)
	}
	line := fmt.Sprintf("Round trip:   %v (a contact lookup)", roundDur(rtt))
	if st.RTT > 0 {
		line += fmt.Sprintf("; ping %v", roundDur(st.RTT))
	}
	a.con.Printf("%s", line)
	a.con.Printf("Reconnects:   %d", st.Reconnects)
	if st.LastClose != "" {
		a.con.Printf("Last close:   %s", formatClose(st))
	} else {
		a.con.Printf("Last close:   none")
	}
	if st.NetworkProblem != "" {
		a.con.Printf("Network:      UNSUPPORTED: %s", oneLine(st.NetworkProblem))
	}
	return nil
}

// formatPath is the path of st among the client's endpoints: "tls to chat.example.com:443 (port
// 443: the 443 path), through proxy http://proxy:3128" or "tcp to chat.example.com:5222 (port 5222:
// the direct path), no proxy". The proxy is shown without its password.
func formatPath(st client.Status, endpoints []transport.Endpoint) string {
	class := "the direct path"
	if transport.On443(st.Endpoint, endpoints) {
		class = "the 443 path"
	}
	via := "no proxy"
	if st.Proxy != "" {
		via = "through proxy " + st.Proxy
	}
	return fmt.Sprintf("%s to %s (port %d: %s), %s", st.Transport, st.Addr, st.Port, class, via)
}

// formatClose is why the last connection ended: the reason and, if any, the explanation.
func formatClose(st client.Status) string {
	if st.LastError == "" {
		return st.LastClose
	}
	return st.LastClose + ": " + oneLine(st.LastError)
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
		if st.Proxy != "" {
			s += " through proxy " + st.Proxy
		}
	}
	s += fmt.Sprintf(" since %s", st.Since.Local().Format("15:04:05"))
	if st.RTT > 0 {
		s += fmt.Sprintf(", ping %v", roundDur(st.RTT))
	}
	if st.Reconnects > 0 {
		s += fmt.Sprintf(", %d reconnects", st.Reconnects)
	}
	if st.LastClose != "" {
		s += ", last close: " + formatClose(st)
	}
	if st.NetworkProblem != "" {
		s += "; NETWORK UNSUPPORTED: " + oneLine(st.NetworkProblem)
	}
	return s
}
