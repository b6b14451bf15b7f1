package netcheck

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// PrintStep writes one progress line for s.
func PrintStep(w io.Writer, s Step) {
	detail := s.Detail
	if detail != "" {
		detail = "  " + detail
	}
	fmt.Fprintf(w, "  %-8s %-6s %-40s %8s%s\n", s.Status, s.Check, s.Target, s.Took.Round(time.Millisecond), detail)
}

// Render writes the report for people.
func (r *Report) Render(w io.Writer) {
	fmt.Fprintf(w, "chatd network check of %s (%s, took %s)\n", r.Server, r.Started.Format(time.RFC3339), r.Took.Round(time.Millisecond))
	if r.Proxy.URL != "" {
		fmt.Fprintf(w, "proxy: %s (from %s)\n", r.Proxy.URL, r.Proxy.Source)
	}
	fmt.Fprintf(w, "\nHTTPS  %-8s %s  %v %s\n", r.HTTPS.Status, r.HTTPS.URL, r.HTTPS.Took.Round(time.Millisecond), r.HTTPS.Error)
	key := "pinned at registration"
	if !r.Key.Pinned {
		key = "from /v1/config (not pinned: this bizapi is not registered)"
	}
	if r.Key.Key != "" {
		fmt.Fprintf(w, "server key %s, %s\n", r.Key.Key, key)
	}
	for _, h := range r.Hosts {
		fmt.Fprintf(w, "\n%s  dns %s %s %s\n", h.Host, h.DNS.Status, strings.Join(h.DNS.Addrs, ", "), h.DNS.Error)
		for _, p := range h.Ports {
			fmt.Fprintf(w, "  tcp %-5d %-13s %8v  %s\n", p.Port, p.Result, p.Took.Round(time.Millisecond), p.Error)
		}
		switch t := h.TLS; {
		case t == nil:
		case t.Version == "":
			fmt.Fprintf(w, "  tls       %-13s %8v  %s\n", t.Status, t.Took.Round(time.Millisecond), t.Error)
		default:
			fmt.Fprintf(w, "  tls       %-13s %8v  %s, ALPN %q, issuer %s  %s\n", t.Status, t.Took.Round(time.Millisecond), t.Version, t.ALPN, t.Issuer, t.Error)
		}
	}
	fmt.Fprintf(w, "\nchatd handshake (probe login) per path:\n")
	for _, p := range r.Paths {
		via := ""
		if p.Proxy != "" {
			via = " via " + p.Proxy
		}
		fmt.Fprintf(w, "  %-30s %-8s %8v  %s%s\n", p.Endpoint, p.Status, p.Took.Round(time.Millisecond), stageErr(p), via)
	}
	if il := r.IPList; il != nil {
		if il.Version != "" {
			fmt.Fprintf(w, "\nIP address list %s: %s — updated %s, effective from %s, expires %s; %d IPv4 and %d IPv6 ranges; operator key pinned: %v\n",
				il.Version, il.Status, il.Updated, il.EffectiveFrom, il.Expires, il.IPv4, il.IPv6, il.KeyPinned)
		} else {
			fmt.Fprintf(w, "\nIP address list: %s (%s)\n", il.Status, il.Error)
		}
		if len(il.Outside) > 0 {
			fmt.Fprintf(w, "  not in the list: %s\n", strings.Join(il.Outside, ", "))
		}
	}
	for _, rc := range r.Ranges {
		fmt.Fprintf(w, "  range %-20s %-16s", rc.Range, rc.Addr)
		for _, p := range rc.Ports {
			fmt.Fprintf(w, "  %d %s", p.Port, p.Result)
		}
		fmt.Fprintln(w)
	}
	if ic := r.Idle; ic != nil {
		fmt.Fprintf(w, "\nidle connections on %s: %s", ic.Path, ic.Status)
		switch {
		case ic.Error != "":
			fmt.Fprintf(w, " (%s)\n", ic.Error)
		case ic.Died == 0:
			fmt.Fprintf(w, ", alive after %v idle; ping interval %v is fine\n", ic.Survived.Round(time.Second), ic.Recommended)
		default:
			fmt.Fprintf(w, ", alive after %v, dead after %v: the network forgets idle connections after about %v; ping at least every %v\n",
				ic.Survived.Round(time.Second), ic.Died.Round(time.Second), ic.Estimate.Round(time.Second), ic.Recommended.Round(time.Second))
		}
	}
	fmt.Fprintf(w, "\nVERDICT: %s — %s\n", strings.ToUpper(string(r.Verdict.Status)), r.Verdict.Summary)
	for _, a := range r.Verdict.Actions {
		fmt.Fprintf(w, "  * %s\n", a)
	}
	for _, n := range r.Verdict.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

func stageErr(p PathCheck) string {
	if p.Error == "" {
		return ""
	}
	return p.Stage + ": " + p.Error
}
