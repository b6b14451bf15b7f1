package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatd-dev/chatd/bizapi/gateway"
	"github.com/chatd-dev/chatd/bizapi/settings"
	"github.com/chatd-dev/chatd/bizapi/store"
	"github.com/chatd-dev/chatd/internal/keyedlimit"
	"github.com/chatd-dev/chatd/netcheck"
)

// Gateway is what the API needs of the chatd connection; *gateway.Gateway implements it.
type Gateway interface {
	Health() gateway.Health
	Register(ctx context.Context, r gateway.RegisterRequest) (gateway.RegisterResult, error)
	Verify(ctx context.Context, code string) error
	// Lookup asks chatd about normalized numbers (E.164 digits); results carry the number as Input.
	Lookup(ctx context.Context, phones []string) ([]gateway.LookupResult, error)
	WakeOutbox() // a message was added to the outbox
	WakeReads()  // a read receipt was requested
}

// Defaults of Config.
const (
	DefaultTokenTTL     = 7 * 24 * time.Hour
	DefaultMaxBodyBytes = 64 << 10
	DefaultVersion      = "dev"
	// BcryptCost is the cost of the password hashes this package writes.
	BcryptCost = 10
	// MinAPIKey and MaxAPIKey bound Config.APIKey (as On-Premises WA_API_KEY).
	MinAPIKey = 12
	MaxAPIKey = 128
)

// Config configures a Handler. Store and Gateway are required; every other zero value works.
type Config struct {
	Store   store.Store
	Gateway Gateway
	// Settings are the live application settings; PATCH and DELETE /v1/settings/application save
	// them with Store.SaveSettings and then Set them. If nil, New reads them from Store.
	Settings *settings.Live
	// APIKey is accepted as "Authorization: Apikey <key>" by GET /v1/health and GET /v1/metrics
	// only; 12–128 printable ASCII characters without spaces. If empty, those endpoints need a
	// bearer token like the others.
	APIKey string
	// Registry receives the handler's metrics and is what GET /v1/metrics serves. If nil, a new
	// registry is used (Handler.Registry returns it). Add Go and process collectors in cmd/.
	Registry *prometheus.Registry
	// TokenTTL is how long a login token is valid. If zero, DefaultTokenTTL (7 days).
	TokenTTL time.Duration
	// Logger receives errors (never request bodies or secrets). If nil, nothing is logged.
	Logger *slog.Logger
	// Now is the clock for token expiry, message timestamps, the contact cache and the login
	// limiter. If nil, time.Now.
	Now func() time.Time
	// NewMessageID returns the id of an accepted message. If nil, "gBEG" followed by 23 random
	// base64url characters (27 characters, like On-Premises ids).
	NewMessageID func() string
	// LoginRate limits failed logins per client address.
	LoginRate LoginRate
	// Version is shown as meta.version in every response. If empty, DefaultVersion.
	Version string
	// MaxBodyBytes limits request bodies (413, code 1001). If zero, DefaultMaxBodyBytes (64 KiB).
	MaxBodyBytes int64
	// Netcheck runs a network check for POST /v1/support/network, with the idle test up to idle
	// when positive (bizapi.Start wires netcheck.Run with bizapi's own server, CA, proxy and pinned
	// key). If nil, that endpoint answers 1011.
	Netcheck func(ctx context.Context, idle time.Duration) *netcheck.Report
}

// Handler is the REST API, an http.Handler. Create it with New; Close stops its background work.
type Handler struct {
	// Static after construction.
	store     store.Store
	gw        Gateway
	netcheck  func(ctx context.Context, idle time.Duration) *netcheck.Report // Config.Netcheck; may be nil
	net       network
	live      *settings.Live
	apiKey    *[32]byte // SHA-256 of Config.APIKey; nil when none
	registry  *prometheus.Registry
	tokenTTL  time.Duration
	log       *slog.Logger
	now       func() time.Time
	newID     func() string
	defaultID bool // newID is the built-in generator (its ids need no JSON escaping)
	meta      []byte
	maxBody   int64
	mux       *http.ServeMux
	metrics   *metrics
	methods   []string // tried for the Allow header of a 405

	// Shared by requests; each has its own lock (or is atomic).
	tokens     tokenCache
	logins     *keyedlimit.Limiter
	bcryptSem  chan struct{} // bounds concurrent bcrypt work so logins cannot starve sends
	contacts   contactCache
	settingsMu sync.Mutex  // serializes PATCH/DELETE of the settings (read, change, save, set)
	registered atomic.Bool // the gateway was seen registered once (the send path stops asking)

	bgCtx    context.Context // cancelled by Close
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup
}

// New returns the API handler for cfg.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil {
		return nil, errors.New("api: Config.Store is required")
	}
	if cfg.Gateway == nil {
		return nil, errors.New("api: Config.Gateway is required")
	}
	h := &Handler{
		store:    cfg.Store,
		gw:       cfg.Gateway,
		netcheck: cfg.Netcheck,
		live:     cfg.Settings,
		registry: cfg.Registry,
		tokenTTL: cfg.TokenTTL,
		log:      cfg.Logger,
		now:      cfg.Now,
		newID:    cfg.NewMessageID,
		maxBody:  cfg.MaxBodyBytes,
		mux:      http.NewServeMux(),
		methods:  []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete},
	}
	if cfg.APIKey != "" {
		if err := checkAPIKey(cfg.APIKey); err != nil {
			return nil, err
		}
		sum := sha256.Sum256([]byte(cfg.APIKey))
		h.apiKey = &sum
	}
	if h.registry == nil {
		h.registry = prometheus.NewRegistry()
	}
	if h.tokenTTL <= 0 {
		h.tokenTTL = DefaultTokenTTL
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.newID == nil {
		h.newID, h.defaultID = newMessageID, true
	}
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxBodyBytes
	}
	version := cfg.Version
	if version == "" {
		version = DefaultVersion
	}
	h.meta, _ = json.Marshal(map[string]string{"api_status": "stable", "version": version})
	if h.live == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		doc, err := cfg.Store.Settings(ctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("api: reading the settings: %w", err)
		}
		s, err := settings.Parse(doc)
		if err != nil {
			return nil, fmt.Errorf("api: stored settings: %w", err)
		}
		h.live = settings.NewLive(s)
	}
	h.logins = newLoginLimiter(cfg.LoginRate)
	h.bcryptSem = make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2))
	h.tokens.m = make(map[[32]byte]tokenEntry)
	h.contacts.init()
	h.bgCtx, h.bgCancel = context.WithCancel(context.Background())

	m, err := newMetrics(h)
	if err != nil {
		return nil, err
	}
	h.metrics = m
	h.routes()
	return h, nil
}

func checkAPIKey(k string) error {
	if len(k) < MinAPIKey || len(k) > MaxAPIKey {
		return fmt.Errorf("api: the API key has %d characters; it must have %d to %d", len(k), MinAPIKey, MaxAPIKey)
	}
	for i := 0; i < len(k); i++ {
		if k[i] <= ' ' || k[i] > '~' {
			return fmt.Errorf("api: the API key contains a space, control or non-ASCII character at byte %d; use printable ASCII", i)
		}
	}
	return nil
}

// Registry returns the registry the metrics are in (Config.Registry or the one New made).
func (h *Handler) Registry() *prometheus.Registry { return h.registry }

// Settings returns the live settings (Config.Settings or the ones New read from the store).
func (h *Handler) Settings() *settings.Live { return h.live }

// Close stops the background contact lookups and waits for them. The store and gateway are the
// caller's. ServeHTTP must not be called after Close.
func (h *Handler) Close() error {
	h.contacts.mu.Lock()
	h.contacts.closed = true
	h.contacts.mu.Unlock()
	h.bgCancel()
	h.bgWG.Wait()
	return nil
}

// ServeHTTP serves the API.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// access is what a route accepts as credentials.
type access int

const (
	accessOpen           access = iota // no credentials (login checks Basic itself)
	accessBearer                       // Authorization: Bearer <token>
	accessBearerOrAPIKey               // also Authorization: Apikey <key>
)

// identity is who made a request.
type identity struct {
	user   string
	token  [32]byte // SHA-256 of the bearer token (zero for Apikey)
	apiKey bool
}

// handlerFunc serves one route. Returning a *Error answers with it; any other error answers 1014
// and is logged. A handler that wrote a response returns nil.
type handlerFunc func(w http.ResponseWriter, r *http.Request, id identity) error

func (h *Handler) routes() {
	h.handle("POST /v1/users/login", accessOpen, h.login)
	h.handle("POST /v1/users/logout", accessBearer, h.logout)
	h.handle("POST /v1/account", accessBearer, h.register)
	h.handle("POST /v1/account/verify", accessBearer, h.verify)
	h.handle("GET /v1/health", accessBearerOrAPIKey, h.health)
	h.handle("GET /v1/metrics", accessBearerOrAPIKey, h.serveMetrics)
	h.handle("POST /v1/messages", accessBearer, h.sendMessage)
	h.handle("PUT /v1/messages/{id}", accessBearer, h.markRead)
	h.handle("POST /v1/contacts", accessBearer, h.lookupContacts)
	h.handle("GET /v1/settings/application", accessBearer, h.getSettings)
	h.handle("PATCH /v1/settings/application", accessBearer, h.patchSettings)
	h.handle("DELETE /v1/settings/application", accessBearer, h.deleteSettings)
	h.handle("GET /v1/support/network", accessBearer, h.getNetwork)
	h.handle("POST /v1/support/network", accessBearer, h.postNetwork)
	h.handle("/", accessOpen, h.unmatched)
}

// route is one registered endpoint with its metrics resolved once.
type route struct {
	h       *Handler
	name    string // the pattern; "unmatched" for the catch-all
	access  access
	fn      handlerFunc
	latency prometheus.Observer
	codes   sync.Map // HTTP status (int) → prometheus.Counter
}

func (h *Handler) handle(pattern string, a access, fn handlerFunc) {
	name := pattern
	if pattern == "/" {
		name = "unmatched"
	}
	rt := &route{h: h, name: name, access: a, fn: fn, latency: h.metrics.latency.WithLabelValues(name)}
	h.mux.Handle(pattern, rt)
}

func (rt *route) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := writerPool.Get().(*respWriter)
	rw.ResponseWriter, rw.status = w, 0
	defer func() {
		p := recover()
		if p == http.ErrAbortHandler {
			rt.observe(rw.code(), start)
			panic(p) // net/http aborts the connection quietly
		}
		if p != nil {
			rt.h.log.Error("api: panic", "endpoint", rt.name, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if rw.status == 0 {
				rt.h.writeError(rw, errInternal(nil))
			}
		}
		rt.observe(rw.code(), start)
		rw.ResponseWriter = nil
		writerPool.Put(rw)
	}()
	id, err := rt.h.authenticate(r, rt.access)
	if err == nil {
		err = rt.fn(rw, r, id)
	}
	if err != nil {
		rt.h.fail(rw, rt.name, err)
	}
}

func (rt *route) observe(status int, start time.Time) {
	rt.latency.Observe(time.Since(start).Seconds())
	c, ok := rt.codes.Load(status)
	if !ok {
		c, _ = rt.codes.LoadOrStore(status, rt.h.metrics.requests.WithLabelValues(rt.name, strconv.Itoa(status)))
	}
	c.(prometheus.Counter).Inc()
}

// fail answers with err (see handlerFunc).
func (h *Handler) fail(w *respWriter, endpoint string, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = errInternal(err)
	}
	if e.Code == CodeInternal {
		cause := e.cause
		if cause == nil {
			cause = errors.New(e.Details)
		}
		h.log.Error("api: request failed", "endpoint", endpoint, "err", cause)
	}
	if w.status != 0 {
		return // a response was started; nothing more can be said
	}
	h.writeError(w, e)
}

var (
	contentTypeJSON = []string{"application/json"}
	noSniff         = []string{"nosniff"}
)

func (h *Handler) writeError(w http.ResponseWriter, e *Error) {
	if e.Title == "" {
		e.Title = codeInfo[e.Code].title
	}
	hdr := w.Header()
	if e.retryAfter > 0 {
		hdr.Set("Retry-After", strconv.Itoa(keyedlimit.RetryAfterSeconds(e.retryAfter)))
	}
	if e.header[0] != "" {
		hdr.Set(e.header[0], e.header[1])
	}
	b, _ := json.Marshal(struct {
		Errors []*Error `json:"errors"`
	}{[]*Error{e}})
	h.metrics.apiErrors(e.Code).Inc()
	h.writeRaw(w, e.httpStatus(), h.withMeta(b))
}

// writeJSON answers with v (a struct that marshals to an object) and the meta member.
func (h *Handler) writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	h.writeRaw(w, status, h.withMeta(b))
	return nil
}

// writeMeta answers with {"meta":{…}} alone.
func (h *Handler) writeMeta(w http.ResponseWriter, status int) {
	h.writeRaw(w, status, h.withMeta([]byte("{}")))
}

func (h *Handler) writeRaw(w http.ResponseWriter, status int, body []byte) {
	hdr := w.Header()
	hdr["Content-Type"] = contentTypeJSON
	hdr["X-Content-Type-Options"] = noSniff
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// withMeta appends "meta" to the JSON object b (which it may modify).
func (h *Handler) withMeta(b []byte) []byte {
	b = b[:len(b)-1] // drop '}'
	if len(b) > 1 {
		b = append(b, ',')
	}
	b = append(b, `"meta":`...)
	b = append(b, h.meta...)
	return append(b, '}')
}

// unmatched answers requests no route matched: 405 when the path exists with other methods,
// else 404; both as On-Premises errors.
func (h *Handler) unmatched(w http.ResponseWriter, r *http.Request, _ identity) error {
	var allowed []string
	for _, m := range h.methods {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := h.mux.Handler(probe); pattern != "/" && pattern != "" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) == 0 {
		return apiErr(CodeNotFound, "no endpoint %s", r.URL.Path)
	}
	e := apiErr(CodeInvalidRequest, "method %s is not allowed on %s; allowed: %v", r.Method, r.URL.Path, allowed)
	e.status = http.StatusMethodNotAllowed
	allow := allowed[0]
	for _, m := range allowed[1:] {
		allow += ", " + m
	}
	e.header = [2]string{"Allow", allow}
	return e
}

// respWriter records the status for metrics and for fail.
type respWriter struct {
	http.ResponseWriter
	status int // 0 until WriteHeader or Write
}

var writerPool = sync.Pool{New: func() any { return new(respWriter) }}

func (w *respWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *respWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// bodyPool holds request body buffers.
var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// readBody reads the whole request body into a pooled buffer; give it back with putBody.
func (h *Handler) readBody(r *http.Request) (*[]byte, error) {
	if r.ContentLength > h.maxBody {
		return nil, h.tooLarge()
	}
	bp := bodyPool.Get().(*[]byte)
	b := (*bp)[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if int64(len(b)) > h.maxBody {
			*bp = b
			putBody(bp)
			return nil, h.tooLarge()
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			*bp = b
			putBody(bp)
			return nil, apiErr(CodeInvalidRequest, "the request body could not be read: %v", err)
		}
	}
	*bp = b
	return bp, nil
}

func putBody(bp *[]byte) {
	if cap(*bp) <= DefaultMaxBodyBytes*2 {
		*bp = (*bp)[:0]
		bodyPool.Put(bp)
	}
}

func (h *Handler) tooLarge() *Error {
	e := *errBodyTooLarge
	e.Details = fmt.Sprintf("the request body is larger than %d bytes", h.maxBody)
	return &e
}

// decode reads the body as JSON into v (a pointer to a struct). Unknown members are ignored, as
// On-Premises did; an empty body is 1025.
func (h *Handler) decode(r *http.Request, v any) error {
	bp, err := h.readBody(r)
	if err != nil {
		return err
	}
	defer putBody(bp)
	if isBlank(*bp) {
		return apiErr(CodeInvalidRequest, "the request body is empty; send a JSON object")
	}
	if err := json.Unmarshal(*bp, v); err != nil {
		return decodeError(err)
	}
	return nil
}

func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

// newMessageID is "gBEG" and 23 base64url characters: the time in milliseconds (48 bits) and 90
// bits of crypto/rand, in an alphabet that sorts like the bytes it encodes. So ids sort by creation
// time (within a millisecond at random): each new id goes to the end of the outbox's unique index
// on id, and a commit of many new messages dirties one or two pages of it instead of one per
// message (random ids scattered them over the whole index: a WAL frame each).
func newMessageID() string {
	var raw [18]byte
	binary.BigEndian.PutUint64(raw[:8], uint64(time.Now().UnixMilli())<<16)
	_, _ = rand.Read(raw[6:]) // never fails (Go 1.24+ crypto/rand)
	var out [4 + 24]byte
	copy(out[:], "gBEG")
	sortableBase64.Encode(out[4:], raw[:])
	return string(out[:27])
}

// sortableBase64 is base64 with the URL-safe characters in ASCII order, so that encoded strings of
// equal length compare like the bytes they encode.
var sortableBase64 = base64.NewEncoding("-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz").WithPadding(base64.NoPadding)
