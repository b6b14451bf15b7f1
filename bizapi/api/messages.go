package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"unicode/utf8"

	"github.com/chatd-dev/chatd/bizapi/gateway"
	"github.com/chatd-dev/chatd/bizapi/store"
	"github.com/chatd-dev/chatd/phone"
)

// MaxTextChars is the longest text body, in characters (Unicode code points), as On-Premises.
const MaxTextChars = 4096

type sendRequest struct {
	PreviewURL    bool      `json:"preview_url"`
	RecipientType string    `json:"recipient_type"`
	To            string    `json:"to"`
	Type          string    `json:"type"`
	Text          *sendText `json:"text"`
}

type sendText struct {
	Body string `json:"body"`
}

// sendMessage: POST /v1/messages. The hot path: one body read into a pooled buffer, one
// json.Unmarshal, one durable AddMessage, a hand-built answer.
func (h *Handler) sendMessage(w http.ResponseWriter, r *http.Request, _ identity) error {
	bp, err := h.readBody(r)
	if err != nil {
		return err
	}
	var req sendRequest
	switch {
	case isBlank(*bp):
		err = apiErr(CodeInvalidRequest, "the request body is empty; send a JSON object")
	default:
		if e := json.Unmarshal(*bp, &req); e != nil {
			err = decodeError(e)
		}
	}
	putBody(bp)
	if err != nil {
		return err
	}
	m, err := checkSend(&req)
	if err != nil {
		return err
	}
	if err := h.checkRegistered(); err != nil {
		return err
	}
	m.Status, m.CreatedAt = store.StatusAccepted, h.now()
	for attempt := 0; ; attempt++ {
		m.ID = h.newID()
		if m.ID == "" {
			return errInternal(errors.New("NewMessageID returned an empty id"))
		}
		err = h.store.AddMessage(r.Context(), m)
		if err == nil {
			break
		}
		if errors.Is(err, store.ErrDuplicate) && attempt < 2 {
			continue // an id collision: draw another
		}
		return storeError("the message was not stored (not accepted); retry", fmt.Errorf("AddMessage: %w", err))
	}
	h.gw.WakeOutbox()

	bp = bodyPool.Get().(*[]byte)
	b := append((*bp)[:0], `{"messages":[{"id":`...)
	if h.defaultID {
		b = append(b, '"')
		b = append(b, m.ID...)
		b = append(b, '"')
	} else {
		q, _ := json.Marshal(m.ID)
		b = append(b, q...)
	}
	b = h.withMeta(append(b, `}]}`...))
	h.writeRaw(w, http.StatusCreated, b)
	*bp = b
	putBody(bp)
	return nil
}

// checkSend validates a send request and returns the message to store.
func checkSend(req *sendRequest) (store.Message, error) {
	if req.RecipientType != "" && req.RecipientType != "individual" {
		return store.Message{}, apiErr(CodeBadRecipientType, `recipient_type must be "individual", got %q`, req.RecipientType)
	}
	if req.To == "" {
		return store.Message{}, errMissing("to")
	}
	to, err := phone.Normalize(req.To)
	if err != nil {
		return store.Message{}, errInvalid("to %s", reason(err))
	}
	if req.Type != "" && req.Type != "text" {
		return store.Message{}, errInvalid(`type %q is not supported; bizapi sends "text" messages`, req.Type)
	}
	if req.Text == nil {
		return store.Message{}, errMissing(`text (an object with "body")`)
	}
	if req.Text.Body == "" {
		return store.Message{}, errMissing("text.body")
	}
	if n := utf8.RuneCountInString(req.Text.Body); n > MaxTextChars {
		return store.Message{}, apiErr(CodeTooLong, "text.body has %d characters; at most %d are allowed", n, MaxTextChars)
	}
	return store.Message{To: to, Body: req.Text.Body, PreviewURL: req.PreviewURL}, nil
}

// checkRegistered refuses sends while no number is registered (they could go nowhere). Once the
// gateway was seen registered, the send path stops asking.
func (h *Handler) checkRegistered() error {
	if h.registered.Load() {
		return nil
	}
	switch h.gw.Health().GatewayStatus {
	case gateway.StatusUnregistered:
		return errNotReady("no number is registered; register with POST /v1/account and POST /v1/account/verify before sending")
	case gateway.StatusUninitialized:
		return nil // starting up: accept, the outbox waits
	}
	h.registered.Store(true)
	return nil
}

// storeError maps a store failure: closed → 1011, a cancelled request → 1011, else 1014 with details.
func storeError(details string, err error) error {
	switch {
	case errors.Is(err, store.ErrClosed):
		return errNotReady("bizapi is shutting down; %s", details)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errNotReady("the request ended before the store answered; %s", details)
	}
	e := errInternal(err)
	e.Details = details
	return e
}

type readRequest struct {
	Status string `json:"status"`
}

// markRead: PUT /v1/messages/{id} {"status":"read"} asks for the read receipt of a received
// message; 200 {"meta":…}.
func (h *Handler) markRead(w http.ResponseWriter, r *http.Request, _ identity) error {
	id := r.PathValue("id")
	var req readRequest
	if err := h.decode(r, &req); err != nil {
		return err
	}
	switch req.Status {
	case "":
		return errMissing("status")
	case "read":
	default:
		return errInvalid(`status must be "read", got %q`, req.Status)
	}
	if len(id) > 128 {
		return apiErr(CodeNotFound, "no received message with this id")
	}
	if _, err := h.store.RequestRead(r.Context(), id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return apiErr(CodeNotFound, "no received message with id %q", id)
		}
		return storeError("the read receipt was not requested; retry", fmt.Errorf("RequestRead: %w", err))
	}
	h.gw.WakeReads()
	h.writeMeta(w, http.StatusOK)
	return nil
}
