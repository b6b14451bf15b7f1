package netcheck

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/client/regclient"
	"github.com/chatd-dev/chatd/iplist"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
	"github.com/chatd-dev/chatd/transport"
)

// IPListCheck is the server's signed IP address list, fetched and verified.
type IPListCheck struct {
	Status        Status `json:"status"`
	Version       string `json:"version,omitempty"`
	Updated       string `json:"updated,omitempty"`
	EffectiveFrom string `json:"effective_from,omitempty"`
	Expires       string `json:"expires,omitempty"`
	IPv4          int    `json:"ipv4_ranges"`
	IPv6          int    `json:"ipv6_ranges"`
	// KeyPinned: verified with the operator key pinned at registration, not the published one.
	KeyPinned bool `json:"key_pinned"`
	// Outside are the server addresses (DNS results) that no range of the list covers.
	Outside []string `json:"outside,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// operatorKey is the key the list is checked with: the pinned one, else the published one.
func operatorKey(cfg Config, cc regtypes.ClientConfig) (ed25519.PublicKey, bool, error) {
	if len(cfg.OperatorKey) == ed25519.PublicKeySize {
		return cfg.OperatorKey, true, nil
	}
	if cc.OperatorKey == "" {
		return nil, false, errors.New("no operator key: this bizapi pinned none and the server publishes none")
	}
	k, err := pki.ParseOperatorPublic(cc.OperatorKey)
	if err != nil {
		return nil, false, fmt.Errorf("the key published in /v1/config: %w", err)
	}
	return k, false, nil
}

// FetchIPList downloads the list over HTTPS as cfg says (proxy, CA, dial) and verifies it with the
// pinned operator key (or, unpinned, the one in cc).
func FetchIPList(ctx context.Context, cfg Config, cc regtypes.ClientConfig) (iplist.List, bool, error) {
	key, pinned, err := operatorKey(cfg, cc)
	if err != nil {
		return iplist.List{}, false, err
	}
	rc, done := regClient(cfg, cfg.Dial)
	defer done()
	l, err := rc.IPList(ctx, key)
	return l, pinned, err
}

// iplistCheck fetches and verifies the list, looks up the servers' addresses in it and, with
// AllRanges, tests every range.
func (r *run) iplistCheck(ctx context.Context, rep *Report, cc regtypes.ClientConfig) *IPListCheck {
	ic := &IPListCheck{}
	ctx, cancel := context.WithTimeout(ctx, 2*r.cfg.Timeout)
	defer cancel()
	l, pinned, err := FetchIPList(ctx, r.cfg, cc)
	ic.KeyPinned = pinned
	var ae *regclient.APIError
	switch {
	case errors.As(err, &ae) && ae.Code == regtypes.CodeNoIPList:
		ic.Status, ic.Error = Skipped, "the server publishes no IP address list"
	case err != nil:
		ic.Status, ic.Error = Degraded, err.Error()
	default:
		ic.Status = OK
		ic.Version, ic.IPv4, ic.IPv6 = l.Version(), len(l.IPv4), len(l.IPv6)
		ic.Updated, ic.EffectiveFrom, ic.Expires = date(l.Updated), date(l.EffectiveFrom), date(l.Expires)
		ranges := l.Ranges()
		for _, h := range rep.Hosts {
			for _, a := range h.DNS.Addrs {
				addr, err := netip.ParseAddr(a)
				if err != nil {
					continue
				}
				if !slices.ContainsFunc(ranges, func(p netip.Prefix) bool { return p.Contains(addr.Unmap()) }) {
					ic.Outside = append(ic.Outside, a)
				}
			}
		}
		if len(ic.Outside) > 0 {
			ic.Status = Degraded
		}
		if r.cfg.AllRanges {
			rep.Ranges = r.rangeChecks(ctx, l, r.ports)
		}
	}
	detail := ic.Error
	if ic.Status == OK || ic.Version != "" {
		detail = fmt.Sprintf("version %s, %d IPv4 and %d IPv6 ranges, expires %s, key pinned: %v", ic.Version, ic.IPv4, ic.IPv6, ic.Expires, ic.KeyPinned)
	}
	r.step(Step{Check: "iplist", Target: r.cfg.ServerURL + "/v1/iplist.zip", Status: ic.Status, Detail: detail})
	return ic
}

func date(t time.Time) string { return t.Format(iplist.DateLayout) }

// FetchConfig fetches the server's /v1/config as cfg says (proxy, CA, dial).
func FetchConfig(ctx context.Context, cfg Config) (regtypes.ClientConfig, error) {
	rc, done := regClient(cfg, cfg.Dial)
	defer done()
	return rc.Config(ctx)
}

// regClient is the HTTPS client of cfg's server: its CA and proxy, and dial when not nil. done closes
// its idle connections.
func regClient(cfg Config, dial transport.DialFunc) (rc *regclient.Client, done func()) {
	rc = regclient.NewWithProxy(cfg.ServerURL, cfg.RootCAs, cfg.Proxy)
	tr := rc.HTTPClient.Transport.(*http.Transport)
	if dial != nil {
		tr.DialContext = dial
	}
	return rc, tr.CloseIdleConnections
}

// MaxRanges is the most ranges of the IP list Config.AllRanges tests.
const MaxRanges = 256

// RangeCheck is TCP to one address of one range of the IP list, on each of the deployment's ports.
type RangeCheck struct {
	Range string      `json:"range"`
	Addr  string      `json:"addr"`
	Ports []PortCheck `json:"ports"`
}

// rangeChecks tests the deployment's ports (those of its endpoints: 5222 and 443 unless it publishes
// others) on the first host address of each range, a few at a time.
func (r *run) rangeChecks(ctx context.Context, l iplist.List, ports []int) []RangeCheck {
	ranges := l.Ranges()
	if len(ranges) > MaxRanges {
		ranges = ranges[:MaxRanges]
	}
	out := make([]RangeCheck, len(ranges))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, p := range ranges {
		a := p.Addr()
		if p.Bits() < a.BitLen() {
			a = a.Next() // the network address itself is rarely a host
		}
		out[i] = RangeCheck{Range: p.String(), Addr: a.String(), Ports: make([]PortCheck, len(ports))}
		for j, port := range ports {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				out[i].Ports[j] = r.port(ctx, a.String(), port)
			}()
		}
	}
	wg.Wait()
	return out
}
