package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd-dev/chatd/bizapi/store"
)

// Defaults for the zero values of Settings (the On-Premises defaults).
const (
	DefaultMaxConcurrent   = 12
	DefaultBackoffDelay    = 3 * time.Second
	DefaultMaxBackoffDelay = 15 * time.Minute
	DefaultTimeout         = 10 * time.Second
)

// Header names of a callback request.
const (
	HeaderSignature = "X-Chatd-Signature"
	HeaderAttempt   = "X-Chatd-Callback-Attempt"
)

const (
	// maxIdle bounds every wait of Run: even without Wake it looks at the settings and the queue
	// this often (a settings change that forgot to call Wake, a clock step, an outside writer).
	maxIdle = time.Minute
	// storeTimeout bounds recording one result (delete or retry) in the queue.
	storeTimeout = 10 * time.Second
	// Pause after a queue error: doubles from minErrPause up to maxErrPause.
	minErrPause = 250 * time.Millisecond
	maxErrPause = 30 * time.Second
	// maxDrain is how much of a response body is read (and discarded) so that the connection can
	// be reused.
	maxDrain = 64 << 10
	// maxLastError bounds the error text stored with a callback.
	maxLastError = 300
)

// Settings are the webhook application settings. The Dispatcher reads them at every dispatch round,
// so changes made at run time (PATCH /v1/settings/application) apply without a restart; call Wake
// after changing them so that they apply at once. Zero and negative values mean the defaults.
type Settings struct {
	// URL receives the callbacks (webhooks.url). When it is "" callbacks wait in the queue until a
	// URL is set. On-Premises drops them instead; we keep them, so that configuring the webhook late
	// loses nothing (a MemQueue is bounded: once full, new callbacks are refused).
	URL string
	// MaxConcurrent bounds the callback requests in flight (webhooks.max_concurrent_requests);
	// 0 → 12.
	MaxConcurrent int
	// BackoffDelay is callback_backoff_delay_ms; 0 → 3 s. The delay before the next attempt grows
	// by this much per failure: 3 s, 6 s, 9 s, … (the On-Premises meaning).
	BackoffDelay time.Duration
	// MaxBackoffDelay is max_callback_backoff_delay_ms; 0 → 15 min. The delay stops growing here
	// and retries go on at this spacing forever.
	MaxBackoffDelay time.Duration
	// Secret signs every request with HMAC-SHA256 (see Sign); "" → unsigned.
	Secret string
	// Timeout bounds one request, from dialling to the end of the response; 0 → 10 s.
	Timeout time.Duration
}

func (s Settings) withDefaults() Settings {
	if s.MaxConcurrent <= 0 {
		s.MaxConcurrent = DefaultMaxConcurrent
	}
	if s.BackoffDelay <= 0 {
		s.BackoffDelay = DefaultBackoffDelay
	}
	if s.MaxBackoffDelay <= 0 {
		s.MaxBackoffDelay = DefaultMaxBackoffDelay
	}
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	return s
}

// RetryDelay is the wait before the next attempt of a callback that has failed attempts times
// (attempts ≥ 1): min(attempts × BackoffDelay, MaxBackoffDelay), defaults applied.
func (s Settings) RetryDelay(attempts int) time.Duration {
	s = s.withDefaults()
	attempts = max(attempts, 1)
	if int64(attempts) > int64(s.MaxBackoffDelay/s.BackoffDelay) {
		return s.MaxBackoffDelay
	}
	return min(time.Duration(attempts)*s.BackoffDelay, s.MaxBackoffDelay)
}

// Queue is the callback queue the Dispatcher works from. store.Store satisfies it (callback_persist
// true: callbacks survive restarts) and so does MemQueue (callback_persist false).
type Queue interface {
	EnqueueCallback(ctx context.Context, cb store.Callback) error
	DueCallbacks(ctx context.Context, now time.Time, limit int, except []int64) ([]store.Callback, error)
	NextCallbackAt(ctx context.Context) (time.Time, error)
	DeleteCallback(ctx context.Context, id int64) error
	RetryCallback(ctx context.Context, id int64, attempts int, next time.Time, lastErr string) error
}

var (
	_ Queue = store.Store(nil)
	_ Queue = (*MemQueue)(nil)
)

// Config configures a Dispatcher. Queue and Settings are required.
type Config struct {
	Queue Queue
	// Settings returns the current settings; it is called at every round.
	Settings func() Settings
	// Client sends the requests; nil → a client of its own. Redirects are never followed,
	// whatever Client.CheckRedirect says (the Dispatcher uses a copy with its own), and Client.Timeout
	// is better left 0: Settings.Timeout bounds each request.
	Client *http.Client
	Logger *slog.Logger // nil → discard
	// Now is the clock for due times, backoff and signatures; nil → time.Now.
	Now func() time.Time
	// OnResult, if set, is called after every attempt (metrics): ok is true for a 2xx, status is the
	// HTTP status or 0 when no response came, latency is the request's duration. Attempts
	// abandoned because Run is stopping are not reported.
	OnResult func(ok bool, status int, latency time.Duration)
	// Version goes into the User-Agent ("bizapi/<Version>"); "" → the main module's version from
	// the build info, or "dev".
	Version string
}

// Dispatcher posts queued callbacks to the webhook URL; see the package documentation.
type Dispatcher struct {
	q        Queue
	settings func() Settings
	client   *http.Client
	log      *slog.Logger
	now      func() time.Time
	onResult func(bool, int, time.Duration)
	ua       string

	poke    chan struct{} // capacity 1: "look now" (Wake, a finished request)
	running atomic.Bool
	wg      sync.WaitGroup // deliver goroutines

	// inflight is owned by Run's goroutine: the callbacks being sent. Workers report completion
	// through finished, after they recorded the result in the queue; Run removes them from inflight
	// at the start of the next round, before it reads the queue again. So a callback is never in a
	// round's DueCallbacks answer without being in inflight while its request is open or its result
	// not yet recorded — it is never sent twice at once.
	inflight map[int64]struct{}
	except   []int64 // the IDs of inflight, for DueCallbacks (Run only; reused)

	mu       sync.Mutex
	finished []int64
	recErr   error // a worker could not record a result

	failing atomic.Bool // the last attempt failed (for logging transitions only)

	started atomic.Int64 // requests started, ever (tests, debugging)

	// For tests: Wake increments wakeGen; a round stores the wakeGen it started with in roundGen
	// when it ends. roundGen ≥ g means a whole round ran after the g-th Wake.
	wakeGen  atomic.Uint64
	roundGen atomic.Uint64
}

// New returns a Dispatcher; Run starts it.
func New(cfg Config) *Dispatcher {
	d := &Dispatcher{
		q:        cfg.Queue,
		settings: cfg.Settings,
		log:      cfg.Logger,
		now:      cfg.Now,
		onResult: cfg.OnResult,
		ua:       "bizapi/" + version(cfg.Version),
		poke:     make(chan struct{}, 1),
		inflight: make(map[int64]struct{}),
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.now == nil {
		d.now = time.Now
	}
	var c http.Client
	if cfg.Client != nil {
		c = *cfg.Client
	} else {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		c.Transport = t
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	d.client = &c
	return d
}

func version(v string) string {
	if v != "" {
		return v
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// Wake tells the Dispatcher that something was enqueued (or the settings changed): it looks at the
// queue now instead of at the next due time. It never blocks; many Wakes before a round cost one.
func (d *Dispatcher) Wake() {
	d.wakeGen.Add(1)
	d.pokeNow()
}

func (d *Dispatcher) pokeNow() {
	select {
	case d.poke <- struct{}{}:
	default:
	}
}

// Run delivers callbacks until ctx ends, then returns nil. Requests in flight at that moment are
// abandoned, not counted as failed attempts; their callbacks stay queued and are sent again by the
// next Run (after a restart, with a persistent queue). Run returns only after every request it
// started has ended. Only one Run may be active at a time; Run may be called again after it returned.
func (d *Dispatcher) Run(ctx context.Context) error {
	if d.q == nil || d.settings == nil {
		return errors.New("webhook: Config.Queue and Config.Settings are required")
	}
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("webhook: Run is already active")
	}
	defer d.running.Store(false)
	defer d.wg.Wait()
	// A previous Run ended after all its requests did: nothing is in flight.
	clear(d.inflight)
	d.mu.Lock()
	d.finished, d.recErr = nil, nil
	d.mu.Unlock()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	// errPause grows while queue errors keep coming, even with good rounds in between (reads work,
	// writes fail); a minute without errors starts it over.
	var errPause time.Duration
	var lastErr time.Time
	spins := 0
	for {
		if ctx.Err() != nil {
			return nil
		}
		gen := d.wakeGen.Load()
		wait, err := d.round(ctx, &spins)
		d.roundGen.Store(gen)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if time.Since(lastErr) > time.Minute {
				errPause = 0
			}
			errPause = min(max(2*errPause, minErrPause), maxErrPause)
			lastErr = time.Now()
			d.log.Warn("webhook: callback queue error; retrying", "err", err, "in", errPause)
			timer.Reset(errPause)
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C:
			}
			continue
		}
		if wait <= 0 {
			continue
		}
		timer.Reset(min(wait, maxIdle))
		select {
		case <-ctx.Done():
			return nil
		case <-d.poke:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// round starts what is due and free slots allow, and returns how long to wait before the next
// round (unless poked): until the next due time, or maxIdle when only a poke can change anything.
func (d *Dispatcher) round(ctx context.Context, spins *int) (time.Duration, error) {
	d.mu.Lock()
	done, recErr := d.finished, d.recErr
	d.finished, d.recErr = nil, nil
	d.mu.Unlock()
	for _, id := range done {
		delete(d.inflight, id)
	}
	if recErr != nil {
		// The result of a request could not be recorded; the callback is still queued as it was
		// and will be sent again. Pause instead of spinning on a broken queue.
		return 0, fmt.Errorf("recording a callback result: %w", recErr)
	}

	s := d.settings().withDefaults()
	if s.URL == "" {
		return maxIdle, nil // callbacks wait; a Wake after setting the URL starts them
	}
	busy := len(d.inflight)
	free := s.MaxConcurrent - busy
	if free <= 0 {
		return maxIdle, nil // a finishing request pokes
	}
	now := d.now()
	// The callbacks in flight are still queued until their result is recorded: leave them out
	// (reading them again at every round made each round cost O(MaxConcurrent)).
	d.except = d.except[:0]
	for id := range d.inflight {
		d.except = append(d.except, id)
	}
	due, err := d.q.DueCallbacks(ctx, now, free, d.except)
	if err != nil {
		return 0, err
	}
	started := 0
	for _, cb := range due {
		if started == free {
			break
		}
		if _, ok := d.inflight[cb.ID]; ok {
			continue
		}
		d.inflight[cb.ID] = struct{}{}
		started++
		d.started.Add(1)
		d.wg.Add(1)
		go d.deliver(ctx, s, cb)
	}
	if started == free {
		*spins = 0
		return maxIdle, nil // slots full; maybe more is due: a finishing request pokes
	}
	// Everything due is in flight now.
	next, err := d.q.NextCallbackAt(ctx)
	if err != nil {
		return 0, err
	}
	switch {
	case next.IsZero():
		*spins = 0
		return maxIdle, nil
	case next.After(now):
		*spins = 0
		return next.Sub(now), nil
	case len(d.inflight) > 0:
		// The earliest due time is (most likely) that of a callback in flight. Its completion
		// pokes; a callback falling due before that waits for it (at most Settings.Timeout).
		*spins = 0
		return maxIdle, nil
	default:
		// Something fell due between the two queries (enqueued without Wake): look again, but do
		// not spin if the queue keeps answering like this.
		*spins++
		if *spins > 2 {
			return minErrPause, nil
		}
		return 0, nil
	}
}

// deliver sends one callback and records the result.
func (d *Dispatcher) deliver(ctx context.Context, s Settings, cb store.Callback) {
	defer d.wg.Done()
	attempt := cb.Attempts + 1
	start := time.Now()
	status, err := d.post(ctx, s, cb, attempt)
	latency := time.Since(start)
	if err != nil && ctx.Err() != nil {
		// Run is stopping: abandoned, not a failure of the receiver. The callback stays queued.
		d.finish(cb.ID, nil)
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	ok := err == nil && status >= 200 && status <= 299
	var recErr error
	if ok {
		recErr = d.q.DeleteCallback(rctx, cb.ID)
		if d.failing.CompareAndSwap(true, false) {
			d.log.Info("webhook: receiver accepts callbacks again", "url", redact(s.URL))
		}
	} else {
		msg := describe(status, err, s.Timeout)
		delay := s.RetryDelay(attempt)
		recErr = d.q.RetryCallback(rctx, cb.ID, attempt, d.now().Add(delay), msg)
		if errors.Is(recErr, store.ErrNotFound) {
			recErr = nil // deleted meanwhile (not by us): nothing left to retry
		}
		if d.failing.CompareAndSwap(false, true) {
			d.log.Warn("webhook: callback failed; retrying with backoff", "url", redact(s.URL),
				"id", cb.ID, "attempt", attempt, "err", msg, "retry_in", delay)
		} else {
			d.log.Debug("webhook: callback failed", "id", cb.ID, "attempt", attempt, "err", msg,
				"retry_in", delay)
		}
	}
	if recErr != nil {
		d.log.Error("webhook: recording a callback result failed", "id", cb.ID, "delivered", ok,
			"err", recErr)
	}
	if d.onResult != nil {
		d.onResult(ok, status, latency)
	}
	d.finish(cb.ID, recErr)
}

func (d *Dispatcher) finish(id int64, recErr error) {
	d.mu.Lock()
	d.finished = append(d.finished, id)
	if recErr != nil {
		d.recErr = recErr
	}
	d.mu.Unlock()
	d.pokeNow()
}

// post sends one request and returns the response status (0 and the error when none came).
func (d *Dispatcher) post(ctx context.Context, s Settings, cb store.Callback, attempt int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(cb.Payload))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", d.ua)
	req.Header.Set(HeaderAttempt, strconv.Itoa(attempt))
	if s.Secret != "" {
		req.Header.Set(HeaderSignature, Sign(s.Secret, d.now(), cb.Payload))
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// describe is the LastError of a failed attempt: the status, or the error without the URL (which
// may carry credentials in its query).
func describe(status int, err error, timeout time.Duration) string {
	var msg string
	var ne net.Error
	var ue *url.Error
	switch {
	case err == nil && status >= 300 && status <= 399:
		msg = fmt.Sprintf("HTTP %d (redirects are not followed)", status)
	case err == nil:
		msg = fmt.Sprintf("HTTP %d", status)
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		msg = fmt.Sprintf("timeout after %s", timeout)
	case errors.As(err, &ue):
		msg = ue.Err.Error()
	default:
		msg = err.Error()
	}
	if len(msg) > maxLastError {
		msg = msg[:maxLastError]
	}
	return msg
}

// redact returns u without userinfo and query, for logs.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(invalid URL)"
	}
	p.User, p.RawQuery, p.Fragment = nil, "", ""
	return p.String()
}
