// Package node assembles a complete chatd server from its parts: the data folder (store, keys, dev
// TLS), the chat listener (5222), the 443 listener with its multiplexer (chat inside TLS, raw chat, the
// HTTPS registration/config API, chat over WebSocket at GET /v1/chat), and the admin listener
// (metrics, health). cmd/chatd, the quickstart
// and end-to-end tests start one with Start.
package node

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/chatd-dev/chatd/internal/run"
	"github.com/chatd-dev/chatd/iplist"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server"
	"github.com/chatd-dev/chatd/server/regapi"
	"github.com/chatd-dev/chatd/server/store"
	"github.com/chatd-dev/chatd/transport"
)

// Files in the data folder.
const (
	DBFile          = "chatd.db"
	StaticKeyFile   = "server_static.key" // the Noise static key clients pin
	OperatorKeyFile = "operator.key"      // signs business certificates (and the IP list)
	DevTLSDir       = "tls"               // dev mode: ca.pem, server.pem, server-key.pem
)

// Config configures a node. DataDir is required; so are TLSCert/TLSKey and SMSWebhookURL unless Dev.
type Config struct {
	// DataDir holds the database, the keys and (in dev mode) the TLS files and verification codes.
	DataDir string
	// Dev turns on development mode: a CA and server certificate are generated into DataDir/tls,
	// verification codes go to the log and to DataDir/codes/<phone>, and HTTPSListen defaults to :8443.
	Dev bool
	// ChatListen is the raw chat listener. If empty, ":5222".
	ChatListen string
	// HTTPSListen is the 443 listener (TLS → chat or HTTPS by ALPN, WebSocket upgrades of /v1/chat
	// → chat; raw chat). If empty, ":443", or ":8443" in dev mode.
	HTTPSListen string
	// AdminListen serves /metrics and /healthz. If empty, "127.0.0.1:9480"; "off" disables it.
	AdminListen string
	// PublicHost is the host name or address clients use, published in /v1/config. If empty,
	// "localhost" in dev mode, else the machine's host name.
	PublicHost string
	// PublicChatPort and PublicHTTPSPort are the ports clients use (they differ from the listen ports
	// behind NAT or port forwarding). If zero, the listeners' ports.
	PublicChatPort, PublicHTTPSPort int
	// TLSCert and TLSKey are PEM files of the 443 certificate. Ignored in dev mode.
	TLSCert, TLSKey string
	// DevHosts are extra names and addresses in the dev server certificate.
	DevHosts []string
	// SMSWebhookURL receives {"phone","code","method"} for every verification code, with
	// "Authorization: Bearer <SMSWebhookToken>" when the token is set. Ignored in dev mode.
	SMSWebhookURL, SMSWebhookToken string
	// Only443 is published in /v1/config: clients of this deployment should not try 5222.
	Only443 bool
	// IPListFile is the deployment's IP address list, a TOML file (see iplist.ParseFile). It is
	// signed with the operator key at start and served at GET /v1/iplist.json and
	// /v1/iplist.zip; its version is published in /v1/config. If empty, a node in dev mode (without
	// IPListVersion) publishes a list of its own addresses (see IPList), and other nodes none.
	IPListFile string
	// IPListVersion is published in /v1/config as iplist_version when the node publishes no list
	// (for a list distributed another way). It cannot be set together with IPListFile: a published
	// list's version is derived from the list.
	IPListVersion string
	// HandshakeTimeout, CodeTTL: see server.Config and regapi.Config; zero means their defaults.
	HandshakeTimeout time.Duration
	CodeTTL          time.Duration
	// Logger receives all logs; nil means slog.Default().
	Logger *slog.Logger
}

// Node is a running chatd.
type Node struct {
	// Static after Start.
	ChatAddr, HTTPSAddr, AdminAddr net.Addr // AdminAddr is nil when disabled
	ServerKey                      [32]byte
	OperatorKey                    ed25519.PublicKey
	CAFile                         string // dev mode: the CA clients must trust; "" otherwise
	HTTPSURL                       string // the published HTTPS base URL
	Store                          *store.Store
	Server                         *server.Server
	IPList                         *iplist.List // the published IP address list; nil if none

	log      *slog.Logger
	cancel   context.CancelFunc
	https    *http.Server
	admin    *http.Server
	servers  run.Group // the chat, 443, HTTPS and admin listeners
	shutdown sync.Once
}

// Start opens the data folder, binds the listeners and starts serving. It returns once every
// listener is bound.
func Start(cfg Config) (n *Node, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.DataDir == "" {
		return nil, errors.New("node: no data folder configured")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: data folder: %w", err)
	}
	if cfg.ChatListen == "" {
		cfg.ChatListen = ":5222"
	}
	if cfg.HTTPSListen == "" {
		cfg.HTTPSListen = ":443"
		if cfg.Dev {
			cfg.HTTPSListen = ":8443"
		}
	}
	if cfg.AdminListen == "" {
		cfg.AdminListen = "127.0.0.1:9480"
	}
	if cfg.PublicHost == "" {
		cfg.PublicHost = "localhost"
		if !cfg.Dev {
			if h, err := os.Hostname(); err == nil {
				cfg.PublicHost = h
			}
		}
	}

	static, created, err := pki.LoadOrCreateStaticKey(filepath.Join(cfg.DataDir, StaticKeyFile))
	if err != nil {
		return nil, fmt.Errorf("node: server static key: %w", err)
	}
	if created {
		log.Info("generated the server static key", "file", filepath.Join(cfg.DataDir, StaticKeyFile))
	}
	opKey, _, err := pki.LoadOrCreateOperatorKey(filepath.Join(cfg.DataDir, OperatorKeyFile))
	if err != nil {
		return nil, fmt.Errorf("node: operator key: %w", err)
	}
	n = &Node{
		ServerKey:   static.Public,
		OperatorKey: opKey.Public().(ed25519.PublicKey),
		log:         log,
		servers:     run.Group{Prefix: "node"},
	}
	signedList, err := signIPList(cfg, opKey, time.Now(), log)
	if err != nil {
		return nil, err
	}
	if signedList != nil {
		n.IPList = &signedList.List
	}

	// TLS for 443.
	var tlsCfg *tls.Config
	if cfg.Dev {
		dt, err := pki.EnsureDevTLS(filepath.Join(cfg.DataDir, DevTLSDir), append([]string{cfg.PublicHost}, cfg.DevHosts...), time.Now())
		if err != nil {
			return nil, fmt.Errorf("node: dev TLS: %w", err)
		}
		cfg.TLSCert, cfg.TLSKey, n.CAFile = dt.CertFile, dt.KeyFile, dt.CAFile
	}
	if cfg.TLSCert == "" || cfg.TLSKey == "" {
		return nil, errors.New("node: no TLS certificate configured for the 443 listener (set tls_cert and tls_key, or use dev mode)")
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("node: TLS certificate: %w", err)
	}
	tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}}

	var sender regapi.CodeSender
	switch {
	case cfg.Dev:
		sender = regapi.DevSender{Dir: cfg.DataDir, Logger: log}
	case cfg.SMSWebhookURL != "":
		sender = regapi.HTTPSender{URL: cfg.SMSWebhookURL, Token: cfg.SMSWebhookToken}
	default:
		return nil, errors.New("node: no SMS gateway configured (set sms_webhook_url, or use dev mode)")
	}

	st, err := store.Open(filepath.Join(cfg.DataDir, DBFile))
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	n.Store = st
	defer func() {
		if err != nil {
			st.Close()
		}
	}()

	// Listeners first, so that the published ports are known. Without TCP keepalive: keeping a
	// connection alive through middleboxes is the client's job (its pings and keepalive, N2), and the
	// server ends silent clients by its idle rule; probes from every idle connection would only cost.
	lc := net.ListenConfig{KeepAlive: -1}
	chatLn, err := lc.Listen(context.Background(), "tcp", cfg.ChatListen)
	if err != nil {
		return nil, fmt.Errorf("node: chat listener: %w", err)
	}
	n.ChatAddr = chatLn.Addr()
	httpsLn, err := lc.Listen(context.Background(), "tcp", cfg.HTTPSListen)
	if err != nil {
		chatLn.Close()
		return nil, fmt.Errorf("node: 443 listener: %w", err)
	}
	n.HTTPSAddr = httpsLn.Addr()
	var adminLn net.Listener
	if cfg.AdminListen != "off" {
		if adminLn, err = net.Listen("tcp", cfg.AdminListen); err != nil {
			chatLn.Close()
			httpsLn.Close()
			return nil, fmt.Errorf("node: admin listener: %w", err)
		}
		n.AdminAddr = adminLn.Addr()
	}
	chatPort := cmp(cfg.PublicChatPort, portOf(n.ChatAddr))
	httpsPort := cmp(cfg.PublicHTTPSPort, portOf(n.HTTPSAddr))
	n.HTTPSURL = "https://" + net.JoinHostPort(cfg.PublicHost, strconv.Itoa(httpsPort))

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := server.NewMetrics(reg)
	n.Server = server.New(server.Config{
		Store:            st,
		StaticKey:        static,
		Logger:           log,
		Metrics:          metrics,
		HandshakeTimeout: cfg.HandshakeTimeout,
	})
	api := regapi.New(regapi.Config{
		Store:           st,
		Sender:          sender,
		Logger:          log,
		OperatorKey:     n.OperatorKey,
		ServerStaticKey: static.Public,
		ChatEndpoints: []regapi.Endpoint{
			// Raw chatd on the 443 port keeps working but is not published: the TLS and WebSocket
			// paths get through every middlebox that raw chatd on 443 gets through, and more.
			{Host: cfg.PublicHost, Port: chatPort, Transport: transport.TransportTCP},
			{Host: cfg.PublicHost, Port: httpsPort, Transport: transport.TransportTLS},
			{Host: cfg.PublicHost, Port: httpsPort, Transport: transport.TransportWS},
		},
		HTTPSURL:      n.HTTPSURL,
		IPListVersion: cfg.IPListVersion,
		IPList:        signedList,
		Only443:       cfg.Only443,
		CodeTTL:       cfg.CodeTTL,
		// A number registered on a new device: its old device's session ends.
		OnDeviceRegistered: n.Server.DeviceChanged,
	})

	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	mux := transport.NewMux(httpsLn, tlsCfg)
	mux.Logger = log
	mux.OnReject = func(_ net.Addr, reason string, _ error) { metrics.Rejected(reason) }
	// The HTTPS API, and the WebSocket path to the chat server (transport "ws").
	hm := http.NewServeMux()
	hm.Handle(transport.WSPath, mux.WebSocket())
	hm.Handle("/", api)
	n.https = &http.Server{
		Handler:           hm,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	n.servers.Go("chat listener", func() error { return ignoreClosed(n.Server.Serve(chatLn)) })
	n.servers.Go("443 chat", func() error { return ignoreClosed(n.Server.Serve(mux.Chat())) })
	n.servers.Go("443 listener", func() error { return mux.Serve(ctx) })
	n.servers.Go("https", func() error { return ignoreClosed(n.https.Serve(mux.HTTPS())) })
	if adminLn != nil {
		am := http.NewServeMux()
		am.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		am.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
			if _, err := st.QueueDepth(r.Context()); err != nil {
				http.Error(w, "store: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		n.admin = &http.Server{Handler: am, ReadHeaderTimeout: 10 * time.Second}
		n.servers.Go("admin", func() error { return ignoreClosed(n.admin.Serve(adminLn)) })
	}
	log.Info("chatd serving",
		"chat", n.ChatAddr.String(), "https", n.HTTPSAddr.String(), "admin", addrString(n.AdminAddr),
		"data", cfg.DataDir, "dev", cfg.Dev, "server_key", pki.FormatPublic(static.Public))
	return n, nil
}

// Done is closed when a listener fails; Err then says why.
func (n *Node) Done() <-chan struct{} { return n.servers.Done() }

// Err is the failure that closed Done, or nil.
func (n *Node) Err() error { return n.servers.Err() }

// Shutdown stops accepting, closes every chat session with SERVER_SHUTDOWN, finishes HTTPS requests,
// and closes the store, within ctx.
func (n *Node) Shutdown(ctx context.Context) error {
	var err error
	n.shutdown.Do(func() {
		n.cancel()
		errs := []error{n.Server.Shutdown(ctx)}
		// Registration requests are short; an idle HTTP/2 client would hold a graceful shutdown for
		// a second (its GOAWAY wait), so give requests a moment and then close.
		hctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
		if err := n.https.Shutdown(hctx); err != nil {
			n.https.Close()
		}
		cancel()
		if n.admin != nil {
			errs = append(errs, n.admin.Shutdown(ctx))
		}
		n.servers.Wait()
		errs = append(errs, n.Store.Close())
		err = errors.Join(errs...)
	})
	return err
}

func ignoreClosed(err error) error {
	if errors.Is(err, server.ErrServerClosed) || errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func portOf(a net.Addr) int {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.Port
	}
	return 0
}

func cmp(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

func addrString(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return a.String()
}
