package netcheck

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/iplist"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
)

func TestRules(t *testing.T) {
	l, err := iplist.Normalize(iplist.List{Updated: time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC),
		IPv4: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("198.51.100.7/32")},
		IPv6: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}})
	if err != nil {
		t.Fatal(err)
	}
	for format, want := range map[string][]string{
		"nftables": {"add element inet filter chatd_v4 { 198.51.100.7/32, 203.0.113.0/24 }", "add element inet filter chatd_v6 { 2001:db8::/32 }",
			"add rule inet filter output ip daddr @chatd_v4 tcp dport { 443, 5222 } accept", "add rule inet filter output ip6 daddr @chatd_v6"},
		"iptables": {"iptables -A output -p tcp -d 203.0.113.0/24 -m multiport --dports 443,5222 -j ACCEPT", "ip6tables -A output -p tcp -d 2001:db8::/32"},
		"cidr":     {"\n198.51.100.7/32\n203.0.113.0/24\n2001:db8::/32\n"},
	} {
		out, err := Rules(l, format, "filter", "output", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s rules lack %q:\n%s", format, w, out)
			}
		}
	}
	if _, err := Rules(l, "pf", "filter", "output", nil); err == nil || !strings.Contains(err.Error(), "nftables, iptables, cidr") {
		t.Errorf("unknown format: %v", err)
	}
	cc := regtypes.ClientConfig{HTTPSURL: "https://chat.example:8443", ChatEndpoints: []regtypes.Endpoint{{Host: "chat.example", Port: 5222}, {Host: "chat.example", Port: 8443, Transport: "tls"}}}
	if got := DeploymentPorts(cc); len(got) != 2 || got[0] != 5222 || got[1] != 8443 {
		t.Errorf("DeploymentPorts = %v, want [5222 8443]", got)
	}
}
