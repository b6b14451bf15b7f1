// Package labchatd runs the real chatd binary in the server host of a network lab (internal/netlab)
// and registers devices with it over HTTPS: the part of the lab tests (lab/) that chatbench recover
// shares. chatd listens at netlab.ServerAddr: raw chatd on 5222, TLS and WebSocket (and raw chatd) on
// 443, in dev mode with its own CA and codes written to its data folder.
package labchatd

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/client/regclient"
	"github.com/chatd-dev/chatd/internal/netlab"
	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
	"github.com/chatd-dev/chatd/transport"
)

// Build builds the command github.com/chatd-dev/chatd/cmd/NAME (chatd, bizapi) into dir with go build
// and returns the binary's path. It needs the Go toolchain and this module's source: the working
// directory must be inside the module.
func Build(dir, name string) (string, error) {
	bin := filepath.Join(dir, name)
	pkg := "github.com/chatd-dev/chatd/cmd/" + name
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s (needs the Go toolchain, run inside the chatd source tree): %v\n%s", pkg, err, out)
	}
	return bin, nil
}

// Server is chatd running in a lab's server host.
type Server struct {
	T    netlab.TB
	Lab  *netlab.Lab
	Bin  string         // the chatd binary
	Args []string       // its arguments
	Proc *netlab.Proc   // the running chatd
	Data string         // its data folder
	Pool *x509.CertPool // its dev CA, for the clients' TLS
	Key  [32]byte       // its static key, for the clients' Noise handshake

	Config    regtypes.ClientConfig // its /v1/config
	Endpoints []transport.Endpoint  // the chat endpoints it publishes
}

// Start runs bin (chatd) serve --dev in l's server host with extra arguments, waits until it listens
// on 443 and 5222, and reads its config over HTTPS from the server host. It stops with t (its log is
// logged when t failed).
func Start(t netlab.TB, l *netlab.Lab, bin string, extra ...string) *Server {
	t.Helper()
	s := &Server{T: t, Lab: l, Bin: bin, Data: t.TempDir()}
	s.Args = append([]string{"serve", "--dev", "--data", s.Data,
		"--chat-listen", netlab.ServerAddr + ":5222", "--https-listen", netlab.ServerAddr + ":443",
		"--admin-listen", "127.0.0.1:9480", "--public-host", netlab.ServerAddr, "--log-level", "debug"}, extra...)
	s.start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("chatd log:\n%s", netlab.Tail(s.Proc.Output(), 60))
		}
	})
	pem, err := os.ReadFile(filepath.Join(s.Data, "tls", "ca.pem"))
	if err != nil {
		t.Fatalf("%v", err)
	}
	s.Pool = x509.NewCertPool()
	s.Pool.AppendCertsFromPEM(pem)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s.Config, err = s.Reg(l.Server, nil).Config(ctx); err != nil {
		t.Fatalf("%v", err)
	}
	if s.Key, s.Endpoints, err = regclient.ParseConfig(s.Config); err != nil {
		t.Fatalf("%v", err)
	}
	return s
}

func (s *Server) start() {
	s.T.Helper()
	s.Proc = s.Lab.Server.Start(s.Bin, s.Args...)
	s.Lab.Server.WaitListening(s.Proc, netlab.ServerAddr+":443", 20*time.Second)
	s.Lab.Server.WaitListening(s.Proc, netlab.ServerAddr+":5222", 5*time.Second)
}

// Restart kills chatd with SIGKILL and starts it again.
func (s *Server) Restart() {
	s.T.Helper()
	s.Proc.Kill()
	s.start()
}

// Reg is a registration client that dials from h, through proxy if set.
func (s *Server) Reg(h *netlab.Host, proxy transport.ProxyFunc) *regclient.Client {
	rc := regclient.NewWithProxy(s.Config.HTTPSURL, s.Pool, proxy)
	if rc.BaseURL == "" {
		rc.BaseURL = "https://" + netlab.ServerAddr
	}
	rc.HTTPClient.Transport.(*http.Transport).DialContext = h.DialContext
	return rc
}

// Register registers phone through rc with a fresh device key, reading the code the dev sender wrote.
func (s *Server) Register(rc *regclient.Client, phone string) noisesock.Keypair {
	t := s.T
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cr, err := rc.RequestCode(ctx, regtypes.CodeRequest{Phone: phone, Method: "sms"})
	if err != nil {
		t.Fatalf("%v", err)
	}
	code, err := os.ReadFile(filepath.Join(s.Data, "codes", cr.Phone))
	if err != nil {
		t.Fatalf("%v", err)
	}
	dev, err := pki.GenerateStaticKey()
	if err != nil {
		t.Fatalf("%v", err)
	}
	if _, err := rc.Verify(ctx, regtypes.VerifyRequest{Phone: phone, Code: strings.TrimSpace(string(code)),
		DevicePublicKey: base64.StdEncoding.EncodeToString(dev.Public[:])}); err != nil {
		t.Fatalf("%v", err)
	}
	return dev
}

// ClientConfig is the client configuration of device dev in host h: the published endpoints, the CA,
// the server key, dialling from h, everything else at the library's defaults; logs are discarded.
func (s *Server) ClientConfig(h *netlab.Host, dev noisesock.Keypair) client.Config {
	return client.Config{
		Endpoints: s.Endpoints,
		RootCAs:   s.Pool,
		ServerKey: s.Key,
		DeviceKey: dev,
		Dial:      h.DialContext,
		Logger:    slog.New(slog.DiscardHandler),
	}
}

// Connect runs a fresh client with cfg until it is connected (at most timeout), stops it, and returns
// its status then: Status.DialTime is the client's own measure of the connect (the race of the paths,
// the handshake and the login). The error says when it did not connect.
func Connect(ctx context.Context, cfg client.Config, timeout time.Duration) (client.Status, error) {
	c, err := client.New(cfg)
	if err != nil {
		return client.Status{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	wctx, wcancel := context.WithTimeout(ctx, timeout)
	err = c.WaitConnected(wctx)
	wcancel()
	st := c.Status()
	cancel()
	<-done
	if err != nil {
		return st, fmt.Errorf("not connected within %v (%v): %s %s", timeout, err, st.LastClose, st.LastError)
	}
	return st, nil
}
