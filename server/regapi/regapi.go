package regapi

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"log/slog"
	"net/http"
	"time"

	"github.com/chatd-dev/chatd/internal/keyedlimit"
	"github.com/chatd-dev/chatd/iplist"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
	"github.com/chatd-dev/chatd/server/store"
)

// Endpoint is one address where chatd accepts chat connections; see
// [regtypes.Endpoint].
type Endpoint = regtypes.Endpoint

// Defaults used for zero Config fields.
const (
	DefaultCodeTTL             = 10 * time.Minute
	DefaultMaxVerifyAttempts   = 5
	DefaultPingIntervalSeconds = 25
	DefaultMaxLimiterKeys      = 50_000
	DefaultMaxBodyBytes        = 16 << 10
)

// Default rate limits, used for zero Limit fields (documented on each
// field). They are not exported so that nobody can change them at run time.
var (
	defaultCodeRequestsPerNumber = Limit{Every: 30 * time.Second, Burst: 3} // burst 3, then 1 per 30 s
	defaultCodeRequestsPerAddr   = Limit{Every: 3 * time.Second, Burst: 20} // 20/min
	defaultVerifyPerAddr         = Limit{Every: 2 * time.Second, Burst: 30} // 30/min
	defaultVerifyPerNumber       = Limit{Every: 6 * time.Minute, Burst: 10} // burst 10, then 1 per 6 min
)

// Config configures a Handler. Only Store is required; every other zero
// field has the documented default.
type Config struct {
	// Store holds accounts and pending codes. Required: New panics if nil.
	Store *store.Store

	// Sender delivers codes. If nil, DevSender{Logger: Logger} is used:
	// codes are only written to the log, which is right for a local
	// network and wrong for anything else (New logs a warning).
	Sender CodeSender

	// Logger receives request-level events (codes sent, devices
	// registered, send and store failures). It never receives a code. If
	// nil, slog.Default() is used.
	Logger *slog.Logger

	// OperatorKey verifies business certificates. If nil, business
	// registration is disabled: a request with a business_cert is answered
	// 403 business_disabled. It is also published in /v1/config.
	OperatorKey ed25519.PublicKey

	// ServerStaticKey is the server's X25519 Noise public key, published in
	// /v1/config and in verification responses for clients to pin.
	ServerStaticKey [32]byte

	// ChatEndpoints, HTTPSURL, IPListVersion and Only443 are published
	// as-is in /v1/config. nil ChatEndpoints is published as []. If
	// IPListVersion is empty and IPList is set, the list's version is
	// published.
	ChatEndpoints []Endpoint
	HTTPSURL      string
	IPListVersion string
	Only443       bool

	// IPList is the deployment's signed IP address list, served at GET
	// /v1/iplist.json and GET /v1/iplist.zip, and named in /v1/config
	// (iplist_version, iplist_url). If nil, those answer 404 no_iplist.
	IPList *iplist.Signed

	// PingIntervalSeconds is the keepalive interval announced to clients.
	// If zero, DefaultPingIntervalSeconds (25) is used.
	PingIntervalSeconds int

	// CodeTTL is how long a verification code stays valid. If zero,
	// DefaultCodeTTL (10 min) is used.
	CodeTTL time.Duration

	// MaxVerifyAttempts is how many wrong codes are accepted before the code
	// is deleted (the last wrong one answers too_many_attempts). If zero,
	// DefaultMaxVerifyAttempts (5) is used.
	MaxVerifyAttempts int

	// CodeRequestsPerNumber limits POST /v1/register/code per phone number.
	// If zero: 3 at once, then 1 per 30 s (Limit{30 * time.Second, 3}).
	CodeRequestsPerNumber Limit
	// CodeRequestsPerAddr limits POST /v1/register/code per client
	// address, counting every request, even malformed ones. If zero: 20 per
	// minute, all 20 at once at most (Limit{3 * time.Second, 20}).
	CodeRequestsPerAddr Limit
	// VerifyPerAddr limits POST /v1/register/verify per client address,
	// counting every request. If zero: 30 per minute, all 30 at once at most
	// (Limit{2 * time.Second, 30}).
	VerifyPerAddr Limit
	// VerifyPerNumber limits POST /v1/register/verify per phone number,
	// counting well-formed requests. If zero: 10 at once, then 1 per 6 min
	// (Limit{6 * time.Minute, 10}). With 6-digit codes this is what stops a
	// guesser who requests code after code, each good for
	// MaxVerifyAttempts guesses.
	VerifyPerNumber Limit
	// The client address is r.RemoteAddr (X-Forwarded-For is ignored): an
	// IPv4 address, or the /64 of an IPv6 address.

	// MaxLimiterKeys caps the number of keys (numbers or addresses) each
	// rate limiter remembers; past it the least recently used key is
	// forgotten. If zero, DefaultMaxLimiterKeys (50,000) is used.
	MaxLimiterKeys int

	// MaxBodyBytes limits request bodies (413 request_too_large). If zero,
	// DefaultMaxBodyBytes (16 KiB) is used.
	MaxBodyBytes int64

	// Now is the clock for code expiry, certificate validity, rate limits
	// and server_time. If nil, time.Now is used.
	Now func() time.Time

	// OnDeviceRegistered, if set, is called after a device key was bound to a number, so that the
	// chat server can end a session of the number's previous device.
	OnDeviceRegistered func(phone string, devicePub [32]byte)
}

// Handler serves the registration/config API:
//
//	POST /v1/register/code
//	POST /v1/register/verify
//	GET  /v1/config
//	GET  /v1/iplist.json
//	GET  /v1/iplist.zip
//
// It is safe for concurrent use.
type Handler struct {
	// static after construction
	cfg          Config // defaults applied
	log          *slog.Logger
	mux          *http.ServeMux
	serverKey    string // base64 of cfg.ServerStaticKey
	operKey      string // base64 of cfg.OperatorKey, "" if none
	endpoints    []Endpoint
	ipList       *ipListBodies       // nil if no list is published
	codeNumber   *keyedlimit.Limiter // each limiter guards itself
	codeAddr     *keyedlimit.Limiter
	verifyAddr   *keyedlimit.Limiter
	verifyNumber *keyedlimit.Limiter
}

// New returns a Handler for cfg. It panics if cfg.Store is nil, or if
// cfg.IPList is not a list signed by cfg.OperatorKey.
func New(cfg Config) *Handler {
	if cfg.Store == nil {
		panic("regapi: Config.Store is nil")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Sender == nil {
		cfg.Sender = DevSender{Logger: cfg.Logger}
		cfg.Logger.Warn("regapi: no code sender configured; verification codes are written to the log (dev mode)")
	}
	if cfg.PingIntervalSeconds <= 0 {
		cfg.PingIntervalSeconds = DefaultPingIntervalSeconds
	}
	if cfg.CodeTTL <= 0 {
		cfg.CodeTTL = DefaultCodeTTL
	}
	if cfg.MaxVerifyAttempts <= 0 {
		cfg.MaxVerifyAttempts = DefaultMaxVerifyAttempts
	}
	if cfg.MaxLimiterKeys <= 0 {
		cfg.MaxLimiterKeys = DefaultMaxLimiterKeys
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{
		cfg:          cfg,
		log:          cfg.Logger,
		serverKey:    pki.FormatPublic(cfg.ServerStaticKey),
		endpoints:    append([]Endpoint{}, cfg.ChatEndpoints...),
		codeNumber:   newKeyedLimiter(cfg.CodeRequestsPerNumber.orDefault(defaultCodeRequestsPerNumber), cfg.MaxLimiterKeys),
		codeAddr:     newKeyedLimiter(cfg.CodeRequestsPerAddr.orDefault(defaultCodeRequestsPerAddr), cfg.MaxLimiterKeys),
		verifyAddr:   newKeyedLimiter(cfg.VerifyPerAddr.orDefault(defaultVerifyPerAddr), cfg.MaxLimiterKeys),
		verifyNumber: newKeyedLimiter(cfg.VerifyPerNumber.orDefault(defaultVerifyPerNumber), cfg.MaxLimiterKeys),
	}
	if len(cfg.OperatorKey) > 0 {
		h.operKey = base64.StdEncoding.EncodeToString(cfg.OperatorKey)
	}
	if cfg.IPList != nil {
		if len(cfg.OperatorKey) > 0 && !cfg.OperatorKey.Equal(cfg.IPList.OperatorKey) {
			panic("regapi: Config.IPList is signed by another key than Config.OperatorKey")
		}
		b, err := newIPListBodies(*cfg.IPList)
		if err != nil {
			panic("regapi: Config.IPList: " + err.Error())
		}
		h.ipList = b
		if h.cfg.IPListVersion == "" {
			h.cfg.IPListVersion = b.version
		}
	}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/register/code", h.handleCode)
	mux.HandleFunc("POST /v1/register/verify", h.handleVerify)
	mux.HandleFunc("GET /v1/config", h.handleConfig)
	mux.HandleFunc("GET /v1/iplist.json", h.handleIPList)
	mux.HandleFunc("GET /v1/iplist.zip", h.handleIPList)
	// The same paths without a method answer 405 in JSON; everything else
	// 404 in JSON (ServeMux's own answers are plain text).
	mux.Handle("/v1/register/code", methodNotAllowed(http.MethodPost))
	mux.Handle("/v1/register/verify", methodNotAllowed(http.MethodPost))
	mux.Handle("/v1/config", methodNotAllowed(http.MethodGet, http.MethodHead))
	mux.Handle("/v1/iplist.json", methodNotAllowed(http.MethodGet, http.MethodHead))
	mux.Handle("/v1/iplist.zip", methodNotAllowed(http.MethodGet, http.MethodHead))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, regtypes.CodeNotFound,
			"There is no endpoint at "+r.URL.Path+"; the API has POST /v1/register/code, POST /v1/register/verify, GET /v1/config, GET /v1/iplist.json and GET /v1/iplist.zip.")
	})
	h.mux = mux
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	h.mux.ServeHTTP(w, r)
}

// Sweep deletes expired codes from the store and forgets rate-limit keys
// whose buckets are full again. Call it periodically (Run does); the API
// works without it, but expired codes then stay in the store until their
// number asks for a new one.
func (h *Handler) Sweep(ctx context.Context) error {
	now := h.cfg.Now()
	h.codeNumber.Prune(now)
	h.codeAddr.Prune(now)
	h.verifyAddr.Prune(now)
	h.verifyNumber.Prune(now)
	n, err := h.cfg.Store.DeleteExpiredCodes(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		h.log.DebugContext(ctx, "deleted expired verification codes", "count", n)
	}
	return nil
}

// SweepInterval is how often Run calls Sweep.
const SweepInterval = time.Minute

// Run calls Sweep every SweepInterval until ctx is done, logging failures,
// and returns ctx.Err().
func (h *Handler) Run(ctx context.Context) error {
	t := time.NewTicker(SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if err := h.Sweep(ctx); err != nil && ctx.Err() == nil {
				h.log.WarnContext(ctx, "regapi: sweep failed", "err", err)
			}
		}
	}
}

func (h *Handler) clientConfig() regtypes.ClientConfig {
	return regtypes.ClientConfig{
		Protocol:        regtypes.Protocol,
		ServerStaticKey: h.serverKey,
		OperatorKey:     h.operKey,
		ChatEndpoints:   h.endpoints,
		HTTPSURL:        h.cfg.HTTPSURL,
		IPListVersion:   h.cfg.IPListVersion,
		IPListURL:       h.ipListURL(),
		PingInterval:    h.cfg.PingIntervalSeconds,
		Only443:         h.cfg.Only443,
		ServerTime:      h.cfg.Now().UTC().Format(time.RFC3339Nano),
	}
}

func (h *Handler) handleConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.clientConfig())
}
