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

// Defaults for the zero values of Settings (the On-Premises defaults, and ours for MaxBatch).
const (
	DefaultMaxConcurrent   = 12
	DefaultMaxBatch        = 100
	DefaultBackoffDelay    = 3 * time.Second
	DefaultMaxBackoffDelay = 15 * time.Minute
	DefaultTimeout         = 10 * time.Second
)

// MaxBatchBytes bounds the payloads merged into one request: a callback joins a batch only if the
// payloads together stay within it (a single larger payload is sent alone, as it is).
const MaxBatchBytes = 64 << 10

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
	// maxPartial is how many requests carrying less than a full batch may be open at once (when
	// Settings.MaxBatch > 1). While they are, new callbacks wait for one of them to finish, or
	// for a full batch, and so gather into larger batches as the load grows; see the package
	// documentation.
	maxPartial = 2
	// rescanEvery: at least this often (and whenever no request is open) a round reads the queue
	// from its start instead of after the callbacks in flight (see round).
	rescanEvery = time.Second
	// maxRead bounds the callbacks one round reads.
	maxRead = 2000
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
	// MaxBatch bounds the callbacks sent in one request (webhooks.max_callbacks_per_request);
	// 0 → 100, 1 → one callback per request. See the package documentation.
	MaxBatch int
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
	if s.MaxBatch <= 0 {
		s.MaxBatch = DefaultMaxBatch
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
	DueCallbacks(ctx context.Context, now time.Time, limit int, after store.CallbackKey) ([]store.Callback, error)
	NextCallbackAt(ctx context.Context) (time.Time, error)
	DeleteCallbacks(ctx context.Context, ids []int64) error
	RetryCallbacks(ctx context.Context, ids []int64, attempts int, next time.Time, lastErr string) error
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
	// OnResult, if set, is called after every request (metrics): ok is true for a 2xx, status is the
	// HTTP status or 0 when no response came, latency is the request's duration, callbacks the
	// number of callbacks it carried. Requests abandoned because Run is stopping are not reported.
	OnResult func(ok bool, status int, latency time.Duration, callbacks int)
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
	onResult func(bool, int, time.Duration, int)
	ua       string

	poke    chan struct{} // capacity 1: "look now" (Wake, a finished request)
	running atomic.Bool
	wg      sync.WaitGroup // deliver goroutines

	// Owned by Run's goroutine. inflight holds the callbacks being sent; busy and partial count
	// the requests open and those of them carrying less than a full batch. Workers report the end
	// of a request through released as soon as its answer came (so that the next request need not
	// wait for the store's commit of this one's result), and completion through finished, after
	// they recorded the result in the queue; Run removes them from inflight at the start of the
	// next round, before it reads the queue again. So a callback is never in a round's
	// DueCallbacks answer without being in inflight while its request is open or its result not
	// yet recorded — it is never sent twice at once.
	inflight      map[int64]struct{}
	busy, partial int
	// after is the key up to which every due callback is in flight: a round reads only the
	// callbacks after it, not those in flight again (reading them at every round made a round
	// cost O(callbacks in flight)). It holds because callbacks queued with a zero NextAt get a
	// NextAt no earlier than the clock when they are written (store.Callback.NextAt), so they sort
	// after what was read before them; a retry moves a callback later. Whatever could still
	// slip behind it (a NextAt set in the past by another writer, a clock stepping back, a write
	// that raced a read) is found by the full reads: after is reset whenever nothing is in
	// flight, and at least every rescanEvery.
	after    store.CallbackKey
	rescanAt time.Time
	readGen  uint64 // wakeGen at the last read of the queue

	mu       sync.Mutex
	finished []finished
	released [2]int // requests ended since the last round: [0] full batches, [1] partial ones
	recErr   error  // a worker could not record a result

	failing atomic.Bool // the last attempt failed (for logging transitions only)

	started atomic.Int64 // requests started, ever (tests, debugging)

	// For tests: Wake increments wakeGen; a round stores the wakeGen it started with in roundGen
	// when it ends. roundGen ≥ g means a whole round ran after the g-th Wake.
	wakeGen  atomic.Uint64
	roundGen atomic.Uint64
}

// finished is a request whose result is recorded (or that was abandoned).
type finished struct {
	ids   []int64
	retry time.Time // the callbacks' new NextAt when they failed; zero otherwise
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
	d.busy, d.partial, d.after, d.rescanAt = 0, 0, store.CallbackKey{}, time.Time{}
	d.mu.Lock()
	d.finished, d.released, d.recErr = nil, [2]int{}, nil
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
	done, released, recErr := d.finished, d.released, d.recErr
	d.finished, d.released, d.recErr = nil, [2]int{}, nil
	d.mu.Unlock()
	d.busy -= released[0] + released[1]
	d.partial -= released[1]
	for _, f := range done {
		first := f.ids[0]
		for _, id := range f.ids {
			delete(d.inflight, id)
			first = min(first, id)
		}
		// A retry moves its callbacks later, normally past after; if not (a clock that stepped
		// back), read again from just before them.
		if k := (store.CallbackKey{NextAt: f.retry, ID: first}); !f.retry.IsZero() && !d.after.Less(k) {
			d.after = store.CallbackKey{NextAt: f.retry, ID: first - 1}
		}
	}
	if recErr != nil {
		// The result of a request could not be recorded; its callbacks are still queued as they
		// were (maybe before after) and will be sent again. Pause instead of spinning on a broken
		// queue.
		d.after = store.CallbackKey{}
		return 0, fmt.Errorf("recording a callback result: %w", recErr)
	}

	s := d.settings().withDefaults()
	if s.URL == "" {
		return maxIdle, nil // callbacks wait; a Wake after setting the URL starts them
	}
	free := s.MaxConcurrent - d.busy
	if free <= 0 {
		return maxIdle, nil // a finishing request pokes
	}
	// Requests with less than a full batch: with MaxBatch 1 every request is full, and up to
	// MaxConcurrent may be open as before batching.
	partialCap := min(maxPartial, s.MaxConcurrent)
	gen := d.wakeGen.Load()
	if s.MaxBatch > 1 && d.partial >= partialCap && gen-d.readGen < uint64(s.MaxBatch) {
		// Only a full batch could start, and fewer callbacks than that were queued (one Wake
		// each) since the last read: wait for a request to finish (it pokes) or more Wakes.
		return maxIdle, nil
	}
	d.readGen = gen
	if wall := time.Now(); len(d.inflight) == 0 || wall.After(d.rescanAt) {
		d.after, d.rescanAt = store.CallbackKey{}, wall.Add(rescanEvery)
	}
	now := d.now()
	limit := free * s.MaxBatch
	if d.after == (store.CallbackKey{}) {
		limit += len(d.inflight) // a full read meets the callbacks in flight again: not part of the limit
	}
	limit = min(limit, maxRead)
	due, err := d.q.DueCallbacks(ctx, now, limit, d.after)
	if err != nil {
		return 0, err
	}
	held := false
	for _, b := range assemble(due, d.inflight, s.MaxBatch) {
		if free == 0 || !b.full && d.partial >= partialCap {
			held = true
			continue
		}
		for _, cb := range b.cbs {
			d.inflight[cb.ID] = struct{}{}
		}
		d.busy++
		if !b.full {
			d.partial++
		}
		free--
		d.started.Add(1)
		d.wg.Add(1)
		go d.deliver(ctx, s, b)
	}
	// Every due callback up to the first one not started is in flight now.
	for _, cb := range due {
		if _, ok := d.inflight[cb.ID]; !ok {
			break
		}
		d.after = cb.Key()
	}
	switch {
	case held:
		*spins = 0
		return maxIdle, nil // waiting for a slot: a finishing request pokes
	case len(due) == limit:
		*spins = 0
		if free == 0 {
			return maxIdle, nil
		}
		return 0, nil // the read was cut at maxRead: read on
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
	case d.busy > 0:
		// The earliest due time is (most likely) that of a callback in flight. Its completion
		// pokes; a callback falling due before that waits for it (at most Settings.Timeout), or
		// for the next full read.
		*spins = 0
		return min(maxIdle, max(time.Until(d.rescanAt), time.Millisecond)), nil
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

// deliver sends one batch and records the result.
func (d *Dispatcher) deliver(ctx context.Context, s Settings, b *batch) {
	defer d.wg.Done()
	ids := make([]int64, len(b.cbs))
	for i, cb := range b.cbs {
		ids[i] = cb.ID
	}
	f := finished{ids: ids}
	attempt := b.attempts + 1
	start := time.Now()
	status, err := d.post(ctx, s, b.body(), attempt)
	latency := time.Since(start)
	d.release(b.full)
	if err != nil && ctx.Err() != nil {
		// Run is stopping: abandoned, not a failure of the receiver. The callbacks stay queued.
		d.finish(f, nil)
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	ok := err == nil && status >= 200 && status <= 299
	var recErr error
	if ok {
		recErr = d.q.DeleteCallbacks(rctx, ids)
		if d.failing.CompareAndSwap(true, false) {
			d.log.Info("webhook: receiver accepts callbacks again", "url", redact(s.URL))
		}
	} else {
		msg := describe(status, err, s.Timeout)
		delay := s.RetryDelay(attempt)
		f.retry = d.now().Add(delay)
		recErr = d.q.RetryCallbacks(rctx, ids, attempt, f.retry, msg)
		if d.failing.CompareAndSwap(false, true) {
			d.log.Warn("webhook: callback request failed; retrying with backoff", "url", redact(s.URL),
				"callbacks", len(ids), "first_id", ids[0], "attempt", attempt, "err", msg, "retry_in", delay)
		} else {
			d.log.Debug("webhook: callback request failed", "callbacks", len(ids), "first_id", ids[0],
				"attempt", attempt, "err", msg, "retry_in", delay)
		}
	}
	if recErr != nil {
		d.log.Error("webhook: recording a callback result failed", "callbacks", len(ids), "first_id", ids[0],
			"delivered", ok, "err", recErr)
		f.retry = time.Time{}
	}
	if d.onResult != nil {
		d.onResult(ok, status, latency, len(ids))
	}
	d.finish(f, recErr)
}

// release reports that a request ended: its slot is free.
func (d *Dispatcher) release(full bool) {
	d.mu.Lock()
	if full {
		d.released[0]++
	} else {
		d.released[1]++
	}
	d.mu.Unlock()
	d.pokeNow()
}

func (d *Dispatcher) finish(f finished, recErr error) {
	d.mu.Lock()
	d.finished = append(d.finished, f)
	if recErr != nil {
		d.recErr = recErr
	}
	d.mu.Unlock()
	d.pokeNow()
}

// post sends one request and returns the response status (0 and the error when none came).
func (d *Dispatcher) post(ctx context.Context, s Settings, body []byte, attempt int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", d.ua)
	req.Header.Set(HeaderAttempt, strconv.Itoa(attempt))
	if s.Secret != "" {
		req.Header.Set(HeaderSignature, Sign(s.Secret, d.now(), body))
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
