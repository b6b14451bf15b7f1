package transport

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// TransportWS is a chat stream carried in binary WebSocket messages over HTTPS (wss://host:port/v1/chat).
const TransportWS = "ws"

// WebSocket path and subprotocol of the ws transport.
const (
	WSPath        = "/v1/chat"
	WSSubprotocol = "chatd/1"
)

// Endpoint is one way to reach a chat server: an address and the transport spoken there.
type Endpoint struct {
	Host string
	Port int
	// Transport is TransportTCP, TransportTLS or TransportWS; "" means TransportTCP.
	Transport string
}

// Addr returns host:port.
func (e Endpoint) Addr() string { return net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) }

// String returns host:port/transport, the form ParseEndpoint reads.
func (e Endpoint) String() string { return e.Addr() + "/" + e.transport() }

// IsZero reports whether e is the zero Endpoint (no endpoint).
func (e Endpoint) IsZero() bool { return e == Endpoint{} }

func (e Endpoint) transport() string {
	if e.Transport == "" {
		return TransportTCP
	}
	return e.Transport
}

// Normalize returns e with an empty transport set to TransportTCP.
func (e Endpoint) Normalize() Endpoint {
	e.Transport = e.transport()
	return e
}

// Validate reports whether e can be dialled.
func (e Endpoint) Validate() error {
	switch {
	case e.Host == "":
		return fmt.Errorf("endpoint %s: no host", e)
	case e.Port <= 0 || e.Port > 65535:
		return fmt.Errorf("endpoint %s: port %d out of range", e, e.Port)
	}
	switch e.transport() {
	case TransportTCP, TransportTLS, TransportWS:
		return nil
	}
	return fmt.Errorf("endpoint %s: unknown transport %q (want tcp, tls or ws)", e, e.Transport)
}

// ParseEndpoint reads "host:port" (raw chatd, transport tcp) or "host:port/transport" with transport
// tcp, tls or ws; IPv6 hosts are written in brackets ("[::1]:443/tls").
func ParseEndpoint(s string) (Endpoint, error) {
	addr, tr := s, TransportTCP
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		addr, tr = s[:i], s[i+1:]
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return Endpoint{}, fmt.Errorf("endpoint %q: want host:port or host:port/transport: %w", s, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return Endpoint{}, fmt.Errorf("endpoint %q: port %q is not a number", s, port)
	}
	e := Endpoint{Host: host, Port: p, Transport: tr}
	if err := e.Validate(); err != nil {
		return Endpoint{}, err
	}
	return e, nil
}

// ParseEndpoints parses each string with ParseEndpoint.
func ParseEndpoints(ss []string) ([]Endpoint, error) {
	out := make([]Endpoint, 0, len(ss))
	var errs []error
	for _, s := range ss {
		e, err := ParseEndpoint(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, e)
	}
	return out, errors.Join(errs...)
}

// EndpointStrings returns the String form of each endpoint.
func EndpointStrings(eps []Endpoint) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.String()
	}
	return out
}

// On443 reports whether ep travels the 443 path of the deployment described by all: it is TLS or
// WebSocket, or its port is 443, or it shares host and port with a TLS or WebSocket endpoint in all
// (raw chatd on the multiplexed 443 listener). Everything else (raw chatd on 5222) is the direct path
// that 443-only mode never dials.
func On443(ep Endpoint, all []Endpoint) bool {
	ep = ep.Normalize()
	if ep.Transport != TransportTCP || ep.Port == 443 {
		return true
	}
	for _, o := range all {
		if o = o.Normalize(); o.Transport != TransportTCP && o.Host == ep.Host && o.Port == ep.Port {
			return true
		}
	}
	return false
}
