package regclient

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"

	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
)

// DefaultChatPort is the chat port tried first (DESIGN N3).
const DefaultChatPort = 5222

// ParseConfig checks a published client configuration and returns the server's static key (to pin)
// and the chat endpoints this client library can dial, as host:port. Only endpoints with transport
// "tcp" are returned (the library dials raw TCP), in the published order except that port 5222 comes
// first. When the server publishes only_443, endpoints on other ports than the HTTPS one are left
// out. It fails when the protocol is not chatd/1, the key is malformed, or no endpoint is usable.
func ParseConfig(cc regtypes.ClientConfig) (serverKey [32]byte, chatAddrs []string, err error) {
	if cc.Protocol != regtypes.Protocol {
		return serverKey, nil, fmt.Errorf("regclient: the server speaks protocol %q; this client speaks %q", cc.Protocol, regtypes.Protocol)
	}
	serverKey, err = pki.ParseStaticPublic(cc.ServerStaticKey)
	if err != nil {
		return serverKey, nil, fmt.Errorf("regclient: the server's static key: %w", err)
	}
	// Ports that are "443" for only_443: those of TLS endpoints and of the HTTPS URL.
	https := map[int]bool{443: true}
	for _, ep := range cc.ChatEndpoints {
		if ep.Transport == regtypes.TransportTLS {
			https[ep.Port] = true
		}
	}
	if u, err := url.Parse(cc.HTTPSURL); err == nil && u.Port() != "" {
		if p, err := strconv.Atoi(u.Port()); err == nil {
			https[p] = true
		}
	}
	var first, rest []string
	seen := map[string]bool{}
	var skipped []string
	for _, ep := range cc.ChatEndpoints {
		if ep.Host == "" || ep.Port <= 0 || ep.Port > 65535 {
			skipped = append(skipped, fmt.Sprintf("%q port %d (invalid)", ep.Host, ep.Port))
			continue
		}
		addr := net.JoinHostPort(ep.Host, strconv.Itoa(ep.Port))
		switch {
		case ep.Transport != regtypes.TransportTCP:
			skipped = append(skipped, addr+" ("+ep.Transport+")")
			continue
		case cc.Only443 && !https[ep.Port]:
			skipped = append(skipped, addr+" (only_443)")
			continue
		case seen[addr]:
			continue
		}
		seen[addr] = true
		if ep.Port == DefaultChatPort {
			first = append(first, addr)
		} else {
			rest = append(rest, addr)
		}
	}
	chatAddrs = append(first, rest...)
	if len(chatAddrs) == 0 {
		if len(skipped) == 0 {
			return serverKey, nil, errors.New("regclient: the server publishes no chat endpoint")
		}
		return serverKey, nil, fmt.Errorf("regclient: the server publishes no chat endpoint this client can dial (raw tcp); it has %v", skipped)
	}
	return serverKey, chatAddrs, nil
}
