package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"flag"
	"time"

	"github.com/chatd-dev/chatd/internal/cliutil"
	"github.com/chatd-dev/chatd/server/node"
)

// fileConfig is the config file (TOML) and the flags of "chatd serve": the same names, snake_case in
// the file and kebab-case as flags. Every default is in register.
type fileConfig struct {
	DataDir          string           `toml:"data_dir"`
	Dev              bool             `toml:"dev"`
	ChatListen       string           `toml:"chat_listen"`
	HTTPSListen      string           `toml:"https_listen"`
	AdminListen      string           `toml:"admin_listen"`
	PublicHost       string           `toml:"public_host"`
	PublicChatPort   int              `toml:"public_chat_port"`
	PublicHTTPSPort  int              `toml:"public_https_port"`
	TLSCert          string           `toml:"tls_cert"`
	TLSKey           string           `toml:"tls_key"`
	DevHosts         []string         `toml:"dev_hosts"`
	SMSWebhookURL    string           `toml:"sms_webhook_url"`
	SMSWebhookToken  string           `toml:"sms_webhook_token"`
	Only443          bool             `toml:"only_443"`
	IPListFile       string           `toml:"iplist_file"`
	IPListVersion    string           `toml:"iplist_version"`
	HandshakeTimeout cliutil.Duration `toml:"handshake_timeout"`
	CodeTTL          cliutil.Duration `toml:"code_ttl"`
	LogLevel         string           `toml:"log_level"`
	LogFormat        string           `toml:"log_format"`
}

// newServeFlags returns the flags of "chatd serve", bound to c, with their defaults set in c.
func newServeFlags(c *fileConfig) *flag.FlagSet {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.String("config", "", "TOML config file (flags override it); see docs/operations.md")
	c.register(fs)
	return fs
}

func (c *fileConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "data", "chatd-data", "data folder: database, server and operator keys, dev TLS files and codes")
	fs.BoolVar(&c.Dev, "dev", false, "development mode: generated CA and certificate in DATA/tls, codes logged and written to DATA/codes/<phone>, HTTPS on :8443")
	fs.StringVar(&c.ChatListen, "chat-listen", ":5222", "raw chatd listener")
	fs.StringVar(&c.HTTPSListen, "https-listen", "", `443 listener: TLS (chatd/1 or HTTPS by ALPN) and raw chatd (default ":443", in dev mode ":8443")`)
	fs.StringVar(&c.AdminListen, "admin-listen", "127.0.0.1:9480", `admin listener with /metrics and /healthz ("off" disables it)`)
	fs.StringVar(&c.PublicHost, "public-host", "", `host name clients use, published in /v1/config (default "localhost" in dev mode, else the machine's host name)`)
	fs.IntVar(&c.PublicChatPort, "public-chat-port", 0, "chat port clients use, if not the listener's (NAT, port forwarding)")
	fs.IntVar(&c.PublicHTTPSPort, "public-https-port", 0, "443 port clients use, if not the listener's")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate (chain) of the 443 listener; required unless --dev")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key of the 443 listener; required unless --dev")
	fs.StringVar(&c.SMSWebhookURL, "sms-webhook-url", "", `URL that receives {"phone","code","method"} for each verification code; required unless --dev`)
	fs.StringVar(&c.SMSWebhookToken, "sms-webhook-token", "", "bearer token sent to the SMS webhook (prefer the config file: flags show in ps)")
	fs.BoolVar(&c.Only443, "only-443", false, "tell clients (in /v1/config) to use only port 443")
	fs.StringVar(&c.IPListFile, "iplist-file", "", "the deployment's IP address list (TOML: updated, effective_from, expires, ipv4, ipv6), served signed at /v1/iplist.json and /v1/iplist.zip")
	fs.StringVar(&c.IPListVersion, "iplist-version", "", "iplist_version published in /v1/config when no list is served (not with --iplist-file)")
	fs.DurationVar(&c.HandshakeTimeout.Duration, "handshake-timeout", 10*time.Second, "time from accept to a logged-in session")
	fs.DurationVar(&c.CodeTTL.Duration, "code-ttl", 10*time.Minute, "how long a verification code stays valid")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json")
}

func (c *fileConfig) load(path string) error { return cliutil.LoadTOML(path, c) }

func (c *fileConfig) nodeConfig() node.Config {
	return node.Config{
		DataDir:          c.DataDir,
		Dev:              c.Dev,
		ChatListen:       c.ChatListen,
		HTTPSListen:      c.HTTPSListen,
		AdminListen:      c.AdminListen,
		PublicHost:       c.PublicHost,
		PublicChatPort:   c.PublicChatPort,
		PublicHTTPSPort:  c.PublicHTTPSPort,
		TLSCert:          c.TLSCert,
		TLSKey:           c.TLSKey,
		DevHosts:         c.DevHosts,
		SMSWebhookURL:    c.SMSWebhookURL,
		SMSWebhookToken:  c.SMSWebhookToken,
		Only443:          c.Only443,
		IPListFile:       c.IPListFile,
		IPListVersion:    c.IPListVersion,
		HandshakeTimeout: c.HandshakeTimeout.Duration,
		CodeTTL:          c.CodeTTL.Duration,
	}
}

func formatEd25519(pub any) string {
	return base64.StdEncoding.EncodeToString(pub.(ed25519.PublicKey))
}
