package netcheck

import (
	"fmt"
	"strings"
	"time"

	"github.com/chatd-dev/chatd/transport"
)

// verdict concludes in the reference's terms — both ports open (recommended); 5222 blocked but 443
// open (works over 443); 443 blocked (unsupported) — and says what to change for every failure.
func verdict(rep *Report, cfg Config) Verdict {
	var v Verdict
	act := func(format string, a ...any) { v.Actions = append(v.Actions, fmt.Sprintf(format, a...)) }
	note := func(format string, a ...any) { v.Notes = append(v.Notes, fmt.Sprintf(format, a...)) }

	var direct, via443, degraded bool
	var all []transport.Endpoint
	for _, p := range rep.Paths {
		ep, _ := transport.ParseEndpoint(p.Endpoint)
		all = append(all, ep)
	}
	addrs := map[string]string{}
	for _, h := range rep.Hosts {
		addrs[h.Host] = h.Host
		if len(h.DNS.Addrs) > 0 && h.DNS.Addrs[0] != h.Host {
			addrs[h.Host] = h.Host + " (" + strings.Join(h.DNS.Addrs, ", ") + ")"
		}
	}
	portResult := func(host string, port int) string {
		for _, h := range rep.Hosts {
			if h.Host == host {
				for _, pc := range h.Ports {
					if pc.Port == port {
						return pc.Result
					}
				}
			}
		}
		return ""
	}
	tlsOK := false
	for i, p := range rep.Paths {
		ep := all[i]
		raw443 := ep.Transport == transport.TransportTCP && transport.On443(ep, all)
		switch {
		case p.Status != Broken && ep.Transport != transport.TransportTCP:
			via443 = true
			if ep.Transport == transport.TransportTLS {
				tlsOK = true
			}
		case p.Status != Broken && !raw443:
			direct = true
		}
	}
	for i, p := range rep.Paths {
		ep := all[i]
		if p.Status != Broken {
			continue
		}
		raw443 := ep.Transport == transport.TransportTCP && transport.On443(ep, all)
		open := portResult(ep.Host, ep.Port) == "open"
		switch {
		case raw443 && open && p.Stage == "handshake" && tlsOK:
			note("Something on the way to %s cuts traffic on port %d that is not TLS (raw chatd there failed: %s). The client uses TLS on %d, which passes; nothing to change.",
				addrs[ep.Host], ep.Port, p.Error, ep.Port)
		case raw443:
			// Raw chatd on 443 is only a diagnostic path; its failure alone needs no action.
		case ep.Transport == transport.TransportTCP && open && (p.Stage == "handshake" || p.Stage == "login"):
			degraded = true
			act("TCP %d to %s connects, but the chat stream is cut (%s): a firewall, IPS or proxy inspects or blocks non-TLS traffic on %d. Allow all outbound traffic on TCP %d to it (chatd is encrypted end to end, but it is not TLS).",
				ep.Port, addrs[ep.Host], p.Error, ep.Port, ep.Port)
		case ep.Transport == transport.TransportWS && tlsOK:
			note("The WebSocket path %s failed (%s) while TLS works; the client uses TLS.", ep, p.Error)
		case p.Stage == "handshake" && strings.Contains(p.Error, "mismatch"):
			act("The server at %s did not prove the pinned key (%s): a man in the middle, or this bizapi was registered with another server.", ep, p.Error)
		}
	}
	for _, h := range rep.Hosts {
		if h.DNS.Status == Broken {
			act("The name %s does not resolve (%s): check the DNS servers this machine uses.", h.Host, h.DNS.Error)
		}
		for _, pc := range h.Ports {
			target := addrs[h.Host]
			switch pc.Result {
			case "refused":
				act("TCP %d to %s is refused (a reset: a firewall REJECT rule, or nothing listens there). Allow outbound TCP %d to it.", pc.Port, target, pc.Port)
			case "timeout":
				act("TCP %d to %s gets no answer within %v (a firewall DROPs it silently). Allow outbound TCP %d to it.", pc.Port, target, cfg.Timeout, pc.Port)
			case "unreachable":
				act("There is no route to %s (%s): check this machine's routing and default gateway.", target, pc.Error)
			case "proxy_refused":
				act("The proxy %s will not tunnel to %s port %d (%s). Allow CONNECT to port %d of it in the proxy.", rep.Proxy.URL, target, pc.Port, pc.Error, pc.Port)
			case "error":
				act("TCP %d to %s fails: %s.", pc.Port, target, pc.Error)
			}
		}
		if h.TLS != nil && h.TLS.Intercepted {
			degraded = true
			act("TLS to %s is intercepted: %s. Exempt it from TLS inspection. Until then the client can only use the WebSocket path, if the proxy passes it; chatd's own encryption still authenticates the server.", h.Host, h.TLS.Error)
		}
	}
	if rep.HTTPS.Status != OK {
		act("HTTPS to %s fails (%s). Registration and restarts need it: allow outbound HTTPS (TCP 443) to it%s.", rep.HTTPS.URL, rep.HTTPS.Error,
			map[bool]string{true: " through the proxy", false: ""}[rep.Proxy.URL != ""])
	}
	if il := rep.IPList; il != nil {
		switch {
		case il.Status == Degraded && il.Version == "":
			degraded = true
			act("The server's IP address list does not verify (%s): do not build firewall rules from it, and tell the server's operator.", il.Error)
		case len(il.Outside) > 0:
			degraded = true
			act("The server's addresses %s are not in its published IP address list (%s): a firewall that allows only the list blocks them. Tell the server's operator.",
				strings.Join(il.Outside, ", "), il.Version)
		case il.Status == OK && !il.KeyPinned:
			note("The IP address list was verified with the operator key the server publishes now, not one pinned at registration (none is pinned: this bizapi is not registered, or the server published no operator key when it registered).")
		}
	}
	for _, rc := range rep.Ranges {
		for _, pc := range rc.Ports {
			if pc.Result != "open" && !(pc.Port == 5222 && cfg.Only443) {
				degraded = true
				act("TCP %d to %s (range %s of the IP list) is %s: allow outbound TCP %d to the whole range.", pc.Port, rc.Addr, rc.Range, pc.Result, pc.Port)
			}
		}
	}
	if s := rep.HTTPS.ClockSkew; s > time.Minute || s < -time.Minute {
		note("This machine's clock is %v off the server's: fix NTP (certificates and the IP list carry dates).", s)
	}
	if ic := rep.Idle; ic != nil && ic.Status == Degraded {
		degraded = true
		act("The network forgets idle connections after about %v (alive after %v idle, dead after %v). The default pings (every 25 ± 5 s) and TCP keepalive (15 s) may be too rare for it: raise the idle timeout of the firewall or NAT to at least 5 minutes, or lower the ping interval to %v.",
			ic.Estimate.Round(time.Second), ic.Survived.Round(time.Second), ic.Died.Round(time.Second), ic.Recommended.Round(time.Second))
	}

	https := rep.HTTPS.Status == OK
	switch {
	case !via443 && direct:
		v.Status, v.Summary = Broken, "5222 open, 443 closed: unsupported. Chat works on 5222 for now, but registration and restarts need HTTPS on 443, and 443 is the fallback."
	case !via443 && open443(rep, all):
		v.Status, v.Summary = Broken, "443 connects, but no chatd answers there (TLS, the handshake or HTTPS fails: see below): unsupported until that is fixed."
	case !via443:
		v.Status, v.Summary = Broken, "443 blocked: unsupported. No path to chatd works; registration and restarts need HTTPS on 443."
	case !https:
		v.Status, v.Summary = Broken, "HTTPS blocked: unsupported. Chat connects over 443, but registration and restarts need HTTPS."
	case !direct && cfg.Only443:
		v.Status, v.Summary = OK, "443-only mode: works over 443."
	case !direct:
		v.Status, v.Summary = Degraded, "5222 blocked but 443 open: works over 443. Opening 5222 is recommended."
	default:
		v.Status, v.Summary = OK, "Both ports open (recommended)."
	}
	if v.Status == OK && degraded {
		v.Status, v.Summary = Degraded, v.Summary+" But see the actions below."
	}
	return v
}

// open443 reports whether TCP to a 443-path port connected.
func open443(rep *Report, all []transport.Endpoint) bool {
	for _, h := range rep.Hosts {
		for _, pc := range h.Ports {
			ep := transport.Endpoint{Host: h.Host, Port: pc.Port, Transport: transport.TransportTCP}
			if pc.Result == "open" && transport.On443(ep, all) {
				return true
			}
		}
	}
	return false
}
