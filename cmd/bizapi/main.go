// Command bizapi is the Business API client: it keeps the business number's connection to chatd and
// serves the On-Premises-compatible REST API and webhooks.
//
//	bizapi serve [--config FILE] [flags]
//
// Run "bizapi help" for everything.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/chatd-dev/chatd/bizapi"
	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/internal/cliutil"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `bizapi — the Business API client of chatd

Usage:
  bizapi serve [--config FILE] [flags]   run the REST API and the gateway connection to chatd
  bizapi netcheck [flags]                test this network's path to chatd and say what to change
  bizapi version                         print the version
  bizapi help [command]                  show help

First steps (On-Premises API):
  bizapi serve --server https://chat.example.com --data /var/lib/bizapi
  curl -u admin:secret -X POST localhost:8080/v1/users/login -d '{"new_password":"…"}'   # first login
  curl -H "Authorization: Bearer TOKEN" -X POST localhost:8080/v1/account -d '{"cc":"1","phone_number":"5551234567","method":"sms","cert":"…"}'
  curl -H "Authorization: Bearer TOKEN" -X POST localhost:8080/v1/account/verify -d '{"code":"123456"}'

docs/bizapi.md describes the API, the webhooks and every setting.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return cliutil.Program{
		Name: "bizapi", Version: version, Usage: usage,
		Commands: map[string]cliutil.Command{
			"serve":    cmdServe,
			"netcheck": cmdNetcheck,
		},
	}.Run(args, stdout, stderr)
}

// fileConfig is the config file (TOML, snake_case) and the flags (kebab-case) of "bizapi serve".
type fileConfig struct {
	DataDir       string           `toml:"data_dir"`
	Listen        string           `toml:"listen"`
	TLSCert       string           `toml:"tls_cert"`
	TLSKey        string           `toml:"tls_key"`
	Server        string           `toml:"server"`
	ServerCA      string           `toml:"server_ca"`
	Proxy         string           `toml:"proxy"`
	Only443       bool             `toml:"only_443"`
	MaxBackoff    cliutil.Duration `toml:"reconnect_max_backoff"`
	AdminPassword string           `toml:"admin_password"`
	APIKey        string           `toml:"api_key"`
	WebhookURL    string           `toml:"webhook_url"`
	WebhookSecret string           `toml:"webhook_secret"`
	LogLevel      string           `toml:"log_level"`
	LogFormat     string           `toml:"log_format"`
}

func newServeFlags(c *fileConfig) *flag.FlagSet {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.String("config", "", "TOML config file (flags override it)")
	fs.StringVar(&c.DataDir, "data", "bizapi-data", "data folder (the database bizapi.db)")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8080", "REST API address")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate: serve the REST API over HTTPS (with --tls-key)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.Server, "server", "", "chatd's HTTPS URL for registration and config, e.g. https://chat.example.com (required)")
	fs.StringVar(&c.ServerCA, "server-ca", "", "PEM file of the CA of chatd's certificate (chatd dev mode: DATA/tls/ca.pem); default: system roots")
	fs.StringVar(&c.Proxy, "proxy", "", cliutil.ProxyHelp)
	fs.BoolVar(&c.Only443, "only-443", false, "never dial port 5222: chat goes over TLS or WebSocket on the server's 443 port only")
	fs.DurationVar(&c.MaxBackoff.Duration, "reconnect-max-backoff", client.DefaultMaxBackoff, "cap of the reconnect delay to chatd (exponential from 0.5 s with full jitter)")
	fs.StringVar(&c.AdminPassword, "admin-password", "", `initial password of the "admin" user, created on first start; the first login must change it (default "secret")`)
	fs.StringVar(&c.APIKey, "api-key", "", "key accepted as 'Authorization: Apikey KEY' by /v1/health and /v1/metrics (12-128 characters)")
	fs.StringVar(&c.WebhookURL, "webhook-url", "", "sets webhooks.url at start (else the stored setting applies)")
	fs.StringVar(&c.WebhookSecret, "webhook-secret", "", "sets webhooks.secret at start: callbacks are signed with HMAC-SHA256 (prefer the config file: flags show in ps)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json")
	return fs
}

// daemonConfig checks the settings that only cmd/ reads (the proxy, from the environment unless
// set) and returns the daemon's configuration.
func (c *fileConfig) daemonConfig() (bizapi.Config, error) {
	proxy, err := cliutil.ProxySetting(c.Proxy)
	if err != nil {
		return bizapi.Config{}, err
	}
	return bizapi.Config{
		DataDir: c.DataDir, Listen: c.Listen, TLSCert: c.TLSCert, TLSKey: c.TLSKey,
		ServerURL: c.Server, ServerCAFile: c.ServerCA, Proxy: proxy, ProxySource: cliutil.ProxySource(c.Proxy),
		Only443: c.Only443, MaxBackoff: c.MaxBackoff.Duration,
		AdminPassword: c.AdminPassword, APIKey: c.APIKey,
		WebhookURL: c.WebhookURL, WebhookSecret: c.WebhookSecret, Version: version,
	}, nil
}

func cmdServe(args []string, stdout, stderr io.Writer) error {
	var f fileConfig
	fs := newServeFlags(&f)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: bizapi serve [--config FILE] [flags]

Runs the Business API client: the REST API (On-Premises shapes) on --listen, the gateway connection to
chatd (port 5222, falling back to TLS and WebSocket on 443; --only-443 never dials 5222), and the
webhook dispatcher. Chat and HTTPS go through the same proxy: HTTPS_PROXY (except NO_PROXY hosts) unless
--proxy says otherwise. Every setting can be given in the config file (same name in snake_case, e.g.
server = "https://chat.example.com") or as a flag.

Flags:
`)
		fs.PrintDefaults()
		fmt.Fprint(stderr, `
Examples:
  bizapi serve --server https://chat.example.com
  bizapi serve --config /etc/bizapi/bizapi.toml
  bizapi serve --server https://localhost:8443 --server-ca chatd-data/tls/ca.pem --webhook-url http://127.0.0.1:9000/hook
  bizapi serve --server https://chat.example.com --proxy http://proxy.corp:3128 --only-443
  bizapi serve --server https://chat.example.com --proxy none     # ignore HTTPS_PROXY
`)
	}
	if err := cliutil.ParseWithConfig(fs, args, &f); err != nil {
		return err
	}
	logger, err := cliutil.NewLogger(stderr, f.LogLevel, f.LogFormat)
	if err != nil {
		return err
	}
	slog.SetDefault(logger)
	cfg, err := f.daemonConfig()
	if err != nil {
		return err
	}
	cfg.Logger = logger
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := bizapi.Start(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "bizapi is serving the REST API on %s (chatd: %s, data: %s)\n", d.Addr, cfg.ServerURL, cfg.DataDir)
	return cliutil.WaitAndShutdown(ctx, d, logger, "a part failed; shutting down")
}
