package node

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/chatd-dev/chatd/iplist"
)

// ExpiryWarning is how long before its expiry date a node starts warning that its IP address list
// expires.
const ExpiryWarning = 14 * 24 * time.Hour

// IPList returns the IP address list a node with cfg publishes, or nil if it publishes none:
//
//   - the list in cfg.IPListFile, if set;
//   - else, in dev mode without IPListVersion, a list of the dev server's own addresses, updated and
//     effective on now's date (UTC): PublicHost and those of DevHosts that are IP addresses (/32 or
//     /128), and 127.0.0.1 when PublicHost is "localhost" or empty (its dev default; the
//     quickstart and most dev setups listen on IPv4 loopback only);
//     nil when none of them is an address (a host name is never resolved);
//   - else nil.
//
// "chatd serve" and "chatd iplist" both use it, so that the offline ZIP is the served one.
func IPList(cfg Config, now time.Time) (*iplist.List, error) {
	switch {
	case cfg.IPListFile != "" && cfg.IPListVersion != "":
		return nil, errors.New("node: iplist_version cannot be set with iplist_file: the published version is derived from the list; remove iplist_version")
	case cfg.IPListFile != "":
		l, err := iplist.LoadFile(cfg.IPListFile)
		if err != nil {
			return nil, fmt.Errorf("node: IP address list: %w", err)
		}
		return &l, nil
	case !cfg.Dev || cfg.IPListVersion != "":
		return nil, nil
	}
	var l iplist.List
	add := func(a netip.Addr) {
		a = a.Unmap()
		if a.Is4() {
			l.IPv4 = append(l.IPv4, netip.PrefixFrom(a, 32))
		} else {
			l.IPv6 = append(l.IPv6, netip.PrefixFrom(a.WithZone(""), 128))
		}
	}
	for i, h := range append([]string{cfg.PublicHost}, cfg.DevHosts...) {
		if i == 0 && (h == "" || h == "localhost") {
			add(netip.AddrFrom4([4]byte{127, 0, 0, 1}))
			continue
		}
		if a, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
			add(a)
		}
	}
	if len(l.IPv4)+len(l.IPv6) == 0 {
		return nil, nil
	}
	l.Updated = now
	l, err := iplist.Normalize(l)
	if err != nil {
		return nil, fmt.Errorf("node: dev IP address list: %w", err)
	}
	return &l, nil
}

// signIPList signs the list of cfg (IPList) with the operator key and logs what is published.
func signIPList(cfg Config, key ed25519.PrivateKey, now time.Time, log *slog.Logger) (*iplist.Signed, error) {
	l, err := IPList(cfg, now)
	if err != nil || l == nil {
		return nil, err
	}
	s, err := iplist.Sign(*l, key)
	if err != nil {
		return nil, fmt.Errorf("node: IP address list: %w", err)
	}
	source := cfg.IPListFile
	if source == "" {
		source = "dev mode: the server's own addresses"
	}
	attrs := []any{"version", l.Version(), "ipv4", len(l.IPv4), "ipv6", len(l.IPv6),
		"effective_from", l.EffectiveFrom.Format(iplist.DateLayout), "expires", l.Expires.Format(iplist.DateLayout), "source", source}
	switch {
	case l.Expired(now):
		log.Error("the IP address list has expired: clients refuse it; set new dates (updated, expires) in the list file and restart", attrs...)
	case l.Expired(now.Add(ExpiryWarning)):
		log.Warn("the IP address list expires soon: clients will refuse it; set new dates (updated, expires) in the list file and restart", attrs...)
	default:
		log.Info("publishing the IP address list", attrs...)
	}
	return &s, nil
}
