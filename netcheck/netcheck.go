// Package netcheck tests whether a network lets a chatd client work, and says what to change when it
// does not (DESIGN N10, docs/network.md). Run fills a typed Report: the HTTPS config fetch (which also
// gives the server's endpoints, key and clock), DNS, TCP to 5222 and 443 (open, refused, silently
// dropped, unreachable), TLS on 443 (the certificate, interception), the chatd handshake on every path
// with a probe login that needs no account, optionally how long the network lets an idle connection
// live, and a verdict in the reference's terms with an action for every failure. Report.Render prints
// it for people; it marshals to JSON for machines.
package netcheck

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/transport"
)

// Config says what to check and how.
type Config struct {
	// ServerURL is chatd's HTTPS URL (registration and config), e.g. https://chat.example.com.
	ServerURL string
	// Server, if set, tests this one host (name or address) on 5222 and 443 instead of the endpoints
	// the server publishes: the reference's "connect to a single server".
	Server string
	// RootCAs verify chatd's TLS certificate; nil means the system roots.
	RootCAs *x509.CertPool
	// Proxy is the HTTP CONNECT proxy chat and HTTPS use (nil: direct); ProxySource says where the
	// setting came from ("config", "environment"), for the report.
	Proxy       transport.ProxyFunc
	ProxySource string
	// ServerKey is the server's static key pinned at registration; zero means "not registered": the
	// key published in /v1/config is used, and the report says it is not pinned.
	ServerKey [32]byte
	// OperatorKey is the operator's Ed25519 key pinned at registration, which verifies the IP address
	// list; nil means the operator_key published in /v1/config (the report says it is not pinned).
	OperatorKey ed25519.PublicKey
	// Only443 reports 5222 as not wanted rather than failing.
	Only443 bool
	// AllRanges also tests TCP to one address of every range of the verified IP list (the first host
	// address; at most MaxRanges of them) on the deployment's ports: "every address from the IP list".
	AllRanges bool
	// Idle, if positive, measures how long the network lets an idle connection live, up to Idle: ten
	// held probe connections, idle for Idle/10, 2×Idle/10, … Idle, each then pinged.
	Idle time.Duration
	// Timeout bounds each single check (a connect, a handshake). If zero, 5 s.
	Timeout time.Duration
	// Dial opens TCP connections; nil uses a net.Dialer.
	Dial transport.DialFunc
	// Progress, if set, is called as each check finishes (from several goroutines, one at a time).
	Progress func(Step)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Step is one finished check, for progress output.
type Step struct {
	Check  string // "https", "dns", "tcp", "tls", "chatd", "idle"
	Target string
	Status Status
	Detail string
	Took   time.Duration
}

// Status of a check or of the whole network.
type Status string

const (
	OK       Status = "ok"
	Degraded Status = "degraded" // works, but not as recommended
	Broken   Status = "broken"   // does not work
	Skipped  Status = "skipped"
)

// Report is everything netcheck found.
type Report struct {
	Started time.Time     `json:"started"`
	Took    time.Duration `json:"took_ns"`
	Server  string        `json:"server_url"`
	Proxy   ProxyInfo     `json:"proxy"`
	HTTPS   HTTPSCheck    `json:"https"`
	Key     KeyInfo       `json:"server_key"`
	Hosts   []HostReport  `json:"hosts"`
	Paths   []PathCheck   `json:"paths"`
	IPList  *IPListCheck  `json:"iplist,omitempty"`
	Ranges  []RangeCheck  `json:"ranges,omitempty"`
	Idle    *IdleCheck    `json:"idle,omitempty"`
	Verdict Verdict       `json:"verdict"`
}

// ProxyInfo is the proxy in use (password hidden).
type ProxyInfo struct {
	URL    string `json:"url,omitempty"`
	Source string `json:"source,omitempty"`
}

// HTTPSCheck is the config fetch over HTTPS (N7).
type HTTPSCheck struct {
	URL       string        `json:"url"`
	Status    Status        `json:"status"`
	Took      time.Duration `json:"took_ns"`
	Error     string        `json:"error,omitempty"`
	ClockSkew time.Duration `json:"clock_skew_ns"` // server clock minus ours (0 when unknown)
}

// KeyInfo is the server key the handshakes were checked against.
type KeyInfo struct {
	Key    string `json:"key"`
	Pinned bool   `json:"pinned"`
}

// HostReport is what was found for one server host.
type HostReport struct {
	Host  string      `json:"host"`
	DNS   DNSCheck    `json:"dns"`
	Ports []PortCheck `json:"ports"`
	TLS   *TLSCheck   `json:"tls,omitempty"`
}

// DNSCheck resolves a host name (an address resolves to itself).
type DNSCheck struct {
	Status Status        `json:"status"`
	Addrs  []string      `json:"addrs,omitempty"`
	Took   time.Duration `json:"took_ns"`
	Error  string        `json:"error,omitempty"`
}

// PortCheck is a TCP connect (through the proxy when one is set: then the proxy's answer).
type PortCheck struct {
	Port int `json:"port"`
	// Result is "open", "refused" (a reset: nothing listens, or a REJECT rule), "timeout" (no answer:
	// a DROP rule), "unreachable" (no route), "proxy_refused" (the proxy would not tunnel), "error".
	Result string        `json:"result"`
	Took   time.Duration `json:"took_ns"`
	Error  string        `json:"error,omitempty"`
}

// TLSCheck is a TLS handshake on 443 as the tls transport makes it.
type TLSCheck struct {
	Status  Status `json:"status"`
	Version string `json:"version,omitempty"`
	ALPN    string `json:"alpn,omitempty"`
	Subject string `json:"subject,omitempty"`
	Issuer  string `json:"issuer,omitempty"`
	// Intercepted: the certificate presented is not one the configured roots accept (a TLS-inspecting
	// proxy or middlebox), or the handshake did not negotiate chatd/1.
	Intercepted bool          `json:"intercepted"`
	Took        time.Duration `json:"took_ns"`
	Error       string        `json:"error,omitempty"`
}

// PathCheck is the chatd handshake and a probe login on one path.
type PathCheck struct {
	Endpoint  string        `json:"endpoint"`
	Transport string        `json:"transport"`
	Port      int           `json:"port"`
	Proxy     string        `json:"proxy,omitempty"`
	Status    Status        `json:"status"`
	Took      time.Duration `json:"took_ns"`
	Error     string        `json:"error,omitempty"`
	// Stage is where a failure happened: "connect", "proxy", "tls", "websocket", "handshake",
	// "login".
	Stage string `json:"stage,omitempty"`
}

// IdleCheck is the idle-lifetime measurement.
type IdleCheck struct {
	Path string `json:"path"`
	// Survived is the longest idle time a connection lived through; Died the shortest it did not
	// (0: none died within the test).
	Survived time.Duration `json:"survived_ns"`
	Died     time.Duration `json:"died_ns"`
	// Estimate is where between the two the network forgets idle connections (0 when none died).
	Estimate time.Duration `json:"estimate_ns"`
	// Recommended is the ping interval to use: the default when the network keeps connections for
	// longer than the test, else half the estimate.
	Recommended time.Duration `json:"recommended_ping_interval_ns"`
	Status      Status        `json:"status"`
	Error       string        `json:"error,omitempty"`
}

// Verdict is the conclusion.
type Verdict struct {
	Status  Status   `json:"status"`
	Summary string   `json:"summary"`
	Actions []string `json:"actions,omitempty"`
	Notes   []string `json:"notes,omitempty"`
}

// ExitCode is the process status for a verdict: 0 ok, 1 degraded, 2 broken.
func (v Verdict) ExitCode() int {
	switch v.Status {
	case OK:
		return 0
	case Degraded:
		return 1
	}
	return 2
}

// run carries a Run's state.
type run struct {
	cfg   Config
	dial  transport.DialFunc
	ports []int      // the deployment's ports, from its endpoints
	mu    sync.Mutex // serializes Progress
}

func (r *run) step(s Step) {
	if r.cfg.Progress == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cfg.Progress(s)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// classify names a failed TCP connect.
func classify(err error) string {
	var pe *transport.ProxyError
	var ne net.Error
	switch {
	case err == nil:
		return "open"
	case errors.As(err, &pe):
		return "proxy_refused"
	case isRefused(err):
		return "refused"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case isUnreachable(err):
		return "unreachable"
	}
	return "error"
}
