package netcheck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/client/regclient"
	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
	"github.com/chatd-dev/chatd/transport"
	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// Run checks the network as cfg says and returns the report. It never fails: what went wrong is in
// the report. It finishes within about 3 × Timeout + Idle, also when ctx has no deadline.
func Run(ctx context.Context, cfg Config) *Report {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &run{cfg: cfg, dial: cfg.Dial}
	if r.dial == nil {
		r.dial = (&net.Dialer{KeepAlive: -1}).DialContext
	}
	ctx, cancel := context.WithTimeout(ctx, 4*cfg.Timeout+cfg.Idle+cfg.Idle/5+20*time.Second)
	defer cancel()
	rep := &Report{Started: cfg.Now(), Server: cfg.ServerURL}
	if cfg.Proxy != nil {
		if u, err := cfg.Proxy(&http.Request{URL: &url.URL{Scheme: "https", Host: hostOf(cfg.ServerURL)}}); err == nil && u != nil {
			rep.Proxy = ProxyInfo{URL: u.Redacted(), Source: cfg.ProxySource}
		}
	}

	cc, ok := r.https(ctx, rep)
	key := cfg.ServerKey
	rep.Key.Pinned = key != [32]byte{}
	if !rep.Key.Pinned && ok {
		key, _ = pki.ParseStaticPublic(cc.ServerStaticKey)
	}
	if key != [32]byte{} {
		rep.Key.Key = pki.FormatPublic(key)
	}
	eps := r.endpoints(cc, ok)
	for _, e := range eps {
		if !slices.Contains(r.ports, e.Port) {
			r.ports = append(r.ports, e.Port)
		}
	}
	slices.Sort(r.ports)

	var wg sync.WaitGroup
	for _, h := range hostsOf(eps) {
		hr := HostReport{Host: h}
		rep.Hosts = append(rep.Hosts, hr)
	}
	for i := range rep.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.host(ctx, &rep.Hosts[i], eps)
		}()
	}
	rep.Paths = make([]PathCheck, len(eps))
	for i, ep := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep.Paths[i] = r.path(ctx, ep, key)
		}()
	}
	wg.Wait()
	if ok {
		rep.IPList = r.iplistCheck(ctx, rep, cc)
	}

	if cfg.Idle > 0 {
		rep.Idle = r.idle(ctx, rep, eps, key)
	}
	rep.Verdict = verdict(rep, cfg)
	rep.Took = cfg.Now().Sub(rep.Started)
	return rep
}

func hostOf(serverURL string) string {
	if u, err := url.Parse(serverURL); err == nil && u.Host != "" {
		return u.Host
	}
	return serverURL
}

// https fetches /v1/config.
func (r *run) https(ctx context.Context, rep *Report) (regtypes.ClientConfig, bool) {
	rep.HTTPS.URL = r.cfg.ServerURL + "/v1/config"
	rc, closeIdle := regClient(r.cfg, r.dial)
	defer closeIdle()
	rc.HTTPClient.Timeout = 2 * r.cfg.Timeout
	start := r.cfg.Now()
	cc, err := rc.Config(ctx)
	done := r.cfg.Now()
	rep.HTTPS.Took = done.Sub(start)
	if err != nil {
		rep.HTTPS.Status, rep.HTTPS.Error = Broken, err.Error()
		r.step(Step{Check: "https", Target: rep.HTTPS.URL, Status: Broken, Detail: err.Error(), Took: rep.HTTPS.Took})
		return cc, false
	}
	rep.HTTPS.Status = OK
	if st, err := time.Parse(time.RFC3339Nano, cc.ServerTime); err == nil {
		rep.HTTPS.ClockSkew = st.Sub(start.Add(rep.HTTPS.Took / 2)).Round(time.Millisecond)
	}
	r.step(Step{Check: "https", Target: rep.HTTPS.URL, Status: OK, Took: rep.HTTPS.Took,
		Detail: fmt.Sprintf("config fetched; clock skew %v", rep.HTTPS.ClockSkew)})
	return cc, true
}

// endpoints are the paths to test: the published ones (or Config.Server's 5222, 443 tls and ws),
// plus raw chatd on each 443 port, which tells a middlebox that cuts non-TLS traffic apart.
func (r *run) endpoints(cc regtypes.ClientConfig, ok bool) []transport.Endpoint {
	var eps []transport.Endpoint
	switch {
	case r.cfg.Server != "":
		h := r.cfg.Server
		eps = []transport.Endpoint{{Host: h, Port: 5222}, {Host: h, Port: 443, Transport: transport.TransportTLS}, {Host: h, Port: 443, Transport: transport.TransportWS}}
	case ok:
		for _, e := range cc.ChatEndpoints {
			eps = append(eps, transport.Endpoint(e).Normalize())
		}
	default:
		h, port := hostOf(r.cfg.ServerURL), 443
		if hh, p, err := net.SplitHostPort(h); err == nil {
			h = hh
			port, _ = strconv.Atoi(p)
		}
		eps = []transport.Endpoint{{Host: h, Port: regclient.DefaultChatPort}, {Host: h, Port: port, Transport: transport.TransportTLS}, {Host: h, Port: port, Transport: transport.TransportWS}}
	}
	var out []transport.Endpoint
	for _, e := range eps {
		e = e.Normalize()
		if !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	for _, e := range out {
		raw := transport.Endpoint{Host: e.Host, Port: e.Port, Transport: transport.TransportTCP}
		if e.Transport == transport.TransportTLS && !slices.Contains(out, raw) {
			out = append(out, raw)
		}
	}
	return out
}

func hostsOf(eps []transport.Endpoint) []string {
	var hs []string
	for _, e := range eps {
		if !slices.Contains(hs, e.Host) {
			hs = append(hs, e.Host)
		}
	}
	return hs
}

// host checks DNS, the TCP ports and TLS of one host.
func (r *run) host(ctx context.Context, hr *HostReport, eps []transport.Endpoint) {
	start := r.cfg.Now()
	if ip := net.ParseIP(hr.Host); ip != nil {
		hr.DNS = DNSCheck{Status: OK, Addrs: []string{ip.String()}}
	} else {
		dctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		addrs, err := net.DefaultResolver.LookupHost(dctx, hr.Host)
		cancel()
		hr.DNS = DNSCheck{Status: OK, Addrs: addrs, Took: r.cfg.Now().Sub(start)}
		if err != nil {
			hr.DNS.Status, hr.DNS.Error = Broken, err.Error()
		}
		r.step(Step{Check: "dns", Target: hr.Host, Status: hr.DNS.Status, Detail: fmt.Sprint(hr.DNS.Addrs, " ", hr.DNS.Error), Took: hr.DNS.Took})
	}
	var ports []int
	tlsPort := 0
	for _, e := range eps {
		if e.Host != hr.Host {
			continue
		}
		if !slices.Contains(ports, e.Port) {
			ports = append(ports, e.Port)
		}
		if e.Transport == transport.TransportTLS {
			tlsPort = e.Port
		}
	}
	slices.Sort(ports)
	hr.Ports = make([]PortCheck, len(ports))
	var wg sync.WaitGroup
	for i, p := range ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hr.Ports[i] = r.port(ctx, hr.Host, p)
		}()
	}
	if tlsPort != 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hr.TLS = r.tls(ctx, hr.Host, tlsPort)
		}()
	}
	wg.Wait()
}

func (r *run) dialer() *transport.Dialer {
	return &transport.Dialer{DialTCP: r.dial, RootCAs: r.cfg.RootCAs, Proxy: r.cfg.Proxy, UserAgent: "chatd-netcheck", KeepAlive: -1, UserTimeout: 7 * time.Second}
}

// port opens a TCP connection (or a proxy tunnel) to host:port.
func (r *run) port(ctx context.Context, host string, port int) PortCheck {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	start := r.cfg.Now()
	c, err := r.dialer().Dial(ctx, transport.Endpoint{Host: host, Port: port, Transport: transport.TransportTCP})
	pc := PortCheck{Port: port, Result: classify(err), Took: r.cfg.Now().Sub(start), Error: errText(err)}
	if err == nil {
		c.Close()
	}
	st := OK
	if err != nil {
		st = Broken
	}
	r.step(Step{Check: "tcp", Target: net.JoinHostPort(host, strconv.Itoa(port)), Status: st, Detail: pc.Result, Took: pc.Took})
	return pc
}

// tls makes the tls transport's handshake and looks at the certificate.
func (r *run) tls(ctx context.Context, host string, port int) *TLSCheck {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	start := r.cfg.Now()
	tc := &TLSCheck{}
	raw, err := r.dialer().Dial(ctx, transport.Endpoint{Host: host, Port: port, Transport: transport.TransportTCP})
	if err != nil {
		tc.Status, tc.Error = Broken, "no TCP connection: "+err.Error()
		return tc
	}
	defer raw.Close()
	// Verify by hand after the handshake, so that an intercepting certificate can be described.
	conn := tls.Client(raw, &tls.Config{ServerName: host, InsecureSkipVerify: true, NextProtos: []string{transport.ALPNChat}, MinVersion: tls.VersionTLS12})
	err = conn.HandshakeContext(ctx)
	tc.Took = r.cfg.Now().Sub(start)
	if err != nil {
		tc.Status, tc.Error = Broken, err.Error()
		r.step(Step{Check: "tls", Target: net.JoinHostPort(host, strconv.Itoa(port)), Status: Broken, Detail: err.Error(), Took: tc.Took})
		return tc
	}
	cs := conn.ConnectionState()
	tc.Version, tc.ALPN = tls.VersionName(cs.Version), cs.NegotiatedProtocol
	leaf := cs.PeerCertificates[0]
	tc.Subject, tc.Issuer = leaf.Subject.String(), leaf.Issuer.String()
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, verr := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: r.cfg.RootCAs, Intermediates: inter})
	tc.Status = OK
	switch {
	case verr != nil:
		tc.Status, tc.Intercepted = Degraded, true
		tc.Error = fmt.Sprintf("the certificate presented (issued by %q) is not accepted: %v — a TLS-inspecting proxy or middlebox", tc.Issuer, verr)
	case tc.ALPN != transport.ALPNChat:
		tc.Status, tc.Intercepted = Degraded, true
		tc.Error = fmt.Sprintf("TLS did not negotiate %s (got %q): something re-terminates TLS on the way", transport.ALPNChat, tc.ALPN)
	}
	r.step(Step{Check: "tls", Target: net.JoinHostPort(host, strconv.Itoa(port)), Status: tc.Status,
		Detail: fmt.Sprintf("%s, ALPN %q, issuer %s %s", tc.Version, tc.ALPN, tc.Issuer, tc.Error), Took: tc.Took})
	return tc
}

// probeConn is a probe login in progress.
type probeConn struct {
	sc *noisesock.Conn
	nc net.Conn
}

// probe dials ep and logs in as a probe (holding the connection for hold when positive). stage says
// where it failed.
func (r *run) probe(ctx context.Context, ep transport.Endpoint, key [32]byte, hold time.Duration) (*probeConn, string, error) {
	dctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	nc, err := r.dialer().Dial(dctx, ep)
	if err != nil {
		var de *transport.DialError
		if errors.As(err, &de) {
			return nil, de.Step, err
		}
		return nil, "connect", err
	}
	dev, err := noisesock.GenerateKeypair()
	if err != nil {
		nc.Close()
		return nil, "handshake", err
	}
	sc, _, err := noisesock.Client(dctx, nc, noisesock.ClientConfig{DeviceKey: dev, ServerKey: key, Hello: &chatdpb.ClientHello{
		ProtocolVersion: wire.Version, ClientVersion: "netcheck/1", Probe: true,
		Path: ep.Transport + ":" + strconv.Itoa(ep.Port) + "+netcheck", ProbeHoldMs: uint32(hold / time.Millisecond)}})
	if err != nil {
		nc.Close()
		return nil, "handshake", err
	}
	nc.SetReadDeadline(time.Now().Add(r.cfg.Timeout))
	env, err := readEnvelope(sc)
	nc.SetReadDeadline(time.Time{})
	if err != nil {
		nc.Close()
		return nil, "login", err
	}
	switch {
	case env.GetLoginResult().GetStatus() == chatdpb.LoginResult_PROBE_OK:
		return &probeConn{sc: sc, nc: nc}, "", nil
	case env.GetClose() != nil:
		cl := env.GetClose()
		nc.Close()
		return nil, "login", fmt.Errorf("the server closed the probe: %s %s (retry after %v)", wire.CloseReasonName(cl.GetReason()), cl.GetDetail(),
			time.Duration(cl.GetRetryAfterMs())*time.Millisecond)
	}
	nc.Close()
	return nil, "login", fmt.Errorf("unexpected answer to a probe login: %v", env)
}

func readEnvelope(sc *noisesock.Conn) (*chatdpb.Envelope, error) {
	b, err := sc.ReadFrame()
	if err != nil {
		return nil, err
	}
	var env chatdpb.Envelope
	if err := wire.DecodeEnvelope(b, &env); err != nil {
		return nil, err
	}
	return &env, nil
}

// path runs a probe login on ep.
func (r *run) path(ctx context.Context, ep transport.Endpoint, key [32]byte) PathCheck {
	pc := PathCheck{Endpoint: ep.String(), Transport: ep.Transport, Port: ep.Port}
	if u, err := r.dialer().ProxyFor(ep); err == nil && u != nil {
		pc.Proxy = u.Redacted()
	}
	start := r.cfg.Now()
	var (
		p   *probeConn
		err error
	)
	if key == [32]byte{} {
		// Without a key the handshake cannot be checked; the transport still can.
		dctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		nc, derr := r.dialer().Dial(dctx, ep)
		cancel()
		pc.Took = r.cfg.Now().Sub(start)
		if derr != nil {
			pc.Status, pc.Error, pc.Stage = Broken, derr.Error(), "connect"
			var de *transport.DialError
			if errors.As(derr, &de) {
				pc.Stage = de.Step
			}
		} else {
			nc.Close()
			pc.Status, pc.Error = Degraded, "the transport works; the chatd handshake was not tested: no server key known (HTTPS failed and this bizapi is not registered)"
		}
		r.step(Step{Check: "chatd", Target: pc.Endpoint, Status: pc.Status, Detail: pc.Error, Took: pc.Took})
		return pc
	}
	p, pc.Stage, err = r.probe(ctx, ep, key, 0)
	pc.Took = r.cfg.Now().Sub(start)
	if err != nil {
		pc.Status, pc.Error = Broken, err.Error()
	} else {
		pc.Status, pc.Stage = OK, ""
		p.nc.Close()
	}
	r.step(Step{Check: "chatd", Target: pc.Endpoint, Status: pc.Status, Detail: pc.Error, Took: pc.Took})
	return pc
}
