package netcheck

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/chatd-dev/chatd/iplist"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
)

// RuleFormats are the formats Rules writes.
var RuleFormats = []string{"nftables", "iptables", "cidr"}

// Rules turns a verified IP address list into firewall rules that allow outbound TCP to ports (the
// deployment's: DeploymentPorts; nil means 5222 and 443) of the deployment's ranges:
//
//   - nftables: a script for `nft -f` that adds two interval sets and two accept rules to the existing
//     chain CHAIN of table inet TABLE (for example filter/output on a host, filter/forward on a
//     router). Put it before the chain's final drop.
//   - iptables: iptables and ip6tables commands appending ACCEPT rules to CHAIN (OUTPUT, FORWARD).
//   - cidr: the ranges, one per line, for other firewalls.
func Rules(l iplist.List, format, table, chain string, ports []int) (string, error) {
	if len(ports) == 0 {
		ports = []int{443, 5222}
	}
	var ps []string
	for _, p := range ports {
		ps = append(ps, strconv.Itoa(p))
	}
	var b strings.Builder
	header := fmt.Sprintf("chatd IP address list %s (updated %s, effective from %s, expires %s): allow outbound TCP %s",
		l.Version(), date(l.Updated), date(l.EffectiveFrom), date(l.Expires), strings.Join(ps, " and "))
	join := func(ps []string) string { return strings.Join(ps, ", ") }
	strs := func(v6 bool) []string {
		var out []string
		src := l.IPv4
		if v6 {
			src = l.IPv6
		}
		for _, p := range src {
			out = append(out, p.String())
		}
		return out
	}
	switch format {
	case "nftables":
		fmt.Fprintf(&b, "# %s.\n# Load into an existing table and chain: nft -f FILE. Regenerate when the list changes.\n", header)
		for _, fam := range []struct {
			set, typ, match string
			v6              bool
		}{{"chatd_v4", "ipv4_addr", "ip", false}, {"chatd_v6", "ipv6_addr", "ip6", true}} {
			ranges := strs(fam.v6)
			if len(ranges) == 0 {
				continue
			}
			fmt.Fprintf(&b, "add set inet %s %s { type %s; flags interval; }\n", table, fam.set, fam.typ)
			fmt.Fprintf(&b, "flush set inet %s %s\n", table, fam.set)
			fmt.Fprintf(&b, "add element inet %s %s { %s }\n", table, fam.set, join(ranges))
			fmt.Fprintf(&b, "add rule inet %s %s %s daddr @%s tcp dport { %s } accept comment \"chatd %s\"\n", table, chain, fam.match, fam.set, strings.Join(ps, ", "), l.Version())
		}
	case "iptables":
		fmt.Fprintf(&b, "# %s.\n", header)
		for _, p := range strs(false) {
			fmt.Fprintf(&b, "iptables -A %s -p tcp -d %s -m multiport --dports %s -j ACCEPT\n", chain, p, strings.Join(ps, ","))
		}
		for _, p := range strs(true) {
			fmt.Fprintf(&b, "ip6tables -A %s -p tcp -d %s -m multiport --dports %s -j ACCEPT\n", chain, p, strings.Join(ps, ","))
		}
	case "cidr":
		fmt.Fprintf(&b, "# %s.\n", header)
		for _, p := range append(strs(false), strs(true)...) {
			fmt.Fprintln(&b, p)
		}
	default:
		return "", fmt.Errorf("rules format %q: use %s", format, strings.Join(RuleFormats, ", "))
	}
	return b.String(), nil
}

// DeploymentPorts are the TCP ports a deployment's clients use: those of its published chat endpoints
// and of its HTTPS URL (5222 and 443 in a standard deployment).
func DeploymentPorts(cc regtypes.ClientConfig) []int {
	var ports []int
	add := func(p int) {
		if p > 0 && !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	for _, e := range cc.ChatEndpoints {
		add(e.Port)
	}
	if u, err := url.Parse(cc.HTTPSURL); err == nil {
		if p, err := strconv.Atoi(u.Port()); err == nil {
			add(p)
		} else if u.Scheme == "https" {
			add(443)
		}
	}
	slices.Sort(ports)
	return ports
}
