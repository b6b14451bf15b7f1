package webhook

import (
	"encoding/json"
	"strconv"

	"github.com/chatd-dev/chatd/bizapi/store"
)

// Inbound message webhook: {"contacts":[…],"messages":[…]}.
type InboundPayload struct {
	Contacts []Contact        `json:"contacts"`
	Messages []InboundMessage `json:"messages"`
}

type Contact struct {
	Profile Profile `json:"profile"`
	WaID    string  `json:"wa_id"`
}

type Profile struct {
	Name string `json:"name"`
}

type InboundMessage struct {
	From      string `json:"from"`
	ID        string `json:"id"`
	Timestamp string `json:"timestamp"` // Unix seconds, as a string
	Type      string `json:"type"`
	Text      *Text  `json:"text,omitempty"`
}

type Text struct {
	Body string `json:"body"`
}

// Status webhook: {"statuses":[…]}.
type StatusPayload struct {
	Statuses []Status `json:"statuses"`
}

type Status struct {
	ID          string            `json:"id"`
	RecipientID string            `json:"recipient_id"`
	Status      string            `json:"status"` // sent, delivered, read, failed
	Timestamp   string            `json:"timestamp"`
	Errors      []store.ErrorInfo `json:"errors,omitempty"`
}

// ForInbound is the callback for a received message.
func ForInbound(m store.Inbound) json.RawMessage {
	p := InboundPayload{
		Contacts: []Contact{{Profile: Profile{Name: ""}, WaID: m.From}},
		Messages: []InboundMessage{{From: m.From, ID: m.ID, Timestamp: unix(m.Timestamp.Unix()), Type: m.Type}},
	}
	if m.Type == "text" {
		p.Messages[0].Text = &Text{Body: m.Body}
	}
	b, _ := json.Marshal(p)
	return b
}

// ForStatus is the callback for a status change of an outbound message; e is set for "failed".
// The bytes are those of json.Marshal(StatusPayload{…}); without an error they are written
// directly (two of them per message sent, on the gateway's hot path).
func ForStatus(id, recipient, status string, unixSeconds int64, e *store.ErrorInfo) json.RawMessage {
	if e != nil || !plain(id) || !plain(recipient) || !plain(status) {
		s := Status{ID: id, RecipientID: recipient, Status: status, Timestamp: unix(unixSeconds)}
		if e != nil {
			s.Errors = []store.ErrorInfo{*e}
		}
		b, _ := json.Marshal(StatusPayload{Statuses: []Status{s}})
		return b
	}
	b := make([]byte, 0, 80+len(id)+len(recipient)+len(status))
	b = append(b, `{"statuses":[{"id":"`...)
	b = append(b, id...)
	b = append(b, `","recipient_id":"`...)
	b = append(b, recipient...)
	b = append(b, `","status":"`...)
	b = append(b, status...)
	b = append(b, `","timestamp":"`...)
	b = strconv.AppendInt(b, unixSeconds, 10)
	return append(b, `"}]}`...)
}

// plain reports whether json.Marshal writes s as it is between the quotes: printable ASCII without
// the characters it escapes.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

func unix(s int64) string { return strconv.FormatInt(s, 10) }
