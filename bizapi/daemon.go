package bizapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/chatd-dev/chatd/bizapi/api"
	"github.com/chatd-dev/chatd/bizapi/gateway"
	"github.com/chatd-dev/chatd/bizapi/settings"
	"github.com/chatd-dev/chatd/bizapi/store"
	"github.com/chatd-dev/chatd/bizapi/webhook"
	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/internal/run"
	"github.com/chatd-dev/chatd/netcheck"
	"github.com/chatd-dev/chatd/transport"
)

// DBFile is the database in the data folder.
const DBFile = "bizapi.db"

// Config configures a Daemon. DataDir and ServerURL are required.
type Config struct {
	// DataDir holds the database (bizapi.db).
	DataDir string
	// Listen is the REST API's address. If empty, "127.0.0.1:8080".
	Listen string
	// TLSCert and TLSKey, when both set, serve the REST API over HTTPS.
	TLSCert, TLSKey string
	// ServerURL is chatd's HTTPS URL (registration and config), e.g. https://chat.example.com.
	ServerURL string
	// ServerCAFile is a PEM file of the CA that signed chatd's certificate (dev mode's ca.pem); ""
	// means the system roots.
	ServerCAFile string
	// Proxy chooses the HTTP CONNECT proxy of the chat connection and of the HTTPS registration and
	// config requests alike; nil means direct. cmd/bizapi passes transport.ProxyFromEnvironment()
	// (HTTPS_PROXY, NO_PROXY) or transport.ProxyURL of its proxy setting.
	Proxy transport.ProxyFunc
	// ProxySource says where Proxy came from ("config", "environment"), for netcheck's report.
	ProxySource string
	// Only443 restricts the chat connection to the 443 path: port 5222 is never dialled (N5).
	Only443 bool
	// MaxBackoff caps the delay between reconnects to chatd; 0 means client.DefaultMaxBackoff (30 s).
	MaxBackoff time.Duration
	// AdminPassword is the initial password of the "admin" user, created on first start; it must be
	// changed at the first login. "" means "secret", as On-Premises.
	AdminPassword string
	// APIKey, if set, is accepted as "Authorization: Apikey <key>" by /v1/health and /v1/metrics.
	APIKey string
	// WebhookURL and WebhookSecret, when set, replace webhooks.url and webhooks.secret of the stored
	// settings at start (the REST API can change them later).
	WebhookURL, WebhookSecret string
	// Client adjusts the chat client's configuration (tests shorten its timers).
	Client func(*client.Config)
	// Logger receives all logs; nil means slog.Default().
	Logger *slog.Logger
	// Version is reported in responses and the webhook User-Agent.
	Version string
}

// Daemon is a running bizapi.
type Daemon struct {
	// Static after Start.
	Addr     net.Addr // the REST API listener
	Store    store.Store
	Gateway  *gateway.Gateway
	API      *api.Handler
	Settings *settings.Live

	log      *slog.Logger
	srv      *http.Server
	cancel   context.CancelFunc
	parts    run.Group // the gateway, the dispatcher, the settings watcher and the REST API
	shutdown sync.Once
}

// Start opens the data folder, starts the gateway, the webhook dispatcher and the REST API, and
// returns once the API listens.
func Start(cfg Config) (d *Daemon, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.DataDir == "" {
		return nil, errors.New("bizapi: no data folder configured")
	}
	if cfg.ServerURL == "" {
		return nil, errors.New("bizapi: no chatd server URL configured (e.g. https://chat.example.com)")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8080"
	}
	proxy, err := proxyFor(cfg.Proxy, cfg.ServerURL)
	if err != nil {
		return nil, err
	}
	roots, err := loadRoots(cfg.ServerCAFile)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("bizapi: data folder: %w", err)
	}
	st, err := store.Open(filepath.Join(cfg.DataDir, DBFile))
	if err != nil {
		return nil, fmt.Errorf("bizapi: %w", err)
	}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	ctx := context.Background()
	if err := api.EnsureAdmin(ctx, st, cfg.AdminPassword); err != nil {
		return nil, fmt.Errorf("bizapi: admin user: %w", err)
	}
	live, err := loadSettings(ctx, st, cfg)
	if err != nil {
		return nil, err
	}

	// callback_persist is read at start, as On-Premises ("restart needed"). Without it, new callbacks
	// live in memory; callbacks stored while it was on are still delivered from the store.
	persist := live.Get().CallbackPersist
	mem := webhook.NewMemQueue(webhook.DefaultMemQueueMax)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	hookMetrics := newWebhookMetrics(reg)
	queues := []webhook.Queue{st}
	if !persist {
		queues = append(queues, mem)
	}
	var disps []*webhook.Dispatcher
	for _, q := range queues {
		disps = append(disps, webhook.New(webhook.Config{
			Queue:    q,
			Settings: func() webhook.Settings { return webhookSettings(live.Get()) },
			Logger:   log,
			OnResult: hookMetrics.observe,
			Version:  cfg.Version,
		}))
	}
	wakeAll := func() {
		for _, d := range disps {
			d.Wake()
		}
	}
	gw, err := gateway.New(gateway.Config{
		Store:            st,
		ServerURL:        cfg.ServerURL,
		RootCAs:          roots,
		Proxy:            cfg.Proxy,
		Only443:          cfg.Only443,
		MaxBackoff:       cfg.MaxBackoff,
		WantStatus:       func(s string) bool { return live.Get().StatusCallback(s) },
		PersistCallbacks: func() bool { return persist },
		Memory:           mem,
		WakeCallbacks:    wakeAll,
		Client:           cfg.Client,
		Logger:           log,
	})
	if err != nil {
		return nil, err
	}
	netcfg := netcheckConfig(cfg, roots)
	h, err := api.New(api.Config{Store: st, Gateway: gw, Settings: live, APIKey: cfg.APIKey, Registry: reg, Logger: log, Version: cfg.Version,
		Netcheck: func(ctx context.Context, idle time.Duration) *netcheck.Report {
			nc := netcfg
			nc.Idle = idle
			pinKey(ctx, &nc, st)
			return netcheck.Run(ctx, nc)
		}})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("bizapi: REST API listener: %w", err)
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		ln.Close()
		return nil, errors.New("bizapi: set both tls_cert and tls_key to serve the REST API over HTTPS (only one is set)")
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("bizapi: REST API certificate: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
	}

	rctx, cancel := context.WithCancel(context.Background())
	d = &Daemon{
		Addr: ln.Addr(), Store: st, Gateway: gw, API: h, Settings: live,
		log: log, cancel: cancel, parts: run.Group{Prefix: "bizapi"},
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
	}
	d.parts.Go("gateway", func() error { return gw.Run(rctx) })
	for _, disp := range disps {
		d.parts.Go("webhook dispatcher", func() error { return disp.Run(rctx) })
	}
	d.parts.Go("settings watcher", func() error {
		ch := live.Subscribe()
		defer live.Unsubscribe(ch)
		for {
			select {
			case <-rctx.Done():
				return nil
			case <-ch:
				wakeAll() // a new URL or backoff applies at once
			}
		}
	})
	d.parts.Go("REST API", func() error {
		if err := d.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	log.Info("bizapi serving", "api", ln.Addr().String(), "chatd", cfg.ServerURL, "data", cfg.DataDir,
		"proxy", proxy, "only_443", cfg.Only443, "callback_persist", persist)
	return d, nil
}

// proxyFor describes the proxy that proxy chooses for the server at serverURL, for logs: its URL
// without the password, or "direct". It fails when proxy cannot choose (an invalid HTTPS_PROXY),
// so that the start stops with a clear error instead of every request failing later.
func proxyFor(proxy transport.ProxyFunc, serverURL string) (string, error) {
	if proxy == nil {
		return "direct", nil
	}
	u, err := url.Parse(serverURL)
	if err != nil {
		return "", fmt.Errorf("bizapi: chatd server URL %q: %w", serverURL, err)
	}
	p, err := proxy(&http.Request{Method: http.MethodGet, URL: u, Host: u.Host, Header: http.Header{}})
	switch {
	case err != nil:
		// The error may repeat the proxy URL with its password: leave it out.
		return "", fmt.Errorf("bizapi: the proxy for %s is not a valid URL (check the proxy setting, or HTTPS_PROXY and https_proxy)", u.Host)
	case p == nil:
		return "direct", nil
	}
	return p.Redacted(), nil
}

func loadSettings(ctx context.Context, st store.Store, cfg Config) (*settings.Live, error) {
	doc, err := st.Settings(ctx)
	if err != nil {
		return nil, fmt.Errorf("bizapi: settings: %w", err)
	}
	s := settings.Defaults()
	if doc != nil {
		if s, err = settings.Parse(doc); err != nil {
			return nil, fmt.Errorf("bizapi: stored settings: %w", err)
		}
	}
	changed := false
	if cfg.WebhookURL != "" && s.Webhooks.URL != cfg.WebhookURL {
		s.Webhooks.URL, changed = cfg.WebhookURL, true
	}
	if cfg.WebhookSecret != "" && s.Webhooks.Secret != cfg.WebhookSecret {
		s.Webhooks.Secret, changed = cfg.WebhookSecret, true
	}
	if changed {
		if err := st.SaveSettings(ctx, s.Marshal()); err != nil {
			return nil, fmt.Errorf("bizapi: saving settings: %w", err)
		}
	}
	return settings.NewLive(s), nil
}

func webhookSettings(s settings.Settings) webhook.Settings {
	return webhook.Settings{
		URL:             s.Webhooks.URL,
		MaxConcurrent:   s.Webhooks.MaxConcurrentRequests,
		MaxBatch:        s.Webhooks.MaxCallbacksPerRequest,
		BackoffDelay:    time.Duration(s.CallbackBackoffDelayMS) * time.Millisecond,
		MaxBackoffDelay: time.Duration(s.MaxCallbackBackoffDelayMS) * time.Millisecond,
		Secret:          s.Webhooks.Secret,
	}
}

// Done is closed when a part failed; Err says why.
func (d *Daemon) Done() <-chan struct{} { return d.parts.Done() }

// Err is the failure that closed Done, or nil.
func (d *Daemon) Err() error { return d.parts.Err() }

// Shutdown stops the REST API (finishing requests), the gateway (saying goodbye to chatd) and the
// dispatcher, and closes the store, within ctx. Accepted messages stay in the store and go out at
// the next start.
func (d *Daemon) Shutdown(ctx context.Context) error {
	var err error
	d.shutdown.Do(func() {
		errs := []error{d.srv.Shutdown(ctx)}
		d.cancel()
		d.parts.Wait()
		errs = append(errs, d.API.Close(), d.Store.Close())
		err = errors.Join(errs...)
	})
	return err
}

// webhookMetrics count webhook deliveries.
type webhookMetrics struct {
	requests  *prometheus.CounterVec
	callbacks *prometheus.CounterVec
	latency   prometheus.Histogram
}

func newWebhookMetrics(reg *prometheus.Registry) *webhookMetrics {
	m := &webhookMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bizapi_webhook_requests_total",
			Help: "Webhook callback requests by result: delivered (2xx), refused (another status), error (no response).",
		}, []string{"result"}),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bizapi_webhook_callbacks_total",
			Help: "Callbacks carried by webhook requests (several per request when batched), by the request's result.",
		}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bizapi_webhook_request_seconds",
			Help:    "Duration of webhook callback requests.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
	reg.MustRegister(m.requests, m.callbacks, m.latency)
	return m
}

func (m *webhookMetrics) observe(ok bool, status int, latency time.Duration, callbacks int) {
	result := "refused"
	switch {
	case ok:
		result = "delivered"
	case status == 0:
		result = "error"
	}
	m.requests.WithLabelValues(result).Inc()
	m.callbacks.WithLabelValues(result).Add(float64(callbacks))
	m.latency.Observe(latency.Seconds())
}
