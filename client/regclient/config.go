package regclient

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
	"github.com/chatd-dev/chatd/transport"
)

// DefaultChatPort is the chat port tried first (DESIGN N3).
const DefaultChatPort = 5222

// ParseConfig checks a published client configuration and returns the server's static key (to pin)
// and the chat endpoints this client library can dial, with their transports (tcp, tls, ws), for
// client.Config.Endpoints. They keep the published order, except that raw chatd on port 5222 comes
// first (DESIGN N3). Endpoints with a transport this library does not know are left out. When the
// server publishes only_443, endpoints that are not on the 443 path (TLS, WebSocket, or raw chatd on
// port 443, on a TLS/WebSocket endpoint's port or on the HTTPS URL's port) are left out. It fails
// when the protocol is not chatd/1, the key is malformed, or no endpoint is usable.
func ParseConfig(cc regtypes.ClientConfig) (serverKey [32]byte, endpoints []transport.Endpoint, err error) {
	if cc.Protocol != regtypes.Protocol {
		return serverKey, nil, fmt.Errorf("regclient: the server speaks protocol %q; this client speaks %q", cc.Protocol, regtypes.Protocol)
	}
	serverKey, err = pki.ParseStaticPublic(cc.ServerStaticKey)
	if err != nil {
		return serverKey, nil, fmt.Errorf("regclient: the server's static key: %w", err)
	}
	// Ports that are "443" for only_443: those of TLS and WebSocket endpoints and of the HTTPS URL.
	https := map[int]bool{443: true}
	for _, ep := range cc.ChatEndpoints {
		if ep.Transport == regtypes.TransportTLS || ep.Transport == regtypes.TransportWS {
			https[ep.Port] = true
		}
	}
	if u, err := url.Parse(cc.HTTPSURL); err == nil && u.Port() != "" {
		if p, err := strconv.Atoi(u.Port()); err == nil {
			https[p] = true
		}
	}
	var first, rest []transport.Endpoint
	seen := map[transport.Endpoint]bool{}
	var skipped []string
	for _, rep := range cc.ChatEndpoints {
		ep := transport.Endpoint(rep)
		if ep.Host == "" || ep.Port <= 0 || ep.Port > 65535 {
			skipped = append(skipped, fmt.Sprintf("%q port %d (invalid)", ep.Host, ep.Port))
			continue
		}
		switch {
		case ep.Transport != regtypes.TransportTCP && ep.Transport != regtypes.TransportTLS && ep.Transport != regtypes.TransportWS:
			skipped = append(skipped, ep.String()+" (unknown transport)")
			continue
		case cc.Only443 && ep.Transport == regtypes.TransportTCP && !https[ep.Port]:
			skipped = append(skipped, ep.String()+" (only_443)")
			continue
		case seen[ep]:
			continue
		}
		seen[ep] = true
		if ep.Transport == regtypes.TransportTCP && ep.Port == DefaultChatPort {
			first = append(first, ep)
		} else {
			rest = append(rest, ep)
		}
	}
	endpoints = append(first, rest...)
	if len(endpoints) == 0 {
		if len(skipped) == 0 {
			return serverKey, nil, errors.New("regclient: the server publishes no chat endpoint")
		}
		return serverKey, nil, fmt.Errorf("regclient: the server publishes no chat endpoint this client can dial (tcp, tls or ws); it has %v", skipped)
	}
	return serverKey, endpoints, nil
}

// ParseConfigAddrs is ParseConfig for callers that dial raw chatd only: the host:port of the tcp
// endpoints (5222 first). It fails when there is none.
func ParseConfigAddrs(cc regtypes.ClientConfig) (serverKey [32]byte, chatAddrs []string, err error) {
	serverKey, eps, err := ParseConfig(cc)
	if err != nil {
		return serverKey, nil, err
	}
	for _, ep := range eps {
		if ep.Transport == regtypes.TransportTCP {
			chatAddrs = append(chatAddrs, ep.Addr())
		}
	}
	if len(chatAddrs) == 0 {
		return serverKey, nil, fmt.Errorf("regclient: the server publishes no raw chatd (tcp) endpoint; it has %v", transport.EndpointStrings(eps))
	}
	return serverKey, chatAddrs, nil
}
