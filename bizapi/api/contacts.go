package api

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/bizapi/gateway"
	"github.com/chatd-dev/chatd/phone"
)

// Limits of POST /v1/contacts.
const (
	MaxContactsPerRequest = 1000
	ContactCacheTTL       = 7 * 24 * time.Hour // as On-Premises
	maxCachedContacts     = 100_000
	lookupTimeout         = 30 * time.Second
)

// Contact statuses of POST /v1/contacts.
const (
	ContactValid      = "valid"
	ContactInvalid    = "invalid"
	ContactProcessing = "processing" // only with "blocking":"no_wait"
	ContactFailed     = "failed"
)

type contactsRequest struct {
	Blocking   string   `json:"blocking"`
	Contacts   []string `json:"contacts"`
	ForceCheck bool     `json:"force_check"`
}

type contactsResponse struct {
	Contacts []contactResult `json:"contacts"`
}

type contactResult struct {
	Input  string `json:"input"`
	Status string `json:"status"`
	WaID   string `json:"wa_id,omitempty"`
}

// contactCache holds lookup results (valid and invalid; never failed) by normalized number, and
// the numbers a background lookup is asking about.
type contactCache struct {
	mu       sync.Mutex
	m        map[string]contactEntry // guarded by mu
	inflight map[string]struct{}     // guarded by mu
	closed   bool                    // guarded by mu; set by Handler.Close
}

type contactEntry struct {
	status  string
	waID    string
	expires time.Time
}

func (c *contactCache) init() {
	c.m = make(map[string]contactEntry)
	c.inflight = make(map[string]struct{})
}

func (c *contactCache) get(num string, now time.Time) (contactEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[num]
	if ok && !now.Before(e.expires) {
		delete(c.m, num)
		return contactEntry{}, false
	}
	return e, ok
}

// putLocked caches the valid and invalid results and returns every result by number.
func (c *contactCache) putLocked(res []gateway.LookupResult, now time.Time) map[string]contactEntry {
	got := make(map[string]contactEntry, len(res))
	for _, r := range res {
		e := contactEntry{status: r.Status, waID: r.WaID, expires: now.Add(ContactCacheTTL)}
		if r.Status != ContactValid {
			e.waID = ""
		}
		got[r.Input] = e
		if r.Status != ContactValid && r.Status != ContactInvalid {
			continue
		}
		if len(c.m) >= maxCachedContacts {
			c.evictLocked(now)
		}
		c.m[r.Input] = e
	}
	return got
}

// evictLocked drops expired entries and, if that is not enough, arbitrary ones (map order) down
// to 7/8 of the limit.
func (c *contactCache) evictLocked(now time.Time) {
	for k, e := range c.m {
		if !now.Before(e.expires) {
			delete(c.m, k)
		}
	}
	for k := range c.m {
		if len(c.m) <= maxCachedContacts*7/8 {
			return
		}
		delete(c.m, k)
	}
}

// lookupContacts: POST /v1/contacts.
func (h *Handler) lookupContacts(w http.ResponseWriter, r *http.Request, _ identity) error {
	var req contactsRequest
	if err := h.decode(r, &req); err != nil {
		return err
	}
	var wait bool
	switch req.Blocking {
	case "", "no_wait": // the On-Premises default
	case "wait":
		wait = true
	default:
		return errInvalid(`blocking must be "wait" or "no_wait", got %q`, req.Blocking)
	}
	if len(req.Contacts) == 0 {
		return errMissing("contacts (an array of phone numbers)")
	}
	if len(req.Contacts) > MaxContactsPerRequest {
		return errInvalid("contacts has %d numbers; at most %d per request", len(req.Contacts), MaxContactsPerRequest)
	}

	now := h.now()
	out := make([]contactResult, len(req.Contacts))
	var need []string        // numbers to ask chatd about, once each
	at := map[string][]int{} // number → indexes in out
	for i, in := range req.Contacts {
		out[i].Input = in
		num, err := phone.Normalize(in)
		if err != nil {
			out[i].Status = ContactInvalid
			continue
		}
		if !req.ForceCheck {
			if e, ok := h.contacts.get(num, now); ok {
				out[i].Status, out[i].WaID = e.status, e.waID
				continue
			}
		}
		if _, seen := at[num]; !seen {
			need = append(need, num)
		}
		at[num] = append(at[num], i)
	}

	if len(need) > 0 {
		if st := h.gw.Health().GatewayStatus; st != gateway.StatusConnected {
			return errNotReady("bizapi is not connected to chatd (gateway_status %q); contacts can be checked only while connected", st)
		}
		if wait {
			ctx, cancel := context.WithTimeout(r.Context(), lookupTimeout)
			res, err := h.gw.Lookup(ctx, need)
			cancel()
			if errors.Is(err, gateway.ErrNotConnected) || errors.Is(err, gateway.ErrNotRegistered) {
				return h.gatewayError(err)
			}
			var got map[string]contactEntry
			if err != nil {
				h.log.Warn("api: contact lookup failed", "numbers", len(need), "err", err)
			} else {
				h.contacts.mu.Lock()
				got = h.contacts.putLocked(res, now)
				h.contacts.mu.Unlock()
			}
			for _, num := range need {
				e, ok := got[num]
				if !ok {
					e = contactEntry{status: ContactFailed}
				}
				for _, i := range at[num] {
					out[i].Status, out[i].WaID = e.status, e.waID
				}
			}
		} else {
			for _, num := range need {
				for _, i := range at[num] {
					out[i].Status = ContactProcessing
				}
			}
			h.lookupAsync(need)
		}
	}
	return h.writeJSON(w, http.StatusOK, contactsResponse{Contacts: out})
}

// lookupAsync asks chatd about the numbers no background lookup is asking about yet, and caches
// the answers; a later request finds them.
func (h *Handler) lookupAsync(nums []string) {
	c := &h.contacts
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	var todo []string
	for _, n := range nums {
		if _, busy := c.inflight[n]; !busy {
			c.inflight[n] = struct{}{}
			todo = append(todo, n)
		}
	}
	if len(todo) == 0 {
		c.mu.Unlock()
		return
	}
	h.bgWG.Add(1) // under mu, so Close cannot be waiting yet
	c.mu.Unlock()
	go func() {
		defer h.bgWG.Done()
		ctx, cancel := context.WithTimeout(h.bgCtx, lookupTimeout)
		defer cancel()
		res, err := h.gw.Lookup(ctx, todo)
		now := h.now()
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, n := range todo {
			delete(c.inflight, n)
		}
		if err != nil {
			h.log.Warn("api: background contact lookup failed", "numbers", len(todo), "err", err)
			return
		}
		c.putLocked(res, now)
	}()
}
